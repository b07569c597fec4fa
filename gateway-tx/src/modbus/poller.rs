//! The Modbus TCP poller: one task per device, reads only.
//!
//! Read-only towards the plant: the only requests this module can build are the four read
//! functions (01 coils, 02 discrete inputs, 03 holding registers, 04 input registers), all in
//! [`request_for`]. It calls [`Client::call`] rather than the `Reader` helpers because those
//! helpers `debug_assert!` on the reply length and would panic on a PLC answering the wrong
//! number of registers; here a short reply is a counted decoding error.
//!
//! tokio-modbus has neither timeouts nor reconnects: the connect and every request run under
//! the device's timeout, and after a timeout or an I/O error the connection is dropped (a late
//! reply on it could otherwise be taken for the next request's) and re-established with
//! exponential backoff, 100 ms doubling to 10 s, reset by the first complete poll.
//!
//! # Qualities
//!
//! | Situation                                             | Quality of the tags concerned   |
//! |-------------------------------------------------------|---------------------------------|
//! | connect refused/unreachable, name not resolved, connection closed or reset, reply not matching the request (transaction or function code) | `BadCommunicationError`, all tags of the device |
//! | connect or request timed out                          | `BadTimeout`, all tags of the device |
//! | exception 01 illegal function                         | `BadNotSupported` (the device has no such table) |
//! | exception 02 illegal data address                     | `BadConfigurationError` (the tag map names an address the device does not have) |
//! | exception 03 illegal data value                       | `BadConfigurationError` (the device refuses the read's size or range) |
//! | exception 04 server device failure, 08 memory parity  | `BadDeviceFailure`              |
//! | exception 05 acknowledge, 06 server busy              | `BadCommunicationError` (transient, retried at the next poll) |
//! | exception 0A gateway path unavailable                 | `BadNoCommunication` (the gateway cannot reach the device) |
//! | exception 0B gateway target failed to respond         | `BadTimeout` (the timeout happened behind the gateway) |
//! | any other exception code                              | `Bad`                           |
//! | reply with the wrong number of registers or bits      | `BadDecodingError`, the request's tags |
//! | a tag's registers do not decode                       | `BadDecodingError`, that tag only |
//! | tag that no read can cover (too long, past 65535)     | `BadConfigurationError`, from the start |
//!
//! `BadNotConnected` is not used for a lost device: in OPC UA it means a variable that was never
//! configured to get its value from anywhere. `BadOutOfRange` is not used for exception 02:
//! OPC UA clients read it as a value outside its limits.
//!
//! Exceptions are per request; the connection stays up and the other requests carry on. When a
//! merged request (several tags, possibly bridging a gap) gets exception 02 or 03, it is split
//! into one request per tag for good, so only the tags at bad addresses stay Bad.
//!
//! Logs are rate-limited by transition: one warning when a device goes down, one info when it
//! comes back, one warning when a request starts failing and one info when it recovers; the
//! repeated failures in between are counted in the device's [`Health`] and logged at debug level.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use config::tx::ModbusDevice;
use protocol::model::{ModbusTable, Quality, TagIndex, UnixNanos};
use protocol::registers;
use thiserror::Error;
use tokio::net::TcpStream;
use tokio::time::{Instant, MissedTickBehavior, timeout};
use tokio_modbus::client::{Client, Context};
use tokio_modbus::{ExceptionCode, Request, Response, Slave};
use tracing::{debug, info, warn};

use super::plan::{self, PlanOptions, ReadRequest};
use crate::source::Health;
use crate::tags::{TagTable, Update};
use crate::unix_now;

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// A failure that costs the connection.
#[derive(Debug, Error)]
pub enum ConnectionError {
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("cannot resolve {host}: {source}")]
    Resolve { host: String, source: io::Error },
    #[error("{0} resolves to no address")]
    NoAddress(String),
    #[error("connect to {addr}: {source}")]
    Connect { addr: SocketAddr, source: io::Error },
    #[error("connection lost: {0}")]
    Transport(io::Error),
    #[error("reply does not match the request: {0}")]
    Protocol(tokio_modbus::ProtocolError),
}

impl ConnectionError {
    pub fn quality(&self) -> Quality {
        match self {
            ConnectionError::Timeout(_) => Quality::BAD_TIMEOUT,
            _ => Quality::BAD_COMMUNICATION_ERROR,
        }
    }
}

/// The quality of the tags of a request answered with a Modbus exception (see the table in the
/// module documentation).
pub fn exception_quality(code: ExceptionCode) -> Quality {
    match code {
        ExceptionCode::IllegalFunction => Quality::BAD_NOT_SUPPORTED,
        ExceptionCode::IllegalDataAddress | ExceptionCode::IllegalDataValue => {
            Quality::BAD_CONFIGURATION_ERROR
        }
        ExceptionCode::ServerDeviceFailure | ExceptionCode::MemoryParityError => {
            Quality::BAD_DEVICE_FAILURE
        }
        ExceptionCode::Acknowledge | ExceptionCode::ServerDeviceBusy => {
            Quality::BAD_COMMUNICATION_ERROR
        }
        ExceptionCode::GatewayPathUnavailable => Quality::BAD_NO_COMMUNICATION,
        ExceptionCode::GatewayTargetDevice => Quality::BAD_TIMEOUT,
        ExceptionCode::Custom(_) => Quality::BAD,
    }
}

/// Polls `device` forever (the caller aborts the task). Its tags are `first_tag..` in the
/// device's tag order, as [`crate::source::Sources::build`] numbers them.
pub async fn run_device(
    device: ModbusDevice,
    first_tag: TagIndex,
    table: Arc<TagTable>,
    health: Arc<Health>,
) {
    run_device_with(device, first_tag, table, health, PlanOptions::default()).await
}

/// [`run_device`] with explicit request planning options.
pub async fn run_device_with(
    device: ModbusDevice,
    first_tag: TagIndex,
    table: Arc<TagTable>,
    health: Arc<Health>,
    opts: PlanOptions,
) {
    let plan = plan::plan(&device, first_tag, &opts);
    let now = unix_now();
    for u in &plan.unreadable {
        warn!(device = %device.name, tag = u.tag, reason = %u.reason, "tag cannot be read");
    }
    table.apply(plan.unreadable.iter().map(|u| Update {
        tag: u.tag,
        value: None,
        quality: Quality::BAD_CONFIGURATION_ERROR,
        time: now,
    }));
    if plan.requests.is_empty() {
        info!(device = %device.name, "no readable tags; not connecting");
        return std::future::pending().await;
    }
    let mut poller = Poller {
        tags: plan
            .requests
            .iter()
            .flat_map(|r| r.tags.iter().map(|s| s.tag))
            .collect(),
        requests: plan
            .requests
            .into_iter()
            .map(|req| Planned { req, failing: None })
            .collect(),
        device,
        table,
        health,
        state: State::Starting,
    };
    poller.run().await
}

struct Planned {
    req: ReadRequest,
    /// The quality the request's last failure gave its tags; `None` while it succeeds.
    failing: Option<Quality>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the first poll or connection failure.
    Starting,
    Up,
    /// Down, with the quality every tag was given.
    Down(Quality),
}

struct Poller {
    device: ModbusDevice,
    table: Arc<TagTable>,
    health: Arc<Health>,
    requests: Vec<Planned>,
    /// Every tag some request reads.
    tags: Vec<TagIndex>,
    state: State,
}

impl Poller {
    async fn run(&mut self) -> ! {
        let mut backoff = BACKOFF_MIN;
        // tokio's interval panics on a zero period; the config forbids it, a hand-built device
        // might not.
        let period = self.device.poll_interval.max(Duration::from_millis(1));
        loop {
            let mut ctx = match self.connect().await {
                Ok(ctx) => ctx,
                Err(e) => {
                    self.went_down(&e);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            };
            self.health.set_connected(true);
            debug!(device = %self.device.name, "connected");
            let mut ticker = tokio::time::interval(period);
            ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
            let error = loop {
                ticker.tick().await;
                match self.poll(&mut ctx).await {
                    Ok(()) => backoff = BACKOFF_MIN,
                    Err(e) => break e,
                }
            };
            // Dropping the context closes the socket, so a late reply cannot be mistaken for
            // the answer to a later request.
            drop(ctx);
            self.went_down(&error);
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    async fn connect(&self) -> Result<Context, ConnectionError> {
        let host = self.device.host.as_str();
        let port = self.device.port;
        let unit = self.device.unit_id;
        let attempt = async move {
            let addr = tokio::net::lookup_host((host, port))
                .await
                .map_err(|source| ConnectionError::Resolve {
                    host: host.to_string(),
                    source,
                })?
                .next()
                .ok_or_else(|| ConnectionError::NoAddress(host.to_string()))?;
            let stream = TcpStream::connect(addr)
                .await
                .map_err(|source| ConnectionError::Connect { addr, source })?;
            // Requests are tiny and strictly one at a time; never let Nagle hold one back.
            let _ = stream.set_nodelay(true);
            Ok(tokio_modbus::client::tcp::attach_slave(stream, Slave(unit)))
        };
        timeout(self.device.timeout, attempt)
            .await
            .map_err(|_| ConnectionError::Timeout(self.device.timeout))?
    }

    /// Marks every tag Bad once per change of failure, and logs only the transition to down.
    fn went_down(&mut self, error: &ConnectionError) {
        self.health.set_connected(false);
        let message = error.to_string();
        self.health.poll_failed(&message);
        let quality = error.quality();
        match self.state {
            State::Down(q) if q == quality => {
                debug!(device = %self.device.name, error = %message, "still down");
                return;
            }
            State::Down(_) => {
                debug!(device = %self.device.name, error = %message, "still down, new reason");
            }
            State::Starting | State::Up => warn!(
                device = %self.device.name,
                host = %self.device.host,
                port = self.device.port,
                error = %message,
                quality = quality.name(),
                "device down"
            ),
        }
        self.state = State::Down(quality);
        // Request-level failure states are moot now; every tag gets the device's quality and
        // the next good poll sets them afresh.
        for p in &mut self.requests {
            p.failing = None;
        }
        let time = unix_now();
        self.table.apply(self.tags.iter().map(|&tag| Update {
            tag,
            value: None,
            quality,
            time,
        }));
    }

    /// One pass over every request. Errors that cost the connection end the pass; exceptions
    /// and bad replies only affect their request's tags.
    async fn poll(&mut self, ctx: &mut Context) -> Result<(), ConnectionError> {
        let started = Instant::now();
        let mut updates = Vec::with_capacity(self.tags.len());
        let mut first_error: Option<String> = None;
        let mut i = 0;
        while i < self.requests.len() {
            let req = &self.requests[i].req;
            let reply = timeout(self.device.timeout, ctx.call(request_for(req))).await;
            let time = unix_now();
            let outcome = match reply {
                Err(_) => return Err(ConnectionError::Timeout(self.device.timeout)),
                Ok(Err(tokio_modbus::Error::Transport(e))) => {
                    return Err(ConnectionError::Transport(closed_or(e)));
                }
                Ok(Err(tokio_modbus::Error::Protocol(e))) => {
                    return Err(ConnectionError::Protocol(e));
                }
                Ok(Ok(Err(code))) => {
                    if matches!(
                        code,
                        ExceptionCode::IllegalDataAddress | ExceptionCode::IllegalDataValue
                    ) && req.tags.len() > 1
                    {
                        let parts = plan::split(req);
                        info!(
                            device = %self.device.name,
                            table = ?req.table,
                            start = req.start,
                            count = req.count,
                            exception = %code,
                            requests = parts.len(),
                            "device refused a merged read; reading its tags one by one"
                        );
                        self.requests.splice(
                            i..=i,
                            parts.into_iter().map(|req| Planned { req, failing: None }),
                        );
                        // Poll the parts now, so the good neighbours are not Bad for a cycle.
                        continue;
                    }
                    let quality = exception_quality(code);
                    updates.extend(req.tags.iter().map(|s| Update {
                        tag: s.tag,
                        value: None,
                        quality,
                        time,
                    }));
                    Err((quality, format!("exception {:02X} {code}", u8::from(code))))
                }
                Ok(Ok(Ok(response))) => decode_reply(req, response, time, &mut updates),
            };
            self.note_outcome(i, outcome, &mut first_error);
            i += 1;
        }
        self.table.apply(updates);
        if self.state != State::Up {
            info!(device = %self.device.name, host = %self.device.host, port = self.device.port, "device up");
            self.state = State::Up;
        }
        match first_error {
            None => self.health.poll_ok(started.elapsed()),
            Some(e) => {
                self.health.set_latency(started.elapsed());
                self.health.poll_failed(&e);
            }
        }
        Ok(())
    }

    /// Logs a request's change between working and failing (not every failed poll).
    fn note_outcome(
        &mut self,
        i: usize,
        outcome: Result<(), (Quality, String)>,
        first_error: &mut Option<String>,
    ) {
        let name = &self.device.name;
        let p = &mut self.requests[i];
        let req = &p.req;
        match outcome {
            Ok(()) => {
                if p.failing.take().is_some() {
                    info!(device = %name, table = ?req.table, start = req.start, count = req.count, "read recovered");
                }
            }
            Err((quality, error)) => {
                if p.failing != Some(quality) {
                    warn!(
                        device = %name,
                        table = ?req.table,
                        start = req.start,
                        count = req.count,
                        error = %error,
                        quality = quality.name(),
                        "read failed"
                    );
                    p.failing = Some(quality);
                } else {
                    debug!(device = %name, start = req.start, error = %error, "read still failing");
                }
                first_error.get_or_insert_with(|| {
                    format!("{:?} {}+{}: {error}", req.table, req.start, req.count)
                });
            }
        }
    }
}

/// tokio-modbus reports the end of the stream as `io::Error::last_os_error()`, which is
/// whatever errno was left behind (typically EAGAIN, "Resource temporarily unavailable"); say
/// what actually happened instead.
fn closed_or(e: io::Error) -> io::Error {
    if e.kind() == io::ErrorKind::WouldBlock {
        io::Error::new(io::ErrorKind::UnexpectedEof, "closed by the device")
    } else {
        e
    }
}

/// The read for a planned request. The only place this module builds a Modbus request.
/// Public for the `modbus_reply` fuzz target (gateway-tx/fuzz), not an API.
#[doc(hidden)]
pub fn request_for(req: &ReadRequest) -> Request<'static> {
    match req.table {
        ModbusTable::Coil => Request::ReadCoils(req.start, req.count),
        ModbusTable::DiscreteInput => Request::ReadDiscreteInputs(req.start, req.count),
        ModbusTable::HoldingRegister => Request::ReadHoldingRegisters(req.start, req.count),
        ModbusTable::InputRegister => Request::ReadInputRegisters(req.start, req.count),
    }
}

/// Turns a reply into updates. A reply of the wrong shape makes the whole request's tags
/// BadDecodingError; a tag whose registers do not decode is BadDecodingError alone.
/// Public for the `modbus_reply` fuzz target (gateway-tx/fuzz), not an API.
#[doc(hidden)]
pub fn decode_reply(
    req: &ReadRequest,
    response: Response,
    time: UnixNanos,
    updates: &mut Vec<Update>,
) -> Result<(), (Quality, String)> {
    let bad = |updates: &mut Vec<Update>, error: String| {
        updates.extend(req.tags.iter().map(|s| Update {
            tag: s.tag,
            value: None,
            quality: Quality::BAD_DECODING_ERROR,
            time,
        }));
        Err((Quality::BAD_DECODING_ERROR, error))
    };
    match (req.table, response) {
        (ModbusTable::Coil, Response::ReadCoils(bits))
        | (ModbusTable::DiscreteInput, Response::ReadDiscreteInputs(bits)) => {
            // Bits come packed eight to a byte, so the reply holds the count rounded up to 8.
            let expected = usize::from(req.count).div_ceil(8) * 8;
            if bits.len() != expected {
                return bad(
                    updates,
                    format!("{} bits in reply, expected {}", bits.len(), req.count),
                );
            }
            for s in &req.tags {
                let (quality, value) = match bits.get(usize::from(s.offset)) {
                    Some(&b) => (Quality::GOOD, Some(registers::decode_bit(b))),
                    None => (Quality::BAD_DECODING_ERROR, None),
                };
                updates.push(Update {
                    tag: s.tag,
                    value,
                    quality,
                    time,
                });
            }
            Ok(())
        }
        (ModbusTable::HoldingRegister, Response::ReadHoldingRegisters(words))
        | (ModbusTable::InputRegister, Response::ReadInputRegisters(words)) => {
            if words.len() != usize::from(req.count) {
                return bad(
                    updates,
                    format!("{} registers in reply, expected {}", words.len(), req.count),
                );
            }
            let mut result = Ok(());
            for s in &req.tags {
                let start = usize::from(s.offset);
                let end = start + usize::from(s.width);
                let decoded = match words.get(start..end) {
                    Some(regs) => registers::decode(&s.addr, regs).map_err(|e| e.to_string()),
                    None => Err("tag lies outside the reply".to_string()),
                };
                let (quality, value) = match decoded {
                    Ok(v) => (Quality::GOOD, Some(v)),
                    Err(e) => {
                        debug!(device = %s.addr.device, tag = s.tag, error = %e, "decode failed");
                        result = Err((Quality::BAD_DECODING_ERROR, format!("tag {}: {e}", s.tag)));
                        (Quality::BAD_DECODING_ERROR, None)
                    }
                };
                updates.push(Update {
                    tag: s.tag,
                    value,
                    quality,
                    time,
                });
            }
            result
        }
        (_, other) => bad(
            updates,
            format!("reply of another function: {:?}", other.function_code()),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modbus::plan::TagSlot;
    use protocol::model::{ByteOrder, ModbusAddress, ModbusType, Value, WordOrder};

    fn slot(tag: TagIndex, offset: u16, kind: ModbusType) -> TagSlot {
        let addr = ModbusAddress {
            device: "plc".into(),
            unit_id: 1,
            table: ModbusTable::HoldingRegister,
            address: offset,
            kind,
            count: registers::type_width(kind).unwrap_or(1),
            byte_order: ByteOrder::Big,
            word_order: WordOrder::Big,
            scale: 1.0,
            offset: 0.0,
        };
        TagSlot {
            tag,
            offset,
            width: registers::register_count(&addr),
            addr,
        }
    }

    fn req() -> ReadRequest {
        ReadRequest {
            table: ModbusTable::HoldingRegister,
            start: 0,
            count: 3,
            tags: vec![slot(0, 0, ModbusType::U16), slot(1, 1, ModbusType::F32)],
        }
    }

    #[test]
    fn good_reply_decodes_every_tag() {
        let mut u = Vec::new();
        let r = decode_reply(
            &req(),
            Response::ReadHoldingRegisters(vec![7, 0x3F80, 0]),
            5,
            &mut u,
        );
        assert!(r.is_ok());
        let got: Vec<_> = u
            .iter()
            .map(|u| (u.tag, u.value.clone(), u.quality))
            .collect();
        assert_eq!(
            got,
            [
                (0, Some(Value::UInt16(7)), Quality::GOOD),
                (1, Some(Value::Float(1.0)), Quality::GOOD)
            ]
        );
    }

    #[test]
    fn short_or_long_reply_is_a_decoding_error_for_the_request() {
        for words in [vec![7, 0x3F80], vec![1, 2, 3, 4], vec![]] {
            let mut u = Vec::new();
            let r = decode_reply(&req(), Response::ReadHoldingRegisters(words), 5, &mut u);
            assert!(r.is_err());
            assert_eq!(u.len(), 2);
            assert!(
                u.iter()
                    .all(|u| u.quality == Quality::BAD_DECODING_ERROR && u.value.is_none())
            );
        }
    }

    #[test]
    fn bit_replies_are_checked_against_the_padded_count() {
        let mut bits_req = req();
        bits_req.table = ModbusTable::Coil;
        bits_req.count = 10;
        bits_req.tags = vec![slot(0, 0, ModbusType::Bool), slot(1, 9, ModbusType::Bool)];
        let mut bits = vec![false; 16];
        bits[9] = true;
        let mut u = Vec::new();
        assert!(decode_reply(&bits_req, Response::ReadCoils(bits), 1, &mut u).is_ok());
        assert_eq!(u[1].value, Some(Value::Boolean(true)));
        let mut u = Vec::new();
        assert!(decode_reply(&bits_req, Response::ReadCoils(vec![true; 8]), 1, &mut u).is_err());
        assert!(u.iter().all(|u| u.quality == Quality::BAD_DECODING_ERROR));
        // A reply for another table is never taken as data.
        let mut u = Vec::new();
        assert!(
            decode_reply(
                &bits_req,
                Response::ReadDiscreteInputs(vec![true; 16]),
                1,
                &mut u
            )
            .is_err()
        );
    }

    #[test]
    fn exception_table() {
        use ExceptionCode::*;
        let table = [
            (IllegalFunction, Quality::BAD_NOT_SUPPORTED),
            (IllegalDataAddress, Quality::BAD_CONFIGURATION_ERROR),
            (IllegalDataValue, Quality::BAD_CONFIGURATION_ERROR),
            (ServerDeviceFailure, Quality::BAD_DEVICE_FAILURE),
            (Acknowledge, Quality::BAD_COMMUNICATION_ERROR),
            (ServerDeviceBusy, Quality::BAD_COMMUNICATION_ERROR),
            (MemoryParityError, Quality::BAD_DEVICE_FAILURE),
            (GatewayPathUnavailable, Quality::BAD_NO_COMMUNICATION),
            (GatewayTargetDevice, Quality::BAD_TIMEOUT),
            (Custom(0x42), Quality::BAD),
        ];
        for (code, q) in table {
            assert_eq!(exception_quality(code), q, "{code:?}");
        }
    }

    #[test]
    fn only_read_functions_are_ever_built() {
        for table in [
            ModbusTable::Coil,
            ModbusTable::DiscreteInput,
            ModbusTable::HoldingRegister,
            ModbusTable::InputRegister,
        ] {
            let mut r = req();
            r.table = table;
            let code = request_for(&r).function_code().value();
            assert!((1..=4).contains(&code), "{table:?} -> {code}");
        }
    }
}
