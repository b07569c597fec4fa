//! The scenarios: each one's data (name, impairment, duration, expectation, FEC shape and
//! check) and how one is played on the bed.

use super::*;

/// A link's FEC shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Fec {
    pub(super) data: u16,
    pub(super) repair: u16,
    pub(super) interleave: u16,
    pub(super) flush_ms: u64,
    pub(super) block_ms: u64,
}

/// Every scenario but one runs the shipped defaults.
pub(super) const SHIPPED_FEC: Fec = Fec {
    data: 64,
    repair: 16,
    interleave: 4,
    flush_ms: 5,
    block_ms: 50,
};

/// Shaped for bursts of 64 at this test's rate: 8 groups of 8 + 8, so a burst of 64 costs
/// each group 8 shards, and a block of 64 data datagrams fills in about 60 ms, well within the
/// block timer and the receiver's 200 ms group timeout.
pub(super) const BURST_FEC: Fec = Fec {
    data: 8,
    repair: 8,
    interleave: 8,
    flush_ms: 5,
    block_ms: 100,
};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Kind {
    Clean,
    Loss(u32),
    Burst,
    Reorder,
    Duplicate,
    Corrupt,
    /// gateway-rx descheduled now and then (SIGSTOP/SIGCONT), as on a busy host.
    Stall,
    RxRestart,
    TxRestart,
    /// The link cut for the scenario's duration (nft drop on the IT ingress).
    Cut,
    PlcUnplug,
    /// From the IT network: behind the shipped firewall, then with its link-port rule removed.
    Garbage {
        key: bool,
    },
    /// From the IT network, link-port rule removed: datagrams of fresh sessions of a newer epoch.
    SessionFlood {
        key: bool,
    },
    /// From the IT network, link-port rule removed: captures of two transmitter sessions
    /// replayed after the receiver restarted, with the link cut and then up.
    Replay,
}

impl Kind {
    pub(super) fn keyed(self) -> bool {
        matches!(
            self,
            Kind::Garbage { key: true } | Kind::SessionFlood { key: true } | Kind::Replay
        )
    }
}

/// One scenario: what is done to the link or the boxes, for how long, and what must hold
/// after; `check` turns the last into failures of the scenario's row.
pub(super) struct Scenario {
    pub(super) name: &'static str,
    pub(super) impairment: String,
    /// How long the impairment lasts: the window the link is impaired, the time a daemon or
    /// the PLC is away, the cut. The attacks time their own phases (`attacks.rs`) and leave it
    /// zero.
    pub(super) duration: Duration,
    pub(super) expect: &'static str,
    pub(super) kind: Kind,
    pub(super) fec: Fec,
    /// The scenario's own checks, after the ones every scenario shares (`check::measure`).
    pub(super) check: fn(&Scenario, &Outcome, &mut Row),
}

pub(super) fn scenarios(cut_secs: u64) -> Vec<Scenario> {
    let s = |name, impairment: &str, expect, kind, duration, check| Scenario {
        name,
        impairment: impairment.to_string(),
        duration,
        expect,
        kind,
        fec: SHIPPED_FEC,
        check,
    };
    vec![
        s(
            "clean",
            "none",
            "every datagram sent arrives and is accepted; nothing repaired, lost or rejected",
            Kind::Clean,
            WINDOW,
            check_clean,
        ),
        s(
            "loss-1",
            "1 % random loss (nft numgen)",
            "every arriving datagram accepted; lost data datagrams at most 0.1 % of those sent",
            Kind::Loss(1),
            WINDOW + Duration::from_secs(2),
            check_loss,
        ),
        s(
            "loss-5",
            "5 % random loss (nft numgen)",
            "every arriving datagram accepted; lost at most 1 % of data datagrams",
            Kind::Loss(5),
            WINDOW + Duration::from_secs(2),
            check_loss,
        ),
        s(
            "loss-10",
            "10 % random loss (nft numgen)",
            "every arriving datagram accepted; lost at most 3 % of data datagrams",
            Kind::Loss(10),
            WINDOW + Duration::from_secs(2),
            check_loss,
        ),
        s(
            "burst-64",
            "relay: bursts of 64 consecutive datagrams, about 1 per 1500",
            "gateway-rx repairs exactly what an ideal erasure decoder can and counts the rest as lost \
             (with the shipped FEC at this test's low rate, blocks closed by their 50 ms timer hold \
             too few datagrams to spread a burst of 64)",
            Kind::Burst,
            WINDOW + Duration::from_secs(5),
            check_relayed,
        ),
        Scenario {
            name: "burst-64-fec8x8",
            impairment: "as burst-64, FEC 8+8 x8 block 100 ms".to_string(),
            expect: "exact accounting as in burst-64; FEC rebuilds what bursts take from full \
                     blocks (a burst in a block its timer closed early, \
                     with proportionally fewer repair shards, is lost)",
            kind: Kind::Burst,
            duration: WINDOW + Duration::from_secs(5),
            fec: BURST_FEC,
            check: check_relayed,
        },
        s(
            "reorder",
            "relay: 5 % of datagrams held back behind 20 later ones",
            "nothing lost; repaired + lost exactly as the observer computes",
            Kind::Reorder,
            WINDOW,
            check_relayed,
        ),
        s(
            "duplicate",
            "relay: 5 % of datagrams sent twice",
            "duplicates counted = duplicates made; nothing lost or repaired",
            Kind::Duplicate,
            WINDOW,
            check_relayed,
        ),
        s(
            "corrupt",
            "relay: one bit flipped in 2 % of datagrams",
            "every corrupted datagram rejected (CRC failures = corrupted datagrams with a valid magic); \
             FEC repairs them as erasures exactly as the observer computes; no corrupted value delivered",
            Kind::Corrupt,
            WINDOW,
            check_relayed,
        ),
        s(
            "rx-stall",
            "relay: 3 % random loss; gateway-rx stopped (SIGSTOP) every 1.5 s for 300 ms (less if its socket buffer cannot hold that)",
            "reading its socket late costs nothing: gateway-rx repairs exactly what an ideal \
             erasure decoder can and counts the rest as lost, as in burst-64",
            Kind::Stall,
            WINDOW,
            check_relayed,
        ),
        s(
            "rx-restart",
            "gateway-rx killed (SIGKILL), restarted after 3 s",
            "the new receiver learns the catalogue and every value from the link",
            Kind::RxRestart,
            Duration::from_secs(3),
            check_restart,
        ),
        s(
            "tx-restart",
            "gateway-tx killed (SIGKILL), restarted after 4 s",
            "receiver reports link down, then a new session; every value arrives again",
            Kind::TxRestart,
            Duration::from_secs(4),
            check_restart,
        ),
        Scenario {
            name: "link-cut",
            impairment: format!(
                "link cut {cut_secs} s (nft drop on the IT ingress), then restored"
            ),
            expect: "link down while cut, mirror keeps serving last values; link up after; every value arrives again",
            kind: Kind::Cut,
            duration: Duration::from_secs(cut_secs),
            fec: SHIPPED_FEC,
            check: check_cut,
        },
        s(
            "plc-unplug",
            "PLC unplugged 5 s, then back",
            "mirror refuses every tag while the PLC is away (quality Bad); values back after",
            Kind::PlcUnplug,
            Duration::from_secs(5),
            check_restart,
        ),
        s(
            "garbage",
            "host on the IT network sends random bytes and bad CRCs to gateway-rx's port (3000 of \
             each at 3000/s), no key: behind the shipped firewall, then without its link-port \
             rule; then random bytes at 10,000/s for 2 s",
            "firewall: its link-port rule drops every one, gateway-rx sees none; without the rule \
             every one is counted (bad magic or length, CRC); nothing lost; mirror fresh and true",
            Kind::Garbage { key: false },
            Duration::ZERO,
            check_attack,
        ),
        s(
            "garbage-key",
            "as garbage (first two parts) plus 3000 forged datagrams with valid CRCs (in turn: \
             unauthenticated, of an older session, of a newer one); key configured",
            "firewall: every one dropped, none seen; without the rule every bad CRC counted, \
             every forged datagram an authentication failure, or a stale session for the older \
             epoch; nothing lost; mirror fresh and true",
            Kind::Garbage { key: true },
            Duration::ZERO,
            check_attack,
        ),
        s(
            "session-flood",
            "link-port rule removed; host on the IT network sends CRC-valid datagrams, each of a \
             fresh session of a newer epoch: 1/s for 10 s, then 10,000/s for 2 s; no key",
            "the live session is never displaced (no session change); every one counted as a \
             stale session; mirror fresh and true throughout",
            Kind::SessionFlood { key: false },
            Duration::ZERO,
            check_attack,
        ),
        s(
            "session-flood-key",
            "as session-flood, datagrams claiming authentication, key configured: 1/s for 5 s, \
             10,000/s for 2 s, then 10,000 as fast as they go",
            "no session change; every one an authentication failure or refused a key \
             derivation (key_rate_limited, which the fast burst must reach); mirror fresh and true",
            Kind::SessionFlood { key: true },
            Duration::ZERO,
            check_attack,
        ),
        s(
            "replay",
            "link-port rule removed, key configured; the link datagrams of a transmitter session \
             (A) and of the next one after a restart (B) captured; receiver restarted with the link \
             cut, B and A replayed at 20,000/s; link back, A and B replayed again",
            "link cut: every datagram of B refused as a replay, every one of A as a stale session, \
             none accepted, the mirror serves nothing; link up: A stale, B replayed, duplicate or \
             out of window, every one; the receiver stays in B; mirror fresh and true",
            Kind::Replay,
            Duration::ZERO,
            check_replay,
        ),
    ]
}

pub(super) fn run_scenario(bed: &mut Bed, sc: &Scenario) -> Row {
    let started = Instant::now();
    let mut row = Row {
        name: sc.name.to_string(),
        impairment: sc.impairment.clone(),
        expect: sc.expect.to_string(),
        ..Row::default()
    };
    let dir = bed.work.join(sc.name);
    let _ = std::fs::create_dir_all(&dir);
    let mut run = Run {
        bed,
        dir,
        rx: None,
        tx: None,
        relay: None,
        rx_instances: 0,
        tx_instances: 0,
        key: sc.kind.keyed(),
        legacy_config: std::env::var("DIODE_LEGACY_CONFIG").is_ok_and(|v| v == "1"),
        fec: sc.fec,
        monitor: Monitor::default(),
        capture: None,
        attackers: 0,
        replay_rx_start: None,
    };
    if let Err(e) = scenario(&mut run, sc, &mut row) {
        row.failures.push(format!("{e:#}"));
    }
    run.stop_all();
    let _ = run.bed.set_impairment(None);
    if let Err(e) = run.bed.set_link_port_rule(true) {
        row.failures
            .push(format!("putting the firewall's link-port rule back: {e:#}"));
    }
    row.seconds = started.elapsed().as_secs_f64();
    row
}

/// The longest stall of gateway-rx (at most 300 ms) whose traffic its socket buffer holds with
/// room to spare: a stall the buffer cannot hold loses datagrams to overflow, which no receiver
/// can help. The kernel grants twice the smaller of the request (gateway-rx asks 8 MiB) and
/// `net.core.rmem_max`, counted in buffer truesize: about 2.3 kB per datagram of this bed, which
/// sends about 600 a second; twice that is allowed for.
pub(super) fn stall_that_fits() -> anyhow::Result<Duration> {
    let rmem_max: u64 = ns_output(NS_IT, &["cat", "/proc/sys/net/core/rmem_max"])?
        .trim()
        .parse()
        .context("reading net.core.rmem_max in the IT box")?;
    let queue = 2 * rmem_max.min(8 << 20);
    let bytes_per_s = 2 * 600 * 2_300;
    Ok(Duration::from_millis(
        (queue * 1000 / bytes_per_s).clamp(50, 300),
    ))
}

pub(super) fn uses_relay(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::Burst | Kind::Reorder | Kind::Duplicate | Kind::Corrupt | Kind::Stall
    )
}

/// Plays one scenario: starts its processes, impairs for its duration, then measures and
/// checks (`check.rs`).
pub(super) fn scenario(run: &mut Run, sc: &Scenario, row: &mut Row) -> anyhow::Result<()> {
    let relay = uses_relay(sc.kind);
    run.bed.set_impairment(None)?;
    run.bed.reset_impairment_drops()?;
    let wire0 = run.bed.wire()?;
    if relay {
        run.start_relay()?;
    }
    run.start_rx(relay)?;
    run.bed.plc.cmd("run")?;
    if sc.kind == Kind::Replay {
        run.start_capture()?;
        run.capture_cmd("start session-a.cap")?;
    }
    run.start_tx()?;
    let ready = run.wait_ready(READY_TIMEOUT)?;
    row.notes.push(format!(
        "all {} tags on the mirror {:.1} s after start",
        run.monitor.total,
        ready.as_secs_f64()
    ));

    match sc.kind {
        Kind::Clean => run.watch(sc.duration)?,
        Kind::Loss(pct) => {
            run.bed.set_impairment(Some(&format!(
                "iifname \"{IT_IF}\" udp dport {LINK_PORT} numgen random mod 1000 < {} counter name \"dropped\" drop",
                pct * 10
            )))?;
            run.watch(sc.duration)?;
        }
        Kind::Burst => {
            run.relay_set("burst=0.000667 burst_len=64")?;
            run.watch(sc.duration)?;
        }
        Kind::Reorder => {
            run.relay_set("reorder=0.05 reorder_depth=20")?;
            run.watch(sc.duration)?;
        }
        Kind::Stall => {
            run.relay_set("loss=0.03")?;
            let stall = stall_that_fits()?;
            if stall < Duration::from_millis(250) {
                row.notes.push(format!(
                    "the IT box's net.core.rmem_max only lets gateway-rx's socket hold {} ms of \
                     this traffic: stalls shortened to that, under the 200 ms group timeout whose \
                     handling this scenario is about",
                    stall.as_millis()
                ));
            }
            let mut stalls = 0;
            let t = Instant::now();
            while t.elapsed() < sc.duration {
                run.watch(Duration::from_millis(1200))?;
                let rx = run.rx.as_ref().context("gateway-rx is not running")?;
                rx.signal("STOP")?;
                std::thread::sleep(stall);
                rx.signal("CONT")?;
                stalls += 1;
            }
            row.notes.push(format!(
                "gateway-rx stopped {stalls} times for {} ms",
                stall.as_millis()
            ));
        }
        Kind::Duplicate => {
            run.relay_set("duplicate=0.05")?;
            run.watch(sc.duration)?;
        }
        Kind::Corrupt => {
            run.relay_set("corrupt=0.02")?;
            run.watch(sc.duration)?;
        }
        Kind::RxRestart => {
            run.watch(Duration::from_secs(4))?;
            if let Some(mut rx) = run.rx.take() {
                rx.kill();
            }
            run.watch(sc.duration)?;
            run.monitor.forget_history();
            run.start_rx(false)?;
            let t = run.wait_ready(READY_TIMEOUT)?;
            row.notes.push(format!(
                "restarted receiver served every tag {:.1} s after start",
                t.as_secs_f64()
            ));
            row.notes
                .push("rx counters are the restarted receiver's".to_string());
            run.watch(Duration::from_secs(3))?;
        }
        Kind::TxRestart => {
            run.watch(Duration::from_secs(4))?;
            if let Some(mut tx) = run.tx.take() {
                tx.kill();
            }
            run.watch(sc.duration)?;
            run.start_tx()?;
            let t = run.wait_ready(READY_TIMEOUT)?;
            row.notes.push(format!(
                "every tag served again {:.1} s after the transmitter restarted",
                t.as_secs_f64()
            ));
            run.watch(Duration::from_secs(3))?;
            let log = run.rx_log();
            row.check(
                log_count(&log, "link down") >= 1,
                "gateway-rx did not log `link down` while the transmitter was dead",
            );
            row.check(
                log_count(&log, "new transmitter session") >= 1,
                "gateway-rx did not log a new transmitter session",
            );
        }
        Kind::Cut => {
            let secs = sc.duration.as_secs();
            run.watch(Duration::from_secs(3))?;
            run.bed.set_impairment(Some(&format!(
                "iifname \"{IT_IF}\" counter name \"dropped\" drop"
            )))?;
            let before = run.monitor.unavailable_reads;
            run.watch(sc.duration)?;
            let during = run.monitor.unavailable_reads - before;
            let log = run.rx_log();
            let downs = log_count(&log, "link down");
            row.check(
                downs >= 1,
                "gateway-rx did not log `link down` during the cut",
            );
            row.check(
                during == 0,
                format!(
                    "the mirror refused {during} reads during the cut (it should serve the last values)"
                ),
            );
            row.notes.push(format!(
                "mirror kept serving every tag through the {secs} s cut"
            ));
            row.dropped = run.bed.impairment_drops()?;
            run.bed.set_impairment(None)?;
            let t = run.wait_ready(READY_TIMEOUT)?;
            run.watch(Duration::from_secs(3))?;
            let ups = log_count(&run.rx_log(), "link up");
            row.check(ups >= 2, "gateway-rx did not log `link up` after the cut");
            row.notes.push(format!(
                "link up again after the cut, values flowing {:.1} s later",
                t.as_secs_f64()
            ));
        }
        Kind::PlcUnplug => {
            run.watch(Duration::from_secs(3))?;
            run.bed.plc.cmd("unplug")?;
            let t = Instant::now();
            let mut refused_all = None;
            while t.elapsed() < sc.duration {
                let s = run.sample()?;
                if refused_all.is_none() && s.unavailable == run.monitor.total {
                    refused_all = Some(t.elapsed());
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            row.check(
                refused_all.is_some(),
                "the mirror kept serving values while the PLC was unplugged",
            );
            if let Some(d) = refused_all {
                row.notes.push(format!(
                    "mirror refused every tag (quality Bad) {:.1} s after the PLC was unplugged",
                    d.as_secs_f64()
                ));
            }
            run.bed.plc.cmd("plug")?;
            let t = run.wait_ready(READY_TIMEOUT)?;
            row.notes.push(format!(
                "values back {:.1} s after the PLC was plugged in",
                t.as_secs_f64()
            ));
            run.watch(Duration::from_secs(2))?;
        }
        Kind::Garbage { key } => attacks::garbage(run, row, key)?,
        Kind::SessionFlood { key } => attacks::session_flood(run, row, key)?,
        Kind::Replay => attacks::replay(run, row)?,
    }

    let outcome = measure(run, sc, row, wire0)?;
    (sc.check)(sc, &outcome, row);
    Ok(())
}
