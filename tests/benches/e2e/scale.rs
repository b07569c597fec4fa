//! Section 6, scale: receiver memory with a large catalogue, Modbus polling of many PLCs.

use std::fmt::Write as _;

use anyhow::Context;
use tests::blast::BlastResult;

use crate::json::Obj;
use crate::{Timing, only, procs};

pub(crate) fn run(
    timing: &Timing,
    out: &mut String,
    json: &mut Obj,
    b: &BlastResult,
) -> anyhow::Result<(Option<procs::RssResult>, Option<procs::ModbusResult>)> {
    let mut rss = None;
    if only("scale rx memory") {
        eprintln!(
            "e2e: scale: receiver memory with {} tags ...",
            timing.scale_tags
        );
        rss = Some(procs::run_rss(timing.scale_tags).context("receiver memory")?);
    }
    let mut modbus = None;
    if only("scale modbus") {
        eprintln!("e2e: scale: Modbus polling of 100 PLCs x 1000 registers ...");
        modbus = Some(
            procs::run_modbus(100, 1000, 100, timing.warmup * 4, timing.window)
                .context("Modbus polling")?,
        );
    }
    print_scale(out, rss.as_ref(), modbus.as_ref(), b);
    if let Some(r) = &rss {
        json.obj("scale_rx_memory", rss_json(r));
    }
    if let Some(m) = &modbus {
        json.obj("scale_modbus", modbus_json(m, b));
    }
    Ok((rss, modbus))
}
pub(crate) fn print_scale(
    out: &mut String,
    rss: Option<&procs::RssResult>,
    modbus: Option<&procs::ModbusResult>,
    blast: &BlastResult,
) {
    if rss.is_none() && modbus.is_none() {
        return;
    }
    let _ = writeln!(out, "\n== 6. Scale (each side in its own process)");
    if let Some(r) = rss {
        let _ = writeln!(
            out,
            "  RX memory, {} tags in the catalogue and one live value each: resident {:.1} MiB (peak {:.1} MiB; {:.1} MiB before the catalogue), {:.0} bytes per tag;\n    catalogue received {:.1} s after the sender started, every value {:.1} s after the updates began ({} samples applied); the real Receiver with its store, default runtime",
            r.tags,
            r.rss_kib / 1024.0,
            r.hwm_kib / 1024.0,
            r.idle_kib / 1024.0,
            (r.rss_kib - r.idle_kib) * 1024.0 / r.tags as f64,
            r.catalogue_seconds,
            r.values_seconds,
            r.applied,
        );
    }
    if let Some(m) = modbus {
        let _ = writeln!(
            out,
            "  Modbus polling, {} simulated PLCs x {} holding registers (u16 tags) every {} ms: gateway-tx process {:.1} % of one core over {:.1} s,\n    {:.0} reads/s ({:.0} polls/s of {:.0} expected), {:.0} changed samples/s sent, resident {:.1} MiB; the simulators run in another process\n    (no ratio to the blast: polling over TCP has no UDP counterpart)",
            m.plcs,
            m.registers,
            m.interval_ms,
            100.0 * m.cpu_share,
            m.window,
            m.reads_per_s,
            m.polls_per_s,
            m.plcs as f64 * 1000.0 / m.interval_ms as f64,
            m.samples_per_s,
            m.rss_kib / 1024.0,
        );
        let _ = blast;
    }
}

pub(crate) fn rss_json(r: &procs::RssResult) -> Obj {
    let mut o = Obj::default();
    o.int("tags", r.tags as u64);
    o.num("rss_mib", r.rss_kib / 1024.0);
    o.num("peak_rss_mib", r.hwm_kib / 1024.0);
    o.num("rss_before_catalogue_mib", r.idle_kib / 1024.0);
    o.num("catalogue_seconds", r.catalogue_seconds);
    o.num("values_seconds", r.values_seconds);
    o.num("samples_applied", r.applied);
    o
}

pub(crate) fn modbus_json(m: &procs::ModbusResult, _blast: &BlastResult) -> Obj {
    let mut o = Obj::default();
    o.int("plcs", m.plcs as u64);
    o.int("registers", m.registers as u64);
    o.int("interval_ms", m.interval_ms);
    o.num("window_s", m.window);
    o.num("cpu_share_of_one_core", m.cpu_share);
    o.num("reads_per_s", m.reads_per_s);
    o.num("polls_per_s", m.polls_per_s);
    o.num("samples_per_s", m.samples_per_s);
    o.num("rss_mib", m.rss_kib / 1024.0);
    o
}
