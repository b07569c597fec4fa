//! The history stream on the transmit side: every accepted sample, kept in a bounded on-disk
//! buffer and sent with its own sequence number; recent windows re-sent by a carousel; older
//! ranges re-sent on an operator's backfill request.
//!
//! # What the history gets
//!
//! Every sample the tag table *reports*: each change beyond the tag's deadband, each quality
//! change, and each tag's first value. That is exactly the sequence the live stream would carry
//! if it never superseded anything (the live stream keeps only the latest value per tag when the
//! link is slow; the history keeps every reported sample). Values inside the deadband are not
//! history: the deadband is the plant engineer's statement of what counts as a change.
//!
//! # Flow
//!
//! ```text
//! tag table ──push──► HistoryTap ──► history thread ──► HistoryLog (segments on disk)
//!   (seq given here, in report order)       │
//!                                           ├─ live: each record once, as soon as appended
//!                                           ├─ backfill: operator ranges, within the share
//!                                           │   (older than the buffer: asks the source
//!                                           │    historians, whose values come in at the tap)
//!                                           └─ carousel: the last window, over and over,
//!                                              oldest first, within the share
//!                                                   ▼
//!                                           HistoryOutlet (bounded) ──► link sender
//! ```
//!
//! # Queues and their policies
//!
//! - The tap holds at most [`TAP_CAPACITY`] samples waiting for the disk. A sample arriving
//!   when it is full is dropped but keeps its sequence number, so the receiver sees the hole
//!   and records a gap that never heals; the drop is counted and logged. (It needs the disk to
//!   stall for about 25 s at 10,000 samples a second.)
//! - Live records wait in memory (at most [`LIVE_MEMORY`] bytes of their encodings) for room in
//!   the outlet; beyond that the oldest are left to be read back from disk, so a slow link
//!   delays live history but never loses it.
//! - The outlet holds at most [`OUTLET_CAPACITY`] messages; the history thread waits for room.
//!
//! # Catalogue versions
//!
//! A record stores its tag as an index into the catalogue its segment names; the log keeps each
//! catalogue's tag names beside the segments. Everything is sent in the *current* catalogue:
//! records of an older version are re-indexed by tag name, and a record whose tag no longer
//! exists cannot be expressed on the link and is skipped (counted): the receiver, if it missed
//! that sample, keeps an open gap for it.

pub mod backfill;
pub mod historian;
pub mod log;
mod records;
pub mod segment;
mod stats;
mod thread;

pub use stats::{HistoryStats, HistoryStatsSnapshot};

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;
use config::tx::{History as HistoryConfig, TxLink};
use protocol::catalogue::Catalogue;
use protocol::encoder::{Encoder, EncoderConfig};
use protocol::model::Sample;

pub use log::{HistoryLog, LogConfig, LogCursor, LogError, LogStats, Record};

/// Samples waiting for the disk, at most.
pub const TAP_CAPACITY: usize = 256 * 1024;
/// Bulk producers wait while more than this is not yet handed to the link (see
/// [`HistoryTap::backlog`]; a quarter of the tap: the rest is room for live samples while the
/// disk catches up).
pub const TAP_BULK_LIMIT: usize = TAP_CAPACITY / 4;
/// Bytes of appended records (their encodings) waiting in memory to be sent live, at most:
/// about 600,000 numeric samples, 75 ms of a bulk source at the thread's full rate, so a link
/// sender that is only late to run does not send the thread back to the disk for them.
pub const LIVE_MEMORY: usize = 16 << 20;
/// History messages waiting for the link sender, at most.
pub const OUTLET_CAPACITY: usize = 256;

/// Where the tag table hands reported samples; gives each its history sequence number.
#[derive(Debug)]
pub struct HistoryTap {
    inner: Mutex<TapInner>,
    cond: Condvar,
}

#[derive(Debug)]
struct TapInner {
    queue: Vec<(u64, Sample)>,
    next_seq: u64,
    dropped: u64,
    /// Appended and not yet handed to the link, as the history thread last said.
    unsent: usize,
}

impl HistoryTap {
    pub fn new(next_seq: u64) -> HistoryTap {
        HistoryTap {
            inner: Mutex::new(TapInner {
                queue: Vec::new(),
                next_seq,
                dropped: 0,
                unsent: 0,
            }),
            cond: Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TapInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues samples in the order given; never blocks on the disk.
    pub fn push(&self, samples: impl IntoIterator<Item = Sample>) {
        let mut inner = self.lock();
        let mut any = false;
        for s in samples {
            let seq = inner.next_seq;
            inner.next_seq += 1;
            if inner.queue.len() >= TAP_CAPACITY {
                inner.dropped += 1;
            } else {
                inner.queue.push((seq, s));
                any = true;
            }
        }
        drop(inner);
        if any {
            self.cond.notify_one();
        }
    }

    /// Takes everything queued, waiting up to `timeout` for something.
    fn take(&self, timeout: Duration) -> Vec<(u64, Sample)> {
        let mut inner = self.lock();
        if inner.queue.is_empty() {
            inner = match self.cond.wait_timeout(inner, timeout) {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            };
        }
        std::mem::take(&mut inner.queue)
    }

    /// The next sequence number the tap will give.
    pub fn next_seq(&self) -> u64 {
        self.lock().next_seq
    }

    /// Samples not yet handed to the link: waiting for the disk, or appended and waiting for
    /// the link. Bulk producers (historian reads) wait while it is over [`TAP_BULK_LIMIT`], so
    /// they never push live samples out of a full tap, and go no faster than the link takes
    /// their samples: faster would only fill the buffer, and past its size limit delete
    /// history never sent.
    pub fn backlog(&self) -> usize {
        let inner = self.lock();
        inner.queue.len() + inner.unsent
    }

    fn set_unsent(&self, unsent: usize) {
        self.lock().unsent = unsent;
    }

    /// Samples dropped because the tap was full.
    pub fn dropped(&self) -> u64 {
        self.lock().dropped
    }
}

/// What sources hand history to: the tap, and the registry where sources with a historian
/// offer to serve backfills.
#[derive(Debug, Clone)]
pub struct SourceHooks {
    pub tap: Arc<HistoryTap>,
    pub historians: Arc<historian::Historians>,
}

/// History messages ready for the link, in order, each already encoded (a `HistoryBatch`
/// body, see `protocol::codec::encode_history_encoded`): the history thread makes them, off
/// the link's thread, from the sample encodings it holds. Bounded; the history thread waits
/// for room.
#[derive(Debug, Default)]
pub struct HistoryOutlet {
    queue: Mutex<VecDeque<Vec<u8>>>,
    notify: tokio::sync::Notify,
}

impl HistoryOutlet {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Vec<u8>>> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The next encoded message for the link.
    pub fn pop(&self) -> Option<Vec<u8>> {
        self.lock().pop_front()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Waits until messages were queued since the last wait.
    pub async fn ready(&self) {
        self.notify.notified().await
    }

    fn room(&self) -> usize {
        OUTLET_CAPACITY.saturating_sub(self.len())
    }

    /// Queues an encoded message for the link. The history thread waits for room first (the
    /// outlet holds [`OUTLET_CAPACITY`]); public for benchmarks that feed the link directly.
    pub fn push(&self, body: Vec<u8>) {
        self.lock().push_back(body);
        self.notify.notify_one();
    }
}

/// The link figures the carousel's budget and batch sizes come from.
#[derive(Debug, Clone, Copy)]
pub struct LinkShape {
    /// Largest message body that travels in one datagram.
    pub body_budget: usize,
    /// Bytes per second the carousel and backfills may use on the link.
    pub resend_bytes_per_s: f64,
    /// Link bytes per message body byte: framing, datagram headers, FEC repair.
    pub overhead_factor: f64,
    /// Link bytes per message besides its body.
    pub per_message: f64,
}

impl LinkShape {
    pub fn new(link: &TxLink, share: f64) -> anyhow::Result<LinkShape> {
        let max_datagram = usize::from(link.mtu).saturating_sub(crate::pacer::IP_UDP_OVERHEAD);
        let probe = Encoder::new(
            EncoderConfig {
                max_datagram,
                data_shards: link.fec.data_shards,
                repair_shards: link.fec.repair_shards,
                interleave: link.fec.interleave,
                flush: link.fec.flush,
                block_span: link.fec.block_span,
                key: link.key,
            },
            0,
        )
        .context("link FEC shape")?;
        let body_budget = probe.max_unfragmented_body();
        let k = f64::from(link.fec.data_shards.max(1));
        let m = f64::from(link.fec.repair_shards);
        // A full datagram of `mtu` bytes carries about `body_budget` of bodies; FEC adds m/k.
        let overhead_factor = f64::from(link.mtu) / body_budget as f64 * (k + m) / k;
        Ok(LinkShape {
            body_budget,
            resend_bytes_per_s: share * link.rate_bps as f64 / 8.0,
            overhead_factor,
            per_message: 4.0 * overhead_factor,
        })
    }

    /// Estimated link bytes of a message whose body is `body` bytes.
    pub fn cost(&self, body: usize) -> f64 {
        body as f64 * self.overhead_factor + self.per_message
    }
}

/// The running history: its tap (for the tag table), outlet (for the link sender) and counters.
/// Dropping it stops the history thread after a last flush to disk.
pub struct History {
    tap: Arc<HistoryTap>,
    outlet: Arc<HistoryOutlet>,
    stats: Arc<HistoryStats>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    log_id: u64,
    historians: Arc<historian::Historians>,
}

impl History {
    /// Opens the buffer in `config.dir` and starts the history thread.
    pub fn start(
        config: &HistoryConfig,
        link: &TxLink,
        catalogue: &Catalogue,
    ) -> anyhow::Result<History> {
        let shape = LinkShape::new(link, config.carousel_share)?;
        let cfg = LogConfig::new(
            config.dir.clone(),
            config.max_bytes,
            config.max_age,
            config.carousel_window,
        );
        let names: Vec<String> = catalogue.iter().map(|t| t.name.to_owned()).collect();
        let log = HistoryLog::open(cfg, catalogue.hash(), names.clone(), crate::unix_now())
            .with_context(|| format!("opening the history buffer in {}", config.dir.display()))?;
        let log_id = log.log_id();
        let tap = Arc::new(HistoryTap::new(log.head()));
        let outlet = Arc::new(HistoryOutlet::default());
        let stats = Arc::new(HistoryStats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let historians = Arc::new(historian::Historians::default());
        let shared = thread::Shared {
            tap: tap.clone(),
            outlet: outlet.clone(),
            stats: stats.clone(),
            historians: historians.clone(),
        };
        let mut thread_state =
            thread::HistoryThread::new(log, shared, shape, config.carousel_window, names);
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("history".into())
            .spawn(move || thread_state.run(&stop2))
            .context("starting the history thread")?;
        Ok(History {
            tap,
            outlet,
            stats,
            stop,
            thread: Some(thread),
            log_id,
            historians,
        })
    }

    /// Where sources with a historian register to serve backfills.
    pub fn historians(&self) -> Arc<historian::Historians> {
        self.historians.clone()
    }

    pub fn hooks(&self) -> SourceHooks {
        SourceHooks {
            tap: self.tap(),
            historians: self.historians(),
        }
    }

    pub fn tap(&self) -> Arc<HistoryTap> {
        self.tap.clone()
    }

    pub fn outlet(&self) -> Arc<HistoryOutlet> {
        self.outlet.clone()
    }

    pub fn stats(&self) -> Arc<HistoryStats> {
        self.stats.clone()
    }

    pub fn log_id(&self) -> u64 {
        self.log_id
    }
}

impl Drop for History {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
