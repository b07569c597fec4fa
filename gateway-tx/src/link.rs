//! The link sender: owns the protocol encoder and the send-only UDP socket, and decides what
//! goes on the link when: the catalogue (on start, then periodically), a heartbeat every
//! interval, live changes as they happen, and the rolling snapshot spread evenly over its
//! period.
//!
//! The socket is never read: it is connected to the receiver only so that `send` needs no
//! address, its receive side is shut down, and its receive buffer is the kernel's minimum.
//! Datagrams leave in batches of equal length (GSO, see `crate::udp`), each batch paced as a
//! whole.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use config::tx::TxLink;
use protocol::catalogue::Catalogue;
use protocol::codec;
use protocol::encoder::{Encoder, EncoderConfig};
use protocol::message::{Heartbeat, Message, SampleBatch, SourceHealth, Stream, TxCounters};
use protocol::model::Sample;
use protocol::stats::EncoderStats;
use tokio::net::UdpSocket;
use tracing::{debug, info, warn};

use crate::pacer::{IP_UDP_OVERHEAD, Pacer};
use crate::tags::TagTable;
use crate::udp::BatchSender;

/// How often a slice of the rolling snapshot goes out. Small enough that the snapshot is
/// smooth, large enough that each slice fills datagrams.
const SNAPSHOT_TICK: Duration = Duration::from_millis(100);

/// Catalogue chunks sent per pass of the send loop (each fills about one datagram).
const CATALOGUE_CHUNKS_PER_PASS: usize = 16;

pub type HealthFn = Arc<dyn Fn() -> Vec<SourceHealth> + Send + Sync>;

/// Encoder counters as last published by [`LinkSender::run`] (after each pass), for status and
/// benchmarks.
pub type SharedEncoderStats = Arc<Mutex<EncoderStats>>;

/// The tag table and config hash to send from, replaced on a live reload (see
/// `Transmitter::reload`): the sender switches to the new table, sends its catalogue at once
/// and then on the usual schedule, in the same session.
pub type TableUpdates = tokio::sync::watch::Receiver<(Arc<TagTable>, u64)>;

observe::counters! {
    /// What left the link socket, counted as it happens (a relaxed atomic add per datagram),
    /// for metrics and the status page: unlike the encoder's counters these are exact while a
    /// long paced backlog drains.
    #[derive(Debug, Default)]
    pub struct LinkCounters;
    /// A copy of [`LinkCounters`].
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
    pub struct LinkCountersSnapshot;

    /// Datagrams sent on the link socket.
    datagrams_sent => counter("gateway_tx_link_datagrams_sent_total"), json, row "datagrams sent";
    /// UDP payload bytes sent on the link socket (IP and UDP headers not included).
    bytes_sent => counter("gateway_tx_link_bytes_sent_total"), json,
        row "bytes sent (UDP payload)";
    /// Datagrams the kernel refused to send (skipped and counted).
    ///
    /// See `is_transient`.
    send_errors => counter("gateway_tx_link_send_errors_total"), json, row "send errors";
    /// Messages the encoder refused (larger than the protocol's limit) and dropped.
    ///
    /// Never a reason to stop sending the rest. Sources refuse values beyond
    /// `protocol::model::MAX_VALUE_BYTES` first, so this stays 0.
    messages_refused => counter("gateway_tx_link_messages_refused_total"), json,
        row "messages refused (too large)" bad;
    /// Pacing backlog: datagrams encoded and waiting for the pacer.
    ///
    /// The encoder's queue, as of the last send.
    pending_datagrams => gauge("gateway_tx_link_pending_datagrams"), json;
    /// Live samples handed to the link.
    samples_sent => counter("gateway_tx_samples_sent_total"), json, row "samples sent (live)";
}

pub struct LinkSender {
    udp: BatchSender,
    encoder: Encoder,
    pacer: Pacer,
    table: Arc<TagTable>,
    health: HealthFn,
    link: TxLink,
    config_hash: u64,
    catalogue: Catalogue,
    session: u64,
    started: Instant,
    body_budget: usize,
    counters: TxCounters,
    send_errors: u64,
    next_heartbeat: Instant,
    next_catalogue: Instant,
    /// Gap before the next catalogue: 1 s after start, doubling up to the configured interval,
    /// so a receiver that missed the first one (or started just after) is not left without a
    /// catalogue, and so without values, for a whole interval.
    catalogue_gap: Duration,
    /// Where the catalogue round in progress goes on: its chunks are built and sent a few per
    /// pass, so that a large catalogue never holds live values back for the whole time it
    /// takes to build or send.
    catalogue_next: Option<usize>,
    next_snapshot: Instant,
    snapshot_cursor: usize,
    shared_stats: SharedEncoderStats,
    link_counters: Arc<LinkCounters>,
    /// History messages to send (the history thread's outlet), when `[history]` is on.
    history: Option<Arc<crate::history::HistoryOutlet>>,
    /// New tables after live reloads, when the daemon supports them.
    reload: Option<TableUpdates>,
    /// Set when the daemon stops: the sender sends what it holds and returns.
    stop: Option<tokio::sync::watch::Receiver<bool>>,
}

impl LinkSender {
    pub async fn new(
        link: TxLink,
        config_hash: u64,
        table: Arc<TagTable>,
        health: HealthFn,
        session: u64,
    ) -> anyhow::Result<LinkSender> {
        let socket = send_only_socket(&link).await?;
        let udp = BatchSender::new(socket, link.destination, usize::MAX)
            .context("setting up the link socket")?;
        let max_datagram = usize::from(link.mtu).saturating_sub(crate::pacer::IP_UDP_OVERHEAD);
        let encoder = Encoder::new(
            EncoderConfig {
                max_datagram,
                data_shards: link.fec.data_shards,
                repair_shards: link.fec.repair_shards,
                interleave: link.fec.interleave,
                flush: link.fec.flush,
                block_span: link.fec.block_span,
                key: link.key,
            },
            session,
        )
        .context("link FEC shape")?;
        // Batches sized to one datagram: a lost datagram loses one batch, not fragments of two.
        let body_budget = encoder.max_unfragmented_body();
        let now = Instant::now();
        let catalogue = Catalogue::new(table.infos().to_vec());
        info!(
            session = format_args!("{session:016x}"),
            destination = %link.destination,
            tags = catalogue.len(),
            catalogue = format_args!("{:016x}", catalogue.hash()),
            batch = udp.max_segments(),
            "link sender started"
        );
        Ok(LinkSender {
            udp,
            encoder,
            pacer: Pacer::new(link.rate_bps, 16 * usize::from(link.mtu), now),
            table,
            health,
            config_hash,
            catalogue,
            session,
            started: now,
            body_budget,
            counters: TxCounters::default(),
            send_errors: 0,
            next_heartbeat: now,
            next_catalogue: now,
            catalogue_gap: Duration::from_secs(1).min(link.catalogue_interval),
            catalogue_next: None,
            next_snapshot: now + SNAPSHOT_TICK,
            snapshot_cursor: 0,
            shared_stats: SharedEncoderStats::default(),
            link_counters: Arc::default(),
            history: None,
            reload: None,
            stop: None,
            link,
        })
    }

    pub fn session(&self) -> u64 {
        self.session
    }

    /// A handle on the encoder counters that stays valid while [`LinkSender::run`] runs.
    pub fn encoder_stats(&self) -> SharedEncoderStats {
        self.shared_stats.clone()
    }

    /// A handle on the send counters that stays valid while [`LinkSender::run`] runs.
    pub fn counters(&self) -> Arc<LinkCounters> {
        self.link_counters.clone()
    }

    /// Caps the datagrams per batch (1: one `sendmsg` per datagram, as without GSO), for
    /// measuring what batching buys.
    pub fn with_max_batch(mut self, datagrams: usize) -> Self {
        self.udp.set_max_segments(datagrams);
        self
    }

    /// Sends the history stream's messages from `outlet` (see `crate::history`).
    pub fn with_history(mut self, outlet: Option<Arc<crate::history::HistoryOutlet>>) -> Self {
        self.history = outlet;
        self
    }

    /// Switches to the table of each live reload sent on `updates` (see [`TableUpdates`]).
    pub fn with_reload(mut self, updates: TableUpdates) -> Self {
        self.reload = Some(updates);
        self
    }

    /// Stops the sender when `stop` turns true, after it has sent what it holds (see
    /// [`LinkSender::run`]).
    pub fn with_stop(mut self, stop: tokio::sync::watch::Receiver<bool>) -> Self {
        self.stop = Some(stop);
        self
    }

    /// Installs the table of a live reload: new catalogue sent at once, its resend gap
    /// restarted, the snapshot restarted from the first tag.
    fn install_reload(&mut self, now: Instant) {
        let Some(updates) = &mut self.reload else {
            return;
        };
        let (table, config_hash) = updates.borrow_and_update().clone();
        self.table = table;
        self.config_hash = config_hash;
        self.catalogue = Catalogue::new(self.table.infos().to_vec());
        self.snapshot_cursor = 0;
        self.next_catalogue = now;
        self.catalogue_gap = Duration::from_secs(1).min(self.link.catalogue_interval);
        // What is left of the old catalogue's round describes tags that may be gone.
        self.catalogue_next = None;
        info!(
            tags = self.catalogue.len(),
            catalogue = format_args!("{:016x}", self.catalogue.hash()),
            "link sender switched to the reloaded config"
        );
    }

    /// Runs until the task is aborted or told to stop; returns early only on a socket error
    /// that cannot be retried. Told to stop, it closes the partial datagram and the open
    /// block and sends them, repair included, so the last values before a planned stop are
    /// neither held back nor left without their repair.
    pub async fn run(mut self) -> anyhow::Result<()> {
        loop {
            if self.stop.as_ref().is_some_and(|s| *s.borrow()) {
                self.encoder.flush(Instant::now());
                self.transmit().await?;
                info!(
                    datagrams = self.counters.datagrams_sent,
                    "link sender stopped after sending what it held"
                );
                return Ok(());
            }
            let now = Instant::now();
            if self
                .reload
                .as_ref()
                .is_some_and(|r| r.has_changed().unwrap_or(false))
            {
                self.install_reload(now);
            }
            if now >= self.next_catalogue {
                self.send_catalogue();
                self.next_catalogue = now + self.catalogue_gap;
                self.catalogue_gap = (self.catalogue_gap * 2).min(self.link.catalogue_interval);
            }
            if now >= self.next_heartbeat {
                self.send_heartbeat(now)?;
                self.next_heartbeat = later(self.next_heartbeat, self.link.heartbeat_interval, now);
            }
            if now >= self.next_snapshot {
                self.send_snapshot_slice(now)?;
                self.next_snapshot = later(self.next_snapshot, SNAPSHOT_TICK, now);
            }
            self.send_changes(now)?;
            self.send_catalogue_chunks(now)?;
            self.send_history(now)?;
            if self.encoder.poll_timeout().is_some_and(|t| t <= now) {
                self.encoder.handle_timeout(now);
            }
            self.transmit().await?;
            // Everything encoded has gone out. With more waiting (a backfill, a catalogue
            // round) the pacer keeps counting the time until the next pass as owed; without,
            // the sender is idle and credit builds up to one burst only.
            if !self.backlogged() {
                self.pacer.idle(Instant::now());
            }
            if let Ok(mut shared) = self.shared_stats.lock() {
                shared.clone_from(self.encoder.stats());
            }

            let mut wake = self
                .next_heartbeat
                .min(self.next_snapshot)
                .min(self.next_catalogue);
            if let Some(t) = self.encoder.poll_timeout() {
                wake = wake.min(t);
            }
            if self.catalogue_next.is_some() {
                wake = now;
            }
            tokio::select! {
                () = self.table.changed() => {}
                () = history_ready(&self.history) => {}
                () = reloaded(&self.reload) => {}
                () = stopped(&self.stop) => {}
                () = tokio::time::sleep_until(wake.into()) => {}
            }
        }
    }

    /// More is waiting to be encoded than one pass takes: a backfill or carousel in the
    /// history outlet, or a catalogue round.
    fn backlogged(&self) -> bool {
        self.catalogue_next.is_some() || self.history.as_ref().is_some_and(|h| !h.is_empty())
    }

    /// Starts a round of the catalogue, unless one is still going out.
    fn send_catalogue(&mut self) {
        if self.catalogue_next.is_none() {
            self.catalogue_next = Some(0);
            debug!(tags = self.catalogue.len(), "catalogue round started");
        }
    }

    /// Sends the next few chunks of the catalogue round in progress: between passes, live
    /// changes and heartbeats go first, so a 100,000-tag catalogue (a few thousand datagrams)
    /// delays them by one pass, not by the whole catalogue.
    fn send_catalogue_chunks(&mut self, now: Instant) -> anyhow::Result<()> {
        for _ in 0..CATALOGUE_CHUNKS_PER_PASS {
            let Some(start) = self.catalogue_next else {
                break;
            };
            let (chunk, next) = self.catalogue.chunk_at(start, self.body_budget);
            self.catalogue_next = next;
            self.push(&Message::Catalogue(chunk), now)?;
        }
        Ok(())
    }

    fn send_heartbeat(&mut self, now: Instant) -> anyhow::Result<()> {
        self.counters.samples_superseded = self.table.superseded();
        let heartbeat = Heartbeat {
            sent_at: crate::unix_now(),
            uptime_ms: u64::try_from(now.duration_since(self.started).as_millis())
                .unwrap_or(u64::MAX),
            catalogue: self.catalogue.hash(),
            tag_count: u32::try_from(self.catalogue.len()).unwrap_or(u32::MAX),
            config_hash: self.config_hash,
            counters: self.counters.clone(),
            sources: (self.health)(),
        };
        self.push(&Message::Heartbeat(heartbeat), now)?;
        // A heartbeat must not wait for its datagram to fill: it is what tells the receiver
        // the link is alive. Its block stays open, though: closing it early would cut the
        // block's groups short and, with them, the burst of loss they survive.
        self.encoder.flush_payload(now);
        Ok(())
    }

    /// Sends the next slice of the rolling snapshot: every tag once per snapshot period, in
    /// slices sized so the period is covered evenly.
    fn send_snapshot_slice(&mut self, now: Instant) -> anyhow::Result<()> {
        let n = self.table.len();
        if n == 0 {
            return Ok(());
        }
        let ticks =
            (self.link.snapshot_period.as_secs_f64() / SNAPSHOT_TICK.as_secs_f64()).max(1.0);
        let per_tick = ((n as f64 / ticks).ceil() as usize).max(1);
        let mut samples = Vec::with_capacity(per_tick);
        let mut remaining = per_tick;
        while remaining > 0 {
            let take = remaining.min(n - self.snapshot_cursor);
            samples.extend(self.table.snapshot(self.snapshot_cursor, take));
            remaining -= take;
            self.snapshot_cursor = (self.snapshot_cursor + take) % n;
        }
        for batch in batches(samples, self.body_budget) {
            let message = Message::Snapshot(SampleBatch {
                catalogue: self.catalogue.hash(),
                samples: batch,
            });
            self.push(&message, now)?;
        }
        Ok(())
    }

    fn send_changes(&mut self, now: Instant) -> anyhow::Result<()> {
        // Everything queued now; the table bounds the queue at one entry per tag.
        let changes = self.table.take_changes(self.table.len());
        if changes.is_empty() {
            return Ok(());
        }
        self.counters.samples_sent += changes.len() as u64;
        self.link_counters
            .samples_sent
            .store(self.counters.samples_sent, Ordering::Relaxed);
        for batch in batches(changes, self.body_budget) {
            let message = Message::Live(SampleBatch {
                catalogue: self.catalogue.hash(),
                samples: batch,
            });
            self.push(&message, now)?;
        }
        Ok(())
    }

    /// History messages the history thread prepared (it keeps re-sends within their share of
    /// the link rate); a bounded number per pass so the other streams keep their turn.
    fn send_history(&mut self, now: Instant) -> anyhow::Result<()> {
        let Some(outlet) = self.history.clone() else {
            return Ok(());
        };
        for _ in 0..HISTORY_PER_PASS {
            let Some(body) = outlet.pop() else {
                break;
            };
            match self.encoder.push_encoded(Stream::History, &body, now) {
                Ok(()) => self.counters.messages_sent += 1,
                Err(e) => self.refused(&e),
            }
        }
        Ok(())
    }

    fn push(&mut self, message: &Message, now: Instant) -> anyhow::Result<()> {
        match self.encoder.push(message, now) {
            Ok(()) => self.counters.messages_sent += 1,
            Err(e) => self.refused(&e),
        }
        Ok(())
    }

    /// A message the encoder refused is dropped and counted: one bad value must not stop the
    /// link, which would stop every other value with it (and again after each restart).
    fn refused(&mut self, e: &protocol::EncodeError) {
        let before = self
            .link_counters
            .messages_refused
            .fetch_add(1, Ordering::Relaxed);
        if before.is_power_of_two() || before == 0 {
            warn!(error = %e, refused = before + 1, "message refused by the encoder and dropped");
        }
    }

    /// Sends every datagram the encoder has ready, paced to the link rate, in batches of
    /// equal-length datagrams (see `crate::udp`): the pacer's credit for the first datagram is
    /// waited for, and the batch grows while the credit left covers more.
    async fn transmit(&mut self) -> anyhow::Result<()> {
        self.link_counters
            .pending_datagrams
            .store(self.encoder.pending_datagrams() as u64, Ordering::Relaxed);
        while let Some(first) = self.encoder.peek_transmit() {
            let first_len = first.len();
            // While backlogged, the credit of a whole batch is waited for (up to the pacer's
            // batch limit): sending whatever credit the last send earned made batches of 3
            // datagrams near the machine's limit (measured: 3.2 datagrams per `sendmsg` at
            // 4 Gb/s against 38 unpaced), and the kernel's work per call then set the rate.
            // Not otherwise: the credit a batch's wait leaves over is then taken to the idle
            // pacer, whose cap of one burst cut it (measured: 0.991 of 1000 Mb/s live against
            // 0.999).
            if self.backlogged() {
                let batch = self
                    .encoder
                    .pending_datagrams()
                    .min(self.udp.capacity(first_len));
                let want = (batch * (first_len + IP_UDP_OVERHEAD)).min(self.pacer.batch_limit());
                while let Err(wait) = self.pacer.wait_for(want, Instant::now()) {
                    tokio::time::sleep(wait).await;
                }
            }
            loop {
                match self.pacer.try_send(first_len, Instant::now()) {
                    Ok(()) => break,
                    Err(wait) => tokio::time::sleep(wait).await,
                }
            }
            let mut more = 0;
            let mut more_bytes = 0;
            let now = Instant::now();
            let mut budget = self.pacer.available(now);
            if let Some(d) = self.encoder.peek_transmit() {
                self.udp.push(d);
                self.encoder.advance_transmit();
            }
            while let Some(d) = self.encoder.peek_transmit() {
                let len = d.len();
                let cost = len + IP_UDP_OVERHEAD;
                if cost > budget || !self.udp.fits(len) {
                    break;
                }
                self.udp.push(d);
                self.encoder.advance_transmit();
                budget -= cost;
                more += 1;
                more_bytes += len;
            }
            if more > 0 {
                // Within the credit just read at the same instant, so it cannot fail.
                let _ = self.pacer.try_send_batch(more, more_bytes, now);
            }
            let sent = self
                .udp
                .send()
                .await
                .context("sending on the link socket")?;
            let c = &self.link_counters;
            c.pending_datagrams
                .store(self.encoder.pending_datagrams() as u64, Ordering::Relaxed);
            self.counters.datagrams_sent += sent.datagrams;
            c.datagrams_sent
                .fetch_add(sent.datagrams, Ordering::Relaxed);
            c.bytes_sent.fetch_add(sent.bytes, Ordering::Relaxed);
            if sent.failed > 0 {
                // On loopback or a NIC with a link partner the kernel may report an ICMP error
                // from an earlier datagram; it is not a reply we act on, and on a real diode it
                // cannot happen. Counted, and the sender carries on.
                let before = self.send_errors;
                self.send_errors += sent.failed;
                c.send_errors.fetch_add(sent.failed, Ordering::Relaxed);
                if before.leading_zeros() != self.send_errors.leading_zeros() {
                    let error = self.udp.take_error().map(|e| e.to_string());
                    warn!(
                        error,
                        count = self.send_errors,
                        "link send failed, continuing"
                    );
                }
            }
        }
        Ok(())
    }
}

/// Resolves when the sender is told to stop; never without a stop channel.
async fn stopped(stop: &Option<tokio::sync::watch::Receiver<bool>>) {
    match stop {
        Some(s) => {
            let mut s = s.clone();
            if s.wait_for(|stop| *stop).await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}

/// Resolves when a live reload's table waits to be installed; never without a reload channel.
async fn reloaded(updates: &Option<TableUpdates>) {
    match updates {
        // A clone, so that seeing the change here leaves it unseen for `install_reload`.
        Some(r) => {
            let mut r = r.clone();
            if r.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}

/// History messages handed to the encoder per pass of the send loop, at most.
const HISTORY_PER_PASS: usize = 128;

/// Resolves when history messages wait in the outlet; never without one.
async fn history_ready(outlet: &Option<Arc<crate::history::HistoryOutlet>>) {
    match outlet {
        Some(o) if !o.is_empty() => {}
        Some(o) => o.ready().await,
        None => std::future::pending().await,
    }
}

/// The next deadline of a periodic job: on schedule when keeping up, from now when behind,
/// so a stall does not cause a burst of catch-up sends.
fn later(previous: Instant, period: Duration, now: Instant) -> Instant {
    let next = previous + period;
    if next <= now { now + period } else { next }
}

/// Splits samples into batches whose encoding stays within `budget` bytes, so that each batch
/// travels in one datagram. Sizes are exact (the codec counts without writing), which fills
/// datagrams about 1.4 times better than an upper bound per sample did.
pub fn batches(samples: Vec<Sample>, budget: usize) -> Vec<Vec<Sample>> {
    let mut out = Vec::new();
    let mut current = Vec::new();
    // The batch's fixed part at its largest: message tag, catalogue hash (a varint of up to
    // 10 bytes) and the sample count's varint.
    let fixed = 1 + 10 + 5;
    let mut size = fixed;
    for s in samples {
        let len = codec::sample_len(&s);
        if !current.is_empty() && size + len > budget {
            out.push(std::mem::take(&mut current));
            size = fixed;
        }
        size += len;
        current.push(s);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

async fn send_only_socket(link: &TxLink) -> anyhow::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let domain = if link.destination.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let socket = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))
        .context("creating the link socket")?;
    socket.set_nonblocking(true)?;
    // Large send buffer so pacing, not the kernel, decides when datagrams wait.
    let _ = socket.set_send_buffer_size(4 << 20);
    // Nothing is ever read from this socket: keep the kernel from holding anything for it.
    let _ = socket.set_recv_buffer_size(1);
    socket
        .bind(&link.bind.into())
        .with_context(|| format!("binding the link socket to {}", link.bind))?;
    socket
        .connect(&link.destination.into())
        .with_context(|| format!("connecting the link socket to {}", link.destination))?;
    let _ = socket.shutdown(std::net::Shutdown::Read);
    Ok(UdpSocket::from_std(socket.into())?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::model::{Quality, Value};

    #[test]
    fn batches_fit_the_budget_when_encoded() {
        let samples: Vec<Sample> = (0..1000)
            .map(|i| Sample {
                tag: u32::MAX - i,
                value: if i % 7 == 0 {
                    Value::String("x".repeat(40))
                } else {
                    Value::Double(f64::from(i) * 1.5)
                },
                quality: Quality::BAD_COMMUNICATION_ERROR,
                time: i64::MAX - i64::from(i),
            })
            .collect();
        let out = batches(samples.clone(), 1300);
        assert!(out.len() > 1);
        for b in &out {
            let body = codec::encode(&Message::Live(SampleBatch {
                catalogue: u64::MAX,
                samples: b.clone(),
            }))
            .unwrap();
            assert!(
                body.len() <= 1300,
                "batch of {} encodes to {}",
                b.len(),
                body.len()
            );
        }
        assert_eq!(
            out.concat(),
            samples,
            "nothing lost or reordered by batching"
        );
    }
}
