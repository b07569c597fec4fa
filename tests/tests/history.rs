//! The history stream end to end: every sample the transmitter's history buffer holds reaches
//! the receiver's store exactly once, through a receiver outage, loss far beyond FEC, and a
//! transmitter restart, healed by the carousel with no return path.
//!
//! `HISTORY_OUTAGE_S` sets the receiver outage of `receiver_outage_heals` (default 5 s, the
//! issue's 30 s scaled down; the carousel window is sized from it).

#[allow(dead_code)] // the shared helpers serve several test files
mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::toml_path;
use common::{PROCESS_PERIOD, init_tracing, parse_rx, parse_tx, rx_toml_with, tx_toml_with};
use gateway_rx::Receiver;
use gateway_rx::store::db;
use gateway_tx::Transmitter;
use protocol::model::Value;
use tests::plc_sim::PlcSim;
use tests::relay::{Impairments, Relay};

type Rows = BTreeMap<(String, i64), (Option<Value>, u32)>;

struct Hist {
    tx: Option<Transmitter>,
    rx: Option<Receiver>,
    relay: Relay,
    plc: PlcSim,
    dir: tempfile::TempDir,
    tx_toml: String,
    rx_toml: String,
}

impl Hist {
    async fn start(window_s: u64) -> Hist {
        init_tracing();
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut plc = PlcSim::start("127.0.0.1:0".parse().expect("address"))
            .await
            .expect("simulated PLC");
        plc.run_process(PROCESS_PERIOD);
        let port = tests::free_udp_port().expect("free UDP port");
        let rx_toml = rx_toml_with(
            port,
            None,
            &format!(
                "\n[store]\npath = {}\n",
                toml_path(&dir.path().join("rx/history.sqlite"))
            ),
        );
        let rx = Receiver::start(parse_rx(&rx_toml))
            .await
            .expect("gateway-rx");
        let relay = Relay::start(rx.link_addr, Impairments::default(), 7)
            .await
            .expect("relay");
        let tx_toml = tx_toml_with(
            relay.listen,
            plc.local_addr(),
            None,
            common::POLL_MS,
            &format!(
                "\n[history]\ndir = {}\ncarousel_window_s = {window_s}\nmax_age_s = 3600\n\
                 [http]\nbind = \"127.0.0.1:0\"\n",
                toml_path(&dir.path().join("tx-history"))
            ),
        );
        let tx = Transmitter::start(parse_tx(&tx_toml))
            .await
            .expect("gateway-tx");
        Hist {
            tx: Some(tx),
            rx: Some(rx),
            relay,
            plc,
            dir,
            tx_toml,
            rx_toml,
        }
    }

    fn tx_dir(&self) -> PathBuf {
        self.dir.path().join("tx-history")
    }

    fn store_path(&self) -> PathBuf {
        self.dir.path().join("rx/history.sqlite")
    }

    async fn start_rx(&mut self) {
        let config = parse_rx(&self.rx_toml);
        let started = Instant::now();
        loop {
            match Receiver::start(config.clone()).await {
                Ok(rx) => {
                    self.rx = Some(rx);
                    return;
                }
                Err(_) if started.elapsed() < Duration::from_secs(5) => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("restarting gateway-rx: {e:#}"),
            }
        }
    }

    /// Every sample in the transmitter's buffer, by (tag, source time).
    fn tx_rows(&self) -> (Rows, Vec<u64>) {
        let records = gateway_tx::history::log::read_records(&self.tx_dir()).expect("TX log");
        let mut rows = Rows::new();
        let mut seqs = Vec::new();
        for (seq, name, s) in records {
            let name = name.expect("every TX catalogue's names are kept");
            let old = rows.insert((name, s.time), (Some(s.value), s.quality.0));
            assert!(old.is_none(), "the TX log holds one sample per (tag, time)");
            seqs.push(seq);
        }
        (rows, seqs)
    }

    /// Every sample in the receiver's store.
    fn store_rows(&self, names: impl Iterator<Item = String>) -> Rows {
        let Ok(conn) = db::open_ro(&self.store_path()) else {
            return Rows::new();
        };
        let mut rows = Rows::new();
        for name in names {
            for s in db::query(&conn, &name, i64::MIN, i64::MAX).unwrap_or_default() {
                let old = rows.insert((s.tag, s.time), (s.value, s.quality.0));
                assert!(old.is_none(), "the store holds each (tag, time) once");
            }
        }
        rows
    }

    /// Stops changing the process values, then waits until the store holds exactly what the
    /// transmitter's buffer holds.
    async fn wait_store_complete(&mut self, within: Duration) -> Rows {
        self.plc.stop_process();
        // Let the last polls land in the buffer.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let started = Instant::now();
        loop {
            let (tx, _) = self.tx_rows();
            let names: std::collections::BTreeSet<String> =
                tx.keys().map(|(n, _)| n.clone()).collect();
            let store = self.store_rows(names.into_iter());
            if store == tx {
                return tx;
            }
            if started.elapsed() > within {
                let missing: Vec<_> = tx
                    .keys()
                    .filter(|k| !store.contains_key(*k))
                    .take(5)
                    .collect();
                let extra: Vec<_> = store
                    .keys()
                    .filter(|k| !tx.contains_key(*k))
                    .take(5)
                    .collect();
                let differ = tx
                    .iter()
                    .filter(|(k, v)| store.get(*k).is_some_and(|s| s != *v))
                    .count();
                panic!(
                    "store does not match the TX buffer after {within:?}: TX {} samples, store {}; \
                     missing e.g. {missing:?}; extra e.g. {extra:?}; {differ} differ; rx {:?}; tx {:?}",
                    tx.len(),
                    store.len(),
                    self.rx.as_ref().map(|r| r.history_stats()),
                    self.tx.as_ref().and_then(|t| t.history_stats()),
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    fn gaps(&self) -> Vec<db::GapRow> {
        db::open_ro(&self.store_path())
            .and_then(|c| db::list_gaps(&c, false, 100_000))
            .unwrap_or_default()
    }

    /// Waits until no gap is open (gaps are checked a moment after each batch).
    async fn wait_no_open_gaps(&self, within: Duration) -> Vec<db::GapRow> {
        let started = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let gaps = self.gaps();
            if gaps.iter().all(|g| g.state == "healed") {
                return gaps;
            }
            assert!(
                started.elapsed() < within,
                "gaps still open: {:?}",
                gaps.iter()
                    .filter(|g| g.state != "healed")
                    .collect::<Vec<_>>()
            );
        }
    }
}

fn outage() -> Duration {
    let s = std::env::var("HISTORY_OUTAGE_S")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(5);
    Duration::from_secs(s)
}

fn assert_contiguous(seqs: &[u64]) {
    for (i, s) in seqs.iter().enumerate() {
        assert_eq!(
            *s, i as u64,
            "the TX log's sequence numbers are contiguous from 0"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_outage_heals() {
    let outage = outage();
    let window = outage.as_secs() * 3 + 15;
    let mut h = Hist::start(window).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = h.rx.as_ref().expect("rx").history_stats();
    assert!(before.samples_inserted > 0, "history flows: {before:?}");

    h.rx = None;
    tokio::time::sleep(outage).await;
    h.start_rx().await;

    let tx = h
        .wait_store_complete(outage + Duration::from_secs(window))
        .await;
    let (_, seqs) = h.tx_rows();
    assert_contiguous(&seqs);
    assert!(tx.len() > 100, "{} samples", tx.len());
    let gaps = h.wait_no_open_gaps(Duration::from_secs(window)).await;
    assert!(!gaps.is_empty(), "the outage was recorded as a gap");
    let missed: u64 = gaps.iter().map(|g| g.end_seq - g.start_seq).sum();
    assert!(missed > 0);
    let audit = std::fs::read_to_string(h.dir.path().join("rx/history-gaps.jsonl"))
        .expect("the gap audit log");
    assert!(
        audit.contains("\"event\":\"opened\"") && audit.contains("\"event\":\"healed\""),
        "{audit}"
    );
    let stats =
        h.tx.as_ref()
            .and_then(|t| t.history_stats())
            .expect("tx history");
    assert!(stats.carousel_samples > 0, "{stats:?}");
    assert_eq!(stats.tap_dropped, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loss_beyond_fec_is_recorded_then_healed() {
    let mut h = Hist::start(30).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    h.relay.set(Impairments {
        loss: 0.4,
        ..Impairments::default()
    });
    tokio::time::sleep(Duration::from_secs(4)).await;
    h.relay.set(Impairments::default());
    let opened_during_loss = h.rx.as_ref().expect("rx").history_stats().gaps_opened;

    h.wait_store_complete(Duration::from_secs(60)).await;
    let gaps = h.wait_no_open_gaps(Duration::from_secs(30)).await;
    assert!(
        opened_during_loss > 0 || !gaps.is_empty(),
        "40 % loss loses history beyond FEC"
    );
    assert!(
        gaps.iter()
            .all(|g| g.state == "healed" && g.closed_at.is_some())
    );
    assert!(
        gaps.iter().any(|g| !g.tags.is_empty()),
        "healed gaps name their tags"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transmitter_restart_continues_the_sequence() {
    let mut h = Hist::start(30).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let first =
        h.tx.as_ref()
            .and_then(|t| t.history_stats())
            .expect("history");
    let log_id = std::fs::read_to_string(h.tx_dir().join("log.id")).expect("log id");
    h.tx = None;
    tokio::time::sleep(Duration::from_millis(500)).await;
    h.tx = Some(
        Transmitter::start(parse_tx(&h.tx_toml))
            .await
            .expect("restart"),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second =
        h.tx.as_ref()
            .and_then(|t| t.history_stats())
            .expect("history");
    assert!(
        second.head_seq >= first.head_seq,
        "{first:?} then {second:?}"
    );
    assert_eq!(
        std::fs::read_to_string(h.tx_dir().join("log.id")).expect("log id"),
        log_id,
        "the same log continues"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    h.wait_store_complete(Duration::from_secs(60)).await;
    let (_, seqs) = h.tx_rows();
    assert_contiguous(&seqs);
    h.wait_no_open_gaps(Duration::from_secs(30)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_backfill_resends_a_range() {
    use gateway_tx::history::backfill;
    let h = Hist::start(30).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (rows, _) = h.tx_rows();
    let (name, first_time) = rows.keys().next().cloned().expect("history samples");
    let last_time = first_time + 1_000_000_000;
    let expected = rows
        .keys()
        .filter(|(n, t)| *n == name && *t >= first_time && *t <= last_time)
        .count() as u64;
    let id = backfill::submit(
        &h.tx_dir(),
        first_time,
        last_time,
        vec![name.clone()],
        backfill::Source::Auto,
    )
    .expect("writing the request");
    let started = Instant::now();
    let status = loop {
        if let Some(st) = backfill::read_status(&h.tx_dir(), &id)
            && st.state == "done"
        {
            break st;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "backfill not done"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(status.sent, expected, "{status:?}");
    let stats =
        h.tx.as_ref()
            .and_then(|t| t.history_stats())
            .expect("history");
    assert_eq!(stats.backfills_done, 1);
    assert!(stats.backfill_samples >= expected);
    assert!(
        std::fs::read_dir(backfill::request_dir(&h.tx_dir()))
            .expect("request dir")
            .flatten()
            .all(|e| e.path().extension().is_none_or(|x| x != "request")),
        "the request was taken"
    );

    // The status page and the metrics show the history stream's counters.
    let addr = h.tx.as_ref().and_then(|t| t.http_addr).expect("[http]");
    let metrics = http_get(addr, "/metrics").await;
    let m = |series: &str| {
        observe::prom::find(&metrics, series).unwrap_or_else(|| panic!("{series} in\n{metrics}"))
    };
    assert_eq!(m("gateway_tx_history_backfills_total"), 1.0);
    assert!(m("gateway_tx_history_samples_sent_total{kind=\"backfill\"}") >= expected as f64);
    assert!(m("gateway_tx_history_samples_sent_total{kind=\"live\"}") > 0.0);
    assert!(m("gateway_tx_history_appended_total") >= m("gateway_tx_history_head_seq") - 1.0);
    assert!(m("gateway_tx_history_buffer_bytes") > 0.0);
    assert_eq!(m("gateway_tx_history_lost_total{reason=\"tap_full\"}"), 0.0);
    let body = http_get(addr, "/api/status").await;
    let status: serde_json::Value = serde_json::from_str(&body).expect("status JSON");
    assert_eq!(status["history_stream"]["backfills_done"], 1, "{status}");
    let tables = status["view"]["tables"].as_array().expect("tables");
    let table = tables
        .iter()
        .find(|t| {
            t["title"]
                .as_str()
                .is_some_and(|t| t.starts_with("History stream"))
        })
        .expect("a History stream table");
    assert!(
        table["rows"].as_array().expect("rows").iter().any(
            |r| r[0] == "backfills done" && r[1].as_str().is_some_and(|v| v.starts_with("1 ("))
        ),
        "{table}"
    );
}

/// The body of an HTTP GET (the daemons' status server closes after each answer).
async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .expect("request");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.expect("answer");
    let text = String::from_utf8(raw).expect("UTF-8 answer");
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_owned()
}
