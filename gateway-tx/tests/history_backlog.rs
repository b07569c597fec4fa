//! A bulk source (a historian backfill) is held back by the link, not only by the tap: the
//! history not yet handed to the link counts, so a backfill faster than the link waits instead
//! of filling the buffer (and, past its size limit, deleting history that was never sent).

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use config::tx::TxConfig;
use gateway_tx::history::{History, OUTLET_CAPACITY, TAP_BULK_LIMIT};
use protocol::catalogue::Catalogue;
use protocol::model::{Quality, Sample, SourceAddress, TagInfo, Value, ValueType};

fn catalogue() -> Catalogue {
    Catalogue::new(
        (0..10)
            .map(|i| TagInfo {
                name: format!("t/{i}"),
                value_type: ValueType::Double,
                unit: String::new(),
                description: String::new(),
                source: SourceAddress::Other(String::new()),
            })
            .collect(),
    )
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn the_backlog_counts_history_appended_but_not_yet_taken_by_the_link() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = format!(
        "[link]\ndestination = \"127.0.0.1:9\"\nrate_mbit = 10\n[history]\ndir = \"{}\"\n",
        dir.path().join("h").display()
    );
    let config = TxConfig::parse(&text, Path::new("t.toml")).expect("config");
    let h = config.history.clone().expect("[history]");
    let history = History::start(&h, &config.link, &catalogue()).expect("history");
    let (tap, outlet, stats) = (history.tap(), history.outlet(), history.stats());

    // Twice the bulk limit, with nobody taking from the outlet (a link that is behind).
    let n = 2 * TAP_BULK_LIMIT as u64;
    tap.push((0..n).map(|i| Sample {
        tag: (i % 10) as u32,
        value: Value::Double(i as f64),
        quality: Quality::GOOD,
        time: 1_780_000_000_000_000_000 + i as i64,
    }));
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
