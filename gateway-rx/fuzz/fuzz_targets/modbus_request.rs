//! Fuzzes the receiver's read-only Modbus TCP mirror with what a client sends: the real server
//! (`modbus_server::serve_with_counters`, its connection guard, tokio-modbus's framing and the
//! mirror's request handling) on a loopback port, one connection per input.
//!
//! Input: `[mode][tag count][base address u16 BE][14 bytes per tag][requests...]`.
//!
//! - The tags make the catalogue and current values the mirror serves: device (`plc2` is
//!   served as unit 9 by the `unit_map`), unit id, table, type, byte and word order, scaling,
//!   address (a delta from the previous tag's), string length, quality (or no value yet) and
//!   the value's bits. Tags of one unit and table may overlap and devices may share a unit.
//! - Mode bits 0-1 choose the server (`on_bad_quality` Exception, LastValue or Zero); bit 2
//!   sends the requests as they are (raw bytes) rather than as `[unit][PDU length][PDU]`
//!   records wrapped in well-formed MBAP headers; bits 3-5 how many bytes each write sends.
//!
//! Checked: the server never panics nor hangs; every answer is a well-formed MBAP frame echoing
//! the request's transaction and unit id; a read (function 01-04, PDU of 5 bytes) is answered
//! exactly as the mirror's rules say (quantity, unit, coverage, then quality and encoding,
//! computed here from the tags); any other function is refused with exception 01 or costs the
//! connection; a request goes unanswered only once the connection is lost to a frame the server
//! may refuse; the write and read counters count what was answered; nothing is applied to the
//! state.
#![no_main]

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use config::rx::{ModbusServer, OnBadQuality};
use gateway_rx::modbus_server::{self, MAX_READ_BITS, MAX_READ_REGISTERS, ServerCounters};
use gateway_rx::state::State;
use gateway_rx_fuzz::Input;
use libfuzzer_sys::fuzz_target;
use protocol::catalogue::Catalogue;
use protocol::message::Stream;
use protocol::model::{
    ByteOrder, ModbusAddress, ModbusTable, ModbusType, Quality, Sample, SourceAddress, TagInfo,
    Value, WordOrder,
};
use protocol::registers;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;

const DEVICES: [&str; 3] = ["plc1", "plc2", "plc3"];
/// Every server serves `plc2` as this unit.
const REMAPPED_UNIT: u8 = 9;
const POLICIES: [OnBadQuality; 3] = [
    OnBadQuality::Exception,
    OnBadQuality::LastValue,
    OnBadQuality::Zero,
];
const TABLES: [ModbusTable; 4] = [
    ModbusTable::Coil,
    ModbusTable::DiscreteInput,
    ModbusTable::HoldingRegister,
    ModbusTable::InputRegister,
];
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
const SCALES: [(f64, f64); 4] = [(1.0, 0.0), (0.1, -40.0), (-2.5, 1e3), (1e-9, 0.0)];
const CHUNKS: [usize; 8] = [usize::MAX, 1, 2, 3, 7, 12, 64, 260];
const WRITES: [u8; 6] = [0x05, 0x06, 0x0F, 0x10, 0x16, 0x17];

struct Server {
    addr: SocketAddr,
    counters: Arc<ServerCounters>,
}

struct World {
    rt: Runtime,
    state: Arc<State>,
    servers: Vec<Server>,
}

thread_local! {
    static WORLD: World = World::start();
}

impl World {
    fn start() -> World {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let state = Arc::new(State::new());
        let servers = POLICIES
            .iter()
            .map(|&on_bad_quality| {
                let listener = rt
                    .block_on(TcpListener::bind("127.0.0.1:0"))
                    .expect("bind loopback");
                let addr = listener.local_addr().expect("local address");
                let counters = Arc::new(ServerCounters::default());
                let config = ModbusServer {
                    bind: addr,
                    on_bad_quality,
                    unit_map: vec![(DEVICES[1].into(), REMAPPED_UNIT)],
                };
                rt.spawn(modbus_server::serve_with_counters(
                    listener,
                    state.clone(),
                    config,
                    counters.clone(),
                ));
                Server { addr, counters }
            })
            .collect();
        World { rt, state, servers }
    }
}

/// One mirrored tag as the input describes it.
struct Tag {
    addr: ModbusAddress,
    /// `None`: no value received yet.
    sample: Option<(Value, Quality)>,
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let mode = input.u8();
    let count = input.u8() % 17;
    let mut address = input.u16();
    let tags: Vec<Tag> = (0..count).map(|_| tag(&mut input, &mut address)).collect();
    let requests = input.rest();
    let stream = if mode & 4 != 0 {
        requests.to_vec()
    } else {
        wrap(requests)
    };
    let policy = POLICIES[usize::from(mode & 3) % POLICIES.len()];
    let chunk = CHUNKS[usize::from(mode >> 3 & 7)];

    WORLD.with(|w| {
        install(&w.state, &tags);
        let model = Model::new(&tags, policy);
        let server = &w.servers[usize::from(mode & 3) % POLICIES.len()];
        let before = snapshot(&server.counters);
        let applied_before = w.state.counters().samples_applied;
        let answer = w.rt.block_on(exchange(server.addr, &stream, chunk));
        let after = snapshot(&server.counters);
        check(&model, &stream, &answer, before, after);
        assert_eq!(w.state.counters().samples_applied, applied_before);
    });
});

fn tag(input: &mut Input<'_>, address: &mut u16) -> Tag {
    let [b0, unit, b2, delta, b4, b5] = [0; 6].map(|_: u8| input.u8());
    let table = TABLES[usize::from(b2 & 3)];
    let kind = match (table.is_bits(), KINDS[usize::from(b2 >> 2) % KINDS.len()]) {
        (true, _) => ModbusType::Bool,
        (false, ModbusType::Bool) => ModbusType::U16,
        (false, k) => k,
    };
    let (scale, offset) = match kind {
        ModbusType::Bool | ModbusType::String => (1.0, 0.0),
        _ => SCALES[usize::from(b4 >> 4 & 3)],
    };
    *address = address.wrapping_add(u16::from(delta));
    let addr = ModbusAddress {
        device: DEVICES[usize::from(b0 % 3)].into(),
        unit_id: unit % 4 + 1,
        table,
        address: *address,
        kind,
        count: if kind == ModbusType::String {
            u16::from(b4 & 7) + 1
        } else {
            registers::type_width(kind).unwrap_or(1)
        },
        byte_order: if b0 & 0x10 != 0 {
            ByteOrder::Little
        } else {
            ByteOrder::Big
        },
        word_order: if b0 & 0x20 != 0 {
            WordOrder::Little
        } else {
            WordOrder::Big
        },
        scale,
        offset,
    };
    // The value's type is the tag's, as the transmitter makes it; with bit 6, another type
    // (a value the codec must refuse, as after a type change).
    let value_type = if b0 & 0x40 != 0 {
        gateway_rx_fuzz::VALUE_TYPES[usize::from(b5 >> 2) % 12]
    } else {
        registers::value_type(&addr)
    };
    let value = input.value(value_type);
    let sample = match b5 & 3 {
        0 => None,
        1 => Some((value, Quality::GOOD)),
        2 => Some((value, Quality::UNCERTAIN_NO_COMMUNICATION_LAST_USABLE_VALUE)),
        _ => Some((value, Quality::BAD_DEVICE_FAILURE)),
    };
    Tag { addr, sample }
}

/// Makes the tags the state's catalogue and current values, with nothing left of the last
/// input's.
fn install(state: &State, tags: &[Tag]) {
    state.apply_catalogue(Catalogue::empty());
    let infos = tags
        .iter()
        .enumerate()
        .map(|(i, t)| TagInfo {
            name: format!("t{i}"),
            value_type: t
                .sample
                .as_ref()
                .map_or(registers::value_type(&t.addr), |(v, _)| v.value_type()),
            unit: String::new(),
            description: String::new(),
            source: SourceAddress::Modbus(t.addr.clone()),
        })
        .collect();
    let catalogue = Catalogue::new(infos);
    let hash = catalogue.hash();
    state.apply_catalogue(catalogue);
    let samples: Vec<Sample> = tags
        .iter()
        .enumerate()
        .filter_map(|(i, t)| {
            let (value, quality) = t.sample.clone()?;
            Some(Sample {
                tag: i as u32,
                value,
                quality,
                time: 1,
            })
        })
        .collect();
    let out = state.apply_samples(hash, &samples, 1, Stream::Live);
    assert_eq!(out.applied as usize, samples.len(), "{out:?}");
}

/// `[unit][PDU length][PDU]` records as MBAP frames, transaction ids counting from 0.
fn wrap(mut records: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut tid = 0u16;
    while let [unit, len, rest @ ..] = records {
        let (pdu, after) = rest.split_at(usize::from(*len).min(rest.len()));
        out.extend_from_slice(&tid.to_be_bytes());
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&(pdu.len() as u16 + 1).to_be_bytes());
        out.push(*unit);
        out.extend_from_slice(pdu);
        tid = tid.wrapping_add(1);
        records = after;
    }
    out
}

/// Sends the stream (then ends the sending half) while reading everything the server answers
/// until it closes the connection.
async fn exchange(addr: SocketAddr, stream: &[u8], chunk: usize) -> Vec<u8> {
    let run = async {
        let socket = TcpStream::connect(addr)
            .await
            .expect("connect to the mirror");
        socket.set_nodelay(true).expect("nodelay");
        let (mut rx, mut tx) = socket.into_split();
        let send = async move {
            for part in stream.chunks(chunk.min(stream.len()).max(1)) {
                // The server may close the connection early, on a frame it refuses.
                if tx.write_all(part).await.is_err() {
                    return;
                }
                tokio::task::yield_now().await;
            }
            let _ = tx.shutdown().await;
        };
        let receive = async move {
            let mut answer = Vec::new();
            // A reset after the server closed on unread data ends the answer too.
            let _ = rx.read_to_end(&mut answer).await;
            answer
        };
        tokio::join!(send, receive).1
    };
    tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("the mirror answers and closes within 10 s")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Counts {
    reads_served: u64,
    writes_refused: u64,
}

fn snapshot(c: &ServerCounters) -> Counts {
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    Counts {
        reads_served: get(&c.reads_served),
        writes_refused: get(&c.writes_refused),
    }
}

/// What the mirror should serve, computed from the tags.
struct Model<'a> {
    tags: &'a [Tag],
    policy: OnBadQuality,
    /// Served unit ids that have any tag.
    units: Vec<u8>,
    /// (served unit, table, register) → (tag, offset of the register in the tag): the device
    /// whose name sorts first (then its unit id), then the lowest tag index.
    covering: HashMap<(u8, ModbusTable, u16), (usize, u16)>,
}

impl<'a> Model<'a> {
    fn new(tags: &'a [Tag], policy: OnBadQuality) -> Self {
        let served = |a: &ModbusAddress| {
            if a.device == DEVICES[1] {
                REMAPPED_UNIT
            } else {
                a.unit_id
            }
        };
        let mut keys: BTreeMap<(&str, u8, ModbusTable), Vec<usize>> = BTreeMap::new();
        for (i, t) in tags.iter().enumerate() {
            keys.entry((t.addr.device.as_str(), t.addr.unit_id, t.addr.table))
                .or_default()
                .push(i);
        }
        let mut covering = HashMap::new();
        let mut units = Vec::new();
        for ((_, _, table), indexes) in &keys {
            for &i in indexes {
                let a = &tags[i].addr;
                units.push(served(a));
                for offset in 0..registers::register_count(a) {
                    let Some(register) = a.address.checked_add(offset) else {
                        break;
                    };
                    covering
                        .entry((served(a), *table, register))
                        .or_insert((i, offset));
                }
            }
        }
        Model {
            tags,
            policy,
            units,
            covering,
        }
    }

    /// The words of a read, or its exception code.
    fn read(
        &self,
        unit: u8,
        table: ModbusTable,
        start: u16,
        quantity: u16,
    ) -> Result<Vec<u16>, u8> {
        let limit = if table.is_bits() {
            MAX_READ_BITS
        } else {
            MAX_READ_REGISTERS
        };
        if quantity == 0 || quantity > limit {
            return Err(0x03);
        }
        if !self.units.contains(&unit) {
            return Err(0x0A);
        }
        if u32::from(start) + u32::from(quantity) > 1 << 16 {
            return Err(0x02);
        }
        let mut covered = Vec::new();
        for register in start..=start + (quantity - 1) {
            match self.covering.get(&(unit, table, register)) {
                Some(&c) => covered.push(c),
                None => return Err(0x02),
            }
        }
        let mut words = Vec::new();
        for (tag, offset) in covered {
            let all = self.tag_words(tag)?;
            words.push(*all.get(usize::from(offset)).ok_or(0x04)?);
        }
        Ok(words)
    }

    fn tag_words(&self, tag: usize) -> Result<Vec<u16>, u8> {
        let t = &self.tags[tag];
        let zeros = vec![0; usize::from(registers::register_count(&t.addr))];
        let fallback = match self.policy {
            OnBadQuality::Zero => Ok(zeros),
            _ => Err(0x04),
        };
        let Some((value, quality)) = &t.sample else {
            return fallback;
        };
        if quality.is_bad() && self.policy != OnBadQuality::LastValue {
            return fallback;
        }
        let encoded = if t.addr.table.is_bits() {
            registers::encode_bit(value)
                .map(|b| vec![u16::from(b)])
                .ok()
        } else {
            let mut words = Vec::new();
            registers::encode(&t.addr, value, &mut words)
                .ok()
                .filter(|()| words.len() == usize::from(registers::register_count(&t.addr)))
                .map(|()| words)
        };
        match encoded {
            Some(words) => Ok(words),
            None => fallback,
        }
    }
}

/// One MBAP frame of the request stream, as the harness reads it.
struct Adu<'a> {
    tid: [u8; 2],
    protocol: u16,
    unit: u8,
    /// `None`: the stream ended before the whole frame (or the length field was 0).
    pdu: Option<&'a [u8]>,
}

fn frames(mut stream: &[u8]) -> Vec<Adu<'_>> {
    let mut out = Vec::new();
    while stream.len() >= 7 {
        let len = usize::from(u16::from_be_bytes([stream[4], stream[5]]));
        let adu = Adu {
            tid: [stream[0], stream[1]],
            protocol: u16::from_be_bytes([stream[2], stream[3]]),
            unit: stream[6],
            pdu: stream.get(7..6 + len).filter(|_| len > 0),
        };
        let whole = adu.pdu.is_some();
        out.push(adu);
        if !whole {
            return out;
        }
        stream = &stream[6 + len..];
    }
    if !stream.is_empty() {
        out.push(Adu {
            tid: [0, 0],
            protocol: 0,
            unit: 0,
            pdu: None,
        });
    }
    out
}

/// A well-formed read request: `(table, start, quantity)`.
fn as_read(adu: &Adu<'_>) -> Option<(ModbusTable, u16, u16)> {
    let pdu = adu.pdu.filter(|_| adu.protocol == 0)?;
    let [function, a0, a1, q0, q1] = *pdu else {
        return None;
    };
    let table = match function {
        0x01 => ModbusTable::Coil,
        0x02 => ModbusTable::DiscreteInput,
        0x03 => ModbusTable::HoldingRegister,
        0x04 => ModbusTable::InputRegister,
        _ => return None,
    };
    Some((
        table,
        u16::from_be_bytes([a0, a1]),
        u16::from_be_bytes([q0, q1]),
    ))
}

/// The expected PDU of a read's answer.
fn read_answer(function: u8, table: ModbusTable, result: Result<Vec<u16>, u8>) -> Vec<u8> {
    match result {
        Err(code) => vec![function | 0x80, code],
        Ok(words) if table.is_bits() => {
            let mut packed = vec![0u8; words.len().div_ceil(8)];
            for (i, w) in words.iter().enumerate() {
                if *w != 0 {
                    packed[i / 8] |= 1 << (i % 8);
                }
            }
            let mut pdu = vec![function, packed.len() as u8];
            pdu.extend(packed);
            pdu
        }
        Ok(words) => {
            let mut pdu = vec![function, (words.len() * 2) as u8];
            for w in words {
                pdu.extend_from_slice(&w.to_be_bytes());
            }
            pdu
        }
    }
}

fn check(model: &Model<'_>, stream: &[u8], answer: &[u8], before: Counts, after: Counts) {
    let requests = frames(stream);
    let mut rest = answer;
    let mut answered = 0;
    let mut reads_served = 0;
    let mut writes_refused = 0;
    while !rest.is_empty() {
        assert!(rest.len() >= 8, "a truncated answer: {rest:02x?}");
        let len = usize::from(u16::from_be_bytes([rest[4], rest[5]]));
        assert!(len >= 2 && rest.len() >= 6 + len, "{rest:02x?}");
        let (frame, after_frame) = rest.split_at(6 + len);
        rest = after_frame;
        let req = requests
            .get(answered)
            .unwrap_or_else(|| panic!("an answer to no request: {frame:02x?}"));
        answered += 1;
        let pdu = &frame[7..];
        assert_eq!(frame[..2], req.tid, "transaction id");
        assert_eq!(frame[2..4], [0, 0], "protocol id");
        assert_eq!(frame[6], req.unit, "unit id");
        let Some(request_pdu) = req.pdu.filter(|_| req.protocol == 0) else {
            panic!("an answer to a frame the server cannot read: {frame:02x?}");
        };
        let Some(&function) = request_pdu.first() else {
            panic!("an answer to an empty PDU: {frame:02x?}");
        };
        if let Some((table, start, quantity)) = as_read(req) {
            let expected = model.read(req.unit, table, start, quantity);
            if expected.is_ok() {
                reads_served += 1;
            }
            assert_eq!(
                pdu,
                read_answer(function, table, expected),
                "read {table:?} {start} x{quantity} of unit {}",
                req.unit
            );
        } else {
            assert!(
                !(0x01..=0x04).contains(&function),
                "a malformed read answered: {request_pdu:02x?} -> {pdu:02x?}"
            );
            assert_eq!(pdu, [function | 0x80, 0x01], "refused: {request_pdu:02x?}");
            if WRITES.contains(&function) {
                writes_refused += 1;
            }
        }
    }
    if let Some(first) = requests.get(answered) {
        // The server closed the connection: on this frame, or on a later one read with it.
        let refusable = requests[answered..].iter().any(|r| as_read(r).is_none());
        assert!(
            refusable,
            "a well-formed read went unanswered (tid {:02x?}), {} answered of {}",
            first.tid,
            answered,
            requests.len()
        );
    }
    assert_eq!(after.reads_served - before.reads_served, reads_served);
    assert_eq!(after.writes_refused - before.writes_refused, writes_refused);
}
