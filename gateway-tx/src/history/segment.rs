//! One segment file of the history buffer: a 64-byte header, then records back to back.
//!
//! ```text
//! header  [magic "GWHSEG01" 8][version u32 LE = 1][header_len u32 LE = 64][log id u64 LE]
//!         [first seq u64 LE][catalogue hash u64 LE][created_at i64 LE, Unix ns]
//!         [zero 12][crc32 u32 LE of the 60 bytes before it]
//! record  [body_len u32 LE][crc32 u32 LE of body][body: codec (postcard) of (seq u64, Sample)]
//! ```
//!
//! Records, their recovery and the segments' retention are `durable_log`'s; this file holds
//! what is the history buffer's own: the header, and the body. Every record carries its own
//! sequence number, so a damaged record costs that record and nothing else: the log skips it
//! and reads on, and a record that decodes to no sample numbered after the last good one is
//! skipped here too (counted as corrupt).
//!
//! Tags are catalogue indexes; the header names the catalogue version, whose tag names the
//! log keeps beside the segments, so a sample still resolves to its tag name after the
//! transmitter restarts with another catalogue.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use protocol::codec;
use protocol::message::CatalogueHash;
use protocol::model::{Sample, UnixNanos};

pub const MAGIC: &[u8; 8] = b"GWHSEG01";
pub const VERSION: u32 = 1;
pub const HEADER_LEN: usize = 64;
/// Length and CRC before each record body.
pub const RECORD_OVERHEAD: usize = durable_log::RECORD_HEADER;
/// Largest record body accepted (a sample with a 1 MiB string is not history material).
pub const MAX_RECORD: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: not a history segment ({why})")]
    BadHeader { path: PathBuf, why: &'static str },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SegmentError + '_ {
    move |source| SegmentError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub log: u64,
    pub first_seq: u64,
    pub catalogue: CatalogueHash,
    pub created_at: UnixNanos,
}

impl Header {
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..8].copy_from_slice(MAGIC);
        b[8..12].copy_from_slice(&VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&(HEADER_LEN as u32).to_le_bytes());
        b[16..24].copy_from_slice(&self.log.to_le_bytes());
        b[24..32].copy_from_slice(&self.first_seq.to_le_bytes());
        b[32..40].copy_from_slice(&self.catalogue.to_le_bytes());
        b[40..48].copy_from_slice(&self.created_at.to_le_bytes());
        let crc = crc32fast::hash(&b[..60]);
        b[60..64].copy_from_slice(&crc.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8; HEADER_LEN]) -> Result<Header, &'static str> {
        if &b[0..8] != MAGIC {
            return Err("bad magic");
        }
        if crc32fast::hash(&b[..60]) != u32_at(b, 60) {
            return Err("header CRC mismatch");
        }
        if u32_at(b, 8) != VERSION {
            return Err("unknown version");
        }
        Ok(Header {
            log: u64_at(b, 16),
            first_seq: u64_at(b, 24),
            catalogue: u64_at(b, 32),
            created_at: u64_at(b, 40) as i64,
        })
    }

    pub fn read(path: &Path) -> Result<Header, SegmentError> {
        let mut f = File::open(path).map_err(io_err(path))?;
        let mut b = [0u8; HEADER_LEN];
        f.read_exact(&mut b).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                SegmentError::BadHeader {
                    path: path.to_path_buf(),
                    why: "shorter than its header",
                }
            } else {
                io_err(path)(e)
            }
        })?;
        Header::decode(&b).map_err(|why| SegmentError::BadHeader {
            path: path.to_path_buf(),
            why,
        })
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(x)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

/// The history buffer's segments as the log lays them out: named by their first sequence
/// number, behind the header above.
pub const FORMAT: durable_log::Format = durable_log::Format {
    ext: "seg",
    digits: 20,
    header_len: HEADER_LEN as u64,
    max_record: MAX_RECORD as u32,
};

/// Appends the record of sample number `seq`, given the sample's encoding
/// (`codec::encode_sample_into`).
pub fn encode_record(
    seq: u64,
    sample: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), durable_log::LogError> {
    durable_log::frame(out, FORMAT.max_record, |out| {
        codec::encode_numbered_encoded(seq, sample, out)
    })
    .map(drop)
}

/// What a reader met besides good records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadDamage {
    /// Records skipped: bad in the log's sense, or whole but not a sample numbered after the
    /// last good one.
    pub corrupt_records: u64,
    /// Bytes skipped while searching for the next good record.
    pub skipped_bytes: u64,
    /// The segment ended in something that is no record (a crash mid-write).
    pub torn_tail: bool,
}

/// Reads a segment's samples in order, from the start or from a known record offset.
pub struct SegmentReader {
    records: durable_log::Reader,
    /// The sequence number of the last good record read: a record must come after it.
    last_seq: Option<u64>,
    not_samples: u64,
}

impl SegmentReader {
    /// Opens `path` positioned at `offset` (the header's length for the first record).
    /// `last_seq` is the sequence number of the record before `offset`, if known.
    pub fn open(
        path: &Path,
        offset: u64,
        last_seq: Option<u64>,
    ) -> Result<SegmentReader, durable_log::LogError> {
        Ok(SegmentReader {
            records: durable_log::Reader::open(path, FORMAT, offset)?,
            last_seq,
            not_samples: 0,
        })
    }

    /// Offset of the next record.
    pub fn offset(&self) -> u64 {
        self.records.offset()
    }

    /// Re-reads the file length, to see records appended since opening (the active segment).
    pub fn refresh_len(&mut self) -> Result<(), durable_log::LogError> {
        self.records.refresh_len()
    }

    /// The next good record; `None` at the end.
    pub fn next_record(&mut self) -> Result<Option<(u64, Sample)>, durable_log::LogError> {
        while let Some(body) = self.records.next_record()? {
            match codec::decode_numbered_sample(body) {
                Ok((seq, sample)) if self.last_seq.is_none_or(|last| seq > last) => {
                    self.last_seq = Some(seq);
                    return Ok(Some((seq, sample)));
                }
                _ => self.not_samples += 1,
            }
        }
        Ok(None)
    }

    /// The damage met since the last call.
    pub fn take_damage(&mut self) -> ReadDamage {
        let d = std::mem::take(&mut self.records.damage);
        ReadDamage {
            corrupt_records: d.bad_records + std::mem::take(&mut self.not_samples),
            skipped_bytes: d.skipped_bytes,
            torn_tail: d.torn_tail,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::model::{Quality, Value};

    fn sample(i: u64) -> Sample {
        Sample {
            tag: (i % 7) as u32,
            value: Value::Double(i as f64 * 0.5),
            quality: Quality::GOOD,
            time: 1_700_000_000_000_000_000 + i as i64,
        }
    }

    fn write_segment(dir: &Path, n: u64) -> (PathBuf, Vec<u64>) {
        let path = dir.join("s.seg");
        let header = Header {
            log: 9,
            first_seq: 100,
            catalogue: 5,
            created_at: 1,
        };
        // The layout byte for byte as the writer before the shared log made it, by hand.
        let mut file = header.encode().to_vec();
        let mut offsets = Vec::new();
        for i in 0..n {
            offsets.push(file.len() as u64);
            let mut encoded = Vec::new();
            codec::encode_sample_into(&sample(i), &mut encoded);
            let mut body = Vec::new();
            codec::encode_numbered_encoded(100 + i, &encoded, &mut body);
            file.extend_from_slice(&(body.len() as u32).to_le_bytes());
            file.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
            file.extend_from_slice(&body);
            let mut framed = Vec::new();
            encode_record(100 + i, &encoded, &mut framed).unwrap();
            assert_eq!(
                framed,
                file[offsets[i as usize] as usize..],
                "the writer's layout"
            );
        }
        std::fs::write(&path, &file).unwrap();
        assert_eq!(Header::read(&path).unwrap(), header);
        (path, offsets)
    }

    fn read_all(path: &Path) -> (Vec<u64>, ReadDamage) {
        let mut r = SegmentReader::open(path, HEADER_LEN as u64, None).unwrap();
        let mut seqs = Vec::new();
        while let Some((seq, s)) = r.next_record().unwrap() {
            assert_eq!(s, sample(seq - 100));
            seqs.push(seq);
        }
        (seqs, r.take_damage())
    }

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _) = write_segment(dir.path(), 50);
        let (seqs, damage) = read_all(&path);
        assert_eq!(seqs, (100..150).collect::<Vec<_>>());
        assert_eq!(damage, ReadDamage::default());
    }

    #[test]
    fn damaged_body_costs_one_record() {
        let dir = tempfile::tempdir().unwrap();
        let (path, offsets) = write_segment(dir.path(), 50);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[offsets[10] as usize + RECORD_OVERHEAD + 2] ^= 0x40;
        std::fs::write(&path, &bytes).unwrap();
        let (seqs, damage) = read_all(&path);
        assert_eq!(seqs.len(), 49);
        assert!(!seqs.contains(&110));
        assert_eq!(damage.corrupt_records, 1);
    }

    #[test]
    fn damaged_length_resyncs_at_the_next_record() {
        let dir = tempfile::tempdir().unwrap();
        let (path, offsets) = write_segment(dir.path(), 50);
        for (len, expect_missing) in [(0u32, 1usize), (u32::MAX, 1), (3, 1)] {
            let mut bytes = std::fs::read(&path).unwrap();
            bytes[offsets[20] as usize..offsets[20] as usize + 4]
                .copy_from_slice(&len.to_le_bytes());
            let damaged = dir.path().join("d.seg");
            std::fs::write(&damaged, &bytes).unwrap();
            let (seqs, damage) = read_all(&damaged);
            assert_eq!(seqs.len(), 50 - expect_missing, "len {len}");
            assert!(!seqs.contains(&120));
            assert!(damage.corrupt_records >= 1);
        }
    }

    #[test]
    fn torn_tail_is_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let (path, offsets) = write_segment(dir.path(), 50);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..offsets[49] as usize + 5]).unwrap();
        let (seqs, damage) = read_all(&path);
        assert_eq!(seqs, (100..149).collect::<Vec<_>>());
        assert!(damage.torn_tail);
        assert_eq!(damage.corrupt_records, 0);
    }

    #[test]
    fn garbage_everywhere_never_panics() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _) = write_segment(dir.path(), 200);
        let clean = std::fs::read(&path).unwrap();
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for round in 0..200 {
            let mut bytes = clean.clone();
            for _ in 0..(round % 20 + 1) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let at = HEADER_LEN + (x as usize) % (bytes.len() - HEADER_LEN);
                bytes[at] = (x >> 32) as u8;
            }
            let damaged = dir.path().join("g.seg");
            std::fs::write(&damaged, &bytes).unwrap();
            let mut r = SegmentReader::open(&damaged, HEADER_LEN as u64, None).unwrap();
            let mut last = None;
            while let Some((seq, _)) = r.next_record().unwrap() {
                assert!(last.is_none_or(|l| seq > l), "sequence goes forward");
                last = Some(seq);
            }
        }
    }

    #[test]
    fn bad_headers_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _) = write_segment(dir.path(), 1);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[20] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            Header::read(&path),
            Err(SegmentError::BadHeader {
                why: "header CRC mismatch",
                ..
            })
        ));
        std::fs::write(&path, b"short").unwrap();
        assert!(Header::read(&path).is_err());
    }
}
