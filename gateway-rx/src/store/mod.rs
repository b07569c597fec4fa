//! The embedded historian store: every history sample received, kept once per (tag, source
//! timestamp) in SQLite, with the history sequence numbers received, the gaps and their audit.
//!
//! # Threads and queues
//!
//! The link task hands each history batch to [`HistorySink::submit`], which never blocks: it
//! puts the batch on a bounded channel ([`QUEUE_BATCHES`] batches and [`QUEUE_BYTES`] bytes of
//! samples, whichever comes first) to a dedicated writer thread that owns the database. When
//! the channel is full the batch is dropped, counted, and its sequence range noted: its numbers stay missing, so the writer records a gap (reason
//! `receiver_queue_full`) that the carousel heals. The writer commits what it took in one
//! transaction (samples, received ranges, gaps), so a crash leaves a consistent store. A
//! transaction that fails (disk full, I/O error) is rolled back whole: its samples are counted
//! as not stored and their numbers stay missing (a gap the carousel heals), and the writer
//! forgets what it learnt in memory during it (tag ids, catalogues saved, sequence tracking,
//! gap counts and audit lines), so that its memory is never ahead of the database.
//!
//! Batches naming a catalogue this receiver does not know yet (it just started and the
//! catalogue has not arrived) wait in memory, at most [`PENDING_SAMPLES`] samples; beyond that
//! the oldest are dropped and counted, and their numbers stay missing, as above.
//!
//! # Opening
//!
//! The database (and its directory) is created when the first history arrives, so a receiver
//! whose transmitter sends no history needs no writable `/var/lib/gateway`. A store that cannot
//! be opened is retried every few seconds; what arrives meanwhile is counted as not stored and
//! its numbers stay missing.
//!
//! # Retention
//!
//! About once a minute: samples older than `max_age` go; while the database uses more than
//! `max_bytes`, the oldest twentieth of the stored time span goes. Deletions by retention are
//! policy, not loss: they are counted and logged, not recorded as gaps.

pub mod cli;
pub mod db;
pub mod gaps;
pub mod ranges;
mod writer;

use std::sync::atomic::Ordering;
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use config::rx::Store as StoreConfig;
use protocol::message::HistoryBatch;

use crate::state::State;

/// History batches waiting for the writer, at most.
pub const QUEUE_BATCHES: usize = 4096;
/// Bytes of samples waiting for the writer, at most (a batch's samples and their text): 4096
/// batches could otherwise hold up to 16 MiB each.
pub const QUEUE_BYTES: usize = 256 << 20;
/// Samples of not-yet-known catalogues held, at most.
pub const PENDING_SAMPLES: usize = 200_000;
/// Receiver-queue drops remembered for gap reasons, at most.
const OVERFLOW_RANGES: usize = 4096;

observe::counters! {
    /// Counters of the store, for status and tests.
    #[derive(Debug, Default)]
    pub struct StoreStats;
    /// A copy of [`StoreStats`].
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
    pub struct StoreStatsSnapshot;

    /// History batches the link handed to the store.
    batches_received => counter("gateway_rx_store_batches_received_total"), json;
    /// History samples the link handed to the store.
    samples_received => counter("gateway_rx_store_samples_received_total"), json, row "samples received";
    /// Samples new to the store.
    samples_inserted => counter("gateway_rx_store_samples_inserted_total"), json, row "samples stored";
    /// Samples whose (tag, source time) was already stored (re-sends of the carousel).
    samples_duplicate => counter("gateway_rx_store_samples_duplicate_total"), json, row "already stored (re-sends)";
    /// History batches dropped because the writer's queue was full (recorded as gaps).
    queue_full_batches => counter("gateway_rx_store_queue_full_batches_total"), json;
    /// History samples dropped because the writer's queue was full (recorded as gaps).
    queue_full_samples => counter("gateway_rx_store_queue_full_samples_total"), json, row "dropped: writer queue full" warn;
    /// History samples of a catalogue the receiver did not know, dropped beyond the holding
    /// bound (their numbers stay missing: gaps).
    unknown_catalogue_dropped => counter("gateway_rx_store_unknown_catalogue_dropped_total"), json, row "dropped: unknown catalogue" warn;
    /// Received while the store was disabled or could not be opened, or taken by a
    /// transaction that failed.
    not_stored => counter("gateway_rx_store_not_stored_total"), json, row "not stored (disabled, unopenable, failed transaction)" warn;
    /// Transactions that failed (a full disk, an I/O error): rolled back, re-sent by the
    /// carousel.
    write_errors => counter("gateway_rx_store_write_errors_total"), json, row "write errors" bad;
    /// History gaps opened.
    gaps_opened => counter("gateway_rx_store_gaps_opened_total"), json, row "gaps opened" warn;
    /// History gaps healed by re-sends.
    gaps_healed => counter("gateway_rx_store_gaps_healed_total"), json, row "gaps healed";
    /// History gaps the transmitter's buffer no longer holds: lost for good.
    gaps_expired => counter("gateway_rx_store_gaps_expired_total"), json, row "gaps expired (lost)" bad;
    /// History gaps given up beyond the tracking bounds.
    gaps_abandoned => counter("gateway_rx_store_gaps_abandoned_total"), json, row "gaps abandoned" bad;
    /// History gaps open now.
    open_gaps => gauge("gateway_rx_store_open_gaps"), json, row "gaps open";
    /// Samples deleted by retention (policy, not loss).
    retention_deleted => counter("gateway_rx_store_retention_deleted_total"), json;
    /// Bytes the store's database uses.
    store_bytes => gauge("gateway_rx_store_bytes"), json;
    /// Transactions committed.
    commits => counter("gateway_rx_store_commits_total"), json;
}

#[derive(Debug, Default)]
struct Shared {
    stats: StoreStats,
    stop: std::sync::atomic::AtomicBool,
    /// (log, start, end) of batches dropped because the queue was full.
    overflow: Mutex<Vec<(u64, u64, u64)>>,
    /// Bytes of the batches on the channel ([`batch_bytes`]).
    queued_bytes: std::sync::atomic::AtomicUsize,
}

/// What a batch holds in memory, for the queue's byte bound.
fn batch_bytes(b: &HistoryBatch) -> usize {
    b.samples
        .iter()
        .map(|s| std::mem::size_of_val(s) + s.value.byte_len())
        .sum()
}

impl Shared {
    /// A batch left the channel for the writer.
    fn dequeued(&self, b: &HistoryBatch) {
        self.queued_bytes
            .fetch_sub(batch_bytes(b), Ordering::Relaxed);
    }
}

/// The link task's handle on the store. Cloning is cheap.
#[derive(Clone)]
pub struct HistorySink {
    tx: SyncSender<HistoryBatch>,
    shared: Arc<Shared>,
}

impl HistorySink {
    /// Hands a batch to the writer; never blocks (see the module doc for a full queue).
    pub fn submit(&self, batch: HistoryBatch) {
        let s = &self.shared.stats;
        s.batches_received.fetch_add(1, Ordering::Relaxed);
        s.samples_received
            .fetch_add(batch.samples.len() as u64, Ordering::Relaxed);
        let bytes = batch_bytes(&batch);
        let queued = &self.shared.queued_bytes;
        let sent = if queued.load(Ordering::Relaxed).saturating_add(bytes) > QUEUE_BYTES {
            Err(TrySendError::Full(batch))
        } else {
            // Counted before the send, so the writer never takes away more than was added.
            queued.fetch_add(bytes, Ordering::Relaxed);
            self.tx.try_send(batch).inspect_err(|_| {
                queued.fetch_sub(bytes, Ordering::Relaxed);
            })
        };
        match sent {
            Ok(()) => {}
            Err(TrySendError::Full(batch)) | Err(TrySendError::Disconnected(batch)) => {
                let n = batch.samples.len() as u64;
                let before = s.queue_full_batches.fetch_add(1, Ordering::Relaxed);
                s.queue_full_samples.fetch_add(n, Ordering::Relaxed);
                if before.is_power_of_two() {
                    tracing::warn!(
                        batches = before + 1,
                        first_seq = batch.first_seq,
                        samples = n,
                        "history store queue full: batch dropped; its samples are recorded as a gap for the carousel to heal"
                    );
                }
                if n > 0 {
                    let mut o = self
                        .shared
                        .overflow
                        .lock()
                        .unwrap_or_else(|e| e.into_inner());
                    if o.len() >= OVERFLOW_RANGES {
                        o.remove(0);
                    }
                    o.push((
                        batch.log,
                        batch.first_seq,
                        batch.first_seq.saturating_add(n),
                    ));
                }
            }
        }
    }

    pub fn stats(&self) -> StoreStatsSnapshot {
        self.shared.stats.snapshot()
    }
}

/// The running store: the writer thread and the sink that feeds it. Dropping it stops the
/// writer after it has committed what was queued.
pub struct HistoryStore {
    sink: Option<HistorySink>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl HistoryStore {
    pub fn start(config: StoreConfig, state: Arc<State>) -> anyhow::Result<HistoryStore> {
        HistoryStore::start_with_sinks(config, state, None)
    }

    /// Starts the store with `feed`: every sample new to the store goes to the sinks' spools
    /// (see `crate::sinks`).
    pub fn start_with_sinks(
        config: StoreConfig,
        state: Arc<State>,
        feed: Option<crate::sinks::SinkFeed>,
    ) -> anyhow::Result<HistoryStore> {
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE_BATCHES);
        let shared = Arc::new(Shared::default());
        let mut w = writer::Writer::new(config, state, rx, shared.clone());
        w.set_sinks(feed);
        let thread = std::thread::Builder::new()
            .name("history-store".into())
            .spawn(move || w.run())?;
        Ok(HistoryStore {
            sink: Some(HistorySink {
                tx,
                shared: shared.clone(),
            }),
            shared,
            thread: Some(thread),
        })
    }

    /// The sink for the link task.
    pub fn sink(&self) -> Option<HistorySink> {
        self.sink.clone()
    }

    pub fn stats(&self) -> StoreStatsSnapshot {
        self.shared.stats.snapshot()
    }
}

impl Drop for HistoryStore {
    fn drop(&mut self) {
        self.sink = None;
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            // The writer commits what it holds and ends within a few hundred milliseconds; a
            // store being replaced (a restart in the same process) must not overlap with it.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while !t.is_finished() && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            if t.is_finished() {
                let _ = t.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::model::{Quality, Sample, Value};

    /// Batches of large text used to queue by count alone (4096 of up to 16 MiB each); the
    /// queue is bounded in bytes too, and what it refuses is counted and noted for the gap.
    #[test]
    fn the_writer_queue_is_bounded_in_bytes() {
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE_BATCHES);
        let sink = HistorySink {
            tx,
            shared: Arc::new(Shared::default()),
        };
        let batch = |first: u64| HistoryBatch {
            catalogue: 1,
            log: 1,
            first_seq: first,
            head_seq: first + 1,
            oldest_seq: 0,
            samples: vec![Sample {
                tag: 0,
                value: Value::String("x".repeat(1 << 20)),
                quality: Quality::GOOD,
                time: 0,
            }],
        };
        for i in 0..400 {
            sink.submit(batch(i));
        }
        let s = sink.stats();
        let taken = 400 - s.queue_full_batches;
        assert!(taken <= (QUEUE_BYTES >> 20) as u64, "{taken} MiB queued");
        assert!(s.queue_full_batches >= 400 - (QUEUE_BYTES >> 20) as u64);
        assert!(sink.shared.queued_bytes.load(Ordering::Relaxed) <= QUEUE_BYTES);
        let noted = sink.shared.overflow.lock().map(|o| o.len()).unwrap_or(0);
        assert_eq!(noted as u64, s.queue_full_batches);
        // What the writer takes frees room again.
        for b in rx.try_iter().take(10) {
            sink.shared.dequeued(&b);
        }
        let before = sink.stats().queue_full_batches;
        sink.submit(batch(1_000));
        assert_eq!(sink.stats().queue_full_batches, before);
    }
}
