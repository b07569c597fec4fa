//! Syslog forwarding, the transmitter's half: listeners on UDP and TCP take syslog messages
//! from the OT network, a queue bounded in bytes holds them, and the scheduler's
//! [`SyslogFeed`] sends them on the link's syslog stream, a bounded number per pass.
//!
//! Messages travel byte for byte (RFC 5424 and RFC 3164 alike; only the TCP framing is
//! removed), with the time they were received and the peer that sent them. The one check made
//! is that a message starts with `<` (its `<PRI>`); others are counted `malformed` and dropped,
//! since without it a receiver cannot tell a message from stray bytes.
//!
//! When the queue is full the **newest** message is dropped: the queued ones are older, and
//! the messages leading up to an incident are the ones that explain it; dropping the newest
//! also costs nothing, where dropping the oldest would churn the queue under a flood. Every
//! drop (queue full, oversized, malformed framing) is counted, and the total goes with every
//! batch, so the receiver reports it too.

pub mod framer;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Context;
use config::tx::Syslog as SyslogConfig;
use protocol::message::{Message, SyslogBatch, SyslogRecord};
use protocol::model::UnixNanos;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tracing::{debug, info, warn};

use crate::scheduler::{Feed, Outbox};
use framer::{Framed, Framer};

observe::family! {
    /// Syslog messages gateway-tx dropped itself, by why.
    pub const DROPPED = counter "gateway_tx_syslog_dropped_total" by "reason";
}

observe::counters! {
    /// Counters of the syslog listeners and queue.
    #[derive(Debug, Default)]
    pub struct SyslogStats;
    /// A copy of [`SyslogStats`].
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
    pub struct SyslogStatsSnapshot;

    /// Syslog messages received over UDP.
    received_udp => counter("gateway_tx_syslog_received_udp_total"), json,
        row "received over UDP";
    /// Syslog messages received over TCP.
    received_tcp => counter("gateway_tx_syslog_received_tcp_total"), json,
        row "received over TCP";
    /// Syslog messages handed to the link.
    sent => counter("gateway_tx_syslog_sent_total"), json, row "sent on the link";
    /// Bytes of syslog messages waiting for the link.
    queued_bytes => gauge("gateway_tx_syslog_queued_bytes"), json, row "queued bytes";
    queue_full => DROPPED["queue_full"], json, row "dropped: queue full" bad;
    oversized => DROPPED["oversized"], json, row "dropped: longer than max_message_bytes" bad;
    malformed => DROPPED["malformed"], json, row "dropped: malformed (no <PRI>, broken framing)" bad;
    /// TCP connections open now.
    connections => gauge("gateway_tx_syslog_tcp_connections"), json, row "TCP connections";
    /// TCP connections refused because max_connections were open.
    connections_refused => counter("gateway_tx_syslog_tcp_refused_total"), json,
        row "TCP connections refused (too many)" bad;
    /// TCP connections closed because their framing broke.
    framing_closed => counter("gateway_tx_syslog_tcp_framing_closed_total"), json,
        row "TCP connections closed (broken octet count)" bad;
}

impl SyslogStats {
    /// Every message dropped here, whatever the reason: what batches carry as `dropped`.
    pub fn dropped(&self) -> u64 {
        self.queue_full.load(Ordering::Relaxed)
            + self.oversized.load(Ordering::Relaxed)
            + self.malformed.load(Ordering::Relaxed)
    }
}

/// What a queued record costs besides its bytes (the record and the deque slot), so that a
/// flood of tiny messages is bounded too.
const RECORD_OVERHEAD: usize = 64;

/// The listeners' queue to the link, bounded in bytes.
pub struct SyslogQueue {
    inner: Mutex<Inner>,
    capacity: usize,
    ready: tokio::sync::Notify,
    stats: Arc<SyslogStats>,
}

#[derive(Default)]
struct Inner {
    records: VecDeque<SyslogRecord>,
    bytes: usize,
}

impl SyslogQueue {
    pub fn new(capacity: usize, stats: Arc<SyslogStats>) -> SyslogQueue {
        SyslogQueue {
            inner: Mutex::default(),
            capacity,
            ready: tokio::sync::Notify::new(),
            stats,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a record, or drops it (the newest) when the queue is full.
    pub fn push(&self, record: SyslogRecord) -> bool {
        let cost = record.bytes.len() + RECORD_OVERHEAD;
        {
            let mut q = self.lock();
            if q.bytes + cost > self.capacity {
                drop(q);
                self.stats.queue_full.fetch_add(1, Ordering::Relaxed);
                return false;
            }
            q.bytes += cost;
            q.records.push_back(record);
            self.stats
                .queued_bytes
                .store(q.bytes as u64, Ordering::Relaxed);
        }
        self.ready.notify_one();
        true
    }

    /// Takes up to `max` records, oldest first.
    pub fn take(&self, max: usize) -> Vec<SyslogRecord> {
        let mut q = self.lock();
        let n = max.min(q.records.len());
        let out: Vec<SyslogRecord> = q.records.drain(..n).collect();
        let freed: usize = out.iter().map(|r| r.bytes.len() + RECORD_OVERHEAD).sum();
        q.bytes = q.bytes.saturating_sub(freed);
        self.stats
            .queued_bytes
            .store(q.bytes as u64, Ordering::Relaxed);
        out
    }

    pub fn is_empty(&self) -> bool {
        self.lock().records.is_empty()
    }

    /// Resolves when a record may be waiting.
    pub async fn ready(&self) {
        self.ready.notified().await;
    }

    pub fn stats(&self) -> &Arc<SyslogStats> {
        &self.stats
    }
}

/// The syslog stream's feed: up to `per_pass` queued messages each pass, in batches of one
/// datagram, numbered from 0 in the session.
pub struct SyslogFeed {
    queue: Arc<SyslogQueue>,
    per_pass: usize,
    next_seq: u64,
    /// The drop count last sent: a change is sent even when no message waits.
    dropped_sent: u64,
}

impl SyslogFeed {
    pub fn new(queue: Arc<SyslogQueue>, per_pass: usize) -> SyslogFeed {
        SyslogFeed {
            queue,
            per_pass: per_pass.max(1),
            next_seq: 0,
            dropped_sent: 0,
        }
    }
}

impl Feed for SyslogFeed {
    fn name(&self) -> &'static str {
        "syslog"
    }

    fn poll(&mut self, now: Instant, _unix: UnixNanos, out: &mut Outbox) {
        let records = self.queue.take(self.per_pass);
        let dropped = self.queue.stats().dropped();
        if records.is_empty() {
            if dropped != self.dropped_sent {
                out.push(
                    &Message::Syslog(SyslogBatch {
                        first_seq: self.next_seq,
                        dropped,
                        records: Vec::new(),
                    }),
                    now,
                );
                self.dropped_sent = dropped;
            }
            return;
        }
        let n = records.len() as u64;
        for batch in protocol::syslog::batches(records, self.next_seq, dropped, out.body_budget()) {
            out.push(&Message::Syslog(batch), now);
        }
        self.next_seq += n;
        self.dropped_sent = dropped;
        self.queue.stats().sent.fetch_add(n, Ordering::Relaxed);
    }

    fn backlogged(&self) -> bool {
        !self.queue.is_empty()
    }
}

/// The running listeners.
pub struct SyslogListeners {
    pub queue: Arc<SyslogQueue>,
    pub udp: Option<SocketAddr>,
    pub tcp: Option<SocketAddr>,
    pub tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Binds the configured listeners and starts their tasks.
pub async fn start(config: &SyslogConfig) -> anyhow::Result<SyslogListeners> {
    let stats = Arc::new(SyslogStats::default());
    let queue = Arc::new(SyslogQueue::new(config.queue_bytes, stats));
    let mut tasks = Vec::new();
    let mut udp_addr = None;
    let mut tcp_addr = None;
    if let Some(addr) = config.udp {
        let socket = UdpSocket::bind(addr)
            .await
            .with_context(|| format!("binding the syslog UDP listener to {addr}"))?;
        udp_addr = Some(socket.local_addr()?);
        info!(addr = %addr, "syslog UDP listener bound");
        tasks.push(tokio::spawn(run_udp(
            socket,
            queue.clone(),
            config.max_message_bytes,
        )));
    }
    if let Some(addr) = config.tcp {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the syslog TCP listener to {addr}"))?;
        tcp_addr = Some(listener.local_addr()?);
        info!(addr = %addr, "syslog TCP listener bound");
        tasks.push(tokio::spawn(run_tcp(
            listener,
            queue.clone(),
            config.max_message_bytes,
            config.max_connections,
        )));
    }
    Ok(SyslogListeners {
        queue,
        udp: udp_addr,
        tcp: tcp_addr,
        tasks,
    })
}

/// Counts a frame and queues its message.
fn take(queue: &SyslogQueue, peer: SocketAddr, frame: Framed, tcp: bool) {
    let stats = queue.stats();
    match frame {
        Framed::Message(bytes) => {
            if tcp {
                stats.received_tcp.fetch_add(1, Ordering::Relaxed);
            } else {
                stats.received_udp.fetch_add(1, Ordering::Relaxed);
            }
            queue.push(SyslogRecord {
                received_at: crate::unix_now(),
                peer,
                bytes,
            });
        }
        Framed::Oversized => {
            stats.oversized.fetch_add(1, Ordering::Relaxed);
        }
        Framed::Malformed => {
            stats.malformed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// One datagram is one message (RFC 5426); a datagram longer than the limit is dropped whole.
async fn run_udp(socket: UdpSocket, queue: Arc<SyslogQueue>, max: usize) {
    // The largest UDP payload, so a longer-than-allowed datagram is seen, not cut.
    let mut buf = vec![0u8; 65_536];
    loop {
        let (n, peer) = match socket.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                // ICMP errors and the like: nothing to do but read on.
                debug!(error = %e, "syslog UDP receive failed");
                continue;
            }
        };
        let frame = if n > max {
            Framed::Oversized
        } else if buf.first() != Some(&b'<') || n == 0 {
            Framed::Malformed
        } else {
            Framed::Message(buf[..n].to_vec())
        };
        take(&queue, peer, frame, false);
    }
}

async fn run_tcp(listener: TcpListener, queue: Arc<SyslogQueue>, max: usize, connections: usize) {
    let slots = Arc::new(tokio::sync::Semaphore::new(connections));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of descriptors and the like: wait a little rather than spin.
                warn!(error = %e, "syslog TCP accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            queue
                .stats()
                .connections_refused
                .fetch_add(1, Ordering::Relaxed);
            drop(stream);
            continue;
        };
        let queue = queue.clone();
        tokio::spawn(async move {
            queue.stats().connections.fetch_add(1, Ordering::Relaxed);
            read_connection(stream, peer, &queue, max).await;
            queue.stats().connections.fetch_sub(1, Ordering::Relaxed);
            drop(slot);
        });
    }
}

async fn read_connection(mut stream: TcpStream, peer: SocketAddr, queue: &SyslogQueue, max: usize) {
    let mut framer = Framer::new(max);
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                debug!(peer = %peer, error = %e, "syslog TCP connection failed");
                break;
            }
        };
        if framer
            .push(&buf[..n], &mut |f| take(queue, peer, f, true))
            .is_err()
        {
            queue.stats().framing_closed.fetch_add(1, Ordering::Relaxed);
            warn!(peer = %peer, "syslog TCP connection closed: broken octet count");
            return;
        }
    }
    framer.finish(&mut |f| take(queue, peer, f, true));
}
