//! The syslog outputs: each delivers the spool's messages, in order, from its own cursor, and
//! moves the cursor (saved whole to disk) only once the destination took them:
//!
//! - `udp://`: each message is one datagram, delivered once written to the socket. UDP says
//!   nothing of arrival; a collector that is down loses what is sent to it.
//! - `tcp://` and `tls://`: RFC 6587 octet counting (`LEN SP MSG`), delivered once written and
//!   flushed to the socket. Plain syslog has no application acknowledgement: a write the
//!   kernel took may still be lost if the collector dies before reading it, and a connection
//!   that fails part-way is retried from the cursor, so the collector may see the messages of
//!   that batch twice. What TCP does guarantee: in order, no gaps while the connection holds.
//!   A tcp:// output checks, before each batch, that the collector has not closed the
//!   connection meanwhile, so a collector stopped between batches loses nothing.
//! - `file`: appended one message per line (the message's bytes as received, then LF; a
//!   message that itself holds an LF spans lines) and fsync'd before the cursor moves.
//!
//! While a destination is unreachable its messages wait in the spool, bounded in bytes (see
//! `super::spool`); the output retries with a backoff of up to 5 s.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use config::syslog_rx::{Forward, Target};
use durable_log::Reader;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tracing::{info, warn};

use super::Shared;
use super::spool::{self, FORMAT, Position};

observe::counters! {
    /// Counters of one syslog output.
    #[derive(Debug, Default)]
    pub struct OutputStats;
    /// A copy of [`OutputStats`].
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
    pub struct OutputStatsSnapshot;

    /// Syslog messages the output delivered (written and flushed, or fsync'd).
    delivered => counter("gateway_rx_syslog_delivered_total"), json, row "delivered";
    /// Connection and write failures (each retried from the cursor).
    failures => counter("gateway_rx_syslog_output_failures_total"), json, row "failures" bad;
    /// Messages too long for a UDP datagram, skipped by a udp:// output.
    too_long => counter("gateway_rx_syslog_too_long_for_udp_total"), json, row "skipped: too long for UDP" bad;
    /// 1 while connected (or the file open).
    connected => gauge("gateway_rx_syslog_output_connected"), json, row "connected";
}

/// An output's name and counters, for status and metrics.
#[derive(Clone)]
pub struct OutputMonitor {
    pub name: String,
    pub stats: Arc<OutputStats>,
}

/// Messages delivered per batch at most: the cursor is saved once per batch.
const BATCH_MESSAGES: usize = 2048;
const BATCH_BYTES: usize = 1 << 20;
const MAX_BACKOFF: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Failures are logged at most this often per output.
const LOG_INTERVAL: Duration = Duration::from_secs(10);

type Stream = Box<dyn AsyncWrite + Send + Unpin>;

enum Conn {
    Udp(tokio::net::UdpSocket),
    Tcp(tokio::net::TcpStream),
    Stream(Stream),
    File(std::fs::File),
}

pub struct Output {
    config: Forward,
    shared: Arc<Shared>,
    stats: Arc<OutputStats>,
    at: Position,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl Output {
    /// Takes the output's place in the spool: its saved cursor, or for a new output the
    /// oldest segment held.
    pub fn new(config: Forward, shared: Arc<Shared>) -> anyhow::Result<Output> {
        let at = match spool::load_cursor(&shared.dir, &config.name) {
            Some(p) => p,
            None => Position {
                segment: spool::segment_ids(&shared.dir)?
                    .first()
                    .copied()
                    .unwrap_or(shared.committed.borrow().id),
                offset: 0,
            },
        };
        shared.cursors.set(&config.name, at.segment);
        let tls = match &config.target {
            Target::Tls { ca_file, .. } => Some(tls_config(ca_file.as_ref())?),
            _ => None,
        };
        info!(output = %config.name, segment = at.segment, offset = at.offset, "syslog output starts");
        Ok(Output {
            config,
            shared,
            stats: Arc::default(),
            at,
            tls,
        })
    }

    pub fn monitor(&self) -> OutputMonitor {
        OutputMonitor {
            name: self.config.name.clone(),
            stats: self.stats.clone(),
        }
    }

    pub async fn run(mut self) {
        let mut committed = self.shared.committed.clone();
        let mut reader: Option<Reader> = None;
        let mut conn: Option<Conn> = None;
        let mut backoff = Duration::from_millis(100);
        let mut last_log: Option<Instant> = None;
        let mut batch: Vec<Vec<u8>> = Vec::new();
        loop {
            let c = *committed.borrow_and_update();
            // Fill a batch from the cursor.
            let end = match self.read_batch(&mut reader, c, &mut batch) {
                Ok(end) => end,
                Err(e) => {
                    warn!(output = %self.config.name, error = %e, "reading the syslog spool failed");
                    reader = None;
                    tokio::time::sleep(MAX_BACKOFF).await;
                    continue;
                }
            };
            if batch.is_empty() {
                if self.at.segment < c.id {
                    // This segment is read whole: on to the next one.
                    let next = spool::segment_ids(&self.shared.dir)
                        .ok()
                        .and_then(|ids| ids.into_iter().find(|&id| id > self.at.segment))
                        .unwrap_or(c.id);
                    self.at = Position {
                        segment: next,
                        offset: 0,
                    };
                    reader = None;
                    self.save();
                    continue;
                }
                if committed.changed().await.is_err() {
                    return;
                }
                continue;
            }
            // Deliver it, however long the destination takes to come back.
            let mut done = 0;
            loop {
                match self.deliver(&mut conn, &batch, &mut done).await {
                    Ok(()) => {
                        backoff = Duration::from_millis(100);
                        break;
                    }
                    Err(e) => {
                        conn = None;
                        self.stats.connected.store(0, Ordering::Relaxed);
                        self.stats.failures.fetch_add(1, Ordering::Relaxed);
                        let now = Instant::now();
                        if last_log.is_none_or(|t| now.duration_since(t) >= LOG_INTERVAL) {
                            warn!(output = %self.config.name, error = format!("{e:#}"),
                                  waiting = batch.len() - done,
                                  "syslog output failed; messages wait in the spool");
                            last_log = Some(now);
                        }
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        // A stream that failed part-way is retried from the batch's start:
                        // what it wrote may not have arrived.
                        if !matches!(self.config.target, Target::Udp(_)) {
                            done = 0;
                        }
                    }
                }
            }
            self.stats
                .delivered
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            self.at.offset = end;
            self.save();
        }
    }

    /// Reads up to a batch of messages from the cursor into `batch`; returns the offset after
    /// the last one.
    fn read_batch(
        &mut self,
        reader: &mut Option<Reader>,
        c: spool::Committed,
        batch: &mut Vec<Vec<u8>>,
    ) -> Result<u64, durable_log::LogError> {
        batch.clear();
        let path = FORMAT.path(&self.shared.dir, self.at.segment);
        if reader.is_none() {
            if !path.exists() {
                return Ok(self.at.offset);
            }
            *reader = Some(Reader::open(&path, FORMAT, self.at.offset)?);
        }
        let Some(r) = reader.as_mut() else {
            return Ok(self.at.offset);
        };
        if self.at.segment == c.id {
            r.set_limit(c.len);
        } else {
            r.refresh_len()?;
        }
        let mut bytes = 0;
        while batch.len() < BATCH_MESSAGES && bytes < BATCH_BYTES {
            let Some(body) = r.next_record()? else {
                break;
            };
            if let Some((_, _, msg)) = spool::parse_entry(body) {
                bytes += msg.len();
                batch.push(msg.to_vec());
            }
        }
        Ok(r.offset())
    }

    fn save(&self) {
        self.shared.cursors.set(&self.config.name, self.at.segment);
        if let Err(e) = spool::save_cursor(&self.shared.dir, &self.config.name, self.at) {
            // The position in memory goes on; a restart before the next save re-sends.
            warn!(output = %self.config.name, error = %e, "saving the syslog output cursor failed");
        }
    }

    async fn connect(&self) -> anyhow::Result<Conn> {
        let conn = match &self.config.target {
            Target::Udp(addr) => {
                let bind: std::net::SocketAddr = if addr.is_ipv4() {
                    ([0, 0, 0, 0], 0).into()
                } else {
                    (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
                };
                let s = tokio::net::UdpSocket::bind(bind).await?;
                s.connect(addr).await?;
                Conn::Udp(s)
            }
            Target::Tcp(addr) => {
                let s = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr))
                    .await
                    .map_err(|_| anyhow::anyhow!("connecting to {addr} timed out"))??;
                let _ = s.set_nodelay(true);
                Conn::Tcp(s)
            }
            Target::Tls {
                addr, server_name, ..
            } => {
                let s = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr))
                    .await
                    .map_err(|_| anyhow::anyhow!("connecting to {addr} timed out"))??;
                let _ = s.set_nodelay(true);
                let name = match server_name {
                    Some(n) => rustls::pki_types::ServerName::try_from(n.clone())?,
                    None => rustls::pki_types::ServerName::IpAddress(addr.ip().into()),
                };
                let config = self
                    .tls
                    .clone()
                    .ok_or_else(|| anyhow::anyhow!("no TLS configuration"))?;
                let tls = tokio::time::timeout(
                    CONNECT_TIMEOUT,
                    tokio_rustls::TlsConnector::from(config).connect(name, s),
                )
                .await
                .map_err(|_| anyhow::anyhow!("TLS handshake with {addr} timed out"))??;
                Conn::Stream(Box::new(tls))
            }
            Target::File(path) => Conn::File(open_append(path)?),
        };
        self.stats.connected.store(1, Ordering::Relaxed);
        Ok(conn)
    }

    /// Delivers `batch[*done..]`, counting in `done` what a datagram output already sent.
    async fn deliver(
        &self,
        conn: &mut Option<Conn>,
        batch: &[Vec<u8>],
        done: &mut usize,
    ) -> anyhow::Result<()> {
        if conn.is_none() {
            *conn = Some(self.connect().await?);
        }
        let Some(c) = conn.as_mut() else {
            return Ok(());
        };
        match c {
            Conn::Udp(s) => {
                while let Some(m) = batch.get(*done) {
                    if m.len() > 65_507 {
                        self.stats.too_long.fetch_add(1, Ordering::Relaxed);
                    } else {
                        s.send(m).await?;
                    }
                    *done += 1;
                }
            }
            Conn::Tcp(s) => {
                // A collector that closed the connection (stopped, restarted) is seen before
                // the batch is written, not after: writes into a closed connection succeed
                // until the peer's reset comes back, and what they carried would be lost with
                // the cursor moved past it (rsyslog's omfwd checks the same way). A close
                // during the write itself is what plain TCP syslog cannot catch.
                let mut probe = [0u8; 1];
                match s.try_read(&mut probe) {
                    Ok(0) => anyhow::bail!("the collector closed the connection"),
                    // Collectors send nothing; whatever one does send is ignored.
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e.into()),
                }
                s.write_all(&octet_counted(batch)).await?;
                s.flush().await?;
            }
            Conn::Stream(s) => {
                s.write_all(&octet_counted(batch)).await?;
                s.flush().await?;
            }
            Conn::File(f) => {
                use std::io::Write;
                let mut buf = Vec::with_capacity(batch.iter().map(|m| m.len() + 1).sum());
                for m in batch {
                    buf.extend_from_slice(m);
                    buf.push(b'\n');
                }
                // Small and synchronous: a local file, then fsync before the cursor moves.
                f.write_all(&buf)?;
                f.sync_data()?;
            }
        }
        Ok(())
    }
}

/// RFC 6587 octet counting: `LEN SP MSG` for each message.
fn octet_counted(batch: &[Vec<u8>]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(batch.iter().map(|m| m.len() + 8).sum());
    for m in batch {
        buf.extend_from_slice(m.len().to_string().as_bytes());
        buf.push(b' ');
        buf.extend_from_slice(m);
    }
    buf
}

fn open_append(path: &PathBuf) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

fn tls_config(ca_file: Option<&PathBuf>) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for cert in CertificateDer::pem_file_iter(path)
                .map_err(|e| anyhow::anyhow!("reading CA file {}: {e}", path.display()))?
            {
                let cert = cert.map_err(|e| anyhow::anyhow!("CA file {}: {e}", path.display()))?;
                roots.add(cert)?;
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    if roots.is_empty() {
        anyhow::bail!("no CA certificate to trust (ca_file, or the system's)");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
