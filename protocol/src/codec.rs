//! The one place that knows how message bodies are serialised (postcard 1.x, whose wire format
//! is frozen and documented). Swapping the codec means changing only this file.

use serde::Serialize;
use serde::de::DeserializeOwned;

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

/// The exact length of `value`'s encoding, computed without writing it.
pub fn encoded_len<T: Serialize>(value: &T) -> Result<usize, EncodeError> {
    Ok(postcard::experimental::serialized_size(value)?)
}

/// Decodes a whole body; trailing bytes are an error, since a frame holds exactly one body.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    let (value, rest) = postcard::take_from_bytes(bytes)?;
    if rest.is_empty() {
        Ok(value)
    } else {
        Err(DecodeError(postcard::Error::DeserializeBadEncoding))
    }
}
