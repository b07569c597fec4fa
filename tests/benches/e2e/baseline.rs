//! Section 1, baselines: plain UDP blasts over loopback, one with a `send` and a `recv` per
//! datagram, one with the gateway's batched system calls (GSO runs, `recvmmsg` with GRO).

use std::fmt::Write as _;

use anyhow::Context;
use tests::blast::{BlastResult, blast, blast_gso};

use crate::Timing;
use crate::json::Obj;

pub(crate) const BLAST_PAYLOAD: usize = 1400;

/// The two blasts of the run: (a) one system call per datagram each way, (b) batched as the
/// gateway batches.
pub(crate) struct Baselines {
    pub(crate) plain: BlastResult,
    pub(crate) gso: BlastResult,
}

/// The blasts every other figure is a ratio to.
pub(crate) fn run(timing: &Timing, out: &mut String, json: &mut Obj) -> anyhow::Result<Baselines> {
    let recv_buffer = config::rx::limits::RECV_BUFFER_BYTES_DEFAULT;
    eprintln!("e2e: UDP blast baseline ...");
    let plain = blast(BLAST_PAYLOAD, timing.blast, recv_buffer).context("UDP blast")?;
    eprintln!("e2e: UDP blast baseline, GSO/GRO ...");
    let gso = blast_gso(BLAST_PAYLOAD, timing.blast, recv_buffer).context("UDP blast, GSO")?;
    print_blast(out, &plain, &gso);
    json.obj("baseline_udp_blast", blast_json(&plain));
    json.obj("baseline_udp_blast_gso", blast_json(&gso));
    let _ = BLAST_CPU.set((plain.send_cpu_per_gib(), plain.recv_cpu_per_gib()));
    Ok(Baselines { plain, gso })
}

pub(crate) fn print_blast(out: &mut String, b: &BlastResult, gso: &BlastResult) {
    let _ = writeln!(
        out,
        "\n== 1. Baselines: plain UDP blasts over 127.0.0.1 ({} B datagrams, {:.1} s each)",
        b.payload,
        b.send_time.as_secs_f64()
    );
    for (what, b) in [
        ("(a) one send / one recv each", b),
        ("(b) GSO send / recvmmsg + GRO", gso),
    ] {
        let _ = writeln!(
            out,
            "  {what:<30} sent {:>10.0} datagrams/s   received {:>10.0} datagrams/s   {:>6.3} Gb/s payload   loss {:>5.1} %   {:.2} / {:.2} CPU-s/GiB send / recv",
            b.sent_per_sec(),
            b.datagrams_per_sec(),
            b.gbit_per_sec(),
            b.loss() * 100.0,
            b.send_cpu_per_gib(),
            b.recv_cpu_per_gib(),
        );
    }
    let _ = writeln!(
        out,
        "  (b) sends {} datagrams per sendmsg; \"x blast\" below is a ratio to (a) unless it says (b)",
        gso.per_send
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
    o.int("datagrams_per_send", b.per_send as u64);
    o.num("send_cpu_s_per_gib", b.send_cpu_per_gib());
    o.num("recv_cpu_s_per_gib", b.recv_cpu_per_gib());
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
