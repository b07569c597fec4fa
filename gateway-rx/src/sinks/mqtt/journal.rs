//! The MQTT publisher's journal: the durable record of the window in flight and of what the
//! publisher has published, so that after a restart (a crash, SIGKILL, a power loss) it sends
//! the broker exactly the packets it had in flight, under the same packet identifiers, and
//! goes on from where it was.
//!
//! # Layout
//!
//! One file, [`FILE`], in the sink's spool directory, a sequence of records
//!
//! ```text
//! record = length: u32 LE | crc32(payload): u32 LE | payload (postcard of an entry)
//! ```
//!
//! - `Base { resume, marks }`: the state the file starts from (written by a compaction): the
//!   spool position history resumes at, and each tag's mark (the source time of the newest
//!   value published for it in order, see `mqtt.rs`).
//! - `Window`: a window about to be sent: its messages (the packet identifier of message `i`
//!   is `i + 1`), the spool position after its samples, and the marks it moves.
//! - `Released(ids)`: QoS 2: the broker's PUBREC for these packets arrived, so it owns their
//!   messages; written before their PUBREL leaves.
//! - `Reset`: the broker had lost the session: every message of the open window is published
//!   anew.
//! - `Done`: the broker acknowledged the whole window; its marks and position apply.
//!
//! At QoS 2 each record is synced (fdatasync) before the packets it announces are sent, so
//! the file never says less than what the broker may have seen; at QoS 0 and 1 a window's
//! record is synced with its `Done`. A torn record at the end (the process died while writing
//! it) is cut off on open: the packets it announced were never sent.
//!
//! # Size
//!
//! Every `Done` that leaves the file larger than [`COMPACT_BYTES`] and four times its base
//! rewrites it as one `Base` (a temporary file, synced, renamed over it, the directory synced),
//! so the file holds about one window and one mark per tag.

use std::collections::{BTreeSet, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use protocol::model::UnixNanos;
use serde::{Deserialize, Serialize};

use crate::sinks::spool::Pos;

/// The journal's file name in the spool directory.
pub const FILE: &str = "mqtt.journal";
const HEADER: usize = 8;
/// A length field above this is corruption, not a record (a base of millions of tags fits).
const MAX_RECORD: u64 = 1 << 30;
/// The file is compacted past this (and four times its base).
pub const COMPACT_BYTES: u64 = 8 << 20;

/// One MQTT message of a window, as it goes on the wire (the same bytes when sent again).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub topic: String,
    /// JSON text or a Sparkplug B protobuf. A byte vector encodes as a string did (a length,
    /// then the bytes), so journals written when this was JSON text read back unchanged.
    pub payload: Vec<u8>,
    pub retain: bool,
}

/// A window of messages sent and acknowledged together.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    /// The QoS it is sent at (kept, so that a window outlives a change of `qos`).
    pub qos: u8,
    /// The spool position after its samples; `None` for live values.
    pub end: Option<(u64, u64, u32)>,
    /// How many of its messages are late samples.
    pub late: u32,
    /// The marks it moves, applied once it is done.
    pub marks: Vec<(String, UnixNanos)>,
    pub messages: Vec<Message>,
}

impl Window {
    pub fn end_pos(&self) -> Option<Pos> {
        self.end.map(|(segment, offset, index)| Pos {
            segment,
            offset,
            index,
        })
    }
}

pub fn pos_tuple(p: Pos) -> (u64, u64, u32) {
    (p.segment, p.offset, p.index)
}

#[derive(Deserialize)]
enum Entry {
    Base {
        resume: Option<(u64, u64, u32)>,
        marks: Vec<(String, UnixNanos)>,
    },
    Window(Window),
    Released(Vec<u16>),
    Reset,
    Done,
}

/// [`Entry`] for writing, borrowing (the same encoding).
#[derive(Serialize)]
enum EntryOut<'a> {
    Base {
        resume: Option<(u64, u64, u32)>,
        marks: Vec<(&'a str, UnixNanos)>,
    },
    Window(&'a Window),
    Released(&'a [u16]),
    Reset,
    Done,
}

/// The window the journal holds open: sent (or about to be), not yet acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Open {
    pub window: Window,
    /// QoS 2: packets whose PUBREC arrived (their PUBREL may have left).
    pub released: BTreeSet<u16>,
}

/// What the journal says, read back.
#[derive(Debug, Default)]
struct Replayed {
    resume: Option<Pos>,
    marks: HashMap<Arc<str>, UnixNanos>,
    open: Option<Open>,
}

impl Replayed {
    fn apply(&mut self, e: Entry) {
        match e {
            Entry::Base { resume, marks } => {
                self.resume = resume.map(|(segment, offset, index)| Pos {
                    segment,
                    offset,
                    index,
                });
                self.marks = marks.into_iter().map(|(t, m)| (Arc::from(t), m)).collect();
                self.open = None;
            }
            Entry::Window(w) => {
                self.open = Some(Open {
                    window: w,
                    released: BTreeSet::new(),
                });
            }
            Entry::Released(ids) => {
                if let Some(o) = &mut self.open {
                    o.released.extend(ids);
                }
            }
            Entry::Reset => {
                if let Some(o) = &mut self.open {
                    o.released.clear();
                }
            }
            Entry::Done => {
                if let Some(o) = self.open.take() {
                    self.finish(&o.window);
                }
            }
        }
    }

    fn finish(&mut self, w: &Window) {
        for (tag, mark) in &w.marks {
            match self.marks.get_mut(tag.as_str()) {
                Some(m) => *m = (*m).max(*mark),
                None => {
                    self.marks.insert(Arc::from(tag.as_str()), *mark);
                }
            }
        }
        if let Some(end) = w.end_pos() {
            self.resume = Some(self.resume.map_or(end, |r| r.max(end)));
        }
    }
}

/// Reads records from `bytes`; returns what they say and the length of the valid prefix.
fn replay(bytes: &[u8]) -> (Replayed, u64) {
    let mut state = Replayed::default();
    let mut off = 0usize;
    while bytes.len() - off >= HEADER {
        let head = &bytes[off..off + HEADER];
        let len = u64::from(u32::from_le_bytes([head[0], head[1], head[2], head[3]]));
        let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        if len > MAX_RECORD || ((bytes.len() - off - HEADER) as u64) < len {
            break;
        }
        let payload = &bytes[off + HEADER..off + HEADER + len as usize];
        if crc32fast::hash(payload) != crc {
            break;
        }
        let Ok(e) = protocol::codec::decode::<Entry>(payload) else {
            break;
        };
        state.apply(e);
        off += HEADER + len as usize;
    }
    (state, off as u64)
}

/// The journal, open for appending.
pub struct Journal {
    dir: PathBuf,
    file: File,
    len: u64,
    base_len: u64,
    state: Replayed,
    buf: Vec<u8>,
}

impl Journal {
    /// Opens (creating) the journal in `dir`, reading back what it holds; a torn record at the
    /// end is cut off.
    pub fn open(dir: &Path) -> std::io::Result<Journal> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let (state, valid) = replay(&bytes);
        if valid < bytes.len() as u64 {
            tracing::warn!(
                path = %path.display(),
                valid,
                cut = bytes.len() as u64 - valid,
                "MQTT journal: a torn record at the end cut off (its packets were never sent)"
            );
            file.set_len(valid)?;
            file.sync_all()?;
        }
        if bytes.is_empty()
            && let Ok(d) = File::open(dir)
        {
            // The new file's directory entry must survive a power loss too.
            let _ = d.sync_all();
        }
        Ok(Journal {
            dir: dir.to_path_buf(),
            file,
            len: valid,
            base_len: 0,
            state,
            buf: Vec::new(),
        })
    }

    /// The spool position history resumes at, when a window was ever done.
    pub fn resume(&self) -> Option<Pos> {
        self.state.resume
    }

    /// Each tag's mark: the source time of the newest value published for it in order.
    pub fn marks(&self) -> &HashMap<Arc<str>, UnixNanos> {
        &self.state.marks
    }

    /// The window in flight, if any.
    pub fn open_window(&self) -> Option<&Open> {
        self.state.open.as_ref()
    }

    /// Bytes the file holds.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn append(&mut self, e: &EntryOut<'_>, sync: bool) -> std::io::Result<()> {
        self.buf.clear();
        self.buf.extend_from_slice(&[0u8; HEADER]);
        protocol::codec::encode_into(e, &mut self.buf)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        let len = (self.buf.len() - HEADER) as u64;
        if len > MAX_RECORD {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "journal record too large",
            ));
        }
        let crc = crc32fast::hash(&self.buf[HEADER..]);
        self.buf[0..4].copy_from_slice(&(len as u32).to_le_bytes());
        self.buf[4..8].copy_from_slice(&crc.to_le_bytes());
        self.file.write_all(&self.buf)?;
        if sync {
            self.file.sync_data()?;
        }
        self.len += self.buf.len() as u64;
        Ok(())
    }

    /// Records a window about to be sent; at QoS 2 durably, before any of it is. (At QoS 0
    /// and 1 the next sync carries it: a window lost with a power cut is made again from the
    /// spool and sent again, which those QoS allow.)
    pub fn begin(&mut self, window: Window) -> std::io::Result<()> {
        if self.state.open.is_some() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "a window is already open",
            ));
        }
        self.append(&EntryOut::Window(&window), window.qos == 2)?;
        self.state.open = Some(Open {
            window,
            released: BTreeSet::new(),
        });
        Ok(())
    }

    /// QoS 2: records that the broker owns these packets' messages (before their PUBREL).
    pub fn released(&mut self, ids: &[u16]) -> std::io::Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        self.append(&EntryOut::Released(ids), true)?;
        if let Some(o) = &mut self.state.open {
            o.released.extend(ids.iter().copied());
        }
        Ok(())
    }

    /// Records that every message of the open window is published anew.
    pub fn reset(&mut self) -> std::io::Result<()> {
        self.append(&EntryOut::Reset, true)?;
        if let Some(o) = &mut self.state.open {
            o.released.clear();
        }
        Ok(())
    }

    /// Records that the open window is acknowledged; returns it. Its marks and position apply.
    pub fn done(&mut self) -> std::io::Result<Option<Window>> {
        if self.state.open.is_none() {
            return Ok(None);
        }
        self.append(&EntryOut::Done, true)?;
        let open = self.state.open.take();
        if let Some(o) = &open {
            self.state.finish(&o.window);
        }
        if self.len > COMPACT_BYTES.max(self.base_len.saturating_mul(4))
            && let Err(e) = self.compact()
        {
            // The record above is durable; the file just stays longer.
            tracing::warn!(dir = %self.dir.display(), error = %e, "MQTT journal: compaction failed");
        }
        Ok(open.map(|o| o.window))
    }

    /// Rewrites the file as one base record (only between windows).
    fn compact(&mut self) -> std::io::Result<()> {
        if self.state.open.is_some() {
            return Ok(());
        }
        let path = self.dir.join(FILE);
        let tmp = self.dir.join(format!("{FILE}.tmp"));
        let mut marks: Vec<(&str, UnixNanos)> =
            self.state.marks.iter().map(|(t, m)| (&**t, *m)).collect();
        marks.sort_unstable();
        let entry = EntryOut::Base {
            resume: self.state.resume.map(pos_tuple),
            marks,
        };
        let mut buf = vec![0u8; HEADER];
        protocol::codec::encode_into(&entry, &mut buf)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        let len = (buf.len() - HEADER) as u64;
        let crc = crc32fast::hash(&buf[HEADER..]);
        buf[0..4].copy_from_slice(&(len as u32).to_le_bytes());
        buf[4..8].copy_from_slice(&crc.to_le_bytes());
        {
            let mut f = File::create(&tmp)?;
            f.write_all(&buf)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &path)?;
        if let Ok(d) = File::open(&self.dir) {
            d.sync_all()?;
        }
        self.file = OpenOptions::new().read(true).append(true).open(&path)?;
        self.len = buf.len() as u64;
        self.base_len = self.len;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Journals written while payloads were JSON strings read back as bytes.
    #[test]
    fn a_text_payload_reads_back_as_bytes() {
        #[derive(Serialize)]
        struct Before {
            topic: String,
            payload: String,
            retain: bool,
        }
        let old = protocol::codec::encode(&Before {
            topic: "gw/a".into(),
            payload: "{\"v\":1}".into(),
            retain: true,
        })
        .unwrap();
        let m: Message = protocol::codec::decode(&old).unwrap();
        assert_eq!(m.payload, b"{\"v\":1}");
        assert_eq!(protocol::codec::encode(&m).unwrap(), old);
    }

    fn window(n: usize, end: u64, marks: &[(&str, i64)]) -> Window {
        Window {
            qos: 2,
            end: Some((1, end, 0)),
            late: 0,
            marks: marks.iter().map(|(t, m)| ((*t).to_owned(), *m)).collect(),
            messages: (0..n)
                .map(|i| Message {
                    topic: format!("gw/t{i}"),
                    payload: format!("{{\"v\":{i}}}").into_bytes(),
                    retain: i % 2 == 0,
                })
                .collect(),
        }
    }

    #[test]
    fn replays_the_open_window_with_its_released_packets() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut j = Journal::open(dir.path()).unwrap();
            assert!(j.open_window().is_none() && j.resume().is_none());
            j.begin(window(3, 100, &[("a", 5)])).unwrap();
            assert!(
                j.begin(window(1, 200, &[])).is_err(),
                "one window at a time"
            );
            j.done().unwrap();
            j.begin(window(4, 200, &[("a", 9), ("b", 1)])).unwrap();
            j.released(&[1, 2]).unwrap();
            j.released(&[4]).unwrap();
        }
        // The process died here: the second window is open, packets 1, 2 and 4 released.
        let j = Journal::open(dir.path()).unwrap();
        assert_eq!(j.resume().map(|p| p.offset), Some(100));
        assert_eq!(j.marks().get("a"), Some(&5));
        assert_eq!(
            j.marks().get("b"),
            None,
            "the open window's marks wait for it"
        );
        let open = j.open_window().unwrap();
        assert_eq!(open.window, window(4, 200, &[("a", 9), ("b", 1)]));
        assert_eq!(open.released.iter().copied().collect::<Vec<_>>(), [1, 2, 4]);
        drop(j);
        let mut j = Journal::open(dir.path()).unwrap();
        j.reset().unwrap();
        assert!(j.open_window().unwrap().released.is_empty());
        drop(j);
        let mut j = Journal::open(dir.path()).unwrap();
        assert!(j.open_window().unwrap().released.is_empty());
        let w = j.done().unwrap().unwrap();
        assert_eq!(w.messages.len(), 4);
        assert_eq!(j.resume().map(|p| p.offset), Some(200));
        assert_eq!((j.marks()["a"], j.marks()["b"]), (9, 1));
        drop(j);
        let j = Journal::open(dir.path()).unwrap();
        assert!(j.open_window().is_none());
        assert_eq!((j.marks()["a"], j.marks()["b"]), (9, 1));
    }

    #[test]
    fn a_torn_record_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut j = Journal::open(dir.path()).unwrap();
            j.begin(window(2, 50, &[("a", 1)])).unwrap();
            j.done().unwrap();
            j.begin(window(2, 60, &[("a", 2)])).unwrap();
        }
        let path = dir.path().join(FILE);
        let len = std::fs::metadata(&path).unwrap().len();
        // The second window's record half written: it was never sent.
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(len - 7).unwrap();
        let mut j = Journal::open(dir.path()).unwrap();
        assert!(j.open_window().is_none());
        assert_eq!(j.resume().map(|p| p.offset), Some(50));
        // Appends go on after the cut.
        j.begin(window(1, 70, &[("a", 3)])).unwrap();
        j.done().unwrap();
        drop(j);
        let j = Journal::open(dir.path()).unwrap();
        assert_eq!(j.resume().map(|p| p.offset), Some(70));
        assert_eq!(j.marks()["a"], 3);
    }

    #[test]
    fn compaction_keeps_marks_and_position() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(dir.path()).unwrap();
        let big = "x".repeat(2000);
        let rounds = 20u64;
        let mut compactions = 0;
        for round in 1..=rounds {
            let before = j.len();
            let mut w = window(500, round, &[("a", round as i64), (&big[..10], 7)]);
            for m in &mut w.messages {
                m.payload = big.clone().into_bytes();
            }
            j.begin(w).unwrap();
            j.released(&[1, 2, 3]).unwrap();
            j.done().unwrap();
            if j.len() < before {
                compactions += 1;
            }
            assert!(j.len() <= COMPACT_BYTES + (2 << 20), "{}", j.len());
        }
        assert!(
            compactions >= 1,
            "about 1 MB a window: compacted along the way"
        );
        drop(j);
        let j = Journal::open(dir.path()).unwrap();
        assert_eq!(j.resume().map(|p| p.offset), Some(rounds));
        assert_eq!(j.marks()["a"], rounds as i64);
        assert_eq!(j.marks()["xxxxxxxxxx"], 7);
        assert!(j.open_window().is_none());
    }
}
