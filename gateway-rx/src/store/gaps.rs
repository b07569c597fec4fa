//! History sequence tracking per transmitter log, gap records and the gap audit log.
//!
//! For each log the receiver keeps the set of sequence numbers received (persisted), the
//! highest `head_seq` any batch announced, and the transmitter's `oldest_seq`. A number below
//! an announced head that has not arrived when the announcing batch is applied is missing: the
//! history stream is delivered in order, and a batch announces only numbers sent before it or
//! in it, so the number was lost (on the link, or in this receiver's queue). Each maximal run of
//! missing numbers is recorded once as a gap (`opened`, in the `gaps` table and the audit log);
//! when re-sends (the carousel, a backfill) fill all of it, it is `healed`; when the
//! transmitter's buffer no longer holds it (`oldest_seq` passed its end), it is `expired` and
//! can never heal.
//!
//! A receiver meeting a log for the first time counts from the head the first batch announces;
//! older history that arrives later (the carousel's window) is stored but was never missing. Bounds: at most
//! [`MAX_RANGES`] received ranges per log (beyond, the oldest is forgotten and open gaps below it
//! are closed as `abandoned`) and [`MAX_OPEN_GAPS`] open gaps per log (the oldest abandoned).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use config::timefmt::format_rfc3339;
use protocol::model::UnixNanos;
use rusqlite::Connection;
use tracing::{info, warn};

use super::db::{self, GapRow, LogRow};
use super::ranges::{Range, RangeSet};

pub const MAX_RANGES: usize = 100_000;
pub const MAX_OPEN_GAPS: usize = 10_000;
/// Tag names kept per gap (the first ones seen filling it).
pub const MAX_GAP_TAGS: usize = 32;
/// The audit log is rotated (one old file kept, `.1`) beyond this size.
pub const AUDIT_MAX_BYTES: u64 = 64 << 20;

/// Gap events as counted for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GapCounts {
    pub opened: u64,
    pub healed: u64,
    pub expired: u64,
    pub abandoned: u64,
}

/// The JSON-lines audit log of gaps. Events are recorded inside the store's transaction and
/// written when it commits ([`flush`](Self::flush)): a transaction that rolls back
/// ([`discard`](Self::discard)) leaves no line for a gap the database does not hold.
pub struct AuditLog {
    path: PathBuf,
    file: Option<File>,
    failed: bool,
    /// Lines recorded and not yet written.
    recorded: Vec<String>,
    /// When a gap was last logged, and how many were not logged since.
    last_warn: Option<std::time::Instant>,
    unlogged: u64,
}

impl AuditLog {
    pub fn new(path: PathBuf) -> AuditLog {
        AuditLog {
            path,
            file: None,
            failed: false,
            recorded: Vec::new(),
            last_warn: None,
            unlogged: 0,
        }
    }

    /// Whether a gap may be logged now (at most one line every 10 s); `Some(n)`: `n` were not
    /// logged since the last one.
    pub fn warn_due(&mut self) -> Option<u64> {
        let now = std::time::Instant::now();
        if self
            .last_warn
            .is_some_and(|t| now.duration_since(t) < std::time::Duration::from_secs(10))
        {
            self.unlogged += 1;
            return None;
        }
        self.last_warn = Some(now);
        Some(std::mem::take(&mut self.unlogged))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records one event line for `gap`, written by the next [`flush`](Self::flush).
    pub fn record(&mut self, event: &str, gap: &GapRow, missing: u64) {
        let line = serde_json::json!({
            "at": format_rfc3339(crate::unix_now()),
            "event": event,
            "stream": "history",
            "gap_id": gap.id,
            "log": format!("{:016x}", gap.log),
            "first_seq": gap.start_seq,
            "last_seq": gap.end_seq.saturating_sub(1),
            "count": gap.end_seq - gap.start_seq,
            "missing": missing,
            "from": gap.from_ts.map(format_rfc3339),
            "to": gap.to_ts.map(format_rfc3339),
            "reason": gap.reason,
            "tags": gap.tags,
        });
        self.recorded.push(line.to_string());
    }

    /// Writes the lines recorded (their transaction committed).
    pub fn flush(&mut self) {
        for line in std::mem::take(&mut self.recorded) {
            if let Err(e) = self.append(&line) {
                if !self.failed {
                    warn!(path = %self.path.display(), error = %e, "cannot write the gap audit log; gaps stay in the store");
                }
                self.failed = true;
                self.file = None;
            } else {
                self.failed = false;
            }
        }
    }

    /// Forgets the lines recorded (their transaction rolled back).
    pub fn discard(&mut self) {
        self.recorded.clear();
    }

    fn append(&mut self, line: &str) -> std::io::Result<()> {
        if self.file.is_none() {
            if let Some(dir) = self.path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            self.file = Some(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.path)?,
            );
        }
        let Some(f) = self.file.as_mut() else {
            return Ok(());
        };
        writeln!(f, "{line}")?;
        if f.metadata()?.len() > AUDIT_MAX_BYTES {
            self.file = None;
            let mut old = self.path.clone().into_os_string();
            old.push(".1");
            std::fs::rename(&self.path, old)?;
        }
        Ok(())
    }
}

struct OpenGap {
    row: GapRow,
    tags: BTreeSet<String>,
}

/// One transmitter log as this receiver tracks it.
pub struct LogTrack {
    pub log: u64,
    row: LogRow,
    ranges: RangeSet,
    open: BTreeMap<u64, OpenGap>,
    dirty: bool,
}

impl LogTrack {
    /// Loads the log's state, or starts tracking it at `first` (the first batch's head).
    pub fn load_or_new(conn: &Connection, log: u64, first: u64) -> db::Result<LogTrack> {
        let (row, ranges) = match db::load_log(conn, log)? {
            Some((row, ranges)) => (row, ranges),
            None => {
                info!(
                    log = format_args!("{log:016x}"),
                    first_seq = first,
                    "new transmitter history log"
                );
                (
                    LogRow {
                        baseline: first,
                        expected_end: first,
                        oldest: 0,
                        checked_until: first,
                    },
                    Vec::new(),
                )
            }
        };
        let open = db::open_gaps_of(conn, log)?
            .into_iter()
            .map(|g| {
                let tags = g.tags.iter().cloned().collect();
                (g.start_seq, OpenGap { row: g, tags })
            })
            .collect();
        Ok(LogTrack {
            log,
            row,
            ranges: RangeSet::from_ranges(ranges),
            open,
            dirty: true,
        })
    }

    pub fn open_gaps(&self) -> usize {
        self.open.len()
    }

    /// Notes a batch: `[first, first + n)` received (`names[i]` the tag of sample i, when
    /// known), `head` announced, `oldest` still held by the transmitter. Heals the gaps it
    /// completes and records the numbers below `head` still missing as new gaps; `overflow`
    /// holds ranges this receiver's own queue dropped, for the reason.
    #[allow(clippy::too_many_arguments)]
    pub fn on_batch(
        &mut self,
        conn: &Connection,
        audit: &mut AuditLog,
        counts: &mut GapCounts,
        first: u64,
        times: &[UnixNanos],
        names: &[&str],
        head: u64,
        oldest: u64,
        overflow: &[(u64, u64)],
    ) -> db::Result<()> {
        let n = times.len() as u64;
        let end = first.saturating_add(n);
        if oldest > self.row.oldest {
            self.row.oldest = oldest;
            self.dirty = true;
        }
        // A live batch announces its own end as the head; one that announces more re-sends
        // older numbers (the carousel, a backfill). Its numbers were sent live before and did
        // not arrive then, so they are missing like the rest below the head until it fills
        // them: recorded first, or an outage healed by the re-sends that arrive first (after
        // a receiver restart, or a link cut) would be recorded short by what they brought.
        if end < head && head > self.row.checked_until {
            if head > self.row.expected_end {
                self.row.expected_end = head;
            }
            self.record_holes(conn, audit, counts, head, overflow)?;
        }
        if let (Some(&t_first), Some(&t_last)) = (times.first(), times.last())
            && !self.ranges.covers(first, end)
        {
            self.receive(conn, audit, counts, first, end, t_first, t_last, names)?;
        }
        let expected = head.max(end);
        if expected > self.row.expected_end {
            self.row.expected_end = expected;
            self.dirty = true;
        }
        if self.row.expected_end > self.row.checked_until {
            let upto = self.row.expected_end;
            self.record_holes(conn, audit, counts, upto, overflow)?;
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn receive(
        &mut self,
        conn: &Connection,
        audit: &mut AuditLog,
        counts: &mut GapCounts,
        first: u64,
        end: u64,
        t_first: UnixNanos,
        t_last: UnixNanos,
        names: &[&str],
    ) -> db::Result<()> {
        let change = self.ranges.insert(Range {
            start: first,
            end,
            t_first,
            t_last,
        });
        db::save_range_change(conn, self.log, &change.removed, &change.merged)?;
        // Open gaps this batch touches: learn their tags; heal the ones now complete.
        let touched: Vec<u64> = self
            .open
            .range(..end)
            .filter(|(_, g)| g.row.end_seq > first)
            .map(|(s, _)| *s)
            .collect();
        for s in touched {
            let Some(g) = self.open.get_mut(&s) else {
                continue;
            };
            let a = g.row.start_seq.max(first);
            let b = g.row.end_seq.min(end);
            for i in a..b {
                if g.tags.len() >= MAX_GAP_TAGS {
                    break;
                }
                if let Some(name) = names.get((i - first) as usize) {
                    g.tags.insert((*name).to_owned());
                }
            }
            if self.ranges.covers(g.row.start_seq, g.row.end_seq)
                && let Some(mut g) = self.open.remove(&s)
            {
                g.row.tags = g.tags.into_iter().collect();
                g.row.state = "healed".into();
                g.row.closed_at = Some(crate::unix_now());
                db::close_gap(conn, &g.row)?;
                audit.record("healed", &g.row, 0);
                counts.healed += 1;
                info!(
                    gap = g.row.id,
                    first_seq = g.row.start_seq,
                    count = g.row.end_seq - g.row.start_seq,
                    "history gap healed"
                );
            }
        }
        Ok(())
    }

    /// Records the holes in `[checked_until, upto)` as open gaps.
    fn record_holes(
        &mut self,
        conn: &Connection,
        audit: &mut AuditLog,
        counts: &mut GapCounts,
        upto: u64,
        overflow: &[(u64, u64)],
    ) -> db::Result<()> {
        let from = self.row.checked_until.max(self.row.baseline);
        for (start, end, before, after) in self.ranges.holes(from, upto) {
            let reason = if overflow.iter().any(|(a, b)| *a < end && *b > start) {
                "receiver_queue_full"
            } else {
                "not_received"
            };
            let mut row = GapRow {
                id: 0,
                log: self.log,
                start_seq: start,
                end_seq: end,
                from_ts: before,
                to_ts: after,
                reason: reason.into(),
                state: "open".into(),
                opened_at: crate::unix_now(),
                closed_at: None,
                tags: Vec::new(),
            };
            row.id = db::insert_gap(conn, &row)?;
            audit.record("opened", &row, end - start);
            counts.opened += 1;
            // Rate-limited: a store that cannot commit (a full disk) records the same gap again
            // in every attempt; the audit log and the table keep every one that commits.
            if let Some(suppressed) = audit.warn_due() {
                warn!(
                    gap = row.id,
                    log = format_args!("{:016x}", self.log),
                    first_seq = start,
                    count = end - start,
                    reason,
                    suppressed,
                    "history gap: samples missing; the carousel or a backfill can heal it"
                );
            }
            self.open.insert(
                start,
                OpenGap {
                    row,
                    tags: BTreeSet::new(),
                },
            );
        }
        self.row.checked_until = self.row.checked_until.max(upto);
        self.dirty = true;
        Ok(())
    }

    /// Expires the gaps the transmitter no longer holds, keeps the bounds, and saves the log's
    /// row.
    pub fn check(
        &mut self,
        conn: &Connection,
        audit: &mut AuditLog,
        counts: &mut GapCounts,
    ) -> db::Result<()> {
        // Expired: the transmitter's buffer starts after the gap's end.
        let expired: Vec<u64> = self
            .open
            .iter()
            .filter(|(_, g)| g.row.end_seq <= self.row.oldest)
            .map(|(s, _)| *s)
            .collect();
        for s in expired {
            self.close(conn, audit, s, "expired")?;
            counts.expired += 1;
        }
        while self.open.len() > MAX_OPEN_GAPS {
            let Some(&s) = self.open.keys().next() else {
                break;
            };
            self.close(conn, audit, s, "abandoned")?;
            counts.abandoned += 1;
        }
        while self.ranges.len() > MAX_RANGES {
            let Some(r) = self.ranges.pop_first() else {
                break;
            };
            db::delete_range(conn, self.log, r.start)?;
            let new_base = self.ranges.first().map_or(r.end, |n| n.start);
            self.row.baseline = self.row.baseline.max(new_base);
            let below: Vec<u64> = self.open.range(..new_base).map(|(s, _)| *s).collect();
            for s in below {
                self.close(conn, audit, s, "abandoned")?;
                counts.abandoned += 1;
            }
            self.dirty = true;
        }
        self.save(conn)
    }

    /// Saves the log's row if it changed. The writer calls it in every transaction, not only
    /// at [`check`](Self::check): a gap recorded without `checked_until` moving past it in the
    /// database was recorded again after a restart or a rollback reloaded the row, as a second
    /// gap over the same numbers that took the first one's place in `open`, leaving the first
    /// open for ever.
    pub fn save(&mut self, conn: &Connection) -> db::Result<()> {
        if self.dirty {
            db::save_log(conn, self.log, &self.row)?;
            self.dirty = false;
        }
        Ok(())
    }

    fn close(
        &mut self,
        conn: &Connection,
        audit: &mut AuditLog,
        start: u64,
        state: &str,
    ) -> db::Result<()> {
        let Some(mut g) = self.open.remove(&start) else {
            return Ok(());
        };
        let missing = (g.row.end_seq - g.row.start_seq)
            - self.ranges.count_within(g.row.start_seq, g.row.end_seq);
        g.row.tags = g.tags.into_iter().collect();
        g.row.state = state.into();
        g.row.closed_at = Some(crate::unix_now());
        db::close_gap(conn, &g.row)?;
        audit.record(state, &g.row, missing);
        warn!(
            gap = g.row.id,
            first_seq = g.row.start_seq,
            missing,
            state,
            "history gap closed unhealed"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: u64 = 7;

    /// Notes numbers `[first, first + n)`, one sample a number, announcing `head`.
    fn batch(
        t: &mut LogTrack,
        conn: &Connection,
        audit: &mut AuditLog,
        first: u64,
        n: u64,
        head: u64,
    ) {
        let times: Vec<UnixNanos> = (first..first + n).map(|i| i as i64 * 250_000_000).collect();
        let names = vec!["plant/tag"; times.len()];
        let mut counts = GapCounts::default();
        t.on_batch(
            conn,
            audit,
            &mut counts,
            first,
            &times,
            &names,
            head,
            0,
            &[],
        )
        .expect("on_batch");
        t.check(conn, audit, &mut counts).expect("check");
        audit.flush();
    }

    fn audit_events(path: &Path) -> Vec<(String, u64, u64, u64)> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("json line");
                (
                    v["event"].as_str().unwrap_or_default().to_owned(),
                    v["first_seq"].as_u64().unwrap_or_default(),
                    v["count"].as_u64().unwrap_or_default(),
                    v["missing"].as_u64().unwrap_or_default(),
                )
            })
            .collect()
    }

    /// The receiver stored numbers up to 100, was down while 100..180 went out live (4 samples
    /// a second for 20 s), and restarted: the carousel's re-sends of the outage arrived before
    /// the live stream's next batch. The whole outage is one gap of 80, healed; it used to be
    /// recorded as 17 (what the first re-send had not already brought).
    #[test]
    fn a_receiver_outage_healed_by_the_carousel_is_recorded_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db_path = dir.path().join("h.sqlite");
        let log_path = dir.path().join("gaps.jsonl");
        let mut audit = AuditLog::new(log_path.clone());
        {
            let conn = db::open_rw(&db_path).expect("db");
            let mut t = LogTrack::load_or_new(&conn, LOG, 0).expect("track");
            for i in 0..100 {
                batch(&mut t, &conn, &mut audit, i, 1, i + 1);
            }
        }
        // The restarted receiver.
        let conn = db::open_rw(&db_path).expect("db");
        let mut t = LogTrack::load_or_new(&conn, LOG, 180).expect("track");
        batch(&mut t, &conn, &mut audit, 100, 63, 180);
        batch(&mut t, &conn, &mut audit, 180, 1, 181);
        batch(&mut t, &conn, &mut audit, 163, 17, 181);
        assert_eq!(
            audit_events(&log_path),
            vec![
                ("opened".to_owned(), 100, 80, 80),
                ("healed".to_owned(), 100, 80, 0),
            ]
        );
        let gaps = db::list_gaps(&conn, false, 10).expect("gaps");
        assert_eq!(gaps.len(), 1);
        assert_eq!((gaps[0].start_seq, gaps[0].end_seq), (100, 180));
        assert_eq!(gaps[0].state, "healed");
    }

    /// Re-sends of numbers already received open nothing, and live batches in order neither.
    #[test]
    fn resends_of_what_arrived_are_no_gap() {
        let dir = tempfile::tempdir().expect("tempdir");
        let conn = db::open_rw(&dir.path().join("h.sqlite")).expect("db");
        let log_path = dir.path().join("gaps.jsonl");
        let mut audit = AuditLog::new(log_path.clone());
        let mut t = LogTrack::load_or_new(&conn, LOG, 0).expect("track");
        for i in 0..50 {
            batch(&mut t, &conn, &mut audit, i, 1, i + 1);
        }
        batch(&mut t, &conn, &mut audit, 10, 30, 50);
        batch(&mut t, &conn, &mut audit, 50, 5, 55);
        assert!(audit_events(&log_path).is_empty());
        // A live batch after a loss opens the gap before it.
        batch(&mut t, &conn, &mut audit, 60, 2, 62);
        assert_eq!(
            audit_events(&log_path),
            vec![("opened".to_owned(), 55, 5, 5)]
        );
    }
}
