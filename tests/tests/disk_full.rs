//! The store and the sinks' spools when a disk is full, one of them at a time (each on a
//! tmpfs this test mounts; root): whatever fails, every sample the store holds is in each
//! sink's spool once, or inside a gap recorded as lost. The chaos test (`chaos.rs`) meets both
//! cases with the real daemons; these are the same failures on the library, in seconds.
//!
//! Both failed while the store's writer appended and synced a transaction's samples to the
//! spools before it committed, whatever either outcome: a spool whose sync failed (its disk
//! full) lost the samples its buffer held while the store committed them (counted only in
//! `spool_errors`, no gap); a store whose commit failed (its disk full) left them in the
//! spools, and the carousel's re-send spooled them again. The store's transaction is now the
//! one commit point of both (see `gateway-rx/src/sinks/spool.rs`, "Durability").

#[allow(dead_code)] // the shared helpers serve several test files
mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::tmpfs::{Filler, Tmpfs};
use gateway_rx::sinks::SinkHandle;
use gateway_rx::sinks::spool::{SpoolReader, SpoolWriter};
use gateway_rx::store::HistoryStore;
use protocol::catalogue::Catalogue;
use protocol::message::HistoryBatch;
use protocol::model::{Quality, Sample, SourceAddress, TagInfo, Value, ValueType};

/// History numbers `[first, first + 100)`, over ten tags, each number its own value and time.
fn batch(catalogue: u64, first: u64) -> HistoryBatch {
    HistoryBatch {
        catalogue,
        log: 7,
        first_seq: first,
        head_seq: first + 100,
        oldest_seq: 0,
        samples: (first..first + 100)
            .map(|i| Sample {
                tag: (i % 10) as u32,
                value: Value::Double(i as f64),
                quality: Quality::GOOD,
                time: 1_700_000_000_000_000_000 + i as i64 * 1_000_000,
            })
            .collect(),
    }
}

/// The store at `store` feeding a PostgreSQL sink whose spool is at `spool` (its server does
/// not exist: the samples stay in the spool). Returns the catalogue's hash too.
fn start(store: &Path, spool: &Path) -> (HistoryStore, Vec<SinkHandle>, u64) {
    let text = format!(
        "[link]\ninsecure_no_key = true\nbind = \"127.0.0.1:5600\"\n[store]\npath = {}\n\
         [postgres]\nurl = \"postgresql://gateway@127.0.0.1:9/gateway\"\nspool_dir = {}\n",
        common::toml_string(store),
        common::toml_string(spool)
    );
    let cfg = common::parse_rx(&text);
    let state = Arc::new(gateway_rx::state::State::new());
    let catalogue = Catalogue::new(
        (0..10)
            .map(|i| TagInfo {
                name: format!("site/t{i}"),
                value_type: ValueType::Double,
                unit: String::new(),
                description: String::new(),
                source: SourceAddress::Other("test".into()),
            })
            .collect(),
    );
    let hash = catalogue.hash();
    state.apply_catalogue(catalogue);
    let (feed, sinks) = gateway_rx::sinks::start(&cfg, state.clone()).expect("sinks");
    let store = HistoryStore::start_with_sinks(cfg.store, state, feed).expect("store");
    (store, sinks, hash)
}

/// The history numbers of the samples the spool holds, read back in order.
fn spooled(spool: &Path) -> Vec<u64> {
    let (_writer, shared) = SpoolWriter::open(spool, 1 << 30, None).expect("spool");
    let mut reader = SpoolReader::open(spool, shared).expect("spool reader");
    let mut out = Vec::new();
    loop {
        let got = reader.read(10_000);
        if got.is_empty() {
            return out;
        }
        out.extend(got.iter().map(|s| match s.sample.value {
            Value::Double(v) => v as u64,
            ref other => panic!("not a test sample: {other:?}"),
        }));
    }
}

/// History numbers within gaps recorded as lost.
fn lost(store: &Path) -> u64 {
    let conn = gateway_rx::store::db::open_ro(store).expect("store");
    gateway_rx::store::db::list_gaps(&conn, false, 1000)
        .expect("gaps")
        .iter()
        .filter(|g| g.state == "lost")
        .map(|g| g.end_seq - g.start_seq)
        .sum()
}

fn tmpfs(dir: &Path, mib: u64) -> Option<Tmpfs> {
    if !common::daemons::is_root() {
        eprintln!("skipping: not root (the test mounts a tmpfs)");
        return None;
    }
    Some(Tmpfs::mount(dir, mib).expect("a tmpfs"))
}

/// The spool's disk full, the store's not: every sample the store commits is in the spool, or
/// counted in a lost gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spool_disk_full_loses_nothing_the_store_holds() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let Some(fs) = tmpfs(&dir.path().join("spoolfs"), 1) else {
        return;
    };
    let store_path = dir.path().join("store/history.sqlite");
    let spool = fs.0.join("postgres");
    let (store, sinks, hash) = start(&store_path, &spool);
    let sink = store.sink().expect("history sink");
    for k in 0..10 {
        sink.submit(batch(hash, k * 100));
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    let filler = Filler::start(fs.0.join("filler"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    for k in 10..20 {
        sink.submit(batch(hash, k * 100));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    filler.free();
    for k in 20..30 {
        sink.submit(batch(hash, k * 100));
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (stored, sink_stats) = (store.stats(), sinks[0].stats());
    drop((store, sinks));
    let got = spooled(&spool).len() as u64;
    let lost = lost(&store_path);
    assert!(
        got + lost >= stored.samples_inserted,
        "the store holds {} samples, the sink's spool {got}, lost gaps cover {lost}; sink {sink_stats:?}",
        stored.samples_inserted
    );
}

/// The store's disk full, the spool's not: the transactions that fail leave nothing in the
/// spool, so the carousel's re-send is spooled once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_disk_full_spools_each_sample_once() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let Some(fs) = tmpfs(&dir.path().join("storefs"), 2) else {
        return;
    };
    let store_path = fs.0.join("history.sqlite");
    let spool = dir.path().join("postgres");
    let (store, sinks, hash) = start(&store_path, &spool);
    let sink = store.sink().expect("history sink");
    for k in 0..10 {
        sink.submit(batch(hash, k * 100));
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    let filler = Filler::start(fs.0.join("filler"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    for k in 10..60 {
        sink.submit(batch(hash, k * 100));
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    filler.free();
    // The carousel: all of it again.
    for k in 0..60 {
        sink.submit(batch(hash, k * 100));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (stored, sink_stats) = (store.stats(), sinks[0].stats());
    drop((store, sinks));
    assert!(stored.write_errors > 0, "the disk was full: {stored:?}");
    assert_eq!(stored.samples_inserted, 6000, "{stored:?}");
    let got = spooled(&spool);
    let mut distinct = got.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(
        got.len(),
        distinct.len(),
        "the spool holds {} samples, {} of them distinct; sink {sink_stats:?}",
        got.len(),
        distinct.len()
    );
}
