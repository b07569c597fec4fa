//! The attack scenarios of the diode system test: what a host on the IT network sends to
//! gateway-rx's link port, behind the shipped firewall and without its link-port rule, and
//! what gateway-rx and its mirror must make of it (see the test's module doc and THREATS.md).

use super::*;

fn link_target() -> String {
    format!("{IT_ADDR}:{LINK_PORT}")
}

/// The garbage scenarios: the same traffic behind the shipped firewall, then without its
/// link-port rule; without a key, then random bytes at 10,000/s.
pub(super) fn garbage(run: &mut Run, row: &mut Row, key: bool) -> anyhow::Result<()> {
    const EACH: u64 = 3000;
    run.watch(Duration::from_secs(2))?;
    let target = link_target();
    let kinds = if key {
        "random,bad-crc,forged"
    } else {
        "random,bad-crc"
    };
    let nkinds = kinds.split(',').count() as u64;
    let each = EACH.to_string();
    let garbage_args = |seed: &str| {
        strings(&[
            "garbage", "--target", &target, "--kinds", kinds, "--count", &each, "--rate", "3000",
            "--seed", seed,
        ])
    };

    // The shipped firewall: the link port's rule drops all of it.
    let fw0 = run.bed.link_port_drops()?;
    row.check(
        fw0.is_some(),
        "the IT firewall has no link-port rule (deploy/nftables/it-box.nft)",
    );
    let before = run.status_now();
    let (g, w) = run.send_from_it_lan("garbage-firewalled", &garbage_args("1"))?;
    let fw = run
        .bed
        .link_port_drops()?
        .unwrap_or(0)
        .saturating_sub(fw0.unwrap_or(0));
    let st = run.settled_status()?;
    let total = field(&g, "total").unwrap_or(0);
    let d = st.since(&before);
    row.attack(
        Attack {
            what: format!("{kinds}, {each} each at 3000/s, shipped firewall"),
            sent: total,
            firewall: Some(fw),
            counted: d.counted(),
            mirror: MirrorExpect::Fresh,
            window: w,
            ok: true,
        },
        vec![
            (
                total == EACH * nkinds,
                format!("the sender sent {total} of {}", EACH * nkinds),
            ),
            (
                fw == total,
                format!("the firewall's link-port rule dropped {fw} of the {total} sent"),
            ),
            (
                st.rejected() == 0 && st.received == st.accepted,
                format!(
                    "gateway-rx received {} and accepted {}, rejecting {}",
                    st.received,
                    st.accepted,
                    st.counted()
                ),
            ),
        ],
    );

    // The same without the rule: gateway-rx counts every one, by reason.
    run.bed.set_link_port_rule(false)?;
    let over0 = run.bed.wire()?.it_rcvbuf_errors;
    let (g, w) = run.send_from_it_lan("garbage-open", &garbage_args("2"))?;
    let now = run.settled_status()?;
    let overflow = run.bed.wire()?.it_rcvbuf_errors - over0;
    let d = now.since(&st);
    let f = |k: &str| field(&g, k).unwrap_or(0);
    let total = f("total");
    let mut checks = vec![
        (
            total == EACH * nkinds,
            format!("the sender sent {total} of {}", EACH * nkinds),
        ),
        (
            exact(d.crc_failures, f("bad_crc"), overflow),
            format!(
                "gateway-rx counted {} CRC failures; {} datagrams with a bad CRC were sent",
                d.crc_failures,
                f("bad_crc")
            ),
        ),
        (
            exact(d.bad_magic + d.bad_length, f("random"), overflow),
            format!(
                "gateway-rx counted {} bad magic + {} bad length; {} random datagrams were sent",
                d.bad_magic,
                d.bad_length,
                f("random")
            ),
        ),
        (
            exact(d.rejected(), total, overflow),
            format!(
                "gateway-rx rejected {} ({}) of {total} sent",
                d.rejected(),
                d.counted()
            ),
        ),
        (
            d.session_changes == 0,
            format!("gateway-rx changed session {} times", d.session_changes),
        ),
    ];
    if key {
        let (plain, old, new) = (f("forged_plain"), f("forged_old"), f("forged_new"));
        checks.push((
            plain > 0 && old > 0 && new > 0,
            format!("forged datagrams sent: {plain} unauthenticated, {old} older, {new} newer"),
        ));
        checks.push((
            exact(d.auth_failures + d.key_rate_limited, plain + new, overflow),
            format!(
                "gateway-rx counted {} authentication failures + {} key-rate-limited; {plain} \
                 unauthenticated and {new} of a newer session were forged",
                d.auth_failures, d.key_rate_limited
            ),
        ));
        checks.push((
            exact(d.stale_session, old, overflow),
            format!(
                "gateway-rx counted {} stale-session datagrams; {old} of an older session were forged",
                d.stale_session
            ),
        ));
    } else {
        checks.push((
            d.auth_failures == 0 && d.stale_session == 0,
            format!(
                "{} authentication failures and {} stale-session datagrams without a key",
                d.auth_failures, d.stale_session
            ),
        ));
    }
    overflow_note(row, "garbage without the link-port rule", overflow);
    row.attack(
        Attack {
            what: format!("{kinds}, {each} each at 3000/s, link-port rule removed"),
            sent: total,
            firewall: None,
            counted: d.counted(),
            mirror: MirrorExpect::Fresh,
            window: w,
            ok: true,
        },
        checks,
    );

    if !key {
        let over0 = run.bed.wire()?.it_rcvbuf_errors;
        let args = strings(&[
            "garbage", "--target", &target, "--kinds", "random", "--count", "20000", "--rate",
            "10000", "--seed", "3",
        ]);
        let (g, w) = run.send_from_it_lan("random-10k", &args)?;
        let after = run.settled_status()?;
        let overflow = run.bed.wire()?.it_rcvbuf_errors - over0;
        let d = after.since(&now);
        let sent = field(&g, "random").unwrap_or(0);
        overflow_note(row, "random bytes at 10,000/s", overflow);
        row.attack(
            Attack {
                what: format!(
                    "random bytes, 10,000/s for 2 s (sent in {} s), link-port rule removed",
                    g.split("seconds=").nth(1).unwrap_or("?")
                ),
                sent,
                firewall: None,
                counted: d.counted(),
                mirror: MirrorExpect::Fresh,
                window: w,
                ok: true,
            },
            vec![
                (sent == 20_000, format!("the sender sent {sent} of 20000")),
                (
                    exact(d.bad_magic + d.bad_length, sent, overflow)
                        && exact(d.rejected(), sent, overflow),
                    format!(
                        "gateway-rx counted {} bad magic + {} bad length ({} rejected in all); {sent} sent",
                        d.bad_magic,
                        d.bad_length,
                        d.rejected()
                    ),
                ),
            ],
        );
    }
    Ok(())
}

fn strings(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| w.to_string()).collect()
}

fn overflow_note(row: &mut Row, what: &str, overflow: u64) {
    if overflow > 0 {
        row.notes.push(format!(
            "{what}: {overflow} datagrams dropped in the IT box's socket buffers (host \
             overload); counts checked as at most what was sent and at least that less these"
        ));
    }
}

/// Datagrams of fresh sessions of a newer epoch, without the link-port rule.
pub(super) fn session_flood(run: &mut Run, row: &mut Row, key: bool) -> anyhow::Result<()> {
    run.watch(Duration::from_secs(2))?;
    run.bed.set_link_port_rule(false)?;
    let target = link_target();
    let (kind, label) = if key {
        ("new-session-auth", "new_session_auth")
    } else {
        ("new-session", "new_session")
    };
    // (count, rate per second, what)
    let phases: &[(u64, u64, &str)] = if key {
        &[
            (5, 1, "1/s for 5 s"),
            (20_000, 10_000, "10,000/s for 2 s"),
            (10_000, 0, "10,000 as fast as they go"),
        ]
    } else {
        &[
            (10, 1, "1/s for 10 s"),
            (20_000, 10_000, "10,000/s for 2 s"),
        ]
    };
    let mut before = run.status_now();
    for (i, &(count, rate, what)) in phases.iter().enumerate() {
        let args = strings(&[
            "garbage",
            "--target",
            &target,
            "--kinds",
            kind,
            "--count",
            &count.to_string(),
            "--rate",
            &rate.to_string(),
            "--seed",
            &(i + 1).to_string(),
        ]);
        let over0 = run.bed.wire()?.it_rcvbuf_errors;
        let (g, w) = run.send_from_it_lan(&format!("sessions-{i}"), &args)?;
        let now = run.settled_status()?;
        let overflow = run.bed.wire()?.it_rcvbuf_errors - over0;
        let d = now.since(&before);
        before = now;
        let sent = field(&g, label).unwrap_or(0);
        let mut checks = vec![
            (sent == count, format!("the sender sent {sent} of {count}")),
            (
                d.session_changes == 0,
                format!(
                    "gateway-rx changed session {} times (the live session was displaced)",
                    d.session_changes
                ),
            ),
            (
                exact(d.rejected(), sent, overflow),
                format!(
                    "gateway-rx rejected {} ({}) of {sent} sent",
                    d.rejected(),
                    d.counted()
                ),
            ),
        ];
        if key {
            checks.push((
                exact(d.auth_failures + d.key_rate_limited, sent, overflow),
                format!(
                    "gateway-rx counted {} authentication failures + {} key-rate-limited of {sent} sent",
                    d.auth_failures, d.key_rate_limited
                ),
            ));
            if rate == 0 {
                checks.push((
                    d.key_rate_limited > 0,
                    format!(
                        "{sent} sent as fast as they go, yet no key derivation was refused \
                         (key_rate_limited 0)"
                    ),
                ));
            }
        } else {
            checks.push((
                exact(d.stale_session, sent, overflow),
                format!(
                    "gateway-rx counted {} stale-session datagrams of {sent} sent",
                    d.stale_session
                ),
            ));
        }
        overflow_note(row, &format!("fresh sessions {what}"), overflow);
        row.attack(
            Attack {
                what: format!(
                    "fresh sessions of a newer epoch{}, {what} (sent in {} s), link-port rule removed",
                    if key { " claiming authentication" } else { "" },
                    g.split("seconds=").nth(1).unwrap_or("?")
                ),
                sent,
                firewall: None,
                counted: d.counted(),
                mirror: MirrorExpect::Fresh,
                window: w,
                ok: true,
            },
            checks,
        );
    }
    Ok(())
}

/// Captures of two sessions replayed after the receiver restarted: with the link cut (the
/// restarted receiver has nothing but its state file), then with the link up.
pub(super) fn replay(run: &mut Run, row: &mut Row) -> anyhow::Result<()> {
    run.bed.set_link_port_rule(false)?;
    // Session A, captured from its first datagram (the capture started before the transmitter).
    run.watch(Duration::from_secs(4))?;
    let captured_a = field(&run.capture_cmd("stop")?, "datagrams").unwrap_or(0);
    let session_a = run.tx_session()?;
    if let Some(mut tx) = run.tx.take() {
        tx.kill();
    }
    let file_b = run.dir.join("session-b.cap");
    run.capture_cmd(&format!("start {}", file_b.display()))?;
    run.start_tx()?;
    run.watch(Duration::from_secs(4))?;
    let captured_b = field(&run.capture_cmd("stop")?, "datagrams").unwrap_or(0);
    let session_b = run.tx_session()?;
    row.notes.push(format!(
        "captured {captured_a} datagrams of session A {session_a:016x} (epoch {}) and \
         {captured_b} of session B {session_b:016x} (epoch {})",
        session_a >> 32,
        session_b >> 32
    ));
    anyhow::ensure!(
        captured_a > 0 && captured_b > 0,
        "nothing captured (A {captured_a}, B {captured_b})"
    );
    // The receiver saves its resume point once a second: past the last captured datagram.
    run.watch(Duration::from_secs(2))?;

    // The receiver restarts while the link is cut.
    run.bed.set_impairment(Some(&format!(
        "iifname \"{IT_IF}\" counter name \"dropped\" drop"
    )))?;
    if let Some(mut rx) = run.rx.take() {
        rx.kill();
    }
    run.monitor.forget_history();
    run.replay_rx_start = Some(run.bed.wire()?);
    run.start_rx(false)?;
    let target = link_target();
    let file_a = run.dir.join("session-a.cap");
    let replay_args = |file: &Path| {
        strings(&[
            "replay",
            "--target",
            &target,
            "--file",
            &file.to_string_lossy(),
            "--rate",
            "20000",
        ])
    };
    let mut before = RxStatus::default();
    // (file, session, link up, what)
    let attacks = [
        (&file_b, "B", false),
        (&file_a, "A", false),
        (&file_a, "A", true),
        (&file_b, "B", true),
    ];
    for (i, (file, which, live)) in attacks.into_iter().enumerate() {
        if live && i == 2 {
            run.bed.set_impairment(None)?;
            let t = run.wait_ready(READY_TIMEOUT)?;
            row.notes.push(format!(
                "link back: the restarted receiver served every tag {:.1} s later",
                t.as_secs_f64()
            ));
            run.watch(Duration::from_secs(1))?;
            before = run.status_now();
        }
        let over0 = run.bed.wire()?.it_rcvbuf_errors;
        let (r, w) = run.send_from_it_lan(&format!("replay-{i}"), &replay_args(file))?;
        let now = run.settled_status()?;
        let overflow = run.bed.wire()?.it_rcvbuf_errors - over0;
        let d = now.since(&before);
        before = now;
        let sent = field(&r, "sent").unwrap_or(0);
        let expected = if which == "A" { captured_a } else { captured_b };
        let mut checks = vec![
            (
                sent == expected,
                format!("the replayer sent {sent} of {expected}"),
            ),
            (
                d.session_changes == 0,
                format!("gateway-rx changed session {} times", d.session_changes),
            ),
            (
                exact(d.rejected(), sent, overflow),
                format!(
                    "gateway-rx rejected {} ({}) of {sent} replayed",
                    d.rejected(),
                    d.counted()
                ),
            ),
        ];
        if !live {
            checks.push((
                d.accepted == 0,
                format!("gateway-rx accepted {} replayed datagrams", d.accepted),
            ));
        }
        let counted = match (which, live) {
            ("A", _) => (d.stale_session, "stale-session"),
            ("B", false) => (d.replayed, "replayed"),
            _ => (
                d.replayed + d.duplicates + d.out_of_window,
                "replayed + duplicate + out-of-window",
            ),
        };
        checks.push((
            exact(counted.0, sent, overflow),
            format!(
                "gateway-rx counted {} {}; {sent} replayed",
                counted.0, counted.1
            ),
        ));
        overflow_note(row, &format!("replay of {which}"), overflow);
        row.attack(
            Attack {
                what: format!(
                    "replay of {} session {which} at 20,000/s after a receiver restart, {}",
                    if which == "A" {
                        "the older"
                    } else {
                        "the current"
                    },
                    if live { "link up" } else { "link cut" }
                ),
                sent,
                firewall: None,
                counted: d.counted(),
                mirror: if live {
                    MirrorExpect::Fresh
                } else {
                    MirrorExpect::Nothing
                },
                window: w,
                ok: true,
            },
            checks,
        );
    }
    // The restarted receiver's only session is the transmitter's current one.
    let sessions = run.rx_sessions();
    row.check(
        !sessions.is_empty() && sessions.iter().all(|&s| s == session_b),
        format!(
            "the restarted gateway-rx took sessions {:x?}; the transmitter's is {session_b:016x}",
            sessions
        ),
    );
    Ok(())
}
