//! Deterministic end-to-end scenarios: Encoder → (channel) → Decoder.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::*;
use protocol::message::{Message, Stream};
use protocol::{Decoder, DecoderConfig, Encoder, EncoderConfig, Event, Reject};

fn mixed(n: usize) -> Vec<Message> {
    (0..n)
        .map(|i| {
            let stream = Stream::ALL[i % Stream::COUNT];
            // Mostly small, some spanning several datagrams.
            let size = match i % 11 {
                0 => 5_000,
                5 => 1_350,
                _ => 20 + (i * 37) % 400,
            };
            message_of_size(stream, size, i as u32)
        })
        .collect()
}

fn expected(msgs: &[Message]) -> Vec<(Stream, u64, Message)> {
    let mut seqs: HashMap<Stream, u64> = HashMap::new();
    msgs.iter()
        .map(|m| {
            let s = seqs.entry(m.stream()).or_default();
            *s += 1;
            (m.stream(), *s - 1, m.clone())
        })
        .collect()
}

#[test]
fn lossless_round_trip_with_and_without_key() {
    for key in [false, true] {
        let now = Instant::now();
        let msgs = mixed(300);
        let mut enc = Encoder::new(config(key), 0xABCD).unwrap();
        let dgrams = encode_all(&mut enc, &msgs, now);
        assert!(dgrams.iter().all(|d| d.len() <= 1472));
        let mut dec = decoder(key);
        let events = decode_all(&mut dec, &dgrams, now);
        assert_eq!(
            events[0],
            Event::NewSession {
                previous: None,
                session: 0xABCD
            }
        );
        assert_same(&messages(&events), &expected(&msgs));
        let st = dec.stats();
        assert_eq!(st.datagrams_accepted, dgrams.len() as u64);
        assert_eq!(st.messages_lost, [0; Stream::COUNT]);
        assert_eq!(st.data_datagrams_lost, 0);
        assert_eq!(st.datagrams_repaired, 0);
        assert_eq!(st.messages_delivered.iter().sum::<u64>(), msgs.len() as u64);
        let es = enc.stats();
        assert_eq!(es.datagrams, dgrams.len() as u64);
        assert_eq!(es.data_datagrams + es.repair_datagrams, es.datagrams);
        assert!(es.fragmented_messages > 0);
    }
}

#[test]
fn one_loss_per_group_is_repaired_and_reordering_is_undone() {
    let now = Instant::now();
    let msgs = mixed(400);
    let mut enc = Encoder::new(config(true), 1).unwrap();
    let dgrams = encode_all(&mut enc, &msgs, now);
    // Drop the first data shard of every group, then reverse each run of 10.
    let mut seen = std::collections::HashSet::new();
    let mut kept: Vec<Vec<u8>> = dgrams
        .iter()
        .filter(|d| header(d).is_repair() || !seen.insert(header(d).group))
        .cloned()
        .collect();
    assert!(kept.len() < dgrams.len());
    for chunk in kept.chunks_mut(10) {
        chunk.reverse();
    }
    let mut dec = decoder(true);
    let events = decode_all(&mut dec, &kept, now);
    assert_same(&messages(&events), &expected(&msgs));
    let st = dec.stats();
    assert_eq!(st.datagrams_repaired, seen.len() as u64);
    assert_eq!(st.groups_repaired, seen.len() as u64);
    assert_eq!(st.data_datagrams_lost, 0);
}

#[test]
fn burst_of_interleave_times_m_is_repaired() {
    let now = Instant::now();
    // Enough single-datagram messages for several full blocks.
    let msgs: Vec<Message> = (0..2000)
        .map(|i| message_of_size(Stream::History, 1_300, i))
        .collect();
    let cfg = config(false);
    let burst = usize::from(cfg.interleave) * usize::from(cfg.repair_shards);
    let mut enc = Encoder::new(cfg, 2).unwrap();
    let dgrams = encode_all(&mut enc, &msgs, now);
    for start in [0usize, 100, 300, 555, 1000] {
        let kept: Vec<Vec<u8>> = dgrams
            .iter()
            .enumerate()
            .filter(|(i, _)| !(start..start + burst).contains(i))
            .map(|(_, d)| d.clone())
            .collect();
        let mut dec = decoder(false);
        let events = decode_all(&mut dec, &kept, now);
        assert_same(&messages(&events), &expected(&msgs));
    }
}

#[test]
fn unrepairable_loss_is_counted_exactly() {
    let now = Instant::now();
    let msgs: Vec<Message> = (0..600)
        .map(|i| message_of_size(Stream::ALL[i as usize % Stream::COUNT], 300, i))
        .collect();
    let cfg = EncoderConfig {
        repair_shards: 0,
        ..config(false)
    };
    let mut enc = Encoder::new(cfg, 3).unwrap();
    let mut dgrams = encode_all(&mut enc, &msgs, now);
    let last = dgrams.pop().unwrap();
    // Lose every 7th datagram but keep the last one so every stream's tail is known.
    let mut kept: Vec<Vec<u8>> = dgrams
        .into_iter()
        .enumerate()
        .filter(|(i, _)| i % 7 != 3)
        .map(|(_, d)| d)
        .collect();
    kept.push(last);
    let mut dec = decoder(false);
    let events = decode_all(&mut dec, &kept, now);
    let got = messages(&events);
    let want = expected(&msgs);
    // Everything delivered was sent, in order.
    let mut it = want.iter();
    for g in &got {
        assert!(
            it.any(|w| w == g),
            "delivered {g:?} out of order or never sent"
        );
    }
    let st = dec.stats();
    for s in Stream::ALL {
        let sent = enc.stats().messages(s);
        let last_seq = got.iter().filter(|g| g.0 == s).map(|g| g.1).max().unwrap();
        // Tail after the last delivered message is unknowable; everything before is exact.
        assert_eq!(st.delivered(s) + st.lost(s), last_seq + 1, "{s:?}");
        assert!(last_seq < sent);
    }
    assert!(st.data_datagrams_lost > 0);
    let lost_events: u64 = events
        .iter()
        .map(|e| match e {
            Event::DatagramsLost { count } => *count,
            _ => 0,
        })
        .sum();
    assert_eq!(lost_events, st.data_datagrams_lost);
}

#[test]
fn new_session_resets_and_stale_datagrams_do_not_flip_back() {
    let now = Instant::now();
    let msgs = mixed(50);
    // Two starts of a transmitter: B's epoch is A's plus one.
    let (id_a, id_b) = (
        protocol::epoch::session_id(7, 0xA),
        protocol::epoch::session_id(8, 0xB),
    );
    let mut a = Encoder::new(config(true), id_a).unwrap();
    let da = encode_all(&mut a, &msgs, now);
    let mut b = Encoder::new(config(true), id_b).unwrap();
    let db = encode_all(&mut b, &msgs, now);
    let mut dec = decoder(true);
    let mut events = decode_all(&mut dec, &da, now);
    // Switch to B, with a straggler of A in the middle.
    let mid = db.len() / 2;
    for d in &db[..mid] {
        dec.handle_datagram(d, now);
    }
    assert_eq!(dec.handle_datagram(&da[3], now), Some(Reject::StaleSession));
    for d in &db[mid..] {
        dec.handle_datagram(d, now);
    }
    events.extend(drain(&mut dec));
    let sessions: Vec<_> = events
        .iter()
        .filter(|e| matches!(e, Event::NewSession { .. }))
        .collect();
    assert_eq!(
        sessions,
        vec![
            &Event::NewSession {
                previous: None,
                session: id_a
            },
            &Event::NewSession {
                previous: Some(id_a),
                session: id_b
            }
        ]
    );
    let mut want = expected(&msgs);
    want.extend(expected(&msgs));
    assert_same(&messages(&events), &want);
    assert_eq!(dec.stats().session_changes, 1);
    assert_eq!(dec.stats().stale_session_dropped, 1);
    // An older epoch never comes back, however long B is silent: only a key holder makes a
    // session, and a session older than the newest one is a replay.
    let later = now + Duration::from_secs(10);
    assert_eq!(
        dec.handle_datagram(&da[0], later),
        Some(Reject::StaleSession)
    );
    assert_eq!(dec.session_id(), Some(id_b));
}

#[test]
fn key_mismatch_and_corruption_are_rejected() {
    let now = Instant::now();
    let msgs = mixed(20);
    let mut enc = Encoder::new(config(true), 5).unwrap();
    let dgrams = encode_all(&mut enc, &msgs, now);
    let mut plain = decoder(false);
    assert_eq!(plain.handle_datagram(&dgrams[0], now), Some(Reject::Auth));
    let mut other = Decoder::new(DecoderConfig {
        key: Some([1; 32]),
        ..DecoderConfig::default()
    });
    assert_eq!(other.handle_datagram(&dgrams[0], now), Some(Reject::Auth));
    let mut dec = decoder(true);
    let mut bad = dgrams[0].clone();
    bad[50] ^= 0x10;
    assert_eq!(dec.handle_datagram(&bad, now), Some(Reject::Crc));
    assert_eq!(dec.handle_datagram(&dgrams[0], now), None);
    assert_eq!(
        dec.handle_datagram(&dgrams[0], now),
        Some(Reject::Duplicate)
    );
    let st = dec.stats();
    assert_eq!(st.crc_failures, 1);
    assert_eq!(st.duplicates, 1);
    assert_eq!(st.datagrams_received, 3);
    assert_eq!(st.datagrams_accepted + st.rejected(), st.datagrams_received);
}

#[test]
fn flush_timer_sends_partial_payloads_and_groups() {
    let t0 = Instant::now();
    let mut enc = Encoder::new(config(false), 6).unwrap();
    assert_eq!(enc.poll_timeout(), None);
    let m = message_of_size(Stream::Live, 10, 1);
    enc.push(&m, t0).unwrap();
    assert_eq!(enc.pending_datagrams(), 0);
    let deadline = enc.poll_timeout().unwrap();
    assert_eq!(deadline, t0 + Duration::from_millis(5));
    enc.push(&m, t0 + Duration::from_millis(3)).unwrap();
    assert_eq!(enc.poll_timeout(), Some(deadline), "anchored at the oldest");
    enc.handle_timeout(t0 + Duration::from_millis(4));
    assert_eq!(enc.pending_datagrams(), 0);
    enc.handle_timeout(deadline);
    // The payload goes out at the flush deadline; its block stays open for the block span.
    assert_eq!(enc.pending_datagrams(), 1);
    let block_due = t0 + protocol::encoder::DEFAULT_BLOCK_SPAN;
    assert_eq!(enc.poll_timeout(), Some(block_due));
    enc.handle_timeout(block_due - Duration::from_millis(1));
    assert_eq!(enc.pending_datagrams(), 1);
    enc.handle_timeout(block_due);
    // Then the 4 repair shards a one-shard group needs for 5 % loss.
    assert_eq!(enc.pending_datagrams(), 5);
    assert_eq!(enc.poll_timeout(), None);
    let mut buf = [0u8; 1500];
    let n = enc.poll_transmit(&mut buf).unwrap();
    let h = header(&buf[..n]);
    assert!(!h.is_repair());
    assert_eq!((h.k, h.m), (64, 16), "data shards carry the nominal shape");
    let n = enc.poll_transmit(&mut buf).unwrap();
    let h = header(&buf[..n]);
    assert!(h.is_repair());
    assert_eq!((h.index, h.k, h.m), (1, 1, 4), "short group: actual shape");
    assert_eq!(enc.stats().timer_flushes, 1);
}

#[test]
fn encoder_rejects_shapes_that_cannot_work() {
    let bad = [
        EncoderConfig {
            max_datagram: 50,
            ..EncoderConfig::default()
        },
        EncoderConfig {
            data_shards: 0,
            ..EncoderConfig::default()
        },
        EncoderConfig {
            interleave: 0,
            ..EncoderConfig::default()
        },
        EncoderConfig {
            data_shards: 4000,
            repair_shards: 200,
            ..EncoderConfig::default()
        },
        EncoderConfig {
            max_datagram: 65_000,
            data_shards: 1000,
            ..EncoderConfig::default()
        },
        EncoderConfig {
            interleave: 1024,
            data_shards: 1000,
            ..EncoderConfig::default()
        },
    ];
    for cfg in bad {
        let err = Encoder::new(cfg.clone(), 1).unwrap_err();
        assert!(!err.to_string().is_empty());
        assert_eq!(cfg.validate(), Err(err));
    }
    assert!(Encoder::new(EncoderConfig::default(), 1).is_ok());
}

#[test]
fn oversized_messages_are_refused_without_consuming_a_sequence() {
    let now = Instant::now();
    let mut enc = Encoder::new(config(false), 7).unwrap();
    let big = message_of_size(Stream::History, protocol::encoder::MAX_MESSAGE_SIZE, 1);
    let err = enc.push(&big, now).unwrap_err();
    assert!(matches!(err, protocol::EncodeError::MessageTooLarge { .. }));
    assert_eq!(enc.next_message_seq(Stream::History), 0);
}
