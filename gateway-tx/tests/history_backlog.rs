//! A link that is behind. A bulk source (a historian backfill) is held back by the link, not
//! only by the tap: the history not yet handed to the link counts, so a backfill faster than
//! the link waits instead of filling the buffer (and, past its size limit, deleting history
//! that was never sent). Live history beyond what the thread keeps in memory is read back from
//! the buffer, and arrives complete, once and in order.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use config::tx::TxConfig;
use gateway_tx::history::{History, LIVE_MEMORY, OUTLET_CAPACITY, TAP_BULK_LIMIT, TAP_CAPACITY};
use protocol::codec;
use protocol::message::Message;
use protocol::model::{Quality, Sample, Value};

mod common;
use common::catalogue;

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn start(dir: &Path) -> History {
    let text = format!(
        "[link]\ninsecure_no_key = true\ndestination = \"127.0.0.1:9\"\nrate_mbit = 10\n[history]\ndir = \"{}\"\n",
        dir.join("h").display()
    );
    let config = TxConfig::parse(&text, Path::new("t.toml")).expect("config");
    let h = config.history.clone().expect("[history]");
    History::start(&h, &config.link, &catalogue(10)).expect("history")
}

fn sample(i: u64) -> Sample {
    Sample {
        tag: (i % 10) as u32,
        value: Value::Double(i as f64),
        quality: Quality::GOOD,
        time: 1_780_000_000_000_000_000 + i as i64,
    }
}

#[test]
fn the_backlog_counts_history_appended_but_not_yet_taken_by_the_link() {
    let dir = tempfile::tempdir().expect("tempdir");
    let history = start(dir.path());
    let (tap, outlet, stats) = (history.tap(), history.outlet(), history.stats());

    // Twice the bulk limit, with nobody taking from the outlet (a link that is behind).
    let n = 2 * TAP_BULK_LIMIT as u64;
    tap.push((0..n).map(sample));
    wait_for("the samples to be appended", || {
        stats.appended.load(Ordering::Relaxed) == n
    });
    wait_for("the outlet to fill", || outlet.len() == OUTLET_CAPACITY);
    // Everything is on disk and out of the tap, yet most of it has not gone to the link: a
    // bulk producer must still wait.
    std::thread::sleep(Duration::from_millis(50));
    let handed = stats.live_samples.load(Ordering::Relaxed);
    let backlog = tap.backlog();
    assert_eq!(
        backlog as u64,
        n - handed,
        "{handed} of {n} handed to the outlet"
    );
    assert!(backlog > TAP_BULK_LIMIT, "backlog {backlog}");

    // The link takes everything: the backlog drains to nothing and the producer may go on.
    wait_for("the backlog to drain", || {
        while outlet.pop().is_some() {}
        tap.backlog() == 0
    });
    assert_eq!(stats.live_samples.load(Ordering::Relaxed), n);
}

#[test]
fn live_history_beyond_memory_is_read_back_from_the_buffer_complete_once_and_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let history = start(dir.path());
    let (tap, outlet, stats) = (history.tap(), history.outlet(), history.stats());
    // Encoded, a sample here takes 20 bytes: enough for twice the memory the thread keeps,
    // pushed with nobody taking from the outlet.
    let n = (2 * LIVE_MEMORY / 20) as u64;
    let chunk = (TAP_CAPACITY / 2) as u64;
    let mut pushed = 0;
    while pushed < n {
        let end = (pushed + chunk).min(n);
        tap.push((pushed..end).map(sample));
        pushed = end;
        wait_for("the chunk to be appended", || {
            stats.appended.load(Ordering::Relaxed) == pushed
        });
    }
    assert_eq!(stats.tap_dropped.load(Ordering::Relaxed), 0);

    // The link catches up: every sample arrives, in order, with its value.
    let mut next = 0u64;
    wait_for("every sample to be handed to the link", || {
        while let Some(body) = outlet.pop() {
            let Ok(Message::History(h)) = codec::decode_message(&body) else {
                panic!("not a history message");
            };
            let len = h.samples.len() as u64;
            for (i, s) in h.samples.iter().enumerate() {
                let seq = h.first_seq + i as u64;
                assert_eq!(s, &sample(seq), "sample {seq}");
            }
            // A live batch announces its own end as the head; the carousel (which cannot be
            // turned off) re-sends, from the start of its window, only what went live before.
            if len > 0 && h.first_seq == next && h.head_seq == next + len {
                next += len;
            } else {
                assert!(
                    h.first_seq + len <= next,
                    "a gap: {}+{len} at {next}",
                    h.first_seq
                );
            }
        }
        next == n
    });
    assert_eq!(
        stats.live_samples.load(Ordering::Relaxed),
        n,
        "each sent live once"
    );
    // What did not fit in memory (about half) came from the buffer.
    let read_back = stats.live_read_back.load(Ordering::Relaxed);
    assert!(
        read_back >= n / 4,
        "{read_back} of {n} read back from the buffer"
    );
    assert!(read_back < n, "{read_back} of {n}: none from memory");
}
