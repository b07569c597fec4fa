//! The one place that knows how message bodies are serialised (postcard 1.x, whose wire format
//! is frozen and documented). Swapping the codec means changing only this file.

mod samples;

pub use samples::HistoryHead;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize, Serializer};

use crate::message::Message;
use crate::model::Sample;

#[derive(Debug, thiserror::Error)]
#[error("message body does not decode: {0}")]
pub struct DecodeError(#[from] postcard::Error);

#[derive(Debug, thiserror::Error)]
#[error("message body does not encode: {0}")]
pub struct EncodeError(#[from] postcard::Error);

pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, EncodeError> {
    Ok(postcard::to_allocvec(value)?)
}

/// Appends the encoding of `value` to `out`, reusing its allocation.
pub fn encode_into<T: Serialize>(value: &T, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let taken = std::mem::take(out);
    *out = postcard::to_extend(value, taken)?;
    Ok(())
}

/// Appends the encoding of a message to `out`. Sample batches take a hand-written path that
/// writes postcard's exact bytes without postcard's per-field cost (see `samples`).
pub fn encode_message_into(msg: &Message, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    if samples::encode_message(msg, out) {
        Ok(())
    } else {
        encode_into(msg, out)
    }
}

/// Decodes a whole message body, as `decode::<Message>` does, sample batches by the
/// hand-written path.
pub fn decode_message(bytes: &[u8]) -> Result<Message, DecodeError> {
    match samples::decode_message(bytes) {
        Some(decoded) => Ok(decoded?),
        None => decode(bytes),
    }
}

/// The exact length of a message's encoding.
pub fn message_len(msg: &Message) -> Result<usize, EncodeError> {
    match samples::message_len(msg) {
        Some(len) => Ok(len),
        None => encoded_len(msg),
    }
}

/// The exact length of a sample's encoding: what it adds to a batch.
pub fn sample_len(sample: &Sample) -> usize {
    samples::sample_len(sample)
}

/// Appends one sample's encoding as it appears in a batch. The transmitter encodes each sample
/// once, when it is buffered, and copies those bytes into its buffer's records and into
/// batches ([`encode_numbered_encoded`], [`encode_history_encoded`]).
pub fn encode_sample_into(sample: &Sample, out: &mut Vec<u8>) {
    samples::encode_sample(sample, out);
}

/// Appends the encoding of `(seq, sample)` (a numbered sample, as history records store them)
/// given the sample's encoding from [`encode_sample_into`].
pub fn encode_numbered_encoded(seq: u64, sample: &[u8], out: &mut Vec<u8>) {
    samples::encode_numbered_encoded(seq, sample, out);
}

/// Appends the encoding of `Message::History` with `head`'s fields and `count` samples whose
/// encodings (from [`encode_sample_into`]) are `samples`, back to back: the same bytes as
/// [`encode_message_into`] of that batch.
pub fn encode_history_encoded(head: &HistoryHead, count: usize, samples: &[u8], out: &mut Vec<u8>) {
    samples::encode_history_encoded(head, count, samples, out);
}

/// Decodes the whole of `bytes` as a numbered sample written by [`encode_numbered_encoded`]
/// (the same bytes as `encode(&(seq, sample))`).
pub fn decode_numbered_sample(bytes: &[u8]) -> Result<(u64, Sample), DecodeError> {
    Ok(samples::decode_numbered(bytes)?)
}

/// The exact length of `value`'s encoding, computed without writing it.
pub fn encoded_len<T: Serialize>(value: &T) -> Result<usize, EncodeError> {
    Ok(postcard::experimental::serialized_size(value)?)
}

/// Decodes a whole body; trailing bytes are an error, since a frame holds exactly one body.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    decode_borrowed(bytes)
}

/// As [`decode`], for types that borrow from `bytes` (strings as `&str`), so that stored
/// encodings can be read without copying them.
pub fn decode_borrowed<'de, T: Deserialize<'de>>(bytes: &'de [u8]) -> Result<T, DecodeError> {
    let (value, rest) = decode_prefix(bytes)?;
    if rest.is_empty() {
        Ok(value)
    } else {
        Err(DecodeError(postcard::Error::DeserializeBadEncoding))
    }
}

/// Decodes one value from the start of `bytes` and returns it with the bytes after it: reads
/// the leading field of a stored encoding without decoding the rest.
pub fn decode_prefix<'de, T: Deserialize<'de>>(
    bytes: &'de [u8],
) -> Result<(T, &'de [u8]), DecodeError> {
    Ok(postcard::take_from_bytes(bytes)?)
}

/// The bytes a sequence of `len` elements starts with. The encoding of a sequence is these
/// bytes followed by each element's encoding, so a long list can be stored, hashed or sent as
/// its elements' encodings without ever encoding the whole list at once.
pub fn seq_header(len: usize) -> Vec<u8> {
    struct Header(usize);
    impl Serialize for Header {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            use serde::ser::SerializeSeq;
            s.serialize_seq(Some(self.0))?.end()
        }
    }
    // A seq of known length only writes its length, which cannot fail; the empty fallback is
    // never reached.
    postcard::to_allocvec(&Header(len)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_header_then_elements_is_the_sequence() {
        for len in [0usize, 1, 127, 128, 300, 16_384, 70_000] {
            let items: Vec<String> = (0..len).map(|i| format!("item{i}")).collect();
            let mut piecewise = seq_header(len);
            for item in &items {
                encode_into(item, &mut piecewise).unwrap();
            }
            assert_eq!(piecewise, encode(&items).unwrap(), "len {len}");
        }
    }

    #[test]
    fn prefix_and_borrowed_decoding() {
        let bytes = encode(&("name", 7u32)).unwrap();
        let (name, rest): (&str, &[u8]) = decode_prefix(&bytes).unwrap();
        assert_eq!(name, "name");
        assert_eq!(decode_borrowed::<u32>(rest).unwrap(), 7);
        assert!(
            decode_borrowed::<&str>(&bytes).is_err(),
            "trailing bytes refused"
        );
        assert!(
            decode_prefix::<&str>(&bytes[..3]).is_err(),
            "truncated refused"
        );
    }
}
