//! The sending side: messages in, datagrams out.
//!
//! Messages are packed as frames into data payloads; a payload is closed when full or when its
//! oldest frame has waited `flush`, and becomes a data datagram, sent at once, and a data shard
//! of one of the block's FEC groups, assigned round-robin. When the block is full
//! (`data_shards` per group), or its oldest frame has waited `block_span`, every group of the
//! block is closed and the repair shards are sent, round-robin across the groups too. A full
//! block has `interleave` groups, so a burst of `interleave × repair_shards` consecutive losses
//! costs each group at most `repair_shards` shards.
//!
//! The two timers are separate because they cost different things: `flush` is latency for
//! every value (a frame waits in its payload), `block_span` only for a value behind a lost
//! datagram (the receiver delivers in order, so it waits for the repair). A block that stays
//! open longer than the payload timer fills on a busy link, which is what lets interleaving
//! spread a burst, and gets bigger groups on a quiet one, which need fewer repair shards.
//!
//! On a link too slow to fill blocks within the block span, interleaving would cut each block
//! into groups of a shard or two, each needing several repair shards of its own to survive
//! random loss. The encoder therefore adapts: a block closed early with `n` data datagrams makes
//! the next block open `clamp(ceil(n / data_shards), 1, interleave)` groups, and a block that
//! fills makes the next one open all `interleave` again. A group closed short gets the repair
//! shards [`fec::repair_count`] gives it: enough for [`fec::DESIGN_LOSS`] random loss.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::auth::{Psk, SessionKey};
use crate::codec;
use crate::error::{ConfigError, EncodeError};
use crate::fec::{self, GroupEncoder};
use crate::frame::{self, Fragment, FrameHeader};
use crate::message::{Message, Stream};
use crate::stats::EncoderStats;
use crate::wire::{self, DATA_PREFIX_LEN, HEADER_LEN, Header};

pub const DEFAULT_DATA_SHARDS: u16 = 64;
pub const DEFAULT_REPAIR_SHARDS: u16 = 16;
pub const DEFAULT_INTERLEAVE: u16 = 4;
pub const DEFAULT_FLUSH: Duration = Duration::from_millis(5);
/// Long enough for a block to fill on a 100 Mb/s link carrying full datagrams (4 × 80 of 1500
/// bytes in 38 ms), so the default interleave spreads a burst of 64 losses; short against the
/// receiver's 200 ms wait for a gap (`decoder::DEFAULT_GROUP_TIMEOUT`).
pub const DEFAULT_BLOCK_SPAN: Duration = Duration::from_millis(50);
/// Ethernet MTU 1500 minus 20 (IPv4) and 8 (UDP).
pub const DEFAULT_MAX_DATAGRAM: usize = 1472;
/// Largest encoded message body the encoder accepts (and the decoder reassembles).
pub const MAX_MESSAGE_SIZE: usize = 16 << 20;
pub const MAX_INTERLEAVE: u16 = 1024;
/// Most bytes one block may need buffered on either side, `interleave × (k + m) × shard`.
pub const MAX_BLOCK_BYTES: usize = 256 << 20;
/// Fewest bytes of frames a data datagram must be able to carry.
pub const MIN_FRAME_SPACE: usize = 64;

/// A fragmented message starts in the current payload only if at least this much of its body
/// fits there; otherwise the payload is closed first, so no datagram carries a uselessly small
/// fragment.
const MIN_FIRST_FRAGMENT: usize = 32;
/// A payload with less room than this is closed at once instead of waiting for the next
/// message or the timer: no frame with a body would fit.
const MIN_ROOM: usize = 8;
/// Spare datagram buffers kept for reuse.
const POOL_MAX: usize = 1024;

#[derive(Clone, PartialEq, Eq)]
pub struct EncoderConfig {
    /// Largest datagram to produce: the link MTU minus 28 for IPv4 and UDP.
    pub max_datagram: usize,
    /// Data shards per FEC group (k).
    pub data_shards: u16,
    /// Repair shards per full FEC group (m); 0 turns FEC off.
    pub repair_shards: u16,
    /// FEC groups filled round-robin at once (D).
    pub interleave: u16,
    /// Longest time a pushed message waits for its data datagram to fill.
    pub flush: Duration,
    /// Longest time a block stays open after its first frame: when its repair shards go out at
    /// the latest. At least `flush`.
    pub block_span: Duration,
    /// Pre-shared key; `Some` authenticates and encrypts every datagram.
    pub key: Option<Psk>,
}

impl std::fmt::Debug for EncoderConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncoderConfig")
            .field("max_datagram", &self.max_datagram)
            .field("data_shards", &self.data_shards)
            .field("repair_shards", &self.repair_shards)
            .field("interleave", &self.interleave)
            .field("flush", &self.flush)
            .field("block_span", &self.block_span)
            .field("key", &self.key.map(|_| "<redacted>"))
            .finish()
    }
}

impl Default for EncoderConfig {
    fn default() -> Self {
        EncoderConfig {
            max_datagram: DEFAULT_MAX_DATAGRAM,
            data_shards: DEFAULT_DATA_SHARDS,
            repair_shards: DEFAULT_REPAIR_SHARDS,
            interleave: DEFAULT_INTERLEAVE,
            flush: DEFAULT_FLUSH,
            block_span: DEFAULT_BLOCK_SPAN,
            key: None,
        }
    }
}

/// Sizes that follow from a valid config.
#[derive(Debug, Clone, Copy)]
struct Layout {
    /// Largest data shard content (`data_seq`, `len`, frames), even so that a repair shard of
    /// the same size fits in a datagram.
    shard_cap: usize,
    /// Bytes of frames per data datagram.
    frame_cap: usize,
}

impl EncoderConfig {
    /// Checks the shape; the error says what is valid.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.layout().map(|_| ())
    }

    fn layout(&self) -> Result<Layout, ConfigError> {
        let overhead = wire::overhead(self.key.is_some());
        let min = overhead + DATA_PREFIX_LEN + MIN_FRAME_SPACE;
        if !(min..=wire::MAX_UDP_PAYLOAD).contains(&self.max_datagram) {
            return Err(ConfigError::MaxDatagram {
                value: self.max_datagram,
                min,
                max: wire::MAX_UDP_PAYLOAD,
                overhead,
                min_payload: MIN_FRAME_SPACE,
            });
        }
        let (k, m) = (self.data_shards, self.repair_shards);
        if k == 0 {
            return Err(ConfigError::NoDataShards);
        }
        if self.interleave == 0 || self.interleave > MAX_INTERLEAVE {
            return Err(ConfigError::Interleave {
                value: self.interleave,
                max: MAX_INTERLEAVE,
            });
        }
        if !fec::shape_supported(usize::from(k), usize::from(m)) {
            return Err(ConfigError::FecShape {
                k,
                m,
                max_total: fec::MAX_GROUP_SHARDS,
            });
        }
        let shard_cap = (self.max_datagram - overhead) & !1;
        let group_bytes = (usize::from(k) + usize::from(m)) * shard_cap;
        if group_bytes > fec::MAX_GROUP_BYTES {
            return Err(ConfigError::GroupTooLarge {
                k,
                m,
                shard_bytes: shard_cap,
                bytes: group_bytes,
                max: fec::MAX_GROUP_BYTES,
            });
        }
        let block_bytes = group_bytes * usize::from(self.interleave);
        if block_bytes > MAX_BLOCK_BYTES {
            return Err(ConfigError::BlockTooLarge {
                interleave: self.interleave,
                k,
                m,
                shard_bytes: shard_cap,
                bytes: block_bytes,
                max: MAX_BLOCK_BYTES,
            });
        }
        Ok(Layout {
            shard_cap,
            frame_cap: shard_cap - DATA_PREFIX_LEN,
        })
    }
}

/// One FEC group of the open block.
#[derive(Default)]
struct Slot {
    group: u64,
    /// Content length of each data shard so far.
    lens: Vec<usize>,
    /// Data shard `i` at `i * shard_cap`, kept for computing the repair shards.
    storage: Vec<u8>,
    /// Repair shards, `m` of `shard_bytes` each, once the group is closed.
    repair: Vec<u8>,
    m: u16,
    shard_bytes: usize,
}

pub struct Encoder {
    session: u64,
    k: u16,
    m: u16,
    interleave: usize,
    /// Groups the open block uses (D'): `interleave` after a full block, fewer after one the
    /// timer closed with fewer than `interleave × k` data datagrams.
    active: usize,
    repair_sizes: fec::RepairSizes,
    flush: Duration,
    block_span: Duration,
    max_datagram: usize,
    key: Option<SessionKey>,
    layout: Layout,
    next_seq: u64,
    next_data_seq: u64,
    next_group: u64,
    msg_seq: [u64; Stream::COUNT],
    /// The data datagram being filled: header space, shard prefix, then frames.
    payload: Vec<u8>,
    /// When the oldest frame of the open payload was pushed.
    payload_anchor: Option<Instant>,
    /// When the oldest frame not yet protected by a closed block was pushed.
    block_anchor: Option<Instant>,
    slots: Vec<Slot>,
    /// Data datagrams in the open block.
    block_len: usize,
    queue: VecDeque<Vec<u8>>,
    pool: Vec<Vec<u8>>,
    body: Vec<u8>,
    rs: GroupEncoder,
    stats: EncoderStats,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder")
            .field("session", &format_args!("{:016x}", self.session))
            .field("next_seq", &self.next_seq)
            .field("queued", &self.queue.len())
            .finish_non_exhaustive()
    }
}

impl Encoder {
    /// `session_id` must be chosen at random each time the transmitter starts: it keeps
    /// receivers from mixing sessions and, with a key, keeps nonces unique.
    pub fn new(config: EncoderConfig, session_id: u64) -> Result<Encoder, ConfigError> {
        let layout = config.layout()?;
        let key = match &config.key {
            Some(psk) => Some(SessionKey::derive(psk, session_id).map_err(|_| ConfigError::Key)?),
            None => None,
        };
        let interleave = usize::from(config.interleave);
        let mut enc = Encoder {
            session: session_id,
            k: config.data_shards,
            m: config.repair_shards,
            interleave,
            active: interleave,
            repair_sizes: fec::RepairSizes::new(config.data_shards, config.repair_shards),
            flush: config.flush,
            block_span: config.block_span.max(config.flush),
            max_datagram: config.max_datagram,
            key,
            layout,
            next_seq: 0,
            next_data_seq: 0,
            next_group: 0,
            msg_seq: [0; Stream::COUNT],
            payload: Vec::new(),
            payload_anchor: None,
            block_anchor: None,
            slots: (0..interleave).map(|_| Slot::default()).collect(),
            block_len: 0,
            queue: VecDeque::new(),
            pool: Vec::new(),
            body: Vec::new(),
            rs: GroupEncoder::default(),
            stats: EncoderStats::default(),
        };
        enc.payload = enc.fresh_payload();
        Ok(enc)
    }

    pub fn session_id(&self) -> u64 {
        self.session
    }

    pub fn stats(&self) -> &EncoderStats {
        &self.stats
    }

    pub fn max_datagram(&self) -> usize {
        self.max_datagram
    }

    /// Largest encoded message body that is never fragmented: a message up to this size
    /// travels in one datagram, so its fate depends on one datagram only.
    pub fn max_unfragmented_body(&self) -> usize {
        self.layout.frame_cap - frame::MAX_HEADER_LEN
    }

    /// Datagrams ready for [`Encoder::poll_transmit`].
    pub fn pending_datagrams(&self) -> usize {
        self.queue.len()
    }

    /// FEC groups the open block spreads its data datagrams over: `interleave` while blocks
    /// fill, fewer on a link the flush timer closes blocks on.
    pub fn block_groups(&self) -> usize {
        self.active
    }

    /// The next sequence number each stream will use.
    pub fn next_message_seq(&self, stream: Stream) -> u64 {
        self.msg_seq[stream as usize]
    }

    /// Encodes `msg` and packs it into the current data payload. Datagrams that become ready
    /// are queued for [`Encoder::poll_transmit`]. `now` starts the flush timer if nothing was
    /// waiting.
    pub fn push(&mut self, msg: &Message, now: Instant) -> Result<(), EncodeError> {
        let mut body = std::mem::take(&mut self.body);
        body.clear();
        if let Err(e) = codec::encode_message_into(msg, &mut body) {
            self.body = body;
            return Err(e.into());
        }
        let pushed = self.push_encoded(msg.stream(), &body, now);
        self.body = body;
        pushed
    }

    /// Queues a message encoded beforehand (with `codec`) on `stream`: the transmitter's
    /// history thread encodes its batches itself, off the link's thread.
    pub fn push_encoded(
        &mut self,
        stream: Stream,
        body: &[u8],
        now: Instant,
    ) -> Result<(), EncodeError> {
        if body.len() > MAX_MESSAGE_SIZE {
            return Err(EncodeError::MessageTooLarge {
                size: body.len(),
                max: MAX_MESSAGE_SIZE,
            });
        }
        let s = stream as usize;
        let seq = self.msg_seq[s];
        self.msg_seq[s] += 1;
        self.stats.messages[s] += 1;
        self.stats.message_bytes[s] += body.len() as u64;
        self.pack(stream, seq, body, now);
        Ok(())
    }

    /// Copies the next datagram, in send order, into `out` and returns its length.
    ///
    /// # Panics
    /// If `out` is shorter than the datagram; a buffer of `max_datagram` bytes always fits.
    pub fn poll_transmit(&mut self, out: &mut [u8]) -> Option<usize> {
        let buf = self.queue.pop_front()?;
        let n = buf.len();
        assert!(
            out.len() >= n,
            "poll_transmit: buffer of {} bytes is shorter than the {n}-byte datagram",
            out.len()
        );
        out[..n].copy_from_slice(&buf);
        self.recycle(buf);
        Some(n)
    }

    /// The next datagram without removing it, for senders that may have to retry it (a full
    /// socket buffer); [`Encoder::advance_transmit`] removes it once sent.
    pub fn peek_transmit(&self) -> Option<&[u8]> {
        self.queue.front().map(Vec::as_slice)
    }

    pub fn advance_transmit(&mut self) {
        if let Some(buf) = self.queue.pop_front() {
            self.recycle(buf);
        }
    }

    /// Closes the partial payload and all partial groups now: every pushed message is in the
    /// queue afterwards, protected by its repair shards.
    pub fn flush(&mut self, _now: Instant) {
        self.close_payload();
        self.close_block();
    }

    /// Closes the partial payload now, so what was pushed goes out at once, and leaves the
    /// block open to fill: for a message that must not wait (a heartbeat) without cutting the
    /// block short, which would shrink its groups and the burst they survive.
    pub fn flush_payload(&mut self, _now: Instant) {
        self.close_payload();
    }

    /// When [`Encoder::handle_timeout`] must be called next, if anything is waiting.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.payload_due(), self.block_due()) {
            (Some(p), Some(b)) => Some(p.min(b)),
            (p, b) => p.or(b),
        }
    }

    fn payload_due(&self) -> Option<Instant> {
        self.payload_anchor.and_then(|a| a.checked_add(self.flush))
    }

    fn block_due(&self) -> Option<Instant> {
        self.block_anchor
            .and_then(|a| a.checked_add(self.block_span))
    }

    /// Closes the partial payload once its oldest frame has waited `flush`, and the open block
    /// (with the payload, so that its frames are protected too) once its oldest frame has
    /// waited `block_span`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.block_due().is_some_and(|t| t <= now) {
            self.stats.timer_flushes += 1;
            self.close_payload();
            self.close_block();
        } else if self.payload_due().is_some_and(|t| t <= now) {
            self.stats.payload_flushes += 1;
            self.close_payload();
        }
    }

    fn frames_len(&self) -> usize {
        self.payload.len() - HEADER_LEN - DATA_PREFIX_LEN
    }

    fn room(&self) -> usize {
        self.layout.frame_cap - self.frames_len()
    }

    fn pack(&mut self, stream: Stream, seq: u64, body: &[u8], now: Instant) {
        let hl = frame::header_len(seq);
        let whole = hl + body.len();
        if whole > self.room()
            && (whole <= self.layout.frame_cap || self.room() < hl + MIN_FIRST_FRAGMENT)
        {
            self.close_payload();
        }
        if whole <= self.room() {
            self.append(stream, Fragment::Whole, seq, body, now);
        } else {
            self.stats.fragmented_messages += 1;
            let mut rest = body;
            let mut kind = Fragment::First;
            loop {
                // room() >= hl here: a fresh payload holds MIN_FRAME_SPACE > MAX_HEADER_LEN,
                // and the first fragment was checked above.
                let room = self.room() - hl;
                if kind != Fragment::First && rest.len() <= room {
                    self.append(stream, Fragment::Last, seq, rest, now);
                    break;
                }
                let (chunk, tail) = rest.split_at(room.min(rest.len()));
                self.append(stream, kind, seq, chunk, now);
                self.close_payload();
                rest = tail;
                kind = Fragment::Middle;
            }
        }
        if self.room() < MIN_ROOM {
            self.close_payload();
        }
    }

    fn append(&mut self, stream: Stream, fragment: Fragment, seq: u64, body: &[u8], now: Instant) {
        let h = FrameHeader {
            stream,
            fragment,
            seq,
            // Bodies here are at most frame_cap <= 65507 bytes.
            body_len: u16::try_from(body.len()).unwrap_or(u16::MAX),
        };
        frame::write_header(&h, &mut self.payload);
        self.payload.extend_from_slice(body);
        self.payload_anchor.get_or_insert(now);
        self.block_anchor.get_or_insert(now);
    }

    fn fresh_payload(&mut self) -> Vec<u8> {
        let mut buf = self
            .pool
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(self.max_datagram));
        buf.clear();
        buf.resize(HEADER_LEN + DATA_PREFIX_LEN, 0);
        buf
    }

    fn recycle(&mut self, buf: Vec<u8>) {
        if self.pool.len() < POOL_MAX {
            self.pool.push(buf);
        }
    }

    /// Turns the current payload into a data datagram and files it in its group.
    fn close_payload(&mut self) {
        let frames = self.frames_len();
        if frames == 0 {
            return;
        }
        self.payload_anchor = None;
        let content_len = DATA_PREFIX_LEN + frames;
        let data_seq = self.next_data_seq;
        self.next_data_seq += 1;
        let p = HEADER_LEN;
        self.payload[p..p + 8].copy_from_slice(&data_seq.to_be_bytes());
        // frames <= frame_cap < 65536.
        let frames16 = u16::try_from(frames).unwrap_or(u16::MAX);
        self.payload[p + 8..p + 10].copy_from_slice(&frames16.to_be_bytes());

        let j = self.block_len % self.active;
        let index = self.block_len / self.active;
        let cap = self.layout.shard_cap;
        let slot = &mut self.slots[j];
        if slot.lens.is_empty() {
            slot.group = self.next_group;
            self.next_group += 1;
        }
        if self.m > 0 {
            let at = index * cap;
            if slot.storage.len() < at + cap {
                slot.storage.resize(at + cap, 0);
            }
            slot.storage[at..at + content_len].copy_from_slice(&self.payload[p..p + content_len]);
        }
        slot.lens.push(content_len);
        let header = Header {
            flags: 0,
            session: self.session,
            seq: 0,
            group: slot.group,
            index: u16::try_from(index).unwrap_or(u16::MAX),
            k: self.k,
            m: self.m,
            payload_len: u16::try_from(content_len).unwrap_or(u16::MAX),
        };
        let fresh = self.fresh_payload();
        let buf = std::mem::replace(&mut self.payload, fresh);
        self.finish(header, buf);
        self.stats.data_datagrams += 1;
        self.block_len += 1;
        if self.block_len == self.active * usize::from(self.k) {
            self.close_block();
        }
    }

    /// Computes and queues the repair shards of every group of the block, round-robin, and
    /// chooses how many groups the next block opens.
    fn close_block(&mut self) {
        if self.block_len == 0 {
            self.block_anchor = None;
            return;
        }
        let used = self.block_len.min(self.active);
        let cap = self.layout.shard_cap;
        let mut max_m = 0;
        if self.m > 0 {
            for slot in &mut self.slots[..used] {
                let k_actual = u16::try_from(slot.lens.len()).unwrap_or(u16::MAX);
                slot.m = self.repair_sizes.get(k_actual);
                let size = fec::shard_size(slot.lens.iter().copied().max().unwrap_or(0));
                slot.shard_bytes = size;
                for (i, &len) in slot.lens.iter().enumerate() {
                    slot.storage[i * cap + len..i * cap + size].fill(0);
                }
                let storage = &slot.storage;
                let shards = (0..slot.lens.len()).map(|i| &storage[i * cap..i * cap + size]);
                let r = self.rs.encode(
                    slot.lens.len(),
                    usize::from(slot.m),
                    size,
                    shards,
                    &mut slot.repair,
                );
                if r.is_err() {
                    // Unreachable for a validated shape; the data shards are out already, so
                    // the group just goes without protection.
                    self.stats.fec_errors += 1;
                    slot.m = 0;
                }
                max_m = max_m.max(slot.m);
            }
        }
        for r in 0..max_m {
            for j in 0..used {
                let slot = &self.slots[j];
                if r >= slot.m {
                    continue;
                }
                let size = slot.shard_bytes;
                let k_actual = u16::try_from(slot.lens.len()).unwrap_or(u16::MAX);
                let header = Header {
                    flags: wire::FLAG_REPAIR,
                    session: self.session,
                    seq: 0,
                    group: slot.group,
                    index: k_actual + r,
                    k: k_actual,
                    m: slot.m,
                    payload_len: u16::try_from(size).unwrap_or(u16::MAX),
                };
                let mut buf = self.pool.pop().unwrap_or_default();
                buf.clear();
                buf.resize(HEADER_LEN, 0);
                let at = usize::from(r) * size;
                buf.extend_from_slice(&slot.repair[at..at + size]);
                self.finish(header, buf);
                self.stats.repair_datagrams += 1;
            }
        }
        for slot in &mut self.slots[..used] {
            slot.lens.clear();
            slot.m = 0;
        }
        self.stats.groups += used as u64;
        let k = usize::from(self.k);
        self.active = if self.block_len >= self.active * k {
            self.interleave
        } else {
            self.block_len.div_ceil(k).clamp(1, self.interleave)
        };
        self.block_len = 0;
        self.block_anchor = None;
    }

    /// Numbers, seals and checksums a datagram whose payload follows the header space in
    /// `buf`, and queues it.
    fn finish(&mut self, mut header: Header, mut buf: Vec<u8>) {
        header.seq = self.next_seq;
        self.next_seq += 1;
        if self.key.is_some() {
            header.flags |= wire::FLAG_AUTHENTICATED;
        }
        let hb = header.to_bytes();
        buf[..HEADER_LEN].copy_from_slice(&hb);
        if let Some(key) = &self.key {
            let (head, payload) = buf.split_at_mut(HEADER_LEN);
            // Sealing fails only for payloads beyond GCM's 64 GiB limit.
            let tag = key
                .seal(header.seq, head, payload)
                .unwrap_or([0; wire::TAG_LEN]);
            buf.extend_from_slice(&tag);
        }
        let crc = wire::crc32(&buf);
        buf.extend_from_slice(&crc.to_be_bytes());
        debug_assert!(buf.len() <= self.max_datagram);
        self.stats.datagrams += 1;
        self.stats.bytes += buf.len() as u64;
        self.queue.push_back(buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::Frames;
    use crate::message::SampleBatch;
    use crate::model::{Quality, Sample, Value};

    fn msg(body_bytes: usize) -> Message {
        Message::Live(SampleBatch {
            catalogue: 0,
            samples: vec![Sample {
                tag: 0,
                value: Value::ByteString(vec![0xEE; body_bytes]),
                quality: Quality::GOOD,
                time: 0,
            }],
        })
    }

    fn drain(enc: &mut Encoder) -> Vec<(Header, Vec<u8>)> {
        let mut buf = vec![0u8; enc.max_datagram()];
        let mut out = Vec::new();
        while let Some(n) = enc.poll_transmit(&mut buf) {
            let h = wire::check(&buf[..n]).expect("valid datagram");
            let payload = buf[HEADER_LEN..HEADER_LEN + usize::from(h.payload_len)].to_vec();
            out.push((h, payload));
        }
        out
    }

    fn frames(payload: &[u8]) -> Vec<(Fragment, u64, usize)> {
        Frames::new(&payload[DATA_PREFIX_LEN..])
            .map(|f| {
                let (h, body) = f.expect("frame");
                (h.fragment, h.seq, body.len())
            })
            .collect()
    }

    fn shape(k: u16, m: u16, d: u16) -> EncoderConfig {
        EncoderConfig {
            max_datagram: 300,
            data_shards: k,
            repair_shards: m,
            interleave: d,
            ..EncoderConfig::default()
        }
    }

    /// A message encoded beforehand goes out exactly as the same message pushed whole; a body
    /// over the limit is refused.
    #[test]
    fn an_encoded_body_makes_the_datagrams_of_its_message() {
        let now = Instant::now();
        let history = Message::History(crate::message::HistoryBatch {
            catalogue: 7,
            log: 9,
            first_seq: 100,
            head_seq: 3000,
            oldest_seq: 1,
            samples: (0..3000)
                .map(|i| Sample {
                    tag: i,
                    value: Value::Double(f64::from(i)),
                    quality: Quality::GOOD,
                    time: 1_780_000_000_000_000_000 + i64::from(i),
                })
                .collect(),
        });
        let mut whole = Encoder::new(shape(8, 2, 2), 5).unwrap();
        let mut encoded = Encoder::new(shape(8, 2, 2), 5).unwrap();
        whole.push(&history, now).unwrap();
        let body = codec::encode(&history).unwrap();
        encoded.push_encoded(Stream::History, &body, now).unwrap();
        whole.flush(now);
        encoded.flush(now);
        let sent = drain(&mut whole);
        assert!(
            sent.len() > 30,
            "a fragmented message: {} datagrams",
            sent.len()
        );
        assert_eq!(drain(&mut encoded), sent);
        assert_eq!(encoded.stats().messages(Stream::History), 1);
        let too_large = vec![0u8; MAX_MESSAGE_SIZE + 1];
        assert!(matches!(
            encoded.push_encoded(Stream::History, &too_large, now),
            Err(EncodeError::MessageTooLarge { .. })
        ));
    }

    #[test]
    fn small_messages_share_a_datagram_and_whole_ones_are_not_split() {
        let now = Instant::now();
        let mut enc = Encoder::new(shape(4, 0, 1), 1).unwrap();
        // frame_cap = (300 - 42) - 10 = 248 bytes of frames.
        assert_eq!(enc.layout.frame_cap, 248);
        enc.push(&msg(50), now).unwrap();
        enc.push(&msg(50), now).unwrap();
        // Fits in an empty payload but not in what is left: a new datagram, not a fragment.
        enc.push(&msg(200), now).unwrap();
        enc.flush(now);
        let d = drain(&mut enc);
        assert_eq!(d.len(), 2);
        let f0 = frames(&d[0].1);
        assert_eq!(f0.len(), 2);
        assert!(f0.iter().all(|f| f.0 == Fragment::Whole));
        assert_eq!(frames(&d[1].1)[0].0, Fragment::Whole);
    }

    #[test]
    fn large_messages_fragment_across_consecutive_data_datagrams() {
        let now = Instant::now();
        let mut enc = Encoder::new(shape(8, 0, 1), 1).unwrap();
        enc.push(&msg(100), now).unwrap();
        enc.push(&msg(1_000), now).unwrap();
        enc.push(&msg(10), now).unwrap();
        enc.flush(now);
        let d = drain(&mut enc);
        let all: Vec<Vec<(Fragment, u64, usize)>> = d.iter().map(|(_, p)| frames(p)).collect();
        // The first fragment starts after the small message; middles fill whole payloads;
        // the last shares its payload with the next message.
        assert_eq!(all[0][0], (Fragment::Whole, 0, all[0][0].2));
        assert_eq!((all[0][1].0, all[0][1].1), (Fragment::First, 1));
        for mid in &all[1..all.len() - 1] {
            assert_eq!(mid.len(), 1);
            assert_eq!((mid[0].0, mid[0].1), (Fragment::Middle, 1));
        }
        let last = all.last().unwrap();
        assert_eq!((last[0].0, last[0].1), (Fragment::Last, 1));
        assert_eq!((last[1].0, last[1].1), (Fragment::Whole, 2));
        let body: usize = all.iter().flatten().filter(|f| f.1 == 1).map(|f| f.2).sum();
        assert_eq!(body, codec::encode(&msg(1_000)).unwrap().len());
        assert_eq!(enc.stats().fragmented_messages, 1);
        // data_seq is contiguous.
        for (i, (_, p)) in d.iter().enumerate() {
            assert_eq!(wire::be_u64(p, 0), Some(i as u64));
        }
    }

    #[test]
    fn fragment_starts_a_new_payload_when_little_room_is_left() {
        let now = Instant::now();
        let mut enc = Encoder::new(shape(8, 0, 1), 1).unwrap();
        // Leave less than header + MIN_FIRST_FRAGMENT bytes of room.
        let filler = msg(200);
        enc.push(&filler, now).unwrap();
        let room = enc.room();
        assert!(
            room < frame::header_len(1) + MIN_FIRST_FRAGMENT,
            "room {room}"
        );
        enc.push(&msg(1_000), now).unwrap();
        enc.flush(now);
        let d = drain(&mut enc);
        assert_eq!(frames(&d[0].1).len(), 1);
        assert_eq!(frames(&d[1].1)[0].0, Fragment::First);
    }

    #[test]
    fn full_block_interleaves_data_and_repair_round_robin() {
        let now = Instant::now();
        let (k, m, d) = (2u16, 2u16, 3u16);
        let mut enc = Encoder::new(shape(k, m, d), 9).unwrap();
        // Each message fills most of a payload, so the seventh closes the sixth data datagram,
        // which fills the block: the repairs follow without a flush.
        for _ in 0..7 {
            enc.push(&msg(200), now).unwrap();
        }
        let out = drain(&mut enc);
        let got: Vec<(bool, u64, u16, u16, u16)> = out
            .iter()
            .map(|(h, _)| (h.is_repair(), h.group, h.index, h.k, h.m))
            .collect();
        let mut want = Vec::new();
        for i in 0..2u16 {
            for g in 0..3 {
                want.push((false, g, i, k, m));
            }
        }
        for r in 0..2u16 {
            for g in 0..3 {
                want.push((true, g, k + r, k, m));
            }
        }
        assert_eq!(got, want);
        for (i, (h, _)) in out.iter().enumerate() {
            assert_eq!(h.seq, i as u64);
            assert_eq!(h.session, 9);
        }
        assert_eq!(
            enc.poll_timeout(),
            Some(now + DEFAULT_FLUSH),
            "the seventh waits"
        );
    }

    #[test]
    fn short_block_gets_the_repair_its_groups_need() {
        let now = Instant::now();
        let mut enc = Encoder::new(shape(4, 4, 3), 9).unwrap();
        for _ in 0..5 {
            enc.push(&msg(200), now).unwrap();
        }
        enc.flush(now);
        let out = drain(&mut enc);
        let repairs: Vec<(u64, u16, u16, u16)> = out
            .iter()
            .filter(|(h, _)| h.is_repair())
            .map(|(h, _)| (h.group, h.index, h.k, h.m))
            .collect();
        // Groups 0 and 1 hold 2 shards, group 2 holds 1. The proportional share would be 2
        // and 1; surviving 5 % loss within 1e-6 takes 5 and 4, capped at m = 4.
        let mut want = Vec::new();
        for r in 0..4u16 {
            want.extend([(0, 2 + r, 2, 4), (1, 2 + r, 2, 4), (2, 1 + r, 1, 4)]);
        }
        assert_eq!(repairs, want);
        // Repair payloads are the group's shard size: even, at least every data shard.
        for (h, p) in out.iter().filter(|(h, _)| h.is_repair()) {
            assert_eq!(p.len() % 2, 0);
            let longest = out
                .iter()
                .filter(|(d, _)| !d.is_repair() && d.group == h.group)
                .map(|(d, _)| usize::from(d.payload_len))
                .max()
                .unwrap();
            assert_eq!(p.len(), fec::shard_size(longest));
        }
    }

    #[test]
    fn quiet_link_gets_design_repair_at_the_default_shape() {
        let t0 = Instant::now();
        let mut enc = Encoder::new(EncoderConfig::default(), 3).unwrap();
        // One small message per block span: each block is one data datagram, in one group
        // (after the first block), with the 4 repair shards a lone shard needs.
        let mut t = t0;
        for i in 0..10u32 {
            enc.push(&msg(20), t).unwrap();
            t += DEFAULT_BLOCK_SPAN;
            enc.handle_timeout(t);
            let out = drain(&mut enc);
            assert_eq!(out.len(), 5, "block {i}");
            assert!(!out[0].0.is_repair());
            for (r, (h, _)) in out[1..].iter().enumerate() {
                assert!(h.is_repair());
                assert_eq!(
                    (h.group, h.index, h.k, h.m),
                    (u64::from(i), 1 + r as u16, 1, 4)
                );
            }
            assert_eq!(enc.block_groups(), 1);
        }
        assert_eq!(enc.stats().repair_datagrams, 4 * enc.stats().data_datagrams);
    }

    #[test]
    fn payload_timer_sends_data_and_block_timer_sends_repair() {
        let t0 = Instant::now();
        let mut enc = Encoder::new(EncoderConfig::default(), 4).unwrap();
        // One small message per flush period, ten in a block span: each goes out alone after
        // `flush`, and the block collects all ten in one group (after the first block, which
        // opens the full interleave) with the repair ten shards need, sent at the block span.
        let mut t = t0;
        let mut data = 0;
        for round in 0..3 {
            let opened = t;
            for i in 0..10 {
                enc.push(&msg(20), t).unwrap();
                assert_eq!(
                    enc.poll_timeout(),
                    Some(t + DEFAULT_FLUSH),
                    "round {round} msg {i}"
                );
                t += DEFAULT_FLUSH;
                enc.handle_timeout(t);
                let out = drain(&mut enc);
                if i < 9 {
                    assert_eq!(
                        out.len(),
                        1,
                        "round {round} msg {i}: the data datagram alone"
                    );
                    assert!(!out[0].0.is_repair());
                    assert_eq!(enc.poll_timeout(), Some(opened + DEFAULT_BLOCK_SPAN));
                } else {
                    // The tenth payload closes at the block span, with the block.
                    assert_eq!(t, opened + DEFAULT_BLOCK_SPAN);
                    let repairs: Vec<_> = out.iter().filter(|(h, _)| h.is_repair()).collect();
                    assert_eq!(out.len() - repairs.len(), 1);
                    if round > 0 {
                        // k' = 10 gets R(10) = 7 repair shards: 0.7 per data datagram where
                        // closing the block with every payload cost 4.
                        assert_eq!(repairs.len(), 7, "round {round}");
                        assert!(repairs.iter().all(|(h, _)| (h.k, h.m) == (10, 7)));
                    }
                    assert_eq!(enc.poll_timeout(), None);
                }
                data += 1;
            }
            assert_eq!(enc.block_groups(), 1);
        }
        assert_eq!(enc.stats().data_datagrams, data);
        assert_eq!(enc.stats().timer_flushes, 3);
        assert_eq!(enc.stats().payload_flushes, 27);
    }

    #[test]
    fn flush_payload_sends_the_datagram_and_keeps_the_block_open() {
        let t0 = Instant::now();
        let mut enc = Encoder::new(EncoderConfig::default(), 7).unwrap();
        enc.push(&msg(20), t0).unwrap();
        enc.flush_payload(t0);
        let out = drain(&mut enc);
        assert_eq!(out.len(), 1);
        assert!(!out[0].0.is_repair());
        // The block still waits for more data, with its timer from the first frame.
        assert_eq!(enc.poll_timeout(), Some(t0 + DEFAULT_BLOCK_SPAN));
        for _ in 0..3 {
            enc.push(&msg(20), t0).unwrap();
            enc.flush_payload(t0);
        }
        assert_eq!(drain(&mut enc).len(), 3, "data datagrams only");
        enc.handle_timeout(t0 + DEFAULT_BLOCK_SPAN);
        let out = drain(&mut enc);
        assert!(out.iter().all(|(h, _)| h.is_repair()));
        // The first block opens the full interleave: four groups of one shard, 4 repair each.
        assert_eq!(out.len(), 16);
        assert_eq!(enc.stats().timer_flushes, 1);
    }

    #[test]
    fn block_span_is_never_shorter_than_flush() {
        let t0 = Instant::now();
        let cfg = EncoderConfig {
            flush: Duration::from_millis(20),
            block_span: Duration::from_millis(5),
            ..EncoderConfig::default()
        };
        let mut enc = Encoder::new(cfg, 6).unwrap();
        enc.push(&msg(20), t0).unwrap();
        assert_eq!(enc.poll_timeout(), Some(t0 + Duration::from_millis(20)));
    }

    #[test]
    fn adaptive_interleave_follows_how_full_blocks_were() {
        let t0 = Instant::now();
        let (k, m, d) = (8u16, 2u16, 4u16);
        let mut enc = Encoder::new(shape(k, m, d), 5).unwrap();
        // One message per data datagram: each push closes the datagram before it, so the data
        // datagrams go out as soon as they are full, before their block closes. The timer
        // closes the last one and the block.
        let block = |enc: &mut Encoder, pushes: usize, t: Instant| {
            for _ in 0..pushes {
                enc.push(&msg(200), t).unwrap();
            }
            let early = enc.pending_datagrams();
            enc.handle_timeout(t + DEFAULT_BLOCK_SPAN);
            (early, drain(enc))
        };
        let data_of = |out: &[(Header, Vec<u8>)]| -> Vec<(u64, u16)> {
            out.iter()
                .filter(|(h, _)| !h.is_repair())
                .map(|(h, _)| (h.group, h.index))
                .collect()
        };
        let repair_of = |out: &[(Header, Vec<u8>)]| -> Vec<(u64, u16, u16, u16)> {
            out.iter()
                .filter(|(h, _)| h.is_repair())
                .map(|(h, _)| (h.group, h.index, h.k, h.m))
                .collect()
        };
        assert_eq!(enc.block_groups(), 4, "the first block interleaves fully");
        // 3 data datagrams: groups 0, 1, 2 of one shard each; two went out before the timer.
        let (early, out) = block(&mut enc, 3, t0);
        assert_eq!(early, 2);
        assert_eq!(data_of(&out), vec![(0, 0), (1, 0), (2, 0)]);
        // ceil(3 / 8) = 1 group next: 5 data datagrams in group 3, with m = 2 repair shards
        // (the design count, 6, capped at m).
        assert_eq!(enc.block_groups(), 1);
        let (early, out) = block(&mut enc, 5, t0 + Duration::from_millis(100));
        assert_eq!(early, 4);
        assert_eq!(data_of(&out), vec![(3, 0), (3, 1), (3, 2), (3, 3), (3, 4)]);
        assert_eq!(repair_of(&out), vec![(3, 5, 5, 2), (3, 6, 5, 2)]);
        // A one-group block that fills (k = 8) closes itself; the next opens all 4 groups.
        assert_eq!(enc.block_groups(), 1);
        let t = t0 + Duration::from_millis(200);
        for _ in 0..9 {
            enc.push(&msg(200), t).unwrap();
        }
        let out = drain(&mut enc);
        assert_eq!(data_of(&out), (0..8).map(|i| (4, i)).collect::<Vec<_>>());
        assert_eq!(repair_of(&out), vec![(4, 8, 8, 2), (4, 9, 8, 2)]);
        assert_eq!(enc.block_groups(), 4);
        // 10 data datagrams (the one waiting and 9 more) over groups 5..=8.
        let (_, out) = block(&mut enc, 9, t);
        let g = data_of(&out);
        assert_eq!(g.len(), 10);
        assert_eq!(&g[..6], &[(5, 0), (6, 0), (7, 0), (8, 0), (5, 1), (6, 1)]);
        // ceil(10 / 8) = 2 groups next.
        assert_eq!(enc.block_groups(), 2);
        // An explicit flush counts like the timer.
        let t = t0 + Duration::from_millis(400);
        for _ in 0..3 {
            enc.push(&msg(200), t).unwrap();
        }
        enc.flush(t);
        let out = drain(&mut enc);
        assert_eq!(data_of(&out), vec![(9, 0), (10, 0), (9, 1)]);
        assert_eq!(enc.block_groups(), 1);
        assert_eq!(enc.poll_timeout(), None);
    }

    #[test]
    fn no_repair_without_fec_and_buffers_are_reused() {
        let now = Instant::now();
        let mut enc = Encoder::new(shape(4, 0, 2), 1).unwrap();
        for _ in 0..100 {
            enc.push(&msg(200), now).unwrap();
            drain(&mut enc);
        }
        enc.flush(now);
        let out = drain(&mut enc);
        assert!(out.iter().all(|(h, _)| !h.is_repair()));
        assert_eq!(enc.stats().repair_datagrams, 0);
        assert!(enc.pool.len() <= 2, "datagram buffers are recycled");
    }

    #[test]
    fn key_is_not_printed() {
        let cfg = EncoderConfig {
            key: Some([0xAB; 32]),
            ..EncoderConfig::default()
        };
        let s = format!("{cfg:?}");
        assert!(s.contains("redacted") && !s.contains("171"), "{s}");
    }
}
