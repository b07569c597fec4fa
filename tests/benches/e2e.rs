//! End-to-end benchmark of the gateway, reported as ratios against a plain UDP blast measured
//! in the same run (DESIGN.md: benchmarks report ratios, not absolute figures checked by
//! timed tests).
//!
//! `cargo bench -p tests --bench e2e` measures, in one run:
//!
//! 1. **Baseline**: a plain UDP blast over 127.0.0.1, one `send` and one `recv` per 1400-byte
//!    datagram, one thread each.
//! 2. **Protocol only**: `Encoder` → `Decoder` in memory (no sockets) at the default FEC shape,
//!    datagrams full of live sample batches, with and without a key, without and with 5 % loss.
//! 3. **End to end**: a synthetic tag table driven by a thread, the real `LinkSender` over
//!    loopback UDP to the real `Receiver`: samples/s, the datagram rate they need, latency
//!    from the update at TX to the apply at RX, and CPU per thread.
//! 4. **Delivery under loss**: the same chain through `tests::relay::Relay` dropping 0, 1 and
//!    5 % of datagrams at random.
//!
//! It prints a table and writes `target/bench/e2e.json` so runs can be compared. Set
//! `E2E_QUICK=1` for a shorter run with shorter windows (for trying changes, not for figures),
//! and `E2E_ONLY=text` to run only the end-to-end scenarios whose label contains `text`.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use config::rx::RxConfig;
use config::tx::TxConfig;
use gateway_rx::Receiver;
use gateway_tx::link::{LinkSender, SharedEncoderStats, batches};
use gateway_tx::tags::{TagTable, Update};
use protocol::decoder::{Decoder, DecoderConfig, DecoderStats, Event};
use protocol::encoder::{
    DEFAULT_DATA_SHARDS, DEFAULT_FLUSH, DEFAULT_INTERLEAVE, DEFAULT_MAX_DATAGRAM,
    DEFAULT_REPAIR_SHARDS, Encoder, EncoderConfig,
};
use protocol::message::{Message, SampleBatch, Stream};
use protocol::model::{Quality, Sample, SourceAddress, TagInfo, Value, ValueType};
use protocol::stats::EncoderStats;
use tests::blast::{BlastResult, blast};
use tests::relay::{Impairments, Relay, RelayCounters};

const BLAST_PAYLOAD: usize = 1400;
const KEY: [u8; 32] = [0x5a; 32];
/// Latency reads of the receiver's state per millisecond during a window.
const LATENCY_READS_PER_MS: usize = 4;
const LATENCY_MAX_SAMPLES: usize = 20_000;
/// Link rate for the end-to-end runs: high enough that the pacer is not the limit.
const FAST_RATE_MBIT: f64 = 10_000.0;

struct Timing {
    blast: Duration,
    protocol: Duration,
    warmup: Duration,
    window: Duration,
    loss_window: Duration,
}

impl Timing {
    fn get() -> Timing {
        if std::env::var_os("E2E_QUICK").is_some_and(|v| v != "0") {
            Timing {
                blast: Duration::from_millis(500),
                protocol: Duration::from_millis(300),
                warmup: Duration::from_millis(200),
                window: Duration::from_millis(800),
                loss_window: Duration::from_secs(1),
            }
        } else {
            Timing {
                blast: Duration::from_secs(2),
                protocol: Duration::from_secs(1),
                warmup: Duration::from_millis(500),
                window: Duration::from_secs(3),
                loss_window: Duration::from_secs(5),
            }
        }
    }
}

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; a filter word is not supported, everything runs.
    let timing = Timing::get();
    let started = Instant::now();
    let mut out = String::new();
    let mut json = Obj::default();

    let recv_buffer = config::rx::limits::RECV_BUFFER_BYTES_DEFAULT;
    eprintln!("e2e: UDP blast baseline ...");
    let b = blast(BLAST_PAYLOAD, timing.blast, recv_buffer).context("UDP blast")?;
    print_blast(&mut out, &b);
    json.obj("baseline_udp_blast", blast_json(&b));
    let blast_dps = b.datagrams_per_sec();
    let blast_gbps = b.gbit_per_sec();

    eprintln!("e2e: protocol only ...");
    let mut protos = Vec::new();
    for key in [false, true] {
        for loss in [0.0, 0.05] {
            protos.push(protocol_only(key, loss, timing.protocol));
        }
    }
    print_protocol(&mut out, &protos, blast_gbps);
    json.arr(
        "protocol_only",
        protos.iter().map(|p| proto_json(p, blast_gbps)).collect(),
    );
    let proto_samples_per_s = protos[0].samples_per_sec();

    let e2e_runs = [
        Scenario::new(10_000, Drive::Saturate),
        Scenario::new(100_000, Drive::Saturate),
        Scenario::new(10_000, Drive::Rate(10_000.0)),
        Scenario::new(10_000, Drive::Rate(100_000.0)),
        Scenario::new(100_000, Drive::Rate(10_000.0)),
        Scenario::new(100_000, Drive::Rate(100_000.0)),
        Scenario {
            rate_mbit: 100.0,
            ..Scenario::new(10_000, Drive::Saturate)
        },
        Scenario {
            rate_mbit: 1_000.0,
            ..Scenario::new(10_000, Drive::Saturate)
        },
    ];
    let mut e2e = Vec::new();
    for (i, s) in e2e_runs.iter().enumerate() {
        if !selected(s) {
            continue;
        }
        eprintln!("e2e: end to end {} ...", s.label());
        e2e.push(run_e2e(s, &timing, i as u64).with_context(|| s.label())?);
    }
    print_e2e(&mut out, &e2e, blast_dps, proto_samples_per_s);
    json.arr(
        "end_to_end",
        e2e.iter()
            .map(|r| e2e_json(r, blast_dps, proto_samples_per_s))
            .collect(),
    );

    let mut lossy = Vec::new();
    // The three the target is about, then one diagnostic: 5 % with a longer flush, so that FEC
    // groups are not cut short by the timer.
    for (i, (loss, flush_ms)) in [(0.0, None), (0.01, None), (0.05, None), (0.05, Some(100))]
        .into_iter()
        .enumerate()
    {
        let s = Scenario {
            loss: Some(loss),
            window: Some(timing.loss_window),
            rate_mbit: config::tx::limits::RATE_MBIT_DEFAULT,
            flush_ms,
            ..Scenario::new(10_000, Drive::Rate(50_000.0))
        };
        if !selected(&s) {
            continue;
        }
        eprintln!("e2e: delivery under loss {} ...", s.label());
        lossy.push(run_e2e(&s, &timing, 100 + i as u64).with_context(|| s.label())?);
    }
    print_loss(&mut out, &lossy);
    json.arr(
        "delivery_under_loss",
        lossy
            .iter()
            .map(|r| e2e_json(r, blast_dps, proto_samples_per_s))
            .collect(),
    );

    let _ = writeln!(
        out,
        "\nwhole bench: {:.1} s on {} CPUs",
        started.elapsed().as_secs_f64(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    print!("{out}");

    json.num("total_seconds", started.elapsed().as_secs_f64());
    json.int(
        "cpus",
        std::thread::available_parallelism().map_or(0, |n| n.get() as u64),
    );
    json.int(
        "unix_time",
        u64::try_from(gateway_tx::unix_now() / 1_000_000_000).unwrap_or(0),
    );
    let path = json_path();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&path, json.render(0) + "\n")
        .with_context(|| format!("writing {}", path.display()))?;
    println!("JSON written to {}", path.display());

    let failed: Vec<String> = lossy
        .iter()
        .filter(|r| r.scenario.loss.is_some_and(|l| l > 0.0) && r.scenario.flush_ms.is_none())
        .filter(|r| !r.delivery_target_met())
        .map(|r| r.scenario.label())
        .collect();
    if !failed.is_empty() {
        println!("DELIVERY TARGET MISSED (100 % delivered, 0 corrupted): {failed:?}");
    }
    Ok(())
}

/// `E2E_ONLY=text` runs only the end-to-end scenarios whose label contains `text` (the
/// baseline and protocol-only figures always run: the ratios need them).
fn selected(s: &Scenario) -> bool {
    std::env::var("E2E_ONLY").map_or(true, |only| s.label().contains(&only))
}

/// `target/bench/e2e.json` in the workspace's target directory.
fn json_path() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .unwrap_or(Path::new("."))
                .join("target")
        });
    target.join("bench").join("e2e.json")
}

// ------------------------------------------------------------------------------------------
// 1. Baseline

fn print_blast(out: &mut String, b: &BlastResult) {
    let _ = writeln!(
        out,
        "\n== 1. Baseline: plain UDP blast over 127.0.0.1 ({} B datagrams, one send / one recv each, {:.1} s)",
        b.payload,
        b.send_time.as_secs_f64()
    );
    let _ = writeln!(
        out,
        "  sent {:>10.0} datagrams/s   received {:>10.0} datagrams/s   {:>6.3} Gb/s payload   loss {:>5.1} %",
        b.sent_per_sec(),
        b.datagrams_per_sec(),
        b.gbit_per_sec(),
        b.loss() * 100.0
    );
}

fn blast_json(b: &BlastResult) -> Obj {
    let mut o = Obj::default();
    o.int("payload_bytes", b.payload as u64);
    o.int("sent", b.sent);
    o.int("send_errors", b.send_errors);
    o.int("received", b.received);
    o.num("seconds", b.send_time.as_secs_f64());
    o.num("sent_per_s", b.sent_per_sec());
    o.num("datagrams_per_s", b.datagrams_per_sec());
    o.num("gbit_per_s", b.gbit_per_sec());
    o.num("loss", b.loss());
    o
}

// ------------------------------------------------------------------------------------------
// 2. Protocol only

struct ProtoResult {
    key: bool,
    loss: f64,
    rounds: u64,
    /// Bytes of all datagrams produced (data and repair).
    bytes: u64,
    datagrams: u64,
    data_datagrams: u64,
    dropped: u64,
    messages: u64,
    live_body_bytes: u64,
    samples_sent: u64,
    samples_delivered: u64,
    encode: Duration,
    decode: Duration,
    stats: DecoderStats,
}

impl ProtoResult {
    fn encode_gbps(&self) -> f64 {
        gbps(self.bytes, self.encode)
    }
    fn decode_gbps(&self) -> f64 {
        gbps(self.bytes, self.decode)
    }
    fn both_gbps(&self) -> f64 {
        gbps(self.bytes, self.encode + self.decode)
    }
    fn samples_per_sec(&self) -> f64 {
        self.samples_delivered as f64 / (self.encode + self.decode).as_secs_f64().max(1e-9)
    }
    fn label(&self) -> String {
        format!(
            "{}, {:.0} % loss",
            if self.key { "AES-GCM key" } else { "no key" },
            self.loss * 100.0
        )
    }
}

fn gbps(bytes: u64, t: Duration) -> f64 {
    bytes as f64 * 8.0 / t.as_secs_f64().max(1e-9) / 1e9
}

/// Live batches as the link sender makes them: sized with its own batching to one datagram.
fn proto_messages(body_budget: usize, count: usize) -> Vec<Message> {
    let base = gateway_tx::unix_now();
    let mut out = Vec::new();
    let mut i = 0u32;
    while out.len() < count {
        let samples: Vec<Sample> = (0..4096)
            .map(|_| {
                i = i.wrapping_add(1);
                Sample {
                    tag: i % 100_000,
                    value: Value::Double(f64::from(i) * 0.25),
                    quality: Quality::GOOD,
                    time: base + i64::from(i) * 1000,
                }
            })
            .collect();
        for b in batches(samples, body_budget) {
            out.push(Message::Live(SampleBatch {
                catalogue: 0x0123_4567_89ab_cdef,
                samples: b,
            }));
        }
    }
    out.truncate(count);
    out
}

/// Encoder → Decoder in memory, in rounds of a fresh session each, until `budget` of encode
/// plus decode time is spent. The datagrams of a round are kept in one arena between the two
/// halves; `loss` of them are dropped (at random) before decoding.
fn protocol_only(key: bool, loss: f64, budget: Duration) -> ProtoResult {
    const MESSAGES_PER_ROUND: usize = 4096;
    let config = EncoderConfig {
        key: key.then_some(KEY),
        ..EncoderConfig::default()
    };
    let probe = Encoder::new(config.clone(), 1).expect("default encoder shape");
    let messages = proto_messages(probe.max_unfragmented_body(), MESSAGES_PER_ROUND);
    let max = probe.max_datagram();
    let mut r = ProtoResult {
        key,
        loss,
        rounds: 0,
        bytes: 0,
        datagrams: 0,
        data_datagrams: 0,
        dropped: 0,
        messages: 0,
        live_body_bytes: 0,
        samples_sent: 0,
        samples_delivered: 0,
        encode: Duration::ZERO,
        decode: Duration::ZERO,
        stats: DecoderStats::default(),
    };
    let mut arena: Vec<u8> = Vec::with_capacity(MESSAGES_PER_ROUND * 2 * max);
    let mut spans: Vec<(usize, usize)> = Vec::with_capacity(MESSAGES_PER_ROUND * 2);
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15 ^ u64::from(key));
    let samples_per_round: u64 = messages
        .iter()
        .map(|m| match m {
            Message::Live(b) => b.samples.len() as u64,
            _ => 0,
        })
        .sum();
    while r.encode + r.decode < budget {
        r.rounds += 1;
        arena.clear();
        spans.clear();
        let t = Instant::now();
        let mut enc = Encoder::new(config.clone(), r.rounds).expect("default encoder shape");
        for m in &messages {
            enc.push(m, t).expect("encodable message");
            drain(&mut enc, &mut arena, &mut spans, max);
        }
        enc.flush(t);
        drain(&mut enc, &mut arena, &mut spans, max);
        r.encode += t.elapsed();
        let s: &EncoderStats = enc.stats();
        r.bytes += s.bytes;
        r.datagrams += s.datagrams;
        r.data_datagrams += s.data_datagrams;
        r.messages += s.messages(Stream::Live);
        r.live_body_bytes += s.message_bytes[Stream::Live as usize];
        r.samples_sent += samples_per_round;

        // Which datagrams the "link" drops, decided before the clock starts.
        let keep: Vec<bool> = spans.iter().map(|_| !rng.chance(loss)).collect();
        r.dropped += keep.iter().filter(|k| !**k).count() as u64;
        let t = Instant::now();
        let mut dec = Decoder::new(DecoderConfig {
            key: key.then_some(KEY),
            ..DecoderConfig::default()
        });
        for (&(at, n), keep) in spans.iter().zip(&keep) {
            if *keep {
                dec.handle_datagram(&arena[at..at + n], Instant::now());
                r.samples_delivered += drain_events(&mut dec);
            }
        }
        dec.handle_timeout(Instant::now() + Duration::from_secs(10));
        r.samples_delivered += drain_events(&mut dec);
        r.decode += t.elapsed();
        add_decoder_stats(&mut r.stats, dec.stats());
    }
    r
}

fn drain(enc: &mut Encoder, arena: &mut Vec<u8>, spans: &mut Vec<(usize, usize)>, max: usize) {
    loop {
        let at = arena.len();
        arena.resize(at + max, 0);
        match enc.poll_transmit(&mut arena[at..]) {
            Some(n) => {
                arena.truncate(at + n);
                spans.push((at, n));
            }
            None => {
                arena.truncate(at);
                return;
            }
        }
    }
}

/// Samples delivered in the events queued so far.
fn drain_events(dec: &mut Decoder) -> u64 {
    let mut n = 0;
    while let Some(e) = dec.poll_event() {
        if let Event::Message {
            message: Message::Live(b),
            ..
        } = e
        {
            n += b.samples.len() as u64;
        }
    }
    n
}

fn add_decoder_stats(sum: &mut DecoderStats, s: &DecoderStats) {
    sum.datagrams_received += s.datagrams_received;
    sum.datagrams_repaired += s.datagrams_repaired;
    sum.data_datagrams_lost += s.data_datagrams_lost;
    sum.crc_failures += s.crc_failures;
    sum.auth_failures += s.auth_failures;
    for i in 0..4 {
        sum.messages_delivered[i] += s.messages_delivered[i];
        sum.messages_lost[i] += s.messages_lost[i];
    }
}

fn print_protocol(out: &mut String, ps: &[ProtoResult], blast_gbps: f64) {
    let Some(first) = ps.first() else { return };
    let cfg = EncoderConfig::default();
    let _ = writeln!(
        out,
        "\n== 2. Protocol only: Encoder -> Decoder in memory, one thread (FEC {}+{}, interleave {}, {} B datagrams, {} rounds of {} live batches)",
        DEFAULT_DATA_SHARDS,
        DEFAULT_REPAIR_SHARDS,
        DEFAULT_INTERLEAVE,
        cfg.max_datagram,
        first.rounds,
        first.messages / first.rounds.max(1)
    );
    let _ = writeln!(
        out,
        "  {:<22} {:>9} {:>9} {:>9} {:>8} {:>12} {:>9} {:>9} {:>9} {:>8}",
        "",
        "enc Gb/s",
        "dec Gb/s",
        "both Gb/s",
        "x blast",
        "samples/s",
        "smp/dgram",
        "fill %",
        "repaired",
        "lost msg"
    );
    for p in ps {
        let _ = writeln!(
            out,
            "  {:<22} {:>9.2} {:>9.2} {:>9.2} {:>8.2} {:>12.0} {:>9.1} {:>9.1} {:>9} {:>8}",
            p.label(),
            p.encode_gbps(),
            p.decode_gbps(),
            p.both_gbps(),
            p.both_gbps() / blast_gbps,
            p.samples_per_sec(),
            p.samples_sent as f64 / p.data_datagrams.max(1) as f64,
            fill(p),
            p.stats.datagrams_repaired,
            p.stats.messages_lost[Stream::Live as usize],
        );
    }
    let _ = writeln!(
        out,
        "  (Gb/s counts every datagram byte, data and repair; \"x blast\" is encode+decode Gb/s / the blast's Gb/s;\n   fill % is live message bytes / data datagram bytes; samples/s counts samples delivered by the decoder)"
    );
}

/// Message bytes as a share of data datagram bytes: how full the datagrams are.
fn fill(p: &ProtoResult) -> f64 {
    let data_bytes = p.data_datagrams as f64 * DEFAULT_MAX_DATAGRAM as f64;
    100.0 * p.live_body_bytes as f64 / data_bytes.max(1.0)
}

fn proto_json(p: &ProtoResult, blast_gbps: f64) -> Obj {
    let mut o = Obj::default();
    o.bool("key", p.key);
    o.num("loss", p.loss);
    o.int("rounds", p.rounds);
    o.int("datagrams", p.datagrams);
    o.int("data_datagrams", p.data_datagrams);
    o.int("dropped", p.dropped);
    o.int("bytes", p.bytes);
    o.int("messages", p.messages);
    o.int("samples_sent", p.samples_sent);
    o.int("samples_delivered", p.samples_delivered);
    o.num("encode_s", p.encode.as_secs_f64());
    o.num("decode_s", p.decode.as_secs_f64());
    o.num("encode_gbit_per_s", p.encode_gbps());
    o.num("decode_gbit_per_s", p.decode_gbps());
    o.num("encode_decode_gbit_per_s", p.both_gbps());
    o.num("ratio_to_blast_gbit", p.both_gbps() / blast_gbps);
    o.num("samples_per_s", p.samples_per_sec());
    o.num(
        "samples_per_data_datagram",
        p.samples_sent as f64 / p.data_datagrams.max(1) as f64,
    );
    o.num("datagram_fill_percent", fill(p));
    o.int("datagrams_repaired", p.stats.datagrams_repaired);
    o.int("data_datagrams_lost", p.stats.data_datagrams_lost);
    o.int(
        "live_messages_lost",
        p.stats.messages_lost[Stream::Live as usize],
    );
    o
}

// ------------------------------------------------------------------------------------------
// 3 and 4. End to end

#[derive(Debug, Clone, Copy, PartialEq)]
enum Drive {
    /// Keeps the change queue at least half full: every tag changes as fast as TX takes them.
    Saturate,
    /// Updates tags round-robin at this many samples/s, in batches once a millisecond.
    Rate(f64),
}

#[derive(Debug, Clone)]
struct Scenario {
    tags: usize,
    drive: Drive,
    rate_mbit: f64,
    /// Through the impairment relay with this random loss.
    loss: Option<f64>,
    window: Option<Duration>,
    /// `[link.fec] flush_ms` when not the default.
    flush_ms: Option<u64>,
}

impl Scenario {
    fn new(tags: usize, drive: Drive) -> Scenario {
        Scenario {
            tags,
            drive,
            rate_mbit: FAST_RATE_MBIT,
            loss: None,
            window: None,
            flush_ms: None,
        }
    }

    fn label(&self) -> String {
        let drive = match self.drive {
            Drive::Saturate => "max".to_string(),
            Drive::Rate(r) => format!("{}k/s", r / 1000.0),
        };
        let mut s = format!("{}k tags {drive}", self.tags / 1000);
        if self.rate_mbit != FAST_RATE_MBIT {
            let _ = write!(s, " @{} Mb/s", self.rate_mbit);
        }
        if let Some(l) = self.loss {
            let _ = write!(s, " relay {:.0}% loss", l * 100.0);
        }
        if let Some(f) = self.flush_ms {
            let _ = write!(s, " flush {f} ms");
        }
        s
    }
}

/// Counters at one instant.
#[derive(Debug, Clone, Default)]
struct Mark {
    at: Option<Instant>,
    updates: u64,
    superseded: u64,
    pending: u64,
    applied: u64,
    enc: EncoderStats,
    dec: DecoderStats,
    cpu: HashMap<String, u64>,
}

struct E2eResult {
    scenario: Scenario,
    window: Duration,
    tx_samples: u64,
    superseded: u64,
    rx_applied: u64,
    /// Window deltas.
    enc: EncoderStats,
    dec: DecoderStats,
    /// Totals after the drain.
    enc_total: EncoderStats,
    dec_total: DecoderStats,
    relay_received: u64,
    relay_dropped: u64,
    latency_ns: Vec<i64>,
    cpu_percent: Vec<(String, f64)>,
    /// Tags whose value at RX differs from TX after the drain.
    mismatched: usize,
    tags_without_value: usize,
    catalogue_time: Duration,
    /// Earlier attempts whose catalogue did not arrive.
    catalogue_failures: Vec<String>,
}

impl E2eResult {
    fn per_s(&self, n: u64) -> f64 {
        n as f64 / self.window.as_secs_f64()
    }
    fn live_sent(&self) -> u64 {
        self.enc_total.messages(Stream::Live)
    }
    fn live_delivered(&self) -> u64 {
        self.dec_total.delivered(Stream::Live)
    }
    fn live_lost(&self) -> u64 {
        self.dec_total.lost(Stream::Live)
    }
    fn delivered_percent(&self) -> f64 {
        100.0 * self.live_delivered() as f64 / self.live_sent().max(1) as f64
    }
    /// Configured-rate check: bits on the wire (with IP and UDP headers) per second.
    fn wire_mbit(&self) -> f64 {
        let bytes = self.enc.bytes + 28 * self.enc.datagrams;
        bytes as f64 * 8.0 / self.window.as_secs_f64() / 1e6
    }
    fn data_per_group(&self) -> f64 {
        self.enc_total.data_datagrams as f64 / self.enc_total.groups.max(1) as f64
    }
    fn repair_percent(&self) -> f64 {
        100.0 * self.enc_total.repair_datagrams as f64 / self.enc_total.data_datagrams.max(1) as f64
    }
    fn delivery_target_met(&self) -> bool {
        self.live_delivered() == self.live_sent()
            && self.live_lost() == 0
            && self.dec_total.crc_failures == 0
            && self.dec_total.auth_failures == 0
            && self.mismatched == 0
    }
    fn percentile_ms(&self, p: f64) -> f64 {
        if self.latency_ns.is_empty() {
            return f64::NAN;
        }
        let i = ((self.latency_ns.len() - 1) as f64 * p).round() as usize;
        self.latency_ns[i] as f64 / 1e6
    }
    fn cpu(&self, name: &str) -> f64 {
        self.cpu_percent
            .iter()
            .find(|(n, _)| n == name)
            .map_or(0.0, |(_, c)| *c)
    }
}

fn runtime(name: &str) -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(name)
        .enable_all()
        .build()
        .with_context(|| format!("building the {name} runtime"))
}

fn synthetic_tags(n: usize) -> Vec<TagInfo> {
    (0..n)
        .map(|i| TagInfo {
            name: format!("bench/area{}/line{}/tag{i}", i / 10_000, (i / 100) % 100),
            value_type: ValueType::Double,
            unit: "m3/h".into(),
            description: String::new(),
            source: SourceAddress::Other(format!("synthetic:{i}")),
        })
        .collect()
}

/// How long a run waits for the catalogue before it starts over.
const CATALOGUE_WAIT: Duration = Duration::from_secs(3);
const ATTEMPTS: u64 = 3;

/// Runs one scenario, starting over (at most [`ATTEMPTS`] times) when the catalogue does not
/// arrive; each such failure is kept in the result.
fn run_e2e(s: &Scenario, timing: &Timing, run: u64) -> anyhow::Result<E2eResult> {
    let mut failures = Vec::new();
    for attempt in 0..ATTEMPTS {
        match run_once(s, timing, run * ATTEMPTS + attempt)? {
            Ok(mut r) => {
                r.catalogue_failures = failures;
                return Ok(r);
            }
            Err(why) => {
                eprintln!("e2e:   {why}; starting over");
                failures.push(why);
            }
        }
    }
    bail!("{}", failures.join("; "))
}

/// One run: a fresh receiver, relay (if any) and link sender, each on its own one-worker
/// runtime (as they would be separate processes), and a driver thread. The inner error is a
/// catalogue that did not arrive.
fn run_once(s: &Scenario, timing: &Timing, run: u64) -> anyhow::Result<Result<E2eResult, String>> {
    let udp_errors_at_start = udp_errors();
    let rx_rt = runtime("rx-rt")?;
    let tx_rt = runtime("tx-rt")?;
    let relay_rt = runtime("relay-rt")?;

    let rx_toml = format!(
        "[link]\nbind = \"127.0.0.1:{}\"\n\n[status]\nlog_interval_s = 3600\n",
        tests::free_udp_port()?
    );
    let rx_config = RxConfig::parse(&rx_toml, Path::new("bench/gateway-rx.toml"))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let rx = rx_rt.block_on(Receiver::start(rx_config))?;

    let relay = match s.loss {
        Some(loss) => Some(relay_rt.block_on(Relay::start(
            rx.link_addr,
            Impairments {
                loss,
                ..Impairments::default()
            },
            0x5eed ^ run,
        ))?),
        None => None,
    };
    let destination = relay.as_ref().map_or(rx.link_addr, |r| r.listen);
    let mut tx_toml = format!(
        "[link]\ndestination = \"{destination}\"\nrate_mbit = {}\n",
        s.rate_mbit
    );
    if let Some(f) = s.flush_ms {
        let _ = write!(tx_toml, "\n[link.fec]\nflush_ms = {f}\n");
    }
    let tx_config = TxConfig::parse(&tx_toml, Path::new("bench/gateway-tx.toml"))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let fec = tx_config.link.fec;
    if (
        fec.data_shards,
        fec.repair_shards,
        fec.interleave,
        s.flush_ms.is_some() || fec.flush == DEFAULT_FLUSH,
    ) != (
        DEFAULT_DATA_SHARDS,
        DEFAULT_REPAIR_SHARDS,
        DEFAULT_INTERLEAVE,
        true,
    ) {
        bail!("the config's default FEC shape {fec:?} is not the protocol's");
    }

    let table = Arc::new(TagTable::new(synthetic_tags(s.tags), vec![0.0; s.tags]));
    let session = (gateway_tx::unix_now() as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ run;
    let sender = tx_rt.block_on(LinkSender::new(
        tx_config.link.clone(),
        tx_config.config_hash,
        table.clone(),
        Arc::new(Vec::new),
        session,
    ))?;
    let enc_stats = sender.encoder_stats();
    let link = tx_rt.spawn(sender.run());

    // The catalogue first: samples of an unknown catalogue are not applied.
    let t = Instant::now();
    while rx.state.tag_count() != s.tags {
        if t.elapsed() > CATALOGUE_WAIT {
            // It would come again after the catalogue interval (30 s); start over instead.
            let d = rx.stats();
            let e = enc_stats.lock().map(|e| e.clone()).unwrap_or_default();
            let relayed = relay.as_ref().map_or(String::new(), |r| {
                format!(
                    ", relay received {}",
                    RelayCounters::get(&r.counters.received)
                )
            });
            link.abort();
            let k = udp_errors();
            return Ok(Err(format!(
                "catalogue of {} tags incomplete after {} s: TX sent {} datagrams{relayed}, RX received {}, data datagrams lost {}, repaired {}, control messages lost {}; kernel UDP RcvbufErrors +{} SndbufErrors +{} meanwhile (whole network namespace)",
                s.tags,
                CATALOGUE_WAIT.as_secs(),
                e.datagrams,
                d.datagrams_received,
                d.data_datagrams_lost,
                d.datagrams_repaired,
                d.messages_lost[Stream::Control as usize],
                k.0.saturating_sub(udp_errors_at_start.0),
                k.1.saturating_sub(udp_errors_at_start.1),
            )));
        }
        if link.is_finished() {
            bail!("the link sender stopped");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let catalogue_time = t.elapsed();

    let stop = Arc::new(AtomicBool::new(false));
    let updates = Arc::new(AtomicU64::new(0));
    let driver = {
        let (table, stop, updates, drive, n) = (
            table.clone(),
            stop.clone(),
            updates.clone(),
            s.drive,
            s.tags,
        );
        std::thread::Builder::new()
            .name("driver".into())
            .spawn(move || drive_tags(&table, n, drive, &stop, &updates))?
    };

    std::thread::sleep(timing.warmup);
    let mark = |at| Mark {
        at: Some(at),
        updates: updates.load(Ordering::Relaxed),
        superseded: table.superseded(),
        pending: table.pending_changes() as u64,
        applied: rx.state.counters().samples_applied,
        enc: enc_stats.lock().map(|e| e.clone()).unwrap_or_default(),
        dec: rx.stats(),
        cpu: thread_cpu_ticks(),
    };
    let m0 = mark(Instant::now());
    let window = s.window.unwrap_or(timing.window);
    let latency_ns = sample_latency(&rx, s.tags, window, gateway_tx::unix_now(), run);
    let m1 = mark(Instant::now());

    stop.store(true, Ordering::Relaxed);
    let _ = driver.join();
    // Drain: TX's queue, then the flush timer, FEC group timeout and RX's socket backlog.
    let t = Instant::now();
    while table.pending_changes() > 0 && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(2));
    }
    let settled = |rx: &Receiver, enc: &SharedEncoderStats| {
        let sent = enc.lock().map(|e| e.messages(Stream::Live)).unwrap_or(0);
        let d = rx.stats();
        d.delivered(Stream::Live) + d.lost(Stream::Live) >= sent
    };
    std::thread::sleep(Duration::from_millis(250));
    let t = Instant::now();
    while !settled(&rx, &enc_stats) && t.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(10));
    }
    // One more publish of the decoder counters after the last message.
    std::thread::sleep(Duration::from_millis(150));
    let enc_total = enc_stats.lock().map(|e| e.clone()).unwrap_or_default();
    let dec_total = rx.stats();
    let (mismatched, tags_without_value) = compare_values(&table, &rx, s.tags);

    let (relay_received, relay_dropped) = relay.as_ref().map_or((0, 0), |r| {
        (
            RelayCounters::get(&r.counters.received),
            RelayCounters::get(&r.counters.dropped),
        )
    });
    if link.is_finished() {
        let r = tx_rt.block_on(link);
        bail!("the link sender stopped: {r:?}");
    }
    link.abort();
    drop(relay);
    drop(rx);
    tx_rt.shutdown_timeout(Duration::from_secs(1));
    relay_rt.shutdown_timeout(Duration::from_secs(1));
    rx_rt.shutdown_timeout(Duration::from_secs(1));

    let elapsed = m1.at.zip(m0.at).map_or(window, |(a, b)| a - b);
    let updates_d = m1.updates - m0.updates;
    let superseded = m1.superseded - m0.superseded;
    // Every update changes the value, so each either queued its tag or superseded a queued
    // value; what was queued and is no longer pending was taken by the link sender.
    let tx_samples = (updates_d - superseded) as i64 - (m1.pending as i64 - m0.pending as i64);
    let mut cpu_percent: Vec<(String, f64)> = m1
        .cpu
        .iter()
        .map(|(name, t1)| {
            let t0 = m0.cpu.get(name).copied().unwrap_or(0);
            let secs = (t1 - t0.min(*t1)) as f64 / CLOCK_TICKS_PER_SEC;
            (name.clone(), 100.0 * secs / elapsed.as_secs_f64())
        })
        .collect();
    cpu_percent.sort_by(|a, b| b.1.total_cmp(&a.1));

    Ok(Ok(E2eResult {
        scenario: s.clone(),
        window: elapsed,
        tx_samples: tx_samples.max(0) as u64,
        superseded,
        rx_applied: m1.applied - m0.applied,
        enc: enc_delta(&m1.enc, &m0.enc),
        dec: dec_delta(&m1.dec, &m0.dec),
        enc_total,
        dec_total,
        relay_received,
        relay_dropped,
        latency_ns,
        cpu_percent,
        mismatched,
        tags_without_value,
        catalogue_time,
        catalogue_failures: Vec::new(),
    }))
}

fn drive_tags(table: &TagTable, n: usize, drive: Drive, stop: &AtomicBool, updates: &AtomicU64) {
    let mut next_tag = 0usize;
    let mut seq = 0u64;
    let mut batch = Vec::new();
    let mut make = |count: usize, batch: &mut Vec<Update>| {
        batch.clear();
        let time = gateway_tx::unix_now();
        for _ in 0..count {
            seq += 1;
            batch.push(Update {
                tag: next_tag as u32,
                value: Some(Value::Double(seq as f64)),
                quality: Quality::GOOD,
                time,
            });
            next_tag = (next_tag + 1) % n;
        }
    };
    match drive {
        Drive::Saturate => {
            let chunk = (n / 8).clamp(1, 4096);
            while !stop.load(Ordering::Relaxed) {
                if table.pending_changes() < n / 2 {
                    make(chunk, &mut batch);
                    table.apply(batch.drain(..));
                    updates.fetch_add(chunk as u64, Ordering::Relaxed);
                } else {
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
        }
        Drive::Rate(rate) => {
            let start = Instant::now();
            let mut done = 0u64;
            let mut tick = start;
            while !stop.load(Ordering::Relaxed) {
                let due = (start.elapsed().as_secs_f64() * rate) as u64;
                if due > done {
                    // Never more than one round of the tags at once after a stall.
                    let count = ((due - done) as usize).min(n);
                    make(count, &mut batch);
                    table.apply(batch.drain(..));
                    updates.fetch_add(count as u64, Ordering::Relaxed);
                    done = due;
                }
                tick += Duration::from_millis(1);
                let now = Instant::now();
                if tick > now {
                    std::thread::sleep(tick - now);
                } else {
                    tick = now;
                }
            }
        }
    }
}

/// Reads random tags' values at RX during `window` and keeps, for each live sample seen once,
/// its latency: apply time at RX minus the source time the driver stamped at the update.
fn sample_latency(
    rx: &Receiver,
    n: usize,
    window: Duration,
    from: protocol::model::UnixNanos,
    seed: u64,
) -> Vec<i64> {
    let mut rng = XorShift(0xdead_beef_cafe ^ seed);
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    let end = Instant::now() + window;
    while Instant::now() < end {
        std::thread::sleep(Duration::from_millis(1));
        let view = rx.state.view();
        for _ in 0..LATENCY_READS_PER_MS {
            let tag = (rng.next() % n as u64) as u32;
            if let Some(v) = view.value(tag)
                && v.stream == Stream::Live
                && v.source_time >= from
                && out.len() < LATENCY_MAX_SAMPLES
                && seen.insert((tag, v.source_time))
            {
                out.push(v.received_at - v.source_time);
            }
        }
    }
    out.sort_unstable();
    out
}

/// Tags whose value or source time at RX differs from TX's current one, and tags RX has no
/// value for.
fn compare_values(table: &TagTable, rx: &Receiver, n: usize) -> (usize, usize) {
    let view = rx.state.view();
    let mut mismatched = 0;
    let mut missing = 0;
    for i in 0..n as u32 {
        let tx = table.current(i);
        match (tx, view.value(i)) {
            (None, None) => {}
            (Some(_), None) => missing += 1,
            (None, Some(_)) => mismatched += 1,
            (Some(t), Some(r)) => {
                if &t.value != r.value || t.time != r.source_time {
                    mismatched += 1;
                }
            }
        }
    }
    (mismatched, missing)
}

fn enc_delta(a: &EncoderStats, b: &EncoderStats) -> EncoderStats {
    let mut d = EncoderStats {
        datagrams: a.datagrams - b.datagrams,
        data_datagrams: a.data_datagrams - b.data_datagrams,
        repair_datagrams: a.repair_datagrams - b.repair_datagrams,
        bytes: a.bytes - b.bytes,
        fragmented_messages: a.fragmented_messages - b.fragmented_messages,
        groups: a.groups - b.groups,
        timer_flushes: a.timer_flushes - b.timer_flushes,
        fec_errors: a.fec_errors - b.fec_errors,
        ..EncoderStats::default()
    };
    for i in 0..4 {
        d.messages[i] = a.messages[i] - b.messages[i];
        d.message_bytes[i] = a.message_bytes[i] - b.message_bytes[i];
    }
    d
}

fn dec_delta(a: &DecoderStats, b: &DecoderStats) -> DecoderStats {
    let mut d = DecoderStats {
        datagrams_received: a.datagrams_received - b.datagrams_received,
        bytes_received: a.bytes_received - b.bytes_received,
        datagrams_accepted: a.datagrams_accepted - b.datagrams_accepted,
        crc_failures: a.crc_failures - b.crc_failures,
        auth_failures: a.auth_failures - b.auth_failures,
        duplicates: a.duplicates - b.duplicates,
        out_of_window: a.out_of_window - b.out_of_window,
        datagrams_missing: a.datagrams_missing - b.datagrams_missing,
        datagrams_repaired: a.datagrams_repaired - b.datagrams_repaired,
        groups_repaired: a.groups_repaired - b.groups_repaired,
        groups_lost: a.groups_lost - b.groups_lost,
        data_datagrams_lost: a.data_datagrams_lost - b.data_datagrams_lost,
        late: a.late - b.late,
        ..DecoderStats::default()
    };
    for i in 0..4 {
        d.messages_delivered[i] = a.messages_delivered[i] - b.messages_delivered[i];
        d.messages_lost[i] = a.messages_lost[i] - b.messages_lost[i];
    }
    d
}

/// The kernel's UDP (RcvbufErrors, SndbufErrors) counters from `/proc/net/snmp`, for the
/// whole network namespace.
fn udp_errors() -> (u64, u64) {
    let Ok(text) = std::fs::read_to_string("/proc/net/snmp") else {
        return (0, 0);
    };
    let mut lines = text.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
        return (0, 0);
    };
    let get = |name: &str| {
        names
            .split_whitespace()
            .position(|n| n == name)
            .and_then(|i| values.split_whitespace().nth(i))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (get("RcvbufErrors"), get("SndbufErrors"))
}

/// Linux reports thread CPU time in clock ticks of `sysconf(_SC_CLK_TCK)`, 100 on every
/// mainstream architecture.
const CLOCK_TICKS_PER_SEC: f64 = 100.0;

/// CPU time (user + system, clock ticks) of this process's threads, summed by thread name.
fn thread_cpu_ticks() -> HashMap<String, u64> {
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for task in dir.flatten() {
        let path = task.path();
        let (Ok(comm), Ok(stat)) = (
            std::fs::read_to_string(path.join("comm")),
            std::fs::read_to_string(path.join("stat")),
        ) else {
            continue;
        };
        // Fields after the ")" closing the name: state is field 3, utime 14, stime 15.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks = f.get(11).and_then(|u| u.parse::<u64>().ok()).unwrap_or(0)
            + f.get(12).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
        let name = match comm.trim() {
            n @ ("tx-rt" | "rx-rt" | "relay-rt" | "driver") => n.to_string(),
            _ => "other".to_string(),
        };
        *out.entry(name).or_insert(0) += ticks;
    }
    out
}

fn print_e2e(out: &mut String, rs: &[E2eResult], blast_dps: f64, proto_sps: f64) {
    let _ = writeln!(
        out,
        "\n== 3. End to end over loopback: TagTable -> LinkSender -> UDP -> Receiver -> State (default FEC, snapshot 10 s, heartbeat 1 s; {:.0} s windows)",
        rs.first().map_or(0.0, |r| r.window.as_secs_f64())
    );
    let _ = writeln!(
        out,
        "  {:<22} {:>10} {:>10} {:>9} {:>9} {:>8} {:>8} {:>7} {:>7} {:>7} {:>8} {:>8} {:>8} | {:>5} {:>5} {:>6} {:>5}",
        "scenario",
        "TX smp/s",
        "RX appl/s",
        "x proto",
        "dgram/s",
        "x blast",
        "Mb/s",
        "smp/dgr",
        "RX lost",
        "superse",
        "lat p50",
        "lat p99",
        "lat max",
        "tx%",
        "rx%",
        "driver",
        "other"
    );
    for r in rs {
        let tx_sps = r.per_s(r.tx_samples);
        let dps = r.per_s(r.enc.datagrams);
        let _ = writeln!(
            out,
            "  {:<22} {:>10.0} {:>10.0} {:>9.3} {:>9.0} {:>8.3} {:>8.0} {:>7.1} {:>7} {:>7} {:>8.2} {:>8.2} {:>8.2} | {:>5.0} {:>5.0} {:>6.0} {:>5.0}",
            r.scenario.label(),
            tx_sps,
            r.per_s(r.rx_applied),
            tx_sps / proto_sps,
            dps,
            dps / blast_dps,
            r.wire_mbit(),
            r.tx_samples as f64 / r.enc.data_datagrams.max(1) as f64,
            r.dec.data_datagrams_lost,
            r.superseded,
            r.percentile_ms(0.5),
            r.percentile_ms(0.99),
            r.percentile_ms(1.0),
            r.cpu("tx-rt"),
            r.cpu("rx-rt"),
            r.cpu("driver"),
            r.cpu("other"),
        );
    }
    let _ = writeln!(
        out,
        "  TX smp/s: live samples taken by the link sender; RX appl/s: samples applied to the state (live + snapshot);\n  x proto: TX smp/s / protocol-only samples/s (no key, no loss); dgram/s: datagrams sent (data + repair), x blast: / the blast's received datagrams/s;\n  Mb/s: on the wire with IP+UDP headers; smp/dgr: TX samples / data datagrams (snapshot and heartbeat datagrams included);\n  RX lost: data datagrams lost beyond repair at RX in the window; superse: values replaced in the TX queue before they were sent;\n  lat: ms from the update at TX (source time) to the apply at RX, {}..{} live values per run; CPU % per thread over the window",
        rs.iter().map(|r| r.latency_ns.len()).min().unwrap_or(0),
        rs.iter().map(|r| r.latency_ns.len()).max().unwrap_or(0),
    );
    for r in rs {
        if r.mismatched > 0 || r.tags_without_value > 0 {
            let _ = writeln!(
                out,
                "  note: {}: after the drain {} tags differ between TX and RX and {} have no value at RX (healed by the snapshot within 10 s)",
                r.scenario.label(),
                r.mismatched,
                r.tags_without_value
            );
        }
    }
    catalogue_notes(out, rs);
    let cat: Vec<String> = rs
        .iter()
        .filter(|r| r.scenario.drive == Drive::Saturate && r.scenario.rate_mbit == FAST_RATE_MBIT)
        .map(|r| {
            format!(
                "{} tags in {:.0} ms",
                r.scenario.tags,
                r.catalogue_time.as_secs_f64() * 1000.0
            )
        })
        .collect();
    let _ = writeln!(out, "  catalogue transfer at start: {}", cat.join(", "));
    for r in rs.iter().filter(|r| r.scenario.rate_mbit != FAST_RATE_MBIT) {
        let _ = writeln!(
            out,
            "  pacer: configured {} Mb/s, achieved {:.1} Mb/s on the wire ({:.3} of configured)",
            r.scenario.rate_mbit,
            r.wire_mbit(),
            r.wire_mbit() / r.scenario.rate_mbit
        );
    }
}

fn catalogue_notes(out: &mut String, rs: &[E2eResult]) {
    for r in rs {
        for f in &r.catalogue_failures {
            let _ = writeln!(
                out,
                "  note: {}: an attempt was started over: {f}",
                r.scenario.label()
            );
        }
    }
}

fn print_loss(out: &mut String, rs: &[E2eResult]) {
    let _ = writeln!(
        out,
        "\n== 4. Delivery under loss: through the impairment relay, random loss, default FEC {}+{} interleave {}, {} tags at 50k samples/s offered, {:.0} s (counts for the whole session)",
        DEFAULT_DATA_SHARDS,
        DEFAULT_REPAIR_SHARDS,
        DEFAULT_INTERLEAVE,
        rs.first().map_or(0, |r| r.scenario.tags),
        rs.first().map_or(0.0, |r| r.window.as_secs_f64())
    );
    let _ = writeln!(
        out,
        "  {:>6} {:>5} {:>8} {:>8} | {:>9} {:>9} {:>6} {:>8} | {:>7} {:>8} {:>7} {:>9} {:>8} {:>8} {:>9} | {:>8} {:>8} {:>8}",
        "loss",
        "flush",
        "relay rx",
        "dropped",
        "live sent",
        "delivered",
        "lost",
        "deliv %",
        "groups",
        "data/grp",
        "repair%",
        "data lost",
        "repaired",
        "crc fail",
        "mismatch",
        "lat p50",
        "lat p99",
        "lat max"
    );
    for r in rs {
        let _ = writeln!(
            out,
            "  {:>5.0}% {:>5} {:>8} {:>8} | {:>9} {:>9} {:>6} {:>8.3} | {:>7} {:>8.2} {:>7.1} {:>9} {:>8} {:>8} {:>9} | {:>8.2} {:>8.2} {:>8.2}",
            r.scenario.loss.unwrap_or(0.0) * 100.0,
            format!(
                "{}ms",
                r.scenario
                    .flush_ms
                    .unwrap_or(DEFAULT_FLUSH.as_millis() as u64)
            ),
            r.relay_received,
            r.relay_dropped,
            r.live_sent(),
            r.live_delivered(),
            r.live_lost(),
            r.delivered_percent(),
            r.enc_total.groups,
            r.data_per_group(),
            r.repair_percent(),
            r.dec_total.data_datagrams_lost,
            r.dec_total.datagrams_repaired,
            r.dec_total.crc_failures,
            r.mismatched,
            r.percentile_ms(0.5),
            r.percentile_ms(0.99),
            r.percentile_ms(1.0),
        );
    }
    let _ = writeln!(
        out,
        "  live sent: EncoderStats.messages[Live] at TX; delivered / lost: DecoderStats at RX; dropped: by the relay (data + repair);
  groups: FEC groups sent, data/grp: data shards per group, repair%: repair / data datagrams (the default shape is 64+16 = 25 %);\n  data lost: data datagrams lost beyond repair; mismatch: tags whose value at RX differs from TX after the drain (wrong or missing);\n  target: 100 % delivered and 0 corrupted at 1 % and 5 % loss"
    );
    catalogue_notes(out, rs);
    for r in rs {
        let _ = writeln!(
            out,
            "  {}: {}",
            r.scenario.label(),
            match (r.scenario.flush_ms, r.delivery_target_met()) {
                (Some(_), true) => "all delivered (diagnostic: flush is not the default)",
                (Some(_), false) => "not all delivered (diagnostic: flush is not the default)",
                (None, true) => "target met",
                (None, false) => "TARGET MISSED",
            }
        );
    }
}

fn e2e_json(r: &E2eResult, blast_dps: f64, proto_sps: f64) -> Obj {
    let mut o = Obj::default();
    o.str("scenario", &r.scenario.label());
    o.int("tags", r.scenario.tags as u64);
    match r.scenario.drive {
        Drive::Saturate => o.str("drive", "max"),
        Drive::Rate(rate) => o.num("offered_samples_per_s", rate),
    }
    o.num("rate_mbit", r.scenario.rate_mbit);
    if let Some(l) = r.scenario.loss {
        o.num("relay_loss", l);
    }
    o.num("window_s", r.window.as_secs_f64());
    let tx_sps = r.per_s(r.tx_samples);
    let dps = r.per_s(r.enc.datagrams);
    o.num("tx_samples_per_s", tx_sps);
    o.num("rx_applied_per_s", r.per_s(r.rx_applied));
    o.num("superseded_per_s", r.per_s(r.superseded));
    o.num("ratio_tx_samples_to_protocol_only", tx_sps / proto_sps);
    o.num("datagrams_per_s", dps);
    o.num("data_datagrams_per_s", r.per_s(r.enc.data_datagrams));
    o.num("ratio_datagrams_to_blast", dps / blast_dps);
    o.num("wire_mbit_per_s", r.wire_mbit());
    o.num(
        "samples_per_data_datagram",
        r.tx_samples as f64 / r.enc.data_datagrams.max(1) as f64,
    );
    o.int("groups", r.enc_total.groups);
    o.int("timer_flushes", r.enc_total.timer_flushes);
    o.num("data_shards_per_group", r.data_per_group());
    o.num("repair_percent", r.repair_percent());
    o.int("window_rx_datagrams_missing", r.dec.datagrams_missing);
    o.int("window_rx_data_datagrams_lost", r.dec.data_datagrams_lost);
    o.int("window_rx_datagrams_repaired", r.dec.datagrams_repaired);
    o.int("live_messages_sent", r.live_sent());
    o.int("live_messages_delivered", r.live_delivered());
    o.int("live_messages_lost", r.live_lost());
    o.num("live_delivered_percent", r.delivered_percent());
    o.int("datagrams_missing", r.dec_total.datagrams_missing);
    o.int("data_datagrams_lost", r.dec_total.data_datagrams_lost);
    o.int("datagrams_repaired", r.dec_total.datagrams_repaired);
    o.int("crc_failures", r.dec_total.crc_failures);
    o.int("relay_received", r.relay_received);
    o.int("relay_dropped", r.relay_dropped);
    o.int("tags_mismatched_after_drain", r.mismatched as u64);
    o.int(
        "tags_without_value_after_drain",
        r.tags_without_value as u64,
    );
    o.int("latency_samples", r.latency_ns.len() as u64);
    o.num("latency_p50_ms", r.percentile_ms(0.5));
    o.num("latency_p99_ms", r.percentile_ms(0.99));
    o.num("latency_max_ms", r.percentile_ms(1.0));
    o.num("catalogue_ms", r.catalogue_time.as_secs_f64() * 1000.0);
    let failures: Vec<String> = r.catalogue_failures.iter().map(|f| quote(f)).collect();
    o.raw("catalogue_failures", format!("[{}]", failures.join(", ")));
    let mut cpu = Obj::default();
    for (name, c) in &r.cpu_percent {
        cpu.num(name, *c);
    }
    o.obj("cpu_percent", cpu);
    o
}

// ------------------------------------------------------------------------------------------
// Small helpers

/// xorshift64*: reproducible choices without a dependency.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && ((self.next() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

/// A JSON object written by hand (the workspace has no JSON dependency to spare).
#[derive(Default)]
struct Obj(Vec<(String, String)>);

impl Obj {
    fn raw(&mut self, k: &str, v: String) {
        self.0.push((k.to_string(), v));
    }
    fn num(&mut self, k: &str, v: f64) {
        self.raw(
            k,
            if v.is_finite() {
                format!("{v}")
            } else {
                "null".into()
            },
        );
    }
    fn int(&mut self, k: &str, v: u64) {
        self.raw(k, v.to_string());
    }
    fn bool(&mut self, k: &str, v: bool) {
        self.raw(k, v.to_string());
    }
    fn str(&mut self, k: &str, v: &str) {
        self.raw(k, quote(v));
    }
    fn obj(&mut self, k: &str, v: Obj) {
        self.raw(k, v.render(1));
    }
    fn arr(&mut self, k: &str, v: Vec<Obj>) {
        let items: Vec<String> = v.iter().map(|o| o.render(2)).collect();
        self.raw(k, format!("[\n    {}\n  ]", items.join(",\n    ")));
    }
    fn render(&self, depth: usize) -> String {
        if depth >= 2 {
            let fields: Vec<String> = self
                .0
                .iter()
                .map(|(k, v)| format!("{}: {v}", quote(k)))
                .collect();
            return format!("{{{}}}", fields.join(", "));
        }
        let pad = "  ".repeat(depth + 1);
        let fields: Vec<String> = self
            .0
            .iter()
            .map(|(k, v)| format!("{pad}{}: {v}", quote(k)))
            .collect();
        format!("{{\n{}\n{}}}", fields.join(",\n"), "  ".repeat(depth))
    }
}

fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
