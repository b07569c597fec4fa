//! Sample batches (`Live`, `Snapshot` and `History` messages), which are nearly every byte the
//! link carries, encoded and decoded by hand in exactly postcard's format.
//!
//! Why by hand: postcard reaches each 1 to 10-byte field through serde's visitor machinery and
//! writes it with a `memcpy` call of a length known only at run time. On the bulk path (90 kB
//! history batches) that was 56 % of the transmitter's link thread (44 % in `memcpy` alone) and
//! 43 % of the receiver's (serde's sequence visitor, the sample visitor, varints, drops): more
//! than CRC, AES-GCM, FEC and the system calls together. A custom postcard output flavour was
//! tried first and gained nothing, since the cost is per call, not per byte. Here each field
//! is written in place, with no call at all, into a buffer grown ahead of each sample.
//!
//! The bytes are postcard's, so nothing else changes: the golden vectors, the codec of every
//! other message, and any reader that uses postcard. The tests below check the encoding
//! against postcard's for arbitrary batches, and that both decoders accept and refuse the same
//! inputs, corrupted ones included.

use postcard::Error;

use crate::message::{HistoryBatch, Message, SampleBatch};
use crate::model::{Quality, Sample, Value};

/// `Message` variant indexes, in declaration order (postcard writes an enum variant as its
/// index). A test pins them against postcard's own output.
const LIVE: u64 = 1;
const SNAPSHOT: u64 = 2;
const HISTORY: u64 = 4;

/// The smallest encoding of a sample (tag, value variant, a one-byte value, quality, time), for
/// bounding an allocation by what the body can hold.
const MIN_SAMPLE_LEN: usize = 5;

/// Writes `msg` after `out`'s contents when it is a sample batch; `false` (and nothing
/// written) for the other messages, which go through postcard.
pub(super) fn encode_message(msg: &Message, out: &mut Vec<u8>) -> bool {
    let samples = match msg {
        Message::Live(b) | Message::Snapshot(b) => b.samples.len(),
        Message::History(h) => h.samples.len(),
        Message::Catalogue(_) | Message::Heartbeat(_) | Message::Syslog(_) => return false,
    };
    // A guess at the size (most samples take 12 to 24 bytes) saves regrowing from empty.
    out.reserve(HEAD_MAX + samples * 24);
    Writer::after(out, |w| match msg {
        Message::Live(b) => w.batch(LIVE, b),
        Message::Snapshot(b) => w.batch(SNAPSHOT, b),
        Message::History(h) => w.history(&HistoryHead::of(h), h.samples.iter()),
        Message::Catalogue(_) | Message::Heartbeat(_) | Message::Syslog(_) => {}
    });
    true
}

/// The fields of a [`HistoryBatch`] before its samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryHead {
    pub catalogue: u64,
    pub log: u64,
    pub first_seq: u64,
    pub head_seq: u64,
    pub oldest_seq: u64,
}

impl HistoryHead {
    fn of(h: &HistoryBatch) -> HistoryHead {
        HistoryHead {
            catalogue: h.catalogue,
            log: h.log,
            first_seq: h.first_seq,
            head_seq: h.head_seq,
            oldest_seq: h.oldest_seq,
        }
    }
}

/// Writes `Message::History` of `head` and `count` samples whose encodings, as
/// [`encode_sample`] writes them, are `encoded`, back to back.
pub(super) fn encode_history_encoded(
    head: &HistoryHead,
    count: usize,
    encoded: &[u8],
    out: &mut Vec<u8>,
) {
    Writer::after(out, |w| w.history_head(head, count));
    out.extend_from_slice(encoded);
}

/// Writes one sample's encoding, as it appears in a batch, after `out`'s contents.
pub(super) fn encode_sample(sample: &Sample, out: &mut Vec<u8>) {
    Writer::after(out, |w| w.sample(sample));
}

/// Writes `(seq, sample)` after `out`'s contents, given the sample's encoding from
/// [`encode_sample`].
pub(super) fn encode_numbered_encoded(seq: u64, encoded: &[u8], out: &mut Vec<u8>) {
    Writer::after(out, |w| w.varint(seq));
    out.extend_from_slice(encoded);
}

/// The exact encoded length of a sample batch message; `None` for other messages.
pub(super) fn message_len(msg: &Message) -> Option<usize> {
    let (variant, head, samples): (u64, &[u64], &[Sample]) = match msg {
        Message::Live(b) => (LIVE, &[b.catalogue], &b.samples),
        Message::Snapshot(b) => (SNAPSHOT, &[b.catalogue], &b.samples),
        Message::History(h) => (
            HISTORY,
            &[h.catalogue, h.log, h.first_seq, h.head_seq, h.oldest_seq],
            &h.samples,
        ),
        Message::Catalogue(_) | Message::Heartbeat(_) | Message::Syslog(_) => return None,
    };
    let head: usize = head.iter().map(|&v| varint_len(v)).sum();
    let body: usize = samples.iter().map(sample_len).sum();
    Some(varint_len(variant) + head + varint_len(samples.len() as u64) + body)
}

/// The exact encoded length of one sample.
pub(super) fn sample_len(s: &Sample) -> usize {
    varint_len(u64::from(s.tag))
        + value_len(&s.value)
        + varint_len(u64::from(s.quality.0))
        + varint_len(zigzag64(s.time))
}

fn value_len(v: &Value) -> usize {
    // Every variant index is below 128: one byte.
    1 + match v {
        Value::Boolean(_) => 1,
        Value::Int16(x) => varint_len(u64::from(zigzag16(*x))),
        Value::Int32(x) => varint_len(u64::from(zigzag32(*x))),
        Value::Int64(x) | Value::DateTime(x) => varint_len(zigzag64(*x)),
        Value::UInt16(x) => varint_len(u64::from(*x)),
        Value::UInt32(x) => varint_len(u64::from(*x)),
        Value::UInt64(x) => varint_len(*x),
        Value::Float(_) => 4,
        Value::Double(_) => 8,
        Value::String(s) => varint_len(s.len() as u64) + s.len(),
        Value::ByteString(b) => varint_len(b.len() as u64) + b.len(),
    }
}

/// Decodes a sample batch message; `None` when `bytes` holds another kind of message (the
/// caller hands those to postcard). Trailing bytes are an error, as in `codec::decode`.
pub(super) fn decode_message(bytes: &[u8]) -> Option<Result<Message, Error>> {
    let mut r = Reader { bytes, pos: 0 };
    let variant = r.varint_u32().ok()?;
    let message = match u64::from(variant) {
        LIVE => r.batch().map(Message::Live),
        SNAPSHOT => r.batch().map(Message::Snapshot),
        HISTORY => r.history().map(Message::History),
        _ => return None,
    };
    Some(message.and_then(|m| {
        if r.pos == bytes.len() {
            Ok(m)
        } else {
            Err(Error::DeserializeBadEncoding)
        }
    }))
}

/// Writes `(seq, sample)` as postcard writes that tuple.
/// Reads what `encode_sample` after `encode_numbered_encoded` wrote; the whole of `bytes`.
pub(super) fn decode_numbered(bytes: &[u8]) -> Result<(u64, Sample), Error> {
    let mut r = Reader { bytes, pos: 0 };
    let numbered = (r.varint_u64()?, r.sample()?);
    if r.pos == bytes.len() {
        Ok(numbered)
    } else {
        Err(Error::DeserializeBadEncoding)
    }
}

fn varint_len(v: u64) -> usize {
    let bits = 64 - (v | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

fn zigzag16(v: i16) -> u16 {
    ((v << 1) ^ (v >> 15)) as u16
}
fn zigzag32(v: i32) -> u32 {
    ((v << 1) ^ (v >> 31)) as u32
}
fn zigzag64(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}
fn unzigzag64(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// The longest varint (a u64).
const VARINT_MAX: usize = 10;
/// The longest message head: variant and five u64 fields of a history batch, sample count.
const HEAD_MAX: usize = 1 + 5 * VARINT_MAX + VARINT_MAX;
/// The longest sample apart from a string's or byte string's contents: tag (u32), value
/// variant and its longest fixed part or length, quality (u32), time (i64).
const SAMPLE_MAX: usize = 5 + 1 + VARINT_MAX + 5 + VARINT_MAX;

/// What [`Out::varint`]'s 8-byte store may write past the varint's last byte.
const WORD_SLACK: usize = 8;
/// The continuation bit of each byte of a word.
const CONTINUATION: u64 = 0x8080_8080_8080_8080;

/// The low 56 bits of `v` in 7-bit groups, one per byte, least significant first: a varint's
/// bytes without their continuation bits. Three halving steps move the upper half of each
/// lane up (28-bit halves into 32-bit lanes, 14 into 16, 7 into 8).
fn spread7(v: u64) -> u64 {
    let x = v & ((1 << 56) - 1);
    let x = (x & 0x0000_0000_0FFF_FFFF) | ((x & 0x00FF_FFFF_F000_0000) << 4);
    let x = (x & 0x0000_3FFF_0000_3FFF) | ((x & 0x0FFF_C000_0FFF_C000) << 2);
    (x & 0x007F_007F_007F_007F) | ((x & 0x3F80_3F80_3F80_3F80) << 1)
}

/// The inverse of [`spread7`]: the 7-bit groups of a word's bytes (continuation bits ignored)
/// packed into 56 bits.
fn pack7(w: u64) -> u64 {
    let x = w & 0x7F7F_7F7F_7F7F_7F7F;
    let x = (x & 0x007F_007F_007F_007F) | ((x & 0x7F00_7F00_7F00_7F00) >> 1);
    let x = (x & 0x0000_3FFF_0000_3FFF) | ((x & 0x3FFF_0000_3FFF_0000) >> 2);
    (x & 0x0000_0000_0FFF_FFFF) | ((x & 0x0FFF_FFFF_0000_0000) >> 4)
}

/// Writes into the zeroed tail of a vector that [`Writer::room`] grows ahead of each field
/// group, so that lengths need not be computed first; the caller cuts it to `pos` at the end.
struct Writer<'a> {
    buf: &'a mut Vec<u8>,
    /// Where this writer began: `buf` held that much before.
    start: usize,
    pos: usize,
}

impl Writer<'_> {
    /// Runs `write` on a writer after `out`'s contents, then cuts `out` to what it wrote.
    fn after(out: &mut Vec<u8>, write: impl FnOnce(&mut Writer<'_>)) {
        let start = out.len();
        let mut w = Writer {
            buf: out,
            start,
            pos: start,
        };
        write(&mut w);
        let end = w.pos;
        out.truncate(end);
    }

    /// Makes sure `n` more bytes can be written at `pos`. The room is zeroed ahead by as much
    /// as this writer wrote so far, so a long message resizes now and then, not per field;
    /// never by what `buf` held before, which made appending one sample to a large buffer
    /// cost a memset of the whole buffer.
    fn room(&mut self, n: usize) {
        let need = self.pos + n;
        if need > self.buf.len() {
            let grown = need.max(self.pos + (self.pos - self.start));
            self.buf.resize(grown, 0);
        }
    }

    /// Runs `write` on the room after `pos` (at least `n` bytes) and moves on by what it wrote.
    /// The fields are written through this local slice rather than through the vector: a byte
    /// stored through the vector could, for all the compiler knows, change the vector's own
    /// pointer and length, which were then reloaded after every byte.
    fn with(&mut self, n: usize, write: impl FnOnce(&mut Out<'_>)) {
        self.room(n);
        let mut out = Out {
            dst: self.buf.get_mut(self.pos..).unwrap_or_default(),
            at: 0,
        };
        write(&mut out);
        self.pos += out.at;
    }

    fn varint(&mut self, v: u64) {
        self.with(VARINT_MAX + WORD_SLACK, |o| o.varint(v));
    }

    fn batch(&mut self, variant: u64, b: &SampleBatch) {
        self.varint(variant);
        self.varint(b.catalogue);
        self.samples(b.samples.iter());
    }

    fn history<'a>(&mut self, h: &HistoryHead, samples: impl ExactSizeIterator<Item = &'a Sample>) {
        self.history_head(h, samples.len());
        for s in samples {
            self.sample(s);
        }
    }

    /// Everything of a history message before its samples, `count` included.
    fn history_head(&mut self, h: &HistoryHead, count: usize) {
        self.varint(HISTORY);
        for v in [h.catalogue, h.log, h.first_seq, h.head_seq, h.oldest_seq] {
            self.varint(v);
        }
        self.varint(count as u64);
    }

    fn samples<'a>(&mut self, samples: impl ExactSizeIterator<Item = &'a Sample>) {
        self.varint(samples.len() as u64);
        for s in samples {
            self.sample(s);
        }
    }

    fn sample(&mut self, s: &Sample) {
        let contents = match &s.value {
            Value::String(x) => x.len(),
            Value::ByteString(b) => b.len(),
            _ => 0,
        };
        self.with(SAMPLE_MAX + WORD_SLACK + contents, |o| o.sample(s));
    }
}

/// A slice with room for what is written to it (see [`Writer::with`]). Writes beyond the
/// room are dropped rather than panicking (none are: the room is made for the longest form).
struct Out<'a> {
    dst: &'a mut [u8],
    at: usize,
}

impl Out<'_> {
    #[inline(always)]
    fn byte(&mut self, b: u8) {
        if let Some(slot) = self.dst.get_mut(self.at) {
            *slot = b;
        }
        self.at += 1;
    }

    #[inline(always)]
    fn bytes(&mut self, b: &[u8]) {
        if let Some(slot) = self.dst.get_mut(self.at..self.at + b.len()) {
            slot.copy_from_slice(b);
        }
        self.at += b.len();
    }

    /// Stores all 8 bytes of `w` at `at` and moves on by `len` of them.
    #[inline(always)]
    fn word(&mut self, w: u64, len: usize) {
        if let Some(slot) = self.dst.get_mut(self.at..self.at + 8) {
            slot.copy_from_slice(&w.to_le_bytes());
        }
        self.at += len;
    }

    /// Writes the varint's bytes with one 8-byte store (and a ninth and tenth byte beyond 56
    /// bits) instead of a byte per loop turn: a sample's time is a 9-byte varint. Needs
    /// [`WORD_SLACK`] bytes of room past the varint's own.
    #[inline(always)]
    fn varint(&mut self, v: u64) {
        if v < 0x80 {
            self.byte(v as u8);
            return;
        }
        let bits = 64 - v.leading_zeros();
        let len = bits.div_ceil(7) as usize;
        if len <= 8 {
            // Continuation bits on every byte but the last.
            let more = CONTINUATION & ((1u64 << (8 * (len - 1))) - 1);
            self.word(spread7(v) | more, len);
        } else {
            self.word(spread7(v) | CONTINUATION, 8);
            let rest = v >> 56;
            if rest < 0x80 {
                self.byte(rest as u8);
            } else {
                self.byte(rest as u8 | 0x80);
                self.byte((rest >> 7) as u8);
            }
        }
    }

    #[inline(always)]
    fn sample(&mut self, s: &Sample) {
        self.varint(u64::from(s.tag));
        self.value(&s.value);
        self.varint(u64::from(s.quality.0));
        self.varint(zigzag64(s.time));
    }

    #[inline(always)]
    fn value(&mut self, v: &Value) {
        match v {
            Value::Boolean(x) => {
                self.byte(0);
                self.byte(u8::from(*x));
            }
            Value::Int16(x) => {
                self.byte(1);
                self.varint(u64::from(zigzag16(*x)));
            }
            Value::Int32(x) => {
                self.byte(2);
                self.varint(u64::from(zigzag32(*x)));
            }
            Value::Int64(x) => {
                self.byte(3);
                self.varint(zigzag64(*x));
            }
            Value::UInt16(x) => {
                self.byte(4);
                self.varint(u64::from(*x));
            }
            Value::UInt32(x) => {
                self.byte(5);
                self.varint(u64::from(*x));
            }
            Value::UInt64(x) => {
                self.byte(6);
                self.varint(*x);
            }
            Value::Float(x) => {
                self.byte(7);
                self.word(u64::from(x.to_bits()), 4);
            }
            Value::Double(x) => {
                self.byte(8);
                self.word(x.to_bits(), 8);
            }
            Value::String(s) => {
                self.byte(9);
                self.varint(s.len() as u64);
                self.bytes(s.as_bytes());
            }
            Value::DateTime(x) => {
                self.byte(10);
                self.varint(zigzag64(*x));
            }
            Value::ByteString(b) => {
                self.byte(11);
                self.varint(b.len() as u64);
                self.bytes(b);
            }
        }
    }
}

/// Reads with postcard's rules: varints of at most the type's length whose last byte carries no
/// bits beyond the type, booleans 0 or 1 only, strings UTF-8.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    #[inline(always)]
    fn byte(&mut self) -> Result<u8, Error> {
        let b = *self
            .bytes
            .get(self.pos)
            .ok_or(Error::DeserializeUnexpectedEnd)?;
        self.pos += 1;
        Ok(b)
    }

    #[inline(always)]
    fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        let end = self
            .pos
            .checked_add(n)
            .ok_or(Error::DeserializeUnexpectedEnd)?;
        let b = self
            .bytes
            .get(self.pos..end)
            .ok_or(Error::DeserializeUnexpectedEnd)?;
        self.pos = end;
        Ok(b)
    }

    #[inline(always)]
    fn array<const N: usize>(&mut self) -> Result<[u8; N], Error> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    /// A varint of a `bits`-wide unsigned type. Where 8 bytes are left, they are read as one
    /// word and the varint's end found from its continuation bits (see [`Out::varint`] for
    /// why); the byte loop below does the rest, with the same rules.
    #[inline(always)]
    fn varint(&mut self, bits: u32) -> Result<u64, Error> {
        let max_len = bits.div_ceil(7);
        let last_max = (1u8 << (bits % 7)) - 1;
        // Most fields (tags, variants, qualities) are one byte.
        if let Some(&b) = self.bytes.get(self.pos)
            && b < 0x80
        {
            self.pos += 1;
            return Ok(u64::from(b));
        }
        if let Some(word) = self.bytes.get(self.pos..self.pos + 8) {
            let mut b = [0u8; 8];
            b.copy_from_slice(word);
            let w = u64::from_le_bytes(b);
            let ends = !w & CONTINUATION;
            if ends != 0 {
                let len = ends.trailing_zeros() / 8 + 1;
                let last = (w >> (8 * (len - 1))) as u8;
                if len > max_len || (len == max_len && last > last_max) {
                    return Err(Error::DeserializeBadVarint);
                }
                self.pos += len as usize;
                // The bytes after the varint's last, cleared before packing.
                let mine = if len == 8 {
                    w
                } else {
                    w & ((1u64 << (8 * len)) - 1)
                };
                return Ok(pack7(mine));
            }
            if max_len == 10 {
                // Nine or ten bytes: a nanosecond time's usual length.
                let low = pack7(w);
                self.pos += 8;
                let b8 = self.byte()?;
                if b8 & 0x80 == 0 {
                    return Ok(low | u64::from(b8) << 56);
                }
                let b9 = self.byte()?;
                if b9 & 0x80 != 0 || b9 > last_max {
                    return Err(Error::DeserializeBadVarint);
                }
                return Ok(low | u64::from(b8 & 0x7F) << 56 | u64::from(b9) << 63);
            }
            return Err(Error::DeserializeBadVarint);
        }
        let mut out = 0u64;
        for i in 0..max_len {
            let b = self.byte()?;
            out |= u64::from(b & 0x7F) << (7 * i);
            if b & 0x80 == 0 {
                if i == max_len - 1 && b > last_max {
                    return Err(Error::DeserializeBadVarint);
                }
                return Ok(out);
            }
        }
        Err(Error::DeserializeBadVarint)
    }

    #[inline(always)]
    fn varint_u16(&mut self) -> Result<u16, Error> {
        // postcard keeps only the type's bits of a 3-byte u16 (the last byte's check leaves 2).
        self.varint(16).map(|v| v as u16)
    }
    #[inline(always)]
    fn varint_u32(&mut self) -> Result<u32, Error> {
        self.varint(32).map(|v| v as u32)
    }
    #[inline(always)]
    fn varint_u64(&mut self) -> Result<u64, Error> {
        self.varint(64)
    }

    fn len(&mut self) -> Result<usize, Error> {
        usize::try_from(self.varint_u64()?).map_err(|_| Error::DeserializeBadVarint)
    }

    fn batch(&mut self) -> Result<SampleBatch, Error> {
        let catalogue = self.varint_u64()?;
        let samples = self.samples()?;
        Ok(SampleBatch { catalogue, samples })
    }

    fn history(&mut self) -> Result<HistoryBatch, Error> {
        Ok(HistoryBatch {
            catalogue: self.varint_u64()?,
            log: self.varint_u64()?,
            first_seq: self.varint_u64()?,
            head_seq: self.varint_u64()?,
            oldest_seq: self.varint_u64()?,
            samples: self.samples()?,
        })
    }

    fn samples(&mut self) -> Result<Vec<Sample>, Error> {
        let n = self.len()?;
        // The count came off the wire: reserve no more than the body could hold.
        let room = (self.bytes.len() - self.pos) / MIN_SAMPLE_LEN;
        let mut samples = Vec::with_capacity(n.min(room));
        for _ in 0..n {
            samples.push(self.sample()?);
        }
        Ok(samples)
    }

    #[inline(always)]
    fn sample(&mut self) -> Result<Sample, Error> {
        Ok(Sample {
            tag: self.varint_u32()?,
            value: self.value()?,
            quality: Quality(self.varint_u32()?),
            time: unzigzag64(self.varint_u64()?),
        })
    }

    #[inline(always)]
    fn value(&mut self) -> Result<Value, Error> {
        Ok(match self.varint_u32()? {
            0 => Value::Boolean(match self.byte()? {
                0 => false,
                1 => true,
                _ => return Err(Error::DeserializeBadBool),
            }),
            1 => {
                let v = self.varint_u16()?;
                Value::Int16(((v >> 1) as i16) ^ -((v & 1) as i16))
            }
            2 => {
                let v = self.varint_u32()?;
                Value::Int32(((v >> 1) as i32) ^ -((v & 1) as i32))
            }
            3 => Value::Int64(unzigzag64(self.varint_u64()?)),
            4 => Value::UInt16(self.varint_u16()?),
            5 => Value::UInt32(self.varint_u32()?),
            6 => Value::UInt64(self.varint_u64()?),
            7 => Value::Float(f32::from_le_bytes(self.array()?)),
            8 => Value::Double(f64::from_le_bytes(self.array()?)),
            9 => {
                let n = self.len()?;
                let s =
                    std::str::from_utf8(self.take(n)?).map_err(|_| Error::DeserializeBadUtf8)?;
                Value::String(s.to_owned())
            }
            10 => Value::DateTime(unzigzag64(self.varint_u64()?)),
            11 => {
                let n = self.len()?;
                Value::ByteString(self.take(n)?.to_vec())
            }
            // What serde's derived visitor reports for an unknown variant index.
            _ => return Err(Error::SerdeDeCustom),
        })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn value() -> impl Strategy<Value = Value> + Clone {
        prop_oneof![
            any::<bool>().prop_map(Value::Boolean),
            any::<i16>().prop_map(Value::Int16),
            any::<i32>().prop_map(Value::Int32),
            any::<i64>().prop_map(Value::Int64),
            any::<u16>().prop_map(Value::UInt16),
            any::<u32>().prop_map(Value::UInt32),
            any::<u64>().prop_map(Value::UInt64),
            any::<f32>().prop_map(Value::Float),
            any::<f64>().prop_map(Value::Double),
            ".{0,40}".prop_map(Value::String),
            any::<i64>().prop_map(Value::DateTime),
            proptest::collection::vec(any::<u8>(), 0..200).prop_map(Value::ByteString),
        ]
    }

    fn sample() -> impl Strategy<Value = Sample> + Clone {
        (any::<u32>(), value(), any::<u32>(), any::<i64>()).prop_map(|(tag, value, q, time)| {
            Sample {
                tag,
                value,
                quality: Quality(q),
                time,
            }
        })
    }

    fn message() -> impl Strategy<Value = Message> {
        let samples = proptest::collection::vec(sample(), 0..40);
        prop_oneof![
            (any::<u64>(), samples.clone())
                .prop_map(|(catalogue, samples)| Message::Live(SampleBatch { catalogue, samples })),
            (any::<u64>(), samples.clone()).prop_map(|(catalogue, samples)| {
                Message::Snapshot(SampleBatch { catalogue, samples })
            }),
            (any::<[u64; 5]>(), samples).prop_map(|(h, samples)| {
                Message::History(HistoryBatch {
                    catalogue: h[0],
                    log: h[1],
                    first_seq: h[2],
                    head_seq: h[3],
                    oldest_seq: h[4],
                    samples,
                })
            }),
        ]
    }

    fn ours(msg: &Message) -> Vec<u8> {
        let mut out = vec![0xEE];
        assert!(encode_message(msg, &mut out), "a sample batch");
        assert_eq!(out[0], 0xEE, "appends after what was there");
        out.remove(0);
        out
    }

    /// Both decoders agree on `bytes`: the same message, or both refuse it. (The error kinds
    /// may differ where postcard reports a serde error in its own words.)
    fn agree(bytes: &[u8]) -> Result<(), TestCaseError> {
        let theirs = postcard::from_bytes::<Message>(bytes).ok().filter(|_| {
            postcard::take_from_bytes::<Message>(bytes).is_ok_and(|(_, r)| r.is_empty())
        });
        // Compared by their encodings, since a NaN is unequal to itself.
        let encoded = |m: Option<Message>| m.map(|m| postcard::to_allocvec(&m).unwrap());
        match decode_message(bytes) {
            Some(mine) => {
                prop_assert_eq!(encoded(mine.ok()), encoded(theirs), "bytes {:02x?}", bytes)
            }
            // Not a sample batch: postcard decodes it, and it is none either.
            None => prop_assert!(!matches!(
                &theirs,
                Some(Message::Live(_) | Message::Snapshot(_) | Message::History(_))
            )),
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn encodes_exactly_as_postcard(msg in message()) {
            let mine = ours(&msg);
            prop_assert_eq!(&mine, &postcard::to_allocvec(&msg).unwrap());
            prop_assert_eq!(message_len(&msg), Some(mine.len()));
            if let Message::Live(b) | Message::Snapshot(b) = &msg {
                for s in &b.samples {
                    prop_assert_eq!(sample_len(s), postcard::to_allocvec(s).unwrap().len());
                }
            }
            if let Message::History(h) = &msg {
                let mut encoded = Vec::new();
                for s in &h.samples {
                    encode_sample(s, &mut encoded);
                }
                let mut from_encoded = vec![0xEE];
                encode_history_encoded(
                    &HistoryHead::of(h),
                    h.samples.len(),
                    &encoded,
                    &mut from_encoded,
                );
                prop_assert_eq!(&from_encoded[1..], &mine[..], "from encoded samples");
            }
            let back = decode_message(&mine).unwrap().unwrap();
            // NaNs compare unequal: compare encodings.
            prop_assert_eq!(postcard::to_allocvec(&back).unwrap(), mine);
        }

        #[test]
        fn numbered_samples_are_postcard_tuples(
            seq in any::<u64>(),
            s in sample(),
            cut in any::<prop::sample::Index>(),
            flip in any::<prop::sample::Index>(),
        ) {
            let mut sample_bytes = vec![9u8];
            encode_sample(&s, &mut sample_bytes);
            prop_assert_eq!(&sample_bytes[1..], &postcard::to_allocvec(&s).unwrap()[..]);
            let mut mine = vec![7u8];
            encode_numbered_encoded(seq, &sample_bytes[1..], &mut mine);
            let mine = mine.split_off(1);
            prop_assert_eq!(&mine, &postcard::to_allocvec(&(seq, &s)).unwrap());
            let back = decode_numbered(&mine).unwrap();
            prop_assert_eq!(postcard::to_allocvec(&back).unwrap(), mine.clone());
            // Damaged records: both decoders agree, trailing bytes refused as `codec::decode` does.
            let mut bad = mine.clone();
            bad.truncate(cut.index(bad.len() + 1));
            if !bad.is_empty() {
                let i = flip.index(bad.len());
                bad[i] ^= 0x82;
            }
            let theirs = crate::codec::decode::<(u64, Sample)>(&bad).ok();
            let enc = |v: Option<(u64, Sample)>| v.map(|v| postcard::to_allocvec(&v).unwrap());
            prop_assert_eq!(enc(decode_numbered(&bad).ok()), enc(theirs));
            let mut long = mine;
            long.push(0);
            prop_assert!(decode_numbered(&long).is_err());
        }

        #[test]
        fn decodes_and_refuses_what_postcard_does(
            msg in message(),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), 0u8..8), 0..4),
            cut in any::<prop::sample::Index>(),
            truncate in any::<bool>(),
            extra in proptest::collection::vec(any::<u8>(), 0..3),
        ) {
            let mut bytes = ours(&msg);
            for (at, bit) in flips {
                let i = at.index(bytes.len());
                bytes[i] ^= 1 << bit;
            }
            if truncate {
                bytes.truncate(cut.index(bytes.len() + 1));
            }
            bytes.extend_from_slice(&extra);
            agree(&bytes)?;
        }

        #[test]
        fn arbitrary_bytes_decode_as_postcard_does(
            variant in prop_oneof![Just(1u8), Just(2), Just(4)],
            rest in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut bytes = vec![variant];
            bytes.extend_from_slice(&rest);
            agree(&bytes)?;
        }
    }

    #[test]
    fn varint_edges_match_postcard() {
        // Lengths at every 7-bit boundary, and the overlong and overflowing forms postcard
        // refuses or accepts.
        for v in [0u64, 127, 128, 16_383, 16_384, u32::MAX as u64, u64::MAX] {
            assert_eq!(
                varint_len(v),
                postcard::to_allocvec(&v).unwrap().len(),
                "{v}"
            );
        }
        let cases: [&[u8]; 6] = [
            &[0x80, 0x00],                   // zero, written long: accepted by postcard
            &[0xFF, 0xFF, 0xFF, 0xFF, 0x0F], // u32::MAX
            &[0xFF, 0xFF, 0xFF, 0xFF, 0x10], // a bit beyond u32
            &[0x80, 0x80, 0x80, 0x80, 0x80], // no end within 5 bytes
            &[0xFF, 0xFF, 0x03],             // u16: the most its last byte may say
            &[0xFF, 0xFF, 0x04],             // u16: one bit beyond
        ];
        for case in cases {
            // As a sample's tag (u32) and as an Int16's value.
            let mut tag = vec![1u8, 0, 1];
            tag.extend_from_slice(case);
            tag.extend_from_slice(&[0, 0, 0, 0]);
            agree(&tag).unwrap();
            let mut int16 = vec![1u8, 0, 1, 0, 1];
            int16.extend_from_slice(case);
            int16.extend_from_slice(&[0, 0]);
            agree(&int16).unwrap();
        }
    }

    /// Varints are read a word at a time where 8 bytes are left and a byte at a time near the
    /// end: every length from 1 to 11 bytes, with every kind of last byte, as a u16, a u32 and
    /// a u64, both near the end of the body and far from it, decodes as postcard decodes it.
    #[test]
    fn varints_of_every_length_decode_as_postcard_does_near_and_far_from_the_end() {
        let lasts = [0x00u8, 0x01, 0x02, 0x03, 0x04, 0x0F, 0x10, 0x7F, 0x80, 0xFF];
        for len in 1..=11 {
            for last in lasts {
                let mut varint = vec![0xFFu8; len - 1];
                varint.push(last);
                for far in [false, true] {
                    // Another sample after this one keeps the varint far from the end.
                    let tail: &[u8] = if far {
                        &[0, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
                    } else {
                        &[]
                    };
                    let count = if far { 2 } else { 1 };
                    // Live, catalogue 0, then a sample whose tag (u32) is the varint.
                    let mut tag = vec![1u8, 0, count];
                    tag.extend_from_slice(&varint);
                    tag.extend_from_slice(&[0, 0, 0, 0]);
                    tag.extend_from_slice(tail);
                    agree(&tag).unwrap();
                    // An Int16 (u16 varint), a UInt64 and a time (u64 varints).
                    for (variant, at_time) in [(1u8, false), (6, false), (0, true)] {
                        let mut b = vec![1u8, 0, count, 0];
                        if at_time {
                            b.extend_from_slice(&[0, 1, 0]);
                        } else {
                            b.push(variant);
                        }
                        b.extend_from_slice(&varint);
                        if !at_time {
                            b.extend_from_slice(&[0, 0]);
                        }
                        b.extend_from_slice(tail);
                        agree(&b).unwrap();
                    }
                }
            }
        }
        // Values at every 7-bit boundary encode as postcard's and read back, in every field.
        let mut values = vec![0u64, u64::MAX, 1 << 63, (1 << 63) - 1];
        for k in 1..10 {
            let edge = 1u64 << (7 * k);
            values.extend([edge - 1, edge, edge + 1]);
        }
        let samples: Vec<Sample> = values
            .iter()
            .map(|&v| Sample {
                tag: v as u32,
                value: Value::UInt64(v),
                quality: Quality(v as u32),
                time: v as i64,
            })
            .collect();
        for n in [1, samples.len()] {
            let msg = Message::History(HistoryBatch {
                catalogue: u64::MAX,
                log: 1 << 56,
                first_seq: (1 << 56) - 1,
                head_seq: 1 << 49,
                oldest_seq: 127,
                samples: samples[samples.len() - n..].to_vec(),
            });
            let mine = ours(&msg);
            assert_eq!(mine, postcard::to_allocvec(&msg).unwrap());
            assert_eq!(decode_message(&mine).unwrap().unwrap(), msg);
        }
    }

    #[test]
    fn values_postcard_refuses_are_refused() {
        // Live, catalogue 0, one sample: tag 0, then the value, then quality 0 and time 0.
        let with_value = |value: &[u8]| {
            let mut b = vec![1u8, 0, 1, 0];
            b.extend_from_slice(value);
            b.extend_from_slice(&[0, 0]);
            b
        };
        for (value, why) in [
            (&[0u8, 2][..], "a boolean of 2"),
            (&[12], "value variant 12"),
            (&[0x80, 0x01], "value variant 128"),
            (&[9, 2, 0xC3, 0x28], "a string that is not UTF-8"),
            (&[9, 5, b'a'], "a string longer than the body"),
            (&[11, 3, 1], "bytes longer than the body"),
            (&[8, 0, 0, 0], "a double of 3 bytes"),
        ] {
            let bytes = with_value(value);
            assert!(
                matches!(decode_message(&bytes), Some(Err(_))),
                "{why} must be refused"
            );
            agree(&bytes).unwrap();
        }
        // And the well-formed neighbours are accepted.
        for value in [&[0u8, 1][..], &[11], &[9, 2, 0xC3, 0xA9]] {
            let mut ok = value.to_vec();
            if ok == [11] {
                ok.push(0);
            }
            let bytes = with_value(&ok);
            assert!(matches!(decode_message(&bytes), Some(Ok(_))), "{ok:?}");
            agree(&bytes).unwrap();
        }
    }

    #[test]
    fn other_messages_are_left_to_postcard() {
        let hb = Message::Heartbeat(crate::message::Heartbeat {
            sent_at: 1,
            uptime_ms: 2,
            catalogue: 3,
            tag_count: 4,
            config_hash: 5,
            counters: Default::default(),
            sources: Vec::new(),
        });
        assert!(!encode_message(&hb, &mut Vec::new()));
        assert!(message_len(&hb).is_none());
        let bytes = postcard::to_allocvec(&hb).unwrap();
        assert!(decode_message(&bytes).is_none());
    }

    #[test]
    fn a_huge_sample_count_reserves_only_what_the_body_can_hold() {
        // Live, catalogue 0, then a count of u64::MAX >> 1 with no samples behind it.
        let mut bytes = vec![1u8, 0];
        bytes.extend_from_slice(&[0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F]);
        assert!(matches!(
            decode_message(&bytes),
            Some(Err(Error::DeserializeUnexpectedEnd))
        ));
    }
}
