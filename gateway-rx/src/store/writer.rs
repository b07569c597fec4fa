//! The store's writer thread: the only code that writes the database.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use config::rx::Store as StoreConfig;
use protocol::message::HistoryBatch;
use protocol::model::{UnixNanos, ValueType};
use rusqlite::Connection;
use tracing::{info, warn};

use super::gaps::{AuditLog, GapCounts, LogTrack};
use super::{PENDING_SAMPLES, Shared, db};
use crate::state::State;

/// Batches (and samples) taken into one transaction, at most.
const GROUP_BATCHES: usize = 512;
const GROUP_SAMPLES: usize = 50_000;
const RECV_WAIT: Duration = Duration::from_millis(200);
const REOPEN_EVERY: Duration = Duration::from_secs(5);
const CHECK_EVERY: Duration = Duration::from_millis(250);
const RETENTION_EVERY: Duration = Duration::from_secs(60);
/// Transmitter logs tracked in memory at once (a new log, e.g. a replaced transmitter buffer,
/// evicts the least recently seen; its state stays in the database).
const MAX_TRACKED_LOGS: usize = 8;

/// A catalogue's tags as the store maps them: name, and the tag id per value type seen.
struct CatalogueMap {
    names: Vec<String>,
    ids: Vec<Option<(ValueType, i64)>>,
    /// Whether the database holds `names` (false again after a rollback: saved anew when next
    /// used).
    saved: bool,
}

/// What the transaction in progress changed that is published only once it commits.
#[derive(Default)]
struct Uncommitted {
    /// The gap counts before it began, restored if it rolls back.
    counts: GapCounts,
    /// Samples it took (not held for an unknown catalogue): not stored if it rolls back.
    samples: u64,
    inserted: u64,
    duplicate: u64,
}

pub(super) struct Writer {
    cfg: StoreConfig,
    state: Arc<State>,
    rx: Receiver<HistoryBatch>,
    shared: Arc<Shared>,
    conn: Option<Connection>,
    next_open: Instant,
    catalogues: HashMap<u64, CatalogueMap>,
    tracks: HashMap<u64, (LogTrack, Instant)>,
    pending: VecDeque<HistoryBatch>,
    pending_samples: usize,
    audit: AuditLog,
    counts: GapCounts,
    next_check: Instant,
    next_retention: Instant,
    disabled_logged: bool,
    /// The sinks' spools (`crate::sinks`), and the samples new to the store in the current
    /// transaction, for them.
    sinks: Option<crate::sinks::SinkFeed>,
    fresh: Vec<crate::sinks::FreshSample>,
    tx: Uncommitted,
}

impl Writer {
    pub(super) fn new(
        cfg: StoreConfig,
        state: Arc<State>,
        rx: Receiver<HistoryBatch>,
        shared: Arc<Shared>,
    ) -> Writer {
        let now = Instant::now();
        Writer {
            audit: AuditLog::new(cfg.gap_log.clone()),
            cfg,
            state,
            rx,
            shared,
            conn: None,
            next_open: now,
            catalogues: HashMap::new(),
            tracks: HashMap::new(),
            pending: VecDeque::new(),
            pending_samples: 0,
            counts: GapCounts::default(),
            next_check: now,
            next_retention: now + RETENTION_EVERY,
            disabled_logged: false,
            sinks: None,
            fresh: Vec::new(),
            tx: Uncommitted::default(),
        }
    }

    pub(super) fn set_sinks(&mut self, feed: Option<crate::sinks::SinkFeed>) {
        self.sinks = feed;
    }

    pub(super) fn run(&mut self) {
        loop {
            let stop = self.shared.stop.load(Ordering::Relaxed);
            let mut group = Vec::new();
            let mut samples = 0usize;
            match self
                .rx
                .recv_timeout(if stop { Duration::ZERO } else { RECV_WAIT })
            {
                Ok(b) => {
                    self.shared.dequeued(&b);
                    samples += b.samples.len();
                    group.push(b);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    self.step(Vec::new());
                    self.finish();
                    return;
                }
            }
            while group.len() < GROUP_BATCHES && samples < GROUP_SAMPLES {
                match self.rx.try_recv() {
                    Ok(b) => {
                        self.shared.dequeued(&b);
                        samples += b.samples.len();
                        group.push(b);
                    }
                    Err(_) => break,
                }
            }
            let drained = group.is_empty();
            self.step(group);
            if stop && drained {
                self.finish();
                return;
            }
        }
    }

    fn step(&mut self, group: Vec<HistoryBatch>) {
        if !self.cfg.enabled {
            let n: usize = group.iter().map(|b| b.samples.len()).sum();
            self.shared
                .stats
                .not_stored
                .fetch_add(n as u64, Ordering::Relaxed);
            if n > 0 && !self.disabled_logged {
                info!(
                    "history received but the store is disabled ([store] enabled = false); discarded"
                );
                self.disabled_logged = true;
            }
            return;
        }
        if self.conn.is_none() && (group.is_empty() || Instant::now() < self.next_open) {
            let n: usize = group.iter().map(|b| b.samples.len()).sum();
            self.shared
                .stats
                .not_stored
                .fetch_add(n as u64, Ordering::Relaxed);
            return;
        }
        if self.conn.is_none() {
            self.open();
        }
        let Some(mut conn) = self.conn.take() else {
            let n: usize = group.iter().map(|b| b.samples.len()).sum();
            self.shared
                .stats
                .not_stored
                .fetch_add(n as u64, Ordering::Relaxed);
            return;
        };
        let now = Instant::now();
        let result = self.write(&mut conn, group, now);
        if let Err(e) = result {
            let before = self
                .shared
                .stats
                .write_errors
                .fetch_add(1, Ordering::Relaxed);
            if before.is_power_of_two() || before == 0 {
                warn!(error = %e, "history store write failed; the batches stay missing and the carousel will re-send them");
            }
            self.roll_back();
        }
        if now >= self.next_retention {
            self.retention(&conn);
            self.next_retention = now + RETENTION_EVERY;
        }
        self.conn = Some(conn);
        self.publish();
    }

    fn open(&mut self) {
        let path = self.cfg.path.clone();
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
            && let Err(e) = std::fs::create_dir_all(dir)
        {
            warn!(path = %path.display(), error = %e, "cannot create the history store's directory");
            self.next_open = Instant::now() + REOPEN_EVERY;
            return;
        }
        match db::open_rw(&path) {
            Ok(c) => {
                info!(path = %path.display(), gap_log = %self.audit.path().display(), "history store opened");
                self.conn = Some(c);
            }
            Err(e) => {
                warn!(path = %path.display(), error = %e, "cannot open the history store; retrying");
                self.next_open = Instant::now() + REOPEN_EVERY;
            }
        }
    }

    fn write(
        &mut self,
        conn: &mut Connection,
        group: Vec<HistoryBatch>,
        now: Instant,
    ) -> rusqlite::Result<()> {
        self.fresh.clear();
        self.tx = Uncommitted {
            counts: self.counts,
            samples: group.iter().map(|b| b.samples.len() as u64).sum(),
            ..Uncommitted::default()
        };
        let tx = conn.transaction()?;
        // Batches waiting for their catalogue go first, in arrival order.
        let mut todo: Vec<HistoryBatch> = Vec::new();
        if !self.pending.is_empty() && self.state.catalogue_hash().is_some() {
            todo.extend(self.pending.drain(..));
            self.tx.samples += self.pending_samples as u64;
            self.pending_samples = 0;
        }
        todo.extend(group);
        let history_arrived = !todo.is_empty();
        let overflow: Vec<(u64, u64, u64)> = self
            .shared
            .overflow
            .lock()
            .map(|o| o.clone())
            .unwrap_or_default();
        for batch in todo {
            if !self.ensure_catalogue(&tx, batch.catalogue)? {
                self.tx.samples = self.tx.samples.saturating_sub(batch.samples.len() as u64);
                self.hold(batch);
                continue;
            }
            let ranges: Vec<(u64, u64)> = overflow
                .iter()
                .filter(|(l, _, _)| *l == batch.log)
                .map(|(_, a, b)| (*a, *b))
                .collect();
            self.apply(&tx, batch, now, &ranges)?;
        }
        if now >= self.next_check {
            for (track, _) in self.tracks.values_mut() {
                track.check(&tx, &mut self.audit, &mut self.counts)?;
            }
            self.next_check = now + CHECK_EVERY;
        }
        // What the batches changed of each log's row commits with the gaps they recorded.
        for (track, _) in self.tracks.values_mut() {
            track.save(&tx)?;
        }
        // The sinks' spools take (and sync) the new samples in this transaction, and it
        // records where they end; they become readable once it commits, and are cut off again
        // if it does not (see sinks/spool.rs, "Durability"). A spool that cannot take them
        // fails the transaction: the carousel re-sends them to the store and the spools alike.
        if let Some(feed) = self.sinks.as_mut() {
            if history_arrived {
                feed.note_history();
            }
            feed.append(&self.fresh)
                .and_then(|()| feed.prepare())
                .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
            for (sink, head) in feed.heads() {
                db::save_spool_head(&tx, sink, head)?;
            }
            self.fresh.clear();
        }
        tx.commit()?;
        if let Some(feed) = self.sinks.as_mut() {
            feed.publish();
        }
        let done = std::mem::take(&mut self.tx);
        let st = &self.shared.stats;
        st.samples_inserted
            .fetch_add(done.inserted, Ordering::Relaxed);
        st.samples_duplicate
            .fetch_add(done.duplicate, Ordering::Relaxed);
        st.commits.fetch_add(1, Ordering::Relaxed);
        self.audit.flush();
        self.record_sink_gaps(conn, false);
        Ok(())
    }

    /// Forgets what the writer learnt in the transaction that just rolled back, so that its
    /// memory is never ahead of the database: tag ids it created (SQLite may give the same ids
    /// to other tags now), catalogues it saved, sequence tracking and gaps, their counts and
    /// audit lines. Its samples were not stored: counted so; their numbers stay missing, so the
    /// next batch of their log records them as a gap for the carousel to heal.
    fn roll_back(&mut self) {
        let lost = std::mem::take(&mut self.tx);
        self.shared
            .stats
            .not_stored
            .fetch_add(lost.samples, Ordering::Relaxed);
        self.counts = lost.counts;
        self.audit.discard();
        self.tracks.clear();
        self.fresh.clear();
        // What the transaction put in the spools goes with it.
        if let Some(feed) = self.sinks.as_mut() {
            feed.rollback();
        }
        for map in self.catalogues.values_mut() {
            map.ids.fill(None);
            map.saved = false;
        }
    }

    /// Records what the sinks lost up to now, before the writer ends.
    fn finish(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.record_sink_gaps(&conn, true);
            self.conn = Some(conn);
        }
    }

    /// Records the sinks' losses (spool overflow, corruption) in the gap table and audit log.
    fn record_sink_gaps(&mut self, conn: &Connection, flush: bool) {
        let Some(feed) = self.sinks.as_mut() else {
            return;
        };
        for mut g in feed.take_gaps(flush) {
            match db::insert_gap(conn, &g.row) {
                Ok(id) => g.row.id = id,
                Err(e) => {
                    warn!(sink = g.sink, error = %e, "cannot record a sink's gap in the store; it goes to the audit log only");
                }
            }
            self.audit.record("lost", &g.row, g.missing);
        }
        self.audit.flush();
    }

    /// Keeps a batch whose catalogue is not known yet, within the bound.
    fn hold(&mut self, batch: HistoryBatch) {
        self.pending_samples += batch.samples.len();
        self.pending.push_back(batch);
        while self.pending_samples > PENDING_SAMPLES {
            let Some(old) = self.pending.pop_front() else {
                break;
            };
            self.pending_samples -= old.samples.len();
            let before = self
                .shared
                .stats
                .unknown_catalogue_dropped
                .fetch_add(old.samples.len() as u64, Ordering::Relaxed);
            if before == 0 {
                warn!(
                    catalogue = format_args!("{:016x}", old.catalogue),
                    "history of an unknown catalogue dropped; the carousel will re-send it"
                );
            }
        }
    }

    /// Whether the catalogue `hash` is known (from the database or the link's state).
    fn ensure_catalogue(&mut self, conn: &Connection, hash: u64) -> rusqlite::Result<bool> {
        if let Some(map) = self.catalogues.get_mut(&hash) {
            if !map.saved {
                db::save_catalogue(conn, hash, &map.names)?;
                map.saved = true;
            }
            return Ok(true);
        }
        let names = match self.state.catalogue().filter(|c| c.hash() == hash) {
            Some(c) => {
                let names: Vec<String> = c.iter().map(|t| t.name.to_owned()).collect();
                db::save_catalogue(conn, hash, &names)?;
                Some(names)
            }
            None => db::load_catalogue(conn, hash)?,
        };
        let Some(names) = names else {
            return Ok(false);
        };
        if self.catalogues.len() >= 4 {
            self.catalogues.clear();
        }
        let ids = vec![None; names.len()];
        self.catalogues.insert(
            hash,
            CatalogueMap {
                names,
                ids,
                saved: true,
            },
        );
        Ok(true)
    }

    fn apply(
        &mut self,
        conn: &Connection,
        batch: HistoryBatch,
        now: Instant,
        overflow: &[(u64, u64)],
    ) -> rusqlite::Result<()> {
        let Some(map) = self.catalogues.get_mut(&batch.catalogue) else {
            return Ok(());
        };
        let mut inserted = 0u64;
        let mut duplicate = 0u64;
        let mut times: Vec<UnixNanos> = Vec::with_capacity(batch.samples.len());
        let mut names: Vec<&str> = Vec::with_capacity(batch.samples.len());
        let mut unresolved = 0usize;
        let received = crate::unix_now();
        for (k, s) in batch.samples.iter().enumerate() {
            let i = s.tag as usize;
            let Some(name) = map.names.get(i) else {
                unresolved += 1;
                continue;
            };
            let vt = s.value.value_type();
            let id = match map.ids[i] {
                Some((t, id)) if t == vt => id,
                _ => {
                    let id = db::tag_id(conn, name, vt)?;
                    map.ids[i] = Some((vt, id));
                    id
                }
            };
            if db::insert_sample(conn, id, s.time, &s.value, s.quality)? {
                inserted += 1;
                if self.sinks.is_some() {
                    self.fresh.push(crate::sinks::FreshSample {
                        sample: crate::sinks::spool::SpoolSample {
                            tag: std::sync::Arc::from(name.as_str()),
                            value: s.value.clone(),
                            quality: s.quality,
                            time: s.time,
                            received,
                        },
                        log: batch.log,
                        seq: batch.first_seq + k as u64,
                    });
                }
            } else {
                duplicate += 1;
            }
            times.push(s.time);
            names.push(name);
        }
        self.tx.inserted += inserted;
        self.tx.duplicate += duplicate;
        if unresolved > 0 {
            // A tag index outside its own catalogue: a transmitter bug. Do not mark the batch
            // received, so its numbers are reported missing.
            warn!(
                unresolved,
                first_seq = batch.first_seq,
                "history samples with a tag index outside their catalogue"
            );
            times.clear();
            names.clear();
        }
        let track = match self.tracks.get_mut(&batch.log) {
            Some((t, seen)) => {
                *seen = now;
                t
            }
            None => {
                if self.tracks.len() >= MAX_TRACKED_LOGS
                    && let Some(oldest) = self
                        .tracks
                        .iter()
                        .min_by_key(|(_, (_, seen))| *seen)
                        .map(|(k, _)| *k)
                {
                    self.tracks.remove(&oldest);
                }
                let start = batch
                    .head_seq
                    .max(batch.first_seq + batch.samples.len() as u64);
                let t = LogTrack::load_or_new(conn, batch.log, start)?;
                &mut self.tracks.entry(batch.log).or_insert((t, now)).0
            }
        };
        track.on_batch(
            conn,
            &mut self.audit,
            &mut self.counts,
            batch.first_seq,
            &times,
            &names,
            batch.head_seq,
            batch.oldest_seq,
            overflow,
        )
    }

    fn retention(&mut self, conn: &Connection) {
        let cutoff = crate::unix_now()
            .saturating_sub(i64::try_from(self.cfg.max_age.as_nanos()).unwrap_or(i64::MAX));
        let mut deleted = match db::delete_older_than(conn, cutoff) {
            Ok(n) => n,
            Err(e) => {
                warn!(error = %e, "history retention by age failed");
                0
            }
        };
        for _ in 0..20 {
            let used = db::used_bytes(conn).unwrap_or(0);
            if used <= self.cfg.max_bytes {
                break;
            }
            let Ok(Some((lo, hi))) = db::time_span(conn) else {
                break;
            };
            let cut = lo + ((hi - lo) / 20).max(1);
            match db::delete_older_than(conn, cut) {
                Ok(n) => deleted += n,
                Err(e) => {
                    warn!(error = %e, "history retention by size failed");
                    break;
                }
            }
            let _ = conn.execute_batch("PRAGMA incremental_vacuum");
        }
        if deleted > 0 {
            let _ = conn.execute_batch("PRAGMA incremental_vacuum");
            info!(deleted, "history retention deleted the oldest samples");
            self.shared
                .stats
                .retention_deleted
                .fetch_add(deleted, Ordering::Relaxed);
        }
        if let Ok(b) = db::used_bytes(conn) {
            self.shared.stats.store_bytes.store(b, Ordering::Relaxed);
        }
    }

    fn publish(&self) {
        let s = &self.shared.stats;
        s.gaps_opened.store(self.counts.opened, Ordering::Relaxed);
        s.gaps_healed.store(self.counts.healed, Ordering::Relaxed);
        s.gaps_expired.store(self.counts.expired, Ordering::Relaxed);
        s.gaps_abandoned
            .store(self.counts.abandoned, Ordering::Relaxed);
        let open: usize = self.tracks.values().map(|(t, _)| t.open_gaps()).sum();
        s.open_gaps.store(open as u64, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::catalogue::Catalogue;
    use protocol::model::{Quality, Sample, SourceAddress, TagInfo, Value};

    const LOG: u64 = 9;
    const T0: UnixNanos = 1_700_000_000_000_000_000;

    fn catalogue(names: &[&str]) -> Catalogue {
        let tag = |name: &&str| TagInfo {
            name: (*name).into(),
            value_type: ValueType::Double,
            unit: String::new(),
            description: String::new(),
            source: SourceAddress::Other("test".into()),
        };
        Catalogue::new(names.iter().map(tag).collect())
    }

    /// Samples of tag `tag` (its index) numbered `[first, first + n)`, each number its own
    /// time and value.
    fn batch(hash: u64, tag: u32, first: u64, n: u64) -> HistoryBatch {
        HistoryBatch {
            catalogue: hash,
            log: LOG,
            first_seq: first,
            head_seq: first + n,
            oldest_seq: 0,
            samples: (first..first + n)
                .map(|i| Sample {
                    tag,
                    value: Value::Double(i as f64),
                    quality: Quality::GOOD,
                    time: T0 + i as i64 * 1_000_000,
                })
                .collect(),
        }
    }

    /// The (time, value) of every sample `name` holds, read as `gateway-rx query` reads them.
    fn stored(path: &std::path::Path, name: &str) -> Vec<(UnixNanos, f64)> {
        let conn = db::open_ro(path).expect("store");
        db::query(&conn, name, UnixNanos::MIN, UnixNanos::MAX)
            .expect("query")
            .into_iter()
            .map(|s| match s.value {
                Some(Value::Double(v)) => (s.time, v),
                other => panic!("{name}: a Double, not {other:?}"),
            })
            .collect()
    }

    fn expected(first: u64, n: u64) -> Vec<(UnixNanos, f64)> {
        (first..first + n)
            .map(|i| (T0 + i as i64 * 1_000_000, i as f64))
            .collect()
    }

    /// A transaction that fails (the database full: SQLITE_FULL, as a full disk gives) after it
    /// created a tag id and opened a gap leaves nothing of it in the writer's memory: a tag
    /// created afterwards does not take the first tag's samples, the gap is counted and
    /// audited once, and the failed samples are counted as not stored.
    #[test]
    fn a_failed_transaction_leaves_no_tag_id_count_or_audit_line_behind() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let cfg = StoreConfig {
            enabled: true,
            path: dir.path().join("history.sqlite"),
            max_age: Duration::from_secs(100 * 365 * 86_400),
            max_bytes: 1 << 40,
            gap_log: dir.path().join("history-gaps.jsonl"),
        };
        let state = Arc::new(State::new());
        let first = catalogue(&["site/a", "site/b", "site/c"]);
        let first_hash = first.hash();
        state.apply_catalogue(first);
        let (_tx, rx) = std::sync::mpsc::sync_channel(1);
        let shared = Arc::new(Shared::default());
        let mut w = Writer::new(cfg.clone(), state.clone(), rx, shared.clone());
        let (a, b, c) = (0, 1, 2);

        // site/c: numbers 0..10, stored.
        w.step(vec![batch(first_hash, c, 0, 10)]);
        assert_eq!(shared.stats.snapshot().commits, 1);
        // A new catalogue version (a tag added), first saved by the transaction that fails.
        let names = ["site/a", "site/b", "site/c", "site/d"];
        let cat = catalogue(&names);
        let hash = cat.hash();
        state.apply_catalogue(cat);

        // The disk is full: the database cannot grow by one page.
        let conn = w.conn.as_ref().expect("open");
        let pages: i64 = conn
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .expect("page_count");
        let max: i64 = conn
            .query_row(&format!("PRAGMA max_page_count = {pages}"), [], |r| {
                r.get(0)
            })
            .expect("max_page_count");
        assert_eq!(max, pages);
        // One transaction: site/a, numbers 20..25 (its tag created, a gap 10..20 opened),
        // then 25..2025, which needs new pages: SQLITE_FULL, the whole transaction rolls back.
        w.step(vec![batch(hash, a, 20, 5), batch(hash, a, 25, 2000)]);
        let s = shared.stats.snapshot();
        assert_eq!((s.write_errors, s.commits), (1, 1), "{s:?}");

        // Space again. A new tag, site/b (numbers 2025..2035), then site/a again (2035..2045).
        w.conn
            .as_ref()
            .expect("open")
            .query_row("PRAGMA max_page_count = 1073741823", [], |r| {
                r.get::<_, i64>(0)
            })
            .expect("max_page_count");
        w.step(vec![batch(hash, b, 2025, 10)]);
        w.step(vec![batch(hash, a, 2035, 10)]);

        assert_eq!(stored(&cfg.path, "site/c"), expected(0, 10));
        assert_eq!(
            stored(&cfg.path, "site/b"),
            expected(2025, 10),
            "site/b holds its own samples only"
        );
        assert_eq!(
            stored(&cfg.path, "site/a"),
            expected(2035, 10),
            "site/a holds its own samples"
        );

        // The catalogue version is in the database, as a restart needs it.
        let conn = db::open_ro(&cfg.path).expect("store");
        assert_eq!(
            db::load_catalogue(&conn, hash).expect("catalogues"),
            Some(names.map(String::from).to_vec())
        );
        // The numbers of the failed transaction are one gap, opened once, audited once.
        let gaps = db::list_gaps(&conn, false, 10).expect("gaps");
        assert_eq!(gaps.len(), 1, "{gaps:#?}");
        assert_eq!((gaps[0].start_seq, gaps[0].end_seq), (10, 2025));
        assert_eq!(
            (gaps[0].state.as_str(), gaps[0].reason.as_str()),
            ("open", "not_received")
        );
        let audit = std::fs::read_to_string(&cfg.gap_log).expect("audit log");
        let lines: Vec<serde_json::Value> = audit
            .lines()
            .map(|l| serde_json::from_str(l).expect("JSON line"))
            .collect();
        assert_eq!(lines.len(), 1, "{audit}");
        assert_eq!(
            (
                &lines[0]["event"],
                &lines[0]["gap_id"],
                &lines[0]["first_seq"],
                &lines[0]["last_seq"]
            ),
            (
                &"opened".into(),
                &gaps[0].id.into(),
                &10.into(),
                &2024.into()
            )
        );
        w.publish();
        let s = shared.stats.snapshot();
        assert_eq!(s.gaps_opened, 1, "{s:?}");
        assert_eq!(s.samples_inserted, 30, "{s:?}");
        assert_eq!(
            s.not_stored, 2005,
            "the failed transaction's samples: {s:?}"
        );
        assert_eq!(s.commits, 3, "{s:?}");
    }

    /// A gap recorded by a transaction in which the periodic check did not run, then a restart
    /// (or a rollback, which reloads the tracking from the database): the numbers are not
    /// recorded again as a second gap, and the carousel's re-send heals the one gap there is
    /// (a stale `checked_until` in the database opened a second gap over the same numbers and
    /// left the first open for ever).
    #[test]
    fn a_gap_is_recorded_once_across_a_restart() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let cfg = StoreConfig {
            enabled: true,
            path: dir.path().join("history.sqlite"),
            max_age: Duration::from_secs(100 * 365 * 86_400),
            max_bytes: 1 << 40,
            gap_log: dir.path().join("history-gaps.jsonl"),
        };
        let state = Arc::new(State::new());
        let cat = catalogue(&["site/a"]);
        let hash = cat.hash();
        state.apply_catalogue(cat);
        let writer = || {
            let (_tx, rx) = std::sync::mpsc::sync_channel(1);
            Writer::new(cfg.clone(), state.clone(), rx, Arc::new(Shared::default()))
        };
        // The periodic check is due at the first step only.
        let later = || Instant::now() + Duration::from_secs(3600);
        let mut w = writer();
        w.step(vec![batch(hash, 0, 0, 10)]);
        w.next_check = later();
        // Numbers 10..20 do not arrive: a gap.
        w.step(vec![batch(hash, 0, 20, 5)]);
        drop(w);
        // Restarted: more live history, then the carousel's re-send of 10..20.
        let mut w = writer();
        w.next_check = later();
        w.step(vec![batch(hash, 0, 25, 5)]);
        w.step(vec![batch(hash, 0, 10, 10)]);
        let conn = db::open_ro(&cfg.path).expect("store");
        let gaps = db::list_gaps(&conn, false, 10).expect("gaps");
        assert_eq!(
            gaps.iter()
                .map(|g| (g.start_seq, g.end_seq, g.state.as_str()))
                .collect::<Vec<_>>(),
            [(10, 20, "healed")],
            "{gaps:#?}"
        );
        assert_eq!(stored(&cfg.path, "site/a"), expected(0, 30));
    }
}
