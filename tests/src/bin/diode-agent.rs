//! `diode-agent`: the helper processes of the diode system test (`tests/tests/diode.rs`).
//!
//! Each subcommand runs inside one of the test bed's network namespaces (`ip netns exec NS
//! diode-agent ...`) and, except `garbage`, is driven over standard input and output: one
//! command per line in, one reply line out. End of input ends the process, so an agent never
//! outlives the harness that started it.
//!
//! - `plc` (OT box): the simulated PLC ([`tests::plc_sim::PlcSim`]) with its demo process and
//!   `--bulk` extra u16 holding registers that all change every step (enough traffic to fill
//!   FEC groups). Commands: `run`, `freeze` (stop the process; replies the step the
//!   registers hold), `step`, `unplug`, `plug`, `stats`.
//! - `probe` (IT box): reads every tag from gateway-rx's Modbus mirror. `sample` replies, per
//!   tag, the first process step whose value the mirror serves (`-` when the mirror serves no
//!   value, `x` when the value is none the PLC ever held); `check STEP` counts the tags whose
//!   value is exactly the PLC's at STEP.
//! - `relay` (IT box): the impairment relay ([`tests::relay::Relay`]) in front of gateway-rx,
//!   with an observer on both sides of it that classifies every datagram and computes, per FEC
//!   group, what an ideal erasure decoder could repair. Commands: `set k=v ...`, `stats`.
//! - `garbage` (a host on the IT network): sends datagrams that are not the link's, and exits
//!   with a summary of what it sent.

use std::collections::HashMap;
use std::io::BufRead;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use protocol::model::{ModbusTable, Value};
use protocol::registers;
use protocol::wire::{self, Header};
use tests::plc_sim::{DEMO_TAGS, DemoTag, PlcSim};
use tests::relay::{Impairments, Relay, RelayCounters};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

/// First holding register of the bulk tags (the demo tags use 0..=40).
const DEFAULT_BULK_BASE: u16 = 1000;
/// Steps are compared modulo 2^16 for the bulk tags (a run is far shorter than 65 536 steps).
const BULK_MUL: u16 = 40_503;
/// Demo tag values are matched against the steps 0..=this.
const SEARCH_LIMIT: u64 = 200_000;

#[derive(Parser)]
#[command(
    name = "diode-agent",
    about = "Helper processes of the diode system test"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The simulated PLC.
    Plc {
        #[arg(long)]
        listen: SocketAddr,
        /// One process step every this many milliseconds.
        #[arg(long, default_value_t = 100)]
        period_ms: u64,
        #[arg(long, default_value_t = 0)]
        bulk: u16,
        #[arg(long, default_value_t = DEFAULT_BULK_BASE)]
        bulk_base: u16,
    },
    /// Reads the Modbus mirror.
    Probe {
        #[arg(long)]
        mirror: SocketAddr,
        #[arg(long, default_value_t = 1)]
        unit: u8,
        #[arg(long, default_value_t = 0)]
        bulk: u16,
        #[arg(long, default_value_t = DEFAULT_BULK_BASE)]
        bulk_base: u16,
    },
    /// The impairment relay with its observer.
    Relay {
        /// Where gateway-tx sends (the IT box's diode address).
        #[arg(long)]
        listen: SocketAddr,
        /// gateway-rx's link socket.
        #[arg(long)]
        target: SocketAddr,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Sends garbage to gateway-rx's port.
    Garbage {
        #[arg(long)]
        target: SocketAddr,
        /// Datagrams of each kind.
        #[arg(long, default_value_t = 1000)]
        count: u64,
        /// Datagrams per second, all kinds together.
        #[arg(long, default_value_t = 2000)]
        rate: u64,
        /// Also send well-formed datagrams with a valid CRC that no key authenticates.
        #[arg(long)]
        forged: bool,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Plc {
            listen,
            period_ms,
            bulk,
            bulk_base,
        } => runtime.block_on(plc(listen, period_ms, bulk, bulk_base)),
        Command::Probe {
            mirror,
            unit,
            bulk,
            bulk_base,
        } => runtime.block_on(probe(mirror, unit, bulk, bulk_base)),
        Command::Relay {
            listen,
            target,
            seed,
        } => runtime.block_on(relay(listen, target, seed)),
        Command::Garbage {
            target,
            count,
            rate,
            forged,
            seed,
        } => runtime.block_on(garbage(target, count, rate, forged, seed)),
    }
}

/// Standard input, line by line, on a thread of its own; the channel closes at end of input.
fn commands() -> mpsc::UnboundedReceiver<String> {
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(line.trim().to_string()).is_err() {
                break;
            }
        }
    });
    rx
}

// ---------------------------------------------------------------------------------------------
// Bulk tags: register i of the block holds `i * 7919 + step * BULK_MUL` (mod 2^16), so every
// register changes every step and a value read back names the step it came from.

fn bulk_value(i: u16, step: u64) -> u16 {
    // Truncation is the point: values are modulo 2^16.
    (step as u16)
        .wrapping_mul(BULK_MUL)
        .wrapping_add(i.wrapping_mul(7919))
}

/// The step (modulo 2^16) whose value register `i` holds when it reads `v`.
fn bulk_step(i: u16, v: u16) -> u16 {
    v.wrapping_sub(i.wrapping_mul(7919))
        .wrapping_mul(inverse(BULK_MUL))
}

/// Multiplicative inverse of an odd number modulo 2^16 (Newton's iteration).
fn inverse(a: u16) -> u16 {
    let mut x = a;
    for _ in 0..4 {
        x = x.wrapping_mul(2u16.wrapping_sub(a.wrapping_mul(x)));
    }
    x
}

fn bulk_values(n: u16, step: u64) -> Vec<u16> {
    (0..n).map(|i| bulk_value(i, step)).collect()
}

// ---------------------------------------------------------------------------------------------
// plc

async fn plc(listen: SocketAddr, period_ms: u64, bulk: u16, bulk_base: u16) -> anyhow::Result<()> {
    let mut sim = PlcSim::start(listen)
        .await
        .with_context(|| format!("PLC simulator on {listen}"))?;
    sim.set_holding(bulk_base, &bulk_values(bulk, sim.step()));
    println!("ready {}", sim.local_addr());
    let mut cmds = commands();
    let mut running = false;
    let mut tick = tokio::time::interval(Duration::from_millis(period_ms.max(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                // Ticks and commands run in this one task, so `freeze` never meets half a step.
                if running {
                    let step = sim.tick();
                    sim.set_holding(bulk_base, &bulk_values(bulk, step));
                }
            }
            cmd = cmds.recv() => {
                let Some(cmd) = cmd else { return Ok(()) };
                let reply = match cmd.as_str() {
                    "run" => { running = true; format!("ok step {}", sim.step()) }
                    "freeze" => { running = false; format!("ok step {}", sim.step()) }
                    "step" => format!("ok step {}", sim.step()),
                    "unplug" => { sim.stop().await; "ok unplugged".to_string() }
                    "plug" => match sim.restart().await {
                        Ok(()) => "ok plugged".to_string(),
                        Err(e) => format!("error {e}"),
                    },
                    "stats" => format!(
                        "ok requests {} reads {} writes {} connections {}",
                        sim.requests(), sim.reads(), sim.writes(), sim.connections()
                    ),
                    other => format!("error unknown command {other:?}"),
                };
                println!("{reply}");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// probe

struct Probe {
    mirror: SocketAddr,
    unit: u8,
    bulk: u16,
    bulk_base: u16,
    client: Option<tokio_modbus::client::Context>,
}

/// What the mirror serves for one tag.
enum Read {
    /// No value (an exception, or the mirror unreachable).
    Unavailable,
    Demo(Value),
    Bulk(u16),
}

const READ_TIMEOUT: Duration = Duration::from_secs(2);

impl Probe {
    async fn client(&mut self) -> Option<&mut tokio_modbus::client::Context> {
        if self.client.is_none() {
            let connect = tokio_modbus::client::tcp::connect_slave(
                self.mirror,
                tokio_modbus::Slave(self.unit),
            );
            if let Ok(Ok(c)) = tokio::time::timeout(READ_TIMEOUT, connect).await {
                self.client = Some(c);
            }
        }
        self.client.as_mut()
    }

    /// Reads `n` registers or bits of `table`; `None` on an exception, and on a transport
    /// error or timeout (after which the connection is dropped and re-opened next time).
    async fn read(&mut self, table: ModbusTable, addr: u16, n: u16) -> Option<Vec<u16>> {
        use tokio_modbus::client::Reader;
        let c = self.client().await?;
        let r = match table {
            ModbusTable::Coil => tokio::time::timeout(READ_TIMEOUT, c.read_coils(addr, n))
                .await
                .map(|r| r.map(|r| r.map(|b| b.into_iter().map(u16::from).collect()))),
            ModbusTable::DiscreteInput => {
                tokio::time::timeout(READ_TIMEOUT, c.read_discrete_inputs(addr, n))
                    .await
                    .map(|r| r.map(|r| r.map(|b| b.into_iter().map(u16::from).collect())))
            }
            ModbusTable::HoldingRegister => {
                tokio::time::timeout(READ_TIMEOUT, c.read_holding_registers(addr, n)).await
            }
            ModbusTable::InputRegister => {
                tokio::time::timeout(READ_TIMEOUT, c.read_input_registers(addr, n)).await
            }
        };
        match r {
            Ok(Ok(Ok(words))) if words.len() == usize::from(n) => Some(words),
            Ok(Ok(_)) => None,
            _ => {
                self.client = None;
                None
            }
        }
    }

    /// Every tag, demo tags first, then the bulk registers in order.
    async fn read_all(&mut self) -> Vec<Read> {
        let mut out = Vec::with_capacity(DEMO_TAGS.len() + usize::from(self.bulk));
        for tag in DEMO_TAGS {
            let value = match self.read(tag.table, tag.address, tag.count()).await {
                Some(words) if tag.table.is_bits() => Some(registers::decode_bit(words[0] != 0)),
                Some(words) => registers::decode(&tag.address("plc1", self.unit), &words).ok(),
                None => None,
            };
            out.push(value.map_or(Read::Unavailable, Read::Demo));
        }
        let mut i = 0u16;
        while i < self.bulk {
            let n = (self.bulk - i).min(125);
            let base = self.bulk_base.wrapping_add(i);
            match self.read(ModbusTable::HoldingRegister, base, n).await {
                Some(words) => out.extend(words.into_iter().map(Read::Bulk)),
                None => {
                    // One tag without a value fails the whole block: read it one by one.
                    for j in 0..n {
                        let one = self
                            .read(ModbusTable::HoldingRegister, base.wrapping_add(j), 1)
                            .await;
                        out.push(one.map_or(Read::Unavailable, |w| Read::Bulk(w[0])));
                    }
                }
            }
            i += n;
        }
        out
    }
}

/// The first step whose value this demo tag has, if any up to [`SEARCH_LIMIT`].
fn demo_step(tag: &DemoTag, value: &Value) -> Option<u64> {
    (0..=SEARCH_LIMIT).find(|&s| tag.value(s) == *value)
}

async fn probe(mirror: SocketAddr, unit: u8, bulk: u16, bulk_base: u16) -> anyhow::Result<()> {
    let mut p = Probe {
        mirror,
        unit,
        bulk,
        bulk_base,
        client: None,
    };
    println!("ready {}", DEMO_TAGS.len() + usize::from(bulk));
    let mut cmds = commands();
    while let Some(cmd) = cmds.recv().await {
        let mut words = cmd.split_whitespace();
        let reply = match (words.next(), words.next()) {
            (Some("sample"), None) => {
                let reads = p.read_all().await;
                let mut line = String::from("ok");
                for (k, r) in reads.iter().enumerate() {
                    line.push(' ');
                    match r {
                        Read::Unavailable => line.push('-'),
                        Read::Demo(v) => match demo_step(&DEMO_TAGS[k], v) {
                            Some(s) => line.push_str(&s.to_string()),
                            None => line.push('x'),
                        },
                        Read::Bulk(v) => {
                            let i = u16::try_from(k - DEMO_TAGS.len()).unwrap_or(0);
                            line.push_str(&bulk_step(i, *v).to_string());
                        }
                    }
                }
                line
            }
            (Some("check"), Some(step)) => match step.parse::<u64>() {
                Ok(step) => {
                    let reads = p.read_all().await;
                    let (mut equal, mut unavailable) = (0usize, 0usize);
                    for (k, r) in reads.iter().enumerate() {
                        match r {
                            Read::Unavailable => unavailable += 1,
                            Read::Demo(v) => equal += usize::from(DEMO_TAGS[k].value(step) == *v),
                            Read::Bulk(v) => {
                                let i = u16::try_from(k - DEMO_TAGS.len()).unwrap_or(0);
                                equal += usize::from(bulk_value(i, step) == *v);
                            }
                        }
                    }
                    format!(
                        "ok equal {equal} total {} unavailable {unavailable}",
                        reads.len()
                    )
                }
                Err(e) => format!("error {e}"),
            },
            _ => format!("error unknown command {cmd:?}"),
        };
        println!("{reply}");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// relay

/// One FEC group as the observer saw it.
#[derive(Default)]
struct Group {
    /// Data shards the transmitter sent.
    data_sent: u16,
    /// The group's actual data shard count, from its repair shards' headers.
    k_actual: Option<u16>,
    /// Shards (by index) that reached gateway-rx intact.
    received: Vec<u16>,
}

#[derive(Default)]
struct Observer {
    groups: HashMap<(u64, u64), Group>,
    /// Datagrams the relay's front socket took in.
    front: u64,
    /// Sequence numbers skipped at the front socket (lost on this host before the relay saw
    /// them: they count as link loss for gateway-rx but the observer cannot place them).
    front_gaps: u64,
    front_next_seq: HashMap<u64, u64>,
    /// Datagrams the relay passed on, by what gateway-rx will make of them.
    back: u64,
    back_ok: u64,
    back_crc: u64,
    back_magic: u64,
    back_other: u64,
}

impl Observer {
    fn on_front(&mut self, d: &[u8]) {
        self.front += 1;
        let Ok(h) = wire::check(d) else { return };
        let next = self.front_next_seq.entry(h.session).or_insert(h.seq);
        if h.seq > *next {
            self.front_gaps += h.seq - *next;
        }
        *next = (*next).max(h.seq + 1);
        let g = self.groups.entry((h.session, h.group)).or_default();
        if h.is_repair() {
            g.k_actual = Some(h.k);
        } else {
            g.data_sent += 1;
        }
    }

    fn on_back(&mut self, d: &[u8]) {
        self.back += 1;
        match wire::check(d) {
            Ok(h) => {
                self.back_ok += 1;
                let g = self.groups.entry((h.session, h.group)).or_default();
                if !g.received.contains(&h.index) {
                    g.received.push(h.index);
                }
            }
            Err(protocol::error::Reject::Crc) => self.back_crc += 1,
            Err(protocol::error::Reject::BadMagic) => self.back_magic += 1,
            Err(_) => self.back_other += 1,
        }
    }

    /// (data shards sent, data shards received intact, data shards an ideal erasure decoder
    /// repairs, data shards no decoder can recover).
    fn fec(&self) -> (u64, u64, u64, u64) {
        let (mut sent, mut got, mut repairable, mut lost) = (0u64, 0u64, 0u64, 0u64);
        for g in self.groups.values() {
            let k = g.k_actual.unwrap_or(g.data_sent);
            let data_got = g.received.iter().filter(|&&i| i < k).count() as u64;
            let shards_got = g.received.len() as u64;
            sent += u64::from(g.data_sent);
            got += data_got;
            let missing = u64::from(k).saturating_sub(data_got);
            if shards_got >= u64::from(k) {
                repairable += missing;
            } else {
                lost += missing;
            }
        }
        (sent, got, repairable, lost)
    }
}

/// A UDP socket with a receive buffer as large as the namespace allows, so the observer's own
/// hops do not drop datagrams on a busy machine.
fn udp_socket(addr: SocketAddr) -> anyhow::Result<UdpSocket> {
    let s = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    let _ = s.set_recv_buffer_size(8 << 20);
    let _ = s.set_send_buffer_size(8 << 20);
    s.set_nonblocking(true)?;
    s.bind(&addr.into())
        .with_context(|| format!("binding {addr}"))?;
    Ok(UdpSocket::from_std(s.into())?)
}

fn parse_impairments(words: &[&str]) -> anyhow::Result<Impairments> {
    let mut i = Impairments::default();
    for w in words {
        let (k, v) = w.split_once('=').context("expected key=value")?;
        match k {
            "loss" => i.loss = v.parse()?,
            "burst" => i.burst = v.parse()?,
            "burst_len" => i.burst_len = v.parse()?,
            "burst_gap" => i.burst_gap = v.parse()?,
            "duplicate" => i.duplicate = v.parse()?,
            "reorder" => i.reorder = v.parse()?,
            "reorder_depth" => i.reorder_depth = v.parse()?,
            "corrupt" => i.corrupt = v.parse()?,
            "cut" => i.cut = v == "1" || v == "true",
            other => bail!("unknown impairment {other:?}"),
        }
    }
    Ok(i)
}

async fn relay(listen: SocketAddr, target: SocketAddr, seed: u64) -> anyhow::Result<()> {
    let loopback: SocketAddr = "127.0.0.1:0".parse()?;
    let front = udp_socket(listen)?;
    let back = udp_socket(loopback)?;
    let relay = Relay::start(back.local_addr()?, Impairments::default(), seed).await?;
    let to_relay = udp_socket(loopback)?;
    to_relay.connect(relay.listen).await?;
    let observer = Arc::new(Mutex::new(Observer::default()));

    let obs = observer.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        while let Ok(n) = front.recv(&mut buf).await {
            if let Ok(mut o) = obs.lock() {
                o.on_front(&buf[..n]);
            }
            let _ = to_relay.send(&buf[..n]).await;
        }
    });
    let obs = observer.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        while let Ok(n) = back.recv(&mut buf).await {
            if let Ok(mut o) = obs.lock() {
                o.on_back(&buf[..n]);
            }
            let _ = back.send_to(&buf[..n], target).await;
        }
    });

    println!("ready {listen}");
    let mut cmds = commands();
    while let Some(cmd) = cmds.recv().await {
        let words: Vec<&str> = cmd.split_whitespace().collect();
        let reply = match words.first().copied() {
            Some("set") => match parse_impairments(&words[1..]) {
                Ok(i) => {
                    relay.set(i);
                    "ok".to_string()
                }
                Err(e) => format!("error {e:#}"),
            },
            Some("stats") => {
                let c = &relay.counters;
                let g = RelayCounters::get;
                let o = observer.lock().map_err(|_| anyhow::anyhow!("observer"))?;
                let (data_sent, data_got, repairable, unrecoverable) = o.fec();
                format!(
                    "ok received={} forwarded={} dropped={} duplicated={} reordered={} corrupted={} \
                     front={} front_gaps={} back={} back_ok={} back_crc={} back_magic={} back_other={} \
                     data_sent={data_sent} data_received={data_got} repairable={repairable} unrecoverable={unrecoverable}",
                    g(&c.received),
                    g(&c.forwarded),
                    g(&c.dropped),
                    g(&c.duplicated),
                    g(&c.reordered),
                    g(&c.corrupted),
                    o.front,
                    o.front_gaps,
                    o.back,
                    o.back_ok,
                    o.back_crc,
                    o.back_magic,
                    o.back_other,
                )
            }
            _ => format!("error unknown command {cmd:?}"),
        };
        println!("{reply}");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// garbage

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn fill(&mut self, b: &mut [u8]) {
        for x in b {
            *x = self.next() as u8;
        }
    }
}

/// Random bytes that do not start with the link's magic (most are far shorter or longer
/// than anything the link sends).
fn random_datagram(rng: &mut Rng) -> Vec<u8> {
    let len = 1 + rng.below(1472) as usize;
    let mut d = vec![0u8; len];
    rng.fill(&mut d);
    if d.starts_with(&wire::MAGIC[..len.min(4)]) {
        d[0] ^= 0xFF;
    }
    d
}

/// The magic and a plausible header, then random bytes and a wrong CRC.
fn bad_crc_datagram(rng: &mut Rng) -> Vec<u8> {
    let len = wire::HEADER_LEN + 64 + rng.below(1300) as usize;
    let mut d = vec![0u8; len];
    rng.fill(&mut d);
    d[..4].copy_from_slice(&wire::MAGIC);
    d[4] = wire::VERSION;
    let at = len - wire::CRC_LEN;
    let crc = wire::crc32(&d[..at]) ^ (1 + rng.below(u64::from(u32::MAX)) as u32);
    d[at..].copy_from_slice(&crc.to_be_bytes());
    d
}

/// A well-formed datagram of a made-up session with a valid CRC: only a key tells it from
/// the transmitter's. Alternately claims to be authenticated (with a random tag) and not.
fn forged_datagram(rng: &mut Rng, n: u64) -> Vec<u8> {
    let authenticated = n.is_multiple_of(2);
    let payload_len = 64 + rng.below(1200) as usize;
    let header = Header {
        flags: if authenticated {
            wire::FLAG_AUTHENTICATED
        } else {
            0
        },
        session: rng.next(),
        seq: rng.below(1 << 20),
        group: rng.below(1 << 16),
        index: rng.below(64) as u16,
        k: 64,
        m: 16,
        payload_len: payload_len as u16,
    };
    let mut d = header.to_bytes().to_vec();
    let mut rest = vec![0u8; payload_len + if authenticated { wire::TAG_LEN } else { 0 }];
    rng.fill(&mut rest);
    d.extend_from_slice(&rest);
    let crc = wire::crc32(&d);
    d.extend_from_slice(&crc.to_be_bytes());
    debug_assert_eq!(wire::check(&d).map(|h| h.seq), Ok(header.seq));
    d
}

async fn garbage(
    target: SocketAddr,
    count: u64,
    rate: u64,
    forged: bool,
    seed: u64,
) -> anyhow::Result<()> {
    let socket = UdpSocket::bind("0.0.0.0:0").await?;
    socket.connect(target).await?;
    let mut rng = Rng(seed | 1);
    let kinds = if forged { 3 } else { 2 };
    let total = count * kinds;
    let started = Instant::now();
    let (mut random, mut bad_crc, mut forged_sent, mut errors) = (0u64, 0u64, 0u64, 0u64);
    for n in 0..total {
        let d = match n % kinds {
            0 => random_datagram(&mut rng),
            1 => bad_crc_datagram(&mut rng),
            _ => forged_datagram(&mut rng, n / kinds),
        };
        // Paced, so the host's socket buffers are not what gets tested.
        let due = started + Duration::from_secs_f64(n as f64 / rate.max(1) as f64);
        tokio::time::sleep_until(due.into()).await;
        match socket.send(&d).await {
            Ok(_) => match n % kinds {
                0 => random += 1,
                1 => bad_crc += 1,
                _ => forged_sent += 1,
            },
            Err(_) => errors += 1,
        }
    }
    println!("ok random={random} bad_crc={bad_crc} forged={forged_sent} errors={errors}");
    Ok(())
}

#[cfg(test)]
mod tests_ {
    use super::*;

    #[test]
    fn bulk_values_name_their_step() {
        assert_eq!(BULK_MUL.wrapping_mul(inverse(BULK_MUL)), 1);
        for step in [0u64, 1, 2, 977, 12_345, 65_535] {
            for i in [0u16, 1, 999, 1999] {
                assert_eq!(u64::from(bulk_step(i, bulk_value(i, step))), step);
            }
        }
    }

    #[test]
    fn garbage_is_rejected_for_the_right_reason() {
        let mut rng = Rng(7);
        for n in 0..200 {
            assert!(!matches!(
                wire::check(&random_datagram(&mut rng)),
                Ok(_) | Err(protocol::error::Reject::Crc)
            ));
            assert_eq!(
                wire::check(&bad_crc_datagram(&mut rng)),
                Err(protocol::error::Reject::Crc)
            );
            assert!(wire::check(&forged_datagram(&mut rng, n)).is_ok());
        }
    }
}
