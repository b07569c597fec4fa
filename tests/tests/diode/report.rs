//! The report printed at the end and saved to `target/systest/report.md`.

use super::*;

pub(super) fn report(rows: &[Row], cut_secs: u64, elapsed: Duration, plc_stats: &str) -> String {
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
