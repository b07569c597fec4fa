//! Section 5, bulk: history through the full protocol, sender and receiver in processes of
//! their own (`procs.rs`), and (5c) the history thread (`history.rs`).

use std::fmt::Write as _;

use anyhow::Context;

use crate::baseline::Baselines;
use crate::baseline::{blast_cpu_per_gib_rx, blast_cpu_per_gib_tx};
use crate::end_to_end::udp_errors;
use crate::json::Obj;
use crate::targets::{SWEPT_90K, SWEPT_DGRAM, is_unpaced};
use crate::{Timing, history, only, procs};

pub(crate) fn run(
    timing: &Timing,
    out: &mut String,
    json: &mut Obj,
    base: &Baselines,
) -> anyhow::Result<Vec<procs::BulkResult>> {
    let blast_gbps = base.plain.gbit_per_sec();
    let bulk_cases = [
        procs::BulkCase {
            label: "90 kB batches, GSO, unpaced",
            rate_mbit: config::tx::limits::RATE_MBIT_MAX,
            samples: 4096,
            max_batch: 64,
            seconds: timing.bulk.as_secs_f64(),
            ..Default::default()
        },
        procs::BulkCase {
            label: "90 kB batches, no GSO, unpaced",
            rate_mbit: config::tx::limits::RATE_MBIT_MAX,
            samples: 4096,
            max_batch: 1,
            seconds: timing.bulk.as_secs_f64(),
            ..Default::default()
        },
        procs::BulkCase {
            label: "1-datagram batches, GSO, unpaced",
            rate_mbit: config::tx::limits::RATE_MBIT_MAX,
            samples: 0,
            max_batch: 64,
            seconds: timing.bulk.as_secs_f64(),
            ..Default::default()
        },
        procs::BulkCase {
            label: "90 kB batches, GSO, 1000 Mb/s",
            rate_mbit: 1000.0,
            samples: 4096,
            max_batch: 64,
            seconds: timing.bulk.as_secs_f64(),
            ..Default::default()
        },
        procs::BulkCase {
            label: "90 kB batches, GSO, 100 Mb/s",
            rate_mbit: 100.0,
            samples: 4096,
            max_batch: 64,
            seconds: timing.bulk.as_secs_f64(),
            ..Default::default()
        },
    ];
    let mut bulk = Vec::new();
    for case in bulk_cases.iter().filter(|c| only(c.label)) {
        eprintln!("e2e: bulk {} ...", case.label);
        bulk.push(procs::run_bulk(case).with_context(|| case.label)?);
    }
    // A sender that is not paced outruns its receiver on two shared cores, and on a diode the
    // excess is simply lost: what a user gets is the rate the receiver keeps up with, set with
    // `rate_mbit`. So the pacer rate is swept for the highest at which nothing is lost, in
    // both batch shapes: datagram-sized batches are what the history thread sends (live
    // history, carousel, backfill), 90 kB ones the densest the protocol can carry.
    let mut sweeps = Vec::new();
    for (label, samples) in [(SWEPT_DGRAM, 0), (SWEPT_90K, 4096)] {
        let flat = bulk
            .iter()
            .find(|b| b.case.max_batch > 1 && b.case.samples == samples && is_unpaced(b))
            .cloned();
        let Some(flat) = flat.filter(|_| only(label)) else {
            continue;
        };
        let sweep = sweep(label, samples, flat.steady_wire_mbit, timing)?;
        if let Some(best) = sweep.best() {
            bulk.push(best.result.clone());
        }
        sweeps.push(sweep);
    }
    // Goodput under random loss, with the repair docs/benchmarks.md recommends for it, one datagram
    // per send (a loss rule sees a GSO batch as one packet), at a rate both sides hold on 2
    // cores that way (at 1000 Mb/s the receiver's socket overflowed now and then, and that
    // loss, in bursts, is not what these rows measure).
    let mut bulk_lossy = Vec::new();
    let loss_cases: [(&'static str, f64, usize); 4] = [
        ("1-datagram batches, 500 Mb/s, 0 % loss, 64+16", 0.0, 16),
        ("1-datagram batches, 500 Mb/s, 1 % loss, 64+16", 0.01, 16),
        ("1-datagram batches, 500 Mb/s, 5 % loss, 64+16", 0.05, 16),
        ("1-datagram batches, 500 Mb/s, 10 % loss, 64+24", 0.10, 24),
    ];
    let loss_wanted: Vec<_> = loss_cases.iter().filter(|c| only(c.0)).collect();
    if !loss_wanted.is_empty() && !procs::LossRule::available() {
        eprintln!("e2e: bulk under loss not run: it needs root and nft");
    } else {
        for (label, loss, repair) in loss_wanted {
            let case = procs::BulkCase {
                label,
                rate_mbit: 500.0,
                samples: 0,
                max_batch: 1,
                seconds: timing.bulk.as_secs_f64(),
                loss: *loss,
                repair_shards: Some(*repair),
            };
            eprintln!("e2e: bulk {label} ...");
            bulk_lossy.push(procs::run_bulk(&case).with_context(|| *label)?);
        }
    }
    let mut history_thread = None;
    if only("history thread") {
        eprintln!("e2e: history thread ...");
        history_thread =
            Some(history::run_history(timing.bulk.as_secs_f64()).context("history thread")?);
    }
    print_bulk(out, &bulk, blast_gbps);
    print_sweeps(out, &sweeps, base);
    print_bulk_loss(out, &bulk_lossy, blast_gbps);
    if let Some(h) = &history_thread {
        print_history_thread(out, h, &bulk);
        json.obj("history_thread", history_thread_json(h));
    }
    json.arr(
        "bulk_under_loss",
        bulk_lossy
            .iter()
            .map(|b| bulk_json(b, blast_gbps))
            .collect(),
    );
    json.arr(
        "bulk",
        bulk.iter().map(|b| bulk_json(b, blast_gbps)).collect(),
    );
    json.arr(
        "bulk_rate_sweep",
        sweeps.iter().map(|s| sweep_json(s, base)).collect(),
    );
    Ok(bulk)
}

/// One step of a rate sweep: a bulk run at one pacer rate.
#[derive(Clone)]
pub(crate) struct SweepStep {
    pub(crate) result: procs::BulkResult,
    /// The kernel's UDP receive-buffer drops during the step (`/proc/net/snmp`, the whole
    /// network namespace: another program's drops would count too, and only make the rate lower).
    pub(crate) rcvbuf_errors: u64,
}

impl SweepStep {
    /// Every datagram sent was read, every message delivered, and the kernel dropped nothing:
    /// FEC repairing a loss would hide it from the message count, so datagrams are compared too.
    /// The receiver may count more: the sender's heartbeat goes on after it reported its counts.
    pub(crate) fn nothing_lost(&self) -> bool {
        let b = &self.result;
        b.tx_messages > 0.0
            && b.rx_datagrams >= b.tx_datagrams
            && b.rx_delivered == b.tx_messages
            && b.rx_lost == 0.0
            && b.rx_data_lost == 0.0
            && self.rcvbuf_errors == 0
    }
}

pub(crate) struct Sweep {
    pub(crate) label: &'static str,
    pub(crate) steps: Vec<SweepStep>,
}

impl Sweep {
    /// The step at the highest rate with nothing lost.
    pub(crate) fn best(&self) -> Option<&SweepStep> {
        self.steps
            .iter()
            .filter(|s| s.nothing_lost())
            .max_by(|a, b| a.result.case.rate_mbit.total_cmp(&b.result.case.rate_mbit))
    }
}

/// Bisection on the pacer rate between 0 and `ceiling_mbit` (what the unpaced sender reached
/// on the wire): the ceiling first, then the middle of what is left, up if nothing was lost
/// and down otherwise. Each step is a fresh pair of processes sending for a fixed time, so a
/// step's backlog does not spill into the next.
fn sweep(
    label: &'static str,
    samples: usize,
    ceiling_mbit: f64,
    timing: &Timing,
) -> anyhow::Result<Sweep> {
    let (mut lo, mut hi) = (0.0, ceiling_mbit);
    let mut steps = Vec::new();
    for i in 0..timing.sweep_steps {
        let rate_mbit = if i == 0 { hi } else { (lo + hi) / 2.0 };
        let case = procs::BulkCase {
            label,
            rate_mbit,
            samples,
            max_batch: 64,
            seconds: timing.sweep_step.as_secs_f64(),
            ..Default::default()
        };
        eprintln!(
            "e2e: bulk {label}: step {} at {rate_mbit:.0} Mb/s ...",
            i + 1
        );
        let before = udp_errors().0;
        let result = procs::run_bulk(&case).with_context(|| label)?;
        let step = SweepStep {
            result,
            rcvbuf_errors: udp_errors().0.saturating_sub(before),
        };
        let ok = step.nothing_lost();
        steps.push(step);
        if ok {
            lo = rate_mbit;
            if i == 0 {
                break;
            }
        } else {
            hi = rate_mbit;
        }
    }
    Ok(Sweep { label, steps })
}

pub(crate) fn print_sweeps(out: &mut String, sweeps: &[Sweep], base: &Baselines) {
    if sweeps.is_empty() {
        return;
    }
    let (a, b) = (&base.plain, &base.gso);
    let _ = writeln!(
        out,
        "\n== 5a. Highest pacer rate with nothing lost (bisection, {:.0} s a step): goodput as ratios to (a) {:.3} Gb/s and (b) {:.3} Gb/s",
        sweeps[0]
            .steps
            .first()
            .map_or(0.0, |s| s.result.case.seconds),
        a.gbit_per_sec(),
        b.gbit_per_sec()
    );
    let _ = writeln!(
        out,
        "  {:<52} {:>9} {:>9} {:>10} {:>10} {:>8} {:>8} {:>5}",
        "case / step", "pacer", "wire", "dgrams TX", "dgrams RX", "deliv %", "rcvbuf", "clean"
    );
    for s in sweeps {
        for (i, st) in s.steps.iter().enumerate() {
            let r = &st.result;
            let _ = writeln!(
                out,
                "  {:<52} {:>9.0} {:>9.0} {:>10.0} {:>10.0} {:>8.3} {:>8} {:>5}",
                format!("{} #{}", s.label, i + 1),
                r.case.rate_mbit,
                r.steady_wire_mbit,
                r.tx_datagrams,
                r.rx_datagrams,
                r.delivered_percent(),
                st.rcvbuf_errors,
                if st.nothing_lost() { "yes" } else { "no" }
            );
        }
    }
    let _ = writeln!(
        out,
        "  {:<52} {:>9} {:>8} {:>8} | {:>8} {:>8} {:>8} {:>8}",
        "highest rate with nothing lost",
        "goodput",
        "x (a)",
        "x (b)",
        "TX s/GiB",
        "link",
        "RX s/GiB",
        "link"
    );
    for s in sweeps {
        match s.best() {
            Some(st) => {
                let r = &st.result;
                let _ = writeln!(
                    out,
                    "  {:<52} {:>9.3} {:>8.2} {:>8.2} | {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
                    format!("{} ({:.0} Mb/s)", s.label, r.case.rate_mbit),
                    r.goodput_gbps(),
                    r.goodput_gbps() / a.gbit_per_sec(),
                    r.goodput_gbps() / b.gbit_per_sec(),
                    r.tx_cpu_per_gib(),
                    r.tx_link_cpu_per_gib(),
                    r.rx_cpu_per_gib(),
                    r.rx_link_cpu / r.rx_gib().max(1e-12),
                );
            }
            None => {
                let _ = writeln!(out, "  {:<52} no step lost nothing", s.label);
            }
        }
    }
    let _ = writeln!(
        out,
        "  blasts' CPU-s/GiB, send / recv: (a) {:.2} / {:.2}, (b) {:.2} / {:.2}",
        a.send_cpu_per_gib(),
        a.recv_cpu_per_gib(),
        b.send_cpu_per_gib(),
        b.recv_cpu_per_gib()
    );
    let _ = writeln!(
        out,
        "  clean: every datagram sent was read, every message delivered, nothing repaired away, no kernel RcvbufErrors;\n  pacer: configured wire Mb/s, wire: achieved in the steady part; goodput: history bytes delivered per second (Gb/s);\n  TX/RX s/GiB: CPU seconds of each process (user + system) per GiB of history, link: its link thread alone"
    );
}

pub(crate) fn sweep_json(s: &Sweep, base: &Baselines) -> Obj {
    let mut o = Obj::default();
    o.str("case", s.label);
    o.arr(
        "steps",
        s.steps
            .iter()
            .map(|st| {
                let mut j = bulk_json(&st.result, base.plain.gbit_per_sec());
                j.int("rcvbuf_errors", st.rcvbuf_errors);
                j.bool("nothing_lost", st.nothing_lost());
                j
            })
            .collect(),
    );
    match s.best() {
        Some(st) => {
            let g = st.result.goodput_gbps();
            o.num("best_rate_mbit", st.result.case.rate_mbit);
            o.num("best_goodput_gbit_per_s", g);
            o.num("ratio_to_blast", g / base.plain.gbit_per_sec());
            o.num("ratio_to_blast_gso", g / base.gso.gbit_per_sec());
            o.num("tx_cpu_s_per_gib", st.result.tx_cpu_per_gib());
            o.num("rx_cpu_s_per_gib", st.result.rx_cpu_per_gib());
        }
        None => o.raw("best_rate_mbit", "null".into()),
    }
    o
}
pub(crate) fn print_bulk(out: &mut String, bs: &[procs::BulkResult], blast_gbps: f64) {
    if bs.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\n== 5. Bulk: history through the full protocol (CRC, FEC 64+16 interleave 4 = 20 % of datagrams repair, AES-256-GCM), LinkSender process -> LinkReceiver process over 127.0.0.1, {:.0} s of source",
        bs[0].case.seconds
    );
    let _ = writeln!(
        out,
        "  {:<40} {:>8} {:>8} {:>8} {:>10} {:>9} {:>7} | {:>8} {:>8} {:>8} | {:>8} {:>8}",
        "case",
        "goodput",
        "x blast",
        "deliv %",
        "dgram/s",
        "wire Mb/s",
        "x conf",
        "TX s/GiB",
        "link",
        "x blast",
        "RX s/GiB",
        "x blast"
    );
    for b in bs {
        let paced = b.case.rate_mbit < config::tx::limits::RATE_MBIT_MAX;
        let _ = writeln!(
            out,
            "  {:<40} {:>8.3} {:>8.2} {:>8.2} {:>10.0} {:>9.0} {:>7} | {:>8.2} {:>8.2} {:>8.2} | {:>8.2} {:>8.2}",
            b.case.label,
            b.goodput_gbps(),
            b.goodput_gbps() / blast_gbps,
            b.delivered_percent(),
            b.datagrams_per_s(),
            b.steady_wire_mbit,
            if paced {
                format!("{:.4}", b.pacer_ratio())
            } else {
                "-".into()
            },
            b.tx_cpu_per_gib(),
            b.tx_link_cpu_per_gib(),
            b.tx_cpu_per_gib() / blast_cpu_per_gib_tx(),
            b.rx_cpu_per_gib(),
            b.rx_cpu_per_gib() / blast_cpu_per_gib_rx(),
        );
    }
    let _ = writeln!(
        out,
        "  goodput: history message bytes delivered at RX per second (Gb/s), x blast: / the blast's payload Gb/s; deliv %: messages delivered / sent;\n  wire Mb/s: sent with IP+UDP headers in the steady part of the run, x conf: / the configured rate (the pacer holds it within 1 %);\n  TX s/GiB: CPU seconds of the TX process (user + system) per GiB of history sent, link: its link-sender thread alone (without the synthetic source);\n  RX s/GiB: CPU seconds of the RX process per GiB delivered; x blast: / the same figure of the plain blast's thread ({:.2} s/GiB TX, {:.2} s/GiB RX)\n  (each side is its own process: the bench binary started again in a role, see tests/benches/e2e/procs.rs)",
        blast_cpu_per_gib_tx(),
        blast_cpu_per_gib_rx()
    );
}

pub(crate) fn print_bulk_loss(out: &mut String, bs: &[procs::BulkResult], blast_gbps: f64) {
    if bs.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\n== 5b. Bulk under random loss: as 5, one datagram per send, paced, the loss made by an nftables rule on the receiver's port (numgen random), {:.0} s of source",
        bs[0].case.seconds
    );
    let _ = writeln!(
        out,
        "  {:<46} {:>7} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9}",
        "case", "lost %", "goodput", "x blast", "deliv %", "msgs lost", "repaired", "data lost"
    );
    for b in bs {
        let lost = 100.0 * (1.0 - b.rx_datagrams / b.tx_datagrams.max(1.0));
        let _ = writeln!(
            out,
            "  {:<46} {:>7.2} {:>8.3} {:>8.2} {:>8.3} {:>8.0} {:>9.0} {:>9.0}",
            b.case.label,
            lost,
            b.goodput_gbps(),
            b.goodput_gbps() / blast_gbps,
            b.delivered_percent(),
            b.rx_lost,
            b.rx_repaired,
            b.rx_data_lost,
        );
    }
    let _ = writeln!(
        out,
        "  lost %: datagrams sent that the receiver never read (the rule's drops); deliv %: history messages delivered / sent;\n  repaired: datagrams rebuilt by FEC; data lost: data datagrams lost beyond repair"
    );
}

pub(crate) fn print_history_thread(
    out: &mut String,
    h: &history::HistoryResult,
    bulk: &[procs::BulkResult],
) {
    let _ = writeln!(
        out,
        "\n== 5c. History thread: a bulk source (as a historian backfill) -> tap -> buffer (tmpfs) -> live batches -> outlet, taken as they come, {:.0} s",
        h.seconds
    );
    let _ = writeln!(
        out,
        "  {:>12} {:>10} {:>8} {:>10} {:>9} | {:>28}",
        "samples/s", "batches/s", "Gb/s", "s/GiB", "tap drops", "with 5's link thread, s/GiB"
    );
    // The link thread's cost per GiB in section 5's datagram-sized cases: together they are
    // what a transmitter spends sending a bulk source's history.
    let link: Vec<String> = bulk
        .iter()
        .filter(|b| b.case.max_batch > 1 && b.case.samples == 0)
        .map(|b| format!("{:.2}", h.cpu_per_gib() + b.tx_link_cpu_per_gib()))
        .collect();
    let _ = writeln!(
        out,
        "  {:>12.0} {:>10.0} {:>8.3} {:>10.2} {:>9} | {:>28}",
        h.samples_per_s(),
        h.messages as f64 / h.seconds.max(1e-9),
        h.gbps(),
        h.cpu_per_gib(),
        h.tap_dropped,
        if link.is_empty() {
            "-".to_string()
        } else {
            link.join(" / ")
        },
    );
    let _ = writeln!(
        out,
        "  s/GiB: CPU seconds of the history thread per GiB of batch bodies it made (taking from the tap, encoding,\n  the buffer's records and writes, batching); the last column adds 5's link thread (unpaced / highest rate with nothing lost, datagram-sized)"
    );
}

pub(crate) fn history_thread_json(h: &history::HistoryResult) -> Obj {
    let mut o = Obj::default();
    o.num("seconds", h.seconds);
    o.num("samples_per_s", h.samples_per_s());
    o.num("gbps", h.gbps());
    o.num("cpu_s_per_gib", h.cpu_per_gib());
    o.int("tap_dropped", h.tap_dropped);
    o
}

pub(crate) fn bulk_json(b: &procs::BulkResult, blast_gbps: f64) -> Obj {
    let mut o = Obj::default();
    o.str("case", b.case.label);
    o.num("loss", b.case.loss);
    o.int(
        "repair_shards",
        b.case
            .repair_shards
            .map_or(u64::from(protocol::encoder::DEFAULT_REPAIR_SHARDS), |r| {
                r as u64
            }),
    );
    o.num("rate_mbit", b.case.rate_mbit);
    o.int("samples_per_batch", b.case.samples as u64);
    o.int("max_batch", b.case.max_batch as u64);
    o.num("message_bytes", b.body_bytes);
    o.num("messages_produced", b.produced);
    o.num("messages_sent", b.tx_messages);
    o.num("bytes_sent", b.tx_bytes);
    o.num("messages_delivered", b.rx_delivered);
    o.num("messages_lost", b.rx_lost);
    o.num("delivered_percent", b.delivered_percent());
    o.num("goodput_gbit_per_s", b.goodput_gbps());
    o.num("ratio_goodput_to_blast", b.goodput_gbps() / blast_gbps);
    o.num("datagrams_sent", b.tx_datagrams);
    o.num("repair_datagrams", b.tx_repair);
    o.num("datagrams_per_s", b.datagrams_per_s());
    o.num("steady_wire_mbit_per_s", b.steady_wire_mbit);
    o.num("pacer_ratio", b.pacer_ratio());
    o.num("tx_seconds", b.tx_seconds);
    o.num("tx_cpu_s", b.tx_cpu);
    o.num("tx_cpu_s_per_gib", b.tx_cpu_per_gib());
    o.num("tx_link_thread_cpu_s_per_gib", b.tx_link_cpu_per_gib());
    o.num("tx_source_thread_cpu_s", b.tx_source_cpu);
    o.num("rx_seconds", b.rx_seconds);
    o.num("rx_cpu_s", b.rx_cpu);
    o.num("rx_cpu_s_per_gib", b.rx_cpu_per_gib());
    o.num("rx_link_thread_cpu_s", b.rx_link_cpu);
    o.num("rx_datagrams", b.rx_datagrams);
    o.num("rx_repaired", b.rx_repaired);
    o.num("rx_data_datagrams_lost", b.rx_data_lost);
    o.num("rx_rejected", b.rx_rejected);
    o.num(
        "ratio_tx_cpu_per_gib_to_blast",
        b.tx_cpu_per_gib() / blast_cpu_per_gib_tx(),
    );
    o.num(
        "ratio_rx_cpu_per_gib_to_blast",
        b.rx_cpu_per_gib() / blast_cpu_per_gib_rx(),
    );
    o
}
