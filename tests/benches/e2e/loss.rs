//! Section 4, delivery under loss: the end-to-end chain through the impairment relay, and the FEC
//! shapes recommended for each loss rate.

use std::fmt::Write as _;

use anyhow::Context;
use protocol::encoder::{DEFAULT_DATA_SHARDS, DEFAULT_INTERLEAVE, DEFAULT_REPAIR_SHARDS};

use crate::end_to_end::{
    BURST_LEN, Drive, E2eResult, Scenario, catalogue_notes, e2e_json, run_e2e,
};
use crate::json::Obj;
use crate::{Timing, selected};

pub(crate) fn run(
    timing: &Timing,
    out: &mut String,
    json: &mut Obj,
    blast_dps: f64,
    proto_samples_per_s: f64,
) -> anyhow::Result<Vec<E2eResult>> {
    let mut lossy = Vec::new();
    // The four the targets are about, each with the repair docs/benchmarks.md recommends for it
    // (64+16 up to 5 %, 64+24 at 10 %), then one diagnostic: 5 % with a longer block timer, so
    // that FEC groups are cut short less often; and bursts of 64 datagrams on a busy link, with
    // the default shape and interleaving: first as separate events (each at least a block of
    // 4 × (64+16) datagrams after the previous one's end: what "a burst of 64" is), then, as a
    // diagnostic, starting at random anywhere, so that now and then two fall in one block and
    // make a loss of 128 in it, which is beyond what the default interleaving is sized for.
    /// Random loss, `block_ms`, FEC shape, burst chance and burst gap of one run.
    type LossRun = (f64, Option<u64>, Option<(u16, u16)>, Option<f64>, u32);
    let block =
        u32::from(DEFAULT_INTERLEAVE) * u32::from(DEFAULT_DATA_SHARDS + DEFAULT_REPAIR_SHARDS);
    let loss_runs: [LossRun; 7] = [
        (0.0, None, None, None, 0),
        (0.01, None, None, None, 0),
        (0.05, None, None, None, 0),
        (0.10, None, Some(recommended_fec(0.10)), None, 0),
        (0.05, Some(150), None, None, 0),
        (0.0, None, None, Some(1.0 / 10_000.0), block),
        (0.0, None, None, Some(1.0 / 10_000.0), 0),
    ];
    for (i, (loss, flush_ms, fec, burst, burst_gap)) in loss_runs.into_iter().enumerate() {
        let base = if burst.is_some() {
            // Busy enough that blocks fill (4 groups of 64+16 = 320 datagrams), so a burst of
            // 64 costs each group of its block 16 shards: what interleaving is for.
            Scenario::new(10_000, Drive::Saturate)
        } else {
            Scenario::new(10_000, Drive::Rate(50_000.0))
        };
        let s = Scenario {
            loss: Some(loss),
            window: Some(timing.loss_window),
            rate_mbit: config::tx::limits::RATE_MBIT_DEFAULT,
            flush_ms,
            fec,
            burst,
            burst_gap,
            ..base
        };
        if !selected(&s) {
            continue;
        }
        eprintln!("e2e: delivery under loss {} ...", s.label());
        lossy.push(run_e2e(&s, timing, 100 + i as u64).with_context(|| s.label())?);
    }
    print_loss(out, &lossy);
    print_fec_advice(out);
    json.arr(
        "delivery_under_loss",
        lossy
            .iter()
            .map(|r| e2e_json(r, blast_dps, proto_samples_per_s))
            .collect(),
    );
    Ok(lossy)
}
pub(crate) fn print_loss(out: &mut String, rs: &[E2eResult]) {
    let _ = writeln!(
        out,
        "\n== 4. Delivery under loss: through the impairment relay, random loss, FEC k+m as recommended (docs/benchmarks.md), interleave {}, {} tags at 50k samples/s offered (bursts: as fast as the link takes), {:.0} s (counts for the whole session)",
        DEFAULT_INTERLEAVE,
        rs.first().map_or(0, |r| r.scenario.tags),
        rs.first().map_or(0.0, |r| r.window.as_secs_f64())
    );
    let _ = writeln!(
        out,
        "  {:>6} {:>22} {:>8} {:>8} | {:>9} {:>9} {:>6} {:>8} | {:>7} {:>8} {:>7} {:>9} {:>8} {:>8} {:>9} | {:>8} {:>8} {:>8}",
        "loss",
        "fec, block, bursts",
        "relay rx",
        "dropped",
        "live sent",
        "delivered",
        "lost",
        "deliv %",
        "groups",
        "data/grp",
        "repair%",
        "data lost",
        "repaired",
        "crc fail",
        "mismatch",
        "lat p50",
        "lat p99",
        "lat max"
    );
    for r in rs {
        let _ = writeln!(
            out,
            "  {:>5.0}% {:>22} {:>8} {:>8} | {:>9} {:>9} {:>6} {:>8.3} | {:>7} {:>8.2} {:>7.1} {:>9} {:>8} {:>8} {:>9} | {:>8.2} {:>8.2} {:>8.2}",
            r.scenario.loss.unwrap_or(0.0) * 100.0,
            {
                let (k, m) = r
                    .scenario
                    .fec
                    .unwrap_or((DEFAULT_DATA_SHARDS, DEFAULT_REPAIR_SHARDS));
                let block = r
                    .scenario
                    .flush_ms
                    .unwrap_or(protocol::encoder::DEFAULT_BLOCK_SPAN.as_millis() as u64);
                match r.scenario.burst {
                    Some(b) if r.scenario.burst_gap > 0 => format!(
                        "{k}+{m} {block}ms {BURST_LEN}x1/{:.0} gap {}",
                        1.0 / b,
                        r.scenario.burst_gap
                    ),
                    Some(b) => format!("{k}+{m} {block}ms {BURST_LEN}x1/{:.0}", 1.0 / b),
                    None => format!("{k}+{m} {block}ms"),
                }
            },
            r.relay_received,
            r.relay_dropped,
            r.live_sent(),
            r.live_delivered(),
            r.live_lost(),
            r.delivered_percent(),
            r.enc_total.groups,
            r.data_per_group(),
            r.repair_percent(),
            r.dec_total.data_datagrams_lost,
            r.dec_total.datagrams_repaired,
            r.dec_total.crc_failures,
            r.mismatched,
            r.percentile_ms(0.5),
            r.percentile_ms(0.99),
            r.percentile_ms(1.0),
        );
    }
    let _ = writeln!(
        out,
        "  live sent: EncoderStats.messages[Live] at TX; delivered / lost: DecoderStats at RX; dropped: by the relay (data + repair);
  groups: FEC groups sent, data/grp: data shards per group, repair%: repair / data datagrams (64+16 = 25 %; short groups closed by the flush timer get more, sized for 5 % loss);\n  data lost: data datagrams lost beyond repair; mismatch: tags whose value at RX differs from TX after the drain (wrong or missing);\n  bursts 64x1/N: the relay drops 64 datagrams in a row, starting at a datagram with chance 1/N (gap G: never within G datagrams of the previous burst's end, so each is its own event; without a gap two can fall in one block);\n  target: 100 % delivered and 0 corrupted at 1, 5 and 10 % random loss (with the recommended repair) and with bursts of 64"
    );
    catalogue_notes(out, rs);
    for r in rs {
        let _ = writeln!(
            out,
            "  {}: {}",
            r.scenario.label(),
            match (r.is_diagnostic(), r.delivery_target_met()) {
                (Some(why), true) => format!("all delivered (diagnostic: {why})"),
                (Some(why), false) => format!("not all delivered (diagnostic: {why})"),
                (None, true) => "target met".to_owned(),
                (None, false) => "TARGET MISSED".to_owned(),
            }
        );
    }
}

/// FEC shapes docs/benchmarks.md recommends, by random loss rate: the fewest repair shards per 64
/// data shards that keep a full group's residual loss near [`protocol::fec::DESIGN_RESIDUAL`].
pub(crate) fn recommended_fec(loss: f64) -> (u16, u16) {
    if loss <= 0.05 { (64, 16) } else { (64, 24) }
}

pub(crate) fn print_fec_advice(out: &mut String) {
    let shapes = [(64u16, 16u16), (64, 24), (32, 16), (64, 32)];
    let _ = writeln!(
        out,
        "  residual loss of a full group (chance it cannot be repaired) at random loss p:"
    );
    let _ = writeln!(
        out,
        "  {:>8} {:>9} {:>10} {:>10} {:>10}",
        "k+m", "repair %", "p = 1 %", "p = 5 %", "p = 10 %"
    );
    for (k, m) in shapes {
        let _ = writeln!(
            out,
            "  {:>8} {:>9.1} {:>10.1e} {:>10.1e} {:>10.1e}",
            format!("{k}+{m}"),
            100.0 * f64::from(m) / f64::from(k + m),
            protocol::fec::residual_loss(k, m, 0.01),
            protocol::fec::residual_loss(k, m, 0.05),
            protocol::fec::residual_loss(k, m, 0.10),
        );
    }
    let (k, m) = recommended_fec(0.10);
    let _ = writeln!(
        out,
        "  recommended: 64+16 (default) up to 5 % loss, {k}+{m} at 10 % (docs/benchmarks.md)"
    );
}
