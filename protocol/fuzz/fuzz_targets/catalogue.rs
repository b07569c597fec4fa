//! Fuzzes the receiver's catalogue assembler with chunks in any order: the chunks of a real
//! catalogue (as they are, or altered), chunks of a second real version, made-up chunks, and
//! message bodies decoded as the link delivers them.
//!
//! Input: `[versions][max tags][real: tag count, chunk size, tags...]` then operations until
//! the input ends (see `Op`). Checked after every chunk:
//! - the bounds: versions in progress, tags announced and tags held across them;
//! - the answer fits the chunk: out of range, too large, a changed total and a repeat of the
//!   version last completed are told apart as documented;
//! - a completed catalogue has every tag the version announced, hashes (SHA-256 of the
//!   encoded tag list, computed here independently) to the chunk's hash, reads back the same
//!   through every accessor, and is the real one whenever it carries the real one's hash;
//!
//! and at the end, whatever came before: two clean rounds of the real catalogue complete it
//! exactly once (none if it was the last version completed, or is above the tag limit).
#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::catalogue::{AssembleError, Catalogue, CatalogueAssembler};
use protocol::codec;
use protocol::message::{CatalogueChunk, CatalogueHash, Message};
use protocol::model::TagInfo;
use protocol_fuzz::{Input, tag_info};

/// What one step of the input does.
enum Op {
    /// A chunk of the real catalogue, as sent.
    Real,
    /// A chunk of the real catalogue with a field altered.
    Altered,
    /// A chunk of the second version.
    Other,
    /// A chunk made up of the input's bytes.
    MadeUp,
    /// Bytes decoded as a message body, as the decoder hands them over.
    Encoded,
    /// A new transmitter session.
    Reset,
}

const OPS: [Op; 6] = [
    Op::Real,
    Op::Altered,
    Op::Other,
    Op::MadeUp,
    Op::Encoded,
    Op::Reset,
];

struct Harness {
    asm: CatalogueAssembler,
    max_versions: usize,
    max_tags: usize,
    /// The version last yielded since the last reset.
    last: Option<CatalogueHash>,
    real: Catalogue,
    real_bytes: Vec<u8>,
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let max_versions = usize::from(input.u8() % 4) + 1;
    let max_tags = usize::from(input.u8());
    let (real, real_chunks) = version(&mut input);
    let (_, other_chunks) = version(&mut input);
    let mut h = Harness {
        asm: CatalogueAssembler::with_limits(max_versions, max_tags),
        max_versions,
        max_tags,
        last: None,
        real_bytes: encoded(&real),
        real,
    };

    while !input.is_empty() {
        match OPS[usize::from(input.u8()) % OPS.len()] {
            Op::Real => {
                let i = usize::from(input.u8()) % real_chunks.len();
                h.add(real_chunks[i].clone());
            }
            Op::Altered => {
                let i = usize::from(input.u8()) % real_chunks.len();
                let mut c = real_chunks[i].clone();
                match input.u8() % 6 {
                    0 => c.total_tags = c.total_tags.wrapping_add(u32::from(input.u8())),
                    1 => c.total_tags = input.u32(),
                    2 => c.first_index = c.first_index.wrapping_add(u32::from(input.u8())),
                    3 => c.first_index = input.u32(),
                    4 => {
                        c.tags.truncate(usize::from(input.u8()));
                    }
                    _ => {
                        let at = usize::from(input.u8());
                        let tag = tag_info(&mut input);
                        if let Some(t) = c.tags.get_mut(at) {
                            *t = tag;
                        } else {
                            c.tags.push(tag);
                        }
                    }
                }
                h.add(c);
            }
            Op::Other => {
                let i = usize::from(input.u8()) % other_chunks.len();
                h.add(other_chunks[i].clone());
            }
            Op::MadeUp => {
                let hash = match input.u8() % 3 {
                    0 => h.real.hash(),
                    1 => other_chunks[0].hash,
                    _ => u64::from(input.u8()),
                };
                let total_tags = match input.u8() {
                    0xFF => input.u32(),
                    n => u32::from(n),
                };
                let first_index = match input.u8() {
                    0xFF => input.u32(),
                    n => u32::from(n),
                };
                let n = input.u8() % 8;
                let tags = (0..n).map(|_| tag_info(&mut input)).collect();
                h.add(CatalogueChunk {
                    hash,
                    total_tags,
                    first_index,
                    tags,
                });
            }
            Op::Encoded => {
                let len = usize::from(input.u16() % 2048);
                if let Ok(Message::Catalogue(c)) = codec::decode_message(input.bytes(len)) {
                    h.add(c);
                }
            }
            Op::Reset => {
                h.asm.reset();
                h.last = None;
            }
        }
    }

    // Two clean rounds.
    let was_last = h.last == Some(h.real.hash());
    let mut yielded = 0;
    for _ in 0..2 {
        for c in &real_chunks {
            yielded += usize::from(h.add(c.clone()));
        }
    }
    let expected = if h.real.len() > h.max_tags {
        0
    } else if was_last {
        0
    } else {
        1
    };
    assert_eq!(yielded, expected, "real catalogue of {} tags", h.real.len());
});

/// A catalogue of up to 24 tags from the input, and its chunks.
fn version(input: &mut Input<'_>) -> (Catalogue, Vec<CatalogueChunk>) {
    let n = input.u8() % 25;
    let chunk_bytes = 40 + usize::from(input.u8()) * 4;
    let tags: Vec<TagInfo> = (0..n).map(|_| tag_info(input)).collect();
    let cat = Catalogue::new(tags);
    let chunks = cat.chunks(chunk_bytes);
    assert!(!chunks.is_empty());
    (cat, chunks)
}

/// The catalogue's tag list as the link encodes it.
fn encoded(cat: &Catalogue) -> Vec<u8> {
    let tags: Vec<TagInfo> = cat.tags().iter().collect();
    codec::encode(&tags).expect("encode tags")
}

impl Harness {
    /// Feeds one chunk and checks the answer; true if it completed the real catalogue.
    fn add(&mut self, chunk: CatalogueChunk) -> bool {
        let before = self.asm.progress();
        let pending_total = before
            .iter()
            .find(|p| p.hash == chunk.hash)
            .map(|p| p.total);
        let end = u64::from(chunk.first_index) + chunk.tags.len() as u64;
        let out_of_range = end > u64::from(chunk.total_tags);
        let too_large = chunk.total_tags as usize > self.max_tags;
        let repeat = self.last == Some(chunk.hash);
        let total_changed = pending_total.is_some_and(|t| t != chunk.total_tags);
        let hash = chunk.hash;
        let total = chunk.total_tags;

        let result = self.asm.add(chunk);
        let after = self.asm.progress();
        match &result {
            Err(AssembleError::OutOfRange { .. }) => assert!(out_of_range),
            Err(AssembleError::TooLarge { .. }) => assert!(!out_of_range && too_large),
            _ => assert!(!out_of_range && !too_large, "{result:?}"),
        }
        if repeat && !out_of_range && !too_large {
            assert_eq!(result, Ok(None), "a repeat of the version last completed");
            assert_eq!(after, before);
        }
        if total_changed && !repeat && !out_of_range && !too_large {
            assert!(
                matches!(result, Err(AssembleError::TotalMismatch { .. })),
                "{result:?}"
            );
        }
        if matches!(
            result,
            Err(AssembleError::TotalMismatch { .. } | AssembleError::HashMismatch { .. })
        ) {
            assert!(after.iter().all(|p| p.hash != hash), "discarded");
        }

        // Bounds.
        assert!(after.len() <= self.max_versions, "{after:?}");
        let announced: usize = after.iter().map(|p| p.total as usize).sum();
        assert!(announced <= self.max_tags, "{after:?}");
        for p in &after {
            assert!(p.received <= p.total as usize, "{p:?}");
        }

        let Ok(Some(cat)) = result else {
            return false;
        };
        self.check_completed(&cat, hash, total);
        self.last = Some(hash);
        hash == self.real.hash()
    }

    fn check_completed(&self, cat: &Catalogue, hash: CatalogueHash, total: u32) {
        assert_eq!(cat.hash(), hash);
        assert_eq!(cat.len(), total as usize);
        let tags: Vec<TagInfo> = cat.tags().iter().collect();
        let bytes = codec::encode(&tags).expect("encode tags");
        let digest = ring::digest::digest(&ring::digest::SHA256, &bytes);
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest.as_ref()[..8]);
        assert_eq!(u64::from_be_bytes(first), hash, "the hash of the tag list");
        for (i, tag) in tags.iter().enumerate() {
            let index = i as u32;
            let view = cat.get(index).expect("every index up to the total");
            assert_eq!(
                codec::encode(&view.to_info()).ok(),
                codec::encode(tag).ok(),
                "tag {i}"
            );
            assert_eq!(cat.value_type(index), Some(tag.value_type));
            let found = cat.index_of(&tag.name).expect("found by name");
            assert!(found <= index, "first of its name");
            assert_eq!(cat.get(found).map(|t| t.name), Some(tag.name.as_str()));
        }
        assert!(cat.get(total).is_none());
        if hash == self.real.hash() {
            assert_eq!(bytes, self.real_bytes, "the real catalogue");
        }
    }
}
