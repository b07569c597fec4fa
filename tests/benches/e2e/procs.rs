//! The parts of the end-to-end bench that run in separate processes: the bench binary starts
//! itself again with `E2E_ROLE` set (and its parameters in `E2E_*` variables), so each side
//! has its own address space, threads and CPU accounting, as the real daemons do.
//!
//! - Bulk: `bulk-rx` (the real `LinkReceiver`, history batches decoded and then dropped, so
//!   the store's SQLite does not count) and `bulk-tx` (the real `LinkSender`, its history outlet
//!   fed by a synthetic source thread with large `HistoryBatch` messages as fast as it takes
//!   them). CPU is each process's own (user + system, `/proc/self/stat`).
//! - Scale: `rss-rx` (the real `Receiver`; resident memory once the catalogue of N tags and one
//!   value per tag have arrived, from `/proc/self/status`), fed by a `LinkSender` in the bench
//!   process; `plc-sims` (simulated PLCs) and `modbus-tx` (the real `Transmitter` polling them:
//!   its CPU alone, the simulators' in their own process).
//!
//! A child writes `key value` lines on stdout and `done` last; it stops when its stdin closes.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use config::rx::RxConfig;
use config::tx::{ModbusDevice, TxConfig};
use gateway_rx::link::LinkReceiver;
use gateway_rx::state::State;
use gateway_tx::history::{HistoryOutlet, OUTLET_CAPACITY};
use gateway_tx::link::LinkSender;
use gateway_tx::tags::{TagTable, Update};
use protocol::decoder::DecoderStats;
use protocol::message::{HistoryBatch, Message, Stream};
use protocol::model::{Quality, Sample, Value};

use crate::{KEY, runtime, synthetic_tags};

pub const ROLE: &str = "E2E_ROLE";

/// Runs this process's role when it is a child of the bench; `None` in the bench itself.
pub fn child_main() -> Option<anyhow::Result<()>> {
    let role = std::env::var(ROLE).ok()?;
    Some(match role.as_str() {
        "bulk-rx" => bulk_rx(),
        "bulk-tx" => bulk_tx(),
        "rss-rx" => rss_rx(),
        "plc-sims" => plc_sims(),
        "modbus-tx" => modbus_tx(),
        other => Err(anyhow!("unknown {ROLE} {other:?}")),
    })
}

// ------------------------------------------------------------------------------------------
// Child plumbing

/// A child process of the bench.
struct Proc {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    values: HashMap<String, String>,
}

impl Proc {
    fn spawn(role: &str, env: &[(&str, String)]) -> anyhow::Result<Proc> {
        let exe = std::env::current_exe().context("finding the bench binary")?;
        let mut cmd = Command::new(exe);
        cmd.env(ROLE, role)
            .env("E2E_PARENT", std::process::id().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().with_context(|| format!("starting {role}"))?;
        let stdout = child.stdout.take().context("child stdout")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Proc {
            name: role.to_string(),
            stdin: child.stdin.take(),
            child,
            lines,
            values: HashMap::new(),
        })
    }

    /// Waits for the line `key ...` and returns the rest; lines before it are kept.
    fn expect(&mut self, key: &str, timeout: Duration) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = self.values.get(key) {
                return Ok(v.clone());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let (k, v) = line.split_once(' ').unwrap_or((line.as_str(), ""));
                    self.values.insert(k.to_string(), v.to_string());
                }
                Err(_) => bail!("{}: no `{key}` within {timeout:?}", self.name),
            }
        }
    }

    /// Closes the child's stdin (its signal to finish) and waits for `done`.
    fn finish(&mut self, timeout: Duration) -> anyhow::Result<()> {
        self.stdin.take();
        self.expect("done", timeout)?;
        Ok(())
    }

    fn num(&self, key: &str) -> f64 {
        self.values
            .get(key)
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stdin.take();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn out(key: &str, value: impl std::fmt::Display) {
    let mut o = std::io::stdout().lock();
    let _ = writeln!(o, "{key} {value}");
    let _ = o.flush();
}

fn env<T: FromStr>(name: &str) -> anyhow::Result<T> {
    let v = std::env::var(name).with_context(|| format!("{name} not set"))?;
    v.parse().map_err(|_| anyhow!("{name}: cannot parse {v:?}"))
}

/// Set when the parent closes this child's stdin.
fn stdin_closed() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let f = flag.clone();
    std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            let mut line = String::new();
            while std::io::stdin().read_line(&mut line).is_ok_and(|n| n > 0) {
                line.clear();
            }
            f.store(true, Ordering::Relaxed);
        })
        .expect("stdin thread");
    flag
}

/// Linux reports CPU time in clock ticks of `sysconf(_SC_CLK_TCK)`, 100 on every mainstream
/// architecture.
const TICKS: f64 = 100.0;

/// CPU seconds (user + system) of this whole process so far, exited threads included.
fn process_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    stat_cpu(&stat)
}

fn stat_cpu(stat: &str) -> f64 {
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let t = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    (t(11) + t(12)) as f64 / TICKS
}

/// CPU seconds of this process's live threads whose name starts with `prefix`.
pub fn threads_cpu(prefix: &str) -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    dir.flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm"))
                .is_ok_and(|c| c.trim().starts_with(prefix))
        })
        .map(|t| stat_cpu(&std::fs::read_to_string(t.path().join("stat")).unwrap_or_default()))
        .sum()
}

/// A `/proc/self/status` field in KiB (`VmRSS`, `VmHWM`).
fn status_kib(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

// ------------------------------------------------------------------------------------------
// Bulk

#[derive(Debug, Clone, Default)]
pub struct BulkCase {
    pub label: &'static str,
    pub rate_mbit: f64,
    /// Samples per `HistoryBatch`: 4096 make a message of about 90 kB (fragmented over about
    /// 65 datagrams, all of one length); 0 makes datagram-sized batches as the history thread
    /// sends them (lengths vary, so no GSO for data datagrams).
    pub samples: usize,
    /// Datagrams per send at most (1: one `sendmsg` each, as before batching).
    pub max_batch: usize,
    pub seconds: f64,
    /// Random loss on the way to the receiver (see [`LossRule`]); 0 for none.
    pub loss: f64,
    /// `[link.fec] repair_shards`; `None` for the default.
    pub repair_shards: Option<usize>,
}

#[derive(Debug, Clone)]
pub struct BulkResult {
    pub case: BulkCase,
    pub body_bytes: f64,
    pub produced: f64,
    pub tx_messages: f64,
    pub tx_datagrams: f64,
    pub tx_repair: f64,
    pub tx_bytes: f64,
    pub tx_seconds: f64,
    pub steady_wire_mbit: f64,
    pub tx_cpu: f64,
    pub tx_link_cpu: f64,
    pub tx_source_cpu: f64,
    pub rx_delivered: f64,
    pub rx_lost: f64,
    pub rx_datagrams: f64,
    pub rx_repaired: f64,
    pub rx_data_lost: f64,
    pub rx_rejected: f64,
    pub rx_seconds: f64,
    pub rx_cpu: f64,
    pub rx_link_cpu: f64,
}

const GIB: f64 = (1u64 << 30) as f64;

impl BulkResult {
    /// History message bytes delivered at RX per second, in Gb/s.
    pub fn goodput_gbps(&self) -> f64 {
        self.rx_delivered * self.body_bytes * 8.0 / self.rx_seconds.max(1e-9) / 1e9
    }
    pub fn delivered_percent(&self) -> f64 {
        100.0 * self.rx_delivered / self.tx_messages.max(1.0)
    }
    pub fn tx_gib(&self) -> f64 {
        self.tx_messages * self.body_bytes / GIB
    }
    pub fn rx_gib(&self) -> f64 {
        self.rx_delivered * self.body_bytes / GIB
    }
    pub fn tx_cpu_per_gib(&self) -> f64 {
        self.tx_cpu / self.tx_gib().max(1e-12)
    }
    pub fn tx_link_cpu_per_gib(&self) -> f64 {
        self.tx_link_cpu / self.tx_gib().max(1e-12)
    }
    pub fn rx_cpu_per_gib(&self) -> f64 {
        self.rx_cpu / self.rx_gib().max(1e-12)
    }
    pub fn datagrams_per_s(&self) -> f64 {
        self.tx_datagrams / self.tx_seconds.max(1e-9)
    }
    /// Configured-rate check: achieved / configured, on the wire (IP and UDP headers counted).
    pub fn pacer_ratio(&self) -> f64 {
        self.steady_wire_mbit / self.case.rate_mbit
    }
}

pub fn run_bulk(case: &BulkCase) -> anyhow::Result<BulkResult> {
    let mut rx = Proc::spawn("bulk-rx", &[])?;
    let port: u16 = rx.expect("port", Duration::from_secs(20))?.parse()?;
    let _loss = if case.loss > 0.0 {
        Some(LossRule::install(port, case.loss)?)
    } else {
        None
    };
    let mut tx = Proc::spawn(
        "bulk-tx",
        &[
            ("E2E_DEST", format!("127.0.0.1:{port}")),
            ("E2E_RATE_MBIT", case.rate_mbit.to_string()),
            ("E2E_SAMPLES", case.samples.to_string()),
            ("E2E_MAX_BATCH", case.max_batch.to_string()),
            ("E2E_SECONDS", case.seconds.to_string()),
            (
                "E2E_REPAIR",
                case.repair_shards.map_or(String::new(), |r| r.to_string()),
            ),
        ],
    )?;
    tx.expect("done", Duration::from_secs_f64(case.seconds + 60.0))?;
    // The group timeout and the receiver's last pass.
    std::thread::sleep(Duration::from_millis(500));
    rx.finish(Duration::from_secs(20))?;
    Ok(BulkResult {
        case: case.clone(),
        body_bytes: tx.num("body_bytes"),
        produced: tx.num("produced"),
        tx_messages: tx.num("messages"),
        tx_datagrams: tx.num("datagrams"),
        tx_repair: tx.num("repair_datagrams"),
        tx_bytes: tx.num("bytes"),
        tx_seconds: tx.num("seconds"),
        steady_wire_mbit: tx.num("steady_wire_mbit"),
        tx_cpu: tx.num("cpu"),
        tx_link_cpu: tx.num("link_cpu"),
        tx_source_cpu: tx.num("source_cpu"),
        rx_delivered: rx.num("delivered"),
        rx_lost: rx.num("lost"),
        rx_datagrams: rx.num("datagrams"),
        rx_repaired: rx.num("repaired"),
        rx_data_lost: rx.num("data_lost"),
        rx_rejected: rx.num("rejected"),
        rx_seconds: rx.num("seconds"),
        rx_cpu: rx.num("cpu"),
        rx_link_cpu: rx.num("link_cpu"),
    })
}

/// Random loss of the datagrams to one loopback port, by an nftables rule in a table of its
/// own (removed on drop): the kernel has no netem here. Needs root and `nft`; datagrams must
/// be sent one per packet (no GSO), or one rule would drop a whole batch.
pub struct LossRule;

const LOSS_TABLE: &str = "gateway_e2e_loss";

impl LossRule {
    /// Whether rules can be installed here (root and `nft`).
    pub fn available() -> bool {
        Command::new("nft")
            .args(["list", "tables"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    fn install(port: u16, loss: f64) -> anyhow::Result<LossRule> {
        Self::remove();
        let per_million = (loss * 1e6).round() as u64;
        let script = format!(
            "table inet {LOSS_TABLE} {{\n  chain input {{\n    type filter hook input priority -300; policy accept;\n    iif \"lo\" udp dport {port} numgen random mod 1000000 < {per_million} drop\n  }}\n}}\n"
        );
        let mut child = Command::new("nft")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .spawn()
            .context("starting nft")?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(script.as_bytes())?;
        }
        if !child.wait()?.success() {
            bail!("nft refused the loss rule:\n{script}");
        }
        Ok(LossRule)
    }

    fn remove() {
        let _ = Command::new("nft")
            .args(["delete", "table", "inet", LOSS_TABLE])
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for LossRule {
    fn drop(&mut self) {
        Self::remove();
    }
}

fn bulk_rx() -> anyhow::Result<()> {
    let port = tests::free_udp_port()?;
    let toml = format!("[link]\ninsecure_no_key = true\nbind = \"127.0.0.1:{port}\"\n");
    let mut config =
        RxConfig::parse(&toml, Path::new("bench/gateway-rx.toml")).map_err(|e| anyhow!("{e}"))?;
    config.link.key = Some(KEY);
    // With a key the receiver resumes from its state file and refuses sessions no newer than
    // the one it holds. The default file is the machine's (/var/lib/gateway), where an earlier
    // run, or another program's receiver, left a session that this run's sender (a random
    // epoch) was as likely as not to be older than: every datagram was then a stale session.
    let state_dir = tempfile::tempdir()?;
    config.link.state_file = state_dir.path().join("rx-link.state");
    let rt = runtime("rx-rt")?;
    let stats = Arc::new(Mutex::new(DecoderStats::default()));
    let receiver = rt.block_on(LinkReceiver::bind(
        config.link,
        Arc::new(State::new()),
        stats.clone(),
    ))?;
    let _link = rt.spawn(receiver.run());
    let stop = stdin_closed();
    let cpu0 = process_cpu();
    let link0 = threads_cpu("rx-rt");
    out("port", port);
    let (mut first, mut last, mut seen) = (None, None, 0);
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(2));
        let n = stats
            .lock()
            .map(|s| s.delivered(Stream::History))
            .unwrap_or(0);
        if n > seen {
            let now = Instant::now();
            first.get_or_insert(now);
            last = Some(now);
            seen = n;
        }
    }
    let s = stats.lock().map(|s| s.clone()).unwrap_or_default();
    out("delivered", s.delivered(Stream::History));
    out("lost", s.lost(Stream::History));
    out("datagrams", s.datagrams_received);
    out("repaired", s.datagrams_repaired);
    out("data_lost", s.data_datagrams_lost);
    out("rejected", s.rejected());
    let seconds = match (first, last) {
        (Some(f), Some(l)) => (l - f).as_secs_f64(),
        _ => 0.0,
    };
    out("seconds", seconds);
    out("cpu", process_cpu() - cpu0);
    out("link_cpu", threads_cpu("rx-rt") - link0);
    out("done", "");
    Ok(())
}

fn history_message(samples: usize, first_seq: u64) -> Message {
    let base = gateway_tx::unix_now();
    Message::History(HistoryBatch {
        catalogue: 0x0123_4567_89ab_cdef,
        log: 0x5eed,
        first_seq,
        head_seq: first_seq + samples as u64,
        oldest_seq: 0,
        samples: (0..samples)
            .map(|i| Sample {
                tag: (i % 1000) as u32,
                value: Value::Double(i as f64 * 0.37),
                quality: Quality::GOOD,
                time: base + i as i64 * 1_000_000,
            })
            .collect(),
    })
}

fn bulk_tx() -> anyhow::Result<()> {
    let dest: SocketAddr = env("E2E_DEST")?;
    let rate_mbit: f64 = env("E2E_RATE_MBIT")?;
    let samples: usize = env("E2E_SAMPLES")?;
    let max_batch: usize = env("E2E_MAX_BATCH")?;
    let seconds: f64 = env("E2E_SECONDS")?;
    let mut toml = format!(
        "[link]\ninsecure_no_key = true\ndestination = \"{dest}\"\nrate_mbit = {rate_mbit}\n"
    );
    if let Ok(repair) = std::env::var("E2E_REPAIR")
        && !repair.is_empty()
    {
        toml += &format!("[link.fec]\nrepair_shards = {repair}\n");
    }
    let mut config =
        TxConfig::parse(&toml, Path::new("bench/gateway-tx.toml")).map_err(|e| anyhow!("{e}"))?;
    config.link.key = Some(KEY);
    let block_span = config.link.fec.block_span;
    let rt = runtime("tx-rt")?;
    let table = Arc::new(TagTable::new(Vec::new(), Vec::new()));
    let outlet = Arc::new(HistoryOutlet::default());
    let session = (gateway_tx::unix_now() as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let sender = rt
        .block_on(LinkSender::new(
            config.link.clone(),
            config.config_hash,
            table,
            Arc::new(Vec::new),
            session,
        ))?
        .with_history(Some(outlet.clone()))
        .with_max_batch(max_batch);
    let counters = sender.counters();
    let enc = sender.encoder_stats();
    let budget = {
        // Datagram-sized batches, as the history thread makes them: the most samples whose
        // encoding fits one datagram's body.
        let probe = protocol::encoder::Encoder::new(
            protocol::encoder::EncoderConfig {
                key: Some(KEY),
                ..protocol::encoder::EncoderConfig::default()
            },
            1,
        )?;
        probe.max_unfragmented_body()
    };
    let per_message = if samples > 0 {
        samples
    } else {
        (1..4096)
            .take_while(|&n| {
                protocol::codec::encode(&history_message(n, 0)).map_or(0, |b| b.len()) <= budget
            })
            .last()
            .unwrap_or(1)
    };
    let message = history_message(per_message, 0);
    let body = protocol::codec::encode(&message)?.len();
    out("body_bytes", body);
    let Message::History(batch) = message else {
        bail!("history_message made another message");
    };
    let head = protocol::codec::HistoryHead {
        catalogue: batch.catalogue,
        log: batch.log,
        first_seq: batch.first_seq,
        head_seq: batch.head_seq,
        oldest_seq: batch.oldest_seq,
    };
    // The history thread encodes each sample once, when it takes it from the tap (for its
    // buffer's record), and copies those bytes into the batch.
    let mut encoded = Vec::new();
    for s in &batch.samples {
        protocol::codec::encode_sample_into(s, &mut encoded);
    }
    let count = batch.samples.len();
    let link = rt.spawn(sender.run());

    let stop = Arc::new(AtomicBool::new(false));
    let produced = Arc::new(AtomicU64::new(0));
    let cpu0 = process_cpu();
    let t0 = Instant::now();
    let source = {
        let (stop, produced, outlet) = (stop.clone(), produced.clone(), outlet.clone());
        std::thread::Builder::new()
            .name("source".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if outlet.len() < OUTLET_CAPACITY {
                        // What the history thread does for each batch: a fresh body of the
                        // batch's head and its samples' encodings (its taking from the tap,
                        // encoding each sample once, the disk and the splitting into
                        // batches are not done here).
                        let mut body = Vec::with_capacity(body);
                        protocol::codec::encode_history_encoded(&head, count, &encoded, &mut body);
                        outlet.push(body);
                        produced.fetch_add(1, Ordering::Relaxed);
                    } else {
                        std::thread::sleep(Duration::from_micros(200));
                    }
                }
            })?
    };
    let mark = || {
        (
            Instant::now(),
            counters.bytes_sent.load(Ordering::Relaxed),
            counters.datagrams_sent.load(Ordering::Relaxed),
        )
    };
    std::thread::sleep(Duration::from_secs_f64((seconds / 4.0).min(0.5)));
    let m1 = mark();
    std::thread::sleep(
        (t0 + Duration::from_secs_f64(seconds)).saturating_duration_since(Instant::now()),
    );
    let m2 = mark();
    stop.store(true, Ordering::Relaxed);
    let _ = source.join();
    let produced = produced.load(Ordering::Relaxed);
    // Drain: the outlet, the encoder's queue and its flush timer.
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let messages = enc.lock().map(|e| e.messages(Stream::History)).unwrap_or(0);
        if outlet.is_empty()
            && messages >= produced
            && counters.pending_datagrams.load(Ordering::Relaxed) == 0
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    // The last block's repair leaves when its timer closes it: without it, loss in the last
    // few hundred datagrams was counted as lost beyond repair (seen at 5 and 10 % loss).
    std::thread::sleep(2 * block_span);
    let t_end = Instant::now();
    let cpu = process_cpu() - cpu0;
    let e = enc.lock().map(|e| e.clone()).unwrap_or_default();
    if link.is_finished() {
        bail!("the link sender stopped");
    }
    let wire = (m2.1 - m1.1) + 28 * (m2.2 - m1.2);
    out("produced", produced);
    out("messages", e.messages(Stream::History));
    out("datagrams", counters.datagrams_sent.load(Ordering::Relaxed));
    out("repair_datagrams", e.repair_datagrams);
    out("bytes", counters.bytes_sent.load(Ordering::Relaxed));
    out("seconds", (t_end - t0).as_secs_f64());
    out(
        "steady_wire_mbit",
        wire as f64 * 8.0 / (m2.0 - m1.0).as_secs_f64() / 1e6,
    );
    out("cpu", cpu);
    out("link_cpu", threads_cpu("tx-rt"));
    out("source_cpu", threads_cpu("source"));
    out("done", "");
    Ok(())
}

// ------------------------------------------------------------------------------------------
// Scale: receiver memory with a large catalogue

#[derive(Debug, Clone)]
pub struct RssResult {
    pub tags: usize,
    pub idle_kib: f64,
    pub rss_kib: f64,
    pub hwm_kib: f64,
    pub catalogue_seconds: f64,
    pub values_seconds: f64,
    pub applied: f64,
}

pub fn run_rss(tags: usize) -> anyhow::Result<RssResult> {
    let mut rx = Proc::spawn("rss-rx", &[("E2E_TAGS", tags.to_string())])?;
    let port: u16 = rx.expect("port", Duration::from_secs(20))?.parse()?;
    let tx_rt = runtime("tx-rt")?;
    let toml = format!(
        "[link]\ninsecure_no_key = true\ndestination = \"127.0.0.1:{port}\"\nrate_mbit = 2000\n"
    );
    let config =
        TxConfig::parse(&toml, Path::new("bench/gateway-tx.toml")).map_err(|e| anyhow!("{e}"))?;
    let table = Arc::new(TagTable::new(synthetic_tags(tags), vec![0.0; tags]));
    let sender = tx_rt.block_on(LinkSender::new(
        config.link.clone(),
        config.config_hash,
        table.clone(),
        Arc::new(Vec::new),
        0x1234_5678_9abc_def0 ^ gateway_tx::unix_now() as u64,
    ))?;
    let link = tx_rt.spawn(sender.run());
    let t0 = Instant::now();
    rx.expect("catalogue", Duration::from_secs(120))?;
    let catalogue_seconds = t0.elapsed().as_secs_f64();
    let time = gateway_tx::unix_now();
    for chunk in (0..tags).collect::<Vec<_>>().chunks(10_000) {
        table.apply(chunk.iter().map(|&i| Update {
            tag: i as u32,
            value: Some(Value::Double(i as f64 + 0.5)),
            quality: Quality::GOOD,
            time,
        }));
        // 1M samples/s: kept below the link's pace so the receiver's socket buffer does not
        // overflow (what it loses the snapshot heals within its 10 s period).
        std::thread::sleep(Duration::from_millis(10));
    }
    let t1 = Instant::now();
    rx.expect("values", Duration::from_secs(120))?;
    let values_seconds = t1.elapsed().as_secs_f64();
    rx.finish(Duration::from_secs(30))?;
    link.abort();
    tx_rt.shutdown_timeout(Duration::from_secs(1));
    Ok(RssResult {
        tags,
        idle_kib: rx.num("idle_kib"),
        rss_kib: rx.num("rss_kib"),
        hwm_kib: rx.num("hwm_kib"),
        catalogue_seconds,
        values_seconds,
        applied: rx.num("applied"),
    })
}

fn rss_rx() -> anyhow::Result<()> {
    let tags: usize = env("E2E_TAGS")?;
    let port = tests::free_udp_port()?;
    let dir = tempfile::tempdir()?;
    let toml = format!(
        "[link]\ninsecure_no_key = true\nbind = \"127.0.0.1:{port}\"\n\n[status]\nlog_interval_s = 3600\n\n[store]\npath = \"{}\"\n",
        dir.path().join("history.sqlite").display()
    );
    let config =
        RxConfig::parse(&toml, Path::new("bench/gateway-rx.toml")).map_err(|e| anyhow!("{e}"))?;
    // As gateway-rx's main does: a multi-thread runtime with the default workers.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let rx = rt.block_on(gateway_rx::Receiver::start(config))?;
    let stop = stdin_closed();
    std::thread::sleep(Duration::from_millis(200));
    out("idle_kib", status_kib("VmRSS"));
    out("port", port);
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut said_catalogue = false;
    while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(20));
        if !said_catalogue && rx.state.tag_count() == tags {
            out("catalogue", "");
            said_catalogue = true;
        }
        if said_catalogue {
            // Every tag with a value (live, or from the snapshot for a live batch lost to a full
            // socket buffer): checked on a sample of tags, then on all.
            let view = rx.state.view();
            let sampled = (0..tags as u32)
                .step_by(997)
                .all(|i| view.value(i).is_some());
            let all = sampled && (0..tags as u32).all(|i| view.value(i).is_some());
            drop(view);
            if all && rx.state.counters().samples_applied >= tags as u64 {
                break;
            }
        }
    }
    // Let the last batches settle, as a running receiver would.
    std::thread::sleep(Duration::from_millis(500));
    out("applied", rx.state.counters().samples_applied);
    out("rss_kib", status_kib("VmRSS"));
    out("hwm_kib", status_kib("VmHWM"));
    out("values", "");
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(rx);
    out("done", "");
    Ok(())
}

// ------------------------------------------------------------------------------------------
// Scale: Modbus polling

#[derive(Debug, Clone)]
pub struct ModbusResult {
    pub plcs: usize,
    pub registers: usize,
    pub interval_ms: u64,
    pub window: f64,
    pub cpu_share: f64,
    pub reads_per_s: f64,
    pub polls_per_s: f64,
    pub samples_per_s: f64,
    pub rss_kib: f64,
}

pub fn run_modbus(
    plcs: usize,
    registers: usize,
    interval_ms: u64,
    warmup: Duration,
    window: Duration,
) -> anyhow::Result<ModbusResult> {
    let mut sims = Proc::spawn(
        "plc-sims",
        &[
            ("E2E_PLCS", plcs.to_string()),
            ("E2E_REGISTERS", registers.to_string()),
        ],
    )?;
    let ports = sims.expect("ports", Duration::from_secs(30))?;
    // The link goes to a socket nobody reads: the kernel drops what overflows it.
    let sink = std::net::UdpSocket::bind("127.0.0.1:0")?;
    let mut tx = Proc::spawn(
        "modbus-tx",
        &[
            ("E2E_PORTS", ports),
            ("E2E_REGISTERS", registers.to_string()),
            ("E2E_INTERVAL_MS", interval_ms.to_string()),
            ("E2E_DEST", sink.local_addr()?.to_string()),
            ("E2E_WARMUP", warmup.as_secs_f64().to_string()),
            ("E2E_WINDOW", window.as_secs_f64().to_string()),
        ],
    )?;
    let reads0: f64 = sims.expect("reads", Duration::from_secs(120))?.parse()?;
    let _ = reads0;
    tx.expect("done", warmup + window + Duration::from_secs(120))?;
    sims.finish(Duration::from_secs(20))?;
    let reads = sims.num("reads_window");
    let per_poll = registers.div_ceil(125) as f64;
    Ok(ModbusResult {
        plcs,
        registers,
        interval_ms,
        window: tx.num("window"),
        cpu_share: tx.num("cpu") / tx.num("window"),
        reads_per_s: reads / tx.num("window"),
        polls_per_s: reads / per_poll / tx.num("window"),
        samples_per_s: tx.num("samples") / tx.num("window"),
        rss_kib: tx.num("rss_kib"),
    })
}

fn plc_sims() -> anyhow::Result<()> {
    let plcs: usize = env("E2E_PLCS")?;
    let registers: u16 = env("E2E_REGISTERS")?;
    let rt = runtime("sim-rt")?;
    let mut sims = Vec::new();
    for _ in 0..plcs {
        let sim = rt.block_on(tests::plc_sim::PlcSim::start("127.0.0.1:0".parse()?))?;
        let values: Vec<u16> = (0..registers).collect();
        sim.handle().set_holding(0, &values);
        sims.push(sim);
    }
    let ports: Vec<String> = sims
        .iter()
        .map(|s| s.local_addr().port().to_string())
        .collect();
    out("ports", ports.join(","));
    let stop = stdin_closed();
    // A tenth of each PLC's registers change every second, 10 at a time every 100 ms.
    let handles: Vec<_> = sims.iter().map(|s| s.handle()).collect();
    let reads = || handles.iter().map(|h| h.reads()).sum::<u64>();
    let mut step = 0u16;
    let mut window_start: Option<u64> = None;
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
        step = step.wrapping_add(1);
        let at = (step.wrapping_mul(10)) % registers.max(10);
        for h in &handles {
            h.set_holding(at, &[step; 10][..usize::from(registers.min(10))]);
        }
        // The poller says when its window starts and ends through the files below.
        if window_start.is_none() && std::path::Path::new(&window_flag("start")).exists() {
            window_start = Some(reads());
            out("reads", window_start.unwrap_or(0));
        }
        if let Some(r0) = window_start
            && std::path::Path::new(&window_flag("end")).exists()
        {
            out("reads_window", reads() - r0);
            window_start = Some(u64::MAX);
            let _ = std::fs::remove_file(window_flag("start"));
            let _ = std::fs::remove_file(window_flag("end"));
        }
    }
    if window_start != Some(u64::MAX) {
        out("reads_window", 0);
    }
    drop(sims);
    out("done", "");
    Ok(())
}

/// Marker files the poller process creates at the start and end of its measured window, so
/// the simulators count the reads of the same window (the parent bench's pid names them).
fn window_flag(which: &str) -> String {
    let id = std::env::var("E2E_PARENT").unwrap_or_default();
    std::env::temp_dir()
        .join(format!("e2e-modbus-{id}-{which}"))
        .display()
        .to_string()
}

fn modbus_tx() -> anyhow::Result<()> {
    let ports: Vec<u16> = env::<String>("E2E_PORTS")?
        .split(',')
        .map(|p| p.parse())
        .collect::<Result<_, _>>()?;
    let registers: usize = env("E2E_REGISTERS")?;
    let interval_ms: u64 = env("E2E_INTERVAL_MS")?;
    let dest: SocketAddr = env("E2E_DEST")?;
    let warmup = Duration::from_secs_f64(env("E2E_WARMUP")?);
    let window = Duration::from_secs_f64(env("E2E_WINDOW")?);
    // One device's tags through the real config parser, then copied for each PLC (parsing
    // 100,000 tags of TOML would only measure the parser).
    let mut toml = format!(
        "[link]\ninsecure_no_key = true\ndestination = \"{dest}\"\nrate_mbit = 1000\n\n[[modbus]]\nname = \"plc0\"\nhost = \"127.0.0.1\"\nport = {}\npoll_interval_ms = {interval_ms}\ntimeout_ms = 1000\n",
        ports.first().copied().unwrap_or(502)
    );
    for r in 0..registers {
        toml.push_str(&format!(
            "\n[[modbus.tag]]\nname = \"plc0/r{r}\"\ntable = \"holding\"\naddress = {r}\ntype = \"u16\"\n"
        ));
    }
    let mut config =
        TxConfig::parse(&toml, Path::new("bench/gateway-tx.toml")).map_err(|e| anyhow!("{e}"))?;
    let template: ModbusDevice = config.devices[0].clone();
    config.devices = ports
        .iter()
        .enumerate()
        .map(|(i, &port)| {
            let mut d = template.clone();
            d.name = format!("plc{i}");
            d.port = port;
            for t in &mut d.tags {
                t.name = t.name.replacen("plc0/", &format!("plc{i}/"), 1);
            }
            d
        })
        .collect();
    // As gateway-tx's main does: a multi-thread runtime with the default workers.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let tx = rt.block_on(gateway_tx::Transmitter::start(config))?;
    std::thread::sleep(warmup);
    let _ = std::fs::write(window_flag("start"), b"");
    let cpu0 = process_cpu();
    let s0 = tx.status.counters.samples_sent.load(Ordering::Relaxed);
    let t0 = Instant::now();
    std::thread::sleep(window);
    let cpu = process_cpu() - cpu0;
    let elapsed = t0.elapsed().as_secs_f64();
    let samples = tx.status.counters.samples_sent.load(Ordering::Relaxed) - s0;
    let _ = std::fs::write(window_flag("end"), b"");
    out("window", elapsed);
    out("cpu", cpu);
    out("samples", samples);
    out("rss_kib", status_kib("VmRSS"));
    out("done", "");
    drop(tx);
    rt.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}
