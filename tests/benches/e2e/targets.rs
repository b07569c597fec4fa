//! Section 7, targets: each met or missed, with its figure.

use std::fmt::Write as _;

use crate::end_to_end::{Drive, E2eResult};
use crate::json::Obj;
use crate::procs;

/// What the sections measured, for the targets.
pub(crate) struct Results<'a> {
    pub(crate) bulk: &'a [procs::BulkResult],
    pub(crate) e2e: &'a [E2eResult],
    pub(crate) lossy: &'a [E2eResult],
    pub(crate) rss: Option<&'a procs::RssResult>,
    pub(crate) modbus: Option<&'a procs::ModbusResult>,
    /// The GSO/GRO blast's payload rate.
    pub(crate) gso_gbps: f64,
}

pub(crate) fn run(out: &mut String, json: &mut Obj, r: Results<'_>, blast_gbps: f64) {
    let targets = targets(&r, blast_gbps);
    print_targets(out, &targets);
    json.arr(
        "targets",
        targets
            .iter()
            .map(|t| {
                let mut o = Obj::default();
                o.str("target", &t.what);
                o.str("figure", &t.figure);
                match t.met {
                    Some(m) => o.bool("met", m),
                    None => o.raw("met", "null".into()),
                }
                o
            })
            .collect(),
    );
}
pub(crate) struct Target {
    pub(crate) what: String,
    pub(crate) figure: String,
    /// `None`: not measured in this run.
    pub(crate) met: Option<bool>,
}

pub(crate) const SWEPT_DGRAM: &str = "1-datagram batches, GSO, highest lossless rate";
pub(crate) const SWEPT_90K: &str = "90 kB batches, GSO, highest lossless rate";

pub(crate) fn is_unpaced(b: &procs::BulkResult) -> bool {
    b.case.rate_mbit >= config::tx::limits::RATE_MBIT_MAX
}

/// Paced at the highest rate a sweep found lossless, not to check the pacer.
pub(crate) fn is_swept(b: &procs::BulkResult) -> bool {
    b.case.label == SWEPT_DGRAM || b.case.label == SWEPT_90K
}

/// The unpaced bulk case with full batches and GSO.
pub(crate) fn is_flat_out(b: &procs::BulkResult) -> bool {
    b.case.max_batch > 1 && b.case.samples > 0 && is_unpaced(b)
}

pub(crate) fn targets(r: &Results<'_>, blast_gbps: f64) -> Vec<Target> {
    let Results {
        bulk,
        e2e,
        lossy,
        rss,
        modbus,
        gso_gbps,
    } = *r;
    let mut t = Vec::new();
    let unpaced = bulk.iter().find(|b| is_flat_out(b));
    let judged = bulk
        .iter()
        .find(|b| b.case.label == SWEPT_DGRAM)
        .or(unpaced);
    t.push(match judged {
        Some(b) => Target {
            what: "bulk goodput (FEC 20 %, AES-GCM) >= 1.0 x the plain UDP blast, nothing lost"
                .into(),
            figure: bulk
                .iter()
                .filter(|o| std::ptr::eq(*o, b) || is_swept(o) || is_flat_out(o))
                .map(|o| {
                    format!(
                        "{}: {:.3} Gb/s = {:.2} x blast (a), {:.2} x GSO blast (b), {:.2} % delivered",
                        o.case.label,
                        o.goodput_gbps(),
                        o.goodput_gbps() / blast_gbps,
                        o.goodput_gbps() / gso_gbps,
                        o.delivered_percent()
                    )
                })
                .collect::<Vec<_>>()
                .join("; "),
            met: Some(b.goodput_gbps() >= blast_gbps && b.rx_lost == 0.0),
        },
        None => Target {
            what: "bulk goodput >= 1.0 x blast".into(),
            figure: "not run".into(),
            met: None,
        },
    });
    let paced: Vec<&procs::BulkResult> = bulk
        .iter()
        .filter(|b| !is_unpaced(b) && !is_swept(b))
        .collect();
    if !paced.is_empty() {
        let figs: Vec<String> = paced
            .iter()
            .map(|b| format!("{:.4} of {} Mb/s", b.pacer_ratio(), b.case.rate_mbit))
            .collect();
        t.push(Target {
            what: "pacer holds a configured rate within 1 %".into(),
            figure: figs.join(", "),
            met: Some(
                paced
                    .iter()
                    .all(|b| (0.99..=1.01).contains(&b.pacer_ratio())),
            ),
        });
    }
    // Judged on both unpaced batch shapes with GSO, datagram-sized (what the history thread
    // sends) and 90 kB (the densest), and on datagram-sized batches at the highest rate with nothing lost (the
    // unpaced receiver is overrun and spends CPU on messages it then loses); the TX figure is
    // the whole process, the synthetic source that stands in for the history thread included.
    let cpu_cases: Vec<&procs::BulkResult> = bulk
        .iter()
        .filter(|b| (b.case.max_batch > 1 && is_unpaced(b)) || b.case.label == SWEPT_DGRAM)
        .collect();
    if !cpu_cases.is_empty() {
        t.push(Target {
            what: "CPU per GiB on each side <= 1.5 s (1400-byte datagrams)".into(),
            figure: cpu_cases
                .iter()
                .map(|b| {
                    format!(
                        "{}: TX {:.2} s/GiB (link thread {:.2}), RX {:.2} s/GiB",
                        b.case.label,
                        b.tx_cpu_per_gib(),
                        b.tx_link_cpu_per_gib(),
                        b.rx_cpu_per_gib()
                    )
                })
                .collect::<Vec<_>>()
                .join("; "),
            met: Some(
                cpu_cases
                    .iter()
                    .all(|b| b.tx_cpu_per_gib() <= 1.5 && b.rx_cpu_per_gib() <= 1.5),
            ),
        });
    }
    for (what, pick) in [
        (
            "100 % delivered, 0 corrupted at 5 % random loss with 25 % repair",
            lossy
                .iter()
                .find(|r| r.scenario.loss == Some(0.05) && r.scenario.flush_ms.is_none()),
        ),
        (
            "100 % delivered, 0 corrupted at bursts of 64 with the default interleaving",
            lossy
                .iter()
                .find(|r| r.scenario.burst.is_some() && r.scenario.burst_gap > 0),
        ),
        (
            "100 % delivered, 0 corrupted at 10 % random loss with the recommended repair",
            lossy.iter().find(|r| r.scenario.loss == Some(0.10)),
        ),
    ] {
        t.push(match pick {
            Some(r) => Target {
                what: what.into(),
                figure: format!(
                    "{}: {}/{} live messages delivered ({:.3} %), {} CRC failures, {} mismatched tags",
                    r.scenario.label(),
                    r.live_delivered(),
                    r.live_sent(),
                    r.delivered_percent(),
                    r.dec_total.crc_failures,
                    r.mismatched
                ),
                met: Some(r.delivery_target_met()),
            },
            None => Target {
                what: what.into(),
                figure: "not run".into(),
                met: None,
            },
        });
    }
    let best = e2e
        .iter()
        .filter(|r| r.scenario.loss.is_none())
        .map(|r| r.per_s(r.rx_applied).min(r.per_s(r.tx_samples)))
        .fold(0.0, f64::max);
    t.push(Target {
        what: "live samples >= 2,000,000 per second end to end".into(),
        figure: if e2e.is_empty() {
            "not run".into()
        } else {
            format!("{best:.0} samples/s at best (TX taken and RX applied, the lower of the two)")
        },
        met: (!e2e.is_empty()).then_some(best >= 2_000_000.0),
    });
    let at100k = e2e
        .iter()
        .find(|r| r.scenario.drive == Drive::Rate(100_000.0) && r.scenario.tags == 100_000);
    t.push(match at100k {
        Some(r) => Target {
            what: "p99 latency <= 5 ms at 100,000 samples/s".into(),
            figure: format!(
                "{}: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                r.scenario.label(),
                r.percentile_ms(0.5),
                r.percentile_ms(0.99),
                r.percentile_ms(1.0)
            ),
            met: Some(r.percentile_ms(0.99) <= 5.0),
        },
        None => Target {
            what: "p99 latency <= 5 ms at 100,000 samples/s".into(),
            figure: "not run".into(),
            met: None,
        },
    });
    t.push(match rss {
        Some(r) => Target {
            what: format!("RX resident memory <= 256 MiB with {} tags", r.tags),
            figure: format!(
                "{:.1} MiB resident, {:.1} MiB peak",
                r.rss_kib / 1024.0,
                r.hwm_kib / 1024.0
            ),
            met: Some(r.rss_kib / 1024.0 <= 256.0 && r.tags >= 1_000_000),
        },
        None => Target {
            what: "RX resident memory <= 256 MiB with 1,000,000 tags".into(),
            figure: "not run".into(),
            met: None,
        },
    });
    t.push(match modbus {
        Some(m) => Target {
            what: "Modbus 100 PLCs x 1,000 registers at 100 ms with <= 25 % of one core".into(),
            figure: format!(
                "{:.1} % of one core, {:.0} polls/s",
                100.0 * m.cpu_share,
                m.polls_per_s
            ),
            met: Some(m.cpu_share <= 0.25),
        },
        None => Target {
            what: "Modbus 100 PLCs x 1,000 registers at 100 ms with <= 25 % of one core".into(),
            figure: "not run".into(),
            met: None,
        },
    });
    t
}

pub(crate) fn print_targets(out: &mut String, ts: &[Target]) {
    let _ = writeln!(out, "\n== 7. Targets");
    for t in ts {
        let _ = writeln!(
            out,
            "  [{}] {}: {}",
            match t.met {
                Some(true) => "met   ",
                Some(false) => "MISSED",
                None => "  --  ",
            },
            t.what,
            t.figure
        );
    }
}
