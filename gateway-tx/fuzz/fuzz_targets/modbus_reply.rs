//! Fuzzes the Modbus reply handling of gateway-tx's poller: what a PLC (or anything pretending
//! to be one) answers must never crash the transmitter, and every tag must come out with a
//! value and Good quality, or no value and a Bad quality.
//!
//! Input: `[mode][tag count][base address u16 BE][4 bytes per tag][reply bytes...]`.
//!
//! - The tags make a device config (table, type, byte and word order, scaling, string length,
//!   address as a delta from the previous tag's), planned into reads by the poller's planner.
//! - The reply bytes are served, as the byte stream of a Modbus TCP connection, to a real
//!   tokio-modbus client (the poller's own transport) that runs every planned read in turn, as
//!   one poll does: replies go through `decode_reply`, exceptions through
//!   `exception_quality` and the split of a merged read, transport and protocol errors end the
//!   pass as they cost the poller the connection. Mode bit 0: the harness copies each request's
//!   transaction and unit id into the next reply header so that mutations get past the header
//!   check; bits 1-3 choose how many bytes each read of the stream returns.
//! - The same bytes, as big-endian words or packed bits, go straight into `decode_reply` as
//!   the reply to each planned read: as they are, resized to the read's length, and as the
//!   reply of another function (mode bits 4-5).
//! - The same words go into `protocol::registers::decode` for every type, byte order, word
//!   order and a set of scalings (including ones the config refuses), and decoded values back
//!   through `encode`.
#![no_main]

use std::io;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use config::tx::{ModbusDevice, ModbusTag};
use gateway_tx::modbus::plan::{self, Plan, PlanOptions, ReadRequest};
use gateway_tx::modbus::poller::{decode_reply, exception_quality, request_for};
use libfuzzer_sys::fuzz_target;
use protocol::model::{
    ByteOrder, ModbusAddress, ModbusTable, ModbusType, Quality, Value, ValueType, WordOrder,
};
use protocol::registers::{self, RegisterError};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_modbus::client::Client;
use tokio_modbus::{ExceptionCode, Response, Slave};

const KINDS: [ModbusType; 10] = [
    ModbusType::Bool,
    ModbusType::U16,
    ModbusType::I16,
    ModbusType::U32,
    ModbusType::I32,
    ModbusType::U64,
    ModbusType::I64,
    ModbusType::F32,
    ModbusType::F64,
    ModbusType::String,
];
const TABLES: [ModbusTable; 4] = [
    ModbusTable::Coil,
    ModbusTable::DiscreteInput,
    ModbusTable::HoldingRegister,
    ModbusTable::InputRegister,
];
const ORDERS: [(ByteOrder, WordOrder); 4] = [
    (ByteOrder::Big, WordOrder::Big),
    (ByteOrder::Big, WordOrder::Little),
    (ByteOrder::Little, WordOrder::Big),
    (ByteOrder::Little, WordOrder::Little),
];
/// Scalings the config accepts (tag bytes choose one of these).
const SCALES: [(f64, f64); 4] = [(1.0, 0.0), (0.1, -40.0), (-2.5, 1e3), (1e-9, 0.0)];
/// And ones it refuses, which the codec must survive all the same.
const ODD_SCALES: [(f64, f64); 4] = [
    (0.0, 0.0),
    (f64::NAN, 0.0),
    (f64::INFINITY, f64::NEG_INFINITY),
    (1e300, 1e300),
];
const CHUNKS: [usize; 8] = [1, 2, 3, 5, 8, 13, 64, usize::MAX];
const UNIT: u8 = 1;
const TIME: i64 = 7;

thread_local! {
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("tokio runtime");
}

fuzz_target!(|data: &[u8]| {
    let [mode, tag_count, base_hi, base_lo, rest @ ..] = data else {
        return;
    };
    let tag_bytes = (usize::from(tag_count % 16) + 1) * 4;
    let (specs, reply) = rest.split_at(tag_bytes.min(rest.len()));
    let device = device(u16::from_be_bytes([*base_hi, *base_lo]), specs);
    let planned = plan::plan(&device, 0, &PlanOptions::default());
    check_plan(&device, &planned);

    over_the_wire(*mode, &planned.requests, reply);
    let other = TABLES[usize::from(mode >> 4 & 3)];
    for req in &planned.requests {
        as_direct_reply(req, other, reply);
    }
    every_layout(reply);
});

/// One device whose tags the spec bytes describe, valid as far as the config would check
/// (bool only in bit tables, no scaling of bool or string, strings of 1..=125 registers).
fn device(base: u16, specs: &[u8]) -> ModbusDevice {
    let mut address = base;
    let mut tags = Vec::new();
    for (i, spec) in specs.chunks_exact(4).enumerate() {
        let [b0, delta, len, b3] = [spec[0], spec[1], spec[2], spec[3]];
        let table = TABLES[usize::from(b3 & 3)];
        let kind = match (table.is_bits(), KINDS[usize::from(b0 & 0x0F) % KINDS.len()]) {
            (true, _) => ModbusType::Bool,
            (false, ModbusType::Bool) => ModbusType::U16,
            (false, k) => k,
        };
        let (byte_order, word_order) = ORDERS[usize::from(b0 >> 4 & 3)];
        let (scale, offset) = match kind {
            ModbusType::Bool | ModbusType::String => (1.0, 0.0),
            _ => SCALES[usize::from(b0 >> 6)],
        };
        let count = match kind {
            ModbusType::String => u16::from(len % 125) + 1,
            k => registers::type_width(k).unwrap_or(1),
        };
        address = address.wrapping_add(u16::from(delta));
        tags.push(ModbusTag {
            name: format!("t{i}"),
            table,
            address,
            kind,
            count: if table.is_bits() { 1 } else { count },
            byte_order,
            word_order,
            scale,
            offset,
            deadband: 0.0,
            unit: String::new(),
            description: String::new(),
        });
    }
    ModbusDevice {
        name: "plc".into(),
        host: "fuzz".into(),
        port: 502,
        unit_id: UNIT,
        poll_interval: Duration::from_secs(1),
        timeout: Duration::from_secs(1),
        tags,
    }
}

/// Every tag is read by exactly one request, or reported unreadable; requests stay inside the
/// protocol's limits and address space, and each slot inside its request.
fn check_plan(device: &ModbusDevice, plan: &Plan) {
    let mut seen = vec![0u32; device.tags.len()];
    for req in &plan.requests {
        let limit = if req.table.is_bits() {
            plan::MAX_BITS
        } else {
            plan::MAX_REGISTERS
        };
        assert!(req.count >= 1 && req.count <= limit, "{req:?}");
        assert!(
            u32::from(req.start) + u32::from(req.count) <= 0x1_0000,
            "{req:?}"
        );
        assert!(!req.tags.is_empty(), "{req:?}");
        for s in &req.tags {
            assert_eq!(s.addr.table, req.table, "{req:?}");
            assert_eq!(
                u32::from(s.addr.address),
                u32::from(req.start) + u32::from(s.offset)
            );
            assert!(s.offset + s.width <= req.count, "{req:?}");
            assert_eq!(s.width, registers::register_count(&s.addr), "{req:?}");
            seen[s.tag as usize] += 1;
        }
    }
    for u in &plan.unreadable {
        seen[u.tag as usize] += 1;
    }
    assert!(
        seen.iter().all(|&n| n == 1),
        "tags planned {seen:?}: {plan:?}"
    );
}

/// A Modbus TCP connection whose far end answers with the fuzzer's bytes, then closes.
#[derive(Debug)]
struct FakePlc {
    reply: Vec<u8>,
    pos: usize,
    chunk: usize,
    fix_header: bool,
    /// The request ADU written since the last read.
    request: Vec<u8>,
    request_pending: bool,
    /// End of the reply to the latest request: a PLC sends nothing before it is asked, so a
    /// read never returns bytes of the next reply (which the client would discard).
    frame_end: usize,
}

impl AsyncWrite for FakePlc {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if !this.request_pending {
            this.request.clear();
            this.request_pending = true;
        }
        this.request.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for FakePlc {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let p = this.pos;
        if std::mem::take(&mut this.request_pending) {
            let req = &this.request;
            if this.fix_header && req.len() >= 7 && this.reply.len() >= p + 7 {
                // MBAP header: transaction id, protocol id 0, length (left to the fuzzer), unit.
                this.reply[p..p + 2].copy_from_slice(&req[0..2]);
                this.reply[p + 2..p + 4].fill(0);
                this.reply[p + 6] = req[6];
            }
            this.frame_end = match this.reply.get(p + 4..p + 6) {
                Some(len) => p + 6 + usize::from(u16::from_be_bytes([len[0], len[1]])),
                None => this.reply.len(),
            };
        }
        if p >= this.frame_end {
            // The client wants more than the header announced: let it have the rest.
            this.frame_end = this.reply.len();
        }
        let end = this.frame_end.min(this.reply.len());
        let n = this.chunk.min(end - p).min(buf.remaining());
        buf.put_slice(&this.reply[p..p + n]);
        this.pos += n;
        Poll::Ready(Ok(()))
    }
}

/// One poll over a connection, as `Poller::poll` runs it.
fn over_the_wire(mode: u8, requests: &[ReadRequest], reply: &[u8]) {
    let plc = FakePlc {
        reply: reply.to_vec(),
        pos: 0,
        chunk: CHUNKS[usize::from(mode >> 1 & 7)],
        fix_header: mode & 1 != 0,
        request: Vec::new(),
        request_pending: false,
        frame_end: 0,
    };
    let mut requests = requests.to_vec();
    RUNTIME.with(|rt| {
        rt.block_on(async {
            let mut ctx = tokio_modbus::client::tcp::attach_slave(plc, Slave(UNIT));
            let mut i = 0;
            while i < requests.len() {
                let req = &requests[i];
                match ctx.call(request_for(req)).await {
                    // Transport and protocol errors cost the poller the connection.
                    Err(_) => return,
                    Ok(Err(code)) => {
                        assert_ne!(exception_quality(code), Quality::GOOD, "{code:?}");
                        if matches!(
                            code,
                            ExceptionCode::IllegalDataAddress | ExceptionCode::IllegalDataValue
                        ) && req.tags.len() > 1
                        {
                            let parts = plan::split(req);
                            check_split(req, &parts);
                            requests.splice(i..=i, parts);
                            continue;
                        }
                    }
                    Ok(Ok(response)) => check_decode(req, response),
                }
                i += 1;
            }
        })
    });
}

fn check_split(req: &ReadRequest, parts: &[ReadRequest]) {
    assert_eq!(parts.len(), req.tags.len());
    for (p, s) in parts.iter().zip(&req.tags) {
        assert_eq!(
            (p.table, p.start, p.count),
            (req.table, s.addr.address, s.width)
        );
        assert_eq!(
            (p.tags.len(), p.tags[0].tag, p.tags[0].offset),
            (1, s.tag, 0)
        );
    }
}

/// The fuzzer's bytes as the decoded reply to `req`: as they are, resized to the read's
/// length (so that values get decoded), and as the reply to a read of `other`.
fn as_direct_reply(req: &ReadRequest, other: ModbusTable, bytes: &[u8]) {
    let words: Vec<u16> = bytes
        .chunks_exact(2)
        .map(|w| u16::from_be_bytes([w[0], w[1]]))
        .collect();
    let bits: Vec<bool> = bytes
        .iter()
        .flat_map(|b| (0..8).map(move |i| b >> i & 1 != 0))
        .collect();
    let response = |table: ModbusTable, resize: bool| {
        let n = usize::from(req.count);
        match table {
            ModbusTable::Coil | ModbusTable::DiscreteInput => {
                let mut b = bits.clone();
                if resize {
                    // Bits arrive packed eight to a byte.
                    b.resize(n.div_ceil(8) * 8, false);
                }
                if table == ModbusTable::Coil {
                    Response::ReadCoils(b)
                } else {
                    Response::ReadDiscreteInputs(b)
                }
            }
            ModbusTable::HoldingRegister | ModbusTable::InputRegister => {
                let mut w = words.clone();
                if resize {
                    w.resize(n, 0);
                }
                if table == ModbusTable::HoldingRegister {
                    Response::ReadHoldingRegisters(w)
                } else {
                    Response::ReadInputRegisters(w)
                }
            }
        }
    };
    check_decode(req, response(req.table, false));
    check_decode(req, response(req.table, true));
    check_decode(req, response(other, false));
}

/// `decode_reply` gives each tag of the read one update, in order: a value of the tag's type
/// with Good quality, or no value and a Bad quality; and reports failure iff a tag is Bad.
fn check_decode(req: &ReadRequest, response: Response) {
    let shown = response.clone();
    let mut updates = Vec::new();
    let result = decode_reply(req, response, TIME, &mut updates);
    assert_eq!(updates.len(), req.tags.len(), "{req:?} {shown:?}");
    for (u, s) in updates.iter().zip(&req.tags) {
        assert_eq!((u.tag, u.time), (s.tag, TIME));
        assert_eq!(u.quality == Quality::GOOD, u.value.is_some(), "{u:?}");
        if let Some(v) = &u.value {
            let expected = if req.table.is_bits() {
                ValueType::Boolean
            } else {
                registers::value_type(&s.addr)
            };
            assert_eq!(v.value_type(), expected, "{v:?} for {s:?}");
        }
    }
    let all_good = updates.iter().all(|u| u.quality == Quality::GOOD);
    match result {
        Ok(()) => assert!(all_good, "Ok with Bad tags: {updates:?} {shown:?}"),
        Err((q, why)) => {
            assert_eq!(q, Quality::BAD_DECODING_ERROR, "{why}");
            assert!(!all_good && !why.is_empty(), "{why}: {updates:?}");
        }
    }
}

/// The words through the register codec for every type, order and scaling.
fn every_layout(bytes: &[u8]) {
    let words: Vec<u16> = bytes
        .chunks_exact(2)
        .take(130)
        .map(|w| u16::from_be_bytes([w[0], w[1]]))
        .collect();
    for kind in KINDS {
        for (byte_order, word_order) in ORDERS {
            for (scale, offset) in SCALES.into_iter().chain(ODD_SCALES) {
                let mut addr = ModbusAddress {
                    device: "plc".into(),
                    unit_id: UNIT,
                    table: ModbusTable::HoldingRegister,
                    address: 0,
                    kind,
                    count: registers::type_width(kind).unwrap_or(1),
                    byte_order,
                    word_order,
                    scale,
                    offset,
                };
                if kind == ModbusType::String {
                    // Every string length the words allow, and one they do not.
                    addr.count = (words.len() as u16).max(1);
                    check_codec(&addr, &words);
                    addr.count = words.len() as u16 + 1;
                    check_codec(&addr, &words);
                    continue;
                }
                let n = usize::from(registers::register_count(&addr));
                check_codec(&addr, &words[..n.min(words.len())]);
                check_codec(&addr, &words);
            }
        }
    }
}

fn check_codec(addr: &ModbusAddress, regs: &[u16]) {
    let expected = usize::from(registers::register_count(addr));
    let value = match registers::decode(addr, regs) {
        Ok(v) => v,
        Err(e) => {
            assert_eq!(
                e,
                RegisterError::WrongLength {
                    kind: addr.kind,
                    expected,
                    got: regs.len()
                }
            );
            return;
        }
    };
    assert_eq!(regs.len(), expected, "{addr:?}");
    assert_eq!(value.value_type(), registers::value_type(addr), "{value:?}");
    let mut back = Vec::new();
    let encoded = registers::encode(addr, &value, &mut back);
    // An unscaled number is its registers, exactly: the mirror on the IT side serves what the
    // PLC held.
    let exact = addr.is_unscaled()
        && !matches!(addr.kind, ModbusType::Bool | ModbusType::String)
        && !matches!(value, Value::Float(f) if f.is_nan())
        && !matches!(value, Value::Double(f) if f.is_nan());
    if exact {
        assert_eq!(encoded, Ok(()), "{value:?} {addr:?}");
        assert_eq!(back, regs, "{value:?} {addr:?}");
    } else if encoded.is_ok() {
        assert_eq!(back.len(), expected, "{value:?} {addr:?}");
    } else {
        assert!(back.is_empty(), "{value:?} {addr:?}");
    }
}
