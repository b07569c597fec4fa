//! Chaos test of the whole receiving chain, with the released daemons as processes on loopback:
//! every fault at once, and then nothing lost, duplicated or misfiled.
//!
//! - The plant: a simulated PLC (in this process) with [`TAGS`] u16 holding registers that all
//!   change every [`STEP`] (register `i` at step `s` holds `s * 40503 + i * 7919` mod 2^16, so
//!   no two tags hold the same value at one step: a sample filed under another tag is seen).
//! - The release `gateway-tx` polls it every [`POLL_MS`] ms with `[history]` (the carousel's
//!   window covers the whole run) and sends to the release `gateway-rx`, with a key on the
//!   link. gateway-rx keeps its SQLite store (and, by default, the sinks' spools and the MQTT
//!   journal beside it) on a tmpfs of [`TMPFS_MIB`] MiB that this test mounts, and feeds
//!   `[postgres]` (the CI server) and `[mqtt] qos = 2` to a Mosquitto with persistence that this
//!   test starts; a QoS 2 subscriber with a persistent session listens throughout.
//! - Faults, from a seed (`CHAOS_SEED`, printed; the default is fixed, so a run is
//!   reproducible): gateway-rx killed with SIGKILL at [`KILLS`] moments and restarted after a
//!   random pause (and, as systemd's `Restart=always` would, restarted 2 s after it exits by
//!   itself); the tmpfs filled by a file (topped up while the fault lasts) and then freed;
//!   PostgreSQL stopped and started (`GATEWAY_TEST_PG_CTL`); the broker stopped (SIGTERM, it
//!   saves its sessions) and started. The three outages overlap for a few seconds.
//! - Afterwards, with the plant still and the carousel left to heal: the ground truth is every
//!   sample in the transmitter's history buffer. The store (`gateway-rx query`), PostgreSQL
//!   (SQL) and the subscriber must each hold every sample exactly once with the value and
//!   quality the transmitter recorded for that (tag, source time), and each sample missing
//!   anywhere must lie in a gap that `gateway-rx gaps` lists and that did not heal. A table of
//!   the faults and the counts is printed.
//!
//! Release binaries rather than debug ones: they are what ships and what `.ci/run` builds before
//! `cargo test --workspace` (found as the diode system test finds them, `common/daemons.rs`, and
//! refused when older than the daemons' sources), and the carousel's re-sends keep the receiver
//! busy deduplicating: at debug speed on a shared 2-core machine that load, not the faults,
//! would decide how long healing takes.
//!
//! Needs root (the tmpfs), the release daemons, and `GATEWAY_TEST_PG_URL`, `GATEWAY_TEST_PG_CTL`
//! and `GATEWAY_TEST_MOSQUITTO` (`.ci/services`); without them it prints why and passes, except
//! under `CI=true`, where it fails. `CHAOS_SKIP=1` skips it (not honoured under `CI=true`).
//!
//! Cost: about 1.5 minutes when it passes ([`FLOW`] of plant; the carousel, one pass over the
//! whole run in about 10 s, has healed the receiver's outages by then), up to [`HEAL`] more
//! when it does not; most of it waiting. About 1,200 samples/s on the link plus the carousel's
//! re-sends (2 Mbit/s), two release daemons, a 32 MiB tmpfs, and some 90,000 rows in
//! PostgreSQL (its schema is dropped after a pass). It stops and starts the PostgreSQL server
//! it is given: other users of that server see an outage of 14 s. Configs, logs, the
//! transmitter's buffer and a copy of the tmpfs stay in `target/chaos/work` after a failure.

#[allow(dead_code)] // the shared helpers serve several test files
mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::XorShift;
use common::peers::{
    PersistentMosquitto, SessionSubscriber, pg_client, pg_rows, pg_table, same_value, source_time,
    unique,
};
use common::tmpfs::{Filler, Tmpfs};
use common::toml_string;
use protocol::model::Value;
use tests::plc_sim::PlcSim;

/// Tags of the plant: u16 holding registers from [`BASE`].
const TAGS: u16 = 300;
const BASE: u16 = 1000;
/// One plant step; the transmitter polls a little slower, so each poll sees a change.
const STEP: Duration = Duration::from_millis(200);
const POLL_MS: u64 = 250;
/// How long the plant runs (and history flows); every fault lies within it.
const FLOW: Duration = Duration::from_secs(75);
/// SIGKILLs of gateway-rx.
const KILLS: usize = 10;
/// The longest the carousel is given to heal after the plant stops.
const HEAL: Duration = Duration::from_secs(45);
const TMPFS_MIB: u64 = 32;
/// After gateway-rx exits by itself, it is started again this much later (systemd's
/// `RestartSec` in the shipped unit).
const RESTART_SEC: Duration = Duration::from_secs(2);
const DEFAULT_SEED: u64 = 0x00c4_a05e_ed01;

/// Writes past libtest's output capture, so progress and the table show in a plain `cargo test`.
fn say(text: &str) {
    let mut e = std::io::stderr().lock();
    let _ = writeln!(e, "{text}");
}

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// What the test needs from its environment.
struct Needs {
    daemons: common::daemons::ReleaseDaemons,
    pg_url: String,
    pg_ctl: String,
    mosquitto: String,
}

fn preflight() -> Result<Needs, String> {
    if !ci() && std::env::var("CHAOS_SKIP").is_ok_and(|v| v == "1") {
        return Err("CHAOS_SKIP=1".into());
    }
    if !common::daemons::is_root() {
        return Err("not root (the store's tmpfs is mounted by the test)".into());
    }
    let var = |name: &str| match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => Ok(v.trim().to_owned()),
        _ => Err(format!(
            "{name} is not set (`source .ci/services` starts the service and exports it)"
        )),
    };
    Ok(Needs {
        pg_url: var("GATEWAY_TEST_PG_URL")?,
        pg_ctl: var("GATEWAY_TEST_PG_CTL")?,
        mosquitto: var("GATEWAY_TEST_MOSQUITTO")?,
        daemons: common::daemons::release_daemons()?,
    })
}

// --- The plant ----------------------------------------------------------------------------------

fn register_value(i: u16, step: u64) -> u16 {
    // Modulo 2^16 on purpose.
    (step as u16)
        .wrapping_mul(40_503)
        .wrapping_add(i.wrapping_mul(7919))
}

fn tag_name(i: u16) -> String {
    format!("plc1/chaos/r{i:04}")
}

/// Moves every register on each step until stopped.
struct Plant {
    sim: PlcSim,
    task: tokio::task::JoinHandle<()>,
}

impl Plant {
    async fn start() -> Plant {
        let sim = PlcSim::start("127.0.0.1:0".parse().expect("address"))
            .await
            .expect("simulated PLC");
        let handle = sim.handle();
        let values = |step: u64| {
            (0..TAGS)
                .map(|i| register_value(i, step))
                .collect::<Vec<_>>()
        };
        handle.set_holding(BASE, &values(0));
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(STEP);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            let mut step = 0u64;
            loop {
                tick.tick().await;
                step += 1;
                handle.set_holding(BASE, &values(step));
            }
        });
        Plant { sim, task }
    }

    fn freeze(&self) {
        self.task.abort();
    }
}

impl Drop for Plant {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// --- Processes and faults -----------------------------------------------------------------------

/// A daemon run as a child process, its output appended to a log file.
struct Daemon {
    name: &'static str,
    bin: PathBuf,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    starts: u32,
}

impl Daemon {
    fn new(name: &'static str, bin: &Path, config: PathBuf, log: PathBuf) -> Daemon {
        Daemon {
            name,
            bin: bin.to_owned(),
            config,
            log,
            child: None,
            starts: 0,
        }
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("daemon log");
        let err = log.try_clone().expect("daemon log");
        let child = Command::new(&self.bin)
            .arg("run")
            .arg("--config")
            .arg(&self.config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", self.bin.display()));
        self.child = Some(child);
        self.starts += 1;
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then SIGKILL if it has not ended within 10 s.
    fn stop(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = c.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        say(&format!(
            "{} did not stop on SIGTERM within 10 s",
            self.name
        ));
        let _ = c.kill();
        let _ = c.wait();
    }

    /// The exit status, if the process ended by itself.
    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        Some(status)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts PostgreSQL again if the test stopped it and then failed.
struct PgServer {
    ctl: String,
    stopped: bool,
}

impl PgServer {
    fn ctl(&mut self, what: &str) {
        let out = Command::new(&self.ctl)
            .arg(what)
            .output()
            .unwrap_or_else(|e| panic!("{} {what}: {e}", self.ctl));
        assert!(
            out.status.success(),
            "{} {what}: {}{}",
            self.ctl,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        self.stopped = what == "stop";
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if self.stopped {
            let _ = Command::new(&self.ctl).arg("start").status();
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    KillRx,
    StartRx,
    FillDisk,
    FreeDisk,
    StopPg,
    StartPg,
    StopBroker,
    StartBroker,
}

/// The faults of a run, from its seed: when each happens, from the start of the plant.
fn schedule(seed: u64) -> Vec<(Duration, Fault)> {
    let mut rng = XorShift(seed | 1);
    let ms = |rng: &mut XorShift, lo: u64, hi: u64| {
        Duration::from_millis(rng.below(lo as usize..hi as usize) as u64)
    };
    let mut out = Vec::new();
    // Kills spread over the flow, one in each of KILLS slots, down for 0.3 to 3 s (the slots
    // are 6.5 s, so a restart comes before the next kill).
    let (first, last) = (3_000u64, FLOW.as_millis() as u64 - 7_000);
    let slot = (last - first) / KILLS as u64;
    for k in 0..KILLS as u64 {
        let at = ms(&mut rng, first + k * slot, first + k * slot + slot - 3_100);
        out.push((at, Fault::KillRx));
        out.push((at + ms(&mut rng, 300, 3_000), Fault::StartRx));
    }
    // The outages: starts at most at 32 s, ends at least at 36 s, so all three overlap.
    let disk = ms(&mut rng, 20_000, 26_000);
    out.push((disk, Fault::FillDisk));
    out.push((disk + Duration::from_secs(16), Fault::FreeDisk));
    let pg = ms(&mut rng, 22_000, 30_000);
    out.push((pg, Fault::StopPg));
    out.push((pg + Duration::from_secs(14), Fault::StartPg));
    let broker = ms(&mut rng, 24_000, 32_000);
    out.push((broker, Fault::StopBroker));
    out.push((broker + Duration::from_secs(12), Fault::StartBroker));
    out.sort_by_key(|(at, _)| *at);
    out
}

// --- What each side holds -----------------------------------------------------------------------

/// A sample the transmitter recorded: value, quality, history number.
#[derive(Debug, Clone)]
struct Truth {
    value: Value,
    quality: u32,
    seq: u64,
}

type Key = (String, i64);

/// Every sample in the transmitter's buffer, by (tag, source time).
fn ground_truth(dir: &Path) -> BTreeMap<Key, Truth> {
    let records = gateway_tx::history::log::read_records(dir).expect("the transmitter's buffer");
    let mut out = BTreeMap::new();
    for (seq, name, s) in records {
        let name = name.expect("the buffer keeps its tag names");
        let old = out.insert(
            (name, s.time),
            Truth {
                value: s.value,
                quality: s.quality.0,
                seq,
            },
        );
        assert!(
            old.is_none(),
            "the transmitter recorded a (tag, time) twice"
        );
    }
    out
}

/// What one destination holds, checked against the truth.
#[derive(Debug, Default)]
struct Tally {
    held: usize,
    missing: Vec<Key>,
    /// Copies beyond the first.
    duplicates: usize,
    /// The samples held more than once.
    repeated: Vec<Key>,
    /// A (tag, time) the transmitter never recorded, or a value or quality other than its.
    wrong: Vec<String>,
}

impl Tally {
    /// `got`: (tag, time, value as JSON, quality) for every copy the destination holds.
    fn of(
        truth: &BTreeMap<Key, Truth>,
        got: impl IntoIterator<Item = (String, i64, serde_json::Value, u64)>,
    ) -> Tally {
        let mut t = Tally::default();
        let mut copies: BTreeMap<Key, usize> = BTreeMap::new();
        for (tag, time, value, quality) in got {
            match truth.get(&(tag.clone(), time)) {
                Some(w) if same_value(&value, &w.value) && quality == u64::from(w.quality) => {}
                Some(w) => t.wrong.push(format!(
                    "{tag} at {time}: {value} quality {quality:#x}, the transmitter recorded {:?} quality {:#x}",
                    w.value, w.quality
                )),
                None => t
                    .wrong
                    .push(format!("{tag} at {time}: {value}, never recorded")),
            }
            *copies.entry((tag, time)).or_default() += 1;
        }
        t.held = copies.len();
        t.duplicates = copies.values().map(|n| n - 1).sum();
        t.repeated = copies
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(k, _)| k.clone())
            .collect();
        t.missing = truth
            .keys()
            .filter(|k| !copies.contains_key(*k))
            .cloned()
            .collect();
        t
    }
}

/// The history numbers of `keys` as ranges (`a..=b`), the first few.
fn seq_ranges(truth: &BTreeMap<Key, Truth>, keys: &[Key]) -> String {
    let mut seqs: Vec<u64> = keys.iter().map(|k| truth[k].seq).collect();
    seqs.sort_unstable();
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    for s in seqs {
        match ranges.last_mut() {
            Some((_, end)) if *end + 1 == s => *end = s,
            _ => ranges.push((s, s)),
        }
    }
    let mut text: Vec<String> = ranges
        .iter()
        .take(8)
        .map(|(a, b)| format!("{a}..={b}"))
        .collect();
    if ranges.len() > 8 {
        text.push(format!("and {} more ranges", ranges.len() - 8));
    }
    text.join(", ")
}

/// `gateway-rx query` over every tag and all time, as (tag, time, value, quality).
fn store_rows(rx_bin: &Path, store: &Path) -> Vec<(String, i64, serde_json::Value, u64)> {
    let mut cmd = Command::new(rx_bin);
    cmd.arg("query")
        .arg("--store")
        .arg(store)
        .args([
            "--from",
            "2000-01-01T00:00:00Z",
            "--to",
            "2200-01-01T00:00:00Z",
        ])
        .args(["--format", "json"]);
    for i in 0..TAGS {
        cmd.arg("--tag").arg(tag_name(i));
    }
    let out = cmd.output().expect("gateway-rx query");
    if !out.status.success() {
        // Not created yet, or busy: nothing to count this time.
        return Vec::new();
    }
    let rows: Vec<serde_json::Value> =
        serde_json::from_slice(&out.stdout).expect("gateway-rx query --format json");
    rows.into_iter()
        .map(|r| {
            (
                r["tag"].as_str().expect("tag").to_owned(),
                r["time_ns"].as_i64().expect("time_ns"),
                r["value"].clone(),
                r["quality"].as_u64().expect("quality"),
            )
        })
        .collect()
}

/// A gap as `gateway-rx gaps --json` lists it.
#[derive(Debug, Clone)]
struct Gap {
    state: String,
    reason: String,
    log: u64,
    first: u64,
    last: u64,
}

fn gaps(rx_bin: &Path, store: &Path) -> Vec<Gap> {
    let out = Command::new(rx_bin)
        .arg("gaps")
        .arg("--store")
        .arg(store)
        .arg("--json")
        .output()
        .expect("gateway-rx gaps");
    if !out.status.success() {
        return Vec::new();
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let j: serde_json::Value = serde_json::from_str(l).expect("gaps --json line");
            Gap {
                state: j["state"].as_str().unwrap_or("").to_owned(),
                reason: j["reason"].as_str().unwrap_or("").to_owned(),
                log: u64::from_str_radix(j["log"].as_str().unwrap_or(""), 16).unwrap_or(0),
                first: j["first_seq"].as_u64().unwrap_or(0),
                last: j["last_seq"].as_u64().unwrap_or(0),
            }
        })
        .collect()
}

fn pg_as_rows(rows: common::peers::Rows) -> Vec<(String, i64, serde_json::Value, u64)> {
    rows.into_iter()
        .map(|((tag, t), (v, q))| (tag, t, common::peers::json_value(&v), u64::from(q)))
        .collect()
}

fn mqtt_rows(
    seen: &[common::peers::Seen],
    prefix: &str,
) -> Vec<(String, i64, serde_json::Value, u64)> {
    let strip = format!("{prefix}/");
    seen.iter()
        .filter(|s| !s.retained)
        .map(|s| {
            (
                s.topic.strip_prefix(&strip).unwrap_or(&s.topic).to_owned(),
                source_time(&s.json),
                s.json["value"].clone(),
                s.json["quality"]["code"].as_u64().unwrap_or(u64::MAX),
            )
        })
        .collect()
}

/// Lines of `log` containing `text`.
fn log_lines(log: &Path, text: &str) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(text))
        .count()
}

// --- The test -----------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_receiving_chain_loses_duplicates_and_misfiles_nothing() {
    let needs = match preflight() {
        Ok(n) => n,
        Err(why) if ci() => panic!("the chaos test cannot run under CI=true: {why}"),
        Err(why) => {
            say(&format!("chaos test SKIPPED: {why}"));
            return;
        }
    };
    let seed = std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(DEFAULT_SEED);
    let started = Instant::now();

    // A fresh work directory; a tmpfs a failed run left mounted there goes first.
    let work = common::daemons::target_dir().join("chaos").join("work");
    let store_dir = work.join("store");
    let _ = Command::new("umount").arg(&store_dir).status();
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).expect("work directory");
    let tmpfs = match Tmpfs::mount(&store_dir, TMPFS_MIB) {
        Ok(t) => t,
        Err(why) if ci() => panic!("the chaos test cannot run under CI=true: {why}"),
        Err(why) => {
            say(&format!("chaos test SKIPPED: {why}"));
            return;
        }
    };
    let store = store_dir.join("history.sqlite");
    let mut pg = PgServer {
        ctl: needs.pg_ctl.clone(),
        stopped: false,
    };
    let schema = unique("gwchaos_");
    let prefix = unique("gwchaos");
    let mut broker = PersistentMosquitto::start(&needs.mosquitto).await;
    let sub = SessionSubscriber::start(&broker.addr(), &prefix, &unique("chaos-sub")).await;

    // The configs.
    let key = common::KeyFile::random();
    let rx_port = tests::free_udp_port().expect("a free UDP port");
    let broker_addr = broker.addr();
    let (host, port) = broker_addr.rsplit_once(':').expect("host:port");
    let rx_toml = format!(
        "[link]\nbind = \"127.0.0.1:{rx_port}\"\nheartbeat_timeout_ms = 1000\n{}\n\
         [status]\nlog_interval_s = 5\n\n\
         [store]\npath = {}\n\n\
         [mqtt]\nhost = \"{host}\"\nport = {port}\nclient_id = \"{}\"\ntopic_prefix = \"{prefix}\"\nqos = 2\n\n\
         {}",
        key.link_lines("rx-link.state"),
        toml_string(&store),
        unique("gwchaos"),
        pg_table(&needs.pg_url, &work, &schema, None)
    );
    let plant = Plant::start().await;
    let tx_history = work.join("tx-history");
    let mut tx_toml = format!(
        "[link]\ndestination = \"127.0.0.1:{rx_port}\"\nrate_mbit = 20.0\nheartbeat_ms = 200\n\
         catalogue_interval_s = 1\nsnapshot_period_s = 2\n{}\n\
         [history]\ndir = {}\ncarousel_window_s = 600\nmax_age_s = 3600\n\n\
         [[modbus]]\nname = \"plc1\"\nhost = \"127.0.0.1\"\nport = {}\nunit_id = 1\n\
         poll_interval_ms = {POLL_MS}\ntimeout_ms = 1000\n\n",
        key.link_lines("tx-link.state"),
        toml_string(&tx_history),
        plant.sim.local_addr().port()
    );
    for i in 0..TAGS {
        let _ = write!(
            tx_toml,
            "[[modbus.tag]]\nname = \"{}\"\ntable = \"holding\"\naddress = {}\ntype = \"u16\"\n\n",
            tag_name(i),
            BASE + i
        );
    }
    let (rx_cfg, tx_cfg) = (work.join("gateway-rx.toml"), work.join("gateway-tx.toml"));
    std::fs::write(&rx_cfg, &rx_toml).expect("gateway-rx.toml");
    std::fs::write(&tx_cfg, &tx_toml).expect("gateway-tx.toml");
    let mut rx = Daemon::new(
        "gateway-rx",
        &needs.daemons.rx,
        rx_cfg,
        work.join("gateway-rx.log"),
    );
    let mut tx = Daemon::new(
        "gateway-tx",
        &needs.daemons.tx,
        tx_cfg,
        work.join("gateway-tx.log"),
    );
    // The receiver first: it counts a log's history from the first batch it sees.
    rx.spawn();
    tokio::time::sleep(Duration::from_millis(500)).await;
    tx.spawn();

    // --- The faults ------------------------------------------------------------------------------
    let plan = schedule(seed);
    say(&format!(
        "chaos: seed {seed} (CHAOS_SEED), {TAGS} tags every {POLL_MS} ms for {FLOW:?}; work dir {}",
        work.display()
    ));
    let t0 = Instant::now();
    let mut next = 0;
    let mut filler: Option<Filler> = None;
    let mut filled = (0u64, 0u64);
    let mut rx_wanted = true;
    let mut restart_at: Option<Instant> = None;
    let mut own_exits: Vec<String> = Vec::new();
    let mut done: Vec<(Duration, Fault)> = Vec::new();
    while t0.elapsed() < FLOW || next < plan.len() {
        while next < plan.len() && plan[next].0 <= t0.elapsed() {
            let fault = plan[next].1;
            next += 1;
            done.push((t0.elapsed(), fault));
            match fault {
                Fault::KillRx => {
                    rx.kill();
                    rx_wanted = false;
                }
                Fault::StartRx => {
                    rx_wanted = true;
                    if rx.child.is_none() {
                        rx.spawn();
                    }
                }
                Fault::FillDisk => filler = Some(Filler::start(store_dir.join("filler"))),
                Fault::FreeDisk => {
                    if let Some(f) = filler.take() {
                        let (largest, refused) = f.free();
                        filled = (filled.0.max(largest), filled.1 + refused);
                    }
                }
                Fault::StopPg => tokio::task::block_in_place(|| pg.ctl("stop")),
                Fault::StartPg => tokio::task::block_in_place(|| pg.ctl("start")),
                Fault::StopBroker => tokio::task::block_in_place(|| broker.stop()),
                Fault::StartBroker => broker.spawn().await,
            }
        }
        // As systemd's Restart=always: a receiver that ended by itself starts again.
        if rx_wanted {
            if let Some(status) = rx.exited() {
                own_exits.push(format!("at {:.1} s: {status}", t0.elapsed().as_secs_f64()));
                restart_at = Some(Instant::now() + RESTART_SEC);
            }
            if rx.child.is_none() && restart_at.is_none_or(|t| Instant::now() >= t) {
                rx.spawn();
                restart_at = None;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    plant.freeze();
    let flow_ended = t0.elapsed();
    say(&format!(
        "chaos: faults done at {:.1} s; the plant is still, the carousel heals",
        flow_ended.as_secs_f64()
    ));

    // --- Healing ---------------------------------------------------------------------------------
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rx_bin = needs.daemons.rx.clone();
    let heal_started = Instant::now();
    let mut pg_conn = pg_client(&needs.pg_url).await;
    let mut truth = ground_truth(&tx_history);
    let converged = loop {
        if rx.child.is_none() || rx.exited().is_some() {
            own_exits.push("while healing".into());
            rx.spawn();
        }
        let in_store = tokio::task::block_in_place(|| store_rows(&rx_bin, &store)).len();
        let open = tokio::task::block_in_place(|| gaps(&rx_bin, &store))
            .iter()
            .filter(|g| g.state == "open")
            .count();
        let in_pg = match pg_conn
            .query_one(&format!("SELECT count(*) FROM \"{schema}\".samples"), &[])
            .await
        {
            Ok(r) => r.get::<_, i64>(0) as usize,
            Err(_) => {
                pg_conn = pg_client(&needs.pg_url).await;
                0
            }
        };
        let at_sub = sub.distinct();
        let want = truth.len();
        if in_store == want && open == 0 && in_pg == want && at_sub == want {
            break true;
        }
        if heal_started.elapsed() > HEAL {
            say(&format!(
                "chaos: not healed after {HEAL:?}: store {in_store}, open gaps {open}, \
                 PostgreSQL {in_pg}, subscriber {at_sub}, of {want}"
            ));
            break false;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        truth = ground_truth(&tx_history);
    };
    let healed_in = heal_started.elapsed();
    // Time for anything still on its way to arrive twice.
    tokio::time::sleep(Duration::from_secs(3)).await;

    // --- The verdict -----------------------------------------------------------------------------
    let truth = ground_truth(&tx_history);
    let log_id = u64::from_str_radix(
        std::fs::read_to_string(tx_history.join("log.id"))
            .expect("the transmitter's log id")
            .trim(),
        16,
    )
    .expect("log id in hex");
    let gap_list = tokio::task::block_in_place(|| gaps(&rx_bin, &store));
    let store_tally = Tally::of(
        &truth,
        tokio::task::block_in_place(|| store_rows(&rx_bin, &store)),
    );
    let pg_tally = Tally::of(&truth, pg_as_rows(pg_rows(&pg_conn, &schema).await));
    let mqtt_tally = Tally::of(&truth, mqtt_rows(&sub.seen(), &prefix));
    rx.stop();
    tx.stop();
    let unhealed: Vec<&Gap> = gap_list.iter().filter(|g| g.state != "healed").collect();
    let in_gap = |k: &Key| {
        let seq = truth[k].seq;
        unhealed
            .iter()
            .any(|g| g.log == log_id && g.first <= seq && seq <= g.last)
    };

    // The table.
    let count = |f: Fault| done.iter().filter(|(_, x)| *x == f).count();
    let when = |f: Fault| {
        done.iter()
            .filter(|(_, x)| *x == f)
            .map(|(t, _)| format!("{:.1}", t.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let rx_log = work.join("gateway-rx.log");
    let mut table = String::new();
    let _ = writeln!(
        table,
        "\nChaos test: seed {seed}, {} samples from the transmitter ({TAGS} tags, {:.0} s), \
         healed {} in {:.1} s, run {:.0} s",
        truth.len(),
        flow_ended.as_secs_f64(),
        if converged { "fully" } else { "NOT fully" },
        healed_in.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    let _ = writeln!(table, "| fault | count | at (s) |\n|---|---|---|");
    let _ = writeln!(
        table,
        "| gateway-rx SIGKILL | {} | {} |",
        count(Fault::KillRx),
        when(Fault::KillRx)
    );
    let _ = writeln!(
        table,
        "| gateway-rx exits by itself (restarted after 2 s) | {} | {} |",
        own_exits.len(),
        own_exits.join("; ")
    );
    let _ = writeln!(
        table,
        "| store tmpfs full ({TMPFS_MIB} MiB, filler up to {} KiB, {} writes refused) | {} | {} to {} |",
        filled.0 >> 10,
        filled.1,
        count(Fault::FillDisk),
        when(Fault::FillDisk),
        when(Fault::FreeDisk)
    );
    let _ = writeln!(
        table,
        "| PostgreSQL stopped | {} | {} to {} |",
        count(Fault::StopPg),
        when(Fault::StopPg),
        when(Fault::StartPg)
    );
    let _ = writeln!(
        table,
        "| Mosquitto stopped | {} | {} to {} |",
        count(Fault::StopBroker),
        when(Fault::StopBroker),
        when(Fault::StartBroker)
    );
    let _ = writeln!(
        table,
        "\n| gateway-rx log | lines |\n|---|---|\n| starts | {} |\n| store write failed | {} |\n\
         | sink spool write/sync failed | {} |\n| spool record corrupt | {} |\n| no space left | {} |",
        rx.starts,
        log_lines(&rx_log, "history store write failed"),
        log_lines(&rx_log, "cannot write the sink's spool")
            + log_lines(&rx_log, "cannot sync the sink's spool"),
        log_lines(&rx_log, "spool record corrupt"),
        log_lines(&rx_log, "No space left") + log_lines(&rx_log, "disk is full"),
    );
    let _ = writeln!(
        table,
        "\n| gaps | healed | unhealed |\n|---|---|---|\n| {} | {} | {} |",
        gap_list.len(),
        gap_list.len() - unhealed.len(),
        unhealed
            .iter()
            .map(|g| format!("{} {}..{} {}", g.state, g.first, g.last, g.reason))
            .collect::<Vec<_>>()
            .join("; ")
    );
    let _ = writeln!(
        table,
        "\n| destination | held | missing | missing outside an unhealed gap | duplicates | wrong |\n|---|---|---|---|---|---|"
    );
    let mut failures = Vec::new();
    for (name, t) in [
        ("SQLite store", &store_tally),
        ("PostgreSQL", &pg_tally),
        ("MQTT (QoS 2)", &mqtt_tally),
    ] {
        let outside: Vec<Key> = t.missing.iter().filter(|k| !in_gap(k)).cloned().collect();
        let _ = writeln!(
            table,
            "| {name} | {} | {} | {} | {} | {} |",
            t.held,
            t.missing.len(),
            outside.len(),
            t.duplicates,
            t.wrong.len()
        );
        if !outside.is_empty() {
            failures.push(format!(
                "{name}: {} samples missing outside any unhealed gap, history numbers {}",
                outside.len(),
                seq_ranges(&truth, &outside)
            ));
        }
        if t.duplicates > 0 {
            failures.push(format!(
                "{name}: {} duplicates, history numbers {}",
                t.duplicates,
                seq_ranges(&truth, &t.repeated)
            ));
        }
        if !t.wrong.is_empty() {
            failures.push(format!(
                "{name}: {} wrong, e.g. {:?}",
                t.wrong.len(),
                &t.wrong[..t.wrong.len().min(5)]
            ));
        }
    }
    say(&table);
    let panicked =
        log_lines(&rx_log, "panicked at") + log_lines(&work.join("gateway-tx.log"), "panicked at");
    if panicked > 0 {
        failures.push(format!("{panicked} panics in the daemons' logs"));
    }
    assert!(
        truth.len() > 20_000,
        "too little history to judge: {} samples",
        truth.len()
    );
    assert_eq!(
        (
            count(Fault::KillRx),
            count(Fault::FillDisk),
            count(Fault::StopPg),
            count(Fault::StopBroker)
        ),
        (KILLS, 1, 1, 1),
        "every fault happened"
    );
    assert!(
        filled.1 > 0,
        "the filler never met a full disk: the fault did not happen"
    );
    if !failures.is_empty() {
        // The tmpfs goes with the test: keep what the receiver wrote there.
        let _ = Command::new("cp")
            .arg("-a")
            .arg(&store_dir)
            .arg(work.join("store-saved"))
            .status();
        panic!(
            "chaos test failed (seed {seed}; configs and logs in {}):\n{}",
            work.display(),
            failures.join("\n")
        );
    }
    let _ = pg_conn
        .batch_execute(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .await;
    drop(tmpfs);
    let _ = std::fs::remove_dir_all(&work);
}
