//! Property tests: random message streams through Encoder → channel model → Decoder.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use proptest::prelude::*;

use common::{KEY, assert_same, drain, message_of_size, messages};
use protocol::decoder::REORDER_ALLOWANCE;
use protocol::message::{
    CatalogueChunk, Heartbeat, HistoryBatch, Message, SampleBatch, SourceHealth, Stream, TxCounters,
};
use protocol::model::{Quality, Sample, SourceAddress, TagInfo, Value, ValueType};
use protocol::wire::{self, Header};
use protocol::{Decoder, DecoderConfig, Encoder, EncoderConfig, Event};

/// SplitMix64: the channel model's decisions, reproducible from one proptest-chosen seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }

    /// True with probability `percent`/100.
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

fn value(kind: u32, size: usize, seed: u32) -> Value {
    match kind % 12 {
        0 => Value::Boolean(seed.is_multiple_of(2)),
        1 => Value::Int16(seed as i16),
        2 => Value::Int32(seed as i32),
        3 => Value::Int64(-(i64::from(seed) << 20)),
        4 => Value::UInt16(seed as u16),
        5 => Value::UInt32(seed),
        6 => Value::UInt64(u64::from(seed) << 33),
        7 => Value::Float(seed as f32 / 3.0),
        8 => Value::Double(f64::from(seed) / 7.0),
        9 => Value::String("v".repeat(size)),
        10 => Value::DateTime(i64::from(seed) * 1_000_000_007),
        _ => Value::ByteString(
            (0..size)
                .map(|i| (i as u32).wrapping_mul(seed) as u8)
                .collect(),
        ),
    }
}

fn samples(n: usize, size: usize, seed: u32) -> Vec<Sample> {
    (0..n)
        .map(|i| Sample {
            tag: seed.wrapping_add(i as u32),
            value: value(seed.wrapping_add(i as u32), size / n.max(1), seed),
            quality: [Quality::GOOD, Quality::UNCERTAIN, Quality::BAD_TIMEOUT][i % 3],
            time: i64::from(seed) * 1_000 + i as i64,
        })
        .collect()
}

/// A message of one of the five kinds, roughly `size` bytes when encoded.
fn build(kind: u8, size: usize, seed: u32) -> Message {
    let n = 1 + (seed as usize % 4);
    match kind % 5 {
        0 => Message::Catalogue(CatalogueChunk {
            hash: u64::from(seed),
            total_tags: 10,
            first_index: seed % 10,
            tags: vec![TagInfo {
                name: format!("site/area/{seed}/{}", "n".repeat(size)),
                value_type: ValueType::Double,
                unit: "°C".into(),
                description: String::new(),
                source: SourceAddress::OpcUa {
                    endpoint: "opc.tcp://plc:4840".into(),
                    node_id: format!("ns=2;i={seed}"),
                },
            }],
        }),
        1 => Message::Live(SampleBatch {
            catalogue: 1,
            samples: samples(n, size, seed),
        }),
        2 => Message::Snapshot(SampleBatch {
            catalogue: 2,
            samples: samples(n, size, seed),
        }),
        3 => Message::Heartbeat(Heartbeat {
            sent_at: i64::from(seed),
            uptime_ms: u64::from(seed),
            catalogue: 3,
            tag_count: seed,
            config_hash: 4,
            counters: TxCounters::default(),
            sources: vec![SourceHealth {
                name: "s".repeat(size),
                connected: seed % 2 == 1,
                polls_ok: 1,
                polls_failed: 2,
                last_error: String::new(),
            }],
        }),
        _ => Message::History(HistoryBatch {
            catalogue: 5,
            log: 1,
            first_seq: u64::from(seed),
            head_seq: u64::from(seed) + 1,
            oldest_seq: 0,
            samples: samples(n, size, seed),
        }),
    }
}

fn arb_message() -> impl Strategy<Value = Message> {
    let size = prop_oneof![
        8 => 0usize..200,
        2 => 200usize..1_500,
        1 => 1_500usize..6_000,
    ];
    (any::<u8>(), size, any::<u32>()).prop_map(|(k, s, seed)| build(k, s, seed))
}

fn arb_messages() -> impl Strategy<Value = Vec<Message>> {
    prop::collection::vec(arb_message(), 1..60)
}

#[derive(Debug, Clone)]
struct Shape {
    k: u16,
    m: u16,
    d: u16,
    max_datagram: usize,
    key: bool,
}

fn arb_shape() -> impl Strategy<Value = Shape> {
    (
        1u16..=8,
        0u16..=4,
        1u16..=4,
        prop_oneof![Just(200usize), Just(600), Just(1_472)],
        any::<bool>(),
    )
        .prop_map(|(k, m, d, max_datagram, key)| Shape {
            k,
            m,
            d,
            max_datagram,
            key,
        })
}

fn encoder(shape: &Shape, session: u64) -> Encoder {
    Encoder::new(
        EncoderConfig {
            max_datagram: shape.max_datagram,
            data_shards: shape.k,
            repair_shards: shape.m,
            interleave: shape.d,
            flush: Duration::from_millis(5),
            block_span: Duration::from_millis(20),
            key: shape.key.then_some(KEY),
        },
        session,
    )
    .expect("valid shape")
}

fn decoder(key: bool) -> Decoder {
    Decoder::new(DecoderConfig {
        key: key.then_some(KEY),
        ..DecoderConfig::default()
    })
}

/// Pushes messages with time passing (so the flush timer closes some blocks early), then
/// flushes; returns the datagrams in send order.
fn encode(enc: &mut Encoder, msgs: &[Message], rng: &mut Rng, now: &mut Instant) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 2_048];
    for m in msgs {
        *now += Duration::from_micros(rng.below(2_000));
        if enc.poll_timeout().is_some_and(|t| t <= *now) {
            enc.handle_timeout(*now);
        }
        enc.push(m, *now).expect("push");
        while let Some(n) = enc.poll_transmit(&mut buf) {
            assert!(n <= enc.max_datagram());
            out.push(buf[..n].to_vec());
        }
    }
    enc.flush(*now);
    while let Some(n) = enc.poll_transmit(&mut buf) {
        out.push(buf[..n].to_vec());
    }
    out
}

fn with_seqs(msgs: &[Message]) -> Vec<(Stream, u64, Message)> {
    let mut next: HashMap<Stream, u64> = HashMap::new();
    msgs.iter()
        .map(|m| {
            let s = next.entry(m.stream()).or_default();
            *s += 1;
            (m.stream(), *s - 1, m.clone())
        })
        .collect()
}

/// Drops datagrams at random (`percent`) and in one burst of up to `burst` datagrams, then
/// takes back drops from any group that lost more than its repair count, so that FEC can
/// repair everything. Returns the drop mask.
fn repairable_losses(dgrams: &[Vec<u8>], rng: &mut Rng, percent: u64, burst: usize) -> Vec<bool> {
    let headers: Vec<Header> = dgrams.iter().map(|d| Header::parse(d).unwrap()).collect();
    let mut tolerance: BTreeMap<u64, u16> = BTreeMap::new();
    for h in &headers {
        let t = tolerance.entry(h.group).or_default();
        if h.is_repair() {
            *t = h.m;
        }
    }
    let mut drop: Vec<bool> = (0..dgrams.len()).map(|_| rng.chance(percent)).collect();
    if burst > 0 && !dgrams.is_empty() {
        let start = rng.below(dgrams.len() as u64) as usize;
        let len = 1 + rng.below(burst as u64) as usize;
        for d in drop.iter_mut().skip(start).take(len) {
            *d = true;
        }
    }
    let mut lost: BTreeMap<u64, u16> = BTreeMap::new();
    for (i, h) in headers.iter().enumerate() {
        if drop[i] {
            let l = lost.entry(h.group).or_default();
            if *l >= tolerance[&h.group] {
                drop[i] = false;
            } else {
                *l += 1;
            }
        }
    }
    drop
}

/// The datagrams `drop` does not drop, each with its place in the sent sequence.
fn kept_with_places(dgrams: &[Vec<u8>], drop: &[bool]) -> Vec<(u64, Vec<u8>)> {
    (0u64..)
        .zip(dgrams.iter().zip(drop))
        .filter(|(_, (_, d))| !**d)
        .map(|(place, (g, _))| (place, g.clone()))
        .collect()
}

/// Reorders as a link does, with each datagram overtaken at most by those sent up to
/// `max_shift` places after it (places in the *sent* sequence, lost datagrams included: that is
/// what the decoder's reorder allowance counts), and duplicates some.
fn shuffle(
    dgrams: Vec<(u64, Vec<u8>)>,
    rng: &mut Rng,
    max_shift: u64,
    dup_percent: u64,
) -> Vec<Vec<u8>> {
    let mut keyed: Vec<(u64, usize, Vec<u8>)> = Vec::new();
    for (place, d) in dgrams {
        if rng.chance(dup_percent) {
            keyed.push((place + rng.below(max_shift + 20), keyed.len(), d.clone()));
        }
        keyed.push((place + rng.below(max_shift + 1), keyed.len(), d));
    }
    keyed.sort_by_key(|(k, tie, _)| (*k, *tie));
    keyed.into_iter().map(|(_, _, d)| d).collect()
}

fn feed(dec: &mut Decoder, dgrams: &[Vec<u8>], now: Instant) -> Vec<Event> {
    let mut events = Vec::new();
    for d in dgrams {
        dec.handle_datagram(d, now);
        events.extend(drain(dec));
    }
    events
}

/// Feeds the datagrams one every `step` after `start`, serving the decoder's timers as a
/// receiver does; returns the events and the time of the last datagram.
fn feed_timed(
    dec: &mut Decoder,
    dgrams: &[Vec<u8>],
    start: Instant,
    step: Duration,
) -> (Vec<Event>, Instant) {
    let mut events = Vec::new();
    let mut t = start;
    for d in dgrams {
        t += step;
        if dec.poll_timeout().is_some_and(|due| due <= t) {
            dec.handle_timeout(t);
        }
        dec.handle_datagram(d, t);
        events.extend(drain(dec));
    }
    (events, t)
}

/// Pushes each message at its time, firing the flush timer at its deadline as a sender does,
/// and flushes after the last; returns the datagrams with the time each was sent.
fn encode_timed(enc: &mut Encoder, msgs: &[(Instant, Message)]) -> Vec<(Instant, Vec<u8>)> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 2_048];
    let mut collect = |enc: &mut Encoder, t: Instant| {
        while let Some(n) = enc.poll_transmit(&mut buf) {
            out.push((t, buf[..n].to_vec()));
        }
    };
    let mut last = None;
    for (t, m) in msgs {
        while let Some(due) = enc.poll_timeout().filter(|due| due <= t) {
            enc.handle_timeout(due);
            collect(enc, due);
        }
        enc.push(m, *t).expect("push");
        collect(enc, *t);
        last = Some(*t);
    }
    if let Some(t) = last {
        enc.flush(t);
        collect(enc, t);
    }
    out
}

/// Feeds datagrams at their arrival times, serving the decoder's timers at their deadlines.
fn feed_at(dec: &mut Decoder, arrivals: &[(Instant, Vec<u8>)]) -> Vec<Event> {
    let mut events = Vec::new();
    for (t, d) in arrivals {
        while let Some(due) = dec.poll_timeout().filter(|due| due <= t) {
            dec.handle_timeout(due);
            events.extend(drain(dec));
        }
        dec.handle_datagram(d, *t);
        events.extend(drain(dec));
    }
    events
}

fn finish(dec: &mut Decoder, now: Instant) -> Vec<Event> {
    dec.handle_timeout(now + Duration::from_secs(3_600));
    drain(dec)
}

fn assert_accounting(dec: &Decoder) {
    let s = dec.stats();
    assert_eq!(s.datagrams_accepted + s.rejected(), s.datagrams_received);
}

/// Every delivered message is exactly the one sent with that stream and sequence, and each
/// stream's deliveries come in increasing sequence order.
fn assert_faithful(got: &[(Stream, u64, Message)], sent: &[(Stream, u64, Message)]) {
    let by_key: HashMap<(Stream, u64), &Message> =
        sent.iter().map(|(s, q, m)| ((*s, *q), m)).collect();
    let mut last: HashMap<Stream, u64> = HashMap::new();
    for (s, q, m) in got {
        assert_eq!(
            by_key.get(&(*s, *q)),
            Some(&m),
            "{s:?} #{q} is not what was sent"
        );
        if let Some(prev) = last.insert(*s, *q) {
            assert!(*q > prev, "{s:?} #{q} delivered after #{prev}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// (a) Loss within what FEC repairs (random per group, plus a burst of up to D×m), with
    /// reordering and duplicates: the output is the input, exactly and in order.
    #[test]
    fn repairable_loss_reorder_and_duplicates_deliver_everything(
        msgs in arb_messages(),
        shape in arb_shape(),
        seed in any::<u64>(),
        percent in 0u64..30,
        shift in 0u64..40,
    ) {
        let mut rng = Rng(seed);
        let t0 = Instant::now();
        let mut now = t0;
        let mut enc = encoder(&shape, seed);
        let dgrams = encode(&mut enc, &msgs, &mut rng, &mut now);
        let burst = usize::from(shape.d) * usize::from(shape.m);
        let drop = repairable_losses(&dgrams, &mut rng, percent, burst);
        let kept = kept_with_places(&dgrams, &drop);
        let kept = shuffle(kept, &mut rng, shift, 10);
        let mut dec = decoder(shape.key);
        let mut events = feed(&mut dec, &kept, now);
        events.extend(finish(&mut dec, now));
        assert_same(&messages(&events), &with_seqs(&msgs));
        let s = dec.stats();
        prop_assert_eq!(s.messages_lost, [0; Stream::COUNT]);
        prop_assert_eq!(s.data_datagrams_lost, 0);
        prop_assert_eq!(s.frame_errors + s.decode_errors + s.fec_failures, 0, "{:#?}", s);
        let losses = events
            .iter()
            .filter(|e| matches!(e, Event::MessagesLost { .. } | Event::DatagramsLost { .. }))
            .count();
        prop_assert_eq!(losses, 0);
        assert_accounting(&dec);
    }

    /// (b) Loss beyond repair: what is delivered is exactly what was sent, in order, and
    /// per stream delivered + lost == sent. A last message on every stream arrives, so no
    /// loss hides in an unknowable tail.
    #[test]
    fn unrepairable_loss_is_counted_exactly(
        msgs in arb_messages(),
        shape in arb_shape(),
        seed in any::<u64>(),
        percent in 5u64..60,
        burst in 0usize..40,
        shift in 0u64..40,
    ) {
        let mut rng = Rng(seed);
        let mut now = Instant::now();
        let mut enc = encoder(&shape, seed);
        let lossy = encode(&mut enc, &msgs, &mut rng, &mut now);
        let tail: Vec<Message> = (0..4u8).map(|i| build([0, 1, 2, 4][usize::from(i)], 10, u32::from(i))).collect();
        let clean = encode(&mut enc, &tail, &mut rng, &mut now);
        let mut drop: Vec<bool> = (0..lossy.len()).map(|_| rng.chance(percent)).collect();
        if !lossy.is_empty() {
            let start = rng.below(lossy.len() as u64) as usize;
            for d in drop.iter_mut().skip(start).take(burst) {
                *d = true;
            }
        }
        let mut kept = kept_with_places(&lossy, &drop);
        kept.extend((lossy.len() as u64..).zip(clean));
        let kept = shuffle(kept, &mut rng, shift, 5);
        let mut dec = decoder(shape.key);
        let mut events = feed(&mut dec, &kept, now);
        events.extend(finish(&mut dec, now));
        let mut all = msgs.clone();
        all.extend(tail);
        let sent = with_seqs(&all);
        let got = messages(&events);
        assert_faithful(&got, &sent);
        let s = dec.stats();
        for stream in Stream::ALL {
            let n = sent.iter().filter(|m| m.0 == stream).count() as u64;
            prop_assert_eq!(s.delivered(stream) + s.lost(stream), n, "{:?}", stream);
            let lost_events: u64 = events.iter().map(|e| match e {
                Event::MessagesLost { stream: st, count } if *st == stream => *count,
                _ => 0,
            }).sum();
            prop_assert_eq!(lost_events, s.lost(stream));
        }
        prop_assert_eq!(s.decode_errors + s.frame_errors + s.fec_failures, 0);
        assert_accounting(&dec);
    }

    /// (c) Flipped bits are never delivered as messages. Without a key the CRC is the guard
    /// (flips of up to three bits are always caught); with a key, authentication catches
    /// even corruption whose CRC was recomputed to match.
    #[test]
    fn corruption_is_never_delivered(
        msgs in arb_messages(),
        shape in arb_shape(),
        seed in any::<u64>(),
        percent in 1u64..50,
        fix_crc in any::<bool>(),
    ) {
        let fix_crc = fix_crc && shape.key;
        let mut rng = Rng(seed);
        let mut now = Instant::now();
        let mut enc = encoder(&shape, seed);
        let mut dgrams = encode(&mut enc, &msgs, &mut rng, &mut now);
        let mut corrupted = 0u64;
        for d in &mut dgrams {
            if !rng.chance(percent) {
                continue;
            }
            corrupted += 1;
            let body = if fix_crc { d.len() - wire::CRC_LEN } else { d.len() };
            let flips = 1 + rng.below(3);
            let mut bits: Vec<u64> = Vec::new();
            while (bits.len() as u64) < flips {
                let b = rng.below(body as u64 * 8);
                if !bits.contains(&b) {
                    bits.push(b);
                }
            }
            for b in bits {
                d[(b / 8) as usize] ^= 1 << (b % 8);
            }
            if fix_crc {
                let crc = wire::crc32(&d[..body]);
                d[body..].copy_from_slice(&crc.to_be_bytes());
            }
        }
        let mut dec = decoder(shape.key);
        let mut events = feed(&mut dec, &dgrams, now);
        events.extend(finish(&mut dec, now));
        assert_faithful(&messages(&events), &with_seqs(&msgs));
        let s = dec.stats();
        if !fix_crc {
            // A flip in the magic is caught before the CRC is looked at.
            prop_assert_eq!(s.crc_failures + s.bad_magic, corrupted);
        }
        prop_assert_eq!(s.datagrams_accepted, dgrams.len() as u64 - corrupted);
        prop_assert_eq!(s.decode_errors + s.frame_errors + s.fec_failures, 0);
        assert_accounting(&dec);
    }

    /// (d) Arbitrary bytes, and valid datagrams mutated with their CRC recomputed, never
    /// panic the decoder, and every datagram is accounted for.
    #[test]
    fn arbitrary_input_never_panics(
        junk in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..200), 0..40),
        msgs in prop::collection::vec(arb_message(), 1..10),
        shape in arb_shape(),
        seed in any::<u64>(),
    ) {
        let mut rng = Rng(seed);
        let mut now = Instant::now();
        let mut enc = encoder(&shape, seed);
        let mut dgrams = encode(&mut enc, &msgs, &mut rng, &mut now);
        for d in &mut dgrams {
            let n = d.len() - wire::CRC_LEN;
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(n as u64) as usize;
                d[at] = rng.next() as u8;
            }
            if rng.chance(20) {
                d.truncate(rng.below(n as u64) as usize);
            }
            let n = d.len().saturating_sub(wire::CRC_LEN);
            if d.len() >= wire::CRC_LEN {
                let crc = wire::crc32(&d[..n]);
                d[n..].copy_from_slice(&crc.to_be_bytes());
            }
        }
        let mut inputs = junk;
        inputs.extend(dgrams);
        for key in [false, true] {
            let mut dec = decoder(key);
            let mut t = now;
            for d in &inputs {
                t += Duration::from_millis(rng.below(50));
                dec.handle_datagram(d, t);
                while dec.poll_event().is_some() {}
                if rng.chance(10) {
                    dec.handle_timeout(t);
                }
            }
            finish(&mut dec, t);
            assert_accounting(&dec);
            prop_assert_eq!(dec.stats().datagrams_received, inputs.len() as u64);
        }
    }

    /// (e) A restarted transmitter (new session id, of a later epoch) is detected; the new
    /// session's messages are delivered from sequence 0, and late datagrams of the old session
    /// are dropped. Without a key the new session is taken once the old one has been silent
    /// for `SESSION_HOLD`; with one, at once.
    #[test]
    fn restart_is_detected_as_a_new_session(
        first in arb_messages(),
        second in arb_messages(),
        shape in arb_shape(),
        seed in any::<u64>(),
        stragglers in 0usize..5,
    ) {
        let mut rng = Rng(seed);
        let mut now = Instant::now();
        let epoch = (seed >> 40) as u32;
        let (a_id, b_id) = (
            protocol::epoch::session_id(epoch, seed as u32),
            protocol::epoch::session_id(epoch + 1, !seed as u32),
        );
        let mut a = encoder(&shape, a_id);
        let da = encode(&mut a, &first, &mut rng, &mut now);
        let mut b = encoder(&shape, b_id);
        let db = encode(&mut b, &second, &mut rng, &mut now);
        let mut dec = decoder(shape.key);
        let mut events = feed(&mut dec, &da, now);
        if !shape.key {
            now += protocol::decoder::SESSION_HOLD;
        }
        // A few of A's datagrams arrive late, among B's.
        let mut mixed = Vec::new();
        for (i, d) in db.iter().enumerate() {
            mixed.push(d.clone());
            if i < stragglers && i < da.len() {
                mixed.push(da[i].clone());
            }
        }
        events.extend(feed(&mut dec, &mixed, now));
        events.extend(finish(&mut dec, now));
        let sessions: Vec<Event> = events
            .iter()
            .filter(|e| matches!(e, Event::NewSession { .. }))
            .cloned()
            .collect();
        prop_assert_eq!(sessions, vec![
            Event::NewSession { previous: None, session: a_id },
            Event::NewSession { previous: Some(a_id), session: b_id },
        ]);
        let switch = events.iter().position(|e| *e == Event::NewSession { previous: Some(a_id), session: b_id }).unwrap();
        assert_same(&messages(&events[..switch]), &with_seqs(&first));
        assert_same(&messages(&events[switch..]), &with_seqs(&second));
        let s = dec.stats();
        prop_assert_eq!(s.session_changes, 1);
        prop_assert_eq!(s.stale_session_dropped, stragglers.min(db.len()).min(da.len()) as u64);
        assert_accounting(&dec);
    }

    /// (f) Like (a), with time passing between arrivals, so that the decoder's early give-up
    /// is live: reordering within [`REORDER_ALLOWANCE`] never turns repairable loss into loss.
    #[test]
    fn reordering_within_the_allowance_never_costs_a_repairable_group(
        msgs in arb_messages(),
        shape in arb_shape(),
        seed in any::<u64>(),
        percent in 0u64..30,
        shift in 0..REORDER_ALLOWANCE,
        step_us in 0u64..500,
    ) {
        let mut rng = Rng(seed);
        let mut now = Instant::now();
        let mut enc = encoder(&shape, seed);
        let dgrams = encode(&mut enc, &msgs, &mut rng, &mut now);
        let burst = usize::from(shape.d) * usize::from(shape.m);
        let drop = repairable_losses(&dgrams, &mut rng, percent, burst);
        let kept = kept_with_places(&dgrams, &drop);
        let kept = shuffle(kept, &mut rng, shift, 10);
        let mut dec = decoder(shape.key);
        let (mut events, end) = feed_timed(&mut dec, &kept, now, Duration::from_micros(step_us));
        events.extend(finish(&mut dec, end));
        assert_same(&messages(&events), &with_seqs(&msgs));
        let s = dec.stats();
        prop_assert_eq!(s.messages_lost, [0; Stream::COUNT]);
        prop_assert_eq!(s.data_datagrams_lost, 0);
        prop_assert_eq!(s.frame_errors + s.decode_errors + s.fec_failures, 0, "{:#?}", s);
        assert_accounting(&dec);
    }

    /// (g) Like (b), with time passing between arrivals and reordering beyond the allowance:
    /// groups given up early and datagrams arriving after that (counted late) keep the
    /// accounting exact, and nothing is delivered out of order.
    #[test]
    fn early_give_up_keeps_loss_accounting_exact(
        msgs in arb_messages(),
        shape in arb_shape(),
        seed in any::<u64>(),
        percent in 5u64..60,
        burst in 0usize..40,
        shift in 0u64..60,
        step_us in 0u64..2_000,
    ) {
        let mut rng = Rng(seed);
        let mut now = Instant::now();
        let mut enc = encoder(&shape, seed);
        let lossy = encode(&mut enc, &msgs, &mut rng, &mut now);
        let tail: Vec<Message> = (0..4u8).map(|i| build([0, 1, 2, 4][usize::from(i)], 10, u32::from(i))).collect();
        let clean = encode(&mut enc, &tail, &mut rng, &mut now);
        let mut drop: Vec<bool> = (0..lossy.len()).map(|_| rng.chance(percent)).collect();
        if !lossy.is_empty() {
            let start = rng.below(lossy.len() as u64) as usize;
            for d in drop.iter_mut().skip(start).take(burst) {
                *d = true;
            }
        }
        let mut kept = kept_with_places(&lossy, &drop);
        kept.extend((lossy.len() as u64..).zip(clean));
        let kept = shuffle(kept, &mut rng, shift, 5);
        let mut dec = decoder(shape.key);
        let (mut events, end) = feed_timed(&mut dec, &kept, now, Duration::from_micros(step_us));
        events.extend(finish(&mut dec, end));
        let mut all = msgs.clone();
        all.extend(tail);
        let sent = with_seqs(&all);
        assert_faithful(&messages(&events), &sent);
        let s = dec.stats();
        for stream in Stream::ALL {
            let n = sent.iter().filter(|m| m.0 == stream).count() as u64;
            prop_assert_eq!(s.delivered(stream) + s.lost(stream), n, "{:?}", stream);
            let lost_events: u64 = events.iter().map(|e| match e {
                Event::MessagesLost { stream: st, count } if *st == stream => *count,
                _ => 0,
            }).sum();
            prop_assert_eq!(lost_events, s.lost(stream));
        }
        let lost_datagrams: u64 = events.iter().map(|e| match e {
            Event::DatagramsLost { count } => *count,
            _ => 0,
        }).sum();
        prop_assert_eq!(lost_datagrams, s.data_datagrams_lost);
        prop_assert_eq!(s.decode_errors + s.frame_errors + s.fec_failures, 0);
        assert_accounting(&dec);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// (h) At a high rate, blocks fill before the flush timer and keep the full interleave of
    /// the default shape: a burst of interleave × m = 64 consecutive datagrams anywhere is
    /// repaired.
    #[test]
    fn bursts_of_64_in_full_blocks_are_repaired_at_the_default_shape(
        start in any::<prop::sample::Index>(),
        key in any::<bool>(),
        step_us in 1u64..=19,
    ) {
        let cfg = EncoderConfig {
            key: key.then_some(KEY),
            ..EncoderConfig::default()
        };
        assert_eq!((cfg.interleave, cfg.repair_shards), (4, 16));
        let mut enc = Encoder::new(cfg, 0xB0057).expect("default shape");
        let body = enc.max_unfragmented_body() - 40;
        // One message per data datagram, 256 per block of 4 × 64: a block takes at most
        // 256 × 19 µs < 5 ms to fill.
        let t0 = Instant::now();
        let msgs: Vec<(Instant, Message)> = (0..6 * 256u32)
            .map(|i| {
                let t = t0 + Duration::from_micros(step_us * u64::from(i));
                (t, message_of_size(Stream::ALL[i as usize % Stream::COUNT], body, i))
            })
            .collect();
        let sent = encode_timed(&mut enc, &msgs);
        let st = enc.stats();
        prop_assert_eq!(st.data_datagrams, 6 * 256);
        prop_assert_eq!(st.groups, 6 * 4, "every block full");
        prop_assert_eq!(st.repair_datagrams, 6 * 4 * 16);
        let from = start.index(sent.len() - 64);
        let kept: Vec<(Instant, Vec<u8>)> = sent
            .iter()
            .enumerate()
            .filter(|(i, _)| !(from..from + 64).contains(i))
            .map(|(_, d)| d.clone())
            .collect();
        let mut dec = decoder(key);
        let mut events = feed_at(&mut dec, &kept);
        events.extend(finish(&mut dec, kept.last().map_or(t0, |d| d.0)));
        let plain: Vec<Message> = msgs.into_iter().map(|(_, m)| m).collect();
        assert_same(&messages(&events), &with_seqs(&plain));
        let s = dec.stats();
        prop_assert_eq!(s.data_datagrams_lost, 0);
        // Exactly the data datagrams of the burst were rebuilt (a burst that falls on repair
        // shards only needs no repair: flags bit 1 marks a repair shard).
        let burst_data = sent[from..from + 64].iter().filter(|d| d.1[5] & 2 == 0).count() as u64;
        prop_assert_eq!(s.datagrams_repaired, burst_data);
        assert_accounting(&dec);
    }
}

/// (i) A plant-like trickle at 5 % random loss with the default shape: the flush timer
/// closes nearly every block with a few data datagrams, and the short groups' repair is
/// sized for 5 % loss, so a long stream (20,000 datagrams, seeded loss pattern) is delivered
/// completely. The rate changes every 250 messages, from blocks of one datagram to blocks of
/// over a hundred, so the adaptive interleave moves through its range.
#[test]
fn five_percent_loss_at_low_rates_delivers_everything() {
    const DATAGRAMS: u64 = 20_000;
    let mut rng = Rng(0x5EED_0005);
    let t0 = Instant::now();
    let mut enc = Encoder::new(EncoderConfig::default(), 0x10).expect("default shape");
    // About 1,000 bytes: one message per data datagram.
    let body = enc.max_unfragmented_body() / 2 + 300;
    let intervals_us = [40u64, 200, 1_000, 2_500, 4_000, 12_000];
    let mut t = t0;
    let mut msgs = Vec::new();
    let mut sent = Vec::new();
    let mut i = 0u32;
    while enc.stats().datagrams < DATAGRAMS {
        let phase = intervals_us[(i / 250) as usize % intervals_us.len()];
        t += Duration::from_micros(phase / 2 + rng.below(phase));
        let m = message_of_size(Stream::ALL[i as usize % Stream::COUNT], body, i);
        msgs.push((t, m));
        sent.extend(encode_timed_step(&mut enc, msgs.last().expect("pushed")));
        i += 1;
    }
    enc.flush(t);
    let mut buf = vec![0u8; 2_048];
    while let Some(n) = enc.poll_transmit(&mut buf) {
        sent.push((t, buf[..n].to_vec()));
    }
    let st = enc.stats().clone();
    assert!(
        st.timer_flushes > st.groups / 4,
        "mostly short blocks: {st:?}"
    );
    // A constant 3 ms link delay; 5 % of the datagrams never arrive.
    let arrivals: Vec<(Instant, Vec<u8>)> = sent
        .into_iter()
        .filter(|_| !rng.chance(5))
        .map(|(t, d)| (t + Duration::from_millis(3), d))
        .collect();
    let dropped = st.datagrams - arrivals.len() as u64;
    let mut dec = decoder(false);
    let mut events = feed_at(&mut dec, &arrivals);
    events.extend(finish(&mut dec, t));
    let plain: Vec<Message> = msgs.into_iter().map(|(_, m)| m).collect();
    assert_same(&messages(&events), &with_seqs(&plain));
    let s = dec.stats();
    eprintln!(
        "{} datagrams ({} data, {} repair) in {} groups, {} blocks closed by the timer; \
         {dropped} dropped, {} repaired",
        st.datagrams,
        st.data_datagrams,
        st.repair_datagrams,
        st.groups,
        st.timer_flushes,
        s.datagrams_repaired
    );
    assert_eq!(s.messages_lost, [0; Stream::COUNT]);
    assert_eq!((s.data_datagrams_lost, s.groups_lost, s.late), (0, 0, 0));
    assert!(
        s.datagrams_repaired > 0 && dropped > DATAGRAMS * 4 / 100,
        "{s:?}"
    );
    assert_accounting(&dec);
}

/// One message pushed at its time into a sender that fires its flush timer on time.
fn encode_timed_step(enc: &mut Encoder, (t, m): &(Instant, Message)) -> Vec<(Instant, Vec<u8>)> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 2_048];
    while let Some(due) = enc.poll_timeout().filter(|due| due <= t) {
        enc.handle_timeout(due);
        while let Some(n) = enc.poll_transmit(&mut buf) {
            out.push((due, buf[..n].to_vec()));
        }
    }
    enc.push(m, *t).expect("push");
    while let Some(n) = enc.poll_transmit(&mut buf) {
        out.push((*t, buf[..n].to_vec()));
    }
    out
}
