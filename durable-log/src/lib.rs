//! One segmented, CRC-checked, append-only log on disk: the transmitter's history buffer and
//! the receiver's sink spools are both made of it.
//!
//! # Layout
//!
//! ```text
//! <dir>/<id, zero-padded decimal>.<ext>   segments, in id order
//! segment = header (fixed length, the caller's, may be empty) | record*
//! record  = body length: u32 LE | crc32 (IEEE, as crc32fast) of body: u32 LE | body
//! ```
//!
//! The extension, the width of the id, the header's length and the largest body are the
//! caller's [`Format`]: the history buffer (`.seg`, 20 digits, 64-byte header, 1 MiB bodies)
//! and the spools (`.spool`, 16 digits, no header, 16 MiB bodies) kept the layouts they had
//! before they shared this code, so their existing directories open unchanged. What a body
//! holds, and what the header says, is the caller's business.
//!
//! # Recovery: one rule
//!
//! A record is *valid* when its length is between 1 and the format's largest body, its body
//! lies wholly within the segment and its CRC matches. A zero length is never valid, so a
//! zero-filled tail (what some file systems leave after a power loss) is never read as records.
//!
//! - The *tail* of a segment is whatever follows its last valid record. A tail that is not
//!   empty (a record torn by a crash, or damage there) is where the segment ends: readers stop
//!   there and report it ([`Damage::torn_tail`]), and [`Log::open`] cuts the newest segment's
//!   tail off, so appends never follow garbage. Only the newest segment can be torn by a crash:
//!   each open starts a new one.
//! - A caller that records its own commit point (the spools: the store's transaction says
//!   where each spool ends) opens with [`Log::open_at`] instead: what lies beyond that point is
//!   cut off, and nothing below it is, whatever its state: a bad record there is committed
//!   data damaged, for the readers to skip and report, not a tail a crash tore.
//! - A bad record in the *middle* (one followed by a valid record) is skipped, never returned:
//!   when its length field is intact the next record starts right after it; otherwise the
//!   reader searches forward, byte by byte, for the next valid record that is followed by the
//!   end, a plausible length or zeros (a cheap test first, so garbage costs linear time). What it cost is reported
//!   ([`Damage::bad_records`], [`Damage::skipped_bytes`]), never silent. A caller whose records
//!   depend on earlier ones (the spools intern tag names per segment) may drop the rest of the
//!   segment on such a report; one whose records stand alone (the history buffer) reads on.
//!
//! A CRC-32 lets through one random corruption in 2^32; callers check what a body decodes to
//! as well (the history buffer also wants its sequence numbers increasing).
//!
//! # Retention: one rule
//!
//! The log is bounded in bytes: [`Log::trim`] drops whole segments, oldest first and never the
//! one being written, until the total fits, and returns each one it dropped ([`Dropped`]) so
//! the caller counts it and records the gap. Nothing else in this crate deletes a segment: a
//! caller may [`Log::remove`] one (consumed, or one its header check refused), and
//! [`Log::cut_back`] removes what lies beyond a point the caller knows was committed. A
//! caller that must not lose undelivered records (a spool) refuses appends instead of
//! trimming; the bound is the same.
//!
//! # Why a crate of its own
//!
//! Both daemons use it, and `protocol` is sans-IO: no file may be opened there. The log knows
//! nothing of samples or of the wire, so it depends on nothing of ours, and its property tests
//! (torn writes at every byte, every bit flipped, reopened at every length) run without either
//! daemon.

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Length and CRC before each record body.
pub const RECORD_HEADER: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("record of {len} bytes exceeds {max}")]
    TooLarge { len: usize, max: u32 },
}

impl LogError {
    /// The I/O error underneath, if any (callers that speak `io::Error`).
    pub fn into_io(self) -> io::Error {
        match self {
            LogError::Io { source, .. } => source,
            e @ LogError::TooLarge { .. } => io::Error::new(io::ErrorKind::InvalidData, e),
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> LogError + '_ {
    move |source| LogError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A caller's segment layout (see the crate doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Format {
    /// File extension of segments, without the dot.
    pub ext: &'static str,
    /// Digits of the zero-padded id in a segment's name.
    pub digits: usize,
    /// Bytes of the caller's header at the start of each segment.
    pub header_len: u64,
    /// The largest body; a length above it is corruption.
    pub max_record: u32,
}

impl Format {
    pub fn path(&self, dir: &Path, id: u64) -> PathBuf {
        dir.join(format!(
            "{id:0width$}.{ext}",
            width = self.digits,
            ext = self.ext
        ))
    }

    /// The segments in `dir`, by id; files with the extension whose name is not an id are
    /// returned apart, for the caller to decide on.
    pub fn list(&self, dir: &Path) -> io::Result<(Vec<u64>, Vec<PathBuf>)> {
        let mut ids = Vec::new();
        let mut strays = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.extension().is_none_or(|x| x != self.ext) {
                continue;
            }
            match path.file_stem().and_then(|s| s.to_str()).map(str::parse) {
                Some(Ok(id)) => ids.push(id),
                _ => strays.push(path),
            }
        }
        ids.sort_unstable();
        strays.sort();
        Ok((ids, strays))
    }

    fn valid_len(&self, len: u32) -> bool {
        len > 0 && len <= self.max_record
    }
}

/// Appends one record to `out`, its body written by `body` (which must only append).
/// Nothing is allocated beyond `out`'s own growth. A body over the format's largest is taken
/// back out and refused.
pub fn frame(
    out: &mut Vec<u8>,
    max_record: u32,
    body: impl FnOnce(&mut Vec<u8>),
) -> Result<usize, LogError> {
    let start = out.len();
    out.extend_from_slice(&[0u8; RECORD_HEADER]);
    body(out);
    let len = out.len() - start - RECORD_HEADER;
    if len == 0 || len > max_record as usize {
        out.truncate(start);
        return Err(LogError::TooLarge {
            len,
            max: max_record,
        });
    }
    let crc = crc32fast::hash(&out[start + RECORD_HEADER..]);
    out[start..start + 4].copy_from_slice(&(len as u32).to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    Ok(len + RECORD_HEADER)
}

/// What a reader met besides valid records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Damage {
    /// Bad records skipped in the middle of the segment.
    pub bad_records: u64,
    /// Bytes those cost.
    pub skipped_bytes: u64,
    /// The segment ends in bytes that are no valid record (a torn write, or damage there).
    pub torn_tail: bool,
    /// Bytes of that tail.
    pub tail_bytes: u64,
}

impl Damage {
    pub fn is_clean(&self) -> bool {
        *self == Damage::default()
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Reads one segment's valid records in order, up to a limit (its length, or less: the
/// spools read only what their store has committed).
pub struct Reader {
    path: PathBuf,
    file: BufReader<File>,
    fmt: Format,
    /// Offset of the next record; the file position is kept there.
    offset: u64,
    limit: u64,
    body: Vec<u8>,
    pub damage: Damage,
}

impl Reader {
    /// Opens `path` positioned at `offset` (a record boundary; `fmt.header_len` for the
    /// first), reading up to the file's current length.
    pub fn open(path: &Path, fmt: Format, offset: u64) -> Result<Reader, LogError> {
        let mut f = File::open(path).map_err(io_err(path))?;
        let limit = f.metadata().map_err(io_err(path))?.len();
        f.seek(SeekFrom::Start(offset)).map_err(io_err(path))?;
        Ok(Reader {
            path: path.to_path_buf(),
            file: BufReader::with_capacity(64 << 10, f),
            fmt,
            offset,
            limit,
            body: Vec::new(),
            damage: Damage::default(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Offset of the next record (just after the last one returned).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Reads up to `limit` from now on.
    pub fn set_limit(&mut self, limit: u64) {
        self.limit = limit;
    }

    /// Reads up to the file's length now (records appended since).
    pub fn refresh_len(&mut self) -> Result<(), LogError> {
        self.limit = self
            .file
            .get_ref()
            .metadata()
            .map_err(io_err(&self.path))?
            .len();
        Ok(())
    }

    /// The next valid record's body; `None` at the limit or at a bad tail (see the crate doc
    /// for what is skipped and reported on the way).
    pub fn next_record(&mut self) -> Result<Option<&[u8]>, LogError> {
        loop {
            let remaining = self.limit.saturating_sub(self.offset);
            if remaining == 0 {
                return Ok(None);
            }
            let start = self.offset;
            let mut bad_len = None;
            if remaining >= RECORD_HEADER as u64 {
                let mut head = [0u8; RECORD_HEADER];
                self.read_exact(&mut head)?;
                let len = u32_at(&head, 0);
                if self.fmt.valid_len(len) && (len as u64) <= remaining - RECORD_HEADER as u64 {
                    self.body.resize(len as usize, 0);
                    let mut body = std::mem::take(&mut self.body);
                    let read = self.read_exact(&mut body);
                    self.body = body;
                    read?;
                    if crc32fast::hash(&self.body) == u32_at(&head, 4) {
                        return Ok(Some(&self.body));
                    }
                    bad_len = Some(start + (RECORD_HEADER as u64) + len as u64);
                }
            }
            // A bad record: a damaged body with its length intact (the next record follows
            // it), or else search forward; nothing valid after it makes it the tail, even one
            // that ends exactly at the limit (its length reached the disk, its body did not).
            let next = match bad_len {
                Some(end) if self.valid_at(end)? => Some(end),
                _ => self.search(start + 1)?,
            };
            match next {
                Some(at) => {
                    self.damage.bad_records += 1;
                    self.damage.skipped_bytes += at - start;
                    self.seek(at)?;
                }
                None => {
                    self.damage.torn_tail = true;
                    self.damage.tail_bytes += self.limit - start;
                    self.seek(self.limit)?;
                    return Ok(None);
                }
            }
        }
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), LogError> {
        self.file.read_exact(buf).map_err(io_err(&self.path))?;
        self.offset += buf.len() as u64;
        Ok(())
    }

    fn seek(&mut self, at: u64) -> Result<(), LogError> {
        self.file
            .seek(SeekFrom::Start(at))
            .map_err(io_err(&self.path))?;
        self.offset = at;
        Ok(())
    }

    /// Whether a valid record starts at `at`. Leaves the position unspecified.
    fn valid_at(&mut self, at: u64) -> Result<bool, LogError> {
        if at + RECORD_HEADER as u64 > self.limit {
            return Ok(false);
        }
        self.seek(at)?;
        let mut head = [0u8; RECORD_HEADER];
        self.read_exact(&mut head)?;
        let len = u32_at(&head, 0);
        if !self.fmt.valid_len(len) || at + (RECORD_HEADER as u64) + len as u64 > self.limit {
            return Ok(false);
        }
        let mut body = std::mem::take(&mut self.body);
        body.resize(len as usize, 0);
        let read = self.read_exact(&mut body);
        let ok = read.is_ok() && crc32fast::hash(&body) == u32_at(&head, 4);
        self.body = body;
        read?;
        Ok(ok)
    }

    /// The first offset at or after `from` where a valid record starts.
    fn search(&mut self, from: u64) -> Result<Option<u64>, LogError> {
        // Damage is rare: read the rest once and test every offset in memory.
        self.seek(from)?;
        let mut rest = Vec::new();
        (&mut self.file)
            .take(self.limit.saturating_sub(from))
            .read_to_end(&mut rest)
            .map_err(io_err(&self.path))?;
        // In garbage about one offset in 2^32 / (bytes left) has a length that fits, and a
        // CRC over it costs that length: quadratic, minutes for a long stretch. What follows
        // a real record is the end, another record's length or a zero-filled tail, so a
        // candidate is only hashed when what follows it looks like one of these: that leaves
        // one in a few hundred (a real record followed by damage is lost to it, and reported
        // with the bytes skipped).
        let plausible_after = |end: usize| {
            end + 4 > rest.len() || {
                let next = u32_at(&rest, end);
                next == 0 || self.fmt.valid_len(next)
            }
        };
        let mut i = 0usize;
        while i + RECORD_HEADER <= rest.len() {
            let len = u32_at(&rest, i);
            let end = i + RECORD_HEADER + len as usize;
            if self.fmt.valid_len(len)
                && end <= rest.len()
                && plausible_after(end)
                && crc32fast::hash(&rest[i + RECORD_HEADER..end]) == u32_at(&rest, i + 4)
            {
                return Ok(Some(from + i as u64));
            }
            i += 1;
        }
        Ok(None)
    }
}

/// A segment the log holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub id: u64,
    /// Bytes in the file, header included.
    pub bytes: u64,
}

/// A segment the log dropped or removed, for the caller to count and record as a gap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dropped {
    pub id: u64,
    pub bytes: u64,
}

/// What opening found in the newest segment: its damage, and the tail cut off it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recovered {
    pub id: u64,
    pub damage: Damage,
    /// The segment's length after the cut.
    pub len: u64,
}

/// What [`Log::open`] found.
#[derive(Debug, Default)]
pub struct Opened {
    /// Segments whose header the caller refused, removed.
    pub refused: Vec<Dropped>,
    /// Files with the extension whose name is no id, left in place for the caller.
    pub strays: Vec<PathBuf>,
    /// The newest segment's recovery (`None` when there is no segment, or when opened at a
    /// committed head: [`Log::open_at`]).
    pub recovered: Option<Recovered>,
    /// What lay beyond the committed head and was cut off ([`Log::open_at`] only).
    pub cut: Vec<Dropped>,
}

/// The writing side of a log: the only one that appends, cuts and drops.
pub struct Log {
    dir: PathBuf,
    fmt: Format,
    segments: Vec<Segment>,
    /// Appending to the last of `segments`.
    active: Option<BufWriter<File>>,
    buffer: usize,
    /// The length a failed [`Log::truncate_active`] still has to cut the active segment to.
    cut_owed: Option<u64>,
}

impl Log {
    /// Opens (creating) the log in `dir`. `accept` sees each segment's header (`None` when
    /// the file is shorter than one) and refuses it by returning false: it is removed. Then
    /// the newest segment's bad tail is cut off (see the crate doc). Nothing is appended
    /// before [`Log::start_segment`]: appending goes to a segment this process created.
    /// `buffer` is the write buffer's size.
    pub fn open(
        dir: &Path,
        fmt: Format,
        buffer: usize,
        accept: impl FnMut(u64, Option<&[u8]>) -> bool,
    ) -> Result<(Log, Opened), LogError> {
        let (mut log, mut opened) = Log::open_segments(dir, fmt, buffer, accept)?;
        if let Some(last) = log.segments.last().copied() {
            let path = fmt.path(dir, last.id);
            let mut r = Reader::open(&path, fmt, fmt.header_len.min(last.bytes))?;
            let mut end = r.offset();
            while r.next_record()?.is_some() {
                end = r.offset();
            }
            if r.damage.torn_tail {
                let f = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(io_err(&path))?;
                f.set_len(end).map_err(io_err(&path))?;
                f.sync_all().map_err(io_err(&path))?;
                if let Some(s) = log.segments.last_mut() {
                    s.bytes = end;
                }
            }
            opened.recovered = Some(Recovered {
                id: last.id,
                damage: r.damage,
                len: end,
            });
        }
        Ok((log, opened))
    }

    /// Opens the log of a caller that knows where its last commit ended: `committed`, a
    /// (segment, length) its own store recorded. Everything beyond it is cut off
    /// ([`Log::cut_back`], returned in [`Opened::cut`]); nothing below it is, damaged or not:
    /// a bad record there is corruption of committed records, which the caller's readers
    /// meet, skip and report ([`Damage`]), never a torn tail ([`Opened::recovered`] stays
    /// `None`). Otherwise as [`Log::open`].
    pub fn open_at(
        dir: &Path,
        fmt: Format,
        buffer: usize,
        committed: (u64, u64),
        accept: impl FnMut(u64, Option<&[u8]>) -> bool,
    ) -> Result<(Log, Opened), LogError> {
        let (mut log, mut opened) = Log::open_segments(dir, fmt, buffer, accept)?;
        opened.cut = log.cut_back(committed.0, committed.1)?;
        Ok((log, opened))
    }

    fn open_segments(
        dir: &Path,
        fmt: Format,
        buffer: usize,
        mut accept: impl FnMut(u64, Option<&[u8]>) -> bool,
    ) -> Result<(Log, Opened), LogError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let (ids, strays) = fmt.list(dir).map_err(io_err(dir))?;
        let mut opened = Opened {
            strays,
            ..Opened::default()
        };
        let mut segments = Vec::new();
        let mut header = vec![0u8; fmt.header_len as usize];
        for id in ids {
            let path = fmt.path(dir, id);
            let (bytes, head) = match File::open(&path).and_then(|mut f| {
                let len = f.metadata()?.len();
                let head = match f.read_exact(&mut header) {
                    Ok(()) => Some(&header[..]),
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => None,
                    Err(e) => return Err(e),
                };
                Ok((len, head.is_some()))
            }) {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err(&path)(e)),
            };
            if accept(id, head.then_some(&header[..])) {
                segments.push(Segment { id, bytes });
            } else {
                remove_file(&path)?;
                opened.refused.push(Dropped { id, bytes });
            }
        }
        if !opened.refused.is_empty() {
            sync_dir(dir);
        }
        let log = Log {
            dir: dir.to_path_buf(),
            fmt,
            segments,
            active: None,
            buffer,
            cut_owed: None,
        };
        Ok((log, opened))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn format(&self) -> Format {
        self.fmt
    }

    pub fn path(&self, id: u64) -> PathBuf {
        self.fmt.path(&self.dir, id)
    }

    /// The segments held, oldest first; the last is the one written once started.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    pub fn total_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.bytes).sum()
    }

    /// The segment being appended to and its length (unflushed bytes included).
    pub fn active(&self) -> Option<Segment> {
        self.active.as_ref().and(self.segments.last().copied())
    }

    /// Ends the current segment (synced) and starts segment `id`, above every id held, with
    /// the caller's `header` (of the format's length).
    pub fn start_segment(&mut self, id: u64, header: &[u8]) -> Result<(), LogError> {
        debug_assert_eq!(header.len() as u64, self.fmt.header_len);
        self.sync()?;
        self.active = None;
        // A reader may have removed segments it consumed (the spools): forget them.
        let (dir, fmt) = (&self.dir, self.fmt);
        self.segments.retain(|s| fmt.path(dir, s.id).exists());
        let path = self.path(id);
        let f = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        // The new file's directory entry must survive a power loss too.
        sync_dir(&self.dir);
        let mut w = BufWriter::with_capacity(self.buffer, f);
        w.write_all(header).map_err(io_err(&path))?;
        self.segments.push(Segment {
            id,
            bytes: header.len() as u64,
        });
        self.active = Some(w);
        Ok(())
    }

    /// Appends framed records ([`frame`]) to the active segment (buffered).
    pub fn append(&mut self, records: &[u8]) -> Result<(), LogError> {
        self.make_owed_cut()?;
        let (Some(w), Some(s)) = (self.active.as_mut(), self.segments.last_mut()) else {
            return Err(LogError::Io {
                path: self.dir.clone(),
                source: io::Error::other("no segment started"),
            });
        };
        w.write_all(records)
            .map_err(io_err(&self.fmt.path(&self.dir, s.id)))?;
        s.bytes += records.len() as u64;
        Ok(())
    }

    /// Hands buffered records to the kernel, so readers see them.
    pub fn flush(&mut self) -> Result<(), LogError> {
        self.make_owed_cut()?;
        if let (Some(w), Some(s)) = (self.active.as_mut(), self.segments.last()) {
            w.flush().map_err(io_err(&self.fmt.path(&self.dir, s.id)))?;
        }
        Ok(())
    }

    /// Flushes and asks the kernel to put the records on disk.
    pub fn sync(&mut self) -> Result<(), LogError> {
        self.flush()?;
        if let (Some(w), Some(s)) = (self.active.as_ref(), self.segments.last()) {
            w.get_ref()
                .sync_data()
                .map_err(io_err(&self.fmt.path(&self.dir, s.id)))?;
        }
        Ok(())
    }

    /// Cuts the active segment back to `len` bytes, buffered bytes included (a transaction
    /// the caller rolled back). On an error the segment keeps its records beyond `len`, which
    /// may be synced and valid: were it given up for a new one, readers would read it to its
    /// end and return them. So it stays the active segment and the cut is owed: every later
    /// write to the log ([`Log::append`], [`Log::flush`], [`Log::sync`],
    /// [`Log::start_segment`]) makes it first and fails while it cannot.
    pub fn truncate_active(&mut self, len: u64) -> Result<(), LogError> {
        let Some(s) = self.segments.last_mut() else {
            return Ok(());
        };
        let Some(w) = self.active.take() else {
            return Ok(());
        };
        // Whatever the buffer still holds is not to be written.
        let file = w.into_parts().0;
        self.active = Some(BufWriter::with_capacity(self.buffer, file));
        s.bytes = len;
        self.cut_owed = Some(len);
        self.make_owed_cut()
    }

    fn make_owed_cut(&mut self) -> Result<(), LogError> {
        if let (Some(len), Some(w), Some(s)) =
            (self.cut_owed, self.active.as_ref(), self.segments.last())
        {
            set_len(w.get_ref(), len).map_err(io_err(&self.fmt.path(&self.dir, s.id)))?;
            self.cut_owed = None;
        }
        Ok(())
    }

    /// Removes everything beyond `len` bytes of segment `id`: later segments, and the rest
    /// of that one (what a crash left after the caller's last commit). Returns what went.
    pub fn cut_back(&mut self, id: u64, len: u64) -> Result<Vec<Dropped>, LogError> {
        let mut out = Vec::new();
        while let Some(s) = self.segments.last().copied() {
            if s.id <= id {
                break;
            }
            self.remove(s.id)?;
            out.push(Dropped {
                id: s.id,
                bytes: s.bytes,
            });
        }
        if let Some(s) = self.segments.last_mut()
            && s.id == id
            && s.bytes > len
        {
            let path = self.fmt.path(&self.dir, id);
            let f = OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(io_err(&path))?;
            f.set_len(len).map_err(io_err(&path))?;
            f.sync_all().map_err(io_err(&path))?;
            out.push(Dropped {
                id,
                bytes: s.bytes - len,
            });
            s.bytes = len;
        }
        if !out.is_empty() {
            sync_dir(&self.dir);
        }
        Ok(out)
    }

    /// The retention rule: drops the oldest segments, never the active one, while the log
    /// holds more than `max_bytes`. Returns what it dropped, oldest first.
    pub fn trim(&mut self, max_bytes: u64) -> Vec<Dropped> {
        let mut out = Vec::new();
        while self.total_bytes() > max_bytes {
            match self.drop_oldest() {
                Some(d) => out.push(d),
                None => break,
            }
        }
        out
    }

    /// Drops the oldest segment unless it is the active one (a caller's own limit, like an
    /// age). A file already gone counts as dropped.
    pub fn drop_oldest(&mut self) -> Option<Dropped> {
        if self.segments.len() <= usize::from(self.active.is_some()) {
            return None;
        }
        let s = self.segments.remove(0);
        // Whether or not the file could be removed, the log no longer holds it: a caller
        // that cannot delete keeps its bound by what it reads, not by what is on disk.
        let _ = remove_file(&self.fmt.path(&self.dir, s.id));
        sync_dir(&self.dir);
        Some(Dropped {
            id: s.id,
            bytes: s.bytes,
        })
    }

    /// Removes segment `id` (not the active one).
    pub fn remove(&mut self, id: u64) -> Result<(), LogError> {
        if self.active().is_some_and(|a| a.id == id) {
            self.active = None;
            self.cut_owed = None;
        }
        self.segments.retain(|s| s.id != id);
        remove_file(&self.fmt.path(&self.dir, id))?;
        sync_dir(&self.dir);
        Ok(())
    }
}

/// `File::set_len`, which a test can make fail: a cut that fails is what leaves records a
/// caller rolled back on disk, and no file system makes that happen on demand.
fn set_len(file: &File, len: u64) -> io::Result<()> {
    #[cfg(test)]
    if FAIL_SET_LEN.with(|n| n.replace(n.get().saturating_sub(1))) > 0 {
        return Err(io::Error::other("injected set_len failure"));
    }
    file.set_len(len)
}

#[cfg(test)]
thread_local! {
    /// How many of this thread's next `set_len` calls fail.
    static FAIL_SET_LEN: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Makes the directory's entries (files created, removed) durable. A failure loses no record
/// now; after a power loss a removed segment may come back (read again) or a new one be
/// missing its entry: worth an operator's notice, not worth failing the caller.
fn sync_dir(dir: &Path) {
    if let Err(error) = File::open(dir).and_then(|d| d.sync_all()) {
        tracing::warn!(dir = %dir.display(), %error, "durable-log: cannot sync the directory");
    }
}

fn remove_file(path: &Path) -> Result<(), LogError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err(path)(e)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests;
