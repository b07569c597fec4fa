//! A simulated PLC speaking real Modbus TCP (tokio-modbus's server), for the end-to-end tests
//! and the demo.
//!
//! - 10 000 coils, discrete inputs, holding and input registers in memory, behind a shared
//!   handle so a test can set and read them while clients poll.
//! - Read-only like the plant should be towards the gateway: every write function (05, 06, 0F,
//!   10, 15, 16, 17) is answered with exception 01 illegal function and counted, so a test can
//!   assert that the gateway never sent one.
//! - `stop` unplugs it (listener and every connection closed, memory kept); `restart` plugs it
//!   back in on the same port.
//! - A deterministic "process" ([`PlcHandle::tick`], [`PlcSim::run_process`]) drives a fixed set
//!   of tags of every type and layout, described by [`DEMO_TAGS`] and, as gateway-tx config,
//!   by [`demo_tags_toml`].
//! - Faults on demand ([`Fault`]): short replies, silence, or an exception for every read.
//!
//! Self-contained on purpose (tokio, tokio-modbus, `protocol` and `config` only), so crates
//! that must not depend on this test crate can include the file with `#[path]`.

use std::fmt::Write as _;
use std::io;
use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use config::tx::ModbusTag;
use protocol::model::{ByteOrder, ModbusAddress, ModbusTable, ModbusType, Value, WordOrder};
use protocol::registers;
use tokio::net::TcpSocket;
use tokio::task::JoinHandle;
use tokio_modbus::server::Service;
use tokio_modbus::server::tcp::{Server, accept_tcp_connection};
use tokio_modbus::{ExceptionCode, Request, Response};

/// Entries in each of the four tables.
pub const TABLE_SIZE: usize = 10_000;

/// Modbus function codes that write; all are refused and counted.
pub const WRITE_FUNCTIONS: [u8; 7] = [0x05, 0x06, 0x0F, 0x10, 0x15, 0x16, 0x17];

/// A misbehaviour to inject into every read reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Register reads answer one register fewer than asked; bit reads one byte fewer.
    ShortReply,
    /// Requests are received but never answered, so the client times out.
    NoReply,
    /// Every read is answered with this exception.
    Exception(ExceptionCode),
}

struct Memory {
    coils: Vec<bool>,
    discrete: Vec<bool>,
    holding: Vec<u16>,
    input: Vec<u16>,
}

struct Shared {
    memory: Mutex<Memory>,
    fault: Mutex<Option<Fault>>,
    requests: AtomicU64,
    reads: AtomicU64,
    writes: AtomicU64,
    connections: AtomicU64,
    step: AtomicU64,
}

/// Access to a simulated PLC's memory and counters; cheap to clone, valid across restarts.
#[derive(Clone)]
pub struct PlcHandle(Arc<Shared>);

impl Default for PlcHandle {
    fn default() -> Self {
        Self::new()
    }
}

impl PlcHandle {
    pub fn new() -> PlcHandle {
        let h = PlcHandle(Arc::new(Shared {
            memory: Mutex::new(Memory {
                coils: vec![false; TABLE_SIZE],
                discrete: vec![false; TABLE_SIZE],
                holding: vec![0; TABLE_SIZE],
                input: vec![0; TABLE_SIZE],
            }),
            fault: Mutex::new(None),
            requests: AtomicU64::new(0),
            reads: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            step: AtomicU64::new(0),
        }));
        h.write_demo(0);
        h
    }

    fn mem(&self) -> MutexGuard<'_, Memory> {
        // A test that panicked while holding the lock leaves plain data behind; keep serving.
        self.0.memory.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets holding registers from `addr` on; values past the table's end are ignored.
    pub fn set_holding(&self, addr: u16, values: &[u16]) {
        set(&mut self.mem().holding, addr, values);
    }
    pub fn set_input(&self, addr: u16, values: &[u16]) {
        set(&mut self.mem().input, addr, values);
    }
    pub fn set_coils(&self, addr: u16, values: &[bool]) {
        set(&mut self.mem().coils, addr, values);
    }
    pub fn set_discrete(&self, addr: u16, values: &[bool]) {
        set(&mut self.mem().discrete, addr, values);
    }
    /// `n` holding registers from `addr` (fewer at the table's end).
    pub fn holding(&self, addr: u16, n: u16) -> Vec<u16> {
        get(&self.mem().holding, addr, n)
    }
    pub fn input(&self, addr: u16, n: u16) -> Vec<u16> {
        get(&self.mem().input, addr, n)
    }
    pub fn coils(&self, addr: u16, n: u16) -> Vec<bool> {
        get(&self.mem().coils, addr, n)
    }
    pub fn discrete(&self, addr: u16, n: u16) -> Vec<bool> {
        get(&self.mem().discrete, addr, n)
    }

    /// Sets a value in whatever table and layout `addr` describes (raw, unscaled encoding of an
    /// engineering value). Errors when the value does not fit the layout.
    pub fn set_value(
        &self,
        addr: &ModbusAddress,
        value: &Value,
    ) -> Result<(), registers::RegisterError> {
        if addr.table.is_bits() {
            let bit = registers::encode_bit(value)?;
            match addr.table {
                ModbusTable::Coil => self.set_coils(addr.address, &[bit]),
                _ => self.set_discrete(addr.address, &[bit]),
            }
            return Ok(());
        }
        let mut regs = Vec::new();
        registers::encode(addr, value, &mut regs)?;
        match addr.table {
            ModbusTable::HoldingRegister => self.set_holding(addr.address, &regs),
            _ => self.set_input(addr.address, &regs),
        }
        Ok(())
    }

    pub fn set_fault(&self, fault: Option<Fault>) {
        *self.0.fault.lock().unwrap_or_else(|e| e.into_inner()) = fault;
    }

    fn fault(&self) -> Option<Fault> {
        *self.0.fault.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every request received, of any function.
    pub fn requests(&self) -> u64 {
        self.0.requests.load(Ordering::Relaxed)
    }
    /// Read requests (functions 01 to 04).
    pub fn reads(&self) -> u64 {
        self.0.reads.load(Ordering::Relaxed)
    }
    /// Write requests received (and refused).
    pub fn writes(&self) -> u64 {
        self.0.writes.load(Ordering::Relaxed)
    }
    /// TCP connections accepted since the simulator was created.
    pub fn connections(&self) -> u64 {
        self.0.connections.load(Ordering::Relaxed)
    }

    /// The process step whose values the demo tags hold now.
    pub fn step(&self) -> u64 {
        self.0.step.load(Ordering::Relaxed)
    }

    /// Advances the process one step and writes every demo tag's new value; returns the step.
    pub fn tick(&self) -> u64 {
        let step = self.0.step.fetch_add(1, Ordering::Relaxed) + 1;
        self.write_demo(step);
        step
    }

    /// Writes the demo tags' values of `step` (one lock, so a reader sees one step whole).
    pub fn write_demo(&self, step: u64) {
        let mut mem = self.mem();
        for tag in DEMO_TAGS {
            let addr = tag.raw_address();
            let raw = (tag.raw)(step);
            if tag.table.is_bits() {
                let bit = matches!(raw, Value::Boolean(true));
                match tag.table {
                    ModbusTable::Coil => set(&mut mem.coils, tag.address, &[bit]),
                    _ => set(&mut mem.discrete, tag.address, &[bit]),
                }
                continue;
            }
            let mut regs = Vec::new();
            if registers::encode(&addr, &raw, &mut regs).is_ok() {
                match tag.table {
                    ModbusTable::HoldingRegister => set(&mut mem.holding, tag.address, &regs),
                    _ => set(&mut mem.input, tag.address, &regs),
                }
            }
        }
        self.0.step.store(step, Ordering::Relaxed);
    }

    fn serve(&self, request: Request<'_>) -> Result<Option<Response>, ExceptionCode> {
        self.0.requests.fetch_add(1, Ordering::Relaxed);
        let fc = request.function_code().value();
        if WRITE_FUNCTIONS.contains(&fc) {
            self.0.writes.fetch_add(1, Ordering::Relaxed);
            return Err(ExceptionCode::IllegalFunction);
        }
        let (table, start, count) = match request {
            Request::ReadCoils(a, n) => (ModbusTable::Coil, a, n),
            Request::ReadDiscreteInputs(a, n) => (ModbusTable::DiscreteInput, a, n),
            Request::ReadHoldingRegisters(a, n) => (ModbusTable::HoldingRegister, a, n),
            Request::ReadInputRegisters(a, n) => (ModbusTable::InputRegister, a, n),
            _ => return Err(ExceptionCode::IllegalFunction),
        };
        self.0.reads.fetch_add(1, Ordering::Relaxed);
        let max = if table.is_bits() { 2000 } else { 125 };
        if count == 0 || count > max {
            return Err(ExceptionCode::IllegalDataValue);
        }
        if usize::from(start) + usize::from(count) > TABLE_SIZE {
            return Err(ExceptionCode::IllegalDataAddress);
        }
        let fault = self.fault();
        match fault {
            Some(Fault::NoReply) => return Ok(None),
            Some(Fault::Exception(code)) => return Err(code),
            _ => {}
        }
        let short = fault == Some(Fault::ShortReply);
        let mem = self.mem();
        let (s, e) = (usize::from(start), usize::from(start) + usize::from(count));
        Ok(Some(match table {
            ModbusTable::Coil | ModbusTable::DiscreteInput => {
                let src = if table == ModbusTable::Coil {
                    &mem.coils
                } else {
                    &mem.discrete
                };
                let mut bits = src[s..e].to_vec();
                if short {
                    // One packed byte fewer than the count needs.
                    bits.truncate((bits.len().div_ceil(8) - 1) * 8);
                }
                if table == ModbusTable::Coil {
                    Response::ReadCoils(bits)
                } else {
                    Response::ReadDiscreteInputs(bits)
                }
            }
            ModbusTable::HoldingRegister | ModbusTable::InputRegister => {
                let src = if table == ModbusTable::HoldingRegister {
                    &mem.holding
                } else {
                    &mem.input
                };
                let mut words = src[s..e].to_vec();
                if short {
                    words.pop();
                }
                if table == ModbusTable::HoldingRegister {
                    Response::ReadHoldingRegisters(words)
                } else {
                    Response::ReadInputRegisters(words)
                }
            }
        }))
    }
}

fn set<T: Copy>(table: &mut [T], addr: u16, values: &[T]) {
    let start = usize::from(addr).min(table.len());
    let end = (start + values.len()).min(table.len());
    table[start..end].copy_from_slice(&values[..end - start]);
}

fn get<T: Copy>(table: &[T], addr: u16, n: u16) -> Vec<T> {
    let start = usize::from(addr).min(table.len());
    let end = (start + usize::from(n)).min(table.len());
    table[start..end].to_vec()
}

struct SimService(PlcHandle);

impl Service for SimService {
    type Request = Request<'static>;
    type Response = Option<Response>;
    type Exception = ExceptionCode;
    type Future = std::future::Ready<Result<Option<Response>, ExceptionCode>>;

    fn call(&self, req: Self::Request) -> Self::Future {
        std::future::ready(self.0.serve(req))
    }
}

/// A running simulated PLC. Dereferences to its [`PlcHandle`].
pub struct PlcSim {
    handle: PlcHandle,
    addr: SocketAddr,
    server: Option<JoinHandle<()>>,
    process: Option<JoinHandle<()>>,
}

impl PlcSim {
    /// Listens on `addr` (port 0 picks a free one; see [`PlcSim::local_addr`]).
    pub async fn start(addr: SocketAddr) -> io::Result<PlcSim> {
        PlcSim::start_with(addr, PlcHandle::new()).await
    }

    /// Listens on `addr` serving an existing memory, e.g. to plug a stopped simulator's memory
    /// back in on another port.
    pub async fn start_with(addr: SocketAddr, handle: PlcHandle) -> io::Result<PlcSim> {
        let (addr, server) = listen(addr, handle.clone())?;
        Ok(PlcSim {
            handle,
            addr,
            server: Some(server),
            process: None,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn handle(&self) -> PlcHandle {
        self.handle.clone()
    }

    pub fn is_running(&self) -> bool {
        self.server.is_some()
    }

    /// Unplugs the PLC: the listener and every open connection close. Memory, counters and the
    /// process are kept.
    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
            // Dropping the serve future (at abort) cancels every connection task, which drops
            // the sockets; awaiting makes sure the listener is gone before we return.
            let _ = server.await;
        }
    }

    /// Plugs the PLC back in on the same address and port.
    pub async fn restart(&mut self) -> io::Result<()> {
        self.stop().await;
        let (_, server) = listen(self.addr, self.handle.clone())?;
        self.server = Some(server);
        Ok(())
    }

    /// Runs the process: one [`PlcHandle::tick`] every `period`, until stopped or dropped.
    pub fn run_process(&mut self, period: Duration) {
        self.stop_process();
        let handle = self.handle.clone();
        self.process = Some(tokio::spawn(async move {
            let mut t = tokio::time::interval(period.max(Duration::from_millis(1)));
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t.tick().await;
            loop {
                t.tick().await;
                handle.tick();
            }
        }));
    }

    pub fn stop_process(&mut self) {
        if let Some(p) = self.process.take() {
            p.abort();
        }
    }
}

impl Deref for PlcSim {
    type Target = PlcHandle;
    fn deref(&self) -> &PlcHandle {
        &self.handle
    }
}

impl Drop for PlcSim {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            s.abort();
        }
        self.stop_process();
    }
}

fn listen(addr: SocketAddr, handle: PlcHandle) -> io::Result<(SocketAddr, JoinHandle<()>)> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // Closed connections linger in TIME_WAIT on our side; without this a restart on the same
    // port would fail for a minute.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    let listener = socket.listen(64)?;
    let local = listener.local_addr()?;
    let server = Server::new(listener);
    let task = tokio::spawn(async move {
        let on_connected = |stream, peer| {
            let handle = handle.clone();
            async move {
                handle.0.connections.fetch_add(1, Ordering::Relaxed);
                accept_tcp_connection(stream, peer, |_| Ok(Some(SimService(handle.clone()))))
            }
        };
        // A client sending garbage only ends its own connection; serve itself ends only on a
        // listener error, after which the simulator is simply unplugged.
        let _ = server.serve(&on_connected, |_err| {}).await;
    });
    Ok((local, task))
}

// ---------------------------------------------------------------------------------------------
// The demo process.

/// One tag the simulated process drives.
#[derive(Debug, Clone, Copy)]
pub struct DemoTag {
    /// Name below the device, e.g. `line1/pump1/speed`; the full name is `{device}/{path}`.
    pub path: &'static str,
    pub table: ModbusTable,
    pub address: u16,
    pub kind: ModbusType,
    /// Registers, for strings only; 0 otherwise.
    pub length: u16,
    pub byte_order: ByteOrder,
    pub word_order: WordOrder,
    pub scale: f64,
    pub offset: f64,
    pub unit: &'static str,
    pub description: &'static str,
    /// The raw (unscaled) value at a process step.
    pub raw: fn(u64) -> Value,
}

impl DemoTag {
    pub fn name(&self, device: &str) -> String {
        format!("{device}/{}", self.path)
    }

    /// Registers (or bits) the tag occupies.
    pub fn count(&self) -> u16 {
        registers::type_width(self.kind).unwrap_or(self.length)
    }

    pub fn address(&self, device: &str, unit_id: u8) -> ModbusAddress {
        ModbusAddress {
            device: device.to_string(),
            unit_id,
            table: self.table,
            address: self.address,
            kind: self.kind,
            count: self.count(),
            byte_order: self.byte_order,
            word_order: self.word_order,
            scale: self.scale,
            offset: self.offset,
        }
    }

    fn raw_address(&self) -> ModbusAddress {
        ModbusAddress {
            scale: 1.0,
            offset: 0.0,
            ..self.address("", 0)
        }
    }

    /// The engineering value a correct reader reports at `step`: raw × scale + offset, computed
    /// exactly as the register codec does, so tests can compare with `==`.
    pub fn value(&self, step: u64) -> Value {
        let raw = (self.raw)(step);
        if self.scale == 1.0 && self.offset == 0.0 || self.table.is_bits() {
            return raw;
        }
        match raw {
            Value::String(_) | Value::Boolean(_) => raw,
            other => Value::Double(other.as_f64().unwrap_or(f64::NAN) * self.scale + self.offset),
        }
    }

    /// The tag as gateway-tx's validated config describes it.
    pub fn modbus_tag(&self, device: &str) -> ModbusTag {
        ModbusTag {
            name: self.name(device),
            table: self.table,
            address: self.address,
            kind: self.kind,
            count: self.count(),
            byte_order: self.byte_order,
            word_order: self.word_order,
            scale: self.scale,
            offset: self.offset,
            deadband: 0.0,
            unit: self.unit.to_string(),
            description: self.description.to_string(),
        }
    }
}

// One row of the demo table; named arguments would make the table twice as long.
#[allow(clippy::too_many_arguments)]
const fn demo(
    path: &'static str,
    table: ModbusTable,
    address: u16,
    kind: ModbusType,
    orders: (ByteOrder, WordOrder),
    unit: &'static str,
    description: &'static str,
    raw: fn(u64) -> Value,
) -> DemoTag {
    DemoTag {
        path,
        table,
        address,
        kind,
        length: 0,
        byte_order: orders.0,
        word_order: orders.1,
        scale: 1.0,
        offset: 0.0,
        unit,
        description,
        raw,
    }
}

const fn scaled(tag: DemoTag, scale: f64, offset: f64) -> DemoTag {
    DemoTag {
        scale,
        offset,
        ..tag
    }
}

const fn string(tag: DemoTag, length: u16) -> DemoTag {
    DemoTag { length, ..tag }
}

const BB: (ByteOrder, WordOrder) = (ByteOrder::Big, WordOrder::Big);
const BL: (ByteOrder, WordOrder) = (ByteOrder::Big, WordOrder::Little);
const LB: (ByteOrder, WordOrder) = (ByteOrder::Little, WordOrder::Big);
const LL: (ByteOrder, WordOrder) = (ByteOrder::Little, WordOrder::Little);

use ModbusTable::{Coil, DiscreteInput, HoldingRegister as Holding, InputRegister as Input};
use ModbusType as T;

/// The tags the simulated process drives: every type, both byte and word orders, scaled and
/// unscaled, every table. Values change at every step (a few slowly) and depend only on it.
pub const DEMO_TAGS: &[DemoTag] = &[
    demo(
        "line1/pump1/running",
        Coil,
        0,
        T::Bool,
        BB,
        "",
        "pump 1 running",
        |n| Value::Boolean(n % 4 < 2),
    ),
    demo(
        "line1/valve1/open",
        Coil,
        1,
        T::Bool,
        BB,
        "",
        "valve 1 open",
        |n| Value::Boolean(n % 2 == 1),
    ),
    demo(
        "line1/pump1/fault",
        DiscreteInput,
        0,
        T::Bool,
        BB,
        "",
        "pump 1 fault",
        |n| Value::Boolean(n % 5 == 4),
    ),
    demo(
        "line1/estop/ok",
        DiscreteInput,
        10,
        T::Bool,
        BB,
        "",
        "emergency stop chain closed",
        |n| Value::Boolean(n % 7 != 6),
    ),
    demo(
        "line1/pump1/speed",
        Holding,
        0,
        T::U16,
        BB,
        "rpm",
        "pump 1 speed",
        |n| Value::UInt16(1200 + (n.wrapping_mul(7) % 300) as u16),
    ),
    scaled(
        demo(
            "line1/tank1/temperature",
            Holding,
            1,
            T::I16,
            BB,
            "degC",
            "tank 1 temperature",
            |n| Value::Int16((n.wrapping_mul(13) % 800) as i16 - 100),
        ),
        0.1,
        0.0,
    ),
    demo(
        "line1/counter/bottles",
        Holding,
        2,
        T::U32,
        BB,
        "",
        "bottles filled",
        |n| Value::UInt32(100_000u32.wrapping_add((n as u32).wrapping_mul(3))),
    ),
    demo(
        "line1/axis1/position",
        Holding,
        4,
        T::I32,
        BL,
        "um",
        "axis 1 position",
        |n| Value::Int32((n as i32).wrapping_mul(1_234).wrapping_sub(500_000)),
    ),
    demo(
        "line1/energy/total",
        Holding,
        6,
        T::U64,
        BB,
        "Wh",
        "energy meter",
        |n| Value::UInt64(5_000_000_000u64.wrapping_add(n.wrapping_mul(1_000))),
    ),
    demo(
        "line1/axis1/encoder",
        Holding,
        10,
        T::I64,
        LL,
        "counts",
        "axis 1 encoder",
        |n| Value::Int64((n as i64).wrapping_mul(-987_654_321).wrapping_sub(1)),
    ),
    demo(
        "line1/pump1/pressure",
        Holding,
        14,
        T::F32,
        BB,
        "bar",
        "pump 1 outlet pressure",
        |n| Value::Float(2.0 + (n % 10) as f32 * 0.25),
    ),
    demo(
        "line1/pump1/flow",
        Holding,
        16,
        T::F32,
        LB,
        "m3/h",
        "pump 1 flow (byte-swapped)",
        |n| Value::Float(10.5 + (n % 20) as f32),
    ),
    demo(
        "line1/tank1/level",
        Holding,
        18,
        T::F64,
        BL,
        "m",
        "tank 1 level",
        |n| Value::Double(1.5 + (n % 100) as f64 / 64.0),
    ),
    string(
        demo(
            "line1/recipe/name",
            Holding,
            22,
            T::String,
            BB,
            "",
            "active recipe",
            |n| Value::String(format!("RECIPE-{:03}", n % 1000)),
        ),
        8,
    ),
    scaled(
        demo(
            "line1/tank1/volume",
            Holding,
            30,
            T::U16,
            BB,
            "l",
            "tank 1 volume",
            |n| Value::UInt16((n.wrapping_mul(11) % 2000) as u16),
        ),
        0.5,
        10.0,
    ),
    scaled(
        demo(
            "line1/pump1/power",
            Holding,
            31,
            T::F32,
            BL,
            "kW",
            "pump 1 power",
            |n| Value::Float(1000.0 + (n % 50) as f32 * 12.5),
        ),
        0.001,
        0.0,
    ),
    scaled(
        demo(
            "line1/ambient/temperature",
            Input,
            0,
            T::I16,
            LB,
            "degC",
            "ambient temperature",
            |n| Value::Int16((n.wrapping_mul(37) % 1000) as i16 + 1500),
        ),
        0.01,
        -5.0,
    ),
    demo(
        "line1/motor1/current",
        Input,
        1,
        T::F32,
        LL,
        "A",
        "motor 1 current",
        |n| Value::Float(5.0 + (n % 16) as f32 * 0.125),
    ),
    demo(
        "line1/motor1/hours",
        Input,
        3,
        T::U32,
        BL,
        "h",
        "motor 1 running hours",
        |n| Value::UInt32(40_000 + (n / 10) as u32),
    ),
    string(
        demo(
            "line1/batch/id",
            Input,
            5,
            T::String,
            LB,
            "",
            "batch id (byte-swapped)",
            |n| Value::String(format!("B{:06}", n % 1_000_000)),
        ),
        6,
    ),
    demo(
        "line1/motor1/state",
        Input,
        11,
        T::U16,
        BB,
        "",
        "motor 1 state word",
        |n| Value::UInt16((n % 8) as u16),
    ),
    demo(
        "line1/motor1/torque",
        Input,
        12,
        T::I16,
        BB,
        "Nm",
        "motor 1 torque",
        |n| Value::Int16(((n % 200) as i16) - 100),
    ),
    demo(
        "line1/motor1/revolutions",
        Input,
        13,
        T::I64,
        BB,
        "",
        "motor 1 revolutions",
        |n| Value::Int64((n as i64).wrapping_mul(3_000)),
    ),
    demo(
        "line1/motor1/vibration",
        Input,
        17,
        T::F64,
        LL,
        "mm/s",
        "motor 1 vibration",
        |n| Value::Double(0.5 + (n % 32) as f64 / 16.0),
    ),
];

/// The demo tags as gateway-tx's validated config describes them, for a device named `device`.
pub fn demo_modbus_tags(device: &str) -> Vec<ModbusTag> {
    DEMO_TAGS.iter().map(|t| t.modbus_tag(device)).collect()
}

/// The `[[modbus.tag]]` entries describing [`DEMO_TAGS`], named `{device_name}/...`; append
/// them after a `[[modbus]]` device table (see [`demo_device_toml`]).
pub fn demo_tags_toml(device_name: &str) -> String {
    let mut s = String::new();
    for t in DEMO_TAGS {
        let table = match t.table {
            Coil => "coil",
            DiscreteInput => "discrete",
            Holding => "holding",
            Input => "input",
        };
        let kind = match t.kind {
            T::Bool => "bool",
            T::U16 => "u16",
            T::I16 => "i16",
            T::U32 => "u32",
            T::I32 => "i32",
            T::U64 => "u64",
            T::I64 => "i64",
            T::F32 => "f32",
            T::F64 => "f64",
            T::String => "string",
        };
        let order = |big: bool| if big { "big" } else { "little" };
        let _ = writeln!(s, "[[modbus.tag]]");
        let _ = writeln!(s, "name = {}", toml_str(&t.name(device_name)));
        let _ = writeln!(s, "table = \"{table}\"");
        let _ = writeln!(s, "address = {}", t.address);
        let _ = writeln!(s, "type = \"{kind}\"");
        if t.kind == T::String {
            let _ = writeln!(s, "length = {}", t.length);
        }
        if !t.table.is_bits() {
            let _ = writeln!(
                s,
                "byte_order = \"{}\"",
                order(t.byte_order == ByteOrder::Big)
            );
            let _ = writeln!(
                s,
                "word_order = \"{}\"",
                order(t.word_order == WordOrder::Big)
            );
        }
        if t.scale != 1.0 {
            let _ = writeln!(s, "scale = {:?}", t.scale);
        }
        if t.offset != 0.0 {
            let _ = writeln!(s, "offset = {:?}", t.offset);
        }
        if !t.unit.is_empty() {
            let _ = writeln!(s, "unit = {}", toml_str(t.unit));
        }
        let _ = writeln!(s, "description = {}", toml_str(t.description));
        s.push('\n');
    }
    s
}

/// A whole `[[modbus]]` device table for the simulator at `addr`, with the demo tags.
pub fn demo_device_toml(
    device_name: &str,
    addr: SocketAddr,
    poll_interval_ms: u64,
    timeout_ms: u64,
) -> String {
    format!(
        "[[modbus]]\nname = {}\nhost = \"{}\"\nport = {}\nunit_id = 1\npoll_interval_ms = {poll_interval_ms}\ntimeout_ms = {timeout_ms}\n\n{}",
        toml_str(device_name),
        addr.ip(),
        addr.port(),
        demo_tags_toml(device_name)
    )
}

fn toml_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_modbus::Slave;
    use tokio_modbus::client::{Reader, Writer, tcp};
    use tokio_modbus::prelude::SlaveContext;

    fn localhost() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 0))
    }

    #[tokio::test]
    async fn serves_reads_and_refuses_and_counts_writes() {
        let sim = PlcSim::start(localhost()).await.unwrap();
        sim.set_holding(100, &[1, 2, 3]);
        sim.set_input(7, &[0xBEEF]);
        sim.set_coils(5, &[true, false, true]);
        sim.set_discrete(9000, &[true]);
        let mut c = tcp::connect_slave(sim.local_addr(), Slave(1))
            .await
            .unwrap();
        assert_eq!(
            c.read_holding_registers(100, 3).await.unwrap(),
            Ok(vec![1, 2, 3])
        );
        assert_eq!(
            c.read_input_registers(7, 1).await.unwrap(),
            Ok(vec![0xBEEF])
        );
        assert_eq!(
            c.read_coils(5, 3).await.unwrap(),
            Ok(vec![true, false, true])
        );
        assert_eq!(
            c.read_discrete_inputs(9000, 1).await.unwrap(),
            Ok(vec![true])
        );
        // Another unit id on the same connection is served too.
        c.set_slave(Slave(7));
        assert_eq!(c.read_holding_registers(101, 1).await.unwrap(), Ok(vec![2]));
        assert_eq!((sim.requests(), sim.reads(), sim.writes()), (5, 5, 0));

        assert_eq!(
            c.write_single_register(100, 9).await.unwrap(),
            Err(ExceptionCode::IllegalFunction)
        );
        assert_eq!(
            c.write_multiple_registers(100, &[9, 9]).await.unwrap(),
            Err(ExceptionCode::IllegalFunction)
        );
        assert_eq!(
            c.write_single_coil(5, false).await.unwrap(),
            Err(ExceptionCode::IllegalFunction)
        );
        assert_eq!(
            c.write_multiple_coils(5, &[false]).await.unwrap(),
            Err(ExceptionCode::IllegalFunction)
        );
        assert_eq!(
            c.masked_write_register(100, 0, 0).await.unwrap(),
            Err(ExceptionCode::IllegalFunction)
        );
        assert_eq!(
            c.read_write_multiple_registers(100, 1, 100, &[9])
                .await
                .unwrap(),
            Err(ExceptionCode::IllegalFunction)
        );
        assert_eq!(sim.writes(), 6);
        assert_eq!(sim.holding(100, 3), [1, 2, 3], "nothing was written");
        assert_eq!(sim.coils(5, 1), [true]);
    }

    #[tokio::test]
    async fn out_of_range_reads_get_exceptions() {
        let sim = PlcSim::start(localhost()).await.unwrap();
        let mut c = tcp::connect(sim.local_addr()).await.unwrap();
        assert_eq!(
            c.read_holding_registers(9_999, 2).await.unwrap(),
            Err(ExceptionCode::IllegalDataAddress)
        );
        assert_eq!(
            c.read_input_registers(0, 126).await.unwrap(),
            Err(ExceptionCode::IllegalDataValue)
        );
        assert_eq!(
            c.read_coils(0, 2001).await.unwrap(),
            Err(ExceptionCode::IllegalDataValue)
        );
        assert_eq!(
            c.read_coils(0, 2000).await.unwrap().map(|b| b.len()),
            Ok(2000)
        );
    }

    #[tokio::test]
    async fn stop_unplugs_and_restart_serves_the_same_memory_on_the_same_port() {
        let mut sim = PlcSim::start(localhost()).await.unwrap();
        let addr = sim.local_addr();
        sim.set_holding(0, &[42]);
        let mut c = tcp::connect(addr).await.unwrap();
        assert_eq!(c.read_holding_registers(0, 1).await.unwrap(), Ok(vec![42]));
        sim.stop().await;
        assert!(!sim.is_running());
        // The open connection is closed and new ones are refused.
        assert!(c.read_holding_registers(0, 1).await.is_err());
        assert!(tcp::connect(addr).await.is_err());
        sim.restart().await.unwrap();
        assert_eq!(sim.local_addr(), addr);
        let mut c = tcp::connect(addr).await.unwrap();
        assert_eq!(c.read_holding_registers(0, 1).await.unwrap(), Ok(vec![42]));
        assert_eq!(sim.connections(), 2);
    }

    #[tokio::test]
    async fn faults_are_injected() {
        let sim = PlcSim::start(localhost()).await.unwrap();
        let mut c = tcp::connect(sim.local_addr()).await.unwrap();
        sim.set_fault(Some(Fault::Exception(ExceptionCode::ServerDeviceBusy)));
        assert_eq!(
            c.read_input_registers(0, 1).await.unwrap(),
            Err(ExceptionCode::ServerDeviceBusy)
        );
        sim.set_fault(Some(Fault::NoReply));
        let r =
            tokio::time::timeout(Duration::from_millis(100), c.read_input_registers(0, 1)).await;
        assert!(r.is_err(), "no reply: the client waits");
        sim.set_fault(None);
    }

    #[tokio::test]
    async fn process_drives_every_demo_tag_through_real_modbus() {
        let sim = PlcSim::start(localhost()).await.unwrap();
        let step = sim.tick();
        assert_eq!(step, 1);
        let mut c = tcp::connect(sim.local_addr()).await.unwrap();
        for tag in DEMO_TAGS {
            let addr = tag.address("demo", 1);
            let n = tag.count();
            let got = match tag.table {
                Coil => {
                    registers::decode_bit(c.read_coils(tag.address, 1).await.unwrap().unwrap()[0])
                }
                DiscreteInput => registers::decode_bit(
                    c.read_discrete_inputs(tag.address, 1)
                        .await
                        .unwrap()
                        .unwrap()[0],
                ),
                Holding => registers::decode(
                    &addr,
                    &c.read_holding_registers(tag.address, n)
                        .await
                        .unwrap()
                        .unwrap(),
                )
                .unwrap(),
                Input => registers::decode(
                    &addr,
                    &c.read_input_registers(tag.address, n)
                        .await
                        .unwrap()
                        .unwrap(),
                )
                .unwrap(),
            };
            assert_eq!(got, tag.value(step), "{}", tag.path);
            assert_eq!(
                got.value_type(),
                registers::value_type(&addr),
                "{}",
                tag.path
            );
        }
    }

    #[test]
    fn demo_tags_do_not_overlap_and_change_every_step() {
        let mut used = std::collections::HashSet::new();
        for t in DEMO_TAGS {
            for a in t.address..t.address + t.count() {
                assert!(used.insert((t.table, a)), "{} overlaps at {a}", t.path);
            }
        }
        let h = PlcHandle::new();
        let before = h.holding(0, 40);
        h.tick();
        assert_ne!(h.holding(0, 40), before);
        // Golden: the byte-swapped f32 flow at step 1 is 11.5 = 0x4138_0000, bytes swapped.
        assert_eq!(h.holding(16, 2), [0x3841, 0x0000]);
    }

    /// The TOML and the structs describe the same tags, through the real config loader.
    #[test]
    fn demo_toml_loads_as_the_demo_tags() {
        let addr = SocketAddr::from(([127, 0, 0, 1], 5020));
        let text = format!(
            "[link]\ninsecure_no_key = true\ndestination = \"127.0.0.1:5600\"\n\n{}",
            demo_device_toml("demo", addr, 100, 200)
        );
        let config = match config::tx::TxConfig::parse(&text, std::path::Path::new("demo.toml")) {
            Ok(c) => c,
            Err(e) => panic!("{e}\n{text}"),
        };
        let device = &config.devices[0];
        assert_eq!((device.host.as_str(), device.port), ("127.0.0.1", 5020));
        assert_eq!(device.poll_interval, Duration::from_millis(100));
        assert_eq!(device.tags, demo_modbus_tags("demo"));
    }

    #[test]
    fn demo_toml_names_every_tag() {
        let toml = demo_tags_toml("demo");
        assert_eq!(toml.matches("[[modbus.tag]]").count(), DEMO_TAGS.len());
        assert!(toml.contains("name = \"demo/line1/pump1/speed\""));
        assert!(toml.contains("scale = 0.1"));
        assert!(toml.contains("length = 8"));
        assert_eq!(toml_str("a\"b\\c"), r#""a\"b\\c""#);
    }
}
