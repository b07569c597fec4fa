//! System test of the released binaries on a test bed shaped like a real diode.
//!
//! `systest/netns.sh up` makes two network namespaces, the OT box `gw-ot` and the IT box
//! `gw-it`, joined by a veth pair with the return direction dropped by the firewall rule sets
//! `deploy/nftables` ships, no ARP across (static neighbours) and no IPv6; and a third
//! namespace `gw-x`, a host on the IT network. This test runs, as separate processes:
//!
//! - in `gw-ot`: the simulated PLC (`diode-agent plc`: the demo tags plus 2000 u16 registers
//!   that change every 50 ms) and the release `gateway-tx` polling it;
//! - in `gw-it`: the release `gateway-rx` (link socket on the diode address, Modbus mirror on
//!   127.0.0.1), the mirror reader (`diode-agent probe`) and, for the scenarios that need it,
//!   the impairment relay with its observer (`diode-agent relay`) in front of gateway-rx, and
//!   for `replay` a capture of the link datagrams as they arrive (`diode-agent capture`);
//! - in `gw-x`, the attacker on the IT network: `diode-agent garbage` (random bytes, bad CRCs,
//!   forged datagrams, floods of fresh sessions) and `diode-agent replay` (a capture).
//!
//! Each scenario asserts numbers: link counters from the veth ends and the firewall, gateway-rx's
//! `status` log lines, the relay's own counts and its observer's verdict of what an ideal
//! erasure decoder could repair, and the values the mirror serves compared with the PLC's.
//! At the end a table is printed and saved to `target/systest/report.md`; each scenario's
//! configs and logs stay in `target/systest/work/<scenario>/`.
//!
//! The attack scenarios (`garbage`, `garbage-key`, `session-flood`, `session-flood-key`,
//! `replay`) test both layers of THREATS.md. Behind the shipped IT firewall the link port's
//! last rule (`udp dport $LINK_PORT counter drop`) drops every datagram from `gw-x`: its counter
//! must equal what was sent and gateway-rx must see none of it. The scenario then deletes that
//! one rule (it is put back after the scenario, whatever happened) and the same traffic reaches
//! gateway-rx, which must count every datagram exactly, by reason: bad magic or length, CRC,
//! authentication, stale session, replay, key rate limit (exactly unless the IT box's socket
//! buffers overflowed meanwhile, which is then allowed for and noted). Throughout each attack the
//! mirror is read again and again: every read must serve every tag with a value no more than 2 s
//! behind the PLC (fresh), never one the PLC did not hold (true), and the receiver must keep
//! the transmitter's session (no session change).
//!
//! It builds nothing: the daemons are the release binaries
//! (`cargo build --release -p gateway-tx -p gateway-rx`, which `.ci/run` runs first), found in
//! `$DIODE_BIN_DIR`, else `$CARGO_TARGET_DIR/release`, else the `release` directory beside the
//! profile directory this test was built into. `diode-agent` is this package's own binary.
//!
//! It needs root, `ip netns` and `nft`; without them it prints why and passes, except with
//! `CI=true`, where it fails. Environment:
//! - `DIODE_SCENARIOS=clean,loss-5` runs only those scenarios;
//! - `DIODE_CUT_SECS` is the length of the link cut (default 10; the 60 in CI when
//!   time allows);
//! - `DIODE_SKIP=1` skips (not honoured with `CI=true`);
//! - `DIODE_ALLOW_STALE=1` runs release binaries older than the daemons' sources (by default
//!   that is a reason to skip, or to fail under `CI=true`);
//! - `DIODE_BIN_DIR` takes the daemons from another directory;
//! - `DIODE_LEGACY_CONFIG=1` writes configs without `insecure_no_key` and `state_file`, for
//!   daemons built before those existed (to show what the attack scenarios find in them).

use anyhow::Context as _;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tests::plc_sim::DEMO_TAGS;

#[path = "diode/attacks.rs"]
mod attacks;
#[allow(dead_code)] // the shared helpers serve several test files
mod common;

const NS_OT: &str = "gw-ot";
const NS_IT: &str = "gw-it";
const NS_X: &str = "gw-x";
const OT_IF: &str = "ot0";
const IT_IF: &str = "it0";
const OT_ADDR: &str = "198.18.0.1";
const IT_ADDR: &str = "198.18.0.2";
const LINK_PORT: u16 = 5600;
/// gateway-rx's link socket when the relay stands in front of it.
const RX_BEHIND_RELAY: &str = "127.0.0.1:5700";
const MIRROR: &str = "127.0.0.1:5020";
const PLC: &str = "127.0.0.1:5502";

/// The plant: the demo tags and this many u16 holding registers that all change every step.
const BULK: u16 = 2000;
const BULK_BASE: u16 = 1000;
const PLC_PERIOD_MS: u64 = 50;
const POLL_MS: u64 = 50;

/// A link's FEC shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Fec {
    data: u16,
    repair: u16,
    interleave: u16,
    flush_ms: u64,
    block_ms: u64,
}

/// Every scenario but one runs the shipped defaults.
const SHIPPED_FEC: Fec = Fec {
    data: 64,
    repair: 16,
    interleave: 4,
    flush_ms: 5,
    block_ms: 50,
};

/// Shaped for bursts of 64 at this test's rate: 8 groups of 8 + 8, so a burst of 64 costs
/// each group 8 shards, and a block of 64 data datagrams fills in about 60 ms, well within the
/// block timer and the receiver's 200 ms group timeout.
const BURST_FEC: Fec = Fec {
    data: 8,
    repair: 8,
    interleave: 8,
    flush_ms: 5,
    block_ms: 100,
};
const HEARTBEAT_MS: u64 = 1000;
const HEARTBEAT_TIMEOUT_MS: u64 = 3000;
const SNAPSHOT_PERIOD_S: u64 = 2;
const CATALOGUE_INTERVAL_S: u64 = 5;

/// How long each scenario's impairment lasts (the cut has its own).
const WINDOW: Duration = Duration::from_secs(10);
const READY_TIMEOUT: Duration = Duration::from_secs(20);
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(20);
const AGENT_TIMEOUT: Duration = Duration::from_secs(30);

#[test]
fn diode_system_test() {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let bins = match preflight(ci) {
        Ok(b) => b,
        Err(why) => {
            if ci {
                panic!("diode system test cannot run in CI: {why}");
            }
            say(&format!("diode system test SKIPPED: {why}"));
            return;
        }
    };
    let _lock = match RunLock::acquire(Duration::from_secs(900)) {
        Ok(l) => l,
        Err(e) => panic!("{e}"),
    };
    let started = Instant::now();
    let cut_secs: u64 = std::env::var("DIODE_CUT_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let only: Option<Vec<String>> = std::env::var("DIODE_SCENARIOS")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.split(',').map(|x| x.trim().to_string()).collect());

    let mut bed = Bed::up(bins).unwrap_or_else(|e| panic!("setting up the test bed: {e:#}"));
    let mut rows = Vec::new();
    for sc in scenarios(cut_secs) {
        if only
            .as_ref()
            .is_some_and(|o| !o.iter().any(|n| n == sc.name))
        {
            continue;
        }
        say(&format!("== scenario {} ({})", sc.name, sc.impairment));
        let t = Instant::now();
        let row = run_scenario(&mut bed, &sc);
        say(&format!(
            "== scenario {}: {} in {:.1} s{}",
            sc.name,
            if row.failures.is_empty() {
                "PASS"
            } else {
                "FAIL"
            },
            t.elapsed().as_secs_f64(),
            row.failures
                .iter()
                .map(|f| format!("\n   - {f}"))
                .collect::<String>()
        ));
        rows.push(row);
    }
    let plc_stats = bed
        .plc
        .cmd("stats")
        .unwrap_or_else(|e| format!("error {e}"));
    let writes = field(&plc_stats, "writes");
    let report = report(&rows, cut_secs, started.elapsed(), &plc_stats);
    drop(bed);
    say(&format!("\n{report}"));
    let out = bins_report_path();
    if let Some(dir) = out.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Err(e) = std::fs::write(&out, &report) {
        say(&format!("could not write {}: {e}", out.display()));
    } else {
        say(&format!("report saved to {}", out.display()));
    }
    let failed: Vec<String> = rows
        .iter()
        .filter(|r| !r.failures.is_empty())
        .map(|r| format!("{}: {}", r.name, r.failures.join("; ")))
        .collect();
    assert_eq!(
        writes,
        Some(0),
        "the gateway sent Modbus writes to the PLC: {plc_stats}"
    );
    assert!(
        !rows.is_empty(),
        "no scenario matched DIODE_SCENARIOS={only:?}"
    );
    assert!(
        failed.is_empty(),
        "scenarios failed:\n{}",
        failed.join("\n")
    );
}

/// Writes to the test's standard error past libtest's output capture (which only takes the
/// print macros), so progress, the skip reason and the report show in a plain `cargo test`.
fn say(text: &str) {
    let mut e = std::io::stderr().lock();
    let _ = writeln!(e, "{text}");
    let _ = e.flush();
}

// ---------------------------------------------------------------------------------------------
// Scenarios

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Clean,
    Loss(u32),
    Burst,
    Reorder,
    Duplicate,
    Corrupt,
    /// gateway-rx descheduled now and then (SIGSTOP/SIGCONT), as on a busy host.
    Stall,
    RxRestart,
    TxRestart,
    Cut(u64),
    PlcUnplug,
    /// From the IT network: behind the shipped firewall, then with its link-port rule removed.
    Garbage {
        key: bool,
    },
    /// From the IT network, link-port rule removed: datagrams of fresh sessions of a newer epoch.
    SessionFlood {
        key: bool,
    },
    /// From the IT network, link-port rule removed: captures of two transmitter sessions
    /// replayed after the receiver restarted, with the link cut and then up.
    Replay,
}

impl Kind {
    fn keyed(self) -> bool {
        matches!(
            self,
            Kind::Garbage { key: true } | Kind::SessionFlood { key: true } | Kind::Replay
        )
    }
}

struct Scenario {
    name: &'static str,
    impairment: String,
    expect: &'static str,
    kind: Kind,
    fec: Fec,
}

fn scenarios(cut_secs: u64) -> Vec<Scenario> {
    let s = |name, impairment: &str, expect, kind| Scenario {
        name,
        impairment: impairment.to_string(),
        expect,
        kind,
        fec: SHIPPED_FEC,
    };
    vec![
        s(
            "clean",
            "none",
            "every datagram sent arrives and is accepted; nothing repaired, lost or rejected",
            Kind::Clean,
        ),
        s(
            "loss-1",
            "1 % random loss (nft numgen)",
            "every arriving datagram accepted; lost data datagrams at most 0.1 % of those sent",
            Kind::Loss(1),
        ),
        s(
            "loss-5",
            "5 % random loss (nft numgen)",
            "every arriving datagram accepted; lost at most 1 % of data datagrams",
            Kind::Loss(5),
        ),
        s(
            "loss-10",
            "10 % random loss (nft numgen)",
            "every arriving datagram accepted; lost at most 3 % of data datagrams",
            Kind::Loss(10),
        ),
        s(
            "burst-64",
            "relay: bursts of 64 consecutive datagrams, about 1 per 1500",
            "gateway-rx repairs exactly what an ideal erasure decoder can and counts the rest as lost \
             (with the shipped FEC at this test's low rate, blocks closed by their 50 ms timer hold \
             too few datagrams to spread a burst of 64)",
            Kind::Burst,
        ),
        Scenario {
            name: "burst-64-fec8x8",
            impairment: "as burst-64, FEC 8+8 x8 block 100 ms".to_string(),
            expect: "exact accounting as in burst-64; FEC rebuilds what bursts take from full \
                     blocks (a burst in a block its timer closed early, \
                     with proportionally fewer repair shards, is lost)",
            kind: Kind::Burst,
            fec: BURST_FEC,
        },
        s(
            "reorder",
            "relay: 5 % of datagrams held back behind 20 later ones",
            "nothing lost; repaired + lost exactly as the observer computes",
            Kind::Reorder,
        ),
        s(
            "duplicate",
            "relay: 5 % of datagrams sent twice",
            "duplicates counted = duplicates made; nothing lost or repaired",
            Kind::Duplicate,
        ),
        s(
            "corrupt",
            "relay: one bit flipped in 2 % of datagrams",
            "every corrupted datagram rejected (CRC failures = corrupted datagrams with a valid magic); \
             FEC repairs them as erasures exactly as the observer computes; no corrupted value delivered",
            Kind::Corrupt,
        ),
        s(
            "rx-stall",
            "relay: 3 % random loss; gateway-rx stopped (SIGSTOP) every 1.5 s for 300 ms (less if its socket buffer cannot hold that)",
            "reading its socket late costs nothing: gateway-rx repairs exactly what an ideal \
             erasure decoder can and counts the rest as lost, as in burst-64",
            Kind::Stall,
        ),
        s(
            "rx-restart",
            "gateway-rx killed (SIGKILL), restarted after 3 s",
            "the new receiver learns the catalogue and every value from the link",
            Kind::RxRestart,
        ),
        s(
            "tx-restart",
            "gateway-tx killed (SIGKILL), restarted after 4 s",
            "receiver reports link down, then a new session; every value arrives again",
            Kind::TxRestart,
        ),
        Scenario {
            name: "link-cut",
            impairment: format!(
                "link cut {cut_secs} s (nft drop on the IT ingress), then restored"
            ),
            expect: "link down while cut, mirror keeps serving last values; link up after; every value arrives again",
            kind: Kind::Cut(cut_secs),
            fec: SHIPPED_FEC,
        },
        s(
            "plc-unplug",
            "PLC unplugged 5 s, then back",
            "mirror refuses every tag while the PLC is away (quality Bad); values back after",
            Kind::PlcUnplug,
        ),
        s(
            "garbage",
            "host on the IT network sends random bytes and bad CRCs to gateway-rx's port (3000 of \
             each at 3000/s), no key: behind the shipped firewall, then without its link-port \
             rule; then random bytes at 10,000/s for 2 s",
            "firewall: its link-port rule drops every one, gateway-rx sees none; without the rule \
             every one is counted (bad magic or length, CRC); nothing lost; mirror fresh and true",
            Kind::Garbage { key: false },
        ),
        s(
            "garbage-key",
            "as garbage (first two parts) plus 3000 forged datagrams with valid CRCs (in turn: \
             unauthenticated, of an older session, of a newer one); key configured",
            "firewall: every one dropped, none seen; without the rule every bad CRC counted, \
             every forged datagram an authentication failure, or a stale session for the older \
             epoch; nothing lost; mirror fresh and true",
            Kind::Garbage { key: true },
        ),
        s(
            "session-flood",
            "link-port rule removed; host on the IT network sends CRC-valid datagrams, each of a \
             fresh session of a newer epoch: 1/s for 10 s, then 10,000/s for 2 s; no key",
            "the live session is never displaced (no session change); every one counted as a \
             stale session; mirror fresh and true throughout",
            Kind::SessionFlood { key: false },
        ),
        s(
            "session-flood-key",
            "as session-flood, datagrams claiming authentication, key configured: 1/s for 5 s, \
             10,000/s for 2 s, then 10,000 as fast as they go",
            "no session change; every one an authentication failure or refused a key \
             derivation (key_rate_limited, which the fast burst must reach); mirror fresh and true",
            Kind::SessionFlood { key: true },
        ),
        s(
            "replay",
            "link-port rule removed, key configured; the link datagrams of a transmitter session \
             (A) and of the next one after a restart (B) captured; receiver restarted with the link \
             cut, B and A replayed at 20,000/s; link back, A and B replayed again",
            "link cut: every datagram of B refused as a replay, every one of A as a stale session, \
             none accepted, the mirror serves nothing; link up: A stale, B replayed, duplicate or \
             out of window, every one; the receiver stays in B; mirror fresh and true",
            Kind::Replay,
        ),
    ]
}

/// One line of the report.
#[derive(Default)]
struct Row {
    name: String,
    impairment: String,
    expect: String,
    /// Datagrams that left the OT box (ot0 tx).
    sent: u64,
    /// Dropped by the impairment (firewall rule or relay).
    dropped: u64,
    /// Datagrams handed to gateway-rx's socket (firewall accept counter, or the relay's output).
    received: u64,
    rx: RxStatus,
    values: usize,
    values_total: usize,
    converge: Option<Duration>,
    corrupted_reads: u64,
    regressions: u64,
    samples: u64,
    /// Packets from the IT box towards the OT box: it0 tx + ot0 rx + UDP received in gw-ot.
    return_path: u64,
    /// Packets the IT box's firewall stopped on their way to the diode (from the kernel, e.g.
    /// ICMP port unreachable while gateway-rx was down).
    blocked: u64,
    attacks: Vec<Attack>,
    notes: Vec<String>,
    /// Behaviour worth a look that the scenario does not fail on.
    findings: Vec<String>,
    failures: Vec<String>,
    seconds: f64,
}

impl Row {
    fn check(&mut self, ok: bool, what: impl Into<String>) {
        if !ok {
            self.failures.push(what.into());
        }
    }

    /// Records one attack and checks it: `checks` are (held, what failed) pairs about the
    /// counts, to which the mirror's own checks over the attack are added.
    fn attack(&mut self, a: Attack, checks: Vec<(bool, String)>) {
        let w = a.window;
        let mut failed: Vec<String> = checks
            .into_iter()
            .filter(|(ok, _)| !ok)
            .map(|(_, what)| what)
            .collect();
        if w.samples == 0 {
            failed.push("the mirror was not read during the attack".to_string());
        }
        match a.mirror {
            MirrorExpect::Fresh => {
                if w.stale > 0 {
                    failed.push(format!(
                        "{} of {} mirror reads during the attack were stale or refused \
                         (largest lag {})",
                        w.stale,
                        w.samples,
                        w.max_lag_text()
                    ));
                }
            }
            MirrorExpect::Nothing => {
                if w.served > 0 {
                    failed.push(format!(
                        "the mirror served {} values during the attack (it knew none before)",
                        w.served
                    ));
                }
            }
        }
        if w.corrupted > 0 || w.regressions > 0 {
            failed.push(format!(
                "{} reads of values the PLC never held, {} reads back in time during the attack",
                w.corrupted, w.regressions
            ));
        }
        for f in &failed {
            self.failures.push(format!("{}: {f}", a.what));
        }
        self.attacks.push(Attack {
            ok: failed.is_empty(),
            ..a
        });
    }
}

/// One attack of a scenario, for the report's attack table.
struct Attack {
    what: String,
    /// Datagrams the attacker sent.
    sent: u64,
    /// Dropped by the IT firewall's link-port rule (`None`: the rule was removed).
    firewall: Option<u64>,
    /// What gateway-rx counted, by reason.
    counted: String,
    mirror: MirrorExpect,
    window: Window,
    ok: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum MirrorExpect {
    /// Every read serves every tag, fresh.
    Fresh,
    /// The receiver knows no value (restarted with the link cut): an attack must not give it one.
    Nothing,
}

/// `counted` datagrams of `sent`: all of them, unless `overflow` datagrams were dropped in the
/// IT box's socket buffers meanwhile, which only the ones they were can account for.
fn exact(counted: u64, sent: u64, overflow: u64) -> bool {
    if overflow == 0 {
        counted == sent
    } else {
        counted <= sent && counted + overflow >= sent
    }
}

fn run_scenario(bed: &mut Bed, sc: &Scenario) -> Row {
    let started = Instant::now();
    let mut row = Row {
        name: sc.name.to_string(),
        impairment: sc.impairment.clone(),
        expect: sc.expect.to_string(),
        ..Row::default()
    };
    let dir = bed.work.join(sc.name);
    let _ = std::fs::create_dir_all(&dir);
    let mut run = Run {
        bed,
        dir,
        rx: None,
        tx: None,
        relay: None,
        rx_instances: 0,
        tx_instances: 0,
        key: sc.kind.keyed(),
        legacy_config: std::env::var("DIODE_LEGACY_CONFIG").is_ok_and(|v| v == "1"),
        fec: sc.fec,
        monitor: Monitor::default(),
        capture: None,
        attackers: 0,
        replay_rx_start: None,
    };
    if let Err(e) = scenario(&mut run, sc, &mut row) {
        row.failures.push(format!("{e:#}"));
    }
    run.stop_all();
    let _ = run.bed.set_impairment(None);
    if let Err(e) = run.bed.set_link_port_rule(true) {
        row.failures
            .push(format!("putting the firewall's link-port rule back: {e:#}"));
    }
    row.seconds = started.elapsed().as_secs_f64();
    row
}

/// The longest stall of gateway-rx (at most 300 ms) whose traffic its socket buffer holds with
/// room to spare: a stall the buffer cannot hold loses datagrams to overflow, which no receiver
/// can help. The kernel grants twice the smaller of the request (gateway-rx asks 8 MiB) and
/// `net.core.rmem_max`, counted in buffer truesize: about 2.3 kB per datagram of this bed, which
/// sends about 600 a second; twice that is allowed for.
fn stall_that_fits() -> anyhow::Result<Duration> {
    let rmem_max: u64 = ns_output(NS_IT, &["cat", "/proc/sys/net/core/rmem_max"])?
        .trim()
        .parse()
        .context("reading net.core.rmem_max in the IT box")?;
    let queue = 2 * rmem_max.min(8 << 20);
    let bytes_per_s = 2 * 600 * 2_300;
    Ok(Duration::from_millis(
        (queue * 1000 / bytes_per_s).clamp(50, 300),
    ))
}

fn uses_relay(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::Burst | Kind::Reorder | Kind::Duplicate | Kind::Corrupt | Kind::Stall
    )
}

fn scenario(run: &mut Run, sc: &Scenario, row: &mut Row) -> anyhow::Result<()> {
    let relay = uses_relay(sc.kind);
    run.bed.set_impairment(None)?;
    run.bed.reset_impairment_drops()?;
    let wire0 = run.bed.wire()?;
    if relay {
        run.start_relay()?;
    }
    run.start_rx(relay)?;
    run.bed.plc.cmd("run")?;
    if sc.kind == Kind::Replay {
        run.start_capture()?;
        run.capture_cmd("start session-a.cap")?;
    }
    run.start_tx()?;
    let ready = run.wait_ready(READY_TIMEOUT)?;
    row.notes.push(format!(
        "all {} tags on the mirror {:.1} s after start",
        run.monitor.total,
        ready.as_secs_f64()
    ));

    match sc.kind {
        Kind::Clean => run.watch(WINDOW)?,
        Kind::Loss(pct) => {
            run.bed.set_impairment(Some(&format!(
                "iifname \"{IT_IF}\" udp dport {LINK_PORT} numgen random mod 1000 < {} counter name \"dropped\" drop",
                pct * 10
            )))?;
            run.watch(WINDOW + Duration::from_secs(2))?;
        }
        Kind::Burst => {
            run.relay_set("burst=0.000667 burst_len=64")?;
            run.watch(WINDOW + Duration::from_secs(5))?;
        }
        Kind::Reorder => {
            run.relay_set("reorder=0.05 reorder_depth=20")?;
            run.watch(WINDOW)?;
        }
        Kind::Stall => {
            run.relay_set("loss=0.03")?;
            let stall = stall_that_fits()?;
            if stall < Duration::from_millis(250) {
                row.notes.push(format!(
                    "the IT box's net.core.rmem_max only lets gateway-rx's socket hold {} ms of \
                     this traffic: stalls shortened to that, under the 200 ms group timeout whose \
                     handling this scenario is about",
                    stall.as_millis()
                ));
            }
            let mut stalls = 0;
            let t = Instant::now();
            while t.elapsed() < WINDOW {
                run.watch(Duration::from_millis(1200))?;
                let rx = run.rx.as_ref().context("gateway-rx is not running")?;
                rx.signal("STOP")?;
                std::thread::sleep(stall);
                rx.signal("CONT")?;
                stalls += 1;
            }
            row.notes.push(format!(
                "gateway-rx stopped {stalls} times for {} ms",
                stall.as_millis()
            ));
        }
        Kind::Duplicate => {
            run.relay_set("duplicate=0.05")?;
            run.watch(WINDOW)?;
        }
        Kind::Corrupt => {
            run.relay_set("corrupt=0.02")?;
            run.watch(WINDOW)?;
        }
        Kind::RxRestart => {
            run.watch(Duration::from_secs(4))?;
            if let Some(mut rx) = run.rx.take() {
                rx.kill();
            }
            run.watch(Duration::from_secs(3))?;
            run.monitor.forget_history();
            run.start_rx(false)?;
            let t = run.wait_ready(READY_TIMEOUT)?;
            row.notes.push(format!(
                "restarted receiver served every tag {:.1} s after start",
                t.as_secs_f64()
            ));
            row.notes
                .push("rx counters are the restarted receiver's".to_string());
            run.watch(Duration::from_secs(3))?;
        }
        Kind::TxRestart => {
            run.watch(Duration::from_secs(4))?;
            if let Some(mut tx) = run.tx.take() {
                tx.kill();
            }
            run.watch(Duration::from_secs(4))?;
            run.start_tx()?;
            let t = run.wait_ready(READY_TIMEOUT)?;
            row.notes.push(format!(
                "every tag served again {:.1} s after the transmitter restarted",
                t.as_secs_f64()
            ));
            run.watch(Duration::from_secs(3))?;
            let log = run.rx_log();
            row.check(
                log_count(&log, "link down") >= 1,
                "gateway-rx did not log `link down` while the transmitter was dead",
            );
            row.check(
                log_count(&log, "new transmitter session") >= 1,
                "gateway-rx did not log a new transmitter session",
            );
        }
        Kind::Cut(secs) => {
            run.watch(Duration::from_secs(3))?;
            run.bed.set_impairment(Some(&format!(
                "iifname \"{IT_IF}\" counter name \"dropped\" drop"
            )))?;
            let before = run.monitor.unavailable_reads;
            run.watch(Duration::from_secs(secs))?;
            let during = run.monitor.unavailable_reads - before;
            let log = run.rx_log();
            let downs = log_count(&log, "link down");
            row.check(
                downs >= 1,
                "gateway-rx did not log `link down` during the cut",
            );
            row.check(
                during == 0,
                format!(
                    "the mirror refused {during} reads during the cut (it should serve the last values)"
                ),
            );
            row.notes.push(format!(
                "mirror kept serving every tag through the {secs} s cut"
            ));
            row.dropped = run.bed.impairment_drops()?;
            run.bed.set_impairment(None)?;
            let t = run.wait_ready(READY_TIMEOUT)?;
            run.watch(Duration::from_secs(3))?;
            let ups = log_count(&run.rx_log(), "link up");
            row.check(ups >= 2, "gateway-rx did not log `link up` after the cut");
            row.notes.push(format!(
                "link up again after the cut, values flowing {:.1} s later",
                t.as_secs_f64()
            ));
        }
        Kind::PlcUnplug => {
            run.watch(Duration::from_secs(3))?;
            run.bed.plc.cmd("unplug")?;
            let t = Instant::now();
            let mut refused_all = None;
            while t.elapsed() < Duration::from_secs(5) {
                let s = run.sample()?;
                if refused_all.is_none() && s.unavailable == run.monitor.total {
                    refused_all = Some(t.elapsed());
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            row.check(
                refused_all.is_some(),
                "the mirror kept serving values while the PLC was unplugged",
            );
            if let Some(d) = refused_all {
                row.notes.push(format!(
                    "mirror refused every tag (quality Bad) {:.1} s after the PLC was unplugged",
                    d.as_secs_f64()
                ));
            }
            run.bed.plc.cmd("plug")?;
            let t = run.wait_ready(READY_TIMEOUT)?;
            row.notes.push(format!(
                "values back {:.1} s after the PLC was plugged in",
                t.as_secs_f64()
            ));
            run.watch(Duration::from_secs(2))?;
        }
        Kind::Garbage { key } => attacks::garbage(run, row, key)?,
        Kind::SessionFlood { key } => attacks::session_flood(run, row, key)?,
        Kind::Replay => attacks::replay(run, row)?,
    }

    // Freeze the plant and wait for the IT side to show exactly its values.
    let step = field(&run.bed.plc.cmd("freeze")?, "step").unwrap_or(0);
    let t = Instant::now();
    let mut last = (0, 0);
    while t.elapsed() < CONVERGE_TIMEOUT {
        let r = run.bed.probe.cmd(&format!("check {step}"))?;
        let equal = field(&r, "equal").unwrap_or(0) as usize;
        let total = field(&r, "total").unwrap_or(0) as usize;
        last = (equal, total);
        if equal == total && total > 0 {
            row.converge = Some(t.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    row.values = last.0;
    row.values_total = last.1;

    // Clean tail, then stop the transmitter so every counter below is final.
    if relay {
        run.relay_set("")?;
    }
    run.bed.set_impairment(None)?;
    std::thread::sleep(Duration::from_secs(1));
    if let Some(mut tx) = run.tx.take() {
        tx.term();
    }
    std::thread::sleep(Duration::from_millis(2300));

    let wire = run.bed.wire()?.since(&wire0);
    let impairment_drops = run.bed.impairment_drops()?;
    row.rx = last_status(&run.rx_log()).unwrap_or_default();
    row.sent = wire.ot_tx;
    row.return_path = wire.it_tx + wire.ot_rx + wire.ot_udp_in + wire.ot_blocked_in;
    row.blocked = wire.it_blocked;
    row.corrupted_reads = run.monitor.corrupted_reads;
    row.regressions = run.monitor.regressions;
    row.samples = run.monitor.samples;
    if !matches!(sc.kind, Kind::Cut(_)) {
        row.dropped = impairment_drops;
    }
    if wire.it_no_ports > 0 {
        row.notes.push(format!(
            "{} datagrams reached the IT box while no gateway-rx listened",
            wire.it_no_ports
        ));
    }
    if wire.it_rcvbuf_errors > 0 {
        row.notes.push(format!(
            "{} datagrams dropped in IT socket buffers (host overload)",
            wire.it_rcvbuf_errors
        ));
    }
    let relay_stats = match run.relay.as_mut() {
        Some(r) => Some(r.cmd("stats")?),
        None => None,
    };
    row.received = match &relay_stats {
        Some(s) => field(s, "back").unwrap_or(0),
        None => wire.link_accepted,
    };

    // Checks every scenario shares.
    row.check(
        row.return_path == 0,
        format!(
            "{} packets went from the IT box towards the OT box",
            row.return_path
        ),
    );
    row.check(
        row.values == row.values_total && row.values_total > 0,
        format!(
            "the mirror showed {} of {} values of the frozen PLC after {} s",
            row.values,
            row.values_total,
            CONVERGE_TIMEOUT.as_secs()
        ),
    );
    row.check(
        row.corrupted_reads == 0,
        format!(
            "{} reads returned a value the PLC never held",
            row.corrupted_reads
        ),
    );
    row.check(
        row.regressions == 0,
        format!("{} reads went back in time", row.regressions),
    );
    row.check(
        run.rx.as_mut().is_some_and(Proc::running),
        "gateway-rx is not running",
    );
    let rx = row.rx;
    let rcvbuf_clean = wire.it_rcvbuf_errors == 0;

    match sc.kind {
        Kind::Clean => {
            row.check(
                wire.ot_tx == wire.it_rx && wire.it_rx == wire.link_accepted,
                format!(
                    "sent {} but the IT box received {} and let {} through",
                    wire.ot_tx, wire.it_rx, wire.link_accepted
                ),
            );
            row.check(
                rx.accepted == wire.link_accepted,
                format!(
                    "gateway-rx accepted {} of {} datagrams",
                    rx.accepted, wire.link_accepted
                ),
            );
            row.check(
                rx.lost == 0 && rx.repaired == 0 && rx.crc_failures == 0 && rx.duplicates == 0,
                "loss, repair, CRC failures or duplicates on a clean link",
            );
        }
        Kind::Loss(pct) => {
            let p = f64::from(pct) / 100.0;
            let arrived = wire.it_rx;
            let expected = arrived as f64 * p;
            let sd = (arrived as f64 * p * (1.0 - p)).sqrt();
            row.check(
                (row.dropped as f64 - expected).abs() <= 5.0 * sd + 5.0,
                format!(
                    "the firewall dropped {} of {arrived}, expected about {expected:.0}",
                    row.dropped
                ),
            );
            row.check(
                wire.link_accepted + row.dropped == arrived,
                format!(
                    "dropped {} + passed {} != arrived {arrived}",
                    row.dropped, wire.link_accepted
                ),
            );
            row.check(
                rx.accepted == wire.link_accepted || !rcvbuf_clean,
                format!(
                    "gateway-rx accepted {} of the {} datagrams that reached it",
                    rx.accepted, wire.link_accepted
                ),
            );
            row.check(rx.repaired > 0, "nothing was repaired");
            // Data datagrams are about 4/5 of what is sent with 16 repair per 64 data.
            let data =
                row.sent as f64 * f64::from(sc.fec.data) / f64::from(sc.fec.data + sc.fec.repair);
            let bound = match pct {
                1 => 0.001,
                5 => 0.01,
                _ => 0.03,
            };
            row.check(
                (rx.lost as f64) <= data * bound,
                format!(
                    "{} data datagrams lost, more than {:.1} % of about {data:.0}",
                    rx.lost,
                    bound * 100.0
                ),
            );
            row.check(
                rx.lost + rx.repaired <= row.dropped,
                "more lost and repaired than dropped",
            );
        }
        Kind::Burst | Kind::Reorder | Kind::Duplicate | Kind::Corrupt | Kind::Stall => {
            let s = relay_stats.unwrap_or_default();
            let f = |k: &str| field(&s, k).unwrap_or(0);
            row.dropped = f("dropped");
            let (repairable, unrecoverable) = (f("repairable"), f("unrecoverable"));
            row.notes
                .push(format!("relay: {s}", s = s.trim_start_matches("ok ")));
            row.check(
                f("front_gaps") == 0 || !rcvbuf_clean,
                format!(
                    "{} datagrams were lost on this host before the relay",
                    f("front_gaps")
                ),
            );
            if rcvbuf_clean {
                row.check(
                    rx.lost == unrecoverable,
                    format!(
                        "gateway-rx counted {} data datagrams lost; the observer computes {unrecoverable} unrecoverable",
                        rx.lost
                    ),
                );
            } else {
                // An overloaded host dropped datagrams in a socket buffer after the observer
                // saw them (the note says how many): it can only add loss and repairs, by at
                // most what went missing.
                let overflow = wire.it_rcvbuf_errors;
                row.check(
                    rx.lost >= unrecoverable
                        && rx.lost + rx.repaired <= unrecoverable + repairable + overflow,
                    format!(
                        "gateway-rx counted {} lost and {} repaired; the observer computes \
                         {unrecoverable} unrecoverable and {repairable} repairable, and {overflow} \
                         datagrams overflowed socket buffers",
                        rx.lost, rx.repaired
                    ),
                );
            }
            if sc.kind != Kind::Reorder && rcvbuf_clean {
                row.check(
                    rx.repaired == repairable,
                    format!(
                        "gateway-rx repaired {}; the observer computes {repairable} repairable",
                        rx.repaired
                    ),
                );
            }
            row.check(
                rx.crc_failures == f("back_crc"),
                format!(
                    "gateway-rx counted {} CRC failures; {} datagrams with a bad CRC reached it",
                    rx.crc_failures,
                    f("back_crc")
                ),
            );
            match sc.kind {
                Kind::Burst => {
                    let bursts = row.dropped / 64;
                    row.check(bursts >= 3, format!("only {bursts} bursts happened"));
                    row.notes.push(format!(
                        "{bursts} bursts of 64: {repairable} data datagrams repaired, {unrecoverable} unrecoverable"
                    ));
                    if sc.fec == BURST_FEC {
                        // How many bursts fall in blocks their timer closed
                        // before they were full depends on the rate the machine sustains.
                        row.check(
                            repairable > 0,
                            "FEC rebuilt none of the data datagrams the bursts took",
                        );
                    }
                }
                Kind::Reorder => {
                    // A held-back data datagram may be rebuilt by FEC before it arrives; the
                    // original is then late and dropped. Nothing may be lost.
                    row.check(f("reordered") > 0, "nothing was reordered");
                    row.check(
                        rx.lost == 0 && unrecoverable == 0,
                        format!("{} lost to reordering", rx.lost),
                    );
                    row.check(
                        rx.repaired <= f("reordered"),
                        format!(
                            "gateway-rx repaired {} with only {} datagrams held back",
                            rx.repaired,
                            f("reordered")
                        ),
                    );
                    row.notes.push(format!(
                        "{} held-back data datagrams were rebuilt by FEC before they arrived",
                        rx.repaired
                    ));
                }
                Kind::Duplicate => {
                    row.check(
                        rx.duplicates == f("duplicated"),
                        format!(
                            "gateway-rx counted {} duplicates of {} made",
                            rx.duplicates,
                            f("duplicated")
                        ),
                    );
                    row.check(
                        rx.lost == 0 && rx.repaired == 0,
                        "duplicates caused loss or repair",
                    );
                }
                Kind::Stall => {
                    row.check(
                        repairable > 0,
                        "the relay's loss left nothing for FEC to repair",
                    );
                    row.check(
                        rcvbuf_clean,
                        "the stalls overflowed gateway-rx's socket buffer",
                    );
                }
                Kind::Corrupt => {
                    row.check(
                        f("corrupted") > 0 && f("back_crc") + f("back_magic") == f("corrupted"),
                        format!(
                            "relay corrupted {} but {} bad CRC + {} bad magic reached gateway-rx",
                            f("corrupted"),
                            f("back_crc"),
                            f("back_magic")
                        ),
                    );
                }
                _ => {}
            }
        }
        Kind::Garbage { .. } | Kind::SessionFlood { .. } => {
            row.check(
                rx.accepted == wire.link_accepted,
                format!(
                    "gateway-rx accepted {} datagrams; {} came over the diode",
                    rx.accepted, wire.link_accepted
                ),
            );
            row.check(rx.lost == 0, format!("{} data datagrams lost", rx.lost));
            row.check(
                rx.session_changes == 0,
                format!("gateway-rx changed session {} times", rx.session_changes),
            );
        }
        Kind::Replay => {
            // The restarted receiver took every datagram the diode passed since it started
            // (with the link cut: none) and not one of the replays.
            let since = run.replay_rx_start.unwrap_or_default();
            let diode = wire.link_accepted + wire0.link_accepted - since.link_accepted;
            row.check(
                rx.accepted == diode,
                format!(
                    "the restarted gateway-rx accepted {} datagrams; {diode} came over the diode \
                     since it started",
                    rx.accepted
                ),
            );
            row.check(
                rx.session_changes == 0,
                format!("gateway-rx changed session {} times", rx.session_changes),
            );
        }
        Kind::RxRestart | Kind::TxRestart | Kind::PlcUnplug => {
            row.check(
                rx.crc_failures == 0 && rx.auth_failures == 0,
                "datagrams rejected",
            );
            if sc.kind == Kind::RxRestart {
                if rx.lost > 0 {
                    row.findings.push(format!(
                        "the restarted receiver counted {} data datagrams lost: the ones the \
                         transmitter sent before it started (it joins a running session as if \
                         it had missed them)",
                        rx.lost
                    ));
                }
            } else {
                row.check(
                    rx.lost == 0 && rx.repaired == 0,
                    format!("{} lost, {} repaired on a clean link", rx.lost, rx.repaired),
                );
            }
        }
        Kind::Cut(_) => {
            // The cut's datagrams are lost for good (nothing is re-sent); gateway-rx counts the
            // data among them exactly, less the few FEC rebuilt at the edges.
            row.check(
                rx.lost > 0 && rx.lost <= row.dropped && 2 * rx.lost >= row.dropped,
                format!(
                    "{} data datagrams counted lost for {} dropped by the cut",
                    rx.lost, row.dropped
                ),
            );
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// A scenario's processes

struct Run<'a> {
    bed: &'a mut Bed,
    dir: PathBuf,
    rx: Option<Proc>,
    tx: Option<Proc>,
    relay: Option<Agent>,
    rx_instances: u32,
    tx_instances: u32,
    key: bool,
    /// Configs as daemons built before `insecure_no_key` and `state_file` take them.
    legacy_config: bool,
    fec: Fec,
    monitor: Monitor,
    capture: Option<Agent>,
    /// Attacker processes started so far (each logs to a file of its own).
    attackers: u32,
    /// The link counters when the replay scenario restarted the receiver.
    replay_rx_start: Option<Wire>,
}

impl Run<'_> {
    /// The `[link]` lines of authentication for `side` ("tx" or "rx"): the key and the
    /// side's link state file, or the explicit choice of none.
    fn key_line(&self, side: &str) -> anyhow::Result<String> {
        if !self.key {
            if self.legacy_config {
                return Ok(String::new());
            }
            return Ok("insecure_no_key = true\n".to_string());
        }
        let path = self.dir.join("link.key");
        if !path.exists() {
            // A fixed, non-zero test key; mode 0600 as the config loader demands.
            let hex: String = (0..32u8)
                .map(|i| format!("{:02x}", i.wrapping_mul(37).wrapping_add(11)))
                .collect();
            std::fs::write(&path, hex)?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        }
        if self.legacy_config {
            return Ok("key_file = \"link.key\"\n".to_string());
        }
        Ok(format!(
            "key_file = \"link.key\"\nstate_file = \"{side}-link.state\"\n"
        ))
    }

    fn start_rx(&mut self, behind_relay: bool) -> anyhow::Result<()> {
        self.rx_instances += 1;
        let bind = if behind_relay {
            RX_BEHIND_RELAY.to_string()
        } else {
            format!("{IT_ADDR}:{LINK_PORT}")
        };
        let text = format!(
            "[link]\nbind = \"{bind}\"\n{}heartbeat_timeout_ms = {HEARTBEAT_TIMEOUT_MS}\n\n\
             [modbus_server]\nbind = \"{MIRROR}\"\n\n[status]\nlog_interval_s = 1\n",
            self.key_line("rx")?
        );
        let config = self
            .dir
            .join(format!("gateway-rx-{}.toml", self.rx_instances));
        std::fs::write(&config, text)?;
        let log = self.rx_log();
        let c = config.to_string_lossy().to_string();
        let args = ["--log-format", "json", "run", "--config", c.as_str()];
        let mut rx = Proc::spawn(NS_IT, &self.bed.bins.rx, &args, &log, "gateway-rx")?;
        // Whatever the transmitter sends before the link socket exists is refused by the
        // kernel (UDP NoPorts), uncounted by gateway-rx: start it only once gateway-rx listens,
        // as a slow host may take a while to get there.
        let t = Instant::now();
        while log_count(&log, "link socket bound") == 0 {
            anyhow::ensure!(
                rx.running(),
                "gateway-rx exited while starting; see {}",
                log.display()
            );
            anyhow::ensure!(
                t.elapsed() < READY_TIMEOUT,
                "gateway-rx did not bind its link socket within {} s",
                READY_TIMEOUT.as_secs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        self.rx = Some(rx);
        Ok(())
    }

    fn rx_log(&self) -> PathBuf {
        self.dir
            .join(format!("gateway-rx-{}.log", self.rx_instances.max(1)))
    }

    fn start_tx(&mut self) -> anyhow::Result<()> {
        self.tx_instances += 1;
        let plc: std::net::SocketAddr = PLC.parse()?;
        let mut text = format!(
            "[link]\ndestination = \"{IT_ADDR}:{LINK_PORT}\"\nbind = \"{OT_ADDR}:0\"\n{}\
             heartbeat_ms = {HEARTBEAT_MS}\ncatalogue_interval_s = {CATALOGUE_INTERVAL_S}\n\
             snapshot_period_s = {SNAPSHOT_PERIOD_S}\n\n[link.fec]\ndata_shards = {}\n\
             repair_shards = {}\ninterleave = {}\nflush_ms = {}\nblock_ms = {}\n\n",
            self.key_line("tx")?,
            self.fec.data,
            self.fec.repair,
            self.fec.interleave,
            self.fec.flush_ms,
            self.fec.block_ms,
        );
        text.push_str(&tests::plc_sim::demo_device_toml("plc1", plc, POLL_MS, 500));
        for i in 0..BULK {
            let _ = write!(
                text,
                "[[modbus.tag]]\nname = \"plc1/bulk/r{i:04}\"\ntable = \"holding\"\naddress = {}\ntype = \"u16\"\n\n",
                BULK_BASE + i
            );
        }
        let config = self
            .dir
            .join(format!("gateway-tx-{}.toml", self.tx_instances));
        std::fs::write(&config, text)?;
        let log = self
            .dir
            .join(format!("gateway-tx-{}.log", self.tx_instances));
        let c = config.to_string_lossy().to_string();
        let args = ["--log-format", "json", "run", "--config", c.as_str()];
        self.tx = Some(Proc::spawn(
            NS_OT,
            &self.bed.bins.tx,
            &args,
            &log,
            "gateway-tx",
        )?);
        Ok(())
    }

    fn start_relay(&mut self) -> anyhow::Result<()> {
        let listen = format!("{IT_ADDR}:{LINK_PORT}");
        let args = [
            "relay",
            "--listen",
            listen.as_str(),
            "--target",
            RX_BEHIND_RELAY,
            "--seed",
            "5",
        ];
        let log = self.dir.join("relay.log");
        let mut a = Agent::spawn(NS_IT, &self.bed.bins.agent, &args, &log, "relay")?;
        a.ready()?;
        self.relay = Some(a);
        Ok(())
    }

    fn relay_set(&mut self, impairments: &str) -> anyhow::Result<()> {
        let r = self
            .relay
            .as_mut()
            .ok_or_else(|| anyhow::anyhow!("no relay"))?;
        r.cmd(&format!("set {impairments}"))?;
        Ok(())
    }

    /// The link capture in the IT box (`diode-agent capture`).
    fn start_capture(&mut self) -> anyhow::Result<()> {
        let port = LINK_PORT.to_string();
        let args = ["capture", "--from", OT_ADDR, "--port", port.as_str()];
        let log = self.dir.join("capture.log");
        let mut a = Agent::spawn(NS_IT, &self.bed.bins.agent, &args, &log, "capture")?;
        a.ready()?;
        self.capture = Some(a);
        Ok(())
    }

    /// `start FILE` (a file name in the scenario's directory) or `stop`.
    fn capture_cmd(&mut self, line: &str) -> anyhow::Result<String> {
        let line = match line.strip_prefix("start ") {
            Some(name) => format!("start {}", self.dir.join(name).display()),
            None => line.to_string(),
        };
        self.capture.as_mut().context("no capture")?.cmd(&line)
    }

    /// Runs `diode-agent ARGS` on the host on the IT network until it exits, reading the mirror
    /// all the while and once after; returns the agent's summary and what the mirror showed.
    fn send_from_it_lan(
        &mut self,
        label: &str,
        args: &[String],
    ) -> anyhow::Result<(String, Window)> {
        self.attackers += 1;
        let log = self
            .dir
            .join(format!("it-lan-{}-{label}.log", self.attackers));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mark = self.monitor.mark();
        let mut p = Proc::spawn(NS_X, &self.bed.bins.agent, &args, &log, "it-lan host")?;
        let t = Instant::now();
        while p.running() && t.elapsed() < AGENT_TIMEOUT {
            self.sample()?;
            std::thread::sleep(Duration::from_millis(150));
        }
        p.kill();
        self.sample()?;
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let summary = text
            .lines()
            .find(|l| l.starts_with("ok "))
            .with_context(|| {
                format!(
                    "{label}: the sender reported nothing; see {}",
                    log.display()
                )
            })?
            .to_string();
        Ok((summary, self.monitor.since(&mark)))
    }

    /// gateway-rx's last status line (its counters up to a second ago).
    fn status_now(&self) -> RxStatus {
        last_status(&self.rx_log()).unwrap_or_default()
    }

    /// gateway-rx's counters once it has dealt with everything sent so far: the first status
    /// line, of those logged from now on, whose rejections did not change since the line before.
    /// Reads the mirror meanwhile.
    fn settled_status(&mut self) -> anyhow::Result<RxStatus> {
        let log = self.rx_log();
        let n0 = statuses(&log).len();
        let t = Instant::now();
        loop {
            let all = statuses(&log);
            if all.len() >= n0 + 2 {
                let (a, b) = (all[all.len() - 2], all[all.len() - 1]);
                if a.rejected() == b.rejected() {
                    return Ok(b);
                }
            }
            anyhow::ensure!(
                t.elapsed() < CONVERGE_TIMEOUT,
                "gateway-rx's rejection counters did not settle within {} s",
                CONVERGE_TIMEOUT.as_secs()
            );
            self.sample()?;
            std::thread::sleep(Duration::from_millis(150));
        }
    }

    /// The session id the running transmitter logged at start.
    fn tx_session(&self) -> anyhow::Result<u64> {
        let log = self
            .dir
            .join(format!("gateway-tx-{}.log", self.tx_instances));
        let text = std::fs::read_to_string(&log)?;
        text.lines()
            .filter(|l| l.contains("\"message\":\"gateway-tx running"))
            .find_map(|l| json_string(l, "session"))
            .and_then(|s| u64::from_str_radix(&s, 16).ok())
            .with_context(|| format!("no session in {}", log.display()))
    }

    /// The sessions the running receiver logged taking, in order.
    fn rx_sessions(&self) -> Vec<u64> {
        let text = std::fs::read_to_string(self.rx_log()).unwrap_or_default();
        text.lines()
            .filter(|l| l.contains("\"message\":\"new transmitter session"))
            .filter_map(|l| json_string(l, "session"))
            .filter_map(|s| u64::from_str_radix(&s, 16).ok())
            .collect()
    }

    /// One read of every tag, checked against the PLC's step read right after it.
    fn sample(&mut self) -> anyhow::Result<SampleSummary> {
        let line = self.bed.probe.cmd("sample")?;
        let step = field(&self.bed.plc.cmd("step")?, "step").unwrap_or(0);
        Ok(self.monitor.add(&line, step))
    }

    /// Samples the mirror for `d`.
    fn watch(&mut self, d: Duration) -> anyhow::Result<()> {
        let t = Instant::now();
        while t.elapsed() < d {
            self.sample()?;
            std::thread::sleep(Duration::from_millis(250));
        }
        Ok(())
    }

    /// Waits until the mirror serves every tag; returns how long that took.
    fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<Duration> {
        let t = Instant::now();
        loop {
            let s = self.sample()?;
            if s.unavailable == 0 && self.monitor.total > 0 {
                return Ok(t.elapsed());
            }
            anyhow::ensure!(
                t.elapsed() < timeout,
                "the mirror served only {} of {} tags after {} s",
                self.monitor.total - s.unavailable,
                self.monitor.total,
                timeout.as_secs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn stop_all(&mut self) {
        if let Some(mut tx) = self.tx.take() {
            tx.term();
        }
        if let Some(mut rx) = self.rx.take() {
            rx.term();
        }
        if let Some(relay) = self.relay.take() {
            drop(relay);
        }
        if let Some(capture) = self.capture.take() {
            drop(capture);
        }
        let _ = self.bed.plc.cmd("run");
        let _ = self.bed.plc.cmd("plug");
    }
}

/// A fresh read of a bulk register shows a step at most this far (2 s) behind the PLC's.
const FRESH_STEPS: u64 = 2000 / PLC_PERIOD_MS;

/// What the mirror reads showed over a scenario.
#[derive(Default)]
struct Monitor {
    total: usize,
    samples: u64,
    /// Reads of a value the PLC never held up to the step it was at.
    corrupted_reads: u64,
    /// Reads of a bulk register showing an older step than an earlier read.
    regressions: u64,
    unavailable_reads: u64,
    /// Reads that served a value.
    served_reads: u64,
    /// Samples with a tag unavailable, or a bulk register more than [`FRESH_STEPS`] behind.
    stale_samples: u64,
    /// Per sample: how many steps its oldest bulk register was behind the PLC (`None` when
    /// it served no bulk register).
    lags: Vec<Option<u64>>,
    last_bulk: Vec<Option<u64>>,
}

/// The monitor's counters at a point in time.
struct Mark {
    samples: u64,
    corrupted: u64,
    regressions: u64,
    served: u64,
    stale: u64,
}

/// What the mirror showed between a [`Mark`] and now.
#[derive(Default, Clone, Copy)]
struct Window {
    samples: u64,
    stale: u64,
    served: u64,
    corrupted: u64,
    regressions: u64,
    /// The largest lag of a bulk register behind the PLC, in steps.
    max_lag: Option<u64>,
}

impl Window {
    fn max_lag_text(&self) -> String {
        match self.max_lag {
            Some(l) => format!("{} ms", l * PLC_PERIOD_MS),
            None => "-".to_string(),
        }
    }
}

struct SampleSummary {
    unavailable: usize,
}

impl Monitor {
    fn add(&mut self, line: &str, step: u64) -> SampleSummary {
        let tokens: Vec<&str> = line.split_whitespace().skip(1).collect();
        self.total = tokens.len();
        self.samples += 1;
        let demo = DEMO_TAGS.len();
        if self.last_bulk.len() != tokens.len().saturating_sub(demo) {
            self.last_bulk = vec![None; tokens.len().saturating_sub(demo)];
        }
        let mut unavailable = 0;
        let mut lag: Option<u64> = None;
        for (k, t) in tokens.iter().enumerate() {
            match *t {
                "-" => unavailable += 1,
                "x" => self.corrupted_reads += 1,
                n => {
                    self.served_reads += 1;
                    let Ok(s) = n.parse::<u64>() else {
                        self.corrupted_reads += 1;
                        continue;
                    };
                    // Bulk steps are modulo 2^16; a run stays far below that.
                    if s > step {
                        self.corrupted_reads += 1;
                    }
                    if k >= demo {
                        let last = &mut self.last_bulk[k - demo];
                        if last.is_some_and(|l| s < l) {
                            self.regressions += 1;
                        }
                        *last = Some(s);
                        lag = Some(lag.unwrap_or(0).max(step.saturating_sub(s)));
                    }
                }
            }
        }
        self.unavailable_reads += unavailable as u64;
        if unavailable > 0 || lag.is_some_and(|l| l > FRESH_STEPS) {
            self.stale_samples += 1;
        }
        self.lags.push(lag);
        SampleSummary { unavailable }
    }

    fn mark(&self) -> Mark {
        Mark {
            samples: self.samples,
            corrupted: self.corrupted_reads,
            regressions: self.regressions,
            served: self.served_reads,
            stale: self.stale_samples,
        }
    }

    fn since(&self, m: &Mark) -> Window {
        let from = usize::try_from(m.samples).unwrap_or(usize::MAX);
        Window {
            samples: self.samples - m.samples,
            stale: self.stale_samples - m.stale,
            served: self.served_reads - m.served,
            corrupted: self.corrupted_reads - m.corrupted,
            regressions: self.regressions - m.regressions,
            max_lag: self
                .lags
                .get(from..)
                .and_then(|l| l.iter().flatten().max().copied()),
        }
    }

    /// A new receiver starts from nothing; what the old one served says nothing about it.
    fn forget_history(&mut self) {
        self.last_bulk.iter_mut().for_each(|l| *l = None);
    }
}

// ---------------------------------------------------------------------------------------------
// The test bed

struct Bins {
    tx: PathBuf,
    rx: PathBuf,
    agent: PathBuf,
    netns: PathBuf,
    /// The IT box's shipped rule set (`deploy/nftables/it-box.nft`).
    it_rules: PathBuf,
}

struct Bed {
    bins: Bins,
    work: PathBuf,
    plc: Agent,
    probe: Agent,
}

impl Bed {
    fn up(bins: Bins) -> anyhow::Result<Bed> {
        let work = common::daemons::target_dir().join("systest").join("work");
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work)?;
        netns(&bins.netns, "up")?;
        // From here on, dropping a half-built bed must still tear the namespaces down.
        let guard = NetnsGuard(bins.netns.clone());
        let bulk = BULK.to_string();
        let base = BULK_BASE.to_string();
        let period = PLC_PERIOD_MS.to_string();
        let mut plc = Agent::spawn(
            NS_OT,
            &bins.agent,
            &[
                "plc",
                "--listen",
                PLC,
                "--period-ms",
                &period,
                "--bulk",
                &bulk,
                "--bulk-base",
                &base,
            ],
            &work.join("plc.log"),
            "plc",
        )?;
        plc.ready()?;
        let mut probe = Agent::spawn(
            NS_IT,
            &bins.agent,
            &[
                "probe",
                "--mirror",
                MIRROR,
                "--bulk",
                &bulk,
                "--bulk-base",
                &base,
            ],
            &work.join("probe.log"),
            "probe",
        )?;
        probe.ready()?;
        std::mem::forget(guard);
        Ok(Bed {
            bins,
            work,
            plc,
            probe,
        })
    }

    /// Replaces the impairment rules on the IT box's ingress (`None` clears them).
    fn set_impairment(&self, rule: Option<&str>) -> anyhow::Result<()> {
        let mut script = "flush chain inet impair pre\n".to_string();
        if let Some(r) = rule {
            let _ = writeln!(script, "add rule inet impair pre {r}");
        }
        nft_script(NS_IT, &script)
    }

    /// The IT firewall's rule that drops the link port from anywhere but the diode, as the
    /// shipped rule set writes it (the last input rule), ready for `nft add rule`.
    fn shipped_link_port_rule(&self) -> anyhow::Result<String> {
        let text = std::fs::read_to_string(&self.bins.it_rules)?;
        let line = text
            .lines()
            .map(str::trim)
            .find(|l| is_link_port_rule(l))
            .with_context(|| {
                format!(
                    "{} has no link-port rule (`udp dport $LINK_PORT ... drop`)",
                    self.bins.it_rules.display()
                )
            })?;
        Ok(line.replace("$LINK_PORT", &LINK_PORT.to_string()))
    }

    /// The link-port rule in the IT box's firewall: its handle and how many packets it dropped.
    fn link_port_rule(&self) -> anyhow::Result<Option<(u64, u64)>> {
        let text = ns_output(
            NS_IT,
            &["nft", "-a", "list", "chain", "inet", "gateway_it", "input"],
        )?;
        Ok(text.lines().filter(|l| is_link_port_rule(l)).find_map(|l| {
            let handle = l.rsplit("# handle ").next()?.trim().parse().ok()?;
            Some((handle, packets(l)?))
        }))
    }

    /// Packets the link-port rule dropped since it was (re)loaded; `None` while it is removed.
    fn link_port_drops(&self) -> anyhow::Result<Option<u64>> {
        Ok(self.link_port_rule()?.map(|(_, p)| p))
    }

    /// Removes the shipped link-port rule, or puts it back (at the end of the chain, where the
    /// shipped rule set has it).
    fn set_link_port_rule(&self, present: bool) -> anyhow::Result<()> {
        match (self.link_port_rule()?, present) {
            (Some(_), true) | (None, false) => Ok(()),
            (Some((handle, _)), false) => nft_script(
                NS_IT,
                &format!("delete rule inet gateway_it input handle {handle}\n"),
            ),
            // A rule set that ships without the rule has nothing to put back.
            (None, true) => match self.shipped_link_port_rule() {
                Ok(rule) => nft_script(NS_IT, &format!("add rule inet gateway_it input {rule}\n")),
                Err(_) => Ok(()),
            },
        }
    }

    /// Packets the impairment rules dropped since [`Bed::reset_impairment_drops`].
    fn impairment_drops(&self) -> anyhow::Result<u64> {
        let t = ns_output(
            NS_IT,
            &["nft", "list", "counter", "inet", "impair", "dropped"],
        )?;
        Ok(t.lines().filter_map(packets).sum())
    }

    fn reset_impairment_drops(&self) -> anyhow::Result<()> {
        ns_output(
            NS_IT,
            &["nft", "reset", "counter", "inet", "impair", "dropped"],
        )?;
        Ok(())
    }

    fn wire(&self) -> anyhow::Result<Wire> {
        let stat = |ns: &str, dev: &str, what: &str| -> anyhow::Result<u64> {
            let t = ns_output(
                ns,
                &["cat", &format!("/sys/class/net/{dev}/statistics/{what}")],
            )?;
            Ok(t.trim().parse()?)
        };
        let it_rules = ns_output(NS_IT, &["nft", "list", "table", "inet", "gateway_it"])?;
        let ot_rules = ns_output(NS_OT, &["nft", "list", "table", "inet", "gateway_ot"])?;
        let it_snmp = ns_output(NS_IT, &["cat", "/proc/net/snmp"])?;
        let rule = |text: &str, needles: &[&str]| -> u64 {
            text.lines()
                .filter(|l| needles.iter().all(|n| l.contains(n)))
                .filter_map(packets)
                .sum()
        };
        Ok(Wire {
            ot_tx: stat(NS_OT, OT_IF, "tx_packets")?,
            ot_rx: stat(NS_OT, OT_IF, "rx_packets")?,
            it_rx: stat(NS_IT, IT_IF, "rx_packets")?,
            it_tx: stat(NS_IT, IT_IF, "tx_packets")?,
            it_blocked: rule(&it_rules, &["oifname", "drop"]),
            link_accepted: rule(&it_rules, &["iifname", "accept"]),
            ot_blocked_in: rule(&ot_rules, &["iifname", "drop"]),
            ot_udp_in: snmp(
                &ns_output(NS_OT, &["cat", "/proc/net/snmp"])?,
                "Udp",
                "InDatagrams",
            ),
            it_rcvbuf_errors: snmp(&it_snmp, "Udp", "RcvbufErrors"),
            it_no_ports: snmp(&it_snmp, "Udp", "NoPorts"),
        })
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        // The agents end at end of input; the namespaces go, with anything left in them.
        let _ = netns(&self.bins.netns, "down");
    }
}

struct NetnsGuard(PathBuf);

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        let _ = netns(&self.0, "down");
    }
}

fn netns(script: &Path, what: &str) -> anyhow::Result<()> {
    let out = Command::new("bash").arg(script).arg(what).output()?;
    anyhow::ensure!(
        out.status.success(),
        "{} {what}: {}{}",
        script.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Counters of the link, cumulative since the namespaces were made.
#[derive(Default, Clone, Copy, Debug)]
struct Wire {
    ot_tx: u64,
    ot_rx: u64,
    it_rx: u64,
    it_tx: u64,
    /// Packets the IT box's firewall dropped on their way out of the diode interface.
    it_blocked: u64,
    /// Link datagrams the IT box's firewall let through.
    link_accepted: u64,
    ot_blocked_in: u64,
    ot_udp_in: u64,
    it_rcvbuf_errors: u64,
    /// UDP datagrams that reached the IT box when no socket listened on their port.
    it_no_ports: u64,
}

impl Wire {
    fn since(&self, b: &Wire) -> Wire {
        Wire {
            ot_tx: self.ot_tx - b.ot_tx,
            ot_rx: self.ot_rx - b.ot_rx,
            it_rx: self.it_rx - b.it_rx,
            it_tx: self.it_tx - b.it_tx,
            it_blocked: self.it_blocked - b.it_blocked,
            link_accepted: self.link_accepted - b.link_accepted,
            ot_blocked_in: self.ot_blocked_in - b.ot_blocked_in,
            ot_udp_in: self.ot_udp_in - b.ot_udp_in,
            it_rcvbuf_errors: self.it_rcvbuf_errors - b.it_rcvbuf_errors,
            it_no_ports: self.it_no_ports - b.it_no_ports,
        }
    }
}

/// Runs an nft script in a namespace.
fn nft_script(ns: &str, script: &str) -> anyhow::Result<()> {
    let mut c = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(mut i) = c.stdin.take() {
        i.write_all(script.as_bytes())?;
    }
    let out = c.wait_with_output()?;
    anyhow::ensure!(
        out.status.success(),
        "nft: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// The IT firewall's input rule for the link port from anywhere but the diode (the rule that
/// accepts it on the diode names the interface).
fn is_link_port_rule(line: &str) -> bool {
    line.contains("udp dport") && line.contains("drop") && !line.contains("iifname")
}

fn ns_output(ns: &str, cmd: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns])
        .args(cmd)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "{ns}: {}: {}",
        cmd.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The `packets N` of an nft rule line.
fn packets(line: &str) -> Option<u64> {
    let rest = &line[line.find("packets ")? + 8..];
    rest.split_whitespace().next()?.parse().ok()
}

/// A counter of /proc/net/snmp (a header line and a value line per protocol).
fn snmp(text: &str, proto: &str, name: &str) -> u64 {
    let prefix = format!("{proto}:");
    let mut lines = text.lines().filter(|l| l.starts_with(&prefix));
    let (Some(h), Some(v)) = (lines.next(), lines.next()) else {
        return 0;
    };
    h.split_whitespace()
        .zip(v.split_whitespace())
        .find(|(k, _)| *k == name)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// Processes

/// A daemon in a namespace, output to a log file.
struct Proc {
    name: &'static str,
    child: Child,
}

impl Proc {
    fn spawn(
        ns: &str,
        program: &Path,
        args: &[&str],
        log: &Path,
        name: &'static str,
    ) -> anyhow::Result<Proc> {
        let out = std::fs::File::create(log)?;
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .map_err(|e| anyhow::anyhow!("starting {name}: {e}"))?;
        Ok(Proc { name, child })
    }

    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM, then SIGKILL if it has not ended within 3 s.
    fn term(&mut self) {
        if self.running() {
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status();
            let t = Instant::now();
            while self.running() && t.elapsed() < Duration::from_secs(3) {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        self.kill();
    }

    /// Sends a signal by name (`STOP`, `CONT`, ...).
    fn signal(&self, name: &str) -> anyhow::Result<()> {
        let ok = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()?
            .success();
        anyhow::ensure!(ok, "kill -{name} {} failed", self.child.id());
        Ok(())
    }

    fn kill(&mut self) {
        if self.running() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.running() {
            eprintln!("stopping {}", self.name);
        }
        self.kill();
    }
}

/// A `diode-agent` driven over its standard input and output.
struct Agent {
    name: &'static str,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

impl Agent {
    fn spawn(
        ns: &str,
        program: &Path,
        args: &[&str],
        log: &Path,
        name: &'static str,
    ) -> anyhow::Result<Agent> {
        let err = std::fs::File::create(log)?;
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(err)
            .spawn()
            .map_err(|e| anyhow::anyhow!("starting {name}: {e}"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("{name}: no stdout"))?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Agent {
            name,
            stdin: child.stdin.take(),
            child,
            lines,
        })
    }

    fn ready(&mut self) -> anyhow::Result<String> {
        self.reply().and_then(|l| {
            if l.starts_with("ready") {
                Ok(l)
            } else {
                Err(anyhow::anyhow!("{}: {l}", self.name))
            }
        })
    }

    fn reply(&mut self) -> anyhow::Result<String> {
        match self.lines.recv_timeout(AGENT_TIMEOUT) {
            Ok(l) => Ok(l),
            Err(_) => {
                let status = self.child.try_wait().ok().flatten();
                Err(anyhow::anyhow!(
                    "{} did not answer within {} s (exit status {status:?})",
                    self.name,
                    AGENT_TIMEOUT.as_secs()
                ))
            }
        }
    }

    fn cmd(&mut self, line: &str) -> anyhow::Result<String> {
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| anyhow::anyhow!("{}: closed", self.name))?;
        writeln!(stdin, "{line}")?;
        stdin.flush()?;
        let r = self.reply()?;
        anyhow::ensure!(r.starts_with("ok"), "{} {line}: {r}", self.name);
        Ok(r)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        // End of input ends an agent; kill it if it does not go.
        drop(self.stdin.take());
        let t = Instant::now();
        while matches!(self.child.try_wait(), Ok(None)) && t.elapsed() < Duration::from_secs(2) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// gateway-rx's status log

/// gateway-rx's counters (daemons that predate a counter log none: it reads 0).
#[derive(Default, Clone, Copy, Debug)]
struct RxStatus {
    received: u64,
    accepted: u64,
    repaired: u64,
    lost: u64,
    crc_failures: u64,
    auth_failures: u64,
    duplicates: u64,
    bad_magic: u64,
    bad_length: u64,
    bad_version: u64,
    malformed: u64,
    out_of_window: u64,
    stale_session: u64,
    replayed: u64,
    key_rate_limited: u64,
    session_changes: u64,
}

impl RxStatus {
    /// The rejection counters by name, in the status line's order.
    fn rejections(&self) -> [(&'static str, u64); 11] {
        [
            ("crc", self.crc_failures),
            ("auth", self.auth_failures),
            ("duplicate", self.duplicates),
            ("bad magic", self.bad_magic),
            ("bad length", self.bad_length),
            ("bad version", self.bad_version),
            ("malformed", self.malformed),
            ("out of window", self.out_of_window),
            ("stale session", self.stale_session),
            ("replayed", self.replayed),
            ("key rate-limited", self.key_rate_limited),
        ]
    }

    fn rejected(&self) -> u64 {
        self.rejections().iter().map(|(_, n)| n).sum()
    }

    /// The rejection counters that are not 0, as the report shows them.
    fn counted(&self) -> String {
        let parts: Vec<String> = self
            .rejections()
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        if parts.is_empty() {
            "nothing".to_string()
        } else {
            parts.join(", ")
        }
    }

    /// The counts since `b`, an earlier line of the same receiver.
    fn since(&self, b: &RxStatus) -> RxStatus {
        RxStatus {
            received: self.received.saturating_sub(b.received),
            accepted: self.accepted.saturating_sub(b.accepted),
            repaired: self.repaired.saturating_sub(b.repaired),
            lost: self.lost.saturating_sub(b.lost),
            crc_failures: self.crc_failures.saturating_sub(b.crc_failures),
            auth_failures: self.auth_failures.saturating_sub(b.auth_failures),
            duplicates: self.duplicates.saturating_sub(b.duplicates),
            bad_magic: self.bad_magic.saturating_sub(b.bad_magic),
            bad_length: self.bad_length.saturating_sub(b.bad_length),
            bad_version: self.bad_version.saturating_sub(b.bad_version),
            malformed: self.malformed.saturating_sub(b.malformed),
            out_of_window: self.out_of_window.saturating_sub(b.out_of_window),
            stale_session: self.stale_session.saturating_sub(b.stale_session),
            replayed: self.replayed.saturating_sub(b.replayed),
            key_rate_limited: self.key_rate_limited.saturating_sub(b.key_rate_limited),
            session_changes: self.session_changes.saturating_sub(b.session_changes),
        }
    }
}

/// Every `status` line of a gateway-rx JSON log, in order.
fn statuses(log: &Path) -> Vec<RxStatus> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .filter(|l| l.contains("\"message\":\"status\""))
        .map(|line| {
            let n = |k: &str| json_number(line, k).unwrap_or(0);
            RxStatus {
                received: n("received"),
                accepted: n("accepted"),
                repaired: n("repaired"),
                lost: n("lost"),
                crc_failures: n("crc_failures"),
                auth_failures: n("auth_failures"),
                duplicates: n("duplicates"),
                bad_magic: n("bad_magic"),
                bad_length: n("bad_length"),
                bad_version: n("bad_version"),
                malformed: n("malformed"),
                out_of_window: n("out_of_window"),
                stale_session: n("stale_session"),
                replayed: n("replayed"),
                key_rate_limited: n("key_rate_limited"),
                session_changes: n("session_changes"),
            }
        })
        .collect()
}

/// The last `status` line of a gateway-rx JSON log.
fn last_status(log: &Path) -> Option<RxStatus> {
    statuses(log).pop()
}

/// A string field of a JSON log line.
fn json_string(line: &str, key: &str) -> Option<String> {
    let pat = format!("\"{key}\":\"");
    let rest = &line[line.find(&pat)? + pat.len()..];
    Some(rest[..rest.find('"')?].to_string())
}

fn json_number(line: &str, key: &str) -> Option<u64> {
    let pat = format!("\"{key}\":");
    let rest = &line[line.find(&pat)? + pat.len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

fn log_count(log: &Path, message: &str) -> usize {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let pat = format!("\"message\":\"{message}");
    text.lines().filter(|l| l.contains(&pat)).count()
}

/// `key N` or `key=N` in an agent's reply.
fn field(line: &str, key: &str) -> Option<u64> {
    let words: Vec<&str> = line.split_whitespace().collect();
    for (i, w) in words.iter().enumerate() {
        if let Some(v) = w.strip_prefix(key).and_then(|r| r.strip_prefix('=')) {
            return v.parse().ok();
        }
        if *w == key {
            return words.get(i + 1)?.parse().ok();
        }
    }
    None
}

// ---------------------------------------------------------------------------------------------
// Preflight and locating things

fn preflight(ci: bool) -> Result<Bins, String> {
    if !ci && std::env::var("DIODE_SKIP").is_ok_and(|v| v == "1") {
        return Err("DIODE_SKIP=1".to_string());
    }
    if !common::daemons::is_root() {
        return Err("not root (network namespaces need root)".to_string());
    }
    let works = |prog: &str, args: &[&str]| {
        Command::new(prog)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !works("ip", &["netns", "list"]) {
        return Err("`ip netns` is not available (install iproute2)".to_string());
    }
    if !works("nft", &["--version"]) {
        return Err("`nft` is not available (install nftables)".to_string());
    }
    let daemons = common::daemons::release_daemons()?;
    let workspace = common::daemons::workspace();
    let netns = workspace.join("systest").join("netns.sh");
    if !netns.is_file() {
        return Err(format!("{} is missing", netns.display()));
    }
    let it_rules = workspace.join("deploy").join("nftables").join("it-box.nft");
    if !it_rules.is_file() {
        return Err(format!("{} is missing", it_rules.display()));
    }
    Ok(Bins {
        tx: daemons.tx,
        rx: daemons.rx,
        agent: PathBuf::from(env!("CARGO_BIN_EXE_diode-agent")),
        netns,
        it_rules,
    })
}

fn bins_report_path() -> PathBuf {
    common::daemons::target_dir()
        .join("systest")
        .join("report.md")
}

/// One run of the test bed at a time on a machine (the namespaces have fixed names).
struct RunLock(PathBuf);

impl RunLock {
    fn acquire(wait: Duration) -> Result<RunLock, String> {
        let path = PathBuf::from("/run/gw-diode-systest.lock");
        let t = Instant::now();
        loop {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut f) => {
                    let _ = write!(f, "{}", std::process::id());
                    return Ok(RunLock(path));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let holder = std::fs::read_to_string(&path).unwrap_or_default();
                    let alive = !holder.trim().is_empty()
                        && Path::new(&format!("/proc/{}", holder.trim())).exists();
                    if !alive {
                        let _ = std::fs::remove_file(&path);
                        continue;
                    }
                    if t.elapsed() > wait {
                        return Err(format!(
                            "another diode system test (pid {}) holds {}",
                            holder.trim(),
                            path.display()
                        ));
                    }
                    std::thread::sleep(Duration::from_secs(1));
                }
                Err(e) => return Err(format!("{}: {e}", path.display())),
            }
        }
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

// ---------------------------------------------------------------------------------------------
// The report

fn report(rows: &[Row], cut_secs: u64, elapsed: Duration, plc_stats: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Diode system test report\n");
    let _ = writeln!(
        s,
        "Release gateway-tx and gateway-rx on two network namespaces joined by a veth pair \
         (return direction dropped by deploy/nftables rule sets, static neighbours, ARP and IPv6 off). \
         Plant: {} demo tags + {BULK} u16 registers changing every {PLC_PERIOD_MS} ms, polled every \
         {POLL_MS} ms. Link: FEC {}+{} x{}, flush {} ms, block {} ms (unless the scenario says otherwise), \
         heartbeat {HEARTBEAT_MS} ms, snapshot {SNAPSHOT_PERIOD_S} s. Link cut: {cut_secs} s. \
         Total run {:.0} s. PLC: {}.\n",
        DEMO_TAGS.len(),
        SHIPPED_FEC.data,
        SHIPPED_FEC.repair,
        SHIPPED_FEC.interleave,
        SHIPPED_FEC.flush_ms,
        SHIPPED_FEC.block_ms,
        elapsed.as_secs_f64(),
        plc_stats.trim_start_matches("ok ")
    );
    let _ = writeln!(
        s,
        "| scenario | impairment | sent | dropped | received | accepted | repaired | lost | CRC fail | auth fail | dup | bad magic/len | stale session | replayed | key rate-limited | session changes | values delivered | corrupted delivered | return path | blocked at IT fw | result |"
    );
    let _ = writeln!(
        s,
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---|"
    );
    for r in rows {
        let values = match r.converge {
            Some(t) => format!("{}/{} ({:.1} s)", r.values, r.values_total, t.as_secs_f64()),
            None => format!("{}/{}", r.values, r.values_total),
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.name,
            r.impairment,
            r.sent,
            r.dropped,
            r.received,
            r.rx.accepted,
            r.rx.repaired,
            r.rx.lost,
            r.rx.crc_failures,
            r.rx.auth_failures,
            r.rx.duplicates,
            r.rx.bad_magic + r.rx.bad_length,
            r.rx.stale_session,
            r.rx.replayed,
            r.rx.key_rate_limited,
            r.rx.session_changes,
            values,
            r.corrupted_reads,
            r.return_path,
            r.blocked,
            if r.failures.is_empty() {
                "pass"
            } else {
                "FAIL"
            }
        );
    }
    let _ = writeln!(
        s,
        "\nColumns: sent = packets out of the OT box's diode interface; dropped = by the impairment \
         (firewall rule or relay); received = link datagrams handed to gateway-rx's socket; accepted, \
         repaired (data datagrams rebuilt by FEC), lost (data datagrams neither received nor rebuilt), \
         CRC fail, auth fail, dup, bad magic/len, stale session (datagrams of a session that may \
         not displace the current one), replayed (of the resumed session, up to where the receiver \
         got before it restarted), key rate-limited, session changes = gateway-rx's status log (the \
         last receiver's, for a scenario that restarts it); values delivered = tags whose mirror value \
         equals the frozen PLC's (time to converge); corrupted delivered = mirror reads of a value the \
         PLC never held; return path = packets out of the IT box's diode interface + packets into the \
         OT box's + UDP datagrams received on the OT box (must be 0); blocked at IT fw = packets the \
         kernel tried to send towards the OT box (e.g. ICMP port unreachable while gateway-rx was \
         down), dropped by the IT box's firewall.\n"
    );
    let attacks: Vec<(&Row, &Attack)> = rows
        .iter()
        .flat_map(|r| r.attacks.iter().map(move |a| (r, a)))
        .collect();
    if !attacks.is_empty() {
        let _ = writeln!(
            s,
            "## Attacks from the IT network\n\n\
             | scenario | attack | sent | dropped by the IT firewall's link-port rule | counted by gateway-rx | mirror reads stale or refused | largest lag | result |"
        );
        let _ = writeln!(s, "|---|---|---:|---:|---|---:|---:|---|");
        for (r, a) in attacks {
            let w = a.window;
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                r.name,
                a.what,
                a.sent,
                a.firewall
                    .map_or("rule removed".to_string(), |n| n.to_string()),
                a.counted,
                match a.mirror {
                    MirrorExpect::Fresh => format!("{} of {}", w.stale, w.samples),
                    MirrorExpect::Nothing => format!(
                        "{} of {} (values served: {}, must be 0)",
                        w.stale, w.samples, w.served
                    ),
                },
                w.max_lag_text(),
                if a.ok { "pass" } else { "FAIL" }
            );
        }
        let _ = writeln!(
            s,
            "\nA mirror read is stale when a tag has no value or a register is more than {} ms \
             behind the PLC; largest lag = the oldest register read during the attack, behind \
             the PLC's step read right after.\n",
            FRESH_STEPS * PLC_PERIOD_MS
        );
    }
    for r in rows {
        let _ = writeln!(s, "## {} ({:.1} s)\n", r.name, r.seconds);
        let _ = writeln!(s, "- expected: {}", r.expect);
        let _ = writeln!(s, "- mirror samples: {}", r.samples);
        for n in &r.notes {
            let _ = writeln!(s, "- {n}");
        }
        for f in &r.findings {
            let _ = writeln!(s, "- finding (not failed): {f}");
        }
        for f in &r.failures {
            let _ = writeln!(s, "- **FAILED**: {f}");
        }
        s.push('\n');
    }
    s
}
