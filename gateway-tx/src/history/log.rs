//! The history log: a directory of append-only segment files, bounded by size and age.
//!
//! ```text
//! <dir>/log.id                          the log's random id, 16 hex digits
//! <dir>/<first seq, 20 digits>.seg      segments, oldest first by name
//! <dir>/catalogue-<hash, 16 hex>.names  tag names of each catalogue version a segment uses
//! <dir>/backfill/                       operator requests (see `backfill.rs`)
//! ```
//!
//! Every open starts a new segment (the old ones are never written again, so a torn record
//! at the end of one is only ever the end of that segment), and so does every catalogue change.
//! A segment also closes when it reaches `segment_bytes` or has been open `segment_span`, so
//! the limits delete history in small steps: the oldest segments go while the log is larger
//! than `max_bytes` or their last append is older than `max_age`. What goes is counted and
//! logged with its sequence range; a receiver still missing any of it sees that range fall
//! below the `oldest_seq` the batches carry and records the gap as expired.
//!
//! Sequence numbers are given out by the tap before records reach the log, contiguous but for
//! samples the tap had to drop (counted there); the log stores each record's own number.
//!
//! Durability: records reach the kernel before they are sent and the disk about once a second
//! (fsync). A process crash loses nothing written; a power loss can lose the last second, and
//! the numbers of lost records are then given again to new samples. A receiver that had the
//! first ones keeps both samples (the store keys samples by tag and source time, never by
//! number) but counts those numbers as received.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use protocol::codec;
use protocol::message::CatalogueHash;
use protocol::model::{Sample, UnixNanos};
use tracing::{info, warn};

use super::segment::{self, FORMAT, HEADER_LEN, Header, ReadDamage, SegmentError, SegmentReader};

/// A sparse index entry is kept every this many records of a segment.
const INDEX_EVERY: u64 = 1024;
/// Append-time checkpoints (time → next sequence number) kept at most this often.
const CHECKPOINT_EVERY_NS: i64 = 100_000_000;

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error(transparent)]
    Segment(#[from] SegmentError),
    #[error(transparent)]
    Log(#[from] durable_log::LogError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> LogError + '_ {
    move |source| LogError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub dir: PathBuf,
    pub max_bytes: u64,
    pub max_age: Duration,
    /// A segment closes at this size...
    pub segment_bytes: u64,
    /// ...or after being open this long.
    pub segment_span: Duration,
}

impl LogConfig {
    /// Segment sizes derived from the limits: at least 16 segments fit in `max_bytes` and in
    /// `max_age`, so a limit deletes at most about a sixteenth at once; and a segment spans at
    /// most half the carousel window, so after a restart (when only segment start times are
    /// known) the carousel starts at most half a window early.
    pub fn new(dir: PathBuf, max_bytes: u64, max_age: Duration, window: Duration) -> LogConfig {
        let segment_bytes = (max_bytes / 16).clamp(64 << 10, 64 << 20);
        let span = (max_age / 16)
            .min(window / 2)
            .clamp(Duration::from_secs(1), Duration::from_secs(3600));
        LogConfig {
            dir,
            max_bytes,
            max_age,
            segment_bytes,
            segment_span: span,
        }
    }
}

/// Counters of the log since it was opened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogStats {
    pub records_appended: u64,
    pub bytes_appended: u64,
    /// Samples that could not be encoded as a record (too large): counted, not stored.
    pub records_refused: u64,
    pub segments_deleted: u64,
    /// Records in deleted segments (by sequence range; a segment's holes count too).
    pub records_deleted: u64,
    pub segments_unreadable: u64,
    pub corrupt_records: u64,
    pub torn_tails: u64,
}

/// A segment as the log knows it.
#[derive(Debug)]
struct Segment {
    path: PathBuf,
    header: Header,
    /// The last sequence number in the segment, when known (the newest segment and every
    /// segment scanned); otherwise the next segment's first minus one bounds it.
    last_seq: Option<u64>,
    /// When the last record was appended (file modification time for old segments).
    last_append: UnixNanos,
    /// (sequence number, file offset) every [`INDEX_EVERY`] records, first record included.
    index: Vec<(u64, u64)>,
    /// Whether `index` covers the whole segment.
    indexed: bool,
    /// Records written since the last index entry (the active segment only).
    since_index: u64,
}

/// What a range deletion removed, for logs and the receiver-visible expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deleted {
    pub first_seq: u64,
    /// Exclusive.
    pub end_seq: u64,
    pub bytes: u64,
    pub reason: &'static str,
}

pub struct HistoryLog {
    cfg: LogConfig,
    log_id: u64,
    /// The same segments as `log`'s, in the same order.
    segments: Vec<Segment>,
    log: durable_log::Log,
    next_seq: u64,
    catalogue: CatalogueHash,
    names: HashMap<CatalogueHash, Arc<Vec<String>>>,
    checkpoints: VecDeque<(UnixNanos, u64)>,
    stats: LogStats,
    buf: Vec<u8>,
}

impl HistoryLog {
    /// Opens (or creates) the log in `cfg.dir` for appending samples of `catalogue` (whose tag
    /// names are `names`). Unreadable segments are logged, counted and deleted; nothing in the
    /// directory's content can make this fail, only the file system itself.
    pub fn open(
        cfg: LogConfig,
        catalogue: CatalogueHash,
        names: Vec<String>,
        now: UnixNanos,
    ) -> Result<HistoryLog, LogError> {
        std::fs::create_dir_all(&cfg.dir).map_err(io_err(&cfg.dir))?;
        let log_id = load_or_create_log_id(&cfg.dir)?;
        let mut stats = LogStats::default();
        let mut headers = HashMap::new();
        let (dlog, opened) = durable_log::Log::open(&cfg.dir, FORMAT, 64 << 10, |id, head| {
            let path = FORMAT.path(&cfg.dir, id);
            let header = head.map(|h| Header::decode(h.try_into().expect("header length")));
            match header {
                Some(Ok(h)) if h.log == log_id && h.first_seq == id => {
                    headers.insert(id, h);
                    return true;
                }
                Some(Ok(h)) if h.log == log_id => warn!(
                    path = %path.display(),
                    first_seq = h.first_seq,
                    "history segment named for another first sequence number; deleted"
                ),
                Some(Ok(h)) => warn!(
                    path = %path.display(),
                    segment_log = format_args!("{:016x}", h.log),
                    log = format_args!("{log_id:016x}"),
                    "history segment of another log; deleted"
                ),
                Some(Err(why)) => {
                    warn!(path = %path.display(), why, "history segment header unreadable; deleted")
                }
                None => {
                    warn!(path = %path.display(), "history segment shorter than its header; deleted")
                }
            }
            false
        })?;
        stats.segments_unreadable += opened.refused.len() as u64;
        for path in opened.strays {
            warn!(path = %path.display(), "history segment name unreadable; deleted");
            stats.segments_unreadable += 1;
            let _ = std::fs::remove_file(&path);
        }
        if let Some(r) = opened.recovered
            && r.damage.torn_tail
        {
            warn!(
                segment = r.id,
                cut_bytes = r.damage.tail_bytes,
                "torn history record at the end cut off"
            );
            stats.torn_tails += 1;
        }
        let segments = dlog
            .segments()
            .iter()
            .map(|s| {
                let path = dlog.path(s.id);
                let header = headers[&s.id];
                let mtime = std::fs::metadata(&path).ok().and_then(|m| mtime(&m));
                Segment {
                    path,
                    header,
                    last_seq: None,
                    last_append: mtime.unwrap_or(header.created_at),
                    index: Vec::new(),
                    indexed: false,
                    since_index: 0,
                }
            })
            .collect();
        let mut log = HistoryLog {
            cfg,
            log_id,
            segments,
            log: dlog,
            next_seq: 0,
            catalogue,
            names: HashMap::new(),
            checkpoints: VecDeque::new(),
            stats,
            buf: Vec::new(),
        };
        if let Some(i) = log.segments.len().checked_sub(1) {
            log.index_segment(i)?;
            let s = &log.segments[i];
            log.next_seq = s.last_seq.map_or(s.header.first_seq, |l| l + 1);
        }
        for s in &log.segments {
            log.checkpoints
                .push_back((s.header.created_at, s.header.first_seq));
        }
        log.checkpoints.push_back((now, log.next_seq));
        log.save_names(catalogue, names)?;
        info!(
            dir = %log.cfg.dir.display(),
            log = format_args!("{log_id:016x}"),
            segments = log.segments.len(),
            bytes = log.total_bytes(),
            oldest_seq = log.oldest_seq(),
            next_seq = log.next_seq,
            "history log opened"
        );
        Ok(log)
    }

    pub fn log_id(&self) -> u64 {
        self.log_id
    }

    pub fn dir(&self) -> &Path {
        &self.cfg.dir
    }

    /// The next sequence number to give out: every number below it was given out.
    pub fn head(&self) -> u64 {
        self.next_seq
    }

    /// The oldest sequence number still held (the head when the log is empty).
    pub fn oldest_seq(&self) -> u64 {
        self.segments
            .first()
            .map_or(self.next_seq, |s| s.header.first_seq)
    }

    pub fn catalogue(&self) -> CatalogueHash {
        self.catalogue
    }

    pub fn stats(&self) -> &LogStats {
        &self.stats
    }

    pub fn total_bytes(&self) -> u64 {
        self.log.total_bytes()
    }

    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Appends records, each a sample number and the sample's encoding
    /// (`codec::encode_sample_into`); their sequence numbers must be at least
    /// [`HistoryLog::head`] and increasing. Flushes them to the kernel before returning, so
    /// readers see them.
    pub fn append<'a>(
        &mut self,
        records: impl IntoIterator<Item = (u64, &'a [u8])>,
        now: UnixNanos,
    ) -> Result<(), LogError> {
        self.buf.clear();
        let mut offsets = Vec::new();
        let mut first_written = None;
        let mut last_written = None;
        let mut count = 0u64;
        for (seq, sample) in records {
            count += 1;
            if seq < self.next_seq {
                // A caller bug; never let it corrupt the ordering on disk.
                self.stats.records_refused += 1;
                continue;
            }
            let before = self.buf.len();
            match segment::encode_record(seq, sample, &mut self.buf) {
                Ok(()) => {
                    offsets.push((seq, before as u64));
                    first_written.get_or_insert(seq);
                    last_written = Some(seq);
                }
                Err(e) => {
                    self.stats.records_refused += 1;
                    warn!(seq, error = %e, "history sample not stored");
                }
            }
            self.next_seq = seq + 1;
        }
        let Some(first) = first_written else {
            return Ok(());
        };
        self.roll_if_needed(first, now)?;
        let Some(active) = self.log.active() else {
            return Ok(());
        };
        let base = active.bytes;
        self.log.append(&self.buf)?;
        self.log.flush()?;
        let Some(seg) = self.segments.last_mut() else {
            return Ok(());
        };
        for (seq, off) in offsets {
            if seg.since_index == 0 {
                seg.index.push((seq, base + off));
            }
            seg.since_index = (seg.since_index + 1) % INDEX_EVERY;
        }
        seg.last_seq = last_written;
        seg.last_append = now;
        self.stats.records_appended += count;
        self.stats.bytes_appended += self.buf.len() as u64;
        if self
            .checkpoints
            .back()
            .is_none_or(|(t, _)| now - t >= CHECKPOINT_EVERY_NS)
        {
            self.checkpoints.push_back((now, first));
        }
        Ok(())
    }

    /// Puts appended records on disk (fsync); called about once a second.
    pub fn sync(&mut self) -> Result<(), LogError> {
        Ok(self.log.sync()?)
    }

    fn roll_if_needed(&mut self, first_seq: u64, now: UnixNanos) -> Result<(), LogError> {
        let span = i64::try_from(self.cfg.segment_span.as_nanos()).unwrap_or(i64::MAX);
        let roll = match (self.log.active(), self.segments.last()) {
            (Some(w), Some(s)) => {
                w.bytes >= self.cfg.segment_bytes
                    || now.saturating_sub(s.header.created_at) >= span
                    || s.header.catalogue != self.catalogue
            }
            _ => true,
        };
        if !roll {
            return Ok(());
        }
        if self.log.active().is_some()
            && let Some(s) = self.segments.last_mut()
        {
            s.indexed = true;
        }
        let header = Header {
            log: self.log_id,
            first_seq,
            catalogue: self.catalogue,
            created_at: now,
        };
        let path = self.log.path(first_seq);
        // A segment of that name can only be a leftover that holds no record at or after
        // `first_seq` (every record below the head is older): an empty segment from a run
        // that appended nothing. Replace it.
        if let Some(pos) = self.segments.iter().position(|s| s.path == path) {
            self.segments.remove(pos);
            self.log.remove(first_seq)?;
        }
        self.log.start_segment(first_seq, &header.encode())?;
        self.segments.push(Segment {
            path,
            header,
            last_seq: None,
            last_append: now,
            index: Vec::new(),
            indexed: false,
            since_index: 0,
        });
        Ok(())
    }

    /// Deletes the oldest segments beyond the size and age limits (never the one being
    /// written). Returns what went, oldest first.
    pub fn enforce_limits(&mut self, now: UnixNanos) -> Vec<Deleted> {
        let max_age = i64::try_from(self.cfg.max_age.as_nanos()).unwrap_or(i64::MAX);
        let mut out = Vec::new();
        for d in self.log.trim(self.cfg.max_bytes) {
            self.forget_segment(d, "size", &mut out);
        }
        // The age of the segment the log would drop next, looked up afresh on every pass: a
        // dropped segment leaves `segments` at once, so one expired segment never takes the
        // younger ones after it along.
        while let Some(oldest) = self.log.segments().first().map(|s| s.id)
            && self
                .segments
                .iter()
                .find(|s| s.header.first_seq == oldest)
                .is_some_and(|s| now.saturating_sub(s.last_append) > max_age)
            && let Some(d) = self.log.drop_oldest()
        {
            self.forget_segment(d, "age", &mut out);
        }
        if !out.is_empty() {
            self.forget_unused_names();
        }
        out
    }

    /// Takes a segment the log dropped out of `segments`, counted, onto `out`.
    fn forget_segment(
        &mut self,
        d: durable_log::Dropped,
        reason: &'static str,
        out: &mut Vec<Deleted>,
    ) {
        let Some(pos) = self
            .segments
            .iter()
            .position(|s| s.header.first_seq == d.id)
        else {
            return;
        };
        let seg = self.segments.remove(pos);
        let end_seq = self
            .segments
            .get(pos)
            .map_or(self.next_seq, |s| s.header.first_seq);
        self.stats.segments_deleted += 1;
        self.stats.records_deleted += end_seq.saturating_sub(seg.header.first_seq);
        out.push(Deleted {
            first_seq: seg.header.first_seq,
            end_seq,
            bytes: d.bytes,
            reason,
        });
    }

    /// The first sequence number appended at or after `t`, from the append-time checkpoints
    /// (exact within a run; segment start times after a restart).
    pub fn seq_at_time(&mut self, t: UnixNanos) -> u64 {
        let oldest = self.oldest_seq();
        while self.checkpoints.len() > 1 && self.checkpoints[1].1 <= oldest {
            self.checkpoints.pop_front();
        }
        // The last checkpoint at or before t: everything appended at or after t has a number at
        // or above its seq.
        let mut seq = oldest;
        for &(ct, cs) in &self.checkpoints {
            if ct <= t {
                seq = cs;
            } else {
                break;
            }
        }
        // Bound the checkpoints: keep those needed to answer for any time within max_age.
        let max_checkpoints = 64 * 1024;
        while self.checkpoints.len() > max_checkpoints {
            self.checkpoints.pop_front();
        }
        seq.max(oldest)
    }

    /// The sequence number of the first record in the first segment whose last append is at
    /// or after `t` (backfill: a segment last written before `t` holds no sample from `t` on,
    /// as long as sources do not stamp samples ahead of the transmitter's clock).
    pub fn seq_of_segment_active_since(&self, t: UnixNanos) -> u64 {
        self.segments
            .iter()
            .find(|s| s.last_append >= t)
            .map_or(self.next_seq, |s| s.header.first_seq)
    }

    /// When the oldest segment held was started: the buffer holds nothing appended before
    /// (`None` when it holds nothing).
    pub fn held_since(&self) -> Option<UnixNanos> {
        self.segments.first().map(|s| s.header.created_at)
    }

    /// Tag names of a catalogue version the log has used.
    pub fn names(&mut self, hash: CatalogueHash) -> Option<Arc<Vec<String>>> {
        if let Some(n) = self.names.get(&hash) {
            return Some(n.clone());
        }
        let path = self.names_path(hash);
        let bytes = std::fs::read(&path).ok()?;
        match decode_names(&bytes) {
            Some(names) => {
                let names = Arc::new(names);
                self.names.insert(hash, names.clone());
                Some(names)
            }
            None => {
                warn!(path = %path.display(), "catalogue names file damaged; its history cannot be re-sent");
                None
            }
        }
    }

    fn names_path(&self, hash: CatalogueHash) -> PathBuf {
        self.cfg.dir.join(format!("catalogue-{hash:016x}.names"))
    }

    fn save_names(&mut self, hash: CatalogueHash, names: Vec<String>) -> Result<(), LogError> {
        let path = self.names_path(hash);
        let existing = std::fs::read(&path).ok().and_then(|b| decode_names(&b));
        if existing.as_ref() != Some(&names) {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, encode_names(&names)).map_err(io_err(&tmp))?;
            std::fs::rename(&tmp, &path).map_err(io_err(&path))?;
        }
        self.names.insert(hash, Arc::new(names));
        Ok(())
    }

    fn forget_unused_names(&mut self) {
        let used: Vec<CatalogueHash> = self
            .segments
            .iter()
            .map(|s| s.header.catalogue)
            .chain([self.catalogue])
            .collect();
        let Ok(entries) = std::fs::read_dir(&self.cfg.dir) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let Some(hex) = name
                .to_str()
                .and_then(|n| n.strip_prefix("catalogue-"))
                .and_then(|n| n.strip_suffix(".names"))
            else {
                continue;
            };
            if let Ok(hash) = u64::from_str_radix(hex, 16)
                && !used.contains(&hash)
            {
                let _ = std::fs::remove_file(e.path());
                self.names.remove(&hash);
            }
        }
    }

    /// Reads segment `i` to the end, building its sparse index and learning its last seq.
    fn index_segment(&mut self, i: usize) -> Result<(), LogError> {
        let path = self.segments[i].path.clone();
        let mut r = SegmentReader::open(&path, HEADER_LEN as u64, None)?;
        let mut index = Vec::new();
        let mut n = 0u64;
        let mut last = None;
        let mut at = r.offset();
        while let Some((seq, _)) = r.next_record()? {
            if n.is_multiple_of(INDEX_EVERY) {
                index.push((seq, at));
            }
            n += 1;
            last = Some(seq);
            at = r.offset();
        }
        let damage = r.take_damage();
        self.note_damage(&path, damage);
        let s = &mut self.segments[i];
        s.index = index;
        s.indexed = true;
        s.last_seq = last;
        Ok(())
    }

    fn note_damage(&mut self, path: &Path, d: ReadDamage) {
        if d.corrupt_records > 0 || d.torn_tail {
            warn!(
                path = %path.display(),
                corrupt_records = d.corrupt_records,
                skipped_bytes = d.skipped_bytes,
                torn_tail = d.torn_tail,
                "damaged history records skipped"
            );
        }
        self.stats.corrupt_records += d.corrupt_records;
        self.stats.torn_tails += u64::from(d.torn_tail);
    }

    /// Where the first record with a sequence number at or after `seq` is: (segment index,
    /// offset, seq of a record before it if known). `None` when there is none yet.
    fn locate(&mut self, seq: u64) -> Result<Option<(usize, u64, Option<u64>)>, LogError> {
        if self.segments.is_empty() || seq >= self.next_seq {
            return Ok(None);
        }
        let i = self
            .segments
            .partition_point(|s| s.header.first_seq <= seq)
            .saturating_sub(1);
        let active = i + 1 == self.segments.len() && self.log.active().is_some();
        if !self.segments[i].indexed && !active {
            self.index_segment(i)?;
        }
        let s = &self.segments[i];
        let k = s.index.partition_point(|(s, _)| *s <= seq);
        Ok(Some(match k.checked_sub(1) {
            Some(k) => (i, s.index[k].1, None),
            None => (i, HEADER_LEN as u64, None),
        }))
    }
}

/// Reads records in sequence order from some number on, across segments, surviving segment
/// deletion (it then continues at the oldest record left).
pub struct LogCursor {
    /// The next sequence number wanted.
    pub next_seq: u64,
    open: Option<(PathBuf, SegmentReader)>,
}

/// One record as a cursor returns it, with the catalogue its tag index refers to.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub seq: u64,
    pub sample: Sample,
    pub catalogue: CatalogueHash,
}

impl LogCursor {
    /// A reader of the records numbered `seq` and later.
    pub fn new(seq: u64) -> LogCursor {
        LogCursor {
            next_seq: seq,
            open: None,
        }
    }

    /// Up to `max` records from the cursor on; fewer (maybe none) at the head of the log.
    pub fn read(&mut self, log: &mut HistoryLog, max: usize) -> Result<Vec<Record>, LogError> {
        let mut out = Vec::new();
        if self.next_seq < log.oldest_seq() {
            self.next_seq = log.oldest_seq();
            self.open = None;
        }
        while out.len() < max && self.next_seq < log.head() {
            if self.open.is_none() {
                let Some((i, offset, last)) = log.locate(self.next_seq)? else {
                    break;
                };
                let path = log.segments[i].path.clone();
                match SegmentReader::open(&path, offset, last) {
                    Ok(r) => self.open = Some((path, r)),
                    Err(e) => {
                        // Deleted under us (by hand): forget it and go on with the rest.
                        warn!(error = %e, "history segment vanished while reading");
                        let s = log.segments.remove(i);
                        let _ = log.log.remove(s.header.first_seq);
                        self.next_seq = self.next_seq.max(log.oldest_seq());
                        continue;
                    }
                }
            }
            let Some((path, reader)) = self.open.as_mut() else {
                break;
            };
            // Which segment this is now, and the one after it.
            let Some(i) = log.segments.iter().position(|s| s.path == *path) else {
                self.open = None;
                self.next_seq = self.next_seq.max(log.oldest_seq());
                continue;
            };
            let catalogue = log.segments[i].header.catalogue;
            let next_first = log.segments.get(i + 1).map(|s| s.header.first_seq);
            reader.refresh_len()?;
            let mut at_end = false;
            while out.len() < max {
                let Some((seq, sample)) = reader.next_record()? else {
                    at_end = true;
                    break;
                };
                if seq < self.next_seq {
                    continue;
                }
                self.next_seq = seq + 1;
                out.push(Record {
                    seq,
                    sample,
                    catalogue,
                });
            }
            if !at_end {
                break;
            }
            let damage = reader.take_damage();
            let path = path.clone();
            log.note_damage(&path, damage);
            match next_first {
                Some(f) => {
                    self.next_seq = self.next_seq.max(f);
                    self.open = None;
                }
                // The segment being written: nothing more until something is appended.
                None => break,
            }
        }
        Ok(out)
    }
}

/// Every readable record in the buffer at `dir`, with its tag's name (`None` when the
/// catalogue's names are unknown), oldest first. Reads only; for tools and tests, not for a
/// buffer a daemon is writing (it may see a partial last record, which reads as the end).
pub fn read_records(dir: &Path) -> Result<Vec<(u64, Option<String>, Sample)>, LogError> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io_err(dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    paths.sort();
    let mut out = Vec::new();
    let mut names: HashMap<CatalogueHash, Option<Vec<String>>> = HashMap::new();
    for path in paths {
        let Ok(header) = Header::read(&path) else {
            continue;
        };
        let cat = names.entry(header.catalogue).or_insert_with(|| {
            std::fs::read(dir.join(format!("catalogue-{:016x}.names", header.catalogue)))
                .ok()
                .and_then(|b| decode_names(&b))
        });
        let mut r = SegmentReader::open(&path, HEADER_LEN as u64, None)?;
        while let Some((seq, sample)) = r.next_record()? {
            let name = cat
                .as_ref()
                .and_then(|n| n.get(sample.tag as usize).cloned());
            out.push((seq, name, sample));
        }
    }
    Ok(out)
}

fn mtime(meta: &std::fs::Metadata) -> Option<UnixNanos> {
    let t = meta.modified().ok()?;
    let d = t.duration_since(std::time::UNIX_EPOCH).ok()?;
    i64::try_from(d.as_nanos()).ok()
}

fn load_or_create_log_id(dir: &Path) -> Result<u64, LogError> {
    let path = dir.join("log.id");
    if let Ok(text) = std::fs::read_to_string(&path) {
        if let Ok(id) = u64::from_str_radix(text.trim(), 16) {
            return Ok(id);
        }
        warn!(path = %path.display(), "history log id unreadable; starting a new log");
    }
    let id = random_u64();
    let tmp = dir.join("log.id.tmp");
    std::fs::write(&tmp, format!("{id:016x}\n")).map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io_err(&path))?;
    Ok(id)
}

fn random_u64() -> u64 {
    use ring::rand::{SecureRandom, SystemRandom};
    let mut b = [0u8; 8];
    if SystemRandom::new().fill(&mut b).is_err() {
        // No system randomness: the clock still makes a collision with an earlier log unlikely.
        return crate::unix_now() as u64 ^ 0x9E37_79B9_7F4A_7C15;
    }
    u64::from_le_bytes(b)
}

/// `[crc32 u32 LE][codec of Vec<String>]`.
fn encode_names(names: &[String]) -> Vec<u8> {
    let body = codec::encode(&names).unwrap_or_default();
    let mut out = crc32fast::hash(&body).to_le_bytes().to_vec();
    out.extend_from_slice(&body);
    out
}

fn decode_names(bytes: &[u8]) -> Option<Vec<String>> {
    let (crc, body) = bytes.split_first_chunk::<4>()?;
    if u32::from_le_bytes(*crc) != crc32fast::hash(body) {
        return None;
    }
    codec::decode(body).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::model::{Quality, Value};

    const T0: UnixNanos = 1_700_000_000_000_000_000;
    const SEC: i64 = 1_000_000_000;

    fn sample(seq: u64) -> Sample {
        Sample {
            tag: (seq % 3) as u32,
            value: Value::Float(seq as f32),
            quality: Quality::GOOD,
            time: T0 + seq as i64 * 1_000_000,
        }
    }

    fn names() -> Vec<String> {
        vec!["a".into(), "b".into(), "c".into()]
    }

    fn cfg(dir: &Path, max_bytes: u64, segment_bytes: u64) -> LogConfig {
        LogConfig {
            dir: dir.to_path_buf(),
            max_bytes,
            max_age: Duration::from_secs(3600),
            segment_bytes,
            segment_span: Duration::from_secs(3600),
        }
    }

    fn append(log: &mut HistoryLog, seqs: std::ops::Range<u64>, now: UnixNanos) {
        let records: Vec<(u64, Vec<u8>)> = seqs
            .map(|s| {
                let mut b = Vec::new();
                codec::encode_sample_into(&sample(s), &mut b);
                (s, b)
            })
            .collect();
        for chunk in records.chunks(100) {
            log.append(chunk.iter().map(|(s, b)| (*s, &b[..])), now)
                .unwrap();
        }
    }

    fn read_all(log: &mut HistoryLog, from: u64) -> Vec<u64> {
        let mut c = LogCursor::new(from);
        let mut out = Vec::new();
        loop {
            let got = c.read(log, 333).unwrap();
            if got.is_empty() {
                return out;
            }
            for r in got {
                assert_eq!(r.sample, sample(r.seq));
                out.push(r.seq);
            }
        }
    }

    fn segment_paths(dir: &Path) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "seg"))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn append_read_and_restart_continue_the_sequence() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = HistoryLog::open(cfg(dir.path(), 1 << 30, 16 << 10), 7, names(), T0).unwrap();
        assert_eq!((log.head(), log.oldest_seq()), (0, 0));
        append(&mut log, 0..5000, T0);
        assert!(log.segment_count() > 3, "small segments roll");
        assert_eq!(read_all(&mut log, 0), (0..5000).collect::<Vec<_>>());
        assert_eq!(read_all(&mut log, 4321), (4321..5000).collect::<Vec<_>>());
        let id = log.log_id();
        drop(log);

        let mut log = HistoryLog::open(cfg(dir.path(), 1 << 30, 16 << 10), 7, names(), T0).unwrap();
        assert_eq!(log.log_id(), id, "the log id survives a restart");
        assert_eq!(log.head(), 5000, "the sequence continues");
        append(&mut log, 5000..5100, T0 + SEC);
        assert_eq!(read_all(&mut log, 0), (0..5100).collect::<Vec<_>>());
    }

    /// A buffer as the writer before the shared log made it, byte for byte by hand, opens
    /// and reads back whole, and the log appends after it.
    #[test]
    fn a_buffer_written_before_the_shared_log_opens_without_loss() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("log.id"), "00000000000000ab\n").unwrap();
        for (first, end) in [(0u64, 300u64), (300, 500)] {
            let header = Header {
                log: 0xab,
                first_seq: first,
                catalogue: 7,
                created_at: T0,
            };
            let mut file = header.encode().to_vec();
            for seq in first..end {
                let mut encoded = Vec::new();
                codec::encode_sample_into(&sample(seq), &mut encoded);
                let mut body = Vec::new();
                codec::encode_numbered_encoded(seq, &encoded, &mut body);
                file.extend_from_slice(&(body.len() as u32).to_le_bytes());
                file.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
                file.extend_from_slice(&body);
            }
            std::fs::write(dir.path().join(format!("{first:020}.seg")), &file).unwrap();
        }
        let mut log = HistoryLog::open(cfg(dir.path(), 1 << 30, 1 << 30), 7, names(), T0).unwrap();
        assert_eq!((log.oldest_seq(), log.head()), (0, 500));
        assert_eq!(log.stats().segments_unreadable + log.stats().torn_tails, 0);
        append(&mut log, 500..510, T0);
        assert_eq!(read_all(&mut log, 0), (0..510).collect::<Vec<_>>());
    }

    #[test]
    fn size_limit_deletes_the_oldest_segments() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = HistoryLog::open(cfg(dir.path(), 64 << 10, 8 << 10), 7, names(), T0).unwrap();
        append(&mut log, 0..20_000, T0);
        let deleted = log.enforce_limits(T0);
        assert!(!deleted.is_empty());
        assert!(deleted.iter().all(|d| d.reason == "size"));
        assert!(log.total_bytes() <= 64 << 10, "{}", log.total_bytes());
        let oldest = log.oldest_seq();
        assert_eq!(deleted.last().unwrap().end_seq, oldest);
        assert_eq!(log.stats().records_deleted, oldest);
        // A reader asking for deleted history continues at the oldest record left.
        assert_eq!(read_all(&mut log, 0), (oldest..20_000).collect::<Vec<_>>());
        assert_eq!(
            log.total_bytes(),
            segment_paths(dir.path())
                .iter()
                .map(|p| std::fs::metadata(p).unwrap().len())
                .sum::<u64>()
        );
    }

    #[test]
    fn age_limit_keeps_the_segment_being_written() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = cfg(dir.path(), 1 << 30, 4 << 10);
        c.max_age = Duration::from_secs(60);
        let mut log = HistoryLog::open(c, 7, names(), T0).unwrap();
        append(&mut log, 0..1000, T0);
        assert!(log.enforce_limits(T0 + 30 * SEC).is_empty());
        let deleted = log.enforce_limits(T0 + 61 * SEC);
        assert!(deleted.iter().all(|d| d.reason == "age"));
        assert_eq!(log.segment_count(), 1, "the active segment stays");
        append(&mut log, 1000..1010, T0 + 62 * SEC);
        assert_eq!(*read_all(&mut log, 0).last().unwrap(), 1009);
    }

    #[test]
    fn age_limit_deletes_only_the_expired_segments() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = cfg(dir.path(), 1 << 30, 4 << 10);
        c.max_age = Duration::from_secs(60);
        let mut log = HistoryLog::open(c, 7, names(), T0).unwrap();
        append(&mut log, 0..1000, T0);
        append(&mut log, 1000..2000, T0 + 50 * SEC);
        let before = log.segment_count();
        let deleted = log.enforce_limits(T0 + 61 * SEC);
        assert!(
            !deleted.is_empty(),
            "the segments last written at T0 expired"
        );
        assert!(
            deleted
                .iter()
                .all(|d| d.reason == "age" && d.end_seq <= 1000),
            "only segments of records appended at T0 go: {deleted:?}"
        );
        assert!(
            log.segment_count() > 1,
            "of {before} segments only the active one is left"
        );
        let left = read_all(&mut log, 0);
        assert!(
            (1000..2000).all(|s| left.contains(&s)),
            "records 11 s old were deleted: the oldest left is {:?}",
            left.first()
        );
    }

    #[test]
    fn a_damaged_record_is_counted_and_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = HistoryLog::open(cfg(dir.path(), 1 << 30, 1 << 30), 7, names(), T0).unwrap();
        append(&mut log, 0..1000, T0);
        drop(log);
        let seg = &segment_paths(dir.path())[0];
        let mut bytes = std::fs::read(seg).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xFF;
        std::fs::write(seg, &bytes).unwrap();

        let mut log = HistoryLog::open(cfg(dir.path(), 1 << 30, 1 << 30), 7, names(), T0).unwrap();
        assert_eq!(log.head(), 1000);
        let seqs = read_all(&mut log, 0);
        assert_eq!(seqs.len(), 999, "exactly one record lost");
        assert!(log.stats().corrupt_records >= 1);
    }

    #[test]
    fn a_torn_tail_ends_the_segment_and_the_sequence_resumes_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = HistoryLog::open(cfg(dir.path(), 1 << 30, 1 << 30), 7, names(), T0).unwrap();
        append(&mut log, 0..100, T0);
        drop(log);
        let seg = &segment_paths(dir.path())[0];
        let bytes = std::fs::read(seg).unwrap();
        std::fs::write(seg, &bytes[..bytes.len() - 3]).unwrap();
        let mut log = HistoryLog::open(cfg(dir.path(), 1 << 30, 1 << 30), 7, names(), T0).unwrap();
        assert_eq!(log.head(), 99, "the torn record's number is given again");
        assert_eq!(log.stats().torn_tails, 1);
        append(&mut log, 99..120, T0);
        assert_eq!(read_all(&mut log, 0), (0..120).collect::<Vec<_>>());
    }

    #[test]
    fn unreadable_segments_are_dropped_without_failing() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = HistoryLog::open(cfg(dir.path(), 1 << 30, 4 << 10), 7, names(), T0).unwrap();
        append(&mut log, 0..2000, T0);
        drop(log);
        let segs = segment_paths(dir.path());
        std::fs::write(&segs[0], b"garbage").unwrap();
        std::fs::write(dir.path().join("99999999999999999999.seg"), b"").unwrap();
        let mut log = HistoryLog::open(cfg(dir.path(), 1 << 30, 4 << 10), 7, names(), T0).unwrap();
        assert_eq!(log.stats().segments_unreadable, 2);
        assert_eq!(log.head(), 2000);
        let seqs = read_all(&mut log, 0);
        assert_eq!(*seqs.last().unwrap(), 1999);
        assert!(seqs[0] > 0, "the unreadable first segment is gone");
        assert_eq!(log.oldest_seq(), seqs[0]);
    }

    #[test]
    fn catalogue_names_survive_a_catalogue_change() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = HistoryLog::open(cfg(dir.path(), 1 << 30, 1 << 30), 7, names(), T0).unwrap();
        append(&mut log, 0..10, T0);
        drop(log);
        let mut log =
            HistoryLog::open(cfg(dir.path(), 1 << 30, 1 << 30), 8, vec!["z".into()], T0).unwrap();
        append(&mut log, 10..20, T0);
        let mut c = LogCursor::new(0);
        let recs = c.read(&mut log, 100).unwrap();
        assert_eq!(recs.len(), 20);
        assert!(recs[..10].iter().all(|r| r.catalogue == 7));
        assert!(recs[10..].iter().all(|r| r.catalogue == 8));
        assert_eq!(log.names(7).unwrap().as_slice(), names().as_slice());
        assert_eq!(log.names(8).unwrap().as_slice(), ["z".to_string()]);
    }

    #[test]
    fn seq_at_time_follows_the_appends() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = HistoryLog::open(cfg(dir.path(), 1 << 30, 1 << 30), 7, names(), T0).unwrap();
        for s in 0..10u64 {
            append(&mut log, s * 100..(s + 1) * 100, T0 + s as i64 * SEC);
        }
        assert_eq!(log.seq_at_time(T0 - SEC), 0);
        assert_eq!(log.seq_at_time(T0 + 5 * SEC), 500);
        assert_eq!(log.seq_at_time(T0 + 5 * SEC + 1), 500);
        assert_eq!(log.seq_at_time(T0 + 100 * SEC), 900);
    }
}
