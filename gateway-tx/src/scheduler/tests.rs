//! The scheduler driven as the link driver drives it, with time passed in: its datagrams go
//! through the protocol's decoder, and the tests look at the messages that come out and when.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use config::tx::{TxConfig, TxLink};
use protocol::decoder::{Decoder, DecoderConfig, Event};
use protocol::message::{HistoryBatch, Message, SampleBatch, SyslogBatch};
use protocol::model::{Quality, Sample, SourceAddress, TagInfo, Value, ValueType};

use super::feeds::{CATALOGUE_CHUNKS_PER_PASS, HISTORY_PER_PASS};
use super::*;
use crate::history::HistoryOutlet;
use crate::tags::{TagTable, Update};

const UNIX0: i64 = 1_700_000_000_000_000_000;
const S: Duration = Duration::from_secs(1);
const MS: Duration = Duration::from_millis(1);

fn link(heartbeat: Duration, catalogue: Duration, snapshot: Duration) -> TxLink {
    let toml = "[link]\ninsecure_no_key = true\ndestination = \"127.0.0.1:9\"\n";
    let mut link = TxConfig::parse(toml, Path::new("test.toml"))
        .expect("test config")
        .link;
    link.heartbeat_interval = heartbeat;
    link.catalogue_interval = catalogue;
    link.snapshot_period = snapshot;
    link
}

fn table(prefix: &str, n: usize) -> Arc<TagTable> {
    let infos = (0..n)
        .map(|i| TagInfo {
            name: format!("{prefix}/tag{i}"),
            value_type: ValueType::Double,
            unit: String::new(),
            description: String::new(),
            source: SourceAddress::Other("test".into()),
        })
        .collect();
    Arc::new(TagTable::new(infos, vec![0.0; n]))
}

fn set(table: &TagTable, tags: impl IntoIterator<Item = u32>, value: f64) {
    table.apply(tags.into_iter().map(|tag| Update {
        tag,
        value: Some(Value::Double(value)),
        quality: Quality::GOOD,
        time: UNIX0,
    }));
}

/// A scheduler, and a receiver's decoder taking every datagram it makes.
struct Bed {
    scheduler: Scheduler,
    decoder: Decoder,
    t0: Instant,
    /// Messages out of the decoder, with when (since `t0`) the pass that sent them ran.
    got: Vec<(Duration, Message)>,
}

impl Bed {
    fn new(link: &TxLink, table: Arc<TagTable>) -> Bed {
        let t0 = Instant::now();
        let health: HealthFn = Arc::new(Vec::new);
        Bed {
            scheduler: Scheduler::new(link, 7, table, health, 0x5eed, t0).expect("scheduler"),
            decoder: Decoder::new(DecoderConfig::default()),
            t0,
            got: Vec::new(),
        }
    }

    /// One pass at `at`, its datagrams all delivered.
    fn poll(&mut self, at: Duration) {
        let now = self.t0 + at;
        let unix = UNIX0 + i64::try_from(at.as_nanos()).expect("short test");
        self.scheduler.poll(now, unix);
        self.deliver(at, |_| true);
    }

    /// Hands the datagrams made so far to the decoder, those `keep` says; collects messages.
    fn deliver(&mut self, at: Duration, mut keep: impl FnMut(usize) -> bool) {
        let now = self.t0 + at;
        let mut i = 0;
        while let Some(d) = self.scheduler.peek_transmit() {
            if keep(i) {
                self.decoder.handle_datagram(d, now);
            }
            self.scheduler.advance_transmit();
            i += 1;
        }
        while let Some(event) = self.decoder.poll_event() {
            if let Event::Message { message, .. } = event {
                self.got.push((at, message));
            }
        }
    }

    /// Polls whenever the scheduler says it is due, up to `end`.
    fn run_until(&mut self, end: Duration) {
        while let Some(t) = self.scheduler.poll_timeout() {
            let at = t.duration_since(self.t0);
            if at > end {
                break;
            }
            self.poll(at);
        }
    }

    fn take(&mut self) -> Vec<(Duration, Message)> {
        std::mem::take(&mut self.got)
    }
}

/// A delivery time in whole 10 ms: a message waits in its datagram up to the encoder's flush
/// time (5 ms) after the pass that pushed it.
fn ms10(at: Duration) -> u128 {
    at.as_millis() / 10 * 10
}

/// When each catalogue round began (its first chunk), and the catalogue's hash.
fn catalogue_rounds(got: &[(Duration, Message)]) -> Vec<(u128, u64)> {
    got.iter()
        .filter_map(|(at, m)| match m {
            Message::Catalogue(c) if c.first_index == 0 => Some((ms10(*at), c.hash)),
            _ => None,
        })
        .collect()
}

#[test]
fn catalogue_goes_at_start_then_after_gaps_doubling_up_to_the_interval() {
    let mut bed = Bed::new(&link(S, 10 * S, 10 * S), table("a", 10));
    let hash = bed.scheduler.catalogue().hash();
    bed.run_until(40 * S);
    let rounds = catalogue_rounds(&bed.take());
    let expected: Vec<(u128, u64)> = [0, 1000, 3000, 7000, 15000, 25000, 35000]
        .into_iter()
        .map(|ms| (ms, hash))
        .collect();
    assert_eq!(rounds, expected);
}

#[test]
fn reload_sends_the_new_catalogue_at_once_and_restarts_its_schedule() {
    let mut bed = Bed::new(&link(S, 10 * S, 10 * S), table("a", 10));
    let old = bed.scheduler.catalogue().hash();
    let new_table = table("b", 4);
    set(&new_table, 0..4, 2.5);
    bed.run_until(20 * S - MS);
    assert_eq!(
        catalogue_rounds(&bed.take()),
        [0u128, 1000, 3000, 7000, 15000].map(|ms| (ms, old))
    );

    bed.scheduler.reload(new_table, 9, bed.t0 + 20 * S);
    let new = bed.scheduler.catalogue().hash();
    assert_ne!(new, old);
    bed.run_until(40 * S);
    let got = bed.take();
    assert_eq!(
        catalogue_rounds(&got),
        [20000u128, 21000, 23000, 27000, 35000].map(|ms| (ms, new))
    );
    for (at, m) in &got {
        match m {
            Message::Heartbeat(h) => {
                assert_eq!(
                    (h.catalogue, h.tag_count, h.config_hash),
                    (new, 4, 9),
                    "heartbeat at {at:?}"
                );
            }
            Message::Snapshot(b) | Message::Live(b) => assert_eq!(b.catalogue, new),
            Message::Catalogue(c) => assert_eq!((c.hash, c.total_tags), (new, 4)),
            Message::History(_) | Message::Syslog(_) => unreachable!(),
        }
    }
    // The snapshot starts over from the new table's first tag.
    let first = got.iter().find_map(|(_, m)| match m {
        Message::Snapshot(b) => Some(b.samples.iter().map(|s| s.tag).collect::<Vec<_>>()),
        _ => None,
    });
    assert_eq!(first, Some(vec![0]));
}

#[test]
fn reload_drops_what_is_left_of_the_old_catalogue_round() {
    // Enough tags for a round of several passes.
    let mut bed = Bed::new(&link(S, 10 * S, 10 * S), table("a", 5000));
    let old = bed.scheduler.catalogue().hash();
    bed.poll(Duration::ZERO);
    assert!(bed.scheduler.backlogged(), "round not done in one pass");
    bed.scheduler.reload(table("b", 3), 9, bed.t0 + MS);
    let new = bed.scheduler.catalogue().hash();
    bed.poll(MS);
    bed.poll(10 * MS);
    assert!(!bed.scheduler.backlogged());
    let chunks: Vec<(u64, u32, usize)> = bed
        .take()
        .into_iter()
        .filter_map(|(_, m)| match m {
            Message::Catalogue(c) => Some((c.hash, c.first_index, c.tags.len())),
            _ => None,
        })
        .collect();
    let (before, after) = chunks.split_at(CATALOGUE_CHUNKS_PER_PASS);
    assert!(
        before.iter().all(|c| c.0 == old),
        "the old round's first pass"
    );
    assert_eq!(
        after,
        [(new, 0, 3)],
        "then the whole new catalogue, nothing else"
    );
}

#[test]
fn heartbeat_every_interval_its_datagram_closed_at_once_its_block_left_open() {
    let mut bed = Bed::new(&link(S, 60 * S, 60 * S), table("a", 3));
    set(bed.scheduler.table(), 0..3, 1.0);
    // Heartbeat, then a live batch that waits for its datagram to fill or the flush timer.
    bed.scheduler.poll(bed.t0, UNIX0);
    let stats = bed.scheduler.encoder_stats();
    assert_eq!(
        (stats.data_datagrams, stats.repair_datagrams),
        (1, 0),
        "the heartbeat's datagram is made at once, the block stays open"
    );
    bed.deliver(Duration::ZERO, |_| true);
    assert!(matches!(bed.take()[..], [(_, Message::Heartbeat(_))]));

    bed.run_until(5 * S + 500 * MS);
    let beats: Vec<(Duration, u64, i64, u64)> = bed
        .take()
        .into_iter()
        .filter_map(|(at, m)| match m {
            Message::Heartbeat(h) => Some((at, h.uptime_ms, h.sent_at, h.counters.samples_sent)),
            _ => None,
        })
        .collect();
    let expected: Vec<_> = (1..=5u64)
        .map(|k| {
            let at = Duration::from_secs(k);
            (at, k * 1000, UNIX0 + k as i64 * 1_000_000_000, 3)
        })
        .collect();
    // Delivered in the pass that made them: the flush timer is not waited for.
    assert_eq!(beats, expected);
}

#[test]
fn a_heartbeat_late_after_a_stall_is_sent_once_and_the_cadence_restarts_from_it() {
    let mut bed = Bed::new(&link(S, 60 * S, 60 * S), table("a", 1));
    bed.poll(Duration::ZERO);
    bed.poll(3 * S + 500 * MS);
    bed.run_until(5 * S);
    let beats: Vec<Duration> = bed
        .take()
        .into_iter()
        .filter_map(|(at, m)| matches!(m, Message::Heartbeat(_)).then_some(at))
        .collect();
    assert_eq!(beats, [Duration::ZERO, 3 * S + 500 * MS, 4 * S + 500 * MS]);
}

/// The tags of each snapshot batch, and when it came.
fn snapshot_slices(got: &[(Duration, Message)]) -> Vec<(u128, Vec<u32>)> {
    got.iter()
        .filter_map(|(at, m)| match m {
            Message::Snapshot(b) => Some((ms10(*at), b.samples.iter().map(|s| s.tag).collect())),
            _ => None,
        })
        .collect()
}

#[test]
fn snapshot_covers_every_tag_once_per_period_in_even_slices() {
    let mut bed = Bed::new(&link(S, 60 * S, S), table("a", 100));
    set(bed.scheduler.table(), 0..100, 4.0);
    bed.scheduler.table().take_changes(100);
    bed.run_until(2 * S + 50 * MS);
    let slices = snapshot_slices(&bed.take());
    // A slice of 10 tags every 100 ms, in tag order, the whole table once a second.
    let expected: Vec<(u128, Vec<u32>)> = (0..20u32)
        .map(|i| {
            let first = (i % 10) * 10;
            (u128::from(i + 1) * 100, (first..first + 10).collect())
        })
        .collect();
    assert_eq!(slices, expected);
}

#[test]
fn snapshot_of_a_table_not_divisible_by_the_ticks_still_covers_every_tag_each_period() {
    // 95 tags over 10 ticks: slices of 10, so five tags go twice in a period, none never;
    // tags without a value are skipped.
    let mut bed = Bed::new(&link(S, 60 * S, S), table("a", 95));
    set(bed.scheduler.table(), (0..95).filter(|t| t % 19 != 0), 4.0);
    bed.scheduler.table().take_changes(95);
    bed.run_until(3 * S + 50 * MS);
    let slices = snapshot_slices(&bed.take());
    assert_eq!(slices.len(), 30);
    for period in slices.chunks(10) {
        let mut seen: Vec<u32> = period.iter().flat_map(|(_, t)| t.clone()).collect();
        seen.sort_unstable();
        seen.dedup();
        let valued: Vec<u32> = (0..95).filter(|t| t % 19 != 0).collect();
        assert_eq!(seen, valued);
    }
}

#[test]
fn live_changes_go_out_in_the_next_pass_and_are_counted() {
    let mut bed = Bed::new(&link(S, 60 * S, 60 * S), table("a", 10));
    let hash = bed.scheduler.catalogue().hash();
    bed.poll(Duration::ZERO);
    bed.take();
    set(bed.scheduler.table(), [2, 5, 7], 9.5);
    bed.poll(100 * MS);
    // In the live datagram once the encoder's flush timer closes it.
    bed.run_until(200 * MS);
    let live: Vec<SampleBatch> = bed
        .take()
        .into_iter()
        .filter_map(|(_, m)| match m {
            Message::Live(b) => Some(b),
            _ => None,
        })
        .collect();
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].catalogue, hash);
    assert_eq!(
        live[0]
            .samples
            .iter()
            .map(|s| (s.tag, s.value.clone()))
            .collect::<Vec<_>>(),
        [2, 5, 7].map(|t| (t, Value::Double(9.5)))
    );
    assert_eq!(bed.scheduler.tx_counters().samples_sent, 3);
    assert_eq!(
        bed.scheduler
            .link_counters()
            .samples_sent
            .load(std::sync::atomic::Ordering::Relaxed),
        3
    );
}

#[test]
fn a_catalogue_round_goes_a_share_per_pass_behind_live_changes() {
    let mut bed = Bed::new(&link(S, 60 * S, 60 * S), table("a", 5000));
    let total = bed.scheduler.catalogue().len();
    bed.poll(Duration::ZERO);
    assert!(bed.scheduler.backlogged());
    assert_eq!(
        bed.scheduler.poll_timeout(),
        Some(bed.t0),
        "the rest of the round is due at once"
    );
    set(bed.scheduler.table(), [4999], 1.0);
    bed.run_until(Duration::ZERO);
    bed.run_until(10 * MS);
    assert!(!bed.scheduler.backlogged());

    let got: Vec<Message> = bed.take().into_iter().map(|(_, m)| m).collect();
    let chunks: Vec<(u32, usize)> = got
        .iter()
        .filter_map(|m| match m {
            Message::Catalogue(c) => Some((c.first_index, c.tags.len())),
            _ => None,
        })
        .collect();
    assert!(
        chunks.len() > 2 * CATALOGUE_CHUNKS_PER_PASS,
        "{} chunks",
        chunks.len()
    );
    let mut next = 0;
    for (first, len) in &chunks {
        assert_eq!(*first, next, "chunks in order, none missing");
        next += *len as u32;
    }
    assert_eq!(next as usize, total);
    // The change made during the round went out in the next pass: after the first pass's
    // chunks, before the second's.
    let live_at = got
        .iter()
        .filter(|m| !matches!(m, Message::Heartbeat(_)))
        .position(|m| matches!(m, Message::Live(_)));
    assert_eq!(live_at, Some(CATALOGUE_CHUNKS_PER_PASS));
}

fn history_body(seq: u64) -> Vec<u8> {
    protocol::codec::encode(&Message::History(HistoryBatch {
        catalogue: 1,
        log: 2,
        first_seq: seq,
        head_seq: seq + 1,
        oldest_seq: 0,
        samples: vec![Sample {
            tag: 0,
            value: Value::Double(seq as f64),
            quality: Quality::GOOD,
            time: UNIX0,
        }],
    }))
    .expect("history body")
}

#[test]
fn history_goes_a_bounded_share_per_pass_in_order() {
    let mut bed = Bed::new(&link(S, 60 * S, 60 * S), table("a", 1));
    let outlet = Arc::new(HistoryOutlet::default());
    bed.scheduler
        .add(Box::new(HistoryFeed::new(outlet.clone())));
    for seq in 0..300 {
        outlet.push(history_body(seq));
    }
    bed.poll(Duration::ZERO);
    assert_eq!(outlet.len(), 300 - HISTORY_PER_PASS);
    assert!(bed.scheduler.backlogged());
    assert_eq!(bed.scheduler.poll_timeout(), Some(bed.t0));
    bed.poll(Duration::ZERO);
    bed.poll(Duration::ZERO);
    assert!(outlet.is_empty());
    assert!(!bed.scheduler.backlogged());
    bed.run_until(100 * MS);
    let seqs: Vec<u64> = bed
        .take()
        .into_iter()
        .filter_map(|(_, m)| match m {
            Message::History(h) => Some(h.first_seq),
            _ => None,
        })
        .collect();
    assert_eq!(seqs, (0..300).collect::<Vec<_>>());
}

#[test]
fn stop_sends_the_partial_datagram_and_the_open_block_with_its_repair() {
    let mut bed = Bed::new(&link(S, 60 * S, 60 * S), table("a", 2));
    bed.poll(Duration::ZERO);
    bed.take();
    set(bed.scheduler.table(), [1], 6.0);
    bed.poll(MS);
    assert_eq!(
        bed.scheduler.pending_datagrams(),
        0,
        "the change waits in the partial datagram"
    );
    bed.scheduler.stop(bed.t0 + MS);
    assert!(bed.scheduler.encoder_stats().repair_datagrams > 0);
    // The data datagram lost: its block's repair brings the change back.
    bed.deliver(MS, |i| i != 0);
    let live: Vec<Vec<Sample>> = bed
        .take()
        .into_iter()
        .filter_map(|(_, m)| match m {
            Message::Live(b) => Some(b.samples),
            _ => None,
        })
        .collect();
    assert_eq!(live.len(), 1);
    assert_eq!(
        (live[0][0].tag, &live[0][0].value),
        (1, &Value::Double(6.0))
    );
}

/// A stream added later: a message every 250 ms, after the others' shares.
struct Ticker {
    next: Instant,
}

impl Feed for Ticker {
    fn name(&self) -> &'static str {
        "ticker"
    }

    fn poll(&mut self, now: Instant, _unix: UnixNanos, out: &mut Outbox) {
        if now >= self.next {
            self.next = now + 250 * MS;
            let sample = Sample {
                tag: 0,
                value: Value::String("tick".into()),
                quality: Quality::GOOD,
                time: 0,
            };
            out.push_samples(Message::Live, vec![sample], now);
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        Some(self.next)
    }
}

#[test]
fn an_added_feed_gets_its_timer_and_its_share_after_the_others() {
    let mut bed = Bed::new(&link(S, 60 * S, 60 * S), table("a", 1));
    bed.scheduler.add(Box::new(Ticker { next: bed.t0 }));
    set(bed.scheduler.table(), [0], 3.0);
    bed.run_until(S - MS);
    let got = bed.take();
    let ticks: Vec<u128> = got
        .iter()
        .filter_map(|(at, m)| match m {
            Message::Live(b) if b.samples[0].value == Value::String("tick".into()) => {
                Some(ms10(*at))
            }
            _ => None,
        })
        .collect();
    assert_eq!(ticks, [0, 250, 500, 750]);
    // In the first pass: heartbeat, live change, catalogue, then the added feed.
    let first: Vec<&'static str> = got
        .iter()
        .take(4)
        .map(|(_, m)| match m {
            Message::Heartbeat(_) => "heartbeat",
            Message::Live(b) if b.samples[0].value == Value::Double(3.0) => "live",
            Message::Catalogue(_) => "catalogue",
            Message::Live(_) => "ticker",
            _ => "other",
        })
        .collect();
    assert_eq!(first, ["heartbeat", "live", "catalogue", "ticker"]);
}

#[test]
fn batches_fit_the_budget_when_encoded() {
    let samples: Vec<Sample> = (0..1000)
        .map(|i| Sample {
            tag: u32::MAX - i,
            value: if i % 7 == 0 {
                Value::String("x".repeat(40))
            } else {
                Value::Double(f64::from(i) * 1.5)
            },
            quality: Quality::BAD_COMMUNICATION_ERROR,
            time: i64::MAX - i64::from(i),
        })
        .collect();
    let out = batches(samples.clone(), 1300);
    assert!(out.len() > 1);
    for b in &out {
        let body = protocol::codec::encode(&Message::Live(SampleBatch {
            catalogue: u64::MAX,
            samples: b.clone(),
        }))
        .unwrap();
        assert!(
            body.len() <= 1300,
            "batch of {} encodes to {}",
            b.len(),
            body.len()
        );
    }
    assert_eq!(
        out.concat(),
        samples,
        "nothing lost or reordered by batching"
    );
}

/// The syslog feed: a bounded share per pass (the rest next pass, the feed backlogged), batches
/// numbered per record, and the transmitter's drops carried even with no message to send.
#[test]
fn syslog_feed_shares_passes_numbers_records_and_carries_drops() {
    use crate::syslog::{SyslogFeed, SyslogQueue, SyslogStats};
    use protocol::message::SyslogRecord;
    let link = link(
        Duration::from_secs(1),
        Duration::from_secs(3600),
        Duration::from_secs(3600),
    );
    let mut bed = Bed::new(&link, table("t", 1));
    let stats = Arc::new(SyslogStats::default());
    // Room for 150 records of 100 bytes (each costs its bytes + 64).
    let queue = Arc::new(SyslogQueue::new(150 * 164, stats.clone()));
    bed.scheduler
        .add(Box::new(SyslogFeed::new(queue.clone(), 100)));
    let record = |i: usize| SyslogRecord {
        received_at: 0,
        peer: "192.0.2.1:514".parse().unwrap(),
        bytes: format!("<13>{i:096}").into_bytes(),
    };
    for i in 0..200 {
        let kept = queue.push(record(i));
        assert_eq!(kept, i < 150, "record {i}: the newest is dropped when full");
    }
    assert_eq!(stats.dropped(), 50);
    bed.poll(Duration::ZERO);
    assert!(bed.scheduler.backlogged(), "100 of 150 per pass");
    bed.poll(Duration::from_millis(1));
    assert!(!bed.scheduler.backlogged());
    bed.scheduler.stop(bed.t0 + Duration::from_millis(2));
    bed.deliver(Duration::from_millis(2), |_| true);
    let batches: Vec<SyslogBatch> = bed
        .take()
        .into_iter()
        .filter_map(|(_, m)| match m {
            Message::Syslog(b) => Some(b),
            _ => None,
        })
        .collect();
    let records: Vec<SyslogRecord> = batches.iter().flat_map(|b| b.records.clone()).collect();
    assert_eq!(records, (0..150).map(record).collect::<Vec<_>>());
    let mut next = 0;
    for b in &batches {
        assert_eq!(b.first_seq, next);
        assert_eq!(b.dropped, 50);
        next = b.next_seq();
    }
    // A drop with nothing queued still reaches the receiver.
    stats
        .malformed
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    bed.poll(Duration::from_millis(10));
    bed.scheduler.stop(bed.t0 + Duration::from_millis(11));
    bed.deliver(Duration::from_millis(11), |_| true);
    let last = bed.take().into_iter().find_map(|(_, m)| match m {
        Message::Syslog(b) => Some(b),
        _ => None,
    });
    let last = last.expect("an empty batch with the new count");
    assert_eq!(
        (last.first_seq, last.dropped, last.records.len()),
        (150, 51, 0)
    );
}
