//! Section 3, end to end: a driven tag table, the real `LinkSender` over loopback UDP to the real
//! `Receiver`, in one process; the machinery section 4 runs through the relay too.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use config::rx::RxConfig;
use config::tx::TxConfig;
use gateway_rx::Receiver;
use gateway_tx::link::{LinkSender, SharedEncoderStats};
use gateway_tx::tags::{TagTable, Update};
use protocol::decoder::DecoderStats;
use protocol::encoder::{
    DEFAULT_DATA_SHARDS, DEFAULT_FLUSH, DEFAULT_INTERLEAVE, DEFAULT_REPAIR_SHARDS,
};
use protocol::message::Stream;
use protocol::model::{Quality, SourceAddress, TagInfo, Value, ValueType};
use protocol::stats::EncoderStats;
use tests::relay::{Impairments, Relay, RelayCounters};

use crate::json::{Obj, quote};
use crate::{Timing, XorShift, selected};

/// Latency reads of the receiver's state per millisecond during a window.
pub(crate) const LATENCY_READS_PER_MS: usize = 4;
pub(crate) const LATENCY_MAX_SAMPLES: usize = 20_000;
/// Link rate for the end-to-end runs: high enough that the pacer is not the limit.
pub(crate) const FAST_RATE_MBIT: f64 = 10_000.0;
/// Datagrams lost in a row in the burst-loss run: what the default interleaving (4 groups of
/// 64+16) is sized for.
pub(crate) const BURST_LEN: u32 = 64;

pub(crate) fn run(
    timing: &Timing,
    out: &mut String,
    json: &mut Obj,
    blast_dps: f64,
    proto_samples_per_s: f64,
) -> anyhow::Result<Vec<E2eResult>> {
    let e2e_runs = [
        Scenario::new(10_000, Drive::Saturate),
        Scenario::new(100_000, Drive::Saturate),
        Scenario::new(10_000, Drive::Rate(10_000.0)),
        Scenario::new(10_000, Drive::Rate(100_000.0)),
        Scenario::new(100_000, Drive::Rate(10_000.0)),
        Scenario::new(100_000, Drive::Rate(100_000.0)),
        Scenario::new(100_000, Drive::Rate(1_000_000.0)),
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
        e2e.push(run_e2e(s, timing, i as u64).with_context(|| s.label())?);
    }
    print_e2e(out, &e2e, blast_dps, proto_samples_per_s);
    json.arr(
        "end_to_end",
        e2e.iter()
            .map(|r| e2e_json(r, blast_dps, proto_samples_per_s))
            .collect(),
    );
    Ok(e2e)
}
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Drive {
    /// Keeps the change queue at least half full: every tag changes as fast as TX takes them.
    Saturate,
    /// Updates tags round-robin at this many samples/s, in batches once a millisecond.
    Rate(f64),
}

#[derive(Debug, Clone)]
pub(crate) struct Scenario {
    pub(crate) tags: usize,
    pub(crate) drive: Drive,
    pub(crate) rate_mbit: f64,
    /// Through the impairment relay with this random loss.
    pub(crate) loss: Option<f64>,
    pub(crate) window: Option<Duration>,
    /// `[link.fec] block_ms` when not the default.
    pub(crate) flush_ms: Option<u64>,
    /// `[link.fec]` data and repair shards when not the default.
    pub(crate) fec: Option<(u16, u16)>,
    /// The relay starts a burst of 64 lost datagrams with this chance per datagram.
    pub(crate) burst: Option<f64>,
    /// Datagrams after a burst before the next may start (0: bursts may overlap).
    pub(crate) burst_gap: u32,
}

impl Scenario {
    pub(crate) fn new(tags: usize, drive: Drive) -> Scenario {
        Scenario {
            tags,
            drive,
            rate_mbit: FAST_RATE_MBIT,
            loss: None,
            window: None,
            flush_ms: None,
            fec: None,
            burst: None,
            burst_gap: 0,
        }
    }

    pub(crate) fn label(&self) -> String {
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
            let _ = write!(s, " block {f} ms");
        }
        if let Some((k, m)) = self.fec {
            let _ = write!(s, " fec {k}+{m}");
        }
        if let Some(b) = self.burst {
            let _ = write!(s, " bursts of {BURST_LEN} 1/{:.0}", 1.0 / b);
            if self.burst_gap > 0 {
                let _ = write!(s, " {}+ apart", self.burst_gap);
            }
        }
        s
    }
}

/// Counters at one instant.
#[derive(Debug, Clone, Default)]
pub(crate) struct Mark {
    pub(crate) at: Option<Instant>,
    pub(crate) updates: u64,
    pub(crate) superseded: u64,
    pub(crate) pending: u64,
    pub(crate) applied: u64,
    pub(crate) enc: EncoderStats,
    pub(crate) dec: DecoderStats,
    pub(crate) cpu: HashMap<String, u64>,
}

pub(crate) struct E2eResult {
    pub(crate) scenario: Scenario,
    pub(crate) window: Duration,
    pub(crate) tx_samples: u64,
    pub(crate) superseded: u64,
    pub(crate) rx_applied: u64,
    /// Window deltas.
    pub(crate) enc: EncoderStats,
    pub(crate) dec: DecoderStats,
    /// Totals after the drain.
    pub(crate) enc_total: EncoderStats,
    pub(crate) dec_total: DecoderStats,
    pub(crate) relay_received: u64,
    pub(crate) relay_dropped: u64,
    pub(crate) latency_ns: Vec<i64>,
    pub(crate) cpu_percent: Vec<(String, f64)>,
    /// Tags whose value at RX differs from TX after the drain.
    pub(crate) mismatched: usize,
    pub(crate) tags_without_value: usize,
    pub(crate) catalogue_time: Duration,
    /// Earlier attempts whose catalogue did not arrive.
    pub(crate) catalogue_failures: Vec<String>,
}

impl E2eResult {
    pub(crate) fn per_s(&self, n: u64) -> f64 {
        n as f64 / self.window.as_secs_f64()
    }
    pub(crate) fn live_sent(&self) -> u64 {
        self.enc_total.messages(Stream::Live)
    }
    pub(crate) fn live_delivered(&self) -> u64 {
        self.dec_total.delivered(Stream::Live)
    }
    pub(crate) fn live_lost(&self) -> u64 {
        self.dec_total.lost(Stream::Live)
    }
    /// Why a delivery run is only a diagnostic, not one the targets are about.
    pub(crate) fn is_diagnostic(&self) -> Option<&'static str> {
        if self.scenario.flush_ms.is_some() {
            Some("block_ms is not the default")
        } else if self.scenario.burst.is_some() && self.scenario.burst_gap == 0 {
            Some("bursts may overlap: two in one block are a loss of 128")
        } else {
            None
        }
    }

    pub(crate) fn delivered_percent(&self) -> f64 {
        100.0 * self.live_delivered() as f64 / self.live_sent().max(1) as f64
    }
    /// Configured-rate check: bits on the wire (with IP and UDP headers) per second.
    pub(crate) fn wire_mbit(&self) -> f64 {
        let bytes = self.enc.bytes + 28 * self.enc.datagrams;
        bytes as f64 * 8.0 / self.window.as_secs_f64() / 1e6
    }
    pub(crate) fn data_per_group(&self) -> f64 {
        self.enc_total.data_datagrams as f64 / self.enc_total.groups.max(1) as f64
    }
    pub(crate) fn repair_percent(&self) -> f64 {
        100.0 * self.enc_total.repair_datagrams as f64 / self.enc_total.data_datagrams.max(1) as f64
    }
    pub(crate) fn delivery_target_met(&self) -> bool {
        self.live_delivered() == self.live_sent()
            && self.live_lost() == 0
            && self.dec_total.crc_failures == 0
            && self.dec_total.auth_failures == 0
            && self.mismatched == 0
    }
    pub(crate) fn percentile_ms(&self, p: f64) -> f64 {
        if self.latency_ns.is_empty() {
            return f64::NAN;
        }
        let i = ((self.latency_ns.len() - 1) as f64 * p).round() as usize;
        self.latency_ns[i] as f64 / 1e6
    }
    pub(crate) fn cpu(&self, name: &str) -> f64 {
        self.cpu_percent
            .iter()
            .find(|(n, _)| n == name)
            .map_or(0.0, |(_, c)| *c)
    }
}

pub(crate) fn runtime(name: &str) -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(name)
        .enable_all()
        .build()
        .with_context(|| format!("building the {name} runtime"))
}

pub(crate) fn synthetic_tags(n: usize) -> Vec<TagInfo> {
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
pub(crate) const CATALOGUE_WAIT: Duration = Duration::from_secs(3);
pub(crate) const ATTEMPTS: u64 = 3;

/// Runs one scenario, starting over (at most [`ATTEMPTS`] times) when the catalogue does not
/// arrive; each such failure is kept in the result.
pub(crate) fn run_e2e(s: &Scenario, timing: &Timing, run: u64) -> anyhow::Result<E2eResult> {
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
pub(crate) fn run_once(
    s: &Scenario,
    timing: &Timing,
    run: u64,
) -> anyhow::Result<Result<E2eResult, String>> {
    let udp_errors_at_start = udp_errors();
    let rx_rt = runtime("rx-rt")?;
    let tx_rt = runtime("tx-rt")?;
    let relay_rt = runtime("relay-rt")?;

    let rx_toml = format!(
        "[link]\ninsecure_no_key = true\nbind = \"127.0.0.1:{}\"\n\n[status]\nlog_interval_s = 3600\n",
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
                burst: s.burst.unwrap_or(0.0),
                burst_len: BURST_LEN,
                burst_gap: s.burst_gap,
                ..Impairments::default()
            },
            0x5eed ^ run,
        ))?),
        None => None,
    };
    let destination = relay.as_ref().map_or(rx.link_addr, |r| r.listen);
    let mut tx_toml = format!(
        "[link]\ninsecure_no_key = true\ndestination = \"{destination}\"\nrate_mbit = {}\n",
        s.rate_mbit
    );
    if s.flush_ms.is_some() || s.fec.is_some() {
        tx_toml.push_str("\n[link.fec]\n");
    }
    if let Some(f) = s.flush_ms {
        // The diagnostic's long timer is the block's: the payload flush stays at its default.
        let _ = writeln!(tx_toml, "block_ms = {f}");
    }
    if let Some((k, m)) = s.fec {
        let _ = writeln!(tx_toml, "data_shards = {k}\nrepair_shards = {m}");
    }
    let tx_config = TxConfig::parse(&tx_toml, Path::new("bench/gateway-tx.toml"))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let fec = tx_config.link.fec;
    if s.fec.is_none()
        && (
            fec.data_shards,
            fec.repair_shards,
            fec.interleave,
            s.flush_ms.is_some() || fec.flush == DEFAULT_FLUSH,
        ) != (
            DEFAULT_DATA_SHARDS,
            DEFAULT_REPAIR_SHARDS,
            DEFAULT_INTERLEAVE,
            true,
        )
    {
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

pub(crate) fn drive_tags(
    table: &TagTable,
    n: usize,
    drive: Drive,
    stop: &AtomicBool,
    updates: &AtomicU64,
) {
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
pub(crate) fn sample_latency(
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
pub(crate) fn compare_values(table: &TagTable, rx: &Receiver, n: usize) -> (usize, usize) {
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

pub(crate) fn enc_delta(a: &EncoderStats, b: &EncoderStats) -> EncoderStats {
    let mut d = EncoderStats {
        datagrams: a.datagrams - b.datagrams,
        data_datagrams: a.data_datagrams - b.data_datagrams,
        repair_datagrams: a.repair_datagrams - b.repair_datagrams,
        bytes: a.bytes - b.bytes,
        fragmented_messages: a.fragmented_messages - b.fragmented_messages,
        groups: a.groups - b.groups,
        timer_flushes: a.timer_flushes - b.timer_flushes,
        payload_flushes: a.payload_flushes - b.payload_flushes,
        fec_errors: a.fec_errors - b.fec_errors,
        ..EncoderStats::default()
    };
    for i in 0..4 {
        d.messages[i] = a.messages[i] - b.messages[i];
        d.message_bytes[i] = a.message_bytes[i] - b.message_bytes[i];
    }
    d
}

pub(crate) fn dec_delta(a: &DecoderStats, b: &DecoderStats) -> DecoderStats {
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
pub(crate) fn udp_errors() -> (u64, u64) {
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
pub(crate) const CLOCK_TICKS_PER_SEC: f64 = 100.0;

/// CPU time (user + system, clock ticks) of this process's threads, summed by thread name.
pub(crate) fn thread_cpu_ticks() -> HashMap<String, u64> {
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

pub(crate) fn print_e2e(out: &mut String, rs: &[E2eResult], blast_dps: f64, proto_sps: f64) {
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

pub(crate) fn catalogue_notes(out: &mut String, rs: &[E2eResult]) {
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

pub(crate) fn e2e_json(r: &E2eResult, blast_dps: f64, proto_sps: f64) -> Obj {
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
    if let Some((k, m)) = r.scenario.fec {
        o.int("data_shards", u64::from(k));
        o.int("repair_shards", u64::from(m));
    }
    if let Some(b) = r.scenario.burst {
        o.num("relay_burst_chance", b);
        o.int("relay_burst_len", u64::from(BURST_LEN));
        o.int("relay_burst_gap", u64::from(r.scenario.burst_gap));
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
