//! The IT-side sinks beyond the embedded store: the MQTT publisher (`[mqtt]`), the
//! PostgreSQL sink (`[postgres]`) and the NATS JetStream sink (`[nats]`), each fed through a
//! durable spool of its own. What they share (reading the spool ahead, moving the cursor on
//! the destination's acknowledgement, reconnecting with backoff, the counters) is
//! `delivery.rs`; each sink's module is only its destination's part.
//!
//! # Where samples come from
//!
//! The store's writer thread hands each sample that is *new to the store* (its (tag, source
//! time) was not stored before) to [`SinkFeed::append`], in the transaction that stores it and
//! before that transaction commits. The store has already done the work every sink needs: it
//! resolved the tag's name in its catalogue, kept each (tag, time) once whatever the carousel
//! re-sent, and records the numbers that did not arrive as gaps that the carousel then heals;
//! healed samples are new to the store, so they reach the sinks too. A history batch the store
//! could not take (its queue was full, its database could not be written) stays missing for the
//! sinks as well, and the carousel re-sends it to both. The spools take a transaction's samples
//! in that transaction and make them readable only once it commits (`spool.rs`,
//! "Durability"): a sample is in a sink's spool exactly when the store holds it, whatever fails
//! (a full disk under the store or a spool, a crash between the two).
//!
//! # Queues and their policies
//!
//! - **Spool, per sink** (`spool.rs`): on disk, bounded by `spool_max_bytes`. While the
//!   destination is down or slow, samples wait there, and are delivered in the order the store
//!   took them when it returns. When an append does not fit, the samples it carried are
//!   dropped, counted (`overflow_samples`), and recorded as a gap of the history audit with
//!   state `lost` and reason `<sink>_spool_full` (in the store's `gaps` table, listed by
//!   `gateway-rx gaps`, and in the JSON-lines gap log): the tags (the first 32), the source-time
//!   range, the transmitter log and the range of history numbers within which samples were
//!   dropped, and exactly how many (`missing`). An overflow lasting longer than a minute is
//!   recorded once a minute. The store still holds those samples.
//! - **Live values** (MQTT only): not queued. The publisher reads the current-value table
//!   (latest per tag) when it has nothing from its spool to send.
//!
//! Delivery is at least once: a sink moves its spool cursor only after its destination
//! acknowledged (PostgreSQL: the transaction committed; MQTT: the broker acknowledged at the
//! configured QoS), so a crash or a cut connection re-delivers the unacknowledged tail.
//! PostgreSQL keeps each (tag, time) once; MQTT at QoS 2 sends that tail again as the same
//! packets, which a broker that kept the session delivers once (`mqtt.rs`); NATS sends it
//! again with the same message ids, which the stream's duplicate window drops (`nats.rs`).

pub mod delivery;
pub mod mqtt;
pub mod nats;
pub mod postgres;
pub mod spool;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use config::rx::RxConfig;
use protocol::model::UnixNanos;
use tokio::task::JoinHandle;
use tracing::warn;

use crate::state::State;
use crate::store::db::GapRow;
use crate::store::gaps::MAX_GAP_TAGS;
use spool::{SpoolReader, SpoolSample, SpoolWriter};

/// An overflow is recorded as a gap at least this often while it lasts.
const OVERFLOW_RECORD_EVERY: Duration = Duration::from_secs(60);

/// A sample the store has just taken, with where it came from.
#[derive(Debug, Clone)]
pub struct FreshSample {
    pub sample: SpoolSample,
    /// The transmitter's history log and the sample's number in it.
    pub log: u64,
    pub seq: u64,
}

impl AsRef<SpoolSample> for FreshSample {
    fn as_ref(&self) -> &SpoolSample {
        &self.sample
    }
}

observe::counters! {
    /// Counters of one sink, its spool's included (the spool's writer and reader count in them
    /// too).
    #[derive(Debug, Default)]
    pub struct SinkStats;
    /// A copy of a sink's counters.
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
    pub struct SinkStatsSnapshot;

    /// 1 while the sink is connected to its destination (MQTT broker, PostgreSQL, NATS).
    connected: AtomicBool => gauge("gateway_rx_sink_connected");
    /// History samples appended to the sink's spool.
    appended => counter("gateway_rx_sink_spooled_samples_total");
    /// History samples the destination acknowledged.
    delivered => counter("gateway_rx_sink_delivered_samples_total");
    /// Bytes the sink's spool uses on disk (bounded by spool_max_bytes).
    spool_bytes => gauge("gateway_rx_sink_spool_bytes");
    /// History samples dropped for the sink because its spool was full (recorded as lost
    /// gaps; the store keeps them).
    overflow_samples => counter("gateway_rx_sink_overflow_samples_total");
    /// Gaps recorded for the sink (spool overflow or corruption).
    gaps_recorded => counter("gateway_rx_sink_gaps_total");
    /// Connections to the destination refused or lost, and batches that failed.
    failures => counter("gateway_rx_sink_failures_total");
    /// MQTT: history samples older than what their topic had (a healed gap), published
    /// flagged late and not retained (part of delivered).
    late_published => counter("gateway_rx_sink_late_samples_total");
    /// MQTT: samples not published because the same tag and source time was published
    /// already.
    skipped_duplicate => counter("gateway_rx_sink_duplicates_skipped_total");
    /// MQTT: packets of an unacknowledged window sent again after a lost connection or a
    /// restart (same packet ids).
    resent => counter("gateway_rx_sink_resent_total");
    /// NATS: publishes the server acknowledged as duplicates (a message id it held already:
    /// a batch published again after a failure or a restart), stored once.
    server_duplicates => counter("gateway_rx_sink_server_duplicates_total");
    /// Spool writes or syncs that failed with an I/O error (a full disk): the store's
    /// transaction was rolled back with it, and the carousel re-sends its samples to both.
    spool_errors => counter("gateway_rx_sink_spool_errors_total");
    /// Samples the spool had no room for (the caller counts them as overflow).
    spool_refused;
    /// Spool records the reader skipped as corrupt (recorded as gaps).
    corrupt_records;
    /// Connections made to the destination.
    connects;
    /// MQTT: live values published.
    live_published;
}

/// A running sink: its task, counters and spool.
pub struct SinkHandle {
    pub name: &'static str,
    stats: Arc<SinkStats>,
    task: JoinHandle<()>,
}

impl SinkHandle {
    pub fn stats(&self) -> SinkStatsSnapshot {
        self.monitor().stats()
    }

    /// A handle on the sink's counters for status and metrics.
    pub fn monitor(&self) -> SinkMonitor {
        SinkMonitor {
            name: self.name,
            stats: self.stats.clone(),
        }
    }
}

/// A sink's counters, as status and metrics read them.
#[derive(Clone)]
pub struct SinkMonitor {
    pub name: &'static str,
    stats: Arc<SinkStats>,
}

impl SinkMonitor {
    pub fn stats(&self) -> SinkStatsSnapshot {
        self.stats.snapshot()
    }
}

impl Drop for SinkHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Samples one sink lost in one overflow episode.
struct Episode {
    started: Instant,
    count: u64,
    from: UnixNanos,
    to: UnixNanos,
    tags: BTreeSet<String>,
    /// log → (lowest number, highest number + 1).
    logs: BTreeMap<u64, (u64, u64)>,
}

impl Episode {
    fn new() -> Episode {
        Episode {
            started: Instant::now(),
            count: 0,
            from: UnixNanos::MAX,
            to: UnixNanos::MIN,
            tags: BTreeSet::new(),
            logs: BTreeMap::new(),
        }
    }

    /// Adds what `other` (a transaction's part) lost.
    fn merge(&mut self, other: Episode) {
        self.count += other.count;
        self.from = self.from.min(other.from);
        self.to = self.to.max(other.to);
        for t in other.tags {
            if self.tags.len() >= MAX_GAP_TAGS {
                break;
            }
            self.tags.insert(t);
        }
        for (log, (a, b)) in other.logs {
            let e = self.logs.entry(log).or_insert((a, b));
            e.0 = e.0.min(a);
            e.1 = e.1.max(b);
        }
    }

    fn add(&mut self, lost: &[FreshSample]) {
        for f in lost {
            self.count += 1;
            self.from = self.from.min(f.sample.time);
            self.to = self.to.max(f.sample.time);
            if self.tags.len() < MAX_GAP_TAGS {
                self.tags.insert(f.sample.tag.to_string());
            }
            let e = self.logs.entry(f.log).or_insert((f.seq, f.seq + 1));
            e.0 = e.0.min(f.seq);
            e.1 = e.1.max(f.seq + 1);
        }
    }
}

/// A sink's loss to record in the gap audit.
pub struct SinkGap {
    pub row: GapRow,
    /// Samples lost (exact; the row's number range may also hold samples that were kept).
    pub missing: u64,
    pub sink: &'static str,
}

struct FeedSpool {
    name: &'static str,
    writer: SpoolWriter,
    stats: Arc<SinkStats>,
    episode: Option<Episode>,
    /// What the transaction in progress could not spool (the spool is full), applied to the
    /// episode when the store commits: `None` when it took everything.
    staged: Option<Episode>,
    done: Vec<SinkGap>,
}

impl FeedSpool {
    fn note_error(&self, e: &std::io::Error, what: &str) {
        let before = self.stats.spool_errors.fetch_add(1, Ordering::Relaxed);
        if before.is_power_of_two() || before == 0 {
            warn!(sink = self.name, error = %e, "{what}; the store's transaction is rolled back and the carousel re-sends it");
        }
    }

    fn close_episode(&mut self) {
        let Some(e) = self.episode.take() else { return };
        let now = crate::unix_now();
        for (log, (start, end)) in &e.logs {
            self.done.push(SinkGap {
                row: GapRow {
                    id: 0,
                    log: *log,
                    start_seq: *start,
                    end_seq: *end,
                    from_ts: Some(e.from),
                    to_ts: Some(e.to),
                    reason: format!("{}_spool_full", self.name),
                    state: "lost".into(),
                    opened_at: now,
                    closed_at: Some(now),
                    tags: e.tags.iter().cloned().collect(),
                },
                missing: if e.logs.len() == 1 {
                    e.count
                } else {
                    // Split by log: the number range is the best measure per log.
                    end - start
                },
                sink: self.name,
            });
        }
        warn!(
            sink = self.name,
            samples = e.count,
            "sink spool full: samples dropped for this sink (the store keeps them); recorded as a lost gap"
        );
    }
}

/// The store's writer's handle on every sink's spool.
pub struct SinkFeed {
    spools: Vec<FeedSpool>,
    history_seen: Arc<AtomicBool>,
}

impl SinkFeed {
    /// Notes that history is flowing (the MQTT publisher then leaves live values to it).
    pub fn note_history(&self) {
        if !self.history_seen.load(Ordering::Relaxed) {
            self.history_seen.store(true, Ordering::Relaxed);
        }
    }

    /// Appends samples the store is taking, in the transaction in progress, to every sink's
    /// spool; what does not fit (a full spool) is kept for the gap audit once the store
    /// commits. Never blocks on a destination. An I/O error fails the store's transaction
    /// (the caller [`rollback`](Self::rollback)s, and the carousel re-sends the samples to both):
    /// a sample must never be in the store without being in every spool, or the other way
    /// round (see `spool.rs`, "Durability").
    pub fn append(&mut self, fresh: &[FreshSample]) -> std::io::Result<()> {
        if fresh.is_empty() {
            return Ok(());
        }
        for s in &mut self.spools {
            let taken = match s.writer.append(fresh) {
                Ok(n) => n,
                Err(e) => {
                    s.note_error(&e, "cannot write the sink's spool");
                    return Err(e);
                }
            };
            if taken < fresh.len() {
                s.staged
                    .get_or_insert_with(Episode::new)
                    .add(&fresh[taken..]);
            }
        }
        Ok(())
    }

    /// Writes out and syncs what was appended, before the store commits.
    pub fn prepare(&mut self) -> std::io::Result<()> {
        for s in &mut self.spools {
            if let Err(e) = s.writer.prepare() {
                s.note_error(&e, "cannot sync the sink's spool");
                return Err(e);
            }
        }
        Ok(())
    }

    /// Where each spool's prepared records end, for the store to record in its transaction.
    pub fn heads(&self) -> Vec<(&'static str, (u64, u64))> {
        self.spools
            .iter()
            .map(|s| (s.name, s.writer.pending_head()))
            .collect()
    }

    /// The store committed: the samples become readable to the sinks, and what a full spool
    /// refused is counted.
    pub fn publish(&mut self) {
        for s in &mut self.spools {
            s.writer.publish();
            match s.staged.take() {
                Some(lost) => {
                    s.stats
                        .overflow_samples
                        .fetch_add(lost.count, Ordering::Relaxed);
                    match s.episode.as_mut() {
                        Some(e) => e.merge(lost),
                        None => s.episode = Some(lost),
                    }
                }
                None if s.episode.is_some() => s.close_episode(),
                None => {}
            }
            if s.episode
                .as_ref()
                .is_some_and(|e| e.started.elapsed() >= OVERFLOW_RECORD_EVERY)
            {
                s.close_episode();
            }
        }
    }

    /// The store's transaction failed: what it appended to the spools is cut off again.
    pub fn rollback(&mut self) {
        for s in &mut self.spools {
            s.writer.rollback();
            s.staged = None;
        }
    }

    /// Losses to record: overflow episodes that ended (or lasted a minute), and corrupt spool
    /// records the sinks met. `flush` ends the open episodes too (shutdown).
    pub fn take_gaps(&mut self, flush: bool) -> Vec<SinkGap> {
        let mut out = Vec::new();
        for s in &mut self.spools {
            if flush
                || s.episode
                    .as_ref()
                    .is_some_and(|e| e.started.elapsed() >= OVERFLOW_RECORD_EVERY)
            {
                s.close_episode();
            }
            let corrupt: Vec<u64> = std::mem::take(
                &mut *s
                    .writer
                    .shared()
                    .corrupt
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()),
            );
            let now = crate::unix_now();
            for bytes in corrupt {
                s.done.push(SinkGap {
                    row: GapRow {
                        id: 0,
                        log: 0,
                        start_seq: 0,
                        end_seq: 0,
                        from_ts: None,
                        to_ts: None,
                        reason: format!("{}_spool_corrupt", s.name),
                        state: "lost".into(),
                        opened_at: now,
                        closed_at: Some(now),
                        tags: vec![format!("{bytes} bytes unreadable")],
                    },
                    missing: 0,
                    sink: s.name,
                });
            }
            s.stats
                .gaps_recorded
                .fetch_add(s.done.len() as u64, Ordering::Relaxed);
            out.append(&mut s.done);
        }
        out
    }
}

/// Logs one line per sink every `every`.
pub async fn status_log(sinks: Vec<SinkMonitor>, every: Duration) {
    if sinks.is_empty() {
        return;
    }
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tick.tick().await;
        for m in &sinks {
            let s = m.stats();
            tracing::info!(
                sink = m.name,
                connected = s.connected,
                spooled = s.appended,
                delivered = s.delivered,
                spool_bytes = s.spool_bytes,
                overflow = s.overflow_samples,
                gaps = s.gaps_recorded,
                failures = s.failures,
                "sink status"
            );
        }
    }
}

/// Opens every configured sink's spool and starts its task. Returns the feed for the store's
/// writer (`None` when no sink is configured) and the running sinks.
pub fn start(
    config: &RxConfig,
    state: Arc<State>,
) -> anyhow::Result<(Option<SinkFeed>, Vec<SinkHandle>)> {
    let history_seen = Arc::new(AtomicBool::new(false));
    let mut spools = Vec::new();
    let mut handles = Vec::new();
    // Where the store's last commit says each spool ends (see spool.rs, "Durability").
    let heads = crate::store::db::spool_heads(&config.store.path);
    let mut open = |name: &'static str, cfg: &config::rx::Spool| {
        let committed = heads.get(name).copied();
        let (writer, shared) = SpoolWriter::open(&cfg.dir, cfg.max_bytes, committed)
            .with_context(|| format!("opening the {name} sink's spool in {}", cfg.dir.display()))?;
        let reader = SpoolReader::open(&cfg.dir, shared.clone())
            .with_context(|| format!("reading the {name} sink's spool in {}", cfg.dir.display()))?;
        let stats = shared.stats.clone();
        spools.push(FeedSpool {
            name,
            writer,
            stats: stats.clone(),
            episode: None,
            staged: None,
            done: Vec::new(),
        });
        anyhow::Ok((reader, stats))
    };
    if let Some(m) = &config.mqtt {
        let (reader, stats) = open("mqtt", &m.spool)?;
        let task = tokio::spawn(mqtt::run(
            m.clone(),
            reader,
            state.clone(),
            stats.clone(),
            history_seen.clone(),
        ));
        handles.push(SinkHandle {
            name: "mqtt",
            stats,
            task,
        });
    }
    if let Some(p) = &config.postgres {
        let (reader, stats) = open("postgres", &p.spool)?;
        let task = tokio::spawn(postgres::run(p.clone(), reader, stats.clone()));
        handles.push(SinkHandle {
            name: "postgres",
            stats,
            task,
        });
    }
    if let Some(n) = &config.nats {
        let (reader, stats) = open("nats", &n.spool)?;
        let task = tokio::spawn(nats::run(n.clone(), reader, stats.clone()));
        handles.push(SinkHandle {
            name: "nats",
            stats,
            task,
        });
    }
    let feed = (!spools.is_empty()).then_some(SinkFeed {
        spools,
        history_seen,
    });
    Ok((feed, handles))
}

/// Reconnection delays: 0.5 s doubling to 30 s, with a little jitter so that several
/// receivers do not retry in step.
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new()
    }
}

impl Backoff {
    pub const FIRST: Duration = Duration::from_millis(500);
    pub const MAX: Duration = Duration::from_secs(30);

    pub fn new() -> Backoff {
        Backoff { next: Self::FIRST }
    }

    pub fn reset(&mut self) {
        self.next = Self::FIRST;
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        let jitter = u64::from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0),
        ) % (d.as_millis() as u64 / 10 + 1);
        d + Duration::from_millis(jitter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::model::{Quality, Value};

    fn fresh(tag: &str, t: i64, seq: u64) -> FreshSample {
        FreshSample {
            sample: SpoolSample {
                tag: Arc::from(tag),
                value: Value::Int32(t as i32),
                quality: Quality::GOOD,
                time: t,
                received: t,
            },
            log: 7,
            seq,
        }
    }

    #[test]
    fn overflow_is_counted_and_becomes_a_lost_gap() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, _shared) = SpoolWriter::open(dir.path(), 1 << 20, None).unwrap();
        let stats = Arc::new(SinkStats::default());
        let mut feed = SinkFeed {
            spools: vec![FeedSpool {
                name: "mqtt",
                writer,
                stats: stats.clone(),
                episode: None,
                staged: None,
                done: Vec::new(),
            }],
            history_seen: Arc::new(AtomicBool::new(false)),
        };
        let many: Vec<FreshSample> = (0..200_000)
            .map(|i| fresh(if i % 2 == 0 { "a/x" } else { "a/y" }, i, 1000 + i as u64))
            .collect();
        feed.append(&many).unwrap();
        feed.prepare().unwrap();
        feed.publish();
        let lost = stats.overflow_samples.load(Ordering::Relaxed);
        assert!(lost > 0 && lost < 200_000, "{lost}");
        // Still overflowing: nothing recorded yet; flushed (or once the spool takes samples
        // again) it is.
        assert!(feed.take_gaps(false).is_empty());
        let gaps = feed.take_gaps(true);
        assert_eq!(gaps.len(), 1);
        let g = &gaps[0];
        assert_eq!(g.missing, lost);
        assert_eq!(g.row.reason, "mqtt_spool_full");
        assert_eq!(g.row.state, "lost");
        assert_eq!(g.row.end_seq, 1000 + 200_000);
        assert_eq!(g.row.start_seq, 1000 + (200_000 - lost));
        assert_eq!(g.row.to_ts, Some(199_999));
        assert_eq!(g.row.tags, ["a/x", "a/y"]);
        assert_eq!(stats.gaps_recorded.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn backoff_doubles_to_its_ceiling() {
        let mut b = Backoff::new();
        let first = b.next_delay();
        assert!(first >= Backoff::FIRST && first <= Backoff::FIRST * 11 / 10);
        for _ in 0..20 {
            b.next_delay();
        }
        assert!(b.next_delay() <= Backoff::MAX * 11 / 10);
        b.reset();
        assert!(b.next_delay() < Duration::from_secs(1));
    }
}
