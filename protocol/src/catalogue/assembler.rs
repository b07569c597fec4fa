//! Reassembly of catalogue versions from the chunks the link delivers.

use std::collections::BTreeMap;

use super::Catalogue;
use super::encoded::EncodedTags;
use crate::message::{CatalogueChunk, CatalogueHash};

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
    #[error(
        "catalogue {hash:016x} in progress holds {bytes} bytes of tags, above the limit of {limit}; discarded"
    )]
    TooManyBytes {
        hash: CatalogueHash,
        bytes: usize,
        limit: usize,
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
    /// tags actually arrive: the tags of each chunk, encoded, by the index of its first tag.
    /// Stored runs never overlap (see [`Pending::insert`]), and are kept per chunk rather than
    /// per tag so that a million tags in progress cost little more than their encoding.
    runs: BTreeMap<u32, EncodedTags>,
    /// Tags across `runs`.
    received: usize,
    /// Encoded bytes across `runs`.
    bytes: usize,
    last_touched: u64,
}

impl Pending {
    /// Stores the tags of one chunk starting at `first`. Runs it overlaps are dropped whole:
    /// a duplicate chunk replaces its earlier copy, and a chunk cut differently (which a
    /// transmitter does not do within one version) costs the tags of the runs it displaced
    /// until the next round re-sends them. Should two rounds disagree, the hash check at
    /// completion discards the version and the next round starts it afresh.
    fn insert(&mut self, first: u32, run: EncodedTags) {
        let Some(end) = u32::try_from(run.len())
            .ok()
            .and_then(|len| first.checked_add(len))
        else {
            return;
        };
        if run.is_empty() {
            return;
        }
        // Only the last run starting before `first` can reach into it, since runs do not
        // overlap one another.
        if let Some((&start, before)) = self.runs.range(..first).next_back()
            && u64::from(start) + before.len() as u64 > u64::from(first)
        {
            self.remove(start);
        }
        while let Some(start) = self.runs.range(first..end).next().map(|(&s, _)| s) {
            self.remove(start);
        }
        self.received += run.len();
        self.bytes += run.bytes().len();
        self.runs.insert(first, run);
    }

    fn remove(&mut self, start: u32) {
        if let Some(run) = self.runs.remove(&start) {
            self.received -= run.len();
            self.bytes -= run.bytes().len();
        }
    }

    /// Joins the runs, in index order, into the whole list.
    fn into_tags(self) -> EncodedTags {
        let tags = self.runs.values().map(EncodedTags::len).sum();
        let bytes = self.runs.values().map(|r| r.bytes().len()).sum();
        let mut all = EncodedTags::with_capacity(tags, bytes);
        // Each run is freed as soon as it is copied, so the peak is the whole list once plus
        // one run, not twice the list.
        for run in self.runs.into_values() {
            all.append(&run);
        }
        all
    }
}

/// Reassembles catalogue versions from chunks that may arrive in any order, duplicated, lost
/// in one round and repeated in the next, or interleaved with chunks of another version after
/// a config change.
///
/// Bounds: at most `max_versions` versions in progress (the least recently fed is dropped to
/// make room for a new one), at most `max_tags` tags announced across them (a version
/// announcing more than that on its own is refused), and at most `max_bytes` of encoded tags
/// held across them: a chunk that takes a version past it discards that version, and other
/// versions are dropped, least recently fed first, to keep the total within it. The tag
/// count alone bounded nothing: a forged version of a few tags with megabytes of text each
/// could hold gigabytes. A chunk whose total differs from the one
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
    max_bytes: usize,
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
    /// Encoded tags held across the versions in progress: a million tags of 200 bytes each
    /// (names, units, descriptions, source addresses) with room to spare.
    pub const DEFAULT_MAX_BYTES: usize = 512 << 20;

    pub fn new() -> Self {
        Self::with_limits(Self::DEFAULT_MAX_VERSIONS, Self::DEFAULT_MAX_TAGS)
    }

    /// `max_versions` is at least 1.
    pub fn with_limits(max_versions: usize, max_tags: usize) -> Self {
        Self::with_byte_limit(max_versions, max_tags, Self::DEFAULT_MAX_BYTES)
    }

    /// [`with_limits`](Self::with_limits) and at most `max_bytes` of encoded tags held.
    pub fn with_byte_limit(max_versions: usize, max_tags: usize, max_bytes: usize) -> Self {
        CatalogueAssembler {
            pending: Vec::new(),
            last_completed: None,
            max_versions: max_versions.max(1),
            max_tags,
            max_bytes,
            clock: 0,
        }
    }

    /// Encoded bytes of tags held across the versions in progress.
    pub fn held_bytes(&self) -> usize {
        self.pending.iter().map(|p| p.bytes).sum()
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
                received: p.received,
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
                    runs: BTreeMap::new(),
                    received: 0,
                    bytes: 0,
                    last_touched: 0,
                });
                self.pending.len() - 1
            }
        };

        let pending = &mut self.pending[pos];
        pending.last_touched = self.clock;
        // Encoded now, so the decoded chunk (a heap allocation per string) is freed at once.
        let mut run = EncodedTags::with_capacity(tags.len(), 0);
        for tag in &tags {
            run.push(tag);
        }
        drop(tags);
        run.shrink_to_fit();
        pending.insert(first_index, run);
        if pending.bytes > self.max_bytes {
            let bytes = pending.bytes;
            self.pending.swap_remove(pos);
            return Err(AssembleError::TooManyBytes {
                hash,
                bytes,
                limit: self.max_bytes,
            });
        }
        let pending = &self.pending[pos];
        if pending.received < usize::try_from(pending.total).unwrap_or(usize::MAX) {
            self.keep_within_bytes(hash);
            return Ok(None);
        }

        let done = self.pending.swap_remove(pos);
        let catalogue = Catalogue::from_encoded(done.into_tags());
        if catalogue.hash() != hash {
            return Err(AssembleError::HashMismatch {
                expected: hash,
                actual: catalogue.hash(),
            });
        }
        self.last_completed = Some(hash);
        Ok(Some(catalogue))
    }

    /// Drops the least recently fed versions other than `keep` while the bytes held exceed
    /// the limit.
    fn keep_within_bytes(&mut self, keep: CatalogueHash) {
        while self.held_bytes() > self.max_bytes {
            let Some(oldest) = self
                .pending
                .iter()
                .enumerate()
                .filter(|(_, p)| p.hash != keep)
                .min_by_key(|(_, p)| p.last_touched)
                .map(|(i, _)| i)
            else {
                return;
            };
            self.pending.swap_remove(oldest);
        }
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
    use crate::catalogue::testing::{catalogue, tag};
    use proptest::prelude::*;

    /// A forged version of few tags with large text used to be held whatever its size, as
    /// only the tag count was bounded.
    #[test]
    fn versions_in_progress_are_bounded_in_bytes() {
        let big = |i: u32| {
            let mut t = tag(i as usize);
            t.description = "d".repeat(100_000);
            t
        };
        let chunk = |hash, first: u32, n: u32| CatalogueChunk {
            hash,
            total_tags: 1_000,
            first_index: first,
            tags: (first..first + n).map(big).collect(),
        };
        let mut asm = CatalogueAssembler::with_byte_limit(2, 4_000_000, 1 << 20);
        // Version 1: 5 chunks of 2 tags (about 1 MB) fit.
        for c in 0..5 {
            assert_eq!(asm.add(chunk(1, c * 2, 2)).unwrap(), None);
        }
        assert!(asm.held_bytes() <= 1 << 20);
        // The next chunk takes it past the limit: the version is discarded.
        assert!(matches!(
            asm.add(chunk(1, 10, 2)),
            Err(AssembleError::TooManyBytes { hash: 1, .. })
        ));
        assert_eq!(asm.held_bytes(), 0);
        // Two versions together stay within the limit: the older one makes room.
        for c in 0..4 {
            asm.add(chunk(2, c * 2, 2)).unwrap();
        }
        for c in 0..4 {
            asm.add(chunk(3, c * 2, 2)).unwrap();
        }
        assert!(asm.held_bytes() <= 1 << 20, "{}", asm.held_bytes());
        assert_eq!(
            asm.progress().iter().map(|p| p.hash).collect::<Vec<_>>(),
            vec![3]
        );
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
    fn chunks_cut_differently_replace_what_they_overlap() {
        let cat = catalogue(200);
        let small = cat.chunks(300);
        let large = cat.chunks(900);
        assert!(small.len() > large.len() + 3);
        let mut asm = CatalogueAssembler::new();
        // Every other small chunk, then every other large one: the large ones displace the
        // small ones they overlap, and the count of tags held stays exact.
        for c in small.iter().step_by(2).chain(large.iter().step_by(2)) {
            assert_eq!(asm.add(c.clone()).unwrap(), None);
            let p = asm.progress()[0];
            assert!(p.received <= 200);
        }
        let held = asm.progress()[0].received;
        let covered: usize = large.iter().step_by(2).map(|c| c.tags.len()).sum();
        assert!(held >= covered, "{held} < {covered}");
        // A duplicate replaces its copy without counting twice.
        asm.add(large[0].clone()).unwrap();
        assert_eq!(asm.progress()[0].received, held);
        // The next round in one cut completes it.
        let mut got = None;
        for c in &large {
            got = got.or(asm.add(c.clone()).unwrap());
        }
        assert_eq!(got, Some(cat));
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
