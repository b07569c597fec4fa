//! The store feeds the sinks' spools: every sample new to the store, once (carousel re-sends
//! are not fed again), and a spool overflow is counted and recorded as a `lost` gap in the
//! store's gap table and audit log.

use std::sync::Arc;
use std::time::{Duration, Instant};

use config::rx::RxConfig;
use gateway_rx::state::State;
use gateway_rx::store::{HistoryStore, db};
use protocol::catalogue::Catalogue;
use protocol::message::HistoryBatch;
use protocol::model::{ModbusAddress, Quality, Sample, SourceAddress, TagInfo, Value, ValueType};

const TAGS: u32 = 100;

fn catalogue() -> Catalogue {
    let tags = (0..TAGS)
        .map(|i| TagInfo {
            name: format!("site/area{}/tag{i}", i / 10),
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

fn batches(hash: u64, from: u64, to: u64) -> Vec<HistoryBatch> {
    let t0 = 1_700_000_000_000_000_000i64;
    let mut out = Vec::new();
    let mut seq = from;
    while seq < to {
        let n = 75.min(to - seq);
        out.push(HistoryBatch {
            catalogue: hash,
            log: 9,
            first_seq: seq,
            head_seq: seq + n,
            oldest_seq: 0,
            samples: (seq..seq + n)
                .map(|i| Sample {
                    tag: (i % u64::from(TAGS)) as u32,
                    value: Value::Double(i as f64),
                    quality: Quality::GOOD,
                    time: t0 + (i / u64::from(TAGS)) as i64 * 1_000_000,
                })
                .collect(),
        });
        seq += n;
    }
    out
}

fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spool_overflow_is_a_lost_gap_and_resends_are_not_fed_twice() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = dir.path().join("history.sqlite");
    // A broker that is not there, and the smallest spool: 1 MiB, about 39,000 samples.
    let text = format!(
        "[link]\ninsecure_no_key = true\nbind = \"127.0.0.1:5600\"\n[store]\npath = \"{}\"\n\
         [mqtt]\nhost = \"127.0.0.1\"\nport = {}\nspool_max_bytes = 1048576\n",
        store.display(),
        closed_port()
    );
    let config = RxConfig::parse(&text, &dir.path().join("rx.toml")).expect("config");
    let state = Arc::new(State::new());
    let cat = catalogue();
    let hash = cat.hash();
    state.apply_catalogue(cat);
    let (feed, sinks) = gateway_rx::sinks::start(&config, state.clone()).expect("sinks");
    let history =
        HistoryStore::start_with_sinks(config.store.clone(), state.clone(), feed).expect("store");
    let sink = history.sink().expect("store enabled");
    // First 10,000 samples, then all of them again (a carousel pass: nothing new), then
    // 90,000 more: the spool fills.
    let total = 100_000u64;
    for b in batches(hash, 0, 10_000) {
        sink.submit(b);
    }
    for b in batches(hash, 0, total) {
        sink.submit(b);
        // The store's queue is bounded; keep within it.
        while history.stats().batches_received > history.stats().commits * 512 + 2048 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let started = Instant::now();
    while history.stats().samples_inserted < total {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{:?}",
            history.stats()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(history.stats().queue_full_samples, 0);
    drop(history); // ends the overflow episode: it is recorded
    let (_, s) = sinks
        .iter()
        .map(|h| (h.name, h.stats()))
        .find(|(n, _)| *n == "mqtt")
        .expect("mqtt sink");
    assert_eq!(s.delivered, 0, "no broker");
    assert!(s.overflow_samples > 0, "{s:?}");
    assert_eq!(
        s.appended + s.overflow_samples,
        total,
        "every new sample went to the spool or was counted as lost, once: {s:?}"
    );
    assert!(s.spool_bytes <= 1 << 20, "{s:?}");
    let conn = db::open_ro(&store).expect("store");
    let gaps = db::list_gaps(&conn, false, 100).expect("gaps");
    let lost: Vec<_> = gaps.iter().filter(|g| g.state == "lost").collect();
    assert_eq!(lost.len(), 1, "{gaps:#?}");
    let g = lost[0];
    assert_eq!(g.reason, "mqtt_spool_full");
    assert_eq!((g.log, g.end_seq), (9, total));
    assert_eq!(g.end_seq - g.start_seq, s.overflow_samples);
    assert_eq!(g.tags.len(), 32, "the first 32 tags named");
    assert!(gaps.iter().all(|g| g.state == "lost"), "no history gap");
    let audit = std::fs::read_to_string(dir.path().join("history-gaps.jsonl")).expect("audit");
    let line: serde_json::Value = serde_json::from_str(
        audit
            .lines()
            .find(|l| l.contains("\"lost\""))
            .expect("a lost event in the audit log"),
    )
    .expect("JSON line");
    assert_eq!(line["reason"], "mqtt_spool_full");
    assert_eq!(line["missing"], s.overflow_samples);
}
