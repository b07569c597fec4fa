//! The catalogue: the ordered tag list, its hash, chunking for the link and reassembly.
//!
//! The transmitter builds a [`Catalogue`] from its config and sends it in [`CatalogueChunk`]s
//! (on start and periodically). The receiver feeds every chunk it gets to a
//! [`CatalogueAssembler`], which yields the catalogue once every tag of one version is present
//! and the assembled list hashes to the version's hash. Chunks of successive rounds of the same
//! version combine, so a chunk lost in one round is filled by the next.

use std::collections::BTreeMap;

use crate::codec;
use crate::message::{CatalogueChunk, CatalogueHash, Message};
use crate::model::{TagIndex, TagInfo};

/// One version of the ordered tag list, with its hash.
#[derive(Debug, Clone, PartialEq)]
pub struct Catalogue {
    tags: Vec<TagInfo>,
    hash: CatalogueHash,
    /// Tag indexes sorted by (name, index), for lookups by name. A sorted index costs 4 bytes
    /// a tag where a `HashMap<String, _>` cost about 110 (a second copy of every name plus the
    /// table), which matters on a receiver holding a million tags. With duplicate names
    /// (config validation forbids them, but the link is not trusted) the first occurrence
    /// wins, so the lookup is deterministic.
    by_name: Vec<TagIndex>,
}

/// The hash naming a tag list: the first 8 bytes, big-endian, of the SHA-256 of
/// `codec::encode(tags)`.
pub fn hash_tags(tags: &[TagInfo]) -> CatalogueHash {
    // postcard only fails for sequences of unknown length or custom serde errors; the derived
    // impls of the model never produce either. Should that ever change, both sides still
    // agree on the hash of an empty encoding, and the receiver's hash check catches any
    // disagreement instead of a panic here.
    let digest = match codec::encode(&tags) {
        Ok(bytes) => ring::digest::digest(&ring::digest::SHA256, &bytes),
        Err(_) => ring::digest::digest(&ring::digest::SHA256, &[]),
    };
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest.as_ref()[..8]);
    u64::from_be_bytes(first)
}

impl Catalogue {
    pub fn new(tags: Vec<TagInfo>) -> Catalogue {
        let hash = hash_tags(&tags);
        // Catalogues beyond u32::MAX tags cannot be indexed on the wire; the assembler's cap
        // keeps received ones far below that.
        let indexable = tags.len().min(TagIndex::MAX as usize);
        let mut by_name: Vec<TagIndex> = (0..indexable as TagIndex).collect();
        by_name.sort_unstable_by(|&a, &b| {
            tags[a as usize]
                .name
                .cmp(&tags[b as usize].name)
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
        Catalogue::new(Vec::new())
    }

    pub fn hash(&self) -> CatalogueHash {
        self.hash
    }

    pub fn tags(&self) -> &[TagInfo] {
        &self.tags
    }

    pub fn get(&self, index: TagIndex) -> Option<&TagInfo> {
        self.tags.get(usize::try_from(index).ok()?)
    }

    pub fn index_of(&self, name: &str) -> Option<TagIndex> {
        let first = self
            .by_name
            .partition_point(|&i| self.tags[i as usize].name.as_str() < name);
        let &index = self.by_name.get(first)?;
        (self.tags[index as usize].name == name).then_some(index)
    }

    pub fn len(&self) -> usize {
        self.tags.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tags.is_empty()
    }

    pub fn into_tags(self) -> Vec<TagInfo> {
        self.tags
    }

    /// Splits the tag list into chunks for the link. Each chunk, wrapped as
    /// [`Message::Catalogue`], encodes to at most `max_body_bytes`, except that a tag too big
    /// for that on its own still goes alone in its chunk (the framing layer must then split
    /// or refuse it). An empty catalogue gives one chunk with no tags, so the receiver still
    /// learns it.
    pub fn chunks(&self, max_body_bytes: usize) -> Vec<CatalogueChunk> {
        let total_tags = u32::try_from(self.tags.len()).unwrap_or(u32::MAX);
        let header = |first_index: u32| -> usize {
            let empty = Message::Catalogue(CatalogueChunk {
                hash: self.hash,
                total_tags,
                first_index,
                tags: Vec::new(),
            });
            // The empty chunk encodes its length as one byte; a full one needs up to 5 (a
            // u32 varint). Over-estimating by 4 bytes keeps the bound safe.
            codec::encode(&empty).map_or(32, |b| b.len()) + 4
        };

        let mut chunks = Vec::new();
        let mut scratch = Vec::new();
        let mut start = 0usize;
        while start < self.tags.len() || chunks.is_empty() {
            let first_index = u32::try_from(start).unwrap_or(u32::MAX);
            let mut size = header(first_index);
            let mut end = start;
            while end < self.tags.len() {
                scratch.clear();
                let tag_size = match codec::encode_into(&self.tags[end], &mut scratch) {
                    Ok(()) => scratch.len(),
                    Err(_) => 0,
                };
                if end > start && size + tag_size > max_body_bytes {
                    break;
                }
                size += tag_size;
                end += 1;
            }
            chunks.push(CatalogueChunk {
                hash: self.hash,
                total_tags,
                first_index,
                tags: self.tags[start..end].to_vec(),
            });
            if end == start {
                // Only the empty catalogue gets here.
                break;
            }
            start = end;
        }
        chunks
    }
}

/// Why a chunk was refused or an assembled version discarded. None of these stop the
/// assembler; the caller counts and logs them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssembleError {
    #[error("catalogue chunk for {hash:016x} says {got} tags but earlier chunks said {expected}")]
    TotalMismatch {
        hash: CatalogueHash,
        expected: u32,
        got: u32,
    },
    #[error(
        "catalogue chunk for {hash:016x} covers tags {first_index}..{first_index}+{len} beyond the total of {total_tags}"
    )]
    OutOfRange {
        hash: CatalogueHash,
        total_tags: u32,
        first_index: u32,
        len: usize,
    },
    #[error("catalogue {hash:016x} has {total_tags} tags, above the limit of {limit}")]
    TooLarge {
        hash: CatalogueHash,
        total_tags: u32,
        limit: usize,
    },
    #[error("catalogue assembled for {expected:016x} hashes to {actual:016x}; discarded")]
    HashMismatch {
        expected: CatalogueHash,
        actual: CatalogueHash,
    },
}

/// Progress of one version being assembled, for status pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AssemblyProgress {
    pub hash: CatalogueHash,
    pub received: usize,
    pub total: u32,
}

#[derive(Debug)]
struct Pending {
    hash: CatalogueHash,
    total: u32,
    /// Only the tags received so far, so a chunk claiming a huge total costs nothing until
    /// tags actually arrive.
    tags: BTreeMap<u32, TagInfo>,
    last_touched: u64,
}

/// Reassembles catalogue versions from chunks that may arrive in any order, duplicated, lost
/// in one round and repeated in the next, or interleaved with chunks of another version after
/// a config change.
///
/// Bounds: at most `max_versions` versions in progress (the least recently fed is dropped to
/// make room for a new one) and at most `max_tags` tags announced across them (a version
/// announcing more than that on its own is refused). A chunk whose total differs from the one
/// its version's earlier chunks gave is refused and the version in progress discarded, so
/// the next round rebuilds it. Each version completes at most once in a
/// row: chunks of the version last yielded are ignored until another version completes or
/// [`reset`](Self::reset) is called.
///
/// A stale version whose chunks were still in flight could in principle complete after a
/// newer one; the heartbeat names the transmitter's current catalogue, so the caller should
/// prefer that one.
#[derive(Debug)]
pub struct CatalogueAssembler {
    pending: Vec<Pending>,
    last_completed: Option<CatalogueHash>,
    max_versions: usize,
    max_tags: usize,
    clock: u64,
}

impl Default for CatalogueAssembler {
    fn default() -> Self {
        Self::new()
    }
}

impl CatalogueAssembler {
    pub const DEFAULT_MAX_VERSIONS: usize = 2;
    pub const DEFAULT_MAX_TAGS: usize = 4_000_000;

    pub fn new() -> Self {
        Self::with_limits(Self::DEFAULT_MAX_VERSIONS, Self::DEFAULT_MAX_TAGS)
    }

    /// `max_versions` is at least 1.
    pub fn with_limits(max_versions: usize, max_tags: usize) -> Self {
        CatalogueAssembler {
            pending: Vec::new(),
            last_completed: None,
            max_versions: max_versions.max(1),
            max_tags,
            clock: 0,
        }
    }

    /// Forgets everything: versions in progress and the last one completed. For a new session.
    pub fn reset(&mut self) {
        self.pending.clear();
        self.last_completed = None;
    }

    pub fn progress(&self) -> Vec<AssemblyProgress> {
        self.pending
            .iter()
            .map(|p| AssemblyProgress {
                hash: p.hash,
                received: p.tags.len(),
                total: p.total,
            })
            .collect()
    }

    /// Feeds one chunk. Returns the catalogue when this chunk completes a version whose hash
    /// verifies.
    pub fn add(&mut self, chunk: CatalogueChunk) -> Result<Option<Catalogue>, AssembleError> {
        let CatalogueChunk {
            hash,
            total_tags,
            first_index,
            tags,
        } = chunk;

        let end = u64::from(first_index) + tags.len() as u64;
        if end > u64::from(total_tags) {
            return Err(AssembleError::OutOfRange {
                hash,
                total_tags,
                first_index,
                len: tags.len(),
            });
        }
        if usize::try_from(total_tags).map_or(true, |t| t > self.max_tags) {
            return Err(AssembleError::TooLarge {
                hash,
                total_tags,
                limit: self.max_tags,
            });
        }
        if self.last_completed == Some(hash) {
            return Ok(None);
        }

        self.clock += 1;
        let pos = match self.pending.iter().position(|p| p.hash == hash) {
            Some(pos) => {
                let expected = self.pending[pos].total;
                if expected != total_tags {
                    // Which of the two is wrong cannot be told; keeping the first would let
                    // one bad chunk block the version for good, so start it afresh.
                    self.pending.swap_remove(pos);
                    return Err(AssembleError::TotalMismatch {
                        hash,
                        expected,
                        got: total_tags,
                    });
                }
                pos
            }
            None => {
                self.make_room(total_tags);
                self.pending.push(Pending {
                    hash,
                    total: total_tags,
                    tags: BTreeMap::new(),
                    last_touched: 0,
                });
                self.pending.len() - 1
            }
        };

        let pending = &mut self.pending[pos];
        pending.last_touched = self.clock;
        // A duplicate index overwrites: should two rounds disagree, the hash check below
        // discards the version and the next round starts it afresh.
        for (index, tag) in (first_index..).zip(tags) {
            pending.tags.insert(index, tag);
        }
        if pending.tags.len() < usize::try_from(pending.total).unwrap_or(usize::MAX) {
            return Ok(None);
        }

        let done = self.pending.swap_remove(pos);
        let catalogue = Catalogue::new(done.tags.into_values().collect());
        if catalogue.hash() != hash {
            return Err(AssembleError::HashMismatch {
                expected: hash,
                actual: catalogue.hash(),
            });
        }
        self.last_completed = Some(hash);
        Ok(Some(catalogue))
    }

    /// Drops the least recently fed versions until a new one announcing `total` tags fits.
    fn make_room(&mut self, total: u32) {
        let total = usize::try_from(total).unwrap_or(usize::MAX);
        loop {
            let announced: usize = self
                .pending
                .iter()
                .map(|p| usize::try_from(p.total).unwrap_or(usize::MAX))
                .fold(0, usize::saturating_add);
            let full = self.pending.len() >= self.max_versions
                || announced.saturating_add(total) > self.max_tags;
            if !full || self.pending.is_empty() {
                return;
            }
            if let Some(oldest) = self
                .pending
                .iter()
                .enumerate()
                .min_by_key(|(_, p)| p.last_touched)
                .map(|(i, _)| i)
            {
                self.pending.swap_remove(oldest);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        ByteOrder, ModbusAddress, ModbusTable, ModbusType, SourceAddress, ValueType, WordOrder,
    };
    use proptest::prelude::*;

    fn tag(i: usize) -> TagInfo {
        TagInfo {
            name: format!("site/area/line/pump{i}/speed"),
            value_type: if i % 2 == 1 {
                ValueType::UInt16
            } else {
                ValueType::Float
            },
            unit: "rpm".into(),
            description: "x".repeat(i % 37),
            source: if i % 3 < 1 {
                SourceAddress::OpcUa {
                    endpoint: "opc.tcp://plc:4840".into(),
                    node_id: format!("ns=2;i={i}"),
                }
            } else {
                SourceAddress::Modbus(ModbusAddress {
                    device: "plc1".into(),
                    unit_id: 1,
                    table: ModbusTable::HoldingRegister,
                    address: i as u16,
                    kind: ModbusType::U16,
                    count: 1,
                    byte_order: ByteOrder::Big,
                    word_order: WordOrder::Big,
                    scale: 1.0,
                    offset: 0.0,
                })
            },
        }
    }

    fn catalogue(n: usize) -> Catalogue {
        Catalogue::new((0..n).map(tag).collect())
    }

    fn encoded_len(chunk: &CatalogueChunk) -> usize {
        codec::encode(&Message::Catalogue(chunk.clone()))
            .map(|b| b.len())
            .unwrap()
    }

    #[test]
    fn hash_is_first_8_bytes_of_sha256_of_encoding() {
        let cat = catalogue(5);
        let bytes = codec::encode(&cat.tags().to_vec()).unwrap();
        let digest = ring::digest::digest(&ring::digest::SHA256, &bytes);
        let expected = u64::from_be_bytes(digest.as_ref()[..8].try_into().unwrap());
        assert_eq!(cat.hash(), expected);
        assert_ne!(cat.hash(), catalogue(6).hash());
    }

    #[test]
    fn index_of_and_accessors() {
        let cat = catalogue(10);
        assert_eq!(cat.len(), 10);
        assert_eq!(cat.index_of("site/area/line/pump7/speed"), Some(7));
        assert_eq!(cat.index_of("nope"), None);
        assert_eq!(
            cat.get(7).map(|t| t.name.as_str()),
            Some("site/area/line/pump7/speed")
        );
        assert_eq!(cat.get(10), None);
    }

    #[test]
    fn duplicate_names_resolve_to_first() {
        let mut tags = vec![tag(1), tag(2)];
        tags[1].name = tags[0].name.clone();
        let cat = Catalogue::new(tags);
        assert_eq!(cat.index_of(&cat.tags()[0].name), Some(0));

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
        for (i, t) in cat.tags().iter().enumerate() {
            assert_eq!(cat.index_of(&t.name), Some(i as TagIndex), "{}", t.name);
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
            assert_eq!(joined, cat.tags());
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

    #[test]
    fn empty_catalogue_round_trips() {
        let cat = Catalogue::empty();
        let chunks = cat.chunks(1000);
        assert_eq!(chunks.len(), 1);
        let mut asm = CatalogueAssembler::new();
        let got = asm.add(chunks[0].clone()).unwrap().unwrap();
        assert_eq!(got, cat);
    }

    #[test]
    fn lost_chunk_filled_by_next_round_and_yields_once() {
        let cat = catalogue(100);
        let chunks = cat.chunks(600);
        assert!(chunks.len() > 3);
        let mut asm = CatalogueAssembler::new();
        for (i, c) in chunks.iter().enumerate() {
            if i != 2 {
                assert_eq!(asm.add(c.clone()).unwrap(), None);
            }
        }
        let mut yielded = 0;
        for c in &chunks {
            if let Some(got) = asm.add(c.clone()).unwrap() {
                assert_eq!(got, cat);
                yielded += 1;
            }
        }
        assert_eq!(yielded, 1);
        // Further rounds of the same version do not yield again.
        for c in &chunks {
            assert_eq!(asm.add(c.clone()).unwrap(), None);
        }
        // After a reset they do.
        asm.reset();
        let mut again = None;
        for c in &chunks {
            again = again.or(asm.add(c.clone()).unwrap());
        }
        assert_eq!(again, Some(cat));
    }

    #[test]
    fn interleaved_versions_both_complete() {
        let a = catalogue(40);
        let b = catalogue(41);
        let ca = a.chunks(500);
        let cb = b.chunks(500);
        let mut asm = CatalogueAssembler::new();
        let mut got = Vec::new();
        for i in 0..ca.len().max(cb.len()) {
            for c in [ca.get(i), cb.get(i)].into_iter().flatten() {
                if let Some(cat) = asm.add(c.clone()).unwrap() {
                    got.push(cat.hash());
                }
            }
        }
        got.sort();
        let mut want = vec![a.hash(), b.hash()];
        want.sort();
        assert_eq!(got, want);
    }

    #[test]
    fn inconsistent_chunks_are_refused() {
        let cat = catalogue(10);
        let mut asm = CatalogueAssembler::new();
        let mut c = cat.chunks(300)[0].clone();
        asm.add(c.clone()).unwrap();
        c.total_tags = 11;
        assert!(matches!(
            asm.add(c.clone()),
            Err(AssembleError::TotalMismatch { .. })
        ));
        assert!(
            asm.progress().is_empty(),
            "the suspect version is discarded"
        );
        c.total_tags = 10;
        c.first_index = 9;
        assert!(matches!(
            asm.add(c.clone()),
            Err(AssembleError::OutOfRange { .. })
        ));
        c.first_index = u32::MAX;
        assert!(matches!(
            asm.add(c.clone()),
            Err(AssembleError::OutOfRange { .. })
        ));
        let huge = CatalogueChunk {
            hash: 1,
            total_tags: u32::MAX,
            first_index: 0,
            tags: vec![],
        };
        assert!(matches!(asm.add(huge), Err(AssembleError::TooLarge { .. })));
    }

    #[test]
    fn a_chunk_with_a_wrong_total_does_not_block_the_version() {
        let cat = catalogue(30);
        let chunks = cat.chunks(500);
        let mut forged = chunks[1].clone();
        forged.total_tags += 5;
        let mut asm = CatalogueAssembler::new();
        asm.add(forged).unwrap();
        let mut got = None;
        for round in 0..2 {
            for c in &chunks {
                match asm.add(c.clone()) {
                    Ok(Some(done)) => got = Some(done),
                    Ok(None) => {}
                    Err(e) => assert!(round == 0, "{e}"),
                }
            }
        }
        assert_eq!(got, Some(cat));
    }

    #[test]
    fn hash_mismatch_discards_version() {
        let cat = catalogue(3);
        let mut chunks = cat.chunks(1 << 20);
        chunks[0].tags[1].unit = "forged".into();
        let mut asm = CatalogueAssembler::new();
        assert!(matches!(
            asm.add(chunks[0].clone()),
            Err(AssembleError::HashMismatch { .. })
        ));
        assert!(asm.progress().is_empty());
        assert_eq!(asm.add(cat.chunks(1 << 20)[0].clone()).unwrap(), Some(cat));
    }

    #[test]
    fn versions_in_progress_are_bounded() {
        let mut asm = CatalogueAssembler::with_limits(2, 100);
        for h in 0..10u64 {
            let c = CatalogueChunk {
                hash: h,
                total_tags: 50,
                first_index: 0,
                tags: vec![tag(0)],
            };
            asm.add(c).unwrap();
            assert!(asm.progress().len() <= 2);
            let announced: u32 = asm.progress().iter().map(|p| p.total).sum();
            assert!(announced <= 100);
        }
        // A version that alone fills the cap evicts the others.
        asm.add(CatalogueChunk {
            hash: 99,
            total_tags: 100,
            first_index: 0,
            tags: vec![],
        })
        .unwrap();
        assert_eq!(asm.progress().len(), 1);
    }

    fn arb_chunk() -> impl Strategy<Value = CatalogueChunk> {
        (
            0u64..4,
            prop_oneof![0u32..20, any::<u32>()],
            prop_oneof![0u32..20, any::<u32>()],
            proptest::collection::vec(0usize..30, 0..8),
        )
            .prop_map(|(hash, total_tags, first_index, tags)| CatalogueChunk {
                hash,
                total_tags,
                first_index,
                tags: tags.into_iter().map(tag).collect(),
            })
    }

    proptest! {
        #[test]
        fn any_order_with_duplicates_and_losses_yields_exact_catalogue(
            n in 0usize..60,
            max in 80usize..2000,
            order in proptest::collection::vec(any::<proptest::sample::Index>(), 0..200),
            lost in proptest::collection::vec(any::<bool>(), 0..60),
        ) {
            let cat = catalogue(n);
            let chunks = cat.chunks(max);
            let mut asm = CatalogueAssembler::new();
            let mut yielded = Vec::new();
            // Round 1: random picks (duplicates, some chunks never picked) minus lost ones.
            for idx in &order {
                let i = idx.index(chunks.len());
                if lost.get(i).copied().unwrap_or(false) {
                    continue;
                }
                if let Some(c) = asm.add(chunks[i].clone()).unwrap() {
                    yielded.push(c);
                }
            }
            // Round 2: everything, in reverse order.
            for c in chunks.iter().rev() {
                if let Some(c) = asm.add(c.clone()).unwrap() {
                    yielded.push(c);
                }
            }
            prop_assert_eq!(yielded.len(), 1);
            prop_assert_eq!(&yielded[0], &cat);
        }

        #[test]
        fn malicious_chunks_never_panic(chunks in proptest::collection::vec(arb_chunk(), 0..50)) {
            let mut asm = CatalogueAssembler::with_limits(2, 1000);
            for c in chunks {
                let _ = asm.add(c);
                prop_assert!(asm.progress().len() <= 2);
                prop_assert!(asm.progress().iter().map(|p| p.received).sum::<usize>() <= 1000);
            }
        }

        #[test]
        fn malicious_chunks_interleaved_with_real_ones_do_not_block_it(
            junk in proptest::collection::vec(arb_chunk(), 0..20),
        ) {
            let cat = catalogue(25);
            let chunks = cat.chunks(400);
            let mut asm = CatalogueAssembler::new();
            for c in junk {
                let _ = asm.add(c);
            }
            let mut got = None;
            for c in &chunks {
                if let Ok(Some(c)) = asm.add(c.clone()) {
                    got = Some(c);
                }
            }
            prop_assert_eq!(got, Some(cat));
        }
    }
}
