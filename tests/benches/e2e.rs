//! End-to-end benchmark of the gateway, reported as ratios against a plain UDP blast measured
//! in the same run (benchmarks report ratios, not absolute figures checked by
//! timed tests).
//!
//! `cargo bench -p tests --bench e2e` measures, in one run:
//!
//! 1. **Baselines**: plain UDP blasts over 127.0.0.1 of 1400-byte datagrams, one thread each
//!    way: (a) one `send` and one `recv` per datagram, (b) GSO runs read with `recvmmsg` and
//!    GRO, the system calls the gateway makes.
//! 2. **Protocol only**: `Encoder` → `Decoder` in memory (no sockets) at the default FEC shape,
//!    datagrams full of live sample batches, with and without a key, without and with 5 % loss.
//! 3. **End to end**: a synthetic tag table driven by a thread, the real `LinkSender` over
//!    loopback UDP to the real `Receiver`: samples/s, the datagram rate they need, latency
//!    from the update at TX to the apply at RX, and CPU per thread.
//! 4. **Delivery under loss**: the same chain through `tests::relay::Relay` dropping 0, 1 and
//!    5 % of datagrams at random.
//!
//! 5. **Bulk** (separate processes, see `e2e/procs.rs`): history batches through the full
//!    protocol (CRC, FEC 64+16 = 20 % of the datagrams repair, AES-GCM), `LinkSender` process
//!    → `LinkReceiver` process over loopback with batched I/O: goodput, CPU per GiB on each
//!    side, and the pacer at a configured rate. Then (5a) the highest pacer rate at which
//!    nothing is lost, by bisection, as ratios to both baselines. Then (5b) goodput and delivery at 0, 1, 5 and
//!    10 % random loss with the repair docs/benchmarks.md recommends, the loss made by an nftables
//!    rule on the receiver's loopback port (needs root and `nft`; skipped, and said, without).
//!    And (5c) the history thread, which 5's stand-in source leaves out, fed by a bulk source
//!    (see `e2e/history.rs`).
//! 6. **Scale** (separate processes): receiver memory with 1,000,000 tags; Modbus polling of
//!    100 simulated PLCs × 1,000 registers every 100 ms (the poller's CPU, not the simulators').
//! 7. **Targets**, each met or missed, with the figure.
//!
//! It prints a table and writes `target/bench/e2e.json` so runs can be compared. Set
//! `E2E_QUICK=1` for a shorter run with shorter windows (for trying changes, not for figures),
//! and `E2E_ONLY=text` to run only the scenarios (end to end, loss, bulk, scale) whose label
//! contains `text`.
//!
//! This file runs the sections in order; each lives in `e2e/` in a file named for what it
//! measures (`baseline.rs`, `protocol_only.rs`, `end_to_end.rs`, `loss.rs`, `bulk.rs`,
//! `scale.rs`, `targets.rs`), with the child processes in `procs.rs` and `history.rs`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;

// A bench target's root is not a `mod.rs`: without a path its modules would be looked for
// beside it, not in `e2e/`.
#[path = "e2e/baseline.rs"]
mod baseline;
#[path = "e2e/bulk.rs"]
mod bulk;
#[path = "e2e/end_to_end.rs"]
mod end_to_end;
#[path = "e2e/history.rs"]
mod history;
#[path = "e2e/json.rs"]
mod json;
#[path = "e2e/loss.rs"]
mod loss;
#[path = "e2e/procs.rs"]
mod procs;
#[path = "e2e/protocol_only.rs"]
mod protocol_only;
#[path = "e2e/scale.rs"]
mod scale;
#[path = "e2e/targets.rs"]
mod targets;

use end_to_end::{runtime, synthetic_tags};
use json::Obj;

// The daemons' allocator (gateway-tx and gateway-rx set the same), since the bulk and scale
// cases run their link code in processes of this binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const KEY: [u8; 32] = [0x5a; 32];

struct Timing {
    blast: Duration,
    protocol: Duration,
    warmup: Duration,
    window: Duration,
    loss_window: Duration,
    /// How long the bulk source pushes.
    bulk: Duration,
    /// How long each step of the bulk rate sweep sends, and how many steps it takes.
    sweep_step: Duration,
    sweep_steps: u32,
    /// Tags in the receiver-memory run.
    scale_tags: usize,
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
                bulk: Duration::from_secs(1),
                sweep_step: Duration::from_secs(1),
                sweep_steps: 3,
                scale_tags: 200_000,
            }
        } else {
            Timing {
                blast: Duration::from_secs(2),
                protocol: Duration::from_secs(1),
                warmup: Duration::from_millis(500),
                window: Duration::from_secs(3),
                loss_window: Duration::from_secs(5),
                bulk: Duration::from_secs(3),
                sweep_step: Duration::from_secs(2),
                sweep_steps: 6,
                scale_tags: 1_000_000,
            }
        }
    }
}

fn main() -> anyhow::Result<()> {
    // A child process of the bench (bulk and scale run each side in its own process).
    if let Some(result) = procs::child_main() {
        return result;
    }
    // `cargo bench` passes `--bench`; a filter word is not supported, everything runs.
    let timing = Timing::get();
    let started = Instant::now();
    let mut out = String::new();
    let mut json = Obj::default();

    let base = baseline::run(&timing, &mut out, &mut json)?;
    let b = base.plain;
    let blast_dps = b.datagrams_per_sec();
    let blast_gbps = b.gbit_per_sec();
    let proto_samples_per_s = protocol_only::run(&timing, &mut out, &mut json, blast_gbps);
    let e2e = end_to_end::run(&timing, &mut out, &mut json, blast_dps, proto_samples_per_s)?;
    let lossy = loss::run(&timing, &mut out, &mut json, blast_dps, proto_samples_per_s)?;
    let bulk = bulk::run(&timing, &mut out, &mut json, &base)?;
    let (rss, modbus) = scale::run(&timing, &mut out, &mut json, &b)?;
    targets::run(
        &mut out,
        &mut json,
        targets::Results {
            bulk: &bulk,
            e2e: &e2e,
            lossy: &lossy,
            rss: rss.as_ref(),
            modbus: modbus.as_ref(),
            gso_gbps: base.gso.gbit_per_sec(),
        },
        blast_gbps,
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
        .filter(|r| r.scenario.loss.is_some_and(|l| l > 0.0) || r.scenario.burst.is_some())
        .filter(|r| r.is_diagnostic().is_none() && !r.delivery_target_met())
        .map(|r| r.scenario.label())
        .collect();
    if !failed.is_empty() {
        println!("DELIVERY TARGET MISSED (100 % delivered, 0 corrupted): {failed:?}");
    }
    Ok(())
}

/// `E2E_ONLY=text` runs only the end-to-end scenarios whose label contains `text` (the
/// baseline and protocol-only figures always run: the ratios need them).
fn selected(s: &end_to_end::Scenario) -> bool {
    only(&s.label())
}

fn only(label: &str) -> bool {
    std::env::var("E2E_ONLY").map_or(true, |only| label.contains(&only))
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
