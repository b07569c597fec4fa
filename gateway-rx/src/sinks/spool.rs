//! A sink's durable spool: the on-disk queue between the store's writer thread, which appends
//! every new history sample, and the sink's task, which delivers them to their destination in
//! order and then moves its cursor past them.
//!
//! # Layout
//!
//! A directory per sink holding segment files `<id>.spool` (ids increasing, 16 decimal digits)
//! and a `cursor` file. A segment is a sequence of records:
//!
//! ```text
//! record  = length: u32 LE | crc32(payload): u32 LE | payload
//! payload = postcard(Chunk { names: [(id, tag name)], samples: [(id, value, quality, time, received)] })
//! ```
//!
//! Tag names are interned per segment: a record defines the ids it uses first, so each name is
//! written once per segment. The cursor file holds `segment offset index`: the record the sink
//! has not finished with and how many of its samples it has delivered. It is written (replace by
//! rename) each time the sink moves on, not synced: after a crash the sink re-delivers from an
//! older cursor, and every sink copes with that (PostgreSQL keeps (tag, time) once; the MQTT
//! publisher goes on from the position its own journal holds, synced, see `mqtt.rs`; NATS
//! drops a message id it holds within its duplicate window, see `nats.rs`).
//!
//! # Durability: the store's transaction is the one commit point
//!
//! The store's writer appends a transaction's new samples, then [`SpoolWriter::prepare`]s
//! (writes out and fdatasyncs) *before* it commits the store's transaction, and records in that
//! transaction where each spool's prepared records end ([`SpoolWriter::pending_head`]). Only
//! once the store has committed does it [`SpoolWriter::publish`] them: make them readable to
//! the sink. Should anything fail on the way (a spool that cannot be written or synced, a full
//! disk, the store's own commit), the writer [`SpoolWriter::rollback`]s: the records are cut
//! off again, as if never written, and the carousel re-sends the samples to both. And when a
//! crash falls between a spool's sync and the store's commit, [`SpoolWriter::open`] cuts each
//! spool back to where the store's last commit says it ends. So a sample is in a sink's spool
//! exactly when the store holds it: never missing (a sink would lose it, with no gap to show),
//! never twice (an MQTT sink would publish it twice).
//!
//! Segments, records and their recovery are `durable_log`'s (this layout is its `.spool`
//! format): what a crash left beyond the store's last commit is cut off when the spool is next
//! opened (without a head recorded by the store, a torn last record is); a bad record below
//! that head is corruption of committed records (see Bounds), never cut silently; every open
//! starts a new segment, so records are only ever appended to a segment this process created.
//! A segment ends only between transactions, so a rollback only ever cuts the current one.
//!
//! # Bounds
//!
//! The segments together hold at most `max_bytes`. An append that does not fit is refused
//! ([`SpoolWriter::append`] returns how many samples it took): the caller counts the rest and
//! records them as a gap (`sinks/mod.rs`). Segments are deleted as soon as the cursor leaves
//! them. A record that fails its CRC or does not decode (disk corruption) makes the reader skip
//! the rest of its segment (later records may use the tag names it defined); that is counted
//! and recorded as a gap too, in the segment being written when the spool was last open as well.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use protocol::model::{Quality, UnixNanos, Value};
use serde::{Deserialize, Serialize};

use super::SinkStats;

/// Bytes before each record's payload.
pub const RECORD_HEADER: u64 = durable_log::RECORD_HEADER as u64;
/// The spools' segments: `<id, 16 digits>.spool`, no header, a length field above 16 MiB is
/// corruption, not a record.
const FORMAT: durable_log::Format = durable_log::Format {
    ext: "spool",
    digits: 16,
    header_len: 0,
    max_record: 16 << 20,
};
/// Samples per record, at most.
pub const SAMPLES_PER_RECORD: usize = 2048;
const SEGMENT_MIN: u64 = 64 << 10;
const SEGMENT_MAX: u64 = 64 << 20;

/// One history sample as a sink receives it.
#[derive(Debug, Clone, PartialEq)]
pub struct SpoolSample {
    pub tag: Arc<str>,
    pub value: Value,
    pub quality: Quality,
    /// Source time.
    pub time: UnixNanos,
    /// When this receiver stored it.
    pub received: UnixNanos,
}

impl AsRef<SpoolSample> for SpoolSample {
    fn as_ref(&self) -> &SpoolSample {
        self
    }
}

#[derive(Serialize)]
struct ChunkOut<'a> {
    names: Vec<(u32, &'a str)>,
    samples: Vec<RecOut<'a>>,
}

#[derive(Serialize)]
struct RecOut<'a> {
    tag: u32,
    value: &'a Value,
    quality: u32,
    time: i64,
    received: i64,
}

#[derive(Deserialize)]
struct ChunkIn {
    names: Vec<(u32, String)>,
    samples: Vec<RecIn>,
}

#[derive(Deserialize)]
struct RecIn {
    tag: u32,
    value: Value,
    quality: u32,
    time: i64,
    received: i64,
}

/// A sample read back, with the position just after it (to commit once it is delivered).
#[derive(Debug, Clone, PartialEq)]
pub struct Spooled {
    pub after: Pos,
    pub sample: SpoolSample,
}

/// A place in the spool: record at `offset` of segment `segment`, its first `index` samples
/// delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Pos {
    pub segment: u64,
    pub offset: u64,
    pub index: u32,
}

/// What the writer and the reader of one spool share.
#[derive(Debug, Default)]
pub struct SpoolShared {
    /// The readable end: (segment, length). Only what was synced is readable.
    head: Mutex<(u64, u64)>,
    /// The sink's counters: the spool counts `appended`, `spool_refused`, `corrupt_records`
    /// and `spool_bytes`.
    pub stats: Arc<SinkStats>,
    /// Woken when something was appended.
    pub notify: tokio::sync::Notify,
    /// Corruption the reader found, for the writer's side to record as gaps: bytes skipped.
    pub corrupt: Mutex<Vec<u64>>,
    /// Rollbacks so far. The reader reads ahead of the readable end into its buffer; bytes a
    /// rollback cut off and the next transaction wrote anew would be stale there, so a reader
    /// that sees this move opens its segment afresh.
    rollbacks: AtomicU64,
}

impl SpoolShared {
    fn head(&self) -> (u64, u64) {
        *self.head.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bytes the segments use.
    pub fn bytes(&self) -> u64 {
        self.stats.spool_bytes.load(Ordering::Relaxed)
    }
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    FORMAT.path(dir, id)
}

/// The segment ids in `dir`, ascending.
fn list_segments(dir: &Path) -> std::io::Result<Vec<u64>> {
    Ok(FORMAT.list(dir)?.0)
}

/// The appending side: used by the store's writer thread only.
pub struct SpoolWriter {
    dir: PathBuf,
    shared: Arc<SpoolShared>,
    max_bytes: u64,
    segment_bytes: u64,
    segment: u64,
    /// Appending to `segment` unless an I/O error ended it.
    log: durable_log::Log,
    /// Bytes written to the current segment, published or not.
    len: u64,
    /// Bytes of the current segment that are published (readable).
    published: u64,
    names: HashMap<Arc<str>, u32>,
    /// Names interned since the last publish (forgotten again on a rollback).
    names_added: Vec<Arc<str>>,
    /// The segment is full: a new one starts after the next publish.
    roll_after_publish: bool,
    dirty: bool,
    buf: Vec<u8>,
}

impl SpoolWriter {
    /// Opens (creating) the spool in `dir`: cuts it back to `committed` (where the store's last
    /// commit says its records end: what a crash left after that was never the store's; a bad
    /// record below it is corruption, left for the reader to count), or without it cuts a torn
    /// last record off, and starts a new segment. The reader for the same directory takes
    /// the returned [`SpoolShared`].
    pub fn open(
        dir: &Path,
        max_bytes: u64,
        committed: Option<(u64, u64)>,
    ) -> std::io::Result<(SpoolWriter, Arc<SpoolShared>)> {
        // With the store's head known, only what lies beyond it may go: damage below it is
        // committed records lost, which the reader counts and reports for a gap, whereas a
        // torn-tail cut there would lose them silently.
        let (log, opened) = match committed {
            Some(head) => durable_log::Log::open_at(dir, FORMAT, 256 << 10, head, |_, _| true),
            None => durable_log::Log::open(dir, FORMAT, 256 << 10, |_, _| true),
        }
        .map_err(durable_log::LogError::into_io)?;
        if let Some(r) = opened.recovered
            && r.damage.torn_tail
        {
            tracing::warn!(dir = %dir.display(), segment = r.id, valid = r.len, "spool: torn record at the end cut off");
        }
        for d in opened.cut {
            tracing::warn!(dir = %dir.display(), segment = d.id, bytes = d.bytes, "spool: records the store never committed cut off");
        }
        let bytes = log.total_bytes();
        let last = log.segments().last().map(|s| s.id);
        let shared = Arc::new(SpoolShared::default());
        shared.stats.spool_bytes.store(bytes, Ordering::Relaxed);
        let segment = last.map_or(1, |l| l + 1);
        let mut w = SpoolWriter {
            dir: dir.to_path_buf(),
            shared: shared.clone(),
            max_bytes,
            segment_bytes: (max_bytes / 16).clamp(SEGMENT_MIN, SEGMENT_MAX),
            segment,
            log,
            len: 0,
            published: 0,
            names: HashMap::new(),
            names_added: Vec::new(),
            roll_after_publish: false,
            dirty: false,
            buf: Vec::new(),
        };
        w.create_segment()?;
        Ok((w, shared))
    }

    fn create_segment(&mut self) -> std::io::Result<()> {
        if let Err(e) = self.log.start_segment(self.segment, &[]) {
            // The old segment could not be ended (not synced, or a rollback's cut still owed):
            // it is still the one written, so heads must name it, or a reader would take it
            // for a finished segment and read it to its end.
            if let Some(a) = self.log.active() {
                self.segment = a.id;
            }
            return Err(e.into_io());
        }
        self.len = 0;
        self.published = 0;
        self.names.clear();
        self.names_added.clear();
        *self.shared.head.lock().unwrap_or_else(|e| e.into_inner()) = (self.segment, 0);
        Ok(())
    }

    /// Appends samples in order; returns how many it took (all of them unless the spool is
    /// full: then a prefix, and the caller accounts for the rest). Nothing appended is readable
    /// before [`publish`](Self::publish). An I/O error is returned as such: the caller then
    /// [`rollback`](Self::rollback)s.
    pub fn append<S: AsRef<SpoolSample>>(&mut self, samples: &[S]) -> std::io::Result<usize> {
        let mut taken = 0usize;
        for chunk in samples.chunks(SAMPLES_PER_RECORD) {
            if self.log.active().is_none() {
                // A previous I/O error: go on in a fresh segment.
                self.segment += 1;
                self.create_segment()?;
            }
            let mut rec_len = self.encode(chunk)?;
            // A segment ends between transactions only (see the module doc): with records of
            // this one in it already, it grows past its size and ends after the publish.
            if self.len > 0 && self.len + rec_len > self.segment_bytes {
                if self.len == self.published {
                    self.segment += 1;
                    self.create_segment()?;
                    rec_len = self.encode(chunk)?;
                } else {
                    self.roll_after_publish = true;
                }
            }
            if self.shared.bytes() + rec_len > self.max_bytes {
                break;
            }
            if self.log.active().is_none() {
                break;
            }
            self.log
                .append(&self.buf)
                .map_err(durable_log::LogError::into_io)?;
            self.len += rec_len;
            self.dirty = true;
            self.shared
                .stats
                .spool_bytes
                .fetch_add(rec_len, Ordering::Relaxed);
            for s in chunk {
                let next = self.names.len() as u32;
                let tag = &s.as_ref().tag;
                if !self.names.contains_key(tag) {
                    self.names.insert(tag.clone(), next);
                    self.names_added.push(tag.clone());
                }
            }
            taken += chunk.len();
        }
        self.shared
            .stats
            .appended
            .fetch_add(taken as u64, Ordering::Relaxed);
        self.shared
            .stats
            .spool_refused
            .fetch_add((samples.len() - taken) as u64, Ordering::Relaxed);
        Ok(taken)
    }

    /// Encodes one record into `self.buf`; returns its length with the header.
    fn encode<S: AsRef<SpoolSample>>(&mut self, chunk: &[S]) -> std::io::Result<u64> {
        let mut new: HashMap<&str, u32> = HashMap::new();
        let mut names = Vec::new();
        let mut recs = Vec::with_capacity(chunk.len());
        for s in chunk {
            let s = s.as_ref();
            let id = match self.names.get(&s.tag) {
                Some(id) => *id,
                None => {
                    let next = (self.names.len() + new.len()) as u32;
                    *new.entry(&s.tag).or_insert_with(|| {
                        names.push((next, &*s.tag));
                        next
                    })
                }
            };
            recs.push(RecOut {
                tag: id,
                value: &s.value,
                quality: s.quality.0,
                time: s.time,
                received: s.received,
            });
        }
        let chunk = ChunkOut {
            names,
            samples: recs,
        };
        self.buf.clear();
        let mut encoded = Ok(());
        let len = durable_log::frame(&mut self.buf, FORMAT.max_record, |out| {
            encoded = protocol::codec::encode_into(&chunk, out);
        });
        encoded.map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        Ok(len.map_err(durable_log::LogError::into_io)? as u64)
    }

    /// Writes out and syncs what was appended, without making it readable: the first half of
    /// the store's commit (see the module doc).
    pub fn prepare(&mut self) -> std::io::Result<()> {
        if !self.dirty {
            return Ok(());
        }
        self.log.sync().map_err(durable_log::LogError::into_io)?;
        self.dirty = false;
        Ok(())
    }

    /// Where the records prepared so far end: (segment, length), for the store to record in
    /// the transaction that commits them.
    pub fn pending_head(&self) -> (u64, u64) {
        (self.segment, self.len)
    }

    /// The store committed: what was prepared becomes readable and the reader is woken.
    pub fn publish(&mut self) {
        self.published = self.len;
        self.names_added.clear();
        *self.shared.head.lock().unwrap_or_else(|e| e.into_inner()) = (self.segment, self.len);
        self.shared.notify.notify_one();
        if std::mem::take(&mut self.roll_after_publish) {
            self.segment += 1;
            if let Err(e) = self.create_segment() {
                // The next append tries again (the log has no segment to append to).
                tracing::warn!(dir = %self.dir.display(), error = %e, "cannot start a new spool segment");
            }
        }
    }

    /// The store's transaction failed (or a spool could not take its part): what was appended
    /// since the last publish is cut off again, as if never written.
    pub fn rollback(&mut self) {
        let unpublished = self.len - self.published;
        if let Err(e) = self.log.truncate_active(self.published) {
            // Past the published end the segment still holds the rolled-back records, maybe
            // whole and synced. It stays the head segment, so the reader stops at the
            // published end, and the log makes the cut before anything else is written: until
            // it can, appends fail and are rolled back (a restart cuts back to the store's head
            // anyway).
            tracing::warn!(dir = %self.dir.display(), error = %e, "cannot cut unpublished records off the spool");
        }
        self.shared
            .stats
            .spool_bytes
            .fetch_sub(unpublished, Ordering::Relaxed);
        self.len = self.published;
        for name in self.names_added.drain(..) {
            self.names.remove(&name);
        }
        self.roll_after_publish = false;
        self.dirty = false;
        self.shared.rollbacks.fetch_add(1, Ordering::Release);
    }

    pub fn shared(&self) -> &Arc<SpoolShared> {
        &self.shared
    }
}

struct OpenSegment {
    id: u64,
    /// [`SpoolShared::rollbacks`] when it was opened.
    generation: u64,
    reader: durable_log::Reader,
    /// Offset of the next record.
    offset: u64,
    names: HashMap<u32, Arc<str>>,
}

/// The delivering side: the sink's task.
pub struct SpoolReader {
    dir: PathBuf,
    shared: Arc<SpoolShared>,
    /// What the sink has delivered (persisted in `cursor`).
    committed: Pos,
    /// Where the next read starts.
    next: Pos,
    seg: Option<OpenSegment>,
}

impl SpoolReader {
    /// Opens the reading side of the spool in `dir`, at its saved cursor.
    pub fn open(dir: &Path, shared: Arc<SpoolShared>) -> std::io::Result<SpoolReader> {
        let saved = std::fs::read_to_string(dir.join("cursor"))
            .ok()
            .and_then(|t| {
                let mut it = t.split_whitespace().map(str::parse::<u64>);
                match (it.next(), it.next(), it.next()) {
                    (Some(Ok(s)), Some(Ok(o)), Some(Ok(i))) => Some(Pos {
                        segment: s,
                        offset: o,
                        index: u32::try_from(i).unwrap_or(0),
                    }),
                    _ => None,
                }
            })
            .unwrap_or_default();
        let mut r = SpoolReader {
            dir: dir.to_path_buf(),
            shared,
            committed: saved,
            next: saved,
            seg: None,
        };
        // The saved segment may be gone (deleted after the cursor was saved, or never made).
        let ids = list_segments(dir)?;
        if !ids.contains(&saved.segment) {
            let first = ids
                .iter()
                .copied()
                .find(|id| *id > saved.segment)
                .unwrap_or(saved.segment);
            r.committed = Pos {
                segment: first,
                offset: 0,
                index: 0,
            };
            r.next = r.committed;
        }
        r.delete_before(r.committed.segment);
        Ok(r)
    }

    pub fn shared(&self) -> &Arc<SpoolShared> {
        &self.shared
    }

    /// The spool's directory (a sink keeps its own state next to its spool).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The position after the samples the last [`read`](Self::read) returned.
    pub fn position(&self) -> Pos {
        self.next
    }

    /// Whether everything appended so far has been read.
    pub fn at_end(&self) -> bool {
        let (seg, len) = self.shared.head();
        self.next.segment >= seg && self.next.offset >= len
    }

    /// Up to about `max` samples from the read position on (whole records; the first may be
    /// resumed mid-way), in append order. Empty when nothing more is readable now.
    pub fn read(&mut self, max: usize) -> Vec<Spooled> {
        let mut out = Vec::new();
        while out.len() < max {
            match self.read_record(&mut out) {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    tracing::warn!(dir = %self.dir.display(), error = %e, "spool read failed; retrying");
                    self.seg = None;
                    break;
                }
            }
        }
        out
    }

    /// Reads the record at `self.next` into `out`; `Ok(false)` when there is none readable.
    fn read_record(&mut self, out: &mut Vec<Spooled>) -> std::io::Result<bool> {
        let (head_seg, head_len) = self.shared.head();
        let pos = self.next;
        if pos.segment > head_seg {
            return Ok(false);
        }
        let seg = self.open_segment(pos)?;
        let Some(seg) = seg else {
            // The segment is gone: go on with the next one.
            return Ok(self.next_segment(head_seg));
        };
        if seg.id == head_seg {
            seg.reader.set_limit(head_len);
        } else {
            seg.reader
                .refresh_len()
                .map_err(durable_log::LogError::into_io)?;
        }
        let limit = seg.reader.limit();
        let offset = seg.offset;
        let record = seg
            .reader
            .next_record()
            .map_err(durable_log::LogError::into_io)?
            .map(|p| {
                protocol::codec::decode::<ChunkIn>(p)
                    .ok()
                    .map(|c| (c, RECORD_HEADER + p.len() as u64))
            });
        let decoded = match record {
            // Records after a bad one may use names it defined: the rest of the segment goes.
            _ if !seg.reader.damage.is_clean() => None,
            None => {
                if pos.segment < head_seg {
                    return Ok(self.next_segment(head_seg));
                }
                return Ok(false);
            }
            Some(decoded) => decoded,
        };
        let Some((chunk, len)) = decoded else {
            let skipped = limit.saturating_sub(offset);
            self.shared
                .stats
                .corrupt_records
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                dir = %self.dir.display(),
                segment = pos.segment,
                offset,
                skipped,
                "spool record corrupt: the rest of its segment is skipped and recorded as a gap"
            );
            self.shared
                .corrupt
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(skipped);
            if pos.segment < head_seg {
                return Ok(self.next_segment(head_seg));
            }
            // The head segment is never torn below its synced length; this is the disk itself.
            self.seg = None;
            self.next = Pos {
                segment: pos.segment,
                offset: limit,
                index: 0,
            };
            return Ok(false);
        };
        for (id, name) in chunk.names {
            seg.names.insert(id, Arc::from(name));
        }
        seg.offset = offset + len;
        let total = chunk.samples.len();
        for (i, r) in chunk.samples.into_iter().enumerate() {
            if (i as u32) < pos.index {
                continue;
            }
            let tag = seg
                .names
                .get(&r.tag)
                .cloned()
                .unwrap_or_else(|| Arc::from("?"));
            let after = if i + 1 < total {
                Pos {
                    segment: pos.segment,
                    offset,
                    index: (i + 1) as u32,
                }
            } else {
                Pos {
                    segment: pos.segment,
                    offset: offset + len,
                    index: 0,
                }
            };
            out.push(Spooled {
                after,
                sample: SpoolSample {
                    tag,
                    value: r.value,
                    quality: Quality(r.quality),
                    time: r.time,
                    received: r.received,
                },
            });
        }
        self.next = Pos {
            segment: pos.segment,
            offset: offset + len,
            index: 0,
        };
        Ok(true)
    }

    /// Moves to the first segment after the current one; false when there is none yet.
    fn next_segment(&mut self, head_seg: u64) -> bool {
        let cur = self.next.segment;
        let next = list_segments(&self.dir)
            .ok()
            .and_then(|ids| ids.into_iter().find(|id| *id > cur));
        self.seg = None;
        match next {
            Some(id) if id <= head_seg => {
                self.next = Pos {
                    segment: id,
                    offset: 0,
                    index: 0,
                };
                true
            }
            _ => false,
        }
    }

    /// The open segment positioned at `pos`, opening it (and learning its names up to
    /// `pos.offset`) if needed; `None` when the file does not exist.
    fn open_segment(&mut self, pos: Pos) -> std::io::Result<Option<&mut OpenSegment>> {
        let generation = self.shared.rollbacks.load(Ordering::Acquire);
        let reusable = self.seg.as_ref().is_some_and(|s| {
            s.id == pos.segment && s.offset == pos.offset && s.generation == generation
        });
        if !reusable {
            self.seg = None;
            let path = segment_path(&self.dir, pos.segment);
            let open = |offset| match durable_log::Reader::open(&path, FORMAT, offset) {
                Ok(r) => Ok(Some(r)),
                Err(e) => match e.into_io() {
                    e if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    e => Err(e),
                },
            };
            let Some(mut reader) = open(0)? else {
                return Ok(None);
            };
            reader.set_limit(pos.offset);
            let mut names = HashMap::new();
            while let Some(p) = reader
                .next_record()
                .map_err(durable_log::LogError::into_io)?
            {
                if let Ok(c) = protocol::codec::decode::<ChunkIn>(p) {
                    for (id, name) in c.names {
                        names.insert(id, Arc::from(name));
                    }
                }
            }
            if reader.offset() != pos.offset || !reader.damage.is_clean() {
                let Some(r) = open(pos.offset)? else {
                    return Ok(None);
                };
                reader = r;
            }
            self.seg = Some(OpenSegment {
                id: pos.segment,
                generation,
                reader,
                offset: pos.offset,
                names,
            });
        }
        Ok(self.seg.as_mut())
    }

    /// The sink delivered everything before `pos`: saves the cursor and deletes the segments
    /// wholly before it.
    pub fn commit(&mut self, pos: Pos) {
        if pos <= self.committed {
            return;
        }
        self.committed = pos;
        let tmp = self.dir.join("cursor.tmp");
        let text = format!("{} {} {}\n", pos.segment, pos.offset, pos.index);
        let saved = std::fs::write(&tmp, text)
            .and_then(|()| std::fs::rename(&tmp, self.dir.join("cursor")));
        if let Err(e) = saved {
            tracing::warn!(dir = %self.dir.display(), error = %e, "cannot save the spool cursor; a restart re-delivers from an older one");
        }
        self.delete_before(pos.segment);
    }

    /// Reads again from the last committed position (a delivery failed).
    pub fn rewind(&mut self) {
        self.next = self.committed;
        self.seg = None;
    }

    fn delete_before(&mut self, segment: u64) {
        let Ok(ids) = list_segments(&self.dir) else {
            return;
        };
        for id in ids.into_iter().filter(|id| *id < segment) {
            let path = segment_path(&self.dir, id);
            let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            if std::fs::remove_file(&path).is_ok() {
                let _ = self.shared.stats.spool_bytes.fetch_update(
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                    |b| Some(b.saturating_sub(len)),
                );
            }
        }
    }

    /// Waits until something may have been appended, at most `max`.
    pub async fn wait(&self, max: std::time::Duration) {
        let _ = tokio::time::timeout(max, self.shared.notify.notified()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
    }

    fn sample(tag: &str, t: i64) -> SpoolSample {
        SpoolSample {
            tag: Arc::from(tag),
            value: Value::Double(t as f64 / 10.0),
            quality: Quality::GOOD,
            time: t,
            received: t + 1,
        }
    }

    fn drain(r: &mut SpoolReader) -> Vec<SpoolSample> {
        let mut all = Vec::new();
        loop {
            let b = r.read(1000);
            if b.is_empty() {
                return all;
            }
            all.extend(b.into_iter().map(|s| s.sample));
        }
    }

    #[test]
    fn round_trip_in_order_across_segments_and_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let want: Vec<SpoolSample> = (0..20_000)
            .map(|i| sample(&format!("site/tag{}", i % 37), i))
            .collect();
        let (mut w, shared) = SpoolWriter::open(dir.path(), 64 << 20, None).unwrap();
        assert_eq!(w.append(&want[..7000]).unwrap(), 7000);
        w.prepare().unwrap();
        w.publish();
        let mut r = SpoolReader::open(dir.path(), shared.clone()).unwrap();
        let mut got: Vec<SpoolSample> = r.read(3000).into_iter().map(|s| s.sample).collect();
        let p = r.position();
        r.commit(p);
        drop(r);
        // Restart both sides: a new segment; the reader resumes at its cursor.
        drop(w);
        let (mut w, shared) = SpoolWriter::open(dir.path(), 64 << 20, None).unwrap();
        assert_eq!(w.append(&want[7000..]).unwrap(), 13_000);
        w.prepare().unwrap();
        w.publish();
        let mut r = SpoolReader::open(dir.path(), shared).unwrap();
        got.extend(drain(&mut r));
        assert_eq!(got, want);
        assert!(r.at_end());
    }

    #[test]
    fn resumes_mid_record_and_rewinds() {
        let dir = tempfile::tempdir().unwrap();
        let want: Vec<SpoolSample> = (0..5000).map(|i| sample("a/b", i)).collect();
        let (mut w, shared) = SpoolWriter::open(dir.path(), 64 << 20, None).unwrap();
        w.append(&want).unwrap();
        w.prepare().unwrap();
        w.publish();
        let mut r = SpoolReader::open(dir.path(), shared.clone()).unwrap();
        let first = r.read(1);
        assert_eq!(first.len(), SAMPLES_PER_RECORD);
        // Delivered 100 of the record: commit mid-record.
        r.commit(first[99].after);
        assert_eq!(first[99].after.index, 100);
        r.rewind();
        let again = drain(&mut r);
        assert_eq!(again, want[100..]);
        drop(r);
        let mut r = SpoolReader::open(dir.path(), shared).unwrap();
        assert_eq!(drain(&mut r), want[100..]);
    }

    #[test]
    fn bounded_by_bytes_and_space_comes_back() {
        let dir = tempfile::tempdir().unwrap();
        let max = 256 << 10;
        let (mut w, shared) = SpoolWriter::open(dir.path(), max, None).unwrap();
        let many: Vec<SpoolSample> = (0..100_000).map(|i| sample("x", i)).collect();
        let took = w.append(&many).unwrap();
        w.prepare().unwrap();
        w.publish();
        assert!(took > 0 && took < many.len(), "took {took}");
        assert!(shared.bytes() <= max);
        assert_eq!(
            shared.stats.spool_refused.load(Ordering::Relaxed),
            (many.len() - took) as u64
        );
        let mut r = SpoolReader::open(dir.path(), shared.clone()).unwrap();
        let got = drain(&mut r);
        assert_eq!(got, many[..took]);
        let p = r.position();
        r.commit(p);
        // Everything but the head segment is gone; appends fit again.
        assert!(shared.bytes() < max / 2, "{}", shared.bytes());
        assert_eq!(w.append(&many[..1000]).unwrap(), 1000);
    }

    #[test]
    fn torn_tail_is_cut_and_corruption_skips_the_segment() {
        let dir = tempfile::tempdir().unwrap();
        let want: Vec<SpoolSample> = (0..3000).map(|i| sample("t", i)).collect();
        {
            let (mut w, _) = SpoolWriter::open(dir.path(), 64 << 20, None).unwrap();
            w.append(&want).unwrap();
            w.prepare().unwrap();
            w.publish();
        }
        let seg = segment_path(dir.path(), 1);
        let len = std::fs::metadata(&seg).unwrap().len();
        // A torn last record.
        let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
        f.set_len(len - 5).unwrap();
        let (_w, shared) = SpoolWriter::open(dir.path(), 64 << 20, None).unwrap();
        let mut r = SpoolReader::open(dir.path(), shared.clone()).unwrap();
        let got = drain(&mut r);
        assert_eq!(got, want[..SAMPLES_PER_RECORD]);
        assert_eq!(shared.stats.corrupt_records.load(Ordering::Relaxed), 0);
        // Flip a byte in the first record: the rest of the segment is skipped and reported.
        let mut bytes = std::fs::read(&seg).unwrap();
        bytes[20] ^= 0xff;
        std::fs::write(&seg, bytes).unwrap();
        let (_w, shared) = SpoolWriter::open(dir.path(), 64 << 20, None).unwrap();
        let mut r = SpoolReader::open(dir.path(), shared.clone()).unwrap();
        assert!(drain(&mut r).is_empty());
        assert_eq!(shared.stats.corrupt_records.load(Ordering::Relaxed), 1);
        assert_eq!(shared.corrupt.lock().unwrap().len(), 1);
    }

    /// A spool as the writer before the shared log made it, byte for byte by hand (records
    /// of the same payload, framed without `durable_log`), with a cursor mid-record: the new
    /// code resumes there and reads the rest whole.
    #[test]
    fn a_spool_written_before_the_shared_log_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut file = Vec::new();
        let mut want = Vec::new();
        for r in 0..3i64 {
            let samples: Vec<SpoolSample> = (0..4).map(|i| sample("old/tag", r * 10 + i)).collect();
            let names = if r == 0 { vec![(0, "old/tag")] } else { vec![] };
            let chunk = ChunkOut {
                names,
                samples: samples
                    .iter()
                    .map(|s| RecOut {
                        tag: 0,
                        value: &s.value,
                        quality: s.quality.0,
                        time: s.time,
                        received: s.received,
                    })
                    .collect(),
            };
            let payload = protocol::codec::encode(&chunk).unwrap();
            file.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            file.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
            file.extend_from_slice(&payload);
            want.extend(samples);
        }
        std::fs::write(dir.path().join("0000000000000007.spool"), &file).unwrap();
        std::fs::write(dir.path().join("cursor"), "7 0 2\n").unwrap();
        let (mut w, shared) =
            SpoolWriter::open(dir.path(), 64 << 20, Some((7, file.len() as u64))).unwrap();
        assert_eq!(shared.bytes(), file.len() as u64);
        w.append(&[sample("new", 99)]).unwrap();
        w.prepare().unwrap();
        w.publish();
        let mut r = SpoolReader::open(dir.path(), shared.clone()).unwrap();
        want.drain(..2);
        want.push(sample("new", 99));
        assert_eq!(drain(&mut r), want);
        assert_eq!(shared.stats.corrupt_records.load(Ordering::Relaxed), 0);
    }

    /// A record damaged in the segment that was being written when the receiver stopped:
    /// what follows it in that segment is lost, and that loss is counted and reported for a
    /// gap, never cut off silently when the spool opens.
    #[test]
    fn damage_in_the_last_segment_is_reported_not_cut_silently() {
        let dir = tempfile::tempdir().unwrap();
        let want: Vec<SpoolSample> = (0..3000).map(|i| sample("t", i)).collect();
        let committed = {
            let (mut w, _) = SpoolWriter::open(dir.path(), 64 << 20, None).unwrap();
            w.append(&want).unwrap();
            w.prepare().unwrap();
            w.publish();
            w.pending_head()
        };
        let seg = segment_path(dir.path(), 1);
        let mut bytes = std::fs::read(&seg).unwrap();
        bytes[20] ^= 0xff;
        std::fs::write(&seg, bytes).unwrap();
        let (_w, shared) = SpoolWriter::open(dir.path(), 64 << 20, Some(committed)).unwrap();
        let mut r = SpoolReader::open(dir.path(), shared.clone()).unwrap();
        assert!(drain(&mut r).is_empty());
        assert_eq!(shared.stats.corrupt_records.load(Ordering::Relaxed), 1);
        assert_eq!(shared.corrupt.lock().unwrap().len(), 1, "a gap to record");
    }

    /// A damaged length field below the store's committed head is corruption, not a torn
    /// tail: the samples it cost are counted and reported for a gap, and nothing the store
    /// committed is cut off when the spool opens.
    #[test]
    fn a_damaged_length_below_the_committed_head_is_corruption_not_a_tail() {
        let dir = tempfile::tempdir().unwrap();
        let want: Vec<SpoolSample> = (0..3000).map(|i| sample("t", i)).collect();
        let committed = {
            let (mut w, _) = SpoolWriter::open(dir.path(), 64 << 20, None).unwrap();
            w.append(&want).unwrap();
            w.prepare().unwrap();
            w.publish();
            w.pending_head()
        };
        let seg = segment_path(dir.path(), 1);
        let mut bytes = std::fs::read(&seg).unwrap();
        assert_eq!(committed, (1, bytes.len() as u64));
        let second = RECORD_HEADER as usize + u32_at(&bytes, 0) as usize;
        bytes[second + 2] ^= 0x10;
        std::fs::write(&seg, &bytes).unwrap();
        let (_w, shared) = SpoolWriter::open(dir.path(), 64 << 20, Some(committed)).unwrap();
        assert_eq!(
            std::fs::metadata(&seg).unwrap().len(),
            committed.1,
            "committed records are never cut"
        );
        let mut r = SpoolReader::open(dir.path(), shared.clone()).unwrap();
        assert_eq!(drain(&mut r), want[..SAMPLES_PER_RECORD]);
        assert_eq!(shared.stats.corrupt_records.load(Ordering::Relaxed), 1);
        assert_eq!(
            *shared.corrupt.lock().unwrap(),
            [committed.1 - second as u64],
            "a gap to record"
        );
    }

    /// What a transaction the store rolled back appended is never read, and the names it
    /// interned are defined again by the next record that uses them.
    #[test]
    fn rolled_back_records_are_never_read() {
        let dir = tempfile::tempdir().unwrap();
        let (mut w, shared) = SpoolWriter::open(dir.path(), 64 << 20, None).unwrap();
        let mut r = SpoolReader::open(dir.path(), shared.clone()).unwrap();
        w.append(&[sample("a", 1)]).unwrap();
        w.prepare().unwrap();
        w.publish();
        let bytes = shared.bytes();
        w.append(&[sample("b", 2), sample("a", 3)]).unwrap();
        w.prepare().unwrap();
        assert_eq!(
            drain(&mut r),
            vec![sample("a", 1)],
            "prepared is not readable"
        );
        w.rollback();
        assert_eq!(shared.bytes(), bytes);
        w.append(&[sample("b", 4)]).unwrap();
        w.prepare().unwrap();
        w.publish();
        assert_eq!(drain(&mut r), vec![sample("b", 4)]);
        // And after a restart, from the files alone.
        drop((w, r));
        let (_w, shared) = SpoolWriter::open(dir.path(), 64 << 20, None).unwrap();
        let mut r = SpoolReader::open(dir.path(), shared).unwrap();
        assert_eq!(drain(&mut r), vec![sample("a", 1), sample("b", 4)]);
    }

    /// A crash between a spool's sync and the store's commit leaves records the store never
    /// took: opening cuts the spool back to where the store's last commit says it ends.
    #[test]
    fn open_cuts_back_to_the_stores_last_commit() {
        let dir = tempfile::tempdir().unwrap();
        let (mut w, _) = SpoolWriter::open(dir.path(), 64 << 20, None).unwrap();
        w.append(&[sample("a", 1)]).unwrap();
        w.prepare().unwrap();
        let committed = w.pending_head();
        w.publish();
        w.append(&[sample("a", 2)]).unwrap();
        w.prepare().unwrap();
        // The process dies here: the store never committed the second record.
        drop(w);
        let (_w, shared) = SpoolWriter::open(dir.path(), 64 << 20, Some(committed)).unwrap();
        let mut r = SpoolReader::open(dir.path(), shared).unwrap();
        assert_eq!(drain(&mut r), vec![sample("a", 1)]);
    }
}
