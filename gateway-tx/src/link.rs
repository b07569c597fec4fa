//! The link sender: drives the scheduler (`crate::scheduler`, which decides what goes on the
//! link when and encodes it) and sends what it makes, paced to the link rate, on the
//! send-only UDP socket. A pass: install a live reload if one waits, poll the scheduler at
//! the current time, send every datagram it made; then wait for a change in the tag table,
//! history for the link, a reload, the stop, or the scheduler's next timer.
//!
//! The socket is never read: it is connected to the receiver only so that `send` needs no
//! address, its receive side is shut down, and its receive buffer is the kernel's minimum.
//! Datagrams leave in batches of equal length (GSO, see `crate::udp`), each batch paced as a
//! whole.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Context;
use config::tx::TxLink;
use protocol::stats::EncoderStats;
use tokio::net::UdpSocket;
use tracing::{info, warn};

use crate::pacer::{IP_UDP_OVERHEAD, Pacer};
use crate::scheduler::{HealthFn, HistoryFeed, Scheduler};
use crate::tags::TagTable;
use crate::udp::BatchSender;

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
    /// What goes on the link next, and the encoder that makes the datagrams.
    scheduler: Scheduler,
    pacer: Pacer,
    send_errors: u64,
    shared_stats: SharedEncoderStats,
    /// The scheduler's, shared: it counts what it encodes, the sender what leaves.
    link_counters: Arc<LinkCounters>,
    /// The history outlet the scheduler's history feed takes from, waited on for new messages.
    history: Option<Arc<crate::history::HistoryOutlet>>,
    /// The syslog queue the scheduler's syslog feed takes from, waited on for new messages.
    syslog: Option<Arc<crate::syslog::SyslogQueue>>,
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
        let now = Instant::now();
        let scheduler = Scheduler::new(&link, config_hash, table, health, session, now)
            .context("link FEC shape")?;
        info!(
            session = format_args!("{session:016x}"),
            destination = %link.destination,
            tags = scheduler.catalogue().len(),
            catalogue = format_args!("{:016x}", scheduler.catalogue().hash()),
            batch = udp.max_segments(),
            "link sender started"
        );
        Ok(LinkSender {
            udp,
            link_counters: scheduler.link_counters().clone(),
            scheduler,
            pacer: Pacer::new(link.rate_bps, 16 * usize::from(link.mtu), now),
            send_errors: 0,
            shared_stats: SharedEncoderStats::default(),
            history: None,
            syslog: None,
            reload: None,
            stop: None,
        })
    }

    pub fn session(&self) -> u64 {
        self.scheduler.session()
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
        if let Some(o) = &outlet {
            self.scheduler.add(Box::new(HistoryFeed::new(o.clone())));
        }
        self.history = outlet;
        self
    }

    /// Sends the syslog stream's messages from `queue`, up to `per_pass` each pass (see
    /// `crate::syslog`).
    pub fn with_syslog(mut self, queue: Arc<crate::syslog::SyslogQueue>, per_pass: usize) -> Self {
        self.scheduler.add(Box::new(crate::syslog::SyslogFeed::new(
            queue.clone(),
            per_pass,
        )));
        self.syslog = Some(queue);
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

    /// Runs until the task is aborted or told to stop; returns early only on a socket error
    /// that cannot be retried. Told to stop, it closes the partial datagram and the open
    /// block and sends them, repair included, so the last values before a planned stop are
    /// neither held back nor left without their repair.
    pub async fn run(mut self) -> anyhow::Result<()> {
        loop {
            if self.stop.as_ref().is_some_and(|s| *s.borrow()) {
                // One last pass first: changes queued since the previous one (a stop and a
                // change can wake the loop together) go out with the rest.
                let now = Instant::now();
                self.scheduler.poll(now, crate::unix_now());
                self.scheduler.stop(now);
                self.transmit().await?;
                info!(
                    datagrams = self.scheduler.tx_counters().datagrams_sent,
                    "link sender stopped after sending what it held"
                );
                return Ok(());
            }
            let now = Instant::now();
            if let Some(updates) = &mut self.reload
                && updates.has_changed().unwrap_or(false)
            {
                let (table, config_hash) = updates.borrow_and_update().clone();
                self.scheduler.reload(table, config_hash, now);
            }
            self.scheduler.poll(now, crate::unix_now());
            self.transmit().await?;
            // Everything encoded has gone out. With more waiting (a backfill, a catalogue
            // round) the pacer keeps counting the time until the next pass as owed; without,
            // the sender is idle and credit builds up to one burst only.
            if !self.scheduler.backlogged() {
                self.pacer.idle(Instant::now());
            }
            if let Ok(mut shared) = self.shared_stats.lock() {
                shared.clone_from(self.scheduler.encoder_stats());
            }

            let wake = self.scheduler.poll_timeout();
            tokio::select! {
                () = self.scheduler.table().changed() => {}
                () = history_ready(&self.history) => {}
                () = syslog_ready(&self.syslog) => {}
                () = reloaded(&self.reload) => {}
                () = stopped(&self.stop) => {}
                () = sleep_until(wake) => {}
            }
        }
    }

    /// Sends every datagram the encoder has ready, paced to the link rate, in batches of
    /// equal-length datagrams (see `crate::udp`): the pacer's credit for the first datagram is
    /// waited for, and the batch grows while the credit left covers more.
    async fn transmit(&mut self) -> anyhow::Result<()> {
        self.link_counters
            .pending_datagrams
            .store(self.scheduler.pending_datagrams() as u64, Ordering::Relaxed);
        while let Some(first) = self.scheduler.peek_transmit() {
            let first_len = first.len();
            // While backlogged, the credit of a whole batch is waited for (up to the pacer's
            // batch limit): sending whatever credit the last send earned made batches of 3
            // datagrams near the machine's limit (measured: 3.2 datagrams per `sendmsg` at
            // 4 Gb/s against 38 unpaced), and the kernel's work per call then set the rate.
            // Not otherwise: the credit a batch's wait leaves over is then taken to the idle
            // pacer, whose cap of one burst cut it (measured: 0.991 of 1000 Mb/s live against
            // 0.999).
            if self.scheduler.backlogged() {
                let batch = self
                    .scheduler
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
            if let Some(d) = self.scheduler.peek_transmit() {
                self.udp.push(d);
                self.scheduler.advance_transmit();
            }
            while let Some(d) = self.scheduler.peek_transmit() {
                let len = d.len();
                let cost = len + IP_UDP_OVERHEAD;
                if cost > budget || !self.udp.fits(len) {
                    break;
                }
                self.udp.push(d);
                self.scheduler.advance_transmit();
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
                .store(self.scheduler.pending_datagrams() as u64, Ordering::Relaxed);
            self.scheduler.sent(sent.datagrams);
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
        // A clone, so that seeing the change here leaves it unseen for `run`, which installs it.
        Some(r) => {
            let mut r = r.clone();
            if r.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}

/// Resolves when history messages wait in the outlet; never without one.
async fn history_ready(outlet: &Option<Arc<crate::history::HistoryOutlet>>) {
    match outlet {
        Some(o) if !o.is_empty() => {}
        Some(o) => o.ready().await,
        None => std::future::pending().await,
    }
}

/// Resolves when syslog messages may wait in the queue; never without one.
async fn syslog_ready(queue: &Option<Arc<crate::syslog::SyslogQueue>>) {
    match queue {
        Some(q) if !q.is_empty() => {}
        Some(q) => q.ready().await,
        None => std::future::pending().await,
    }
}

/// Resolves at `wake`; never without one.
async fn sleep_until(wake: Option<Instant>) {
    match wake {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
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
