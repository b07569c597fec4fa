//! The compact storage of a tag list: every tag kept as its encoding, one after the other in
//! one buffer, with where each one ends and its value type.
//!
//! Why: a receiver may hold a million tags. As `TagInfo`s they cost 136 bytes each plus a heap
//! allocation per string (388 bytes a tag measured by `examples/catalogue_memory.rs`); as
//! encodings they cost their encoded size (a few bytes more than the strings themselves) plus
//! 9 bytes of bookkeeping, and no allocation per tag. The encoding of the whole list, which
//! names the catalogue (its hash), is the sequence header followed by this buffer, so hashing
//! needs no second copy either. Tags are read back as [`TagRef`] views borrowing the buffer.
//!
//! The buffer is only ever filled by encoding a `TagInfo`, so every stored tag decodes. Should
//! that ever fail all the same (a bug, not bad input), readers get a placeholder view with an
//! empty name rather than a panic.

use crate::codec;
use crate::model::{TagInfo, ValueType};
use crate::tag_ref::{SourceRef, TagRef};

#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct EncodedTags {
    bytes: Vec<u8>,
    /// End of tag `i`'s encoding in `bytes`; it starts where tag `i - 1` ends.
    ends: Vec<usize>,
    /// Kept apart from the encoding because every received sample checks its tag's type.
    types: Vec<ValueType>,
}

impl EncodedTags {
    pub(crate) fn with_capacity(tags: usize, bytes: usize) -> EncodedTags {
        EncodedTags {
            bytes: Vec::with_capacity(bytes),
            ends: Vec::with_capacity(tags),
            types: Vec::with_capacity(tags),
        }
    }

    pub(crate) fn from_tags(tags: &[TagInfo]) -> EncodedTags {
        let mut out = EncodedTags::with_capacity(tags.len(), 0);
        for tag in tags {
            out.push(tag);
        }
        out.shrink_to_fit();
        out
    }

    pub(crate) fn push(&mut self, tag: &TagInfo) {
        let start = self.bytes.len();
        if codec::encode_into(tag, &mut self.bytes).is_err() {
            // The model's derived impls never fail to encode; if they did, the tag is kept
            // empty (read back as a placeholder) so indexes stay aligned, and the list's hash
            // no longer matches the transmitter's, which the receiver reports.
            debug_assert!(false, "a TagInfo failed to encode");
            self.bytes.truncate(start);
        }
        self.ends.push(self.bytes.len());
        self.types.push(tag.value_type);
    }

    /// Appends every tag of `other`.
    pub(crate) fn append(&mut self, other: &EncodedTags) {
        let base = self.bytes.len();
        self.bytes.extend_from_slice(&other.bytes);
        self.ends.extend(other.ends.iter().map(|&end| base + end));
        self.types.extend_from_slice(&other.types);
    }

    pub(crate) fn shrink_to_fit(&mut self) {
        self.bytes.shrink_to_fit();
        self.ends.shrink_to_fit();
        self.types.shrink_to_fit();
    }

    pub(crate) fn len(&self) -> usize {
        self.ends.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Every tag's encoding, in order: the encoding of the list without its sequence header.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Bytes held, capacity included.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.bytes.capacity()
            + self.ends.capacity() * std::mem::size_of::<usize>()
            + self.types.capacity() * std::mem::size_of::<ValueType>()
    }

    pub(crate) fn encoded(&self, index: usize) -> Option<&[u8]> {
        let end = *self.ends.get(index)?;
        let start = match index.checked_sub(1) {
            Some(previous) => self.ends[previous],
            None => 0,
        };
        self.bytes.get(start..end)
    }

    pub(crate) fn value_type(&self, index: usize) -> Option<ValueType> {
        self.types.get(index).copied()
    }

    pub(crate) fn get(&self, index: usize) -> Option<TagRef<'_>> {
        let bytes = self.encoded(index)?;
        let value_type = self.value_type(index)?;
        Some(codec::decode_borrowed(bytes).unwrap_or_else(|_| placeholder(value_type)))
    }

    /// The tag's name as bytes, for sorting and searching by name without decoding the rest
    /// of the tag or checking UTF-8 at every comparison (`str` orders bytewise, so the order
    /// is the same). The name is the first field, and a string encodes as a byte string does.
    pub(crate) fn name_bytes(&self, index: usize) -> Option<&[u8]> {
        let bytes = self.encoded(index)?;
        Some(codec::decode_prefix::<&[u8]>(bytes).map_or(&[][..], |(name, _)| name))
    }
}

fn placeholder<'a>(value_type: ValueType) -> TagRef<'a> {
    debug_assert!(false, "a stored tag failed to decode");
    TagRef {
        name: "",
        value_type,
        unit: "",
        description: "",
        source: SourceRef::Other(""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::SourceAddress;

    fn tag(i: usize) -> TagInfo {
        TagInfo {
            name: format!("site/line{}/tag{i}", i % 7),
            value_type: if i % 2 == 1 {
                ValueType::String
            } else {
                ValueType::Double
            },
            unit: "m3/h".into(),
            description: "é".repeat(i % 5),
            source: SourceAddress::Other(format!("synthetic:{i}")),
        }
    }

    #[test]
    fn every_tag_reads_back_as_pushed() {
        let tags: Vec<TagInfo> = (0..200).map(tag).collect();
        let stored = EncodedTags::from_tags(&tags);
        assert_eq!(stored.len(), 200);
        for (i, t) in tags.iter().enumerate() {
            let view = stored.get(i).unwrap();
            assert_eq!(view, TagRef::from(t));
            assert_eq!(stored.value_type(i), Some(t.value_type));
            assert_eq!(stored.name_bytes(i), Some(t.name.as_bytes()));
            assert_eq!(stored.encoded(i).unwrap(), codec::encode(t).unwrap());
        }
        assert_eq!(stored.get(200), None);
        assert_eq!(stored.name_bytes(200), None);
        assert_eq!(stored.value_type(200), None);
    }

    #[test]
    fn the_buffer_is_the_list_encoding_after_its_header() {
        let tags: Vec<TagInfo> = (0..150).map(tag).collect();
        let stored = EncodedTags::from_tags(&tags);
        let mut whole = codec::seq_header(tags.len());
        whole.extend_from_slice(stored.bytes());
        assert_eq!(whole, codec::encode(&tags).unwrap());
    }

    #[test]
    fn append_keeps_indexes() {
        let tags: Vec<TagInfo> = (0..30).map(tag).collect();
        let mut joined = EncodedTags::from_tags(&tags[..10]);
        joined.append(&EncodedTags::from_tags(&tags[10..]));
        joined.append(&EncodedTags::default());
        assert_eq!(joined, EncodedTags::from_tags(&tags));
        assert_eq!(joined.get(25).unwrap().name, tags[25].name);
    }
}
