//! The catalogue: the ordered tag list, its hash, chunking for the link and reassembly.
//!
//! The transmitter builds a [`Catalogue`] from its config and sends it in [`CatalogueChunk`]s
//! (on start and periodically). The receiver feeds every chunk it gets to a
//! [`CatalogueAssembler`], which yields the catalogue once every tag of one version is present
//! and the assembled list hashes to the version's hash. Chunks of successive rounds of the same
//! version combine, so a chunk lost in one round is filled by the next.
//!
//! A catalogue keeps its tags encoded (see `encoded.rs` for why and what it costs) and hands
//! them out as [`TagRef`] views; [`Catalogue::tags`] decodes owned [`TagInfo`]s for the few
//! callers that want them.

mod assembler;
mod encoded;
#[cfg(test)]
mod testing;

pub use assembler::{AssembleError, AssemblyProgress, CatalogueAssembler};

use crate::codec;
use crate::message::{CatalogueChunk, CatalogueHash, Message};
use crate::model::{TagIndex, TagInfo, ValueType};
use crate::tag_ref::TagRef;
use encoded::EncodedTags;

/// One version of the ordered tag list, with its hash.
#[derive(Clone, PartialEq)]
pub struct Catalogue {
    tags: EncodedTags,
    hash: CatalogueHash,
    /// Tag indexes sorted by (name, index), for lookups by name. A sorted index costs 4 bytes
    /// a tag where a `HashMap<String, _>` cost about 110 (a second copy of every name plus the
    /// table), which matters on a receiver holding a million tags. With duplicate names
    /// (config validation forbids them, but the link is not trusted) the first occurrence
    /// wins, so the lookup is deterministic.
    by_name: Vec<TagIndex>,
}

impl std::fmt::Debug for Catalogue {
    // The tags themselves would be megabytes of bytes in a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalogue")
            .field("hash", &format_args!("{:016x}", self.hash))
            .field("tags", &self.len())
            .finish()
    }
}

/// The hash naming a tag list: the first 8 bytes, big-endian, of the SHA-256 of
/// `codec::encode(tags)`.
pub fn hash_tags(tags: &[TagInfo]) -> CatalogueHash {
    let encoded = EncodedTags::from_tags(tags);
    hash_encoded(&encoded)
}

/// [`hash_tags`] of a list already encoded: the list's encoding is its sequence header
/// followed by the stored bytes, so nothing is encoded again.
fn hash_encoded(tags: &EncodedTags) -> CatalogueHash {
    let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
    digest.update(&codec::seq_header(tags.len()));
    digest.update(tags.bytes());
    let digest = digest.finish();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest.as_ref()[..8]);
    u64::from_be_bytes(first)
}

impl Catalogue {
    pub fn new(tags: Vec<TagInfo>) -> Catalogue {
        Catalogue::from_tags(&tags)
    }

    pub fn from_tags(tags: &[TagInfo]) -> Catalogue {
        Catalogue::from_encoded(EncodedTags::from_tags(tags))
    }

    fn from_encoded(tags: EncodedTags) -> Catalogue {
        let hash = hash_encoded(&tags);
        // Catalogues beyond u32::MAX tags cannot be indexed on the wire; the assembler's cap
        // keeps received ones far below that.
        let indexable = tags.len().min(TagIndex::MAX as usize);
        let mut by_name: Vec<TagIndex> = (0..indexable as TagIndex).collect();
        by_name.sort_unstable_by(|&a, &b| {
            tags.name_bytes(a as usize)
                .cmp(&tags.name_bytes(b as usize))
                .then(a.cmp(&b))
        });
        Catalogue {
            tags,
            hash,
            by_name,
        }
    }

    /// An empty catalogue (hash of the empty list).
    pub fn empty() -> Catalogue {
        Catalogue::from_tags(&[])
    }

    pub fn hash(&self) -> CatalogueHash {
        self.hash
    }

    pub fn len(&self) -> usize {
        self.tags.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tags.is_empty()
    }

    /// The tag at `index`, decoded in place (no allocation).
    pub fn get(&self, index: TagIndex) -> Option<TagRef<'_>> {
        self.tags.get(usize::try_from(index).ok()?)
    }

    /// The tag's value type, without decoding the tag: for checking every received sample.
    pub fn value_type(&self, index: TagIndex) -> Option<ValueType> {
        self.tags.value_type(usize::try_from(index).ok()?)
    }

    pub fn index_of(&self, name: &str) -> Option<TagIndex> {
        let name = name.as_bytes();
        let first = self
            .by_name
            .partition_point(|&i| self.tags.name_bytes(i as usize) < Some(name));
        let &index = self.by_name.get(first)?;
        (self.tags.name_bytes(index as usize) == Some(name)).then_some(index)
    }

    /// Every tag in index order, as views.
    pub fn iter(&self) -> Iter<'_> {
        Iter {
            tags: &self.tags,
            next: 0,
        }
    }

    /// Every tag in index order, each decoded into an owned [`TagInfo`] as it is reached
    /// (an allocation per string): for small catalogues and callers that keep the tags. A
    /// receiver's catalogue can hold millions of tags; read those with [`iter`](Self::iter).
    pub fn tags(&self) -> Tags<'_> {
        Tags(self)
    }

    /// Heap bytes held by the catalogue, for status pages and memory budgets.
    pub fn heap_bytes(&self) -> usize {
        self.tags.heap_bytes() + self.by_name.capacity() * std::mem::size_of::<TagIndex>()
    }

    /// Splits the tag list into chunks for the link. Each chunk, wrapped as
    /// [`Message::Catalogue`], encodes to at most `max_body_bytes`, except that a tag too big
    /// for that on its own still goes alone in its chunk (the framing layer must then split
    /// or refuse it). An empty catalogue gives one chunk with no tags, so the receiver still
    /// learns it.
    pub fn chunks(&self, max_body_bytes: usize) -> Vec<CatalogueChunk> {
        let mut chunks = Vec::new();
        let mut next = Some(0);
        while let Some(start) = next {
            let (chunk, after) = self.chunk_at(start, max_body_bytes);
            chunks.push(chunk);
            next = after;
        }
        chunks
    }

    /// The chunk of [`chunks`](Self::chunks) that starts at tag `start`, and where the next
    /// one starts (`None` after the last). A sender going through a large catalogue a few
    /// chunks at a time builds each when it is sent: building all of a million-tag catalogue's
    /// chunks at once would hold live values back for as long as that takes.
    pub fn chunk_at(&self, start: usize, max_body_bytes: usize) -> (CatalogueChunk, Option<usize>) {
        let total_tags = u32::try_from(self.len()).unwrap_or(u32::MAX);
        let first_index = u32::try_from(start).unwrap_or(u32::MAX);
        let empty = Message::Catalogue(CatalogueChunk {
            hash: self.hash,
            total_tags,
            first_index,
            tags: Vec::new(),
        });
        // The empty chunk encodes its length as one byte; a full one needs up to 5 (a u32
        // varint). Over-estimating by 4 bytes keeps the bound safe.
        let mut size = codec::encode(&empty).map_or(32, |b| b.len()) + 4;
        let mut end = start;
        while end < self.len() {
            let tag_size = self.tags.encoded(end).map_or(0, <[u8]>::len);
            if end > start && size + tag_size > max_body_bytes {
                break;
            }
            size += tag_size;
            end += 1;
        }
        let chunk = CatalogueChunk {
            hash: self.hash,
            total_tags,
            first_index,
            tags: (start..end)
                .filter_map(|i| self.tags.get(i))
                .map(|t| t.to_info())
                .collect(),
        };
        // `end == start` only for the empty catalogue (or a start past the end).
        (chunk, (end > start && end < self.len()).then_some(end))
    }
}

/// The tags of a catalogue as views, in index order. See [`Catalogue::iter`].
#[derive(Debug, Clone)]
pub struct Iter<'a> {
    tags: &'a EncodedTags,
    next: usize,
}

impl<'a> Iterator for Iter<'a> {
    type Item = TagRef<'a>;

    fn next(&mut self) -> Option<TagRef<'a>> {
        let tag = self.tags.get(self.next)?;
        self.next += 1;
        Some(tag)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.tags.len().saturating_sub(self.next);
        (left, Some(left))
    }
}

impl ExactSizeIterator for Iter<'_> {}

impl<'a> IntoIterator for &'a Catalogue {
    type Item = TagRef<'a>;
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

/// The tags of a catalogue decoded into owned [`TagInfo`]s. See [`Catalogue::tags`].
#[derive(Debug, Clone, Copy)]
pub struct Tags<'a>(&'a Catalogue);

/// The iterator of [`Tags`].
pub type OwnedIter<'a> = std::iter::Map<Iter<'a>, fn(TagRef<'a>) -> TagInfo>;

impl<'a> Tags<'a> {
    pub fn iter(&self) -> OwnedIter<'a> {
        fn owned(tag: TagRef<'_>) -> TagInfo {
            tag.to_info()
        }
        self.0.iter().map(owned as fn(TagRef<'a>) -> TagInfo)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn to_vec(&self) -> Vec<TagInfo> {
        self.iter().collect()
    }
}

impl<'a> IntoIterator for Tags<'a> {
    type Item = TagInfo;
    type IntoIter = OwnedIter<'a>;

    fn into_iter(self) -> OwnedIter<'a> {
        self.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalogue::testing::{catalogue, encoded_len, tag};

    #[test]
    fn hash_is_first_8_bytes_of_sha256_of_encoding() {
        for n in [0, 1, 5, 127, 128, 300] {
            let tags: Vec<TagInfo> = (0..n).map(tag).collect();
            let bytes = codec::encode(&tags).unwrap();
            let digest = ring::digest::digest(&ring::digest::SHA256, &bytes);
            let expected = u64::from_be_bytes(digest.as_ref()[..8].try_into().unwrap());
            assert_eq!(catalogue(n).hash(), expected, "{n} tags");
            assert_eq!(hash_tags(&tags), expected, "{n} tags");
        }
        assert_ne!(catalogue(5).hash(), catalogue(6).hash());
    }

    #[test]
    fn hashes_are_those_of_the_list_encoding_before_compact_storage() {
        // Computed by the catalogue that held a Vec<TagInfo> and hashed codec::encode(&tags):
        // a transmitter and a receiver of either version name a catalogue the same.
        assert_eq!(catalogue(300).hash(), 0x0cea_cb12_49ad_9362);
        assert_eq!(Catalogue::empty().hash(), 0x6e34_0b9c_ffb3_7a98);
    }

    #[test]
    fn views_and_owned_tags_give_back_the_input() {
        let tags: Vec<TagInfo> = (0..120).map(tag).collect();
        let cat = Catalogue::from_tags(&tags);
        assert_eq!(cat.iter().len(), 120);
        for (i, (view, original)) in cat.iter().zip(&tags).enumerate() {
            assert_eq!(view, TagRef::from(original));
            assert_eq!(cat.get(i as TagIndex), Some(view));
            assert_eq!(cat.value_type(i as TagIndex), Some(original.value_type));
        }
        assert_eq!(cat.tags().to_vec(), tags);
        assert_eq!(cat.tags().len(), 120);
        assert_eq!((&cat).into_iter().count(), 120);
        assert_eq!(cat.value_type(120), None);
        assert_eq!(cat, Catalogue::new(tags));
    }

    #[test]
    fn large_catalogue_is_compact_and_every_name_resolves() {
        // The shape of the receiver-memory bench's tags, at a tenth of its size.
        let n = 100_000usize;
        let tags: Vec<TagInfo> = (0..n)
            .map(|i| TagInfo {
                name: format!("bench/area{}/line{}/tag{i}", i / 10_000, (i / 100) % 100),
                value_type: ValueType::Double,
                unit: "m3/h".into(),
                description: String::new(),
                source: crate::model::SourceAddress::Other(format!("synthetic:{i}")),
            })
            .collect();
        let cat = Catalogue::from_tags(&tags);
        assert_eq!(cat.hash(), hash_tags(&tags));
        // 30-odd bytes of name, 5 of unit, 17 of source, 4 of framing; 13 of bookkeeping.
        let per_tag = cat.heap_bytes() / n;
        assert!(per_tag <= 72, "{per_tag} bytes a tag");
        for i in (0..n).step_by(7) {
            assert_eq!(cat.index_of(&tags[i].name), Some(i as TagIndex));
            assert_eq!(
                cat.get(i as TagIndex).map(|t| t.name),
                Some(tags[i].name.as_str())
            );
        }
        assert_eq!(cat.index_of("bench/area9/line99/tag100000"), None);

        let mut asm = CatalogueAssembler::new();
        let mut got = None;
        for chunk in cat.chunks(1400).into_iter().rev() {
            got = got.or(asm.add(chunk).unwrap());
        }
        assert_eq!(got.as_ref(), Some(&cat));
    }

    #[test]
    fn index_of_and_accessors() {
        let cat = catalogue(10);
        assert_eq!(cat.len(), 10);
        assert_eq!(cat.index_of("site/area/line/pump7/speed"), Some(7));
        assert_eq!(cat.index_of("nope"), None);
        assert_eq!(
            cat.get(7).map(|t| t.name),
            Some("site/area/line/pump7/speed")
        );
        assert_eq!(cat.get(10), None);
    }

    #[test]
    fn duplicate_names_resolve_to_first() {
        let mut tags = vec![tag(1), tag(2)];
        tags[1].name = tags[0].name.clone();
        let cat = Catalogue::new(tags);
        assert_eq!(cat.index_of(cat.get(0).unwrap().name), Some(0));

        // Three copies among names out of order: still the first, wherever the copies sit.
        let mut tags: Vec<TagInfo> = (0..50).rev().map(tag).collect();
        let dup = tags[30].name.clone();
        tags[10].name = dup.clone();
        tags[45].name = dup.clone();
        let cat = Catalogue::new(tags);
        assert_eq!(cat.index_of(&dup), Some(10));
    }

    #[test]
    fn every_name_finds_its_own_index() {
        // Names in an order unrelated to their sort order, and names that are prefixes of
        // others, which a sorted lookup must not confuse.
        let mut tags: Vec<TagInfo> = (0..300).map(|i| tag((i * 7919) % 300)).collect();
        tags[5].name = "a".into();
        tags[6].name = "a/b".into();
        tags[7].name = "a/".into();
        let cat = Catalogue::new(tags);
        for (i, t) in cat.iter().enumerate() {
            assert_eq!(cat.index_of(t.name), Some(i as TagIndex), "{}", t.name);
        }
        assert_eq!(cat.index_of("a/b/"), None);
        assert_eq!(cat.index_of(""), None);
        assert_eq!(Catalogue::empty().index_of("a"), None);
    }

    #[test]
    fn chunks_respect_size_and_cover_everything() {
        let cat = catalogue(500);
        for max in [64usize, 200, 1200, 9000, 1 << 20] {
            let chunks = cat.chunks(max);
            let mut next = 0u32;
            for c in &chunks {
                assert_eq!(c.hash, cat.hash());
                assert_eq!(c.total_tags, 500);
                assert_eq!(c.first_index, next);
                assert!(!c.tags.is_empty());
                assert!(encoded_len(c) <= max || c.tags.len() == 1, "max {max}");
                next += c.tags.len() as u32;
            }
            assert_eq!(next, 500);
            let joined: Vec<TagInfo> = chunks.into_iter().flat_map(|c| c.tags).collect();
            assert_eq!(joined, cat.tags().to_vec());
        }
        assert_eq!(cat.chunks(1 << 20).len(), 1);
        assert!(cat.chunks(1200).len() > 10);
    }

    #[test]
    fn huge_tag_goes_alone() {
        let mut tags: Vec<TagInfo> = (0..4).map(tag).collect();
        tags[2].description = "d".repeat(5000);
        let cat = Catalogue::new(tags);
        let chunks = cat.chunks(1000);
        let alone = chunks.iter().find(|c| c.first_index == 2).unwrap();
        assert_eq!(alone.tags.len(), 1);
        assert_eq!(chunks.iter().map(|c| c.tags.len()).sum::<usize>(), 4);
    }
}
