//! End-to-end tests of the whole chain on loopback: a simulated PLC, gateway-tx polling it, the
//! impairment relay standing in for the diode, gateway-rx, and its read-only Modbus mirror read
//! by a real Modbus client. Every value check compares the exact register words the mirror
//! serves with the simulator's memory.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{
    CONVERGE, Chain, DEVICE, HEARTBEAT_TIMEOUT_MS, KeyFile, PROCESS_PERIOD, Setup, UNIT_ID,
    XorShift, eventually, parse_tx, qualities_are, rx_toml, tx_toml,
};
use gateway_tx::Transmitter;
use protocol::message::Stream;
use protocol::model::{Quality, Value};
use protocol::wire::{self, MAGIC};
use tests::plc_sim::DEMO_TAGS;
use tests::relay::{Impairments, RelayCounters};
use tokio::net::UdpSocket;
use tokio_modbus::ExceptionCode;
use tokio_modbus::client::{Reader, Writer};

fn demo_tag(path: &str) -> &'static tests::plc_sim::DemoTag {
    DEMO_TAGS
        .iter()
        .find(|t| t.path == path)
        .unwrap_or_else(|| panic!("no demo tag {path}"))
}

/// Changes every demo tag (the process's values at `step`) and two tags by hand, through both
/// ways the simulator offers.
fn change_values(chain: &Chain, step: u64) {
    chain.plc.write_demo(step);
    let speed = demo_tag("line1/pump1/speed");
    chain.plc.set_holding(speed.address, &[4321 + step as u16]);
    let level = demo_tag("line1/tank1/level");
    chain
        .plc
        .set_value(
            &level.address(DEVICE, UNIT_ID),
            &Value::Double(7.25 + step as f64),
        )
        .expect("a value that fits the tag");
}

fn get(c: &std::sync::atomic::AtomicU64) -> u64 {
    RelayCounters::get(c)
}

/// The relay's choices depend only on its seed and the datagram count, so the impaired-link
/// test runs for a number of datagrams rather than a time. With this seed the first 400
/// datagrams see 13 losses, 7 corruptions (the first at the 9th datagram), 21 duplications and
/// 24 reorderings: every counter the test checks is exercised whatever the machine's speed.
const IMPAIRED_SEED: u64 = 6;
const IMPAIRED_DATAGRAMS: u64 = 400;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impaired_link_converges_and_counts_every_rejection_exactly() {
    let mut c = Chain::start(Setup {
        impairments: Impairments {
            loss: 0.02,
            reorder: 0.05,
            reorder_depth: 8,
            duplicate: 0.05,
            corrupt: 0.01,
            ..Impairments::default()
        },
        seed: IMPAIRED_SEED,
        wiretap: true,
        // Faster polling and process steps: more traffic, so the run is short.
        poll_ms: Some(20),
        ..Setup::default()
    })
    .await;
    c.plc.run_process(Duration::from_millis(20));
    {
        let relay = &c.relay;
        eventually(
            "the process runs while the impaired link carries its datagrams",
            Duration::from_secs(60),
            async || match get(&relay.counters.received) {
                n if n >= IMPAIRED_DATAGRAMS => Ok(()),
                n => Err(format!("{n} datagrams so far")),
            },
        )
        .await;
    }
    c.plc.stop_process();
    let step = c.plc.step();
    assert!(step >= 20, "the process only reached step {step}");
    c.wait_mirror_matches("mirror equals the simulator after an impaired run")
        .await;
    c.wait_quality("every tag Good after an impaired run", Quality::GOOD)
        .await;

    // Quiesce, so every counter is final: no new impairments, then every datagram the relay
    // held back for reordering released (after `reorder_depth` more arrivals), then no sender.
    c.relay.set(Impairments::default());
    let arrived = get(&c.relay.counters.received);
    {
        let relay = &c.relay;
        eventually("the relay releases what it held", CONVERGE, async || {
            let n = get(&relay.counters.received);
            if n > arrived + 8 {
                Ok(())
            } else {
                Err(format!("{} arrivals since", n - arrived))
            }
        })
        .await;
    }
    let (taps, stats) = c.settle().await;
    let r = &c.relay.counters;
    let (received, forwarded, dropped, duplicated, reordered, corrupted) = (
        get(&r.received),
        get(&r.forwarded),
        get(&r.dropped),
        get(&r.duplicated),
        get(&r.reordered),
        get(&r.corrupted),
    );
    eprintln!(
        "impaired link: relay received {received} forwarded {forwarded} dropped {dropped} \
         duplicated {duplicated} reordered {reordered} corrupted {corrupted}; wiretap {taps:?}; \
         decoder received {} accepted {} repaired {} (groups {}) data lost {} missing {} \
         crc {} bad magic {} duplicates {} late {} messages lost {:?} delivered {:?}",
        stats.datagrams_received,
        stats.datagrams_accepted,
        stats.datagrams_repaired,
        stats.groups_repaired,
        stats.data_datagrams_lost,
        stats.datagrams_missing,
        stats.crc_failures,
        stats.bad_magic,
        stats.duplicates,
        stats.late,
        stats.messages_lost,
        stats.messages_delivered,
    );

    // The test's own plumbing: nothing lost on loopback around the relay, and nothing still
    // held in it.
    assert_eq!(taps.sent, received, "transmitter → relay");
    assert_eq!(
        forwarded,
        received - dropped + duplicated,
        "the relay still holds datagrams"
    );
    assert_eq!(taps.delivered, forwarded, "relay → receiver");
    assert!(dropped > 0 && reordered > 0 && duplicated > 0 && corrupted > 0);

    // The impairments as the wiretap saw them: each corrupted datagram, and its duplicate when
    // it was duplicated too, arrives altered.
    let altered = taps.altered_magic + taps.altered_other;
    assert!(
        (corrupted..=corrupted + duplicated).contains(&altered),
        "{altered} altered datagrams delivered for {corrupted} corrupted"
    );

    // The decoder saw every delivered datagram once and classified each exactly.
    assert_eq!(stats.datagrams_received, taps.delivered);
    assert_eq!(
        stats.datagrams_accepted + stats.rejected(),
        stats.datagrams_received
    );
    assert!(stats.crc_failures > 0, "no CRC failure counted");
    assert_eq!(
        stats.crc_failures, taps.altered_other,
        "CRC failures: one per altered datagram whose magic survived"
    );
    assert_eq!(
        stats.bad_magic, taps.altered_magic,
        "bad magic: one per altered datagram whose flipped bit is in the magic"
    );
    assert!(stats.duplicates > 0, "no duplicate counted");
    assert_eq!(
        stats.duplicates, taps.repeats,
        "duplicates: one per intact datagram delivered again"
    );
    assert_eq!(
        (
            stats.bad_length,
            stats.bad_version,
            stats.malformed,
            stats.auth_failures,
            stats.out_of_window,
            stats.stale_session_dropped,
        ),
        (0, 0, 0, 0, 0, 0),
        "no other rejection: {stats:?}"
    );
    assert_eq!(
        (stats.decode_errors, stats.frame_errors, stats.fec_failures),
        (0, 0, 0),
        "a corrupted datagram got past the CRC: {stats:?}"
    );
    assert!(stats.datagrams_repaired > 0, "FEC repaired nothing");
    // Loss accounting, exact: every data datagram sent either arrived intact, or was repaired,
    // or was counted lost; one that was repaired or given up and then arrived anyway is
    // counted late.
    assert_eq!(
        taps.sent_data - taps.delivered_data,
        stats.datagrams_repaired + stats.data_datagrams_lost - stats.late,
        "data datagrams that never arrived intact, against repaired + lost - late: {stats:?}"
    );
    assert_eq!(stats.session_changes, 0);
    assert_eq!(c.plc.writes(), 0, "the gateway wrote to the PLC");
}

/// With a key, as shipped: the restarted transmitter's session has a newer epoch and is taken
/// at once, with none of its datagrams refused. (Without a key the receiver waits until the
/// old session has been silent for `SESSION_HOLD`; the protocol's session tests cover that.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transmitter_restart_is_a_new_session_and_values_flow_again() {
    let key = KeyFile::random();
    let mut c = Chain::start(Setup {
        tx_key: Some(key.path.clone()),
        rx_key: Some(key.path.clone()),
        ..Setup::default()
    })
    .await;
    c.wait_mirror_matches("first values").await;
    let first = c.tx().session;
    {
        let rx = c.rx();
        eventually(
            "link up with the first session",
            CONVERGE,
            async || match rx.state.link_state() {
                gateway_rx::state::LinkState::Up { session } if session == first => Ok(()),
                other => Err(format!("{other:?}")),
            },
        )
        .await;
    }
    assert_eq!(c.rx().state.counters().sessions, 1);

    // With no transmitter nothing can reach the mirror, so the change must show as a
    // difference: proof that the comparison sees one.
    c.stop_tx_and_wait().await;
    change_values(&c, 41);
    let diff = c
        .mirror_diff()
        .await
        .expect_err("the mirror changed without a transmitter");
    assert!(diff.contains("line1/pump1/speed"), "{diff}");

    c.restart_tx().await;
    let second = c.tx().session;
    assert_ne!(
        first, second,
        "a restarted transmitter reuses its session id"
    );
    {
        let rx = c.rx();
        eventually(
            "the receiver follows the new session",
            CONVERGE,
            async || {
                let stats = rx.stats();
                let sessions = rx.state.counters().sessions;
                let link = rx.state.link_state();
                if stats.session_changes == 1
                    && sessions == 2
                    && link == (gateway_rx::state::LinkState::Up { session: second })
                {
                    Ok(())
                } else {
                    Err(format!(
                        "session_changes {}, state sessions {sessions}, link {link:?}",
                        stats.session_changes
                    ))
                }
            },
        )
        .await;
    }
    c.wait_mirror_matches("values changed across the restart")
        .await;
    // Every value has been refreshed by the new session, so none is served as Uncertain.
    c.wait_quality("every tag refreshed by the new session", Quality::GOOD)
        .await;
    let stats = c.rx().stats();
    assert_eq!(stats.session_changes, 1);
    assert_eq!(stats.stale_session_dropped, 0);
    assert_eq!(c.plc.writes(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_restart_on_the_same_port_learns_everything_again() {
    let mut c = Chain::start(Setup::default()).await;
    c.wait_mirror_matches("first values").await;
    let session = c.tx().session;

    let toml = c.rx_toml.clone();
    c.restart_rx(&toml).await;
    assert_eq!(c.rx().link_addr.port(), c.rx_port);
    // The new receiver knows nothing until the periodic catalogue and the snapshot arrive.
    c.wait_mirror_matches("values served again after the restart")
        .await;
    c.wait_quality("every tag Good after the restart", Quality::GOOD)
        .await;
    assert_eq!(c.rx().state.tag_count(), DEMO_TAGS.len());
    assert_eq!(c.rx().state.counters().catalogues_applied, 1);
    assert_eq!(
        c.rx().state.link_state(),
        gateway_rx::state::LinkState::Up { session }
    );
    assert_eq!(c.rx().stats().session_changes, 0);
    {
        // Nothing changed on the PLC, so no live value was sent: the snapshot brought all.
        let view = c.rx().state.view();
        for i in 0..DEMO_TAGS.len() as u32 {
            let stream = view.value(i).map(|v| v.stream);
            assert_eq!(stream, Some(Stream::Snapshot), "tag {i}");
        }
    }

    change_values(&c, 7);
    c.wait_mirror_matches("values changed after the restart")
        .await;
    assert_eq!(c.plc.writes(), 0);
}

/// On loopback (and on a NIC with a link partner, unlike a real diode) a datagram sent to a
/// closed port brings an ICMP error back, which the kernel reports on the transmitter's next
/// send: the transmitter must carry on through a receiver restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transmitter_sending_straight_at_a_restarting_receiver_carries_on() {
    let mut c = Chain::start(Setup {
        direct: true,
        ..Setup::default()
    })
    .await;
    c.wait_mirror_matches("first values").await;
    let session = c.tx().session;
    c.rx = None;
    // Long enough for several sends to hit the closed port.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let toml = c.rx_toml.clone();
    c.restart_rx(&toml).await;
    change_values(&c, 21);
    c.wait_mirror_matches("values after the receiver came back")
        .await;
    assert_eq!(
        c.rx().state.link_state(),
        gateway_rx::state::LinkState::Up { session }
    );
    assert_eq!(get(&c.relay.counters.received), 0, "the relay was used");
}

/// A receiver that starts (or restarts) once a session is further along than its reorder
/// window starts from what it receives, without counting what was sent before as lost: another
/// path of the decoder than a restart early in a session (which counts from the session's
/// first datagram, see the test above).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_restart_late_in_a_session_counts_no_loss() {
    const WINDOW: u64 = 64;
    let mut c = Chain::start(Setup {
        // A small FEC block, so a window of 64 datagrams still covers it.
        tx_link_extra: "\n[link.fec]\ndata_shards = 8\nrepair_shards = 2\ninterleave = 2\n",
        // More traffic, so the session outgrows the window sooner.
        poll_ms: Some(20),
        ..Setup::default()
    })
    .await;
    c.plc.run_process(Duration::from_millis(20));
    {
        // Repair shards never outnumber data shards, so half of these are data datagrams:
        // the session is past the new receiver's window when it starts.
        let relay = &c.relay;
        eventually(
            "a session longer than the window",
            CONVERGE,
            async || match get(&relay.counters.received) {
                n if n >= 4 * WINDOW => Ok(()),
                n => Err(format!("{n} datagrams")),
            },
        )
        .await;
    }
    let toml = common::rx_toml_with(c.rx_port, None, &format!("reorder_window = {WINDOW}\n"));
    c.restart_rx(&toml).await;
    {
        let rx = c.rx();
        eventually("live values after the restart", CONVERGE, async || match rx
            .stats()
            .delivered(Stream::Live)
        {
            n if n >= 20 => Ok(()),
            n => Err(format!("{n} live messages")),
        })
        .await;
    }
    c.plc.stop_process();
    c.wait_mirror_matches("values after a late restart").await;
    c.wait_quality("every tag Good after a late restart", Quality::GOOD)
        .await;
    let s = c.rx().stats();
    assert_eq!(
        (s.data_datagrams_lost, s.messages_lost),
        (0, [0; protocol::message::Stream::COUNT]),
        "loss counted for what was sent before the receiver started: {s:?}"
    );
    assert_eq!(s.session_changes, 0);
}

/// Datagrams a second transmitter sends to a socket of ours: real ones, to damage.
async fn capture_datagrams(plc: SocketAddr, count: usize) -> Vec<Vec<u8>> {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let tx = Transmitter::start(parse_tx(&tx_toml(
        socket.local_addr().unwrap(),
        plc,
        None,
        common::POLL_MS,
    )))
    .await
    .expect("starting the capturing transmitter");
    let mut out = Vec::new();
    let mut buf = vec![0u8; 65536];
    let deadline = Instant::now() + CONVERGE;
    while out.len() < count {
        let n = tokio::time::timeout_at(deadline.into(), socket.recv(&mut buf))
            .await
            .expect("the capturing transmitter sends")
            .unwrap();
        // Long enough to be cut in many places.
        if n >= 64 {
            out.push(buf[..n].to_vec());
        }
    }
    drop(tx);
    out
}

fn reseal(body: &[u8]) -> Vec<u8> {
    let mut d = body.to_vec();
    d.extend_from_slice(&wire::crc32(body).to_be_bytes());
    d
}

fn crc_holds(d: &[u8]) -> bool {
    d.len() >= 4 && wire::crc32(&d[..d.len() - 4]).to_be_bytes() == d[d.len() - 4..]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_is_counted_by_kind_and_values_keep_flowing() {
    const N: usize = 25;
    let mut c = Chain::start(Setup::default()).await;
    c.wait_mirror_matches("first values").await;
    let real = capture_datagrams(c.plc.local_addr(), N).await;
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);

    let mut random = Vec::new();
    while random.len() < N {
        // The first two as large as a UDP datagram can be.
        let n = match random.len() {
            0 | 1 => wire::MAX_UDP_PAYLOAD,
            _ => rng.below(wire::MIN_ENVELOPE_LEN..1473),
        };
        let d = rng.bytes(n);
        if d[..4] != MAGIC {
            random.push(d);
        }
    }
    let mut bad_crc = Vec::new();
    while bad_crc.len() < N {
        let n = rng.below(wire::MIN_ENVELOPE_LEN..1473);
        let mut d = MAGIC.to_vec();
        d.extend(rng.bytes(n - 4));
        if !crc_holds(&d) {
            bad_crc.push(d);
        }
    }
    // Cut short: the CRC is the last four bytes, so what is left fails it.
    let mut truncated = Vec::new();
    for d in real.iter().cycle() {
        if truncated.len() == N {
            break;
        }
        let t = &d[..rng.below(wire::MIN_ENVELOPE_LEN..d.len())];
        if !crc_holds(t) {
            truncated.push(t.to_vec());
        }
    }
    // Too short to hold an envelope at all, down to an empty datagram.
    let stubs: Vec<Vec<u8>> = (0..N)
        .map(|i| {
            real[i]
                .iter()
                .copied()
                .take(i % wire::MIN_ENVELOPE_LEN)
                .collect()
        })
        .collect();
    // Cut short with a valid CRC: the header's payload length no longer matches.
    let resealed: Vec<Vec<u8>> = (0..N)
        .map(|i| {
            let d = &real[i];
            reseal(&d[..rng.below(5..d.len() - wire::CRC_LEN)])
        })
        .collect();
    // Intact but for a version this receiver does not speak, with a valid CRC.
    let future_version: Vec<Vec<u8>> = (0..N)
        .map(|i| {
            let mut d = real[i][..real[i].len() - wire::CRC_LEN].to_vec();
            d[4] = wire::VERSION + 1;
            reseal(&d)
        })
        .collect();

    let before = c.rx().stats();
    let link = c.rx().state.link_state();
    let sender = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let all = [
        &random,
        &bad_crc,
        &truncated,
        &stubs,
        &resealed,
        &future_version,
    ];
    for (i, d) in all.iter().flat_map(|v| v.iter()).enumerate() {
        sender.send_to(d, c.rx().link_addr).await.unwrap();
        // A short pause now and then keeps the burst well inside the socket's buffer.
        if i % 10 == 9 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    let n = N as u64;
    let expected = (n, 2 * n, 2 * n, n);
    {
        let rx = c.rx();
        eventually("every garbage datagram counted", CONVERGE, async || {
            let s = rx.stats();
            let got = (
                s.bad_magic - before.bad_magic,
                s.crc_failures - before.crc_failures,
                s.bad_length - before.bad_length,
                s.bad_version - before.bad_version,
            );
            if got.0 >= expected.0
                && got.1 >= expected.1
                && got.2 >= expected.2
                && got.3 >= expected.3
            {
                Ok(())
            } else {
                Err(format!(
                    "(bad magic, crc, bad length, bad version) rose by {got:?}"
                ))
            }
        })
        .await;
    }
    let after = c.rx().stats();
    assert_eq!(
        (
            after.bad_magic - before.bad_magic,
            after.crc_failures - before.crc_failures,
            after.bad_length - before.bad_length,
            after.bad_version - before.bad_version,
        ),
        expected,
        "(bad magic, crc, bad length, bad version) rose by other than {expected:?}"
    );
    assert_eq!(
        (
            after.malformed - before.malformed,
            after.auth_failures - before.auth_failures,
            after.duplicates - before.duplicates,
            after.out_of_window - before.out_of_window,
            after.stale_session_dropped - before.stale_session_dropped,
            after.session_changes - before.session_changes,
            after.decode_errors - before.decode_errors,
            after.frame_errors - before.frame_errors,
        ),
        (0, 0, 0, 0, 0, 0, 0, 0),
        "garbage counted elsewhere or taken for data: {after:?}"
    );
    assert_eq!(c.rx().state.link_state(), link, "the session changed");

    change_values(&c, 99);
    c.wait_mirror_matches("values flow after the garbage").await;
    assert!(c.rx().stats().datagrams_accepted > after.datagrams_accepted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_refuses_every_write_and_nothing_changes() {
    let mut c = Chain::start(Setup::default()).await;
    change_values(&c, 3);
    c.wait_mirror_matches("values before the writes").await;
    let speed = demo_tag("line1/pump1/speed");
    let bottles = demo_tag("line1/counter/bottles");
    let running = demo_tag("line1/pump1/running");
    let valve = demo_tag("line1/valve1/open");
    let speed_before = c.plc.holding(speed.address, 1);

    let m = &mut c.mirror;
    let answers = [
        (
            "write single register (06)",
            m.call(async |ctx| ctx.write_single_register(speed.address, 1).await)
                .await,
        ),
        (
            "write multiple registers (16)",
            m.call(async |ctx| {
                ctx.write_multiple_registers(bottles.address, &[0xDEAD, 0xBEEF])
                    .await
            })
            .await,
        ),
        (
            "write single coil (05)",
            m.call(async |ctx| ctx.write_single_coil(running.address, false).await)
                .await,
        ),
        (
            "write multiple coils (15)",
            m.call(async |ctx| {
                ctx.write_multiple_coils(running.address, &[false, false])
                    .await
            })
            .await,
        ),
        (
            "mask write register (22)",
            m.call(async |ctx| ctx.masked_write_register(speed.address, 0, 0).await)
                .await,
        ),
    ];
    for (what, answer) in answers {
        assert_eq!(
            answer,
            Ok(Err(ExceptionCode::IllegalFunction)),
            "{what} on the mirror"
        );
    }
    let rw = m
        .call(async |ctx| {
            ctx.read_write_multiple_registers(speed.address, 1, speed.address, &[1])
                .await
        })
        .await;
    assert_eq!(
        rw,
        Ok(Err(ExceptionCode::IllegalFunction)),
        "read/write multiple registers (23) on the mirror"
    );
    // The same refusals for another unit id: no unit is writable.
    let other_unit = {
        let ctx = m.context().await.unwrap();
        tokio_modbus::prelude::SlaveContext::set_slave(ctx, tokio_modbus::Slave(7));
        let r = m
            .call(async |ctx| ctx.write_single_register(speed.address, 1).await)
            .await;
        let ctx = m.context().await.unwrap();
        tokio_modbus::prelude::SlaveContext::set_slave(ctx, tokio_modbus::Slave(UNIT_ID));
        r
    };
    assert_eq!(other_unit, Ok(Err(ExceptionCode::IllegalFunction)));

    // Unchanged on both sides; the first coil and the valve are still what the PLC says.
    assert_eq!(c.plc.holding(speed.address, 1), speed_before);
    c.mirror_diff()
        .await
        .expect("mirror unchanged by the writes");
    assert_eq!(
        c.mirror.read_tag(valve).await,
        Ok(Ok(common::sim_words(&c.plc, valve)))
    );
    assert_eq!(c.plc.writes(), 0, "a write reached the PLC");
}

/// Waits until the transmitter's heartbeat, as the receiver last got it, reports the PLC
/// connected or not (with the reason when not).
async fn wait_source_health(c: &Chain, connected: bool) {
    let rx = c.rx();
    eventually(
        &format!("heartbeat reports {DEVICE} connected = {connected}"),
        CONVERGE,
        async || {
            let Some((_, heartbeat)) = rx.state.last_heartbeat() else {
                return Err("no heartbeat".into());
            };
            match heartbeat.sources.as_slice() {
                [s] if s.name == DEVICE
                    && s.connected == connected
                    && s.last_error.is_empty() == connected =>
                {
                    Ok(())
                }
                other => Err(format!("sources {other:?}")),
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unplugged_plc_reads_as_device_failure_and_recovers() {
    let mut c = Chain::start(Setup::default()).await;
    c.wait_mirror_matches("first values").await;

    c.plc.stop().await;
    let took = {
        let (mirror, rx) = (&mut c.mirror, c.rx.as_ref().unwrap());
        eventually(
            "exception 04 for every tag of the unplugged PLC",
            Duration::from_secs(5),
            async || {
                let mut wrong = Vec::new();
                for tag in DEMO_TAGS {
                    match mirror.read_tag(tag).await {
                        Ok(Err(ExceptionCode::ServerDeviceFailure)) => {}
                        other => wrong.push(format!("{}: {other:?}", tag.path)),
                    }
                }
                let view = rx.state.view();
                for i in 0..DEMO_TAGS.len() as u32 {
                    match view.value(i).map(|v| v.quality) {
                        Some(q) if q.is_bad() => {}
                        q => wrong.push(format!("tag {i} quality {q:?}")),
                    }
                }
                if wrong.is_empty() {
                    Ok(())
                } else {
                    Err(wrong.join("; "))
                }
            },
        )
        .await
    };
    eprintln!("unplugged PLC: exception 04 after {took:?}");
    wait_source_health(&c, false).await;

    // New values while unplugged, so what comes back is read afresh.
    change_values(&c, 12);
    c.plc.restart().await.expect("plugging the PLC back in");
    c.wait_mirror_matches("values after the PLC is back").await;
    c.wait_quality("every tag Good after the PLC is back", Quality::GOOD)
        .await;
    wait_source_health(&c, true).await;
    assert_eq!(c.plc.writes(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_link_serves_uncertain_last_values_and_recovers() {
    let mut c = Chain::start(Setup::default()).await;
    c.wait_mirror_matches("first values").await;
    c.wait_quality("every tag Good", Quality::GOOD).await;

    c.relay.set(Impairments {
        cut: true,
        ..Impairments::default()
    });
    let rx = c.rx.as_ref().unwrap();
    eventually(
        "link down after the heartbeat timeout",
        CONVERGE,
        async || {
            if rx.state.link_is_down() {
                Ok(())
            } else {
                Err("link still up".into())
            }
        },
    )
    .await;
    // Not before the timeout: measured from the last heartbeat received, with a little room
    // for the two clock reads being a few statements apart.
    let down_since = rx.state.link_down_since().expect("down since a time");
    let (last_heartbeat, _) = rx
        .state
        .last_heartbeat()
        .expect("heartbeats before the cut");
    let silent = Duration::from_nanos((down_since - last_heartbeat).max(0) as u64);
    assert!(
        silent + Duration::from_millis(50) >= Duration::from_millis(HEARTBEAT_TIMEOUT_MS),
        "link declared down after {silent:?} without a heartbeat, timeout {HEARTBEAT_TIMEOUT_MS} ms"
    );
    assert_eq!(rx.state.counters().link_downs, 1);
    // Last usable values, served by the mirror, marked Uncertain in the state.
    qualities_are(rx, Quality::UNCERTAIN_NO_COMMUNICATION_LAST_USABLE_VALUE)
        .expect("values served as Uncertain while the link is down");
    c.mirror_diff()
        .await
        .expect("the mirror serves the last values while the link is down");

    c.relay.set(Impairments::default());
    let rx = c.rx.as_ref().unwrap();
    eventually("link up again", CONVERGE, async || {
        if rx.state.link_is_down() {
            Err("link still down".into())
        } else {
            Ok(())
        }
    })
    .await;
    c.wait_quality("every tag Good again", Quality::GOOD).await;
    c.wait_mirror_matches("values after the link is back").await;
    assert_eq!(c.rx().state.counters().link_downs, 1);
    assert_eq!(c.rx().stats().session_changes, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pre_shared_key_on_both_sides_carries_values() {
    let key = KeyFile::random();
    let mut c = Chain::start(Setup {
        tx_key: Some(key.path.clone()),
        rx_key: Some(key.path.clone()),
        ..Setup::default()
    })
    .await;
    c.wait_mirror_matches("values over the authenticated link")
        .await;
    change_values(&c, 5);
    c.wait_mirror_matches("changed values over the authenticated link")
        .await;
    let stats = c.rx().stats();
    assert!(stats.datagrams_accepted > 0);
    assert_eq!(stats.auth_failures, 0);
    assert_eq!(stats.datagrams_accepted, stats.datagrams_received);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_or_missing_key_lets_nothing_in() {
    let (tx_key, rx_key) = (KeyFile::random(), KeyFile::random());
    let mut c = Chain::start(Setup {
        tx_key: Some(tx_key.path.clone()),
        rx_key: Some(rx_key.path.clone()),
        ..Setup::default()
    })
    .await;
    for what in ["a different key", "no key"] {
        let rx = c.rx.as_ref().unwrap();
        // Enough traffic for catalogue, heartbeats and snapshot to have been tried.
        eventually(
            &format!("datagrams refused with {what}"),
            CONVERGE,
            async || match rx.stats().auth_failures {
                n if n >= 40 => Ok(()),
                n => Err(format!("{n} auth failures")),
            },
        )
        .await;
        let stats = rx.stats();
        assert_eq!(stats.datagrams_accepted, 0, "{what}: {stats:?}");
        assert_eq!(
            stats.auth_failures, stats.datagrams_received,
            "{what}: every datagram refused for authentication: {stats:?}"
        );
        assert_eq!(rx.state.tag_count(), 0, "{what}: a catalogue got in");
        assert!(rx.state.link_is_down(), "{what}: link up");
        assert_eq!(
            c.mirror.read_tag(demo_tag("line1/pump1/speed")).await,
            Ok(Err(ExceptionCode::GatewayPathUnavailable)),
            "{what}: the mirror serves the device"
        );
        let unkeyed = rx_toml(c.rx_port, None);
        if what == "a different key" {
            c.restart_rx(&unkeyed).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loss_beyond_fec_is_counted_and_healed_by_the_snapshot() {
    let mut c = Chain::start(Setup {
        seed: 9,
        wiretap: true,
        ..Setup::default()
    })
    .await;
    c.plc.run_process(PROCESS_PERIOD);
    {
        let rx = c.rx();
        eventually("catalogue and values", CONVERGE, async || {
            qualities_are(rx, Quality::GOOD)
        })
        .await;
    }
    let before = c.rx().stats();
    // Far beyond what FEC is sized for: short groups carry repair for 5 % loss, so at this
    // test's rate (about one data datagram per block) a group survives 40 % loss 99 % of the
    // time; at 80 % a third of the groups are lost.
    c.relay.set(Impairments {
        loss: 0.8,
        ..Impairments::default()
    });
    // The heavy loss lasts this long; what is asserted is what it left behind.
    tokio::time::sleep(Duration::from_secs(2)).await;
    c.relay.set(Impairments::default());
    c.plc.stop_process();

    {
        let rx = c.rx();
        eventually("loss beyond repair counted", CONVERGE, async || {
            let s = rx.stats();
            let values_lost = s.lost(Stream::Live) + s.lost(Stream::Snapshot)
                - before.lost(Stream::Live)
                - before.lost(Stream::Snapshot);
            let data_lost = s.data_datagrams_lost - before.data_datagrams_lost;
            if data_lost > 0 && values_lost > 0 {
                Ok(())
            } else {
                Err(format!(
                    "data datagrams lost {data_lost}, live and snapshot messages lost \
                     {values_lost}"
                ))
            }
        })
        .await;
    }
    c.wait_mirror_matches("mirror healed by the snapshot").await;
    c.wait_quality("every tag Good after the loss", Quality::GOOD)
        .await;
    let s = c.rx().stats();
    eprintln!(
        "loss beyond FEC: relay dropped {} of {}; decoder data lost {} repaired {} messages \
         lost {:?}",
        get(&c.relay.counters.dropped),
        get(&c.relay.counters.received),
        s.data_datagrams_lost,
        s.datagrams_repaired,
        s.messages_lost
    );
    assert_eq!((s.decode_errors, s.frame_errors, s.fec_failures), (0, 0, 0));
    let (taps, s) = c.settle().await;
    assert_eq!(
        taps.sent_data - taps.delivered_data,
        s.datagrams_repaired + s.data_datagrams_lost - s.late,
        "data datagrams that never arrived, against repaired + lost - late: {taps:?} {s:?}"
    );
    assert_eq!(c.plc.writes(), 0);
}
