//! One segment file of the history buffer: a 64-byte header, then records back to back.
//!
//! ```text
//! header  [magic "GWHSEG01" 8][version u32 LE = 1][header_len u32 LE = 64][log id u64 LE]
//!         [first seq u64 LE][catalogue hash u64 LE][created_at i64 LE, Unix ns]
//!         [zero 12][crc32 u32 LE of the 60 bytes before it]
//! record  [body_len u32 LE][crc32 u32 LE of body][body: codec (postcard) of (seq u64, Sample)]
//! ```
//!
//! Records are appended only. Every record carries its own sequence number, so a damaged
//! record costs that record and nothing else: the reader skips it (counted) and, when its
//! length field itself is damaged, searches forward for the next record whose length, CRC and
//! body all check out and whose sequence number follows the last good one. A torn record at
//! the end (a crash mid-write) reads as the end of the segment.
//!
//! Tags are catalogue indexes; the header names the catalogue version, whose tag names the
//! log keeps beside the segments, so a sample still resolves to its tag name after the
//! transmitter restarts with another catalogue.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use protocol::codec;
use protocol::message::CatalogueHash;
use protocol::model::{Sample, UnixNanos};

pub const MAGIC: &[u8; 8] = b"GWHSEG01";
pub const VERSION: u32 = 1;
pub const HEADER_LEN: usize = 64;
/// Length and CRC before each record body.
pub const RECORD_OVERHEAD: usize = 8;
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

/// Appends the record of sample number `seq`, given the sample's encoding
/// (`codec::encode_sample_into`).
pub fn encode_record(seq: u64, sample: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
    let start = out.len();
    out.extend_from_slice(&[0u8; RECORD_OVERHEAD]);
    codec::encode_numbered_encoded(seq, sample, out);
    let len = out.len() - start - RECORD_OVERHEAD;
    if len > MAX_RECORD {
        out.truncate(start);
        return Err(format!("record of {len} bytes exceeds {MAX_RECORD}"));
    }
    let crc = crc32fast::hash(&out[start + RECORD_OVERHEAD..]);
    out[start..start + 4].copy_from_slice(&(len as u32).to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// Decodes a record body that passed its CRC.
fn decode_body(body: &[u8]) -> Option<(u64, Sample)> {
    codec::decode_numbered_sample(body).ok()
}

/// Appends records to the newest segment.
pub struct SegmentWriter {
    path: PathBuf,
    file: BufWriter<File>,
    pub header: Header,
    /// Bytes in the file, header included, as written so far.
    pub bytes: u64,
}

impl SegmentWriter {
    /// Creates a new segment; fails if the file exists.
    pub fn create(path: &Path, header: Header) -> Result<SegmentWriter, SegmentError> {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(io_err(path))?;
        let mut file = BufWriter::with_capacity(64 << 10, file);
        file.write_all(&header.encode()).map_err(io_err(path))?;
        Ok(SegmentWriter {
            path: path.to_path_buf(),
            file,
            header,
            bytes: HEADER_LEN as u64,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes already-encoded records.
    pub fn write(&mut self, records: &[u8]) -> Result<(), SegmentError> {
        self.file.write_all(records).map_err(io_err(&self.path))?;
        self.bytes += records.len() as u64;
        Ok(())
    }

    /// Hands buffered records to the kernel, so readers (the carousel) see them.
    pub fn flush(&mut self) -> Result<(), SegmentError> {
        self.file.flush().map_err(io_err(&self.path))
    }

    /// Flushes and asks the kernel to put the records on disk.
    pub fn sync(&mut self) -> Result<(), SegmentError> {
        self.flush()?;
        self.file.get_ref().sync_data().map_err(io_err(&self.path))
    }
}

/// What a reader met besides good records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadDamage {
    /// Records skipped because their CRC, length or body was bad.
    pub corrupt_records: u64,
    /// Bytes skipped while searching for the next good record.
    pub skipped_bytes: u64,
    /// The segment ended inside a record (a crash mid-write).
    pub torn_tail: bool,
}

/// Reads a segment's records in order, from the start or from a known record offset.
pub struct SegmentReader {
    path: PathBuf,
    file: BufReader<File>,
    /// Offset of the next record.
    pub offset: u64,
    /// The sequence number of the last good record read, for resynchronising.
    last_seq: Option<u64>,
    len: u64,
    pub damage: ReadDamage,
    body: Vec<u8>,
}

impl SegmentReader {
    /// Opens `path` positioned at `offset` (the header's length for the first record).
    /// `last_seq` is the sequence number of the record before `offset`, if known.
    pub fn open(
        path: &Path,
        offset: u64,
        last_seq: Option<u64>,
    ) -> Result<SegmentReader, SegmentError> {
        let mut f = File::open(path).map_err(io_err(path))?;
        let len = f.metadata().map_err(io_err(path))?.len();
        f.seek(SeekFrom::Start(offset)).map_err(io_err(path))?;
        Ok(SegmentReader {
            path: path.to_path_buf(),
            file: BufReader::with_capacity(64 << 10, f),
            offset,
            last_seq,
            len,
            damage: ReadDamage::default(),
            body: Vec::new(),
        })
    }

    /// Re-reads the file length, to see records appended since opening (the active segment).
    pub fn refresh_len(&mut self) -> Result<(), SegmentError> {
        self.len = self
            .file
            .get_ref()
            .metadata()
            .map_err(io_err(&self.path))?
            .len();
        Ok(())
    }

    /// The next good record and the offset of the record after it; `None` at the end.
    pub fn next_record(&mut self) -> Result<Option<(u64, Sample)>, SegmentError> {
        loop {
            let remaining = self.len.saturating_sub(self.offset);
            if remaining == 0 {
                return Ok(None);
            }
            if remaining < RECORD_OVERHEAD as u64 {
                self.damage.torn_tail = true;
                return Ok(None);
            }
            let mut head = [0u8; RECORD_OVERHEAD];
            self.read_exact_at_cursor(&mut head)?;
            let len = u32_at(&head, 0) as usize;
            let crc = u32_at(&head, 4);
            if len == 0 || len > MAX_RECORD {
                // The length itself is damaged: search for the next good record.
                self.damage.corrupt_records += 1;
                if !self.resync(self.offset + 1)? {
                    return Ok(None);
                }
                continue;
            }
            if (remaining - RECORD_OVERHEAD as u64) < len as u64 {
                // Either a torn last record or a damaged length pointing past the end.
                if !self.resync(self.offset + 1)? {
                    self.damage.torn_tail = true;
                    return Ok(None);
                }
                self.damage.corrupt_records += 1;
                continue;
            }
            self.body.resize(len, 0);
            let mut body = std::mem::take(&mut self.body);
            let read = self.read_exact_at_cursor(&mut body);
            self.body = body;
            read?;
            let record_start = self.offset;
            let next = record_start + (RECORD_OVERHEAD + len) as u64;
            let good = if crc32fast::hash(&self.body) == crc {
                decode_body(&self.body)
                    .filter(|(seq, _)| self.last_seq.is_none_or(|last| *seq > last))
            } else {
                None
            };
            match good {
                Some((seq, sample)) => {
                    self.offset = next;
                    self.last_seq = Some(seq);
                    return Ok(Some((seq, sample)));
                }
                None => {
                    // The length looked sane but the record is bad: most often a damaged body
                    // with its length intact, so the next record starts right after it; if it
                    // does not, search from here.
                    self.damage.corrupt_records += 1;
                    if self.record_at(next)?.is_some() || next >= self.len {
                        self.seek_to(next)?;
                    } else if !self.resync(record_start + 1)? {
                        return Ok(None);
                    }
                }
            }
        }
    }

    fn read_exact_at_cursor(&mut self, buf: &mut [u8]) -> Result<(), SegmentError> {
        // `offset` tracks the file position: every read here advances both.
        self.file.read_exact(buf).map_err(io_err(&self.path))?;
        Ok(())
    }

    fn seek_to(&mut self, offset: u64) -> Result<(), SegmentError> {
        self.file
            .seek(SeekFrom::Start(offset))
            .map_err(io_err(&self.path))?;
        self.offset = offset;
        Ok(())
    }

    /// Whether a good record (length, CRC, body, sequence after the last good one) starts at
    /// `at`; returns its total length. Leaves the file position unspecified.
    fn record_at(&mut self, at: u64) -> Result<Option<usize>, SegmentError> {
        if at + RECORD_OVERHEAD as u64 > self.len {
            return Ok(None);
        }
        self.file
            .seek(SeekFrom::Start(at))
            .map_err(io_err(&self.path))?;
        let mut head = [0u8; RECORD_OVERHEAD];
        self.file
            .read_exact(&mut head)
            .map_err(io_err(&self.path))?;
        let len = u32_at(&head, 0) as usize;
        if len == 0 || len > MAX_RECORD || at + (RECORD_OVERHEAD + len) as u64 > self.len {
            return Ok(None);
        }
        let mut body = vec![0u8; len];
        self.file
            .read_exact(&mut body)
            .map_err(io_err(&self.path))?;
        if crc32fast::hash(&body) != u32_at(&head, 4) {
            return Ok(None);
        }
        let ok =
            decode_body(&body).is_some_and(|(seq, _)| self.last_seq.is_none_or(|last| seq > last));
        Ok(ok.then_some(RECORD_OVERHEAD + len))
    }

    /// Positions the reader at the first good record at or after `from`; false if none.
    fn resync(&mut self, from: u64) -> Result<bool, SegmentError> {
        // Read the rest of the segment once and test every offset in memory.
        self.file
            .seek(SeekFrom::Start(from))
            .map_err(io_err(&self.path))?;
        let mut rest = Vec::new();
        (&mut self.file)
            .take(self.len.saturating_sub(from))
            .read_to_end(&mut rest)
            .map_err(io_err(&self.path))?;
        let mut i = 0usize;
        while i + RECORD_OVERHEAD <= rest.len() {
            let len = u32_at(&rest, i) as usize;
            let end = i + RECORD_OVERHEAD + len;
            if len > 0
                && len <= MAX_RECORD
                && end <= rest.len()
                && crc32fast::hash(&rest[i + RECORD_OVERHEAD..end]) == u32_at(&rest, i + 4)
                && decode_body(&rest[i + RECORD_OVERHEAD..end])
                    .is_some_and(|(seq, _)| self.last_seq.is_none_or(|last| seq > last))
            {
                self.damage.skipped_bytes += i as u64;
                self.seek_to(from + i as u64)?;
                return Ok(true);
            }
            i += 1;
        }
        self.damage.skipped_bytes += rest.len() as u64;
        self.seek_to(self.len)?;
        Ok(false)
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
        let mut w = SegmentWriter::create(&path, header).unwrap();
        let mut buf = Vec::new();
        let mut offsets = Vec::new();
        let mut at = HEADER_LEN as u64;
        for i in 0..n {
            offsets.push(at);
            let before = buf.len();
            let mut encoded = Vec::new();
            codec::encode_sample_into(&sample(i), &mut encoded);
            encode_record(100 + i, &encoded, &mut buf).unwrap();
            at += (buf.len() - before) as u64;
        }
        w.write(&buf).unwrap();
        w.sync().unwrap();
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
        (seqs, r.damage)
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
