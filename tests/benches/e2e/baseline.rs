//! Section 1, baseline: a plain UDP blast over loopback, one `send` and one `recv` per datagram.

use std::fmt::Write as _;

use anyhow::Context;
use tests::blast::{BlastResult, blast};

use crate::Timing;
use crate::json::Obj;

pub(crate) const BLAST_PAYLOAD: usize = 1400;

/// The blast every other figure is a ratio to.
pub(crate) fn run(
    timing: &Timing,
    out: &mut String,
    json: &mut Obj,
) -> anyhow::Result<BlastResult> {
    let recv_buffer = config::rx::limits::RECV_BUFFER_BYTES_DEFAULT;
    eprintln!("e2e: UDP blast baseline ...");
    let b = blast(BLAST_PAYLOAD, timing.blast, recv_buffer).context("UDP blast")?;
    print_blast(out, &b);
    json.obj("baseline_udp_blast", blast_json(&b));
    let gib = |bytes: f64| bytes / (1u64 << 30) as f64;
    let _ = BLAST_CPU.set((
        b.send_cpu.as_secs_f64() / gib(b.sent as f64 * b.payload as f64).max(1e-12),
        b.recv_cpu.as_secs_f64() / gib(b.received_bytes as f64).max(1e-12),
    ));
    Ok(b)
}
pub(crate) fn print_blast(out: &mut String, b: &BlastResult) {
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

pub(crate) fn blast_json(b: &BlastResult) -> Obj {
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

/// CPU seconds per GiB of the blast's sender and receiver threads, measured in the same run.
pub(crate) static BLAST_CPU: std::sync::OnceLock<(f64, f64)> = std::sync::OnceLock::new();

pub(crate) fn blast_cpu_per_gib_tx() -> f64 {
    BLAST_CPU.get().map_or(f64::NAN, |c| c.0)
}

pub(crate) fn blast_cpu_per_gib_rx() -> f64 {
    BLAST_CPU.get().map_or(f64::NAN, |c| c.1)
}
