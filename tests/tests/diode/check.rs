//! What a scenario must show: its row in the report, the measurements and checks every
//! scenario shares, and each scenario's own check.

use super::*;

/// One line of the report.
#[derive(Default)]
pub(super) struct Row {
    pub(super) name: String,
    pub(super) impairment: String,
    pub(super) expect: String,
    /// Datagrams that left the OT box (ot0 tx).
    pub(super) sent: u64,
    /// Dropped by the impairment (firewall rule or relay).
    pub(super) dropped: u64,
    /// Datagrams handed to gateway-rx's socket (firewall accept counter, or the relay's output).
    pub(super) received: u64,
    pub(super) rx: RxStatus,
    pub(super) values: usize,
    pub(super) values_total: usize,
    pub(super) converge: Option<Duration>,
    pub(super) corrupted_reads: u64,
    pub(super) regressions: u64,
    pub(super) samples: u64,
    /// Packets from the IT box towards the OT box: it0 tx + ot0 rx + UDP received in gw-ot.
    pub(super) return_path: u64,
    /// Packets the IT box's firewall stopped on their way to the diode (from the kernel, e.g.
    /// ICMP port unreachable while gateway-rx was down).
    pub(super) blocked: u64,
    pub(super) attacks: Vec<Attack>,
    pub(super) notes: Vec<String>,
    /// Behaviour worth a look that the scenario does not fail on.
    pub(super) findings: Vec<String>,
    pub(super) failures: Vec<String>,
    pub(super) seconds: f64,
}

impl Row {
    pub(super) fn check(&mut self, ok: bool, what: impl Into<String>) {
        if !ok {
            self.failures.push(what.into());
        }
    }

    /// Records one attack and checks it: `checks` are (held, what failed) pairs about the
    /// counts, to which the mirror's own checks over the attack are added.
    pub(super) fn attack(&mut self, a: Attack, checks: Vec<(bool, String)>) {
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
pub(super) struct Attack {
    pub(super) what: String,
    /// Datagrams the attacker sent.
    pub(super) sent: u64,
    /// Dropped by the IT firewall's link-port rule (`None`: the rule was removed).
    pub(super) firewall: Option<u64>,
    /// What gateway-rx counted, by reason.
    pub(super) counted: String,
    pub(super) mirror: MirrorExpect,
    pub(super) window: Window,
    pub(super) ok: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum MirrorExpect {
    /// Every read serves every tag, fresh.
    Fresh,
    /// The receiver knows no value (restarted with the link cut): an attack must not give it one.
    Nothing,
}

/// `counted` datagrams of `sent`: all of them, unless `overflow` datagrams were dropped in the
/// IT box's socket buffers meanwhile, which only the ones they were can account for.
pub(super) fn exact(counted: u64, sent: u64, overflow: u64) -> bool {
    if overflow == 0 {
        counted == sent
    } else {
        counted <= sent && counted + overflow >= sent
    }
}

/// What a scenario's own check needs once the run is over, besides its row.
pub(super) struct Outcome {
    /// Link counters over the scenario, and at its start.
    pub(super) wire: Wire,
    pub(super) wire0: Wire,
    /// gateway-rx's last status line.
    pub(super) rx: RxStatus,
    /// The relay's final counts, for the scenarios behind it.
    pub(super) relay_stats: Option<String>,
    /// The link counters when the replay scenario restarted the receiver.
    pub(super) replay_rx_start: Option<Wire>,
}

impl Outcome {
    /// No datagram was dropped in the IT box's socket buffers: counts can then be exact.
    pub(super) fn rcvbuf_clean(&self) -> bool {
        self.wire.it_rcvbuf_errors == 0
    }
}

/// Converges, stops the transmitter so that every counter is final, fills the row's counts,
/// and makes the checks every scenario shares.
pub(super) fn measure(
    run: &mut Run,
    sc: &Scenario,
    row: &mut Row,
    wire0: Wire,
) -> anyhow::Result<Outcome> {
    let relay = uses_relay(sc.kind);
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
    if sc.kind != Kind::Cut {
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
    Ok(Outcome {
        wire,
        wire0,
        rx: row.rx,
        relay_stats,
        replay_rx_start: run.replay_rx_start,
    })
}

/// Every datagram sent arrived, was let through and accepted; nothing lost, repaired or rejected.
pub(super) fn check_clean(_sc: &Scenario, o: &Outcome, row: &mut Row) {
    let wire = o.wire;
    let rx = o.rx;
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

/// The firewall's random drops are near the rate asked; FEC repaired, and kept the loss within the bound.
pub(super) fn check_loss(sc: &Scenario, o: &Outcome, row: &mut Row) {
    let wire = o.wire;
    let rx = o.rx;
    let rcvbuf_clean = o.rcvbuf_clean();
    let Kind::Loss(pct) = sc.kind else {
        return;
    };
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
    let data = row.sent as f64 * f64::from(sc.fec.data) / f64::from(sc.fec.data + sc.fec.repair);
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

/// Behind the relay: gateway-rx's repair and loss are exactly what the relay's observer computes an
/// ideal erasure decoder makes of the same datagrams, and each impairment did what it says.
pub(super) fn check_relayed(sc: &Scenario, o: &Outcome, row: &mut Row) {
    let wire = o.wire;
    let rx = o.rx;
    let rcvbuf_clean = o.rcvbuf_clean();
    let s = o.relay_stats.clone().unwrap_or_default();
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

/// Garbage and session floods: the diode's datagrams all accepted, nothing lost, the session kept.
pub(super) fn check_attack(_sc: &Scenario, o: &Outcome, row: &mut Row) {
    let wire = o.wire;
    let rx = o.rx;
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

/// Replays: the restarted receiver accepted what came over the diode and not one replayed datagram.
pub(super) fn check_replay(_sc: &Scenario, o: &Outcome, row: &mut Row) {
    let wire = o.wire;
    let wire0 = o.wire0;
    let rx = o.rx;
    // The restarted receiver took every datagram the diode passed since it started
    // (with the link cut: none) and not one of the replays.
    let since = o.replay_rx_start.unwrap_or_default();
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

/// A daemon or the PLC away for a while: nothing rejected, and on a clean link nothing lost.
pub(super) fn check_restart(sc: &Scenario, o: &Outcome, row: &mut Row) {
    let rx = o.rx;
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

/// The cut's datagrams are counted lost (less the few FEC rebuilt at its edges).
pub(super) fn check_cut(_sc: &Scenario, o: &Outcome, row: &mut Row) {
    let rx = o.rx;
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
