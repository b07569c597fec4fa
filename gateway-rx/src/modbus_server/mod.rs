//! The read-only Modbus TCP mirror: serves the source devices' registers, rebuilt from the
//! current values, to Modbus clients on the IT side. It refuses every write.
//!
//! # Addressing
//!
//! A tag read from a Modbus device on the OT side is served at the same unit id, table and
//! address it has on its source, its registers rebuilt from the engineering value with the
//! tag's own type, byte order, word order and scaling (`protocol::registers::encode`). The
//! `unit_map` config serves every tag of a device under another unit id instead. Two devices
//! served under the same unit id share one address space; where their registers overlap the
//! device whose name sorts first wins, so give them distinct unit ids with `unit_map`.
//! A read finds its tags through the register index ([`index`]), built with each catalogue and
//! bounded; tags beyond its caps are not mirrored, and counted.
//!
//! # Answers
//!
//! | Request | Answer |
//! |---|---|
//! | Any write or other function (05, 06, 0F, 10, 16, 17, 2B, 11, anything else) | exception 01 Illegal Function, for every unit id; logged and counted |
//! | Read quantity 0 or above 125 registers / 2000 bits | exception 03 Illegal Data Value |
//! | Unit id with no mirrored tags (after `unit_map`) | exception 0A Gateway Path Unavailable |
//! | Read touching a register (or bit) that no tag covers, or past address 65535 | exception 02 Illegal Data Address |
//! | Read touching a tag whose served quality is Bad | `on_bad_quality`: exception 04 Server Device Failure / the last value / zeros |
//! | Read touching a tag that never received a value | handled as Bad with no last value: exception 04, or zeros with `Zero` |
//! | Read touching a tag whose value cannot be encoded in its registers (out of range) | as for a tag without a value |
//! | Good or Uncertain quality (incl. link down, see `state`) | the value |
//!
//! Checks go in the order of the table (function, quantity, unit, address, value), the order
//! the Modbus application protocol specification gives for exception codes. Part of a
//! multi-register tag may be read on its own; the whole read is served from one consistent view
//! of the state, so the words of one value never mix two samples.
//!
//! # Connections
//!
//! At most [`MAX_CONNECTIONS`] clients are served at once; a connection beyond that is closed
//! at once (and counted), so a flood of clients cannot exhaust memory or file descriptors. A
//! connection that completes no request for [`IDLE_TIMEOUT`] (bytes of an unfinished one do not
//! count), or does not read its answers for as long, is closed, so idle, trickling or stalled
//! clients cannot hold the slots forever; and one peer address holds at most
//! [`MAX_CONNECTIONS_PER_PEER`] of them, so one host cannot take them all. A malformed
//! frame closes only its own connection, and the few write frames that would make
//! tokio-modbus's decoder panic are refused before it sees them (see `FrameGuard`). Should accepting fail (e.g. out of file descriptors),
//! the listener is served again after a short pause; the connections open at that moment are
//! closed too, which clients see as a reconnect.

pub mod index;

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::future::{Future, Ready, ready};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use config::rx::{ModbusServer, OnBadQuality};
use protocol::model::{ModbusAddress, ModbusTable, TagIndex};
use protocol::registers;
use protocol::tag_ref::SourceRef;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;
use tokio_modbus::server::Service;
use tokio_modbus::server::tcp::Server;
use tokio_modbus::{ExceptionCode, Request, Response, SlaveRequest};
use tracing::{debug, info, warn};

use crate::state::{State, StateView};
use index::ModbusKey;

/// Clients served at once.
pub const MAX_CONNECTIONS: usize = 64;
/// Connections from one peer address at once, at most: a quarter of the slots.
pub const MAX_CONNECTIONS_PER_PEER: usize = 16;
/// A connection with no complete request for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Modbus application protocol spec, 6.1 to 6.4.
pub const MAX_READ_REGISTERS: u16 = 125;
pub const MAX_READ_BITS: u16 = 2000;
/// Refusals and bad frames are logged at most this often per kind; counters count all.
const LOG_INTERVAL: Duration = Duration::from_secs(10);
const ACCEPT_RETRY: Duration = Duration::from_millis(200);

observe::family! {
    /// Requests to the read-only Modbus mirror, by answer: served, or the exception.
    pub const REQUESTS = counter "gateway_rx_modbus_requests_total" by "outcome";
}

observe::family! {
    /// Connections to the Modbus mirror, by outcome (refused: over the limit; failed: closed on
    /// a bad frame, an IO error or the idle timeout).
    pub const CONNECTIONS = counter "gateway_rx_modbus_connections_total" by "outcome";
}

observe::counters! {
    /// Counters of the Modbus mirror since it started.
    #[derive(Debug, Default)]
    pub struct ServerCounters;
    /// A copy of [`ServerCounters`].
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
    pub struct ServerCountersSnapshot;

    /// Read requests answered with values.
    reads_served => REQUESTS["served"], row "reads served";
    /// Write requests refused by the mirror (also counted as illegal_function).
    writes_refused => counter("gateway_rx_modbus_writes_refused_total"), row "writes refused";
    illegal_function => REQUESTS["illegal_function"];
    illegal_address => REQUESTS["illegal_data_address"],
        row "exceptions 02 / 03 / 04 / 0A" = |s| format!("{} / {} / {} / {}",
            s.illegal_address, s.illegal_value, s.device_failure, s.unknown_unit);
    illegal_value => REQUESTS["illegal_data_value"];
    device_failure => REQUESTS["server_device_failure"];
    unknown_unit => REQUESTS["gateway_path_unavailable"];
    connections_accepted => CONNECTIONS["accepted"],
        row "connections accepted / refused / failed" = |s| format!("{} / {} / {}",
            s.connections_accepted, s.connections_refused, s.connections_failed);
    connections_refused => CONNECTIONS["refused"];
    /// Connections closed on a malformed frame, an IO error or the idle timeout.
    connections_failed => CONNECTIONS["failed"];
    /// Failed accepts (logged; the listener is served again after a pause).
    accept_errors;
}

/// Logs at most once per [`LOG_INTERVAL`], saying how many were not logged in between.
#[derive(Debug, Default)]
struct LogLimit {
    state: Mutex<(Option<Instant>, u64)>,
}

impl LogLimit {
    /// Returns `Some(suppressed since the last log)` when this event may be logged.
    fn check(&self) -> Option<u64> {
        let mut guard = match self.state.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let now = Instant::now();
        match guard.0 {
            Some(last) if now.duration_since(last) < LOG_INTERVAL => {
                guard.1 += 1;
                None
            }
            _ => {
                let suppressed = guard.1;
                *guard = (Some(now), 0);
                Some(suppressed)
            }
        }
    }
}

#[derive(Debug, Default)]
struct Logs {
    writes: LogLimit,
    refused: LogLimit,
    failed: LogLimit,
}

/// What every connection shares.
#[derive(Debug)]
struct Shared {
    state: Arc<State>,
    on_bad_quality: OnBadQuality,
    unit_map: HashMap<String, u8>,
    counters: Arc<ServerCounters>,
    logs: Logs,
    /// Connections open per peer address.
    peers: Mutex<HashMap<std::net::IpAddr, usize>>,
}

/// One connection's count in [`Shared::peers`], given back when the connection ends.
struct PeerSlot {
    shared: Arc<Shared>,
    ip: std::net::IpAddr,
}

impl PeerSlot {
    fn take(shared: &Arc<Shared>, ip: std::net::IpAddr) -> Option<PeerSlot> {
        let mut peers = shared.peers.lock().unwrap_or_else(|e| e.into_inner());
        let n = peers.entry(ip).or_insert(0);
        if *n >= MAX_CONNECTIONS_PER_PEER {
            return None;
        }
        *n += 1;
        Some(PeerSlot {
            shared: Arc::clone(shared),
            ip,
        })
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut peers = self.shared.peers.lock().unwrap_or_else(|e| e.into_inner());
        if let Entry::Occupied(mut e) = peers.entry(self.ip) {
            *e.get_mut() -= 1;
            if *e.get() == 0 {
                e.remove();
            }
        }
    }
}

/// Serves the mirror on `listener` until the task is dropped.
pub async fn serve(
    listener: TcpListener,
    state: Arc<State>,
    config: ModbusServer,
) -> anyhow::Result<()> {
    serve_with_counters(listener, state, config, Arc::default()).await
}

/// [`serve`], counting into `counters` (for the status page and metrics).
pub async fn serve_with_counters(
    listener: TcpListener,
    state: Arc<State>,
    config: ModbusServer,
    counters: Arc<ServerCounters>,
) -> anyhow::Result<()> {
    let local = listener.local_addr().ok();
    // Later entries for the same device win, as in any TOML table read top to bottom.
    let unit_map: HashMap<String, u8> = config.unit_map.iter().cloned().collect();
    let shared = Arc::new(Shared {
        state,
        on_bad_quality: config.on_bad_quality,
        unit_map,
        counters,
        logs: Logs::default(),
        peers: Mutex::new(HashMap::new()),
    });
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let server = Server::new(listener);
    info!(bind = ?local, max_connections = MAX_CONNECTIONS, "Modbus mirror listening (read-only)");

    let on_connected = |stream: TcpStream, peer: SocketAddr| {
        let shared = Arc::clone(&shared);
        let peer_slot = PeerSlot::take(&shared, peer.ip());
        let permit = peer_slot
            .is_some()
            .then(|| Arc::clone(&slots).try_acquire_owned().ok())
            .flatten();
        async move {
            let (Some(permit), Some(peer_slot)) = (permit, peer_slot) else {
                shared
                    .counters
                    .connections_refused
                    .fetch_add(1, Ordering::Relaxed);
                if let Some(suppressed) = shared.logs.refused.check() {
                    warn!(%peer, max = MAX_CONNECTIONS, per_peer = MAX_CONNECTIONS_PER_PEER, suppressed, "Modbus client refused: too many connections");
                }
                return Ok::<_, io::Error>(None);
            };
            shared
                .counters
                .connections_accepted
                .fetch_add(1, Ordering::Relaxed);
            debug!(%peer, "Modbus client connected");
            let service = Mirror {
                shared,
                peer,
                _permit: permit,
                _peer_slot: peer_slot,
            };
            Ok(Some((service, ClientStream::new(stream, IDLE_TIMEOUT))))
        }
    };
    let on_process_error = {
        let shared = Arc::clone(&shared);
        move |err: io::Error| {
            shared
                .counters
                .connections_failed
                .fetch_add(1, Ordering::Relaxed);
            if let Some(suppressed) = shared.logs.failed.check() {
                warn!(error = %err, suppressed, "Modbus connection closed on a bad frame or IO error");
            }
        }
    };

    loop {
        if let Err(err) = server.serve(&on_connected, on_process_error.clone()).await {
            shared
                .counters
                .accept_errors
                .fetch_add(1, Ordering::Relaxed);
            warn!(error = %err, "Modbus mirror could not accept a connection; retrying");
            tokio::time::sleep(ACCEPT_RETRY).await;
        }
    }
}

/// One client's service. Holds a connection slot until the connection ends.
struct Mirror {
    shared: Arc<Shared>,
    peer: SocketAddr,
    _permit: OwnedSemaphorePermit,
    _peer_slot: PeerSlot,
}

impl Service for Mirror {
    type Request = SlaveRequest<'static>;
    type Response = Response;
    type Exception = ExceptionCode;
    type Future = Ready<Result<Response, ExceptionCode>>;

    fn call(&self, req: Self::Request) -> Self::Future {
        let result = self.handle(req);
        if let Err(code) = result {
            let c = &self.shared.counters;
            let counter = match code {
                ExceptionCode::IllegalFunction => &c.illegal_function,
                ExceptionCode::IllegalDataAddress => &c.illegal_address,
                ExceptionCode::IllegalDataValue => &c.illegal_value,
                ExceptionCode::GatewayPathUnavailable => &c.unknown_unit,
                _ => &c.device_failure,
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
        ready(result)
    }
}

impl Mirror {
    fn handle(&self, req: SlaveRequest<'static>) -> Result<Response, ExceptionCode> {
        let unit = req.slave;
        let read = |table, address, quantity| {
            let words = self.read(unit, table, address, quantity)?;
            self.shared
                .counters
                .reads_served
                .fetch_add(1, Ordering::Relaxed);
            Ok(words)
        };
        let bits = |words: Vec<u16>| words.into_iter().map(|w| w != 0).collect();
        match req.request {
            Request::ReadCoils(a, q) => {
                read(ModbusTable::Coil, a, q).map(|w| Response::ReadCoils(bits(w)))
            }
            Request::ReadDiscreteInputs(a, q) => read(ModbusTable::DiscreteInput, a, q)
                .map(|w| Response::ReadDiscreteInputs(bits(w))),
            Request::ReadHoldingRegisters(a, q) => {
                read(ModbusTable::HoldingRegister, a, q).map(Response::ReadHoldingRegisters)
            }
            Request::ReadInputRegisters(a, q) => {
                read(ModbusTable::InputRegister, a, q).map(Response::ReadInputRegisters)
            }
            other => {
                let function = other.function_code().value();
                if is_write(&other) {
                    self.shared
                        .counters
                        .writes_refused
                        .fetch_add(1, Ordering::Relaxed);
                    if let Some(suppressed) = self.shared.logs.writes.check() {
                        warn!(peer = %self.peer, unit, function, suppressed, "Modbus write refused: the mirror is read-only");
                    }
                } else {
                    debug!(peer = %self.peer, unit, function, "unsupported Modbus function");
                }
                Err(ExceptionCode::IllegalFunction)
            }
        }
    }

    /// The words (registers, or 0/1 per bit) for a read, or the exception to answer.
    fn read(
        &self,
        unit: u8,
        table: ModbusTable,
        start: u16,
        quantity: u16,
    ) -> Result<Vec<u16>, ExceptionCode> {
        let limit = if table.is_bits() {
            MAX_READ_BITS
        } else {
            MAX_READ_REGISTERS
        };
        if quantity == 0 || quantity > limit {
            return Err(ExceptionCode::IllegalDataValue);
        }

        let view = self.shared.state.view();
        let index = view.modbus_index();
        let mut unit_known = false;
        let mut keys: Vec<&ModbusKey> = Vec::new();
        for key in index.keys() {
            if self.served_unit(key) == unit {
                unit_known = true;
                if key.table == table {
                    keys.push(key);
                }
            }
        }
        if !unit_known {
            return Err(ExceptionCode::GatewayPathUnavailable);
        }
        if u32::from(start) + u32::from(quantity) > 1 << 16 {
            return Err(ExceptionCode::IllegalDataAddress);
        }

        // First pass: every address must be covered, before any value is looked at.
        let mut covering = Vec::with_capacity(usize::from(quantity));
        for address in (start..=u16::MAX).take(usize::from(quantity)) {
            let found = keys
                .iter()
                .find_map(|key| index.tags_at(key, address).first().copied());
            match found {
                Some(r) => covering.push(r),
                None => return Err(ExceptionCode::IllegalDataAddress),
            }
        }

        let mut tags: HashMap<TagIndex, Vec<u16>> = HashMap::new();
        let mut words = Vec::with_capacity(covering.len());
        for r in covering {
            let encoded = match tags.entry(r.tag) {
                Entry::Occupied(e) => e.into_mut(),
                Entry::Vacant(e) => e.insert(self.tag_words(&view, r.tag)?),
            };
            let word = encoded
                .get(usize::from(r.offset))
                .copied()
                .ok_or(ExceptionCode::ServerDeviceFailure)?;
            words.push(word);
        }
        Ok(words)
    }

    fn served_unit(&self, key: &ModbusKey) -> u8 {
        self.shared
            .unit_map
            .get(&key.device)
            .map_or(key.unit_id, |&u| u)
    }

    /// All the words of one tag as they should be served, or exception 04.
    fn tag_words(&self, view: &StateView<'_>, tag: TagIndex) -> Result<Vec<u16>, ExceptionCode> {
        let Some(SourceRef::Modbus(addr)) = view.tag(tag).map(|t| t.source) else {
            return Err(ExceptionCode::ServerDeviceFailure);
        };
        let addr = &addr.to_address();
        let policy = self.shared.on_bad_quality;
        let zeros = || vec![0u16; usize::from(registers::register_count(addr))];
        let Some(served) = view.value(tag) else {
            return match policy {
                OnBadQuality::Zero => Ok(zeros()),
                OnBadQuality::Exception | OnBadQuality::LastValue => {
                    Err(ExceptionCode::ServerDeviceFailure)
                }
            };
        };
        if served.quality.is_bad() {
            match policy {
                OnBadQuality::Exception => return Err(ExceptionCode::ServerDeviceFailure),
                OnBadQuality::Zero => return Ok(zeros()),
                OnBadQuality::LastValue => {}
            }
        }
        match encode(addr, served.value) {
            Some(words) => Ok(words),
            None if policy == OnBadQuality::Zero => Ok(zeros()),
            None => Err(ExceptionCode::ServerDeviceFailure),
        }
    }
}

/// The tag's words (one 0/1 word per bit in a bit table), or `None` when the value does not
/// fit its registers.
fn encode(addr: &ModbusAddress, value: &protocol::model::Value) -> Option<Vec<u16>> {
    if addr.table.is_bits() {
        return registers::encode_bit(value)
            .ok()
            .map(|b| vec![u16::from(b)]);
    }
    let mut words = Vec::with_capacity(usize::from(registers::register_count(addr)));
    registers::encode(addr, value, &mut words).ok()?;
    (words.len() == usize::from(registers::register_count(addr))).then_some(words)
}

fn is_write(req: &Request<'_>) -> bool {
    matches!(
        req,
        Request::WriteSingleCoil(..)
            | Request::WriteMultipleCoils(..)
            | Request::WriteSingleRegister(..)
            | Request::WriteMultipleRegisters(..)
            | Request::MaskWriteRegister(..)
            | Request::ReadWriteMultipleRegisters(..)
    )
}

/// The client's TCP stream as tokio-modbus sees it: fails once no data has been read for
/// `timeout` (including while a write is stuck because the peer does not read), and fails on a
/// frame that tokio-modbus 0.17's request decoder would panic on (see [`FrameGuard`]).
struct ClientStream<T> {
    inner: T,
    timeout: Duration,
    deadline: Pin<Box<Sleep>>,
    guard: FrameGuard,
}

impl<T> ClientStream<T> {
    fn new(inner: T, timeout: Duration) -> Self {
        ClientStream {
            inner,
            timeout,
            deadline: Box::pin(tokio::time::sleep(timeout)),
            guard: FrameGuard::default(),
        }
    }

    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        self.deadline.as_mut().poll(cx).is_ready()
    }
}

fn idle_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        "Modbus connection idle for too long",
    )
}

impl<T: AsyncRead + Unpin> AsyncRead for ClientStream<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let new = &buf.filled()[before..];
                if !new.is_empty() {
                    // An error here reaches tokio-modbus before it decodes these bytes. Only a
                    // whole request moves the deadline: a byte now and then must not hold a
                    // connection slot for ever.
                    if self.guard.feed(new)? > 0 {
                        let next = tokio::time::Instant::now() + self.timeout;
                        self.deadline.as_mut().reset(next);
                    } else if self.expired(cx) {
                        return Poll::Ready(Err(idle_error()));
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(idle_error())),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ClientStream<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(idle_error())),
            other => other,
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(idle_error())),
            other => other,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Bytes of an ADU the guard looks at: the MBAP header (7) and the PDU up to the write
/// quantity of function 0x17 (9).
const GUARD_HEAD: usize = 16;

/// Follows the MBAP framing of the request stream and refuses the write requests that
/// tokio-modbus 0.17's decoder panics on instead of returning an error: 0x0F with fewer data
/// bytes than its quantity needs (an out-of-bounds index, in release builds too), and 0x10 or
/// 0x17 with a quantity whose double overflows a u16 (in builds with overflow checks). Such
/// frames break the Modbus spec's own limits, which is what is checked here; the connection is
/// closed like on any other malformed frame. tokio catches a panic in a connection task, but a
/// build with `panic = "abort"` would not, and a panic is not a rejection we can count.
#[derive(Debug, Default)]
struct FrameGuard {
    head: [u8; GUARD_HEAD],
    have: usize,
    /// Length of the current ADU, once its header is in.
    total: Option<usize>,
    /// Bytes of the current ADU still to pass after its head was checked.
    skip: usize,
}

impl FrameGuard {
    /// Follows `bytes` through the framing; returns how many requests they completed.
    fn feed(&mut self, mut bytes: &[u8]) -> io::Result<usize> {
        let mut completed = 0;
        while !bytes.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(bytes.len());
                self.skip -= n;
                bytes = &bytes[n..];
                if self.skip == 0 {
                    completed += 1;
                }
                continue;
            }
            let want = self.total.map_or(6, |t| t.min(GUARD_HEAD));
            let n = (want - self.have).min(bytes.len());
            self.head[self.have..self.have + n].copy_from_slice(&bytes[..n]);
            self.have += n;
            bytes = &bytes[n..];
            if self.have < want {
                continue;
            }
            match self.total {
                None => {
                    let len = usize::from(u16::from_be_bytes([self.head[4], self.head[5]]));
                    if len == 0 {
                        return Err(guard_error("MBAP length 0"));
                    }
                    self.total = Some(6 + len);
                }
                Some(total) => {
                    check_head(&self.head[..self.have])?;
                    self.skip = total - self.have;
                    if self.skip == 0 {
                        completed += 1;
                    }
                    self.have = 0;
                    self.total = None;
                }
            }
        }
        Ok(completed)
    }
}

fn guard_error(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("refused Modbus frame: {what}"),
    )
}

/// Checks the start of one ADU (header and as much of the PDU as [`GUARD_HEAD`] holds).
fn check_head(adu: &[u8]) -> io::Result<()> {
    let Some(pdu) = adu.get(7..) else {
        return Ok(());
    };
    let u16_at = |i: usize| Some(u16::from_be_bytes([*pdu.get(i)?, *pdu.get(i + 1)?]));
    let refused = match pdu.first() {
        Some(0x0F) => match (u16_at(3), pdu.get(5)) {
            (Some(quantity), Some(&bytes)) => {
                quantity > 0x07B0 || usize::from(bytes) * 8 < usize::from(quantity)
            }
            _ => false,
        },
        Some(0x10) => u16_at(3).is_some_and(|q| q > 0x7B),
        Some(0x17) => u16_at(7).is_some_and(|q| q > 0x79),
        _ => false,
    };
    if refused {
        return Err(guard_error(
            "a write quantity beyond the Modbus limits or beyond its data",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn adu(pdu: &[u8]) -> Vec<u8> {
        let len = u16::try_from(pdu.len() + 1).unwrap().to_be_bytes();
        let mut v = vec![0, 1, 0, 0, len[0], len[1], 1];
        v.extend_from_slice(pdu);
        v
    }

    #[test]
    fn guard_passes_good_frames_in_any_split() {
        let mut stream = Vec::new();
        stream.extend(adu(&[0x03, 0, 0, 0, 10]));
        stream.extend(adu(&[0x0F, 0, 0, 0, 10, 2, 0xFF, 0x03]));
        stream.extend(adu(&[0x10, 0, 0, 0, 2, 4, 0, 1, 0, 2]));
        stream.extend(adu(&[0x17, 0, 0, 0, 1, 0, 0, 0, 1, 2, 0, 5]));
        stream.extend(adu(&[0x10, 0, 0]));
        stream.extend(adu(&[0x41]));
        for split in 1..stream.len() {
            let mut g = FrameGuard::default();
            for part in stream.chunks(split) {
                g.feed(part).unwrap();
            }
            assert_eq!((g.have, g.skip, g.total), (0, 0, None));
        }
    }

    #[test]
    fn guard_refuses_frames_that_panic_the_decoder() {
        for pdu in [
            &[0x0F, 0, 0, 0xFF, 0xFF, 1, 0][..],
            &[0x0F, 0, 0, 0, 9, 1, 0],
            &[0x10, 0, 0, 0x80, 0, 0],
            &[0x10, 0, 0, 0, 124, 248],
            &[0x17, 0, 0, 0, 1, 0, 0, 0x80, 0, 0],
        ] {
            for split in 1..8 {
                let mut g = FrameGuard::default();
                let frame = adu(pdu);
                let failed = frame.chunks(split).any(|part| g.feed(part).is_err());
                assert!(failed, "{pdu:?}");
            }
        }
        assert!(FrameGuard::default().feed(&[0, 1, 0, 0, 0, 0, 1]).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn idle_connections_time_out() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut client, server) = tokio::io::duplex(64);
        let mut stream = ClientStream::new(server, Duration::from_secs(10));
        let mut buf = [0u8; 16];
        // A whole request (read holding registers) 9 s in resets the deadline.
        tokio::time::sleep(Duration::from_secs(9)).await;
        let request = adu(&[0x03, 0, 0, 0, 1]);
        client.write_all(&request).await.unwrap();
        assert_eq!(stream.read(&mut buf).await.unwrap(), request.len());
        tokio::time::sleep(Duration::from_secs(9)).await;
        client.write_all(&request).await.unwrap();
        assert_eq!(stream.read(&mut buf).await.unwrap(), request.len());
        let started = tokio::time::Instant::now();
        let err = stream.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(10));
    }

    /// A client trickling a byte now and then used to hold its slot for ever: every byte reset
    /// the idle timer. Only a whole request does now.
    #[tokio::test(start_paused = true)]
    async fn a_trickle_of_bytes_does_not_keep_a_connection_open() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut client, server) = tokio::io::duplex(64);
        let mut stream = ClientStream::new(server, Duration::from_secs(10));
        let started = tokio::time::Instant::now();
        let request = adu(&[0x03, 0, 0, 0, 1]);
        let mut buf = [0u8; 16];
        let mut sent = 0;
        let err = loop {
            tokio::time::sleep(Duration::from_secs(3)).await;
            client.write_all(&request[sent..=sent]).await.unwrap();
            sent += 1;
            assert!(sent < request.len(), "the whole request went through");
            match stream.read(&mut buf).await {
                Ok(n) => assert_eq!(n, 1),
                Err(e) => break e,
            }
        };
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(
            started.elapsed() <= Duration::from_secs(12),
            "{:?}",
            started.elapsed()
        );
    }
}
