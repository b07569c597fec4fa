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
//!
//! Layout: `diode/scenarios.rs` holds each scenario's data (name, impairment, duration,
//! expectation, FEC shape, check) and plays one; `diode/check.rs` the report row, the
//! measurements and checks every scenario shares, and each scenario's own check;
//! `diode/attacks.rs` the attacks from the IT network; `diode/run.rs` a scenario's processes
//! and the mirror monitor; `diode/bed.rs` the namespaces, firewall and impairment rules,
//! process spawning and the run lock; `diode/rx_status.rs` and `diode/report.rs` the status log
//! and the report.

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
#[path = "diode/bed.rs"]
mod bed;
#[path = "diode/check.rs"]
mod check;
#[allow(dead_code)] // the shared helpers serve several test files
mod common;
#[path = "diode/report.rs"]
mod report;
#[path = "diode/run.rs"]
mod run;
#[path = "diode/rx_status.rs"]
mod rx_status;
#[path = "diode/scenarios.rs"]
mod scenarios;

// The modules share one namespace, as one file did: each takes the others' items with
// `use super::*`.
use bed::*;
use check::*;
use report::*;
use run::*;
use rx_status::*;
use scenarios::*;

/// How long most scenarios' impairment lasts (each scenario says its own `duration`).
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
