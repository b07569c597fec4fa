//! The link receiver: reads datagrams from the diode, runs them through the protocol decoder,
//! and applies what comes out to the state. It never sends: the socket is bound, not connected,
//! and no code path writes to it. Datagrams are read in batches (`recvmmsg` and GRO, see
//! `crate::udp`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use config::rx::RxLink;
use protocol::catalogue::CatalogueAssembler;
use protocol::decoder::{Decoder, DecoderConfig, DecoderStats, Event};
use protocol::message::Message;
use tokio::net::UdpSocket;
use tracing::{info, warn};

use crate::state::State;
use crate::udp::BatchReceiver;

/// Rejections of bad input are logged at most this often per kind, so a flood of garbage
/// cannot fill the disk; the counters still count every one.
const REJECT_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Decoder counters as last published by the link task, for status and tests.
pub type SharedStats = Arc<Mutex<DecoderStats>>;

/// Batches read per pass besides the first, before events are handled: bounded so that timers
/// and events keep their turn under a flood.
const DRAIN_BATCHES: usize = 8;

pub struct LinkReceiver {
    udp: BatchReceiver,
    decoder: Decoder,
    assembler: CatalogueAssembler,
    state: Arc<State>,
    stats: SharedStats,
    link: RxLink,
    last_heartbeat: Option<Instant>,
    last_reject_log: Option<Instant>,
    logged_rejects: u64,
    /// Where history batches go (the embedded store); `None` drops them.
    history: Option<crate::store::HistorySink>,
    /// Where syslog batches go (the syslog spool); `None` drops them.
    syslog: Option<crate::syslog::SyslogIn>,
    /// The transmitter session being decoded (syslog records are numbered per session).
    session: u64,
    /// The decoder counted syslog messages lost before the first one it delivered in this
    /// session: it has followed the stream from its start (see `SyslogIn::submit`).
    syslog_lost_early: bool,
    /// A syslog message of this session was delivered.
    syslog_seen: bool,
    /// Where the session and how far it got are published for the link state file.
    resume: tokio::sync::watch::Sender<Option<protocol::decoder::ResumePoint>>,
    /// "New transmitter session" lines logged, for their rate limit.
    last_session_log: Option<Instant>,
    sessions_unlogged: u64,
}

impl LinkReceiver {
    pub async fn bind(
        link: RxLink,
        state: Arc<State>,
        stats: SharedStats,
    ) -> anyhow::Result<LinkReceiver> {
        let udp = BatchReceiver::new(receive_only_socket(&link)?)
            .context("setting up the link socket")?;
        info!(gro = udp.gro(), "link socket bound");
        // Only with a key does the decoder trust a session's epoch, and so the file.
        let resume = if link.key.is_some() {
            crate::link_state::load(&link.state_file)
        } else {
            None
        };
        let decoder = Decoder::new(DecoderConfig {
            key: link.key,
            reorder_window: link.reorder_window,
            resume,
            ..DecoderConfig::default()
        });
        let (resume, points) = tokio::sync::watch::channel(None);
        if link.key.is_some() {
            tokio::spawn(crate::link_state::keep(link.state_file.clone(), points));
        }
        Ok(LinkReceiver {
            udp,
            decoder,
            assembler: CatalogueAssembler::new(),
            state,
            stats,
            link,
            last_heartbeat: None,
            last_reject_log: None,
            logged_rejects: 0,
            history: None,
            syslog: None,
            session: 0,
            syslog_lost_early: false,
            syslog_seen: false,
            resume,
            last_session_log: None,
            sessions_unlogged: 0,
        })
    }

    /// Hands history batches to `sink` (the embedded store).
    pub fn with_history(mut self, sink: Option<crate::store::HistorySink>) -> Self {
        self.history = sink;
        self
    }

    /// Hands syslog batches to `input` (the syslog spool).
    pub fn with_syslog(mut self, input: Option<crate::syslog::SyslogIn>) -> Self {
        self.syslog = input;
        self
    }

    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.udp.local_addr()
    }

    pub async fn run(mut self) -> anyhow::Result<()> {
        loop {
            let now = Instant::now();
            let mut wake = now + Duration::from_millis(100);
            if let Some(t) = self.decoder.poll_timeout() {
                wake = wake.min(t);
            }
            let decoder = &mut self.decoder;
            tokio::select! {
                r = self.udp.recv(|d, at| {
                    decoder.handle_datagram(d, at);
                }) => {
                    r.context("receiving from the link socket")?;
                }
                () = tokio::time::sleep_until(wake.into()) => {}
            }
            self.deliver();
            // Read what else is queued, and learn whether the socket is empty. The decoder's
            // timers may only run then: after a stall (a descheduled process, a busy host) the
            // rest of a group can be waiting in this socket, and a timer run first would give
            // it up. What each read completes is delivered at once, while it is in the cache:
            // a burst read whole before delivery held up to ~200 decoded 90 kB batches (40 MB)
            // and cost the receiver a page fault for every fresh page of them.
            let mut empty_at = None;
            for _ in 0..DRAIN_BATCHES {
                let checked = Instant::now();
                let decoder = &mut self.decoder;
                let n = self
                    .udp
                    .try_recv(|d, at| {
                        decoder.handle_datagram(d, at);
                    })
                    .context("receiving from the link socket")?;
                if n == 0 {
                    empty_at = Some(checked);
                    break;
                }
                self.deliver();
            }
            if let Some(at) = empty_at
                && self.decoder.poll_timeout().is_some_and(|t| t <= at)
            {
                // Every datagram that arrived before `at` has been handed over.
                self.decoder.handle_timeout(at);
                self.deliver();
            }
            let now = Instant::now();
            self.check_heartbeat(now);
            self.publish_stats(now);
        }
    }

    /// Applies what the decoder has completed.
    fn deliver(&mut self) {
        let now = Instant::now();
        while let Some(event) = self.decoder.poll_event() {
            self.handle(event, now);
        }
    }

    fn handle(&mut self, event: Event, now: Instant) {
        match event {
            Event::Message {
                message: Message::Syslog(batch),
                seq,
                ..
            } => {
                if let Some(s) = &mut self.syslog {
                    let from_start = !self.syslog_seen && (seq == 0 || self.syslog_lost_early);
                    s.submit(self.session, from_start, batch);
                }
                self.syslog_seen = true;
            }
            Event::Message { message, .. } => self.handle_message(message, now),
            Event::NewSession { previous, session } => {
                // Rate-limited like rejections: whatever makes sessions change must not be
                // able to fill the disk.
                let due = self
                    .last_session_log
                    .is_none_or(|t| now.duration_since(t) >= REJECT_LOG_INTERVAL);
                if due {
                    info!(
                        previous = previous.map(|p| format!("{p:016x}")),
                        session = format_args!("{session:016x}"),
                        epoch = protocol::epoch::epoch_of(session),
                        changes_not_logged = self.sessions_unlogged,
                        "new transmitter session; catalogue and values will be refreshed"
                    );
                    self.last_session_log = Some(now);
                    self.sessions_unlogged = 0;
                } else {
                    self.sessions_unlogged += 1;
                }
                self.assembler.reset();
                self.session = session;
                self.syslog_lost_early = false;
                self.syslog_seen = false;
                self.state.new_session(session);
            }
            Event::UnknownVersion { version } => {
                if self.should_log_reject(now) {
                    warn!(version, "datagram of an unknown protocol version rejected");
                }
            }
            Event::MessagesLost { stream, count } => {
                if stream == protocol::message::Stream::Syslog && !self.syslog_seen {
                    self.syslog_lost_early = true;
                }
                // Includes, for a receiver started within the first reorder window of a session,
                // what the session sent before this receiver listened: not received all the same.
                warn!(
                    stream = stream.name(),
                    count,
                    "messages lost (beyond FEC repair, or sent before this receiver started)"
                );
            }
            Event::DatagramsLost { count } => {
                tracing::debug!(count, "data datagrams lost beyond repair");
            }
        }
    }

    fn handle_message(&mut self, message: Message, now: Instant) {
        let received_at = crate::unix_now();
        let stream = message.stream();
        match message {
            Message::Catalogue(chunk) => match self.assembler.add(chunk) {
                Ok(Some(catalogue)) => {
                    info!(
                        tags = catalogue.len(),
                        catalogue = format_args!("{:016x}", catalogue.hash()),
                        "catalogue received"
                    );
                    self.state.apply_catalogue(catalogue);
                }
                Ok(None) => {}
                Err(e) => {
                    self.state.note_catalogue_chunk_rejected();
                    if self.should_log_reject(now) {
                        warn!(error = %e, "catalogue chunk rejected");
                    }
                }
            },
            Message::Live(batch) | Message::Snapshot(batch) => {
                self.state
                    .apply_samples(batch.catalogue, &batch.samples, received_at, stream);
            }
            Message::Heartbeat(heartbeat) => {
                if self.last_heartbeat.is_none() || self.state.link_is_down() {
                    info!(
                        uptime_ms = heartbeat.uptime_ms,
                        tags = heartbeat.tag_count,
                        "link up"
                    );
                }
                self.last_heartbeat = Some(now);
                self.state.apply_heartbeat(heartbeat, received_at);
            }
            // Never blocks: a full store queue is counted and becomes a gap.
            Message::History(batch) => {
                if let Some(h) = &self.history {
                    h.submit(batch);
                }
            }
            // Taken in `handle`, which knows its place in the stream.
            Message::Syslog(_) => {}
        }
    }

    fn check_heartbeat(&mut self, now: Instant) {
        let Some(last) = self.last_heartbeat else {
            return;
        };
        let silent = now.duration_since(last);
        if silent > self.link.heartbeat_timeout && !self.state.link_is_down() {
            warn!(
                silent_ms = u64::try_from(silent.as_millis()).unwrap_or(u64::MAX),
                "link down: no heartbeat; values are served as Uncertain"
            );
            self.state.mark_link_down(crate::unix_now());
        }
    }

    fn should_log_reject(&mut self, now: Instant) -> bool {
        self.logged_rejects += 1;
        match self.last_reject_log {
            Some(t) if now.duration_since(t) < REJECT_LOG_INTERVAL => false,
            _ => {
                self.last_reject_log = Some(now);
                true
            }
        }
    }

    fn publish_stats(&mut self, now: Instant) {
        let point = self.decoder.resume_point();
        self.resume.send_if_modified(|p| {
            let changed = *p != point;
            *p = point;
            changed
        });
        let stats = self.decoder.stats().clone();
        let rejected = stats.bad_magic
            + stats.bad_version
            + stats.malformed
            + stats.crc_failures
            + stats.auth_failures;
        let before = match self.stats.lock() {
            Ok(mut shared) => {
                let before = shared.bad_magic
                    + shared.bad_version
                    + shared.malformed
                    + shared.crc_failures
                    + shared.auth_failures;
                *shared = stats.clone();
                before
            }
            Err(_) => return,
        };
        if rejected > before && self.should_log_reject(now) {
            warn!(
                bad_magic = stats.bad_magic,
                bad_version = stats.bad_version,
                malformed = stats.malformed,
                crc_failures = stats.crc_failures,
                auth_failures = stats.auth_failures,
                "datagrams rejected"
            );
        }
    }
}

fn receive_only_socket(link: &RxLink) -> anyhow::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let domain = if link.bind.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let socket = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))
        .context("creating the link socket")?;
    socket.set_nonblocking(true)?;
    if let Err(e) = socket.set_recv_buffer_size(link.recv_buffer_bytes) {
        warn!(error = %e, bytes = link.recv_buffer_bytes, "could not set the link receive buffer");
    }
    // The kernel silently caps the buffer at net.core.rmem_max (and reports twice what it
    // grants, for its own bookkeeping). A short buffer overflows on bursts such as a large
    // catalogue, losing runs of datagrams longer than FEC repairs: say so at start.
    if let Ok(granted) = socket.recv_buffer_size()
        && granted / 2 < link.recv_buffer_bytes
    {
        warn!(
            requested = link.recv_buffer_bytes,
            granted = granted / 2,
            "link receive buffer smaller than configured; raise net.core.rmem_max (deploy/sysctl/90-gateway.conf)"
        );
    }
    socket
        .bind(&link.bind.into())
        .with_context(|| format!("binding the link socket to {}", link.bind))?;
    // Nothing is ever sent from this socket.
    let _ = socket.shutdown(std::net::Shutdown::Write);
    Ok(UdpSocket::from_std(socket.into())?)
}
