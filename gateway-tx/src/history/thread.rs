//! The history thread: appends what the tap collected, then decides what history goes to the
//! link: live records first (each once, as soon as it is on disk), then operator backfills, then
//! the carousel, the last two within the configured share of the link rate (a token bucket
//! of estimated link bytes).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use protocol::codec;
use protocol::codec::HistoryHead;
use protocol::message::CatalogueHash;
use protocol::model::{Sample, TagIndex};
use tracing::{info, warn};

use super::backfill::{self, BackfillStatus, MAX_PENDING, Source};
use super::historian::{self, HistorianProgress, Historians, PartState};
use super::log::{HistoryLog, LogCursor, Record};
use super::records::EncodedRecords;
use super::{HistoryOutlet, HistoryStats, HistoryTap, LIVE_MEMORY, LinkShape};

/// How long the thread waits for samples when there is nothing else to do.
const TICK: Duration = Duration::from_millis(10);
const HOUSEKEEPING: Duration = Duration::from_secs(1);
/// An empty batch (head and oldest sequence numbers only) goes out when no history message
/// went for this long, so the receiver learns of losses at the end of a burst.
const STATUS_EVERY: Duration = Duration::from_secs(1);
/// Records read from disk per step.
const READ_CHUNK: usize = 2048;
/// Sources may stamp samples this far ahead of the transmitter's clock without a backfill
/// missing them (see `HistoryLog::seq_of_segment_active_since`).
const CLOCK_SLACK_NS: i64 = 60_000_000_000;

/// What a batch is: live history (its own end is the head) or a re-send (charged to the
/// carousel's budget).
#[derive(Debug, Clone, Copy)]
enum Emit {
    Live,
    Resend,
}

struct Job {
    status: BackfillStatus,
    tags: Option<HashSet<String>>,
    cursor: LogCursor,
    end: u64,
    /// The historian parts' progress, in the order of `status.historian`.
    parts: Vec<Arc<HistorianProgress>>,
}

/// What the history thread shares with the rest of the daemon.
pub(super) struct Shared {
    pub tap: Arc<HistoryTap>,
    pub outlet: Arc<HistoryOutlet>,
    pub stats: Arc<HistoryStats>,
    pub historians: Arc<Historians>,
}

pub(super) struct HistoryThread {
    log: HistoryLog,
    tap: Arc<HistoryTap>,
    outlet: Arc<HistoryOutlet>,
    stats: Arc<HistoryStats>,
    shape: LinkShape,
    window_ns: i64,
    catalogue: CatalogueHash,
    names: Vec<String>,
    name_index: HashMap<String, TagIndex>,
    /// Per older catalogue: old index → current index.
    remaps: HashMap<CatalogueHash, Option<Arc<Vec<Option<TagIndex>>>>>,
    /// Appended records not yet sent live, in order.
    recent: EncodedRecords,
    /// Everything below was handed to the outlet once (or dropped at the tap).
    live_next: u64,
    /// Live records below this must be read back from disk (they left `recent`).
    live_disk_until: u64,
    live_cursor: Option<LogCursor>,
    carousel: Option<(LogCursor, u64)>,
    jobs: VecDeque<Job>,
    /// Jobs whose buffer part is done, waiting for their historian parts.
    waiting: Vec<Job>,
    historians: Arc<Historians>,
    tokens: f64,
    token_cap: f64,
    last_refill: Instant,
    last_message: Instant,
    next_housekeeping: Instant,
    tap_dropped_logged: u64,
    write_errors: u64,
}

impl HistoryThread {
    pub(super) fn new(
        log: HistoryLog,
        shared: Shared,
        shape: LinkShape,
        window: Duration,
        names: Vec<String>,
    ) -> HistoryThread {
        let Shared {
            tap,
            outlet,
            stats,
            historians,
        } = shared;
        let now = Instant::now();
        let head = log.head();
        let name_index = names
            .iter()
            .enumerate()
            .filter_map(|(i, n)| Some((n.clone(), TagIndex::try_from(i).ok()?)))
            .collect();
        // Up to 50 ms of budget at once, and at least a few datagrams.
        let token_cap = (shape.resend_bytes_per_s * 0.05).max(shape.cost(shape.body_budget) * 4.0);
        HistoryThread {
            catalogue: log.catalogue(),
            log,
            tap,
            outlet,
            stats,
            shape,
            window_ns: i64::try_from(window.as_nanos()).unwrap_or(i64::MAX),
            names,
            name_index,
            remaps: HashMap::new(),
            recent: EncodedRecords::default(),
            live_next: head,
            live_disk_until: head,
            live_cursor: None,
            carousel: None,
            jobs: VecDeque::new(),
            waiting: Vec::new(),
            historians,
            tokens: 0.0,
            token_cap,
            last_refill: now,
            last_message: now,
            next_housekeeping: now,
            tap_dropped_logged: 0,
            write_errors: 0,
        }
    }

    pub(super) fn run(&mut self, stop: &AtomicBool) {
        loop {
            let stopping = stop.load(Ordering::Relaxed);
            let taken = self.tap.take(if stopping { Duration::ZERO } else { TICK });
            if !taken.is_empty() {
                self.append(taken);
            }
            if stopping {
                if let Err(e) = self.log.sync() {
                    warn!(error = %e, "history buffer not synced at shutdown");
                }
                self.publish();
                return;
            }
            let now = Instant::now();
            self.send_live();
            self.spill_live_excess();
            self.refill(now);
            self.send_backfills();
            self.send_carousel(crate::unix_now());
            if now >= self.next_housekeeping {
                self.housekeeping();
                self.next_housekeeping = now + HOUSEKEEPING;
            }
            if now.duration_since(self.last_message) >= STATUS_EVERY && self.outlet.room() > 0 {
                self.emit(self.live_next, 0, &[], false);
            }
            self.publish();
        }
    }

    fn append(&mut self, records: Vec<(u64, Sample)>) {
        let now = crate::unix_now();
        // Each sample is encoded here once; the buffer's record and the live batch copy it.
        let before = self.recent.len();
        for (seq, sample) in &records {
            self.recent.push(*seq, sample);
        }
        if let Err(e) = self.log.append(self.recent.iter_from(before), now) {
            // The samples still go out live from memory; only their re-sending is lost.
            self.write_errors += records.len() as u64;
            self.stats
                .write_errors
                .store(self.write_errors, Ordering::Relaxed);
            if self.write_errors.is_power_of_two() || records.len() > 1000 {
                warn!(error = %e, samples = records.len(), total = self.write_errors,
                    "history buffer write failed; these samples go out live but cannot be re-sent");
            }
        }
    }

    /// Leaves the oldest live records beyond [`LIVE_MEMORY`] to be read back from disk. Runs
    /// after the live batches were made, so only what the link is behind with goes there, not
    /// the tail of one large take from the tap (a bulk source's).
    fn spill_live_excess(&mut self) {
        let excess = self.recent.byte_len().saturating_sub(LIVE_MEMORY);
        let n = self.recent.oldest_holding(excess);
        if let Some(seq) = n.checked_sub(1).and_then(|last| self.recent.seq(last)) {
            self.live_disk_until = self.live_disk_until.max(seq + 1);
        }
        self.recent.take_front(n);
    }

    /// Live history: every record once, as soon as there is room in the outlet.
    fn send_live(&mut self) {
        while self.outlet.room() > 0 {
            if self.live_next < self.live_disk_until {
                let cursor = self
                    .live_cursor
                    .get_or_insert_with(|| LogCursor::new(self.live_next));
                if cursor.next_seq != self.live_next {
                    *cursor = LogCursor::new(self.live_next);
                }
                let records = match cursor.read(&mut self.log, READ_CHUNK) {
                    Ok(r) => r,
                    Err(e) => {
                        warn!(error = %e, "reading live history back from disk failed");
                        Vec::new()
                    }
                };
                let until = self.live_disk_until;
                let records: Vec<Record> = records.into_iter().filter(|r| r.seq < until).collect();
                if records.is_empty() {
                    // Not on disk (a write failed, or deleted): nothing more to find there.
                    self.live_next = self.live_disk_until;
                    self.live_cursor = None;
                    continue;
                }
                self.live_next = records.last().map_or(self.live_next, |r| r.seq + 1);
                let n = records.len() as u64;
                let resolved = self.resolve_records(records);
                self.stats.live_samples.fetch_add(n, Ordering::Relaxed);
                self.stats.live_read_back.fetch_add(n, Ordering::Relaxed);
                self.emit_records(&resolved, resolved.len(), Emit::Live);
                continue;
            }
            self.live_cursor = None;
            if self.recent.is_empty() {
                return;
            }
            // Enough for the room left, in datagram-sized batches.
            let take = self.recent.len().min(self.outlet.room() * 64);
            let recent = std::mem::take(&mut self.recent);
            self.live_next = recent.seq(take - 1).map_or(self.live_next, |seq| seq + 1);
            self.stats
                .live_samples
                .fetch_add(take as u64, Ordering::Relaxed);
            self.emit_records(&recent, take, Emit::Live);
            self.recent = recent;
            self.recent.take_front(take);
        }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.duration_since(self.last_refill).as_secs_f64();
        self.last_refill = now;
        self.tokens = (self.tokens + dt * self.shape.resend_bytes_per_s).min(self.token_cap);
    }

    fn budget_left(&self) -> bool {
        self.tokens > 0.0 && self.outlet.room() > 0
    }

    fn send_backfills(&mut self) {
        while self.budget_left() {
            let Some(mut job) = self.jobs.pop_front() else {
                return;
            };
            if job.status.state != "running" {
                job.status.state = "running".into();
                self.write_job_status(&mut job);
            }
            if job.cursor.next_seq >= job.end {
                // Nothing asked of the buffer (`--source historian`).
                self.buffer_part_done(job);
                continue;
            }
            let records = match job.cursor.read(&mut self.log, READ_CHUNK) {
                Ok(r) => r,
                Err(e) => {
                    warn!(error = %e, id = job.status.id, "backfill read failed");
                    Vec::new()
                }
            };
            let end = job.end;
            let done = records.is_empty() || job.cursor.next_seq >= end;
            job.status.scanned += records.len() as u64;
            let (from, to) = (job.status.from, job.status.to);
            let selected: Vec<Record> = records
                .into_iter()
                .filter(|r| r.seq < end && r.sample.time >= from && r.sample.time <= to)
                .filter(|r| match &job.tags {
                    None => true,
                    Some(tags) => self
                        .name_of(r)
                        .is_some_and(|name| tags.contains(name.as_str())),
                })
                .collect();
            let n = selected.len() as u64;
            job.status.sent += n;
            self.stats.backfill_samples.fetch_add(n, Ordering::Relaxed);
            let resolved = self.resolve_records(selected);
            self.emit_records(&resolved, resolved.len(), Emit::Resend);
            if done {
                self.buffer_part_done(job);
            } else {
                self.jobs.push_front(job);
            }
        }
    }

    /// The buffer has re-sent its part; the job ends when its historian parts have too.
    fn buffer_part_done(&mut self, mut job: Job) {
        if job.parts.iter().all(|p| p.state().is_final()) {
            self.finish(job);
        } else {
            self.write_job_status(&mut job);
            self.waiting.push(job);
        }
    }

    fn finish(&mut self, mut job: Job) {
        let failed: Vec<String> = job
            .status
            .historian
            .iter()
            .filter(|p| p.state == PartState::Failed)
            .map(|p| format!("historian {}: {}", p.source, p.message))
            .collect();
        let from_historians: u64 = job.status.historian.iter().map(|p| p.values).sum();
        job.status.state = if failed.is_empty() { "done" } else { "failed" }.into();
        job.status.message = format!(
            "re-sent {} of {} samples scanned in the buffer",
            job.status.sent, job.status.scanned
        );
        if !job.status.historian.is_empty() {
            job.status.message += &format!("; {from_historians} values read from the historians");
        }
        for f in &failed {
            job.status.message += "; ";
            job.status.message += f;
        }
        self.write_job_status(&mut job);
        self.stats.backfills_done.fetch_add(1, Ordering::Relaxed);
        info!(
            id = job.status.id,
            state = job.status.state,
            scanned = job.status.scanned,
            sent = job.status.sent,
            historian_values = from_historians,
            historian_failures = failed.len(),
            "backfill done"
        );
    }

    /// The carousel: the samples appended within the window, oldest first, over and over.
    fn send_carousel(&mut self, now: i64) {
        let mut restarted = false;
        while self.budget_left() {
            let end = match &self.carousel {
                Some((cursor, end)) if cursor.next_seq < *end => *end,
                _ => {
                    if restarted {
                        return;
                    }
                    restarted = true;
                    let start = self.log.seq_at_time(now.saturating_sub(self.window_ns));
                    let end = self.live_next.min(self.log.head());
                    if start >= end {
                        self.carousel = None;
                        return;
                    }
                    self.carousel = Some((LogCursor::new(start), end));
                    self.stats.carousel_cycles.fetch_add(1, Ordering::Relaxed);
                    end
                }
            };
            let Some((cursor, _)) = self.carousel.as_mut() else {
                return;
            };
            let records = match cursor.read(&mut self.log, READ_CHUNK.min(512)) {
                Ok(r) => r,
                Err(e) => {
                    warn!(error = %e, "carousel read failed");
                    self.carousel = None;
                    return;
                }
            };
            if records.is_empty() {
                self.carousel = None;
                continue;
            }
            let records: Vec<Record> = records.into_iter().filter(|r| r.seq < end).collect();
            self.stats
                .carousel_samples
                .fetch_add(records.len() as u64, Ordering::Relaxed);
            let resolved = self.resolve_records(records);
            self.emit_records(&resolved, resolved.len(), Emit::Resend);
        }
    }

    fn name_of(&mut self, r: &Record) -> Option<String> {
        if r.catalogue == self.catalogue {
            return self.names.get(r.sample.tag as usize).cloned();
        }
        let names = self.log.names(r.catalogue)?;
        names.get(r.sample.tag as usize).cloned()
    }

    /// The record's tag as an index of the current catalogue.
    fn resolve(&mut self, r: &Record) -> Option<TagIndex> {
        if r.catalogue == self.catalogue {
            return ((r.sample.tag as usize) < self.names.len()).then_some(r.sample.tag);
        }
        if !self.remaps.contains_key(&r.catalogue) {
            let remap = self.log.names(r.catalogue).map(|old| {
                Arc::new(
                    old.iter()
                        .map(|n| self.name_index.get(n).copied())
                        .collect::<Vec<_>>(),
                )
            });
            self.remaps.insert(r.catalogue, remap);
        }
        self.remaps
            .get(&r.catalogue)
            .and_then(|m| m.as_ref())
            .and_then(|m| m.get(r.sample.tag as usize).copied().flatten())
    }

    /// Records (from disk) with tags of the current catalogue, encoded; unresolvable ones
    /// skipped.
    fn resolve_records(&mut self, records: Vec<Record>) -> EncodedRecords {
        let mut out = EncodedRecords::default();
        let mut skipped = 0u64;
        for r in records {
            match self.resolve(&r) {
                Some(tag) => {
                    let mut sample = r.sample;
                    sample.tag = tag;
                    out.push(r.seq, &sample);
                }
                None => skipped += 1,
            }
        }
        if skipped > 0 {
            let before = self
                .stats
                .unresolvable
                .fetch_add(skipped, Ordering::Relaxed);
            if before == 0 {
                warn!(
                    skipped,
                    "history of tags no longer in the catalogue cannot be re-sent"
                );
            }
        }
        out
    }

    /// Queues the `n` oldest of `records` in datagram-sized batches.
    fn emit_records(&mut self, records: &EncodedRecords, n: usize, kind: Emit) {
        for range in records.batches(n, self.shape.body_budget) {
            let Some(first) = records.seq(range.start) else {
                continue;
            };
            let (count, encoded) = (range.len(), records.bytes(range));
            match kind {
                // A live batch announces its own end as the head: every number below its first
                // was sent before it and the batches after it carry the rest, so the receiver
                // can tell a missing number the moment a batch arrives.
                Emit::Live => {
                    self.emit_with_head(first, count, encoded, false, first + count as u64)
                }
                Emit::Resend => self.emit(first, count, encoded, true),
            }
        }
    }

    /// Queues one batch announcing everything sent live so far; `resend` charges it to the
    /// carousel's budget.
    fn emit(&mut self, first_seq: u64, count: usize, encoded: &[u8], resend: bool) {
        let head = self.live_next;
        self.emit_with_head(first_seq, count, encoded, resend, head);
    }

    /// Queues the batch of `count` samples whose encodings are `encoded`.
    fn emit_with_head(
        &mut self,
        first_seq: u64,
        count: usize,
        encoded: &[u8],
        resend: bool,
        head: u64,
    ) {
        let head = HistoryHead {
            catalogue: self.catalogue,
            log: self.log.log_id(),
            first_seq,
            head_seq: head,
            oldest_seq: self.log.oldest_seq(),
        };
        let mut body = Vec::with_capacity(self.shape.body_budget);
        codec::encode_history_encoded(&head, count, encoded, &mut body);
        if resend {
            let cost = self.shape.cost(body.len());
            self.tokens -= cost;
            self.stats
                .resend_bytes
                .fetch_add(cost as u64, Ordering::Relaxed);
        }
        self.outlet.push(body);
        self.last_message = Instant::now();
    }

    fn housekeeping(&mut self) {
        if let Err(e) = self.log.sync() {
            warn!(error = %e, "history buffer sync failed");
        }
        let now = crate::unix_now();
        for d in self.log.enforce_limits(now) {
            let unsent = d
                .end_seq
                .min(self.live_disk_until)
                .saturating_sub(d.first_seq.max(self.live_next));
            if unsent > 0 {
                self.stats
                    .deleted_unsent
                    .fetch_add(unsent, Ordering::Relaxed);
                warn!(
                    first_seq = d.first_seq,
                    end_seq = d.end_seq,
                    unsent,
                    "history deleted before it was ever sent: the link is slower than the history"
                );
            }
            info!(
                first_seq = d.first_seq,
                end_seq = d.end_seq,
                bytes = d.bytes,
                reason = d.reason,
                "oldest history segment deleted; receivers still missing any of it record an expired gap"
            );
        }
        let oldest = self.log.oldest_seq();
        if self.live_next < oldest && self.live_next < self.live_disk_until {
            self.live_next = oldest.min(self.live_disk_until);
        }
        let dropped = self.tap.dropped();
        if dropped > self.tap_dropped_logged {
            warn!(
                dropped = dropped - self.tap_dropped_logged,
                total = dropped,
                "history samples dropped: the buffer's disk is too slow; receivers record the gap"
            );
            self.tap_dropped_logged = dropped;
        }
        self.take_backfill_requests();
        for mut job in std::mem::take(&mut self.waiting) {
            if job.parts.iter().all(|p| p.state().is_final()) {
                // Refreshes the parts one last time before the final status.
                self.write_job_status(&mut job);
                self.finish(job);
            } else {
                self.write_job_status(&mut job);
                self.waiting.push(job);
            }
        }
        if let Some(mut job) = self.jobs.pop_front() {
            if job.status.state == "running" {
                self.write_job_status(&mut job);
            }
            self.jobs.push_front(job);
        }
    }

    fn take_backfill_requests(&mut self) {
        let room = MAX_PENDING.saturating_sub(self.jobs.len() + self.waiting.len());
        if room == 0 {
            return;
        }
        let dir = self.log.dir().to_path_buf();
        for r in backfill::take_requests(&dir, room) {
            let now = crate::unix_now();
            match r {
                Ok(req) => {
                    let start = self
                        .log
                        .seq_of_segment_active_since(req.from.saturating_sub(CLOCK_SLACK_NS));
                    let oldest = self.log.oldest_seq();
                    // The buffer part: nothing when only the historians are asked.
                    let end = match req.source {
                        Source::Historian => start,
                        Source::Auto | Source::Buffer => self.live_next,
                    };
                    let tags = (!req.tags.is_empty())
                        .then(|| req.tags.iter().cloned().collect::<HashSet<_>>());
                    let historian_range = match req.source {
                        Source::Buffer => None,
                        Source::Historian => Some((req.from, req.to)),
                        // What the buffer cannot hold: appended before its oldest segment
                        // (the source times of those samples are earlier still, give or take
                        // the clock slack).
                        Source::Auto => match self.log.held_since() {
                            None => Some((req.from, req.to)),
                            Some(since) if req.from < since + CLOCK_SLACK_NS => {
                                Some((req.from, req.to.min(since + CLOCK_SLACK_NS)))
                            }
                            Some(_) => None,
                        },
                    };
                    let (parts, progress): (Vec<_>, Vec<_>) = match historian_range {
                        Some((from, to)) => self
                            .historians
                            .dispatch(&req.id, from, to, tags.as_ref())
                            .into_iter()
                            .unzip(),
                        None => (Vec::new(), Vec::new()),
                    };
                    info!(
                        id = req.id,
                        from = req.from,
                        to = req.to,
                        tags = req.tags.len(),
                        source = ?req.source,
                        start_seq = start,
                        end_seq = end,
                        historian_parts = parts.len(),
                        "backfill requested"
                    );
                    let mut job = Job {
                        tags,
                        cursor: LogCursor::new(start),
                        end,
                        parts: progress,
                        status: BackfillStatus {
                            id: req.id,
                            state: "queued".into(),
                            from: req.from,
                            to: req.to,
                            tags: req.tags,
                            scanned: 0,
                            sent: 0,
                            oldest_seq: oldest,
                            historian: parts,
                            message: String::new(),
                            updated_at: now,
                        },
                    };
                    self.write_job_status(&mut job);
                    self.jobs.push_back(job);
                }
                Err(bad) => {
                    warn!(id = bad.id, why = bad.why, "backfill request rejected");
                    backfill::write_status(
                        &dir,
                        &BackfillStatus {
                            id: bad.id,
                            state: "rejected".into(),
                            from: 0,
                            to: 0,
                            tags: Vec::new(),
                            scanned: 0,
                            sent: 0,
                            oldest_seq: self.log.oldest_seq(),
                            historian: Vec::new(),
                            message: bad.why,
                            updated_at: now,
                        },
                    );
                }
            }
        }
    }

    fn write_job_status(&self, job: &mut Job) {
        for (part, progress) in job.status.historian.iter_mut().zip(&job.parts) {
            historian::refresh(part, progress);
        }
        job.status.updated_at = crate::unix_now();
        backfill::write_status(self.log.dir(), &job.status);
    }

    fn publish(&self) {
        let s = &self.stats;
        let st = self.log.stats();
        s.appended.store(st.records_appended, Ordering::Relaxed);
        s.tap_dropped.store(self.tap.dropped(), Ordering::Relaxed);
        s.head_seq.store(self.log.head(), Ordering::Relaxed);
        s.oldest_seq.store(self.log.oldest_seq(), Ordering::Relaxed);
        s.live_seq.store(self.live_next, Ordering::Relaxed);
        let unsent = self.log.head().saturating_sub(self.live_next);
        self.tap
            .set_unsent(usize::try_from(unsent).unwrap_or(usize::MAX));
        s.log_bytes.store(self.log.total_bytes(), Ordering::Relaxed);
        s.segments
            .store(self.log.segment_count() as u64, Ordering::Relaxed);
        s.segments_deleted
            .store(st.segments_deleted, Ordering::Relaxed);
        s.records_deleted
            .store(st.records_deleted, Ordering::Relaxed);
        s.corrupt_records
            .store(st.corrupt_records, Ordering::Relaxed);
    }
}
