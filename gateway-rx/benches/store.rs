//! History samples per second into the embedded SQLite store, through the real path: the
//! link task's `HistorySink::submit` → bounded queue → writer thread → one transaction per group.
//!
//! `cargo bench -p gateway-rx --bench store` prints, for 10,000 tags:
//! - new samples (each (tag, time) new): the rate a live history stream can sustain;
//! - re-sent samples (every (tag, time) already stored): what carousel duplicates cost;
//! - new samples with two sinks configured (`[mqtt]` and `[postgres]`, destinations down): what
//!   appending them to both spools and syncing those before each commit costs the store.
//!
//! `STORE_BENCH_SAMPLES` sets the samples per phase (default 1,000,000).

use std::sync::Arc;
use std::time::{Duration, Instant};

use gateway_rx::state::State;
use gateway_rx::store::HistoryStore;
use protocol::catalogue::Catalogue;
use protocol::message::HistoryBatch;
use protocol::model::{ModbusAddress, Quality, Sample, SourceAddress, TagInfo, Value, ValueType};

const TAGS: u32 = 10_000;
/// Samples per batch: what one 1472-byte datagram carries.
const PER_BATCH: usize = 75;

fn catalogue() -> Catalogue {
    let tags = (0..TAGS)
        .map(|i| TagInfo {
            name: format!("site/area{}/line{}/tag{i}", i / 1000, i / 100),
            value_type: ValueType::Double,
            unit: String::new(),
            description: String::new(),
            source: SourceAddress::Modbus(ModbusAddress {
                device: "plc".into(),
                unit_id: 1,
                table: protocol::model::ModbusTable::HoldingRegister,
                address: 0,
                kind: protocol::model::ModbusType::F64,
                count: 4,
                byte_order: protocol::model::ByteOrder::Big,
                word_order: protocol::model::WordOrder::Big,
                scale: 1.0,
                offset: 0.0,
            }),
        })
        .collect();
    Catalogue::new(tags)
}

/// Sample n: tag n mod TAGS, second n / TAGS (every tag changing once a second).
fn batches(hash: u64, total: u64) -> Vec<HistoryBatch> {
    let t0 = 1_700_000_000_000_000_000i64;
    let mut out = Vec::new();
    let mut seq = 0u64;
    while seq < total {
        let n = PER_BATCH.min((total - seq) as usize);
        let samples = (seq..seq + n as u64)
            .map(|i| Sample {
                tag: (i % u64::from(TAGS)) as u32,
                value: Value::Double(i as f64 * 0.25),
                quality: Quality::GOOD,
                time: t0 + (i / u64::from(TAGS)) as i64 * 1_000_000_000,
            })
            .collect();
        out.push(HistoryBatch {
            catalogue: hash,
            log: 1,
            first_seq: seq,
            head_seq: seq + n as u64,
            oldest_seq: 0,
            samples,
        });
        seq += n as u64;
    }
    out
}

fn run_phase(
    store: &HistoryStore,
    batches: &[HistoryBatch],
    field: fn(&gateway_rx::store::StoreStatsSnapshot) -> u64,
) -> f64 {
    let sink = store.sink().expect("sink");
    let total: u64 = batches.iter().map(|b| b.samples.len() as u64).sum();
    let before = field(&store.stats());
    let started = Instant::now();
    for b in batches {
        // Submit never blocks; wait for room so the bench measures the writer, not drops.
        loop {
            let s = store.stats();
            // Keep at most ~2000 batches in flight (the queue holds 4096).
            let done = (field(&s) - before) / PER_BATCH as u64;
            let sent = b.first_seq / PER_BATCH as u64;
            if sent < done + 2000 {
                break;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        sink.submit(b.clone());
    }
    while field(&store.stats()) - before < total {
        assert_eq!(
            store.stats().queue_full_batches,
            0,
            "the bench overran the queue"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    let secs = started.elapsed().as_secs_f64();
    total as f64 / secs
}

fn main() {
    let total: u64 = std::env::var("STORE_BENCH_SAMPLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config::rx::RxConfig::parse(
        &format!(
            "[link]\ninsecure_no_key = true\nbind = \"127.0.0.1:5600\"\n[store]\npath = \"{}\"\n",
            dir.path().join("bench.sqlite").display()
        ),
        std::path::Path::new("bench.toml"),
    )
    .expect("config")
    .store;
    let state = Arc::new(State::new());
    let cat = catalogue();
    let hash = cat.hash();
    state.apply_catalogue(cat);
    let store = HistoryStore::start(cfg, state).expect("store");
    let batches = batches(hash, total);

    let new_rate = run_phase(&store, &batches, |s| s.samples_inserted);
    // The same batches again: every (tag, time) is already stored (a carousel pass).
    let dup_rate = run_phase(&store, &batches, |s| s.samples_duplicate);
    let s = store.stats();
    let bytes = std::fs::metadata(dir.path().join("bench.sqlite")).map_or(0, |m| m.len());
    let (sinks_rate, spool_bytes) = with_sinks(&batches, total);
    println!("store bench: {TAGS} tags, {total} samples per phase, {PER_BATCH} per batch");
    println!("  new samples into SQLite:      {new_rate:>10.0} samples/s");
    println!("  re-sent (already stored):     {dup_rate:>10.0} samples/s");
    println!(
        "  new samples, 2 sinks' spools: {sinks_rate:>10.0} samples/s ({:.1} spool bytes per sample)",
        spool_bytes as f64 / total as f64
    );
    println!(
        "  database: {:.1} MiB, {:.1} bytes per sample; {} transactions; {} gaps opened",
        bytes as f64 / (1 << 20) as f64,
        bytes as f64 / total as f64,
        s.commits,
        s.gaps_opened
    );
}

/// New samples into a fresh store that feeds an MQTT and a PostgreSQL sink whose destinations
/// are down: the samples go to both spools. Returns the rate and one spool's bytes.
fn with_sinks(batches: &[HistoryBatch], total: u64) -> (f64, u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let cfg = config::rx::RxConfig::parse(
        &format!(
            "[link]\ninsecure_no_key = true\nbind = \"127.0.0.1:5600\"\n[store]\npath = \"{}\"\n\
             [mqtt]\nhost = \"127.0.0.1\"\nport = {closed}\n\
             [postgres]\nhost = \"127.0.0.1\"\nport = {closed}\n",
            dir.path().join("bench.sqlite").display()
        ),
        std::path::Path::new("bench.toml"),
    )
    .expect("config");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let _in_rt = rt.enter();
    let state = Arc::new(State::new());
    let cat = catalogue();
    state.apply_catalogue(cat);
    let (feed, sinks) = gateway_rx::sinks::start(&cfg, state.clone()).expect("sinks");
    let store = HistoryStore::start_with_sinks(cfg.store.clone(), state, feed).expect("store");
    let rate = run_phase(&store, batches, |s| s.samples_inserted);
    // The last group is counted as inserted a moment before it is appended and committed.
    let started = Instant::now();
    let mut spooled = sinks.first().map(|h| h.stats()).unwrap_or_default();
    while spooled.appended < total && started.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(5));
        spooled = sinks.first().map(|h| h.stats()).unwrap_or_default();
    }
    assert_eq!(spooled.appended, total, "{spooled:?}");
    (rate, spooled.spool_bytes)
}
