//! What a host on the receiver's side of the link can do with forged and replayed datagrams,
//! and what it cannot: displace the transmitter's session.

mod common;

use std::time::{Duration, Instant};

use common::*;
use protocol::decoder::{KEY_DERIVATION_BURST, KEY_DERIVATIONS_PER_SEC, SESSION_HOLD};
use protocol::epoch::session_id;
use protocol::message::Stream;
use protocol::{Decoder, DecoderConfig, Encoder, Event, Reject, ResumePoint};

/// `n` live messages of a datagram each of session `id`, encoded with the test key or none.
fn session(id: u64, key: bool, n: usize, now: Instant) -> Vec<Vec<u8>> {
    let msgs: Vec<_> = (0..n)
        .map(|i| message_of_size(Stream::Live, 1_300, i as u32))
        .collect();
    let mut enc = Encoder::new(config(key), id).expect("encoder");
    encode_all(&mut enc, &msgs, now)
}

fn live_delivered(events: &[Event]) -> usize {
    events
        .iter()
        .filter(|e| {
            matches!(
                e,
                Event::Message {
                    stream: Stream::Live,
                    ..
                }
            )
        })
        .count()
}

/// Without a key, one forged datagram a second with a fresh session id, CRC and all, used to
/// make the receiver switch to it and retire the transmitter's live session.
#[test]
fn without_a_key_an_unseen_session_never_displaces_a_live_one() {
    let t0 = Instant::now();
    let real = session(session_id(5, 1), false, 200, t0);
    let mut dec = decoder(false);
    let mut events = Vec::new();
    let mut forged_rejected = 0;
    for (i, d) in real.iter().enumerate() {
        // The transmitter sends 20 datagrams a second; the attacker one, a fresh session each.
        let now = t0 + Duration::from_millis(50 * i as u64);
        assert_eq!(dec.handle_datagram(d, now), None);
        if i % 20 == 10 {
            let forged = session(session_id(9, 1000 + i as u32), false, 1, now);
            assert_eq!(
                dec.handle_datagram(&forged[0], now),
                Some(Reject::StaleSession)
            );
            forged_rejected += 1;
        }
        events.extend(std::iter::from_fn(|| dec.poll_event()));
    }
    assert_eq!(dec.session_id(), Some(session_id(5, 1)));
    assert_eq!(live_delivered(&events), 200, "every real value delivered");
    let st = dec.stats();
    assert_eq!(st.session_changes, 0);
    assert_eq!(st.stale_session_dropped, forged_rejected);
    assert_eq!(st.messages_lost, [0; Stream::COUNT]);

    // A transmitter that restarted is followed once its old session has been silent.
    let end = t0 + Duration::from_millis(50 * real.len() as u64);
    let next = session(session_id(6, 2), false, 3, end);
    assert_eq!(
        dec.handle_datagram(&next[0], end + SESSION_HOLD / 2),
        Some(Reject::StaleSession)
    );
    assert_eq!(dec.handle_datagram(&next[0], end + SESSION_HOLD), None);
    assert_eq!(dec.session_id(), Some(session_id(6, 2)));
}

/// With a key, a capture of an older session replayed after the receiver restarted used to
/// take over: the receiver remembered the sessions it left only in memory.
#[test]
fn with_a_key_a_replayed_session_is_refused_across_a_receiver_restart() {
    let t0 = Instant::now();
    let old = session(session_id(100, 7), true, 40, t0);
    let current = session(session_id(101, 8), true, 80, t0);
    let mut dec = decoder(true);
    for d in old.iter().chain(&current[..40]) {
        assert_eq!(dec.handle_datagram(d, t0), None);
    }
    assert_eq!(dec.session_id(), Some(session_id(101, 8)));
    let resume = dec.resume_point().expect("a session is being decoded");
    assert_eq!(resume.session, session_id(101, 8));

    // The receiver restarts with what it persisted.
    let mut dec = Decoder::new(DecoderConfig {
        key: Some(KEY),
        resume: Some(resume),
        ..DecoderConfig::default()
    });
    let later = t0 + Duration::from_secs(60);
    // The older session, replayed: refused before any key is derived for it.
    for d in &old {
        assert_eq!(dec.handle_datagram(d, later), Some(Reject::StaleSession));
    }
    // The current session's datagrams that the first run already took: replays.
    for d in &current[..40] {
        assert_eq!(dec.handle_datagram(d, later), Some(Reject::Replay));
    }
    assert_eq!(dec.session_id(), None);
    // The transmitter carries on: its new datagrams are taken.
    let mut events = Vec::new();
    for d in &current[40..] {
        assert_eq!(dec.handle_datagram(d, later), None);
        events.extend(std::iter::from_fn(|| dec.poll_event()));
    }
    assert_eq!(dec.session_id(), Some(session_id(101, 8)));
    let data_after = current[40..]
        .iter()
        .filter(|d| !header(d).is_repair())
        .count();
    assert_eq!(live_delivered(&events), data_after);
    assert_eq!(
        dec.stats().messages_lost,
        [0; Stream::COUNT],
        "nothing before is counted"
    );
    // Replays that arrive once the session is current again are refused too, not delivered
    // as reordered datagrams.
    assert_eq!(
        dec.handle_datagram(&current[39], later),
        Some(Reject::Replay)
    );
    let st = dec.stats();
    assert_eq!(st.stale_session_dropped, old.len() as u64);
    assert_eq!(st.replayed, 41);

    // A newer transmitter start is followed at once.
    let next = session(session_id(102, 9), true, 2, later);
    assert_eq!(dec.handle_datagram(&next[0], later), None);
    assert_eq!(dec.session_id(), Some(session_id(102, 9)));
    // And another session of an epoch already passed is refused, whatever its random half.
    let same_epoch = session(session_id(102, 10), true, 1, later);
    assert_eq!(
        dec.handle_datagram(&same_epoch[0], later),
        Some(Reject::StaleSession)
    );
}

/// A flood of datagrams with fresh session ids (of a newer epoch, so they pass the cheap
/// checks), 50,000 a second, costs a bounded number of key derivations, and the real
/// transmitter's new session still gets through.
#[test]
fn a_flood_of_fresh_session_ids_costs_bounded_key_derivations() {
    let t0 = Instant::now();
    let real = session(session_id(200, 1), true, 50, t0);
    let mut dec = decoder(true);
    assert_eq!(dec.handle_datagram(&real[0], t0), None);
    // A wrong key, as an attacker without the key has.
    let forger = |i: u32| {
        let mut enc = Encoder::new(
            protocol::EncoderConfig {
                key: Some([0x11; 32]),
                ..protocol::EncoderConfig::default()
            },
            session_id(300, i),
        )
        .expect("encoder");
        encode_all(&mut enc, &[message_of_size(Stream::Live, 10, i)], t0).remove(0)
    };
    let restarted = session(session_id(201, 2), true, 50, t0);
    let mut restarted_left = restarted.iter();
    let (mut derived, mut limited) = (0u64, 0u64);
    let mut jitter = 0x9e37_79b9_u64;
    // 50,000 in one second, a datagram every 20 µs.
    for i in 0..50_000u32 {
        let now = t0 + Duration::from_micros(20 * u64::from(i));
        match dec.handle_datagram(&forger(i), now) {
            Some(Reject::Auth) => derived += 1,
            Some(Reject::KeyRateLimited) => limited += 1,
            r => panic!("forged datagram: {r:?}"),
        }
        // The transmitter restarted meanwhile: one of its datagrams per 1,000 of the flood,
        // at some moment before the next forged one.
        jitter = jitter
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1);
        if i % 1_000 == 999
            && let Some(d) = restarted_left.next()
        {
            dec.handle_datagram(d, now + Duration::from_micros((jitter >> 33) % 20));
        }
    }
    let bound = u64::from(KEY_DERIVATION_BURST) + u64::from(KEY_DERIVATIONS_PER_SEC) + 1;
    assert!(
        derived <= bound,
        "{derived} keys derived for forged sessions"
    );
    assert!(limited >= 50_000 - bound);
    assert!(dec.stats().key_rate_limited >= limited);
    assert_eq!(dec.session_id(), Some(session_id(201, 2)));
}

#[test]
fn resume_is_ignored_without_a_key() {
    let t0 = Instant::now();
    let d = session(session_id(1, 1), false, 1, t0);
    let mut dec = Decoder::new(DecoderConfig {
        resume: Some(ResumePoint {
            session: session_id(5, 5),
            seq: 100,
        }),
        ..DecoderConfig::default()
    });
    assert_eq!(dec.handle_datagram(&d[0], t0), None);
}
