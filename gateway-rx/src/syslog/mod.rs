//! Syslog forwarding, the receiver's half: batches of the link's syslog stream go, in order,
//! into a durable spool ([`spool`]), and each configured output ([`forward`]) delivers from it
//! at its own cursor.
//!
//! **Loss is known exactly.** Records are numbered per transmitter session, so a gap in the
//! numbers is exactly the count lost on the link beyond FEC repair; each batch also carries how
//! many messages gateway-tx dropped itself (cumulative). Where either grows, a marker
//! ([`marker`]), an RFC 5424 message of gateway-rx's own, goes into the spool at that point,
//! ahead of the messages that followed the loss. Messages this receiver could not spool (the
//! spool full while a collector is down) are counted and reported by the next marker.
//!
//! **Across restarts.** Each spool entry records where the stream stood after it (session,
//! next record number, transmitter drops), so a restarted receiver resumes the count: records
//! of the same session already spooled are not taken again, and records it missed while it
//! was down (same session, or a transmitter that restarted meanwhile) are reported by a marker.
//! A receiver that never saw this transmitter starts counting at the first batch it receives.

pub mod forward;
pub mod marker;
pub mod spool;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use config::syslog_rx::SyslogRx;
use protocol::message::SyslogBatch;
use tracing::{info, warn};

use marker::Loss;
use spool::{Committed, Cursors, KIND_MARKER, KIND_MESSAGE, SpoolWriter, StreamPoint};

observe::family! {
    /// Syslog messages that did not reach the spool, by where they were lost.
    pub const MISSING = counter "gateway_rx_syslog_missing_total" by "where";
}

observe::counters! {
    /// Counters of the syslog stream on the receiver.
    #[derive(Debug, Default)]
    pub struct SyslogRxStats;
    /// A copy of [`SyslogRxStats`].
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
    pub struct SyslogRxStatsSnapshot;

    /// Syslog messages received from the link and spooled.
    spooled => counter("gateway_rx_syslog_spooled_total"), json, row "messages spooled";
    /// Loss markers put into the stream.
    markers => counter("gateway_rx_syslog_markers_total"), json, row "loss markers" bad;
    lost_link => MISSING["link"], json, row "lost on the link (beyond FEC)" bad;
    dropped_tx => MISSING["transmitter"], json, row "dropped by gateway-tx" bad;
    spool_full => MISSING["spool_full"], json, row "not spooled (spool full)" bad;
    /// Records received twice (a replay after a restart) and not spooled again.
    duplicates => counter("gateway_rx_syslog_duplicates_total"), json, row "duplicates skipped";
    /// Spool appends that failed on the disk.
    spool_errors => counter("gateway_rx_syslog_spool_errors_total"), json, row "spool write errors" bad;
    /// Bytes the syslog spool holds on disk.
    spool_bytes => gauge("gateway_rx_syslog_spool_bytes"), json, row "spool bytes";
}

/// What the link task hands syslog batches to.
pub struct SyslogIn {
    shared: Arc<Shared>,
    /// Where the stream stands: the session, the next record number expected and the
    /// transmitter's drop count already reported; `None` before the first batch ever.
    at: Option<StreamPoint>,
    /// What went missing and no marker has reported yet (one did not fit the spool).
    pending: Loss,
    host: String,
    entries: Vec<Vec<u8>>,
}

/// What the link side and the outputs share.
pub struct Shared {
    pub writer: Mutex<SpoolWriter>,
    pub cursors: Cursors,
    pub committed: tokio::sync::watch::Receiver<Committed>,
    pub stats: Arc<SyslogRxStats>,
    pub dir: std::path::PathBuf,
}

impl Shared {
    fn writer(&self) -> std::sync::MutexGuard<'_, SpoolWriter> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The running syslog forwarder.
pub struct Syslog {
    pub input: SyslogIn,
    pub stats: Arc<SyslogRxStats>,
    pub outputs: Vec<forward::OutputMonitor>,
    pub tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Opens the spool and starts every output.
pub fn start(config: &SyslogRx) -> anyhow::Result<Syslog> {
    let dir = &config.spool.dir;
    let (writer, at, committed) = SpoolWriter::open(dir, config.spool.max_bytes)
        .with_context(|| format!("opening the syslog spool in {}", dir.display()))?;
    info!(dir = %dir.display(), resumed = ?at, "syslog spool open");
    let stats = Arc::new(SyslogRxStats::default());
    let shared = Arc::new(Shared {
        writer: Mutex::new(writer),
        cursors: Cursors::default(),
        committed,
        stats: stats.clone(),
        dir: dir.clone(),
    });
    let mut tasks = Vec::new();
    let mut outputs = Vec::new();
    // Every output's place is known before anything is removed.
    let starts: Vec<_> = config
        .forward
        .iter()
        .map(|f| forward::Output::new(f.clone(), shared.clone()))
        .collect::<anyhow::Result<_>>()?;
    for o in starts {
        outputs.push(o.monitor());
        tasks.push(tokio::spawn(o.run()));
    }
    tasks.push(tokio::spawn(keep(shared.clone())));
    Ok(Syslog {
        input: SyslogIn {
            shared,
            at,
            pending: Loss::default(),
            host: marker::host_name(),
            entries: Vec::new(),
        },
        stats,
        outputs,
        tasks,
    })
}

/// Syncs the spool to disk and removes what every output has read, a few times a second. The
/// link task only flushes (what it appends is readable at once); a power loss can cost what
/// was appended since the last sync.
async fn keep(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tick.tick().await;
        let mut w = shared.writer();
        if let Err(e) = w.sync().and_then(|()| w.remove_consumed(&shared.cursors)) {
            warn!(error = %e, "syncing the syslog spool failed");
        }
        shared
            .stats
            .spool_bytes
            .store(w.total_bytes(), Ordering::Relaxed);
    }
}

impl SyslogIn {
    /// The record number and transmitter drop count a batch of `session` should follow.
    fn expected(&self, session: u64, from_start: bool, first_seq: u64) -> (u64, u64) {
        match self.at {
            Some(at) if at.session == session => (at.next_seq, at.dropped),
            // A new session: its records count from 0, and its drops too.
            Some(_) => (0, 0),
            // The first session this receiver sees, followed from its start.
            None if from_start => (0, 0),
            // Joined under way: nothing before this batch is known.
            None => (first_seq, 0),
        }
    }

    /// Spools a batch of session `session`, with a marker first where messages went missing.
    /// `from_start`: this is the first syslog message of the session delivered, and the
    /// decoder followed the stream from its start (so records before it were lost, not sent
    /// before this receiver listened).
    pub fn submit(&mut self, session: u64, from_start: bool, batch: SyslogBatch) {
        let stats = &self.shared.stats;
        let (expected, dropped_seen) = self.expected(session, from_start, batch.first_seq);
        let lost = batch.first_seq.saturating_sub(expected);
        let new_tx = batch.dropped.saturating_sub(dropped_seen);
        stats.lost_link.fetch_add(lost, Ordering::Relaxed);
        stats.dropped_tx.fetch_add(new_tx, Ordering::Relaxed);
        let loss = Loss {
            link: self.pending.link.saturating_add(lost),
            transmitter: self.pending.transmitter.saturating_add(new_tx),
            spool: self.pending.spool,
        };
        // Records already spooled (the same session replayed after a restart) are skipped.
        let skip = usize::try_from(expected.saturating_sub(batch.first_seq))
            .unwrap_or(usize::MAX)
            .min(batch.records.len());
        let n = batch.records.len();
        let dropped = batch.dropped.max(dropped_seen);
        self.entries.clear();
        let mut at = StreamPoint {
            session,
            next_seq: batch.first_seq.max(expected),
            dropped,
        };
        if !loss.is_empty() {
            let now = crate::unix_now();
            let mut e = Vec::new();
            spool::entry_into(
                &mut e,
                KIND_MARKER,
                at,
                &marker::marker(&loss, &self.host, now),
            );
            self.entries.push(e);
        }
        for r in &batch.records[skip..] {
            at.next_seq = at.next_seq.saturating_add(1);
            let mut e = Vec::with_capacity(spool::ENTRY_HEAD + r.bytes.len());
            spool::entry_into(&mut e, KIND_MESSAGE, at, &r.bytes);
            self.entries.push(e);
        }
        if self.entries.is_empty() {
            return;
        }
        let appended = {
            let mut w = self.shared.writer();
            let r = w
                .append(&self.entries, &self.shared.cursors)
                .and_then(|ok| w.flush().map(|()| ok));
            stats.spool_bytes.store(w.total_bytes(), Ordering::Relaxed);
            r
        };
        let spooled = n - skip;
        stats.duplicates.fetch_add(skip as u64, Ordering::Relaxed);
        match appended {
            Ok(true) => {
                if !loss.is_empty() {
                    stats.markers.fetch_add(1, Ordering::Relaxed);
                    warn!(
                        lost_on_link = loss.link,
                        dropped_by_transmitter = loss.transmitter,
                        not_spooled = loss.spool,
                        "syslog messages missing; a marker takes their place"
                    );
                }
                self.pending = Loss::default();
                stats.spooled.fetch_add(spooled as u64, Ordering::Relaxed);
            }
            Ok(false) | Err(_) => {
                if let Err(e) = appended {
                    stats.spool_errors.fetch_add(1, Ordering::Relaxed);
                    warn!(error = %e, "syslog spool append failed; messages counted as not spooled");
                }
                // The stream point moves on all the same: the next marker that fits reports
                // these messages and what this one would have said.
                self.pending = Loss {
                    spool: loss.spool.saturating_add(spooled as u64),
                    ..loss
                };
                stats
                    .spool_full
                    .fetch_add(spooled as u64, Ordering::Relaxed);
            }
        }
        self.at = Some(at);
    }
}

#[cfg(test)]
mod tests;
