//! `diode-agent`: the helper processes of the diode system test (`tests/tests/diode.rs`).
//!
//! Each subcommand runs inside one of the test bed's network namespaces (`ip netns exec NS
//! diode-agent ...`) and, except `garbage` and `replay`, is driven over standard input and
//! output: one command per line in, one reply line out. End of input ends the process, so an
//! agent never outlives the harness that started it.
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
//! - `capture` (IT box): records the link datagrams arriving from the transmitter's address
//!   (a packet socket, beside gateway-rx's own, which it does not disturb). Commands: `start
//!   FILE`, `stop` (replies how many it wrote). The file is each datagram as a big-endian u32
//!   length and its bytes.
//! - `garbage` (a host on the IT network): sends datagrams that are not the transmitter's, of
//!   the `--kinds` asked for, and exits with a summary of what it sent by kind.
//! - `replay` (a host on the IT network): sends a `capture` file, and exits with a summary.

use std::collections::HashMap;
use std::io::{BufRead, Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
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
    /// Records the transmitter's link datagrams as they arrive.
    Capture {
        /// The transmitter's address.
        #[arg(long)]
        from: Ipv4Addr,
        /// The link port.
        #[arg(long)]
        port: u16,
    },
    /// Sends garbage to gateway-rx's port.
    Garbage {
        #[arg(long)]
        target: SocketAddr,
        /// What to send, in turn (comma-separated): `random` (bytes without the link's magic),
        /// `bad-crc` (a header and a wrong CRC), `forged` (well-formed with a valid CRC, in
        /// turn: not claiming authentication, claiming it in a session of an older epoch, and
        /// of a newer one), `new-session` (well-formed with a valid CRC, each of a fresh
        /// session of a newer epoch, unauthenticated: for a receiver without a key),
        /// `new-session-auth` (the same claiming authentication: for a receiver with a key).
        #[arg(long, value_delimiter = ',', default_value = "random,bad-crc")]
        kinds: Vec<Kind>,
        /// Datagrams of each kind.
        #[arg(long, default_value_t = 1000)]
        count: u64,
        /// Datagrams per second, all kinds together; 0 sends as fast as the socket takes them.
        #[arg(long, default_value_t = 2000)]
        rate: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Sends the datagrams of a `capture` file to gateway-rx's port.
    Replay {
        #[arg(long)]
        target: SocketAddr,
        #[arg(long)]
        file: PathBuf,
        /// Datagrams per second; 0 sends as fast as the socket takes them.
        #[arg(long, default_value_t = 20_000)]
        rate: u64,
    },
}

/// What `garbage` sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Kind {
    Random,
    BadCrc,
    Forged,
    NewSession,
    NewSessionAuth,
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
        Command::Capture { from, port } => capture(from, port),
        Command::Garbage {
            target,
            kinds,
            count,
            rate,
            seed,
        } => runtime.block_on(garbage(target, &kinds, count, rate, seed)),
        Command::Replay { target, file, rate } => runtime.block_on(replay(target, &file, rate)),
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

/// A well-formed data datagram of `session` with `payload_len` random bytes and a valid CRC:
/// only a key tells it from the transmitter's. `authenticated` sets the flag and appends a
/// random tag.
fn forged_datagram(rng: &mut Rng, session: u64, authenticated: bool, payload_len: u16) -> Vec<u8> {
    let header = Header {
        flags: if authenticated {
            wire::FLAG_AUTHENTICATED
        } else {
            0
        },
        session,
        seq: rng.below(1 << 20),
        group: rng.below(1 << 16),
        index: rng.below(64) as u16,
        k: 64,
        m: 16,
        payload_len,
    };
    let mut d = header.to_bytes().to_vec();
    let tag = if authenticated { wire::TAG_LEN } else { 0 };
    let mut rest = vec![0u8; usize::from(payload_len) + tag];
    rng.fill(&mut rest);
    d.extend_from_slice(&rest);
    let crc = wire::crc32(&d);
    d.extend_from_slice(&crc.to_be_bytes());
    d
}

/// Unix time in seconds, which the transmitter's epochs follow.
fn unix_now() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
}

/// A session id of an epoch at least a day before now: older than that of any transmitter
/// started since (an epoch is at least the Unix time of the start).
fn older_session(rng: &mut Rng) -> u64 {
    let before = u64::from(unix_now().saturating_sub(86_400)).max(1);
    let epoch = u32::try_from(1 + rng.below(before)).unwrap_or(1);
    protocol::epoch::session_id(epoch, rng.next() as u32)
}

/// A session id of an epoch at least a day after now: newer than the transmitter's (its epoch
/// is the Unix time of its start, or one more than its last, which a test bed never pushes a
/// day ahead).
fn newer_session(rng: &mut Rng) -> u64 {
    let ahead = u32::try_from(86_400 + rng.below(1 << 24)).unwrap_or(86_400);
    let epoch = unix_now().saturating_add(ahead);
    protocol::epoch::session_id(epoch, rng.next() as u32)
}

/// What `garbage` counts as sent, by what a receiver must make of it.
const LABELS: [&str; 7] = [
    "random",
    "bad_crc",
    "forged_plain",
    "forged_old",
    "forged_new",
    "new_session",
    "new_session_auth",
];

/// The `n`-th datagram of `kind`, and its label (an index into [`LABELS`]).
fn garbage_datagram(kind: Kind, rng: &mut Rng, n: u64) -> (Vec<u8>, usize) {
    let any_len = |rng: &mut Rng| 64 + rng.below(1200) as u16;
    // A flood of sessions costs the sender little when its datagrams are small.
    let small = |rng: &mut Rng| 16 + rng.below(64) as u16;
    match kind {
        Kind::Random => (random_datagram(rng), 0),
        Kind::BadCrc => (bad_crc_datagram(rng), 1),
        Kind::Forged => {
            let (session, authenticated, label) = match n % 3 {
                0 => (rng.next(), false, 2),
                1 => (older_session(rng), true, 3),
                _ => (newer_session(rng), true, 4),
            };
            let len = any_len(rng);
            (forged_datagram(rng, session, authenticated, len), label)
        }
        Kind::NewSession | Kind::NewSessionAuth => {
            let authenticated = kind == Kind::NewSessionAuth;
            let session = newer_session(rng);
            let len = small(rng);
            let label = if authenticated { 6 } else { 5 };
            (forged_datagram(rng, session, authenticated, len), label)
        }
    }
}

/// Sends `total` datagrams that `next` makes (each with a label below `labels`) to `target`,
/// `rate` a second (0: as fast as the socket takes them). Paced, so the host's socket buffers
/// are not what gets tested. Returns how many of each label were sent and how many sends
/// failed.
async fn send_paced(
    target: SocketAddr,
    total: u64,
    rate: u64,
    labels: usize,
    mut next: impl FnMut(u64) -> (Vec<u8>, usize),
) -> anyhow::Result<(Vec<u64>, u64)> {
    let socket = UdpSocket::bind("0.0.0.0:0").await?;
    socket.connect(target).await?;
    let started = Instant::now();
    let mut sent = vec![0u64; labels];
    let mut errors = 0u64;
    for n in 0..total {
        let (d, label) = next(n);
        if rate > 0 {
            let due = started + Duration::from_secs_f64(n as f64 / rate as f64);
            tokio::time::sleep_until(due.into()).await;
        }
        match socket.send(&d).await {
            Ok(_) => {
                if let Some(c) = sent.get_mut(label) {
                    *c += 1;
                }
            }
            Err(_) => errors += 1,
        }
    }
    Ok((sent, errors))
}

async fn garbage(
    target: SocketAddr,
    kinds: &[Kind],
    count: u64,
    rate: u64,
    seed: u64,
) -> anyhow::Result<()> {
    anyhow::ensure!(!kinds.is_empty(), "no --kinds");
    let mut rng = Rng(seed | 1);
    let k = kinds.len() as u64;
    let started = Instant::now();
    let (sent, errors) = send_paced(target, count * k, rate, LABELS.len(), |n| {
        garbage_datagram(kinds[(n % k) as usize], &mut rng, n / k)
    })
    .await?;
    let mut line = String::from("ok");
    for (label, c) in LABELS.iter().zip(&sent) {
        line.push_str(&format!(" {label}={c}"));
    }
    line.push_str(&format!(
        " forged={} total={} errors={errors} seconds={:.2}",
        sent[2] + sent[3] + sent[4],
        sent.iter().sum::<u64>(),
        started.elapsed().as_secs_f64()
    ));
    println!("{line}");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// capture and replay

/// `AF_PACKET` (linux/socket.h) and `ETH_P_IP` (linux/if_ether.h): socket2 names the former
/// only with its "all" feature, which would rebuild it for the whole workspace.
const AF_PACKET: i32 = 17;
const ETH_P_IP: u16 = 0x0800;

/// A capture file being written.
struct Recording {
    out: std::io::BufWriter<std::fs::File>,
    datagrams: u64,
    error: Option<std::io::Error>,
}

impl Recording {
    fn add(&mut self, d: &[u8]) {
        if self.error.is_some() {
            return;
        }
        let len = u32::try_from(d.len()).unwrap_or(u32::MAX);
        let r = self
            .out
            .write_all(&len.to_be_bytes())
            .and_then(|()| self.out.write_all(d));
        match r {
            Ok(()) => self.datagrams += 1,
            Err(e) => self.error = Some(e),
        }
    }
}

/// The UDP payload of an IPv4 packet from `from` to port `port`, if it is one (and not a
/// fragment).
fn link_datagram(p: &[u8], from: Ipv4Addr, port: u16) -> Option<&[u8]> {
    let first = *p.first()?;
    if first >> 4 != 4 || *p.get(9)? != 17 {
        return None;
    }
    let fragment = u16::from_be_bytes([*p.get(6)?, *p.get(7)?]) & 0x3fff;
    let src = Ipv4Addr::new(*p.get(12)?, *p.get(13)?, *p.get(14)?, *p.get(15)?);
    if fragment != 0 || src != from {
        return None;
    }
    let ihl = usize::from(first & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([*p.get(2)?, *p.get(3)?]));
    let udp = p.get(ihl..total.min(p.len()))?;
    let dport = u16::from_be_bytes([*udp.get(2)?, *udp.get(3)?]);
    let len = usize::from(u16::from_be_bytes([*udp.get(4)?, *udp.get(5)?]));
    if dport != port {
        return None;
    }
    udp.get(8..len)
}

fn capture(from: Ipv4Addr, port: u16) -> anyhow::Result<()> {
    // A packet socket of type DGRAM is handed every IPv4 packet as it arrives at an interface
    // (before the firewall), without its link header; gateway-rx's socket is not disturbed.
    let socket = socket2::Socket::new(
        socket2::Domain::from(AF_PACKET),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::from(i32::from(ETH_P_IP.to_be()))),
    )
    .context("opening a packet socket (needs CAP_NET_RAW)")?;
    let _ = socket.set_recv_buffer_size(16 << 20);
    let recording: Arc<Mutex<Option<Recording>>> = Arc::new(Mutex::new(None));
    let rec = recording.clone();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 65_536];
        while let Ok(n) = (&socket).read(&mut buf) {
            let Some(d) = link_datagram(&buf[..n], from, port) else {
                continue;
            };
            if let Ok(mut r) = rec.lock()
                && let Some(r) = r.as_mut()
            {
                r.add(d);
            }
        }
    });
    println!("ready {from}:{port}");
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let words: Vec<&str> = line.split_whitespace().collect();
        let reply = match words.as_slice() {
            ["start", path] => match std::fs::File::create(path) {
                Ok(f) => {
                    let r = Recording {
                        out: std::io::BufWriter::new(f),
                        datagrams: 0,
                        error: None,
                    };
                    match recording.lock() {
                        Ok(mut slot) => {
                            *slot = Some(r);
                            "ok".to_string()
                        }
                        Err(_) => "error recording lock".to_string(),
                    }
                }
                Err(e) => format!("error {path}: {e}"),
            },
            ["stop"] => match recording.lock().ok().and_then(|mut slot| slot.take()) {
                Some(mut r) => match (r.error.take(), r.out.flush()) {
                    (None, Ok(())) => format!("ok datagrams={}", r.datagrams),
                    (Some(e), _) | (None, Err(e)) => format!("error writing: {e}"),
                },
                None => "error not recording".to_string(),
            },
            _ => format!("error unknown command {line:?}"),
        };
        println!("{reply}");
    }
    Ok(())
}

/// The datagrams of a capture file.
fn read_capture(path: &Path) -> anyhow::Result<Vec<Vec<u8>>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = Vec::new();
    let mut rest = bytes.as_slice();
    while !rest.is_empty() {
        let (len, tail) = rest
            .split_first_chunk::<4>()
            .context("capture file cut in a length")?;
        let len = usize::try_from(u32::from_be_bytes(*len))?;
        anyhow::ensure!(tail.len() >= len, "capture file cut in a datagram");
        let (d, tail) = tail.split_at(len);
        out.push(d.to_vec());
        rest = tail;
    }
    Ok(out)
}

async fn replay(target: SocketAddr, file: &Path, rate: u64) -> anyhow::Result<()> {
    let datagrams = read_capture(file)?;
    let started = Instant::now();
    let (sent, errors) = send_paced(target, datagrams.len() as u64, rate, 1, |n| {
        (datagrams[n as usize].clone(), 0)
    })
    .await?;
    println!(
        "ok sent={} errors={errors} seconds={:.2}",
        sent[0],
        started.elapsed().as_secs_f64()
    );
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
        let now = unix_now();
        for n in 0..300 {
            assert!(!matches!(
                wire::check(&random_datagram(&mut rng)),
                Ok(_) | Err(protocol::error::Reject::Crc)
            ));
            assert_eq!(
                wire::check(&bad_crc_datagram(&mut rng)),
                Err(protocol::error::Reject::Crc)
            );
            let (d, label) = garbage_datagram(Kind::Forged, &mut rng, n);
            let h = wire::check(&d).expect("a forged datagram is well-formed");
            let epoch = protocol::epoch::epoch_of(h.session);
            match label {
                2 => assert!(!h.is_authenticated()),
                3 => assert!(h.is_authenticated() && epoch < now - 86_000),
                4 => assert!(h.is_authenticated() && epoch > now + 86_000),
                other => panic!("label {other}"),
            }
            for kind in [Kind::NewSession, Kind::NewSessionAuth] {
                let (d, _) = garbage_datagram(kind, &mut rng, n);
                let h = wire::check(&d).expect("a new session's datagram is well-formed");
                assert_eq!(h.is_authenticated(), kind == Kind::NewSessionAuth);
                assert!(protocol::epoch::epoch_of(h.session) > now + 86_000);
            }
        }
    }

    #[test]
    fn a_capture_holds_the_transmitters_datagrams_only() {
        let from = Ipv4Addr::new(198, 18, 0, 1);
        let packet = |src: Ipv4Addr, dport: u16, payload: &[u8]| {
            let mut p = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0];
            p.extend_from_slice(&src.octets());
            p.extend_from_slice(&[198, 18, 0, 2]);
            let udp_len = 8 + payload.len() as u16;
            p.extend_from_slice(&40000u16.to_be_bytes());
            p.extend_from_slice(&dport.to_be_bytes());
            p.extend_from_slice(&udp_len.to_be_bytes());
            p.extend_from_slice(&[0, 0]);
            p.extend_from_slice(payload);
            let total = p.len() as u16;
            p[2..4].copy_from_slice(&total.to_be_bytes());
            // Trailing bytes past the IP length (Ethernet padding) are not the datagram's.
            p.extend_from_slice(&[0xEE; 6]);
            p
        };
        assert_eq!(
            link_datagram(&packet(from, 5600, b"DDGW abc"), from, 5600),
            Some(&b"DDGW abc"[..])
        );
        assert_eq!(link_datagram(&packet(from, 5601, b"x"), from, 5600), None);
        let other = Ipv4Addr::new(198, 18, 1, 2);
        assert_eq!(link_datagram(&packet(other, 5600, b"x"), from, 5600), None);

        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("capture");
        let mut r = Recording {
            out: std::io::BufWriter::new(std::fs::File::create(&path).expect("create")),
            datagrams: 0,
            error: None,
        };
        r.add(b"one");
        r.add(b"");
        r.add(&[7u8; 1400]);
        r.out.flush().expect("flush");
        assert_eq!(r.datagrams, 3);
        let back = read_capture(&path).expect("read back");
        assert_eq!(back, vec![b"one".to_vec(), Vec::new(), vec![7u8; 1400]]);
    }
}
