//! The syslog spool: one `durable-log` every output reads at its own cursor.
//!
//! Each record is one message to forward, with where the stream stood after it:
//!
//! ```text
//! kind u8 (0 message, 1 marker) | session u64 LE | next_seq u64 LE | dropped u64 LE | message
//! ```
//!
//! `session`, `next_seq` and `dropped` let a restarted receiver know where the link's syslog
//! stream was (so it neither takes a record twice nor misses counting a gap). The spool is
//! bounded in bytes: undelivered messages are never trimmed, so when it is full the append is
//! refused, counted, and a marker says so once there is room. Segments every output has read
//! past are removed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use durable_log::{Format, Log, LogError};

pub const FORMAT: Format = Format {
    ext: "syslog",
    digits: 16,
    header_len: 0,
    max_record: (ENTRY_HEAD + protocol::message::MAX_SYSLOG_MESSAGE + 1024) as u32,
};

pub const ENTRY_HEAD: usize = 25;
pub const KIND_MESSAGE: u8 = 0;
pub const KIND_MARKER: u8 = 1;

/// Where the link's syslog stream stood after an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamPoint {
    pub session: u64,
    pub next_seq: u64,
    pub dropped: u64,
}

/// How far the spool is readable: the active segment and its flushed length.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Committed {
    pub id: u64,
    pub len: u64,
}

/// One entry's parts.
pub fn entry_into(out: &mut Vec<u8>, kind: u8, at: StreamPoint, message: &[u8]) {
    out.push(kind);
    out.extend_from_slice(&at.session.to_le_bytes());
    out.extend_from_slice(&at.next_seq.to_le_bytes());
    out.extend_from_slice(&at.dropped.to_le_bytes());
    out.extend_from_slice(message);
}

/// Splits an entry; `None` for one too short to be ours.
pub fn parse_entry(body: &[u8]) -> Option<(u8, StreamPoint, &[u8])> {
    if body.len() < ENTRY_HEAD {
        return None;
    }
    let u = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&body[at..at + 8]);
        u64::from_le_bytes(b)
    };
    Some((
        body[0],
        StreamPoint {
            session: u(1),
            next_seq: u(9),
            dropped: u(17),
        },
        &body[ENTRY_HEAD..],
    ))
}

pub struct SpoolWriter {
    log: Log,
    max_bytes: u64,
    segment_bytes: u64,
    buf: Vec<u8>,
    committed: tokio::sync::watch::Sender<Committed>,
}

/// Segments in the spool, oldest first.
pub fn segment_ids(dir: &Path) -> std::io::Result<Vec<u64>> {
    Ok(FORMAT.list(dir)?.0)
}

impl SpoolWriter {
    /// Opens the spool in `dir` and starts a new segment; also returns where the stream stood
    /// after the newest entry, if any.
    pub fn open(
        dir: &Path,
        max_bytes: u64,
    ) -> Result<
        (
            SpoolWriter,
            Option<StreamPoint>,
            tokio::sync::watch::Receiver<Committed>,
        ),
        LogError,
    > {
        let (mut log, _opened) = Log::open(dir, FORMAT, 256 << 10, |_, _| true)?;
        let mut last = None;
        for s in log.segments().iter().rev() {
            let mut r = durable_log::Reader::open(&log.path(s.id), FORMAT, 0)?;
            while let Some(body) = r.next_record()? {
                if let Some((_, at, _)) = parse_entry(body) {
                    last = Some(at);
                }
            }
            if last.is_some() {
                break;
            }
        }
        let next = log.segments().last().map_or(1, |s| s.id + 1);
        log.start_segment(next, &[])?;
        let (committed, rx) = tokio::sync::watch::channel(Committed { id: next, len: 0 });
        let writer = SpoolWriter {
            log,
            max_bytes,
            segment_bytes: (max_bytes / 16).clamp(64 << 10, 64 << 20),
            buf: Vec::new(),
            committed,
        };
        Ok((writer, last, rx))
    }

    /// Appends entries (each made by `entry_into`) as one unit: all or, when the spool has no
    /// room for them, none (`Ok(false)`).
    pub fn append(&mut self, entries: &[Vec<u8>], cursors: &Cursors) -> Result<bool, LogError> {
        self.buf.clear();
        for e in entries {
            durable_log::frame(&mut self.buf, FORMAT.max_record, |out| {
                out.extend_from_slice(e)
            })?;
        }
        let need = self.buf.len() as u64;
        if self.log.total_bytes() + need > self.max_bytes {
            self.remove_consumed(cursors)?;
            if self.log.total_bytes() + need > self.max_bytes {
                return Ok(false);
            }
        }
        if let Some(active) = self.log.active()
            && active.bytes > 0
            && active.bytes + need > self.segment_bytes
        {
            self.log.start_segment(active.id + 1, &[])?;
        }
        self.log.append(&self.buf)?;
        Ok(true)
    }

    /// Makes what was appended readable to the outputs.
    pub fn flush(&mut self) -> Result<(), LogError> {
        self.log.flush()?;
        if let Some(a) = self.log.active() {
            self.committed.send_if_modified(|c| {
                let new = Committed {
                    id: a.id,
                    len: a.bytes,
                };
                let changed = *c != new;
                *c = new;
                changed
            });
        }
        Ok(())
    }

    pub fn sync(&mut self) -> Result<(), LogError> {
        self.log.sync()
    }

    /// Removes the segments every output has read past.
    pub fn remove_consumed(&mut self, cursors: &Cursors) -> Result<(), LogError> {
        let Some(min) = cursors.min_segment() else {
            return Ok(());
        };
        let active = self.log.active().map(|a| a.id);
        let done: Vec<u64> = self
            .log
            .segments()
            .iter()
            .map(|s| s.id)
            .filter(|&id| id < min && Some(id) != active)
            .collect();
        for id in done {
            self.log.remove(id)?;
        }
        Ok(())
    }

    pub fn total_bytes(&self) -> u64 {
        self.log.total_bytes()
    }

    pub fn dir(&self) -> PathBuf {
        self.log.dir().to_path_buf()
    }
}

/// The segment each output reads, so the writer knows what it may remove.
#[derive(Default)]
pub struct Cursors(Mutex<HashMap<String, u64>>);

impl Cursors {
    pub fn set(&self, output: &str, segment: u64) {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        m.insert(output.to_owned(), segment);
    }

    fn min_segment(&self) -> Option<u64> {
        let m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        m.values().copied().min()
    }
}

/// An output's place in the spool: the next record it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub segment: u64,
    pub offset: u64,
}

fn cursor_path(dir: &Path, output: &str) -> PathBuf {
    dir.join(format!("{output}.cursor"))
}

/// The output's saved position; `None` when it has none (a new output) or it does not read.
pub fn load_cursor(dir: &Path, output: &str) -> Option<Position> {
    let text = std::fs::read_to_string(cursor_path(dir, output)).ok()?;
    let mut parts = text.split_whitespace();
    let segment = parts.next()?.parse().ok()?;
    let offset = parts.next()?.parse().ok()?;
    Some(Position { segment, offset })
}

/// Saves the output's position whole (a synced temporary file renamed over the old one), so a
/// crash leaves the old position or the new one.
pub fn save_cursor(dir: &Path, output: &str, at: Position) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = tempfile::NamedTempFile::new_in(dir)?;
    writeln!(f, "{} {}", at.segment, at.offset)?;
    f.as_file().sync_data()?;
    f.persist(cursor_path(dir, output)).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_the_stream_point_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let cursors = Cursors::default();
        let at = StreamPoint {
            session: 7,
            next_seq: 42,
            dropped: 3,
        };
        {
            let (mut w, last, _c) = SpoolWriter::open(dir.path(), 1 << 20).unwrap();
            assert_eq!(last, None);
            let mut e = Vec::new();
            entry_into(&mut e, KIND_MESSAGE, at, b"<13>hello");
            assert!(w.append(&[e], &cursors).unwrap());
            w.flush().unwrap();
            w.sync().unwrap();
        }
        let (_w, last, _c) = SpoolWriter::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(last, Some(at));
        let mut e = Vec::new();
        entry_into(&mut e, KIND_MARKER, at, b"<44>1 marker");
        let (kind, back, msg) = parse_entry(&e).unwrap();
        assert_eq!((kind, back, msg), (KIND_MARKER, at, &b"<44>1 marker"[..]));
        assert!(parse_entry(&e[..10]).is_none());
    }

    #[test]
    fn a_full_spool_refuses_and_consumed_segments_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let cursors = Cursors::default();
        cursors.set("a", 0);
        let (mut w, _, _c) = SpoolWriter::open(dir.path(), 1 << 20).unwrap();
        let at = StreamPoint {
            session: 1,
            next_seq: 0,
            dropped: 0,
        };
        let mut e = Vec::new();
        entry_into(&mut e, KIND_MESSAGE, at, &[b'x'; 60_000]);
        let mut taken = 0;
        while w.append(std::slice::from_ref(&e), &cursors).unwrap() {
            taken += 1;
            assert!(taken < 100, "never refused");
        }
        assert!(w.total_bytes() <= 1 << 20);
        assert!(taken >= 16, "{taken}");
        // The output read everything: the old segments go, and there is room again.
        w.flush().unwrap();
        cursors.set("a", u64::MAX);
        assert!(w.append(&[e], &cursors).unwrap());
        assert!(w.total_bytes() < 1 << 19);
    }

    #[test]
    fn cursor_files() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load_cursor(dir.path(), "o"), None);
        let p = Position {
            segment: 3,
            offset: 4096,
        };
        save_cursor(dir.path(), "o", p).unwrap();
        assert_eq!(load_cursor(dir.path(), "o"), Some(p));
    }
}
