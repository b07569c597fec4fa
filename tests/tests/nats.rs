//! The NATS JetStream sink against a real three-node cluster (`GATEWAY_TEST_NATS`, the
//! servers' URLs, and `GATEWAY_TEST_NATS_CTL`, a command taking `kill|stop|start N`, both from
//! `.ci/services`): without them these tests print why and pass, except under `CI=true`, where
//! they fail.
//!
//! The sink runs as gateway-rx runs it, on a spool of its own; a stream with three replicas per
//! test. Afterwards an ordered consumer reads the whole stream back: every sample of the run
//! must be there exactly once, on its tag's subject with the MQTT sink's payload, and in
//! source-time order per tag, after
//!
//! - the sink killed mid-batch (its task dropped where it stands: no shutdown path runs, as
//!   with SIGKILL) and restarted from its spool, again and again;
//! - the node leading the stream killed (SIGKILL) and restarted while samples flow;
//! - the whole cluster stopped for 30 s while samples flow, then started.
//!
//! And a healed gap's late samples (older than what their tags had) are published too.
//!
//! The tests run one at a time: they stop and start the shared cluster.

#[allow(dead_code)] // the shared helpers serve several test files
mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::peers::{service, source_time, unique};
use common::toml_path;
use common::{init_tracing, parse_rx};
use futures_util::StreamExt;
use gateway_rx::sinks::SinkStats;
use gateway_rx::sinks::nats::subject;
use gateway_rx::sinks::spool::{SpoolReader, SpoolSample, SpoolWriter};
use protocol::model::{Quality, Value};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The `[nats]` config of a sink writing to a stream of its own, three replicas.
fn nats_cfg(servers: &str, stream: &str, prefix: &str, dir: &Path) -> config::rx::Nats {
    let list: Vec<String> = servers.split(',').map(|s| format!("\"{s}\"")).collect();
    parse_rx(&format!(
        "[link]\ninsecure_no_key = true\nbind = \"127.0.0.1:5600\"\n[store]\npath = {}\n\
         [nats]\nservers = [{}]\nstream = \"{stream}\"\nsubject_prefix = \"{prefix}\"\n\
         replicas = 3\nack_timeout_s = 2\nmax_age_s = 3600\n",
        toml_path(&dir.join("history.sqlite")),
        list.join(", ")
    ))
    .nats
    .expect("[nats]")
}

/// `tags` tags (names with characters NATS reserves among them), `per_tag` samples each,
/// interleaved by source time as a transmitter's history is; every value distinct.
fn history(tags: usize, per_tag: i64) -> Vec<SpoolSample> {
    let t0 = 1_700_000_000_000_000_000i64;
    let names: Vec<Arc<str>> = (0..tags)
        .map(|i| match i % 4 {
            0 => Arc::from(format!("site/area{}/dev{i}/value", i % 3)),
            1 => Arc::from(format!("site/pump {i}.speed")),
            2 => Arc::from(format!("site//flow*{i}>")),
            _ => Arc::from(format!("caf\u{e9}/{i}%")),
        })
        .collect();
    let mut out = Vec::new();
    for k in 0..per_tag {
        for (t, name) in names.iter().enumerate() {
            let time = t0 + k * 1_000_000;
            out.push(SpoolSample {
                tag: name.clone(),
                value: Value::Double((t * 1_000_000) as f64 + k as f64),
                quality: Quality::GOOD,
                time,
                received: time + 1_000,
            });
        }
    }
    out
}

/// The sink as gateway-rx runs it, on the spool in `dir` opened afresh.
struct SinkRun {
    task: tokio::task::JoinHandle<()>,
    stats: Arc<SinkStats>,
}

impl SinkRun {
    fn start(cfg: &config::rx::Nats, reader: SpoolReader) -> SinkRun {
        let stats = Arc::new(SinkStats::default());
        let task = tokio::spawn(gateway_rx::sinks::nats::run(
            cfg.clone(),
            reader,
            stats.clone(),
        ));
        SinkRun { task, stats }
    }

    /// Opens the spool in `dir` as a restarted receiver does, and starts the sink on it.
    fn reopen(cfg: &config::rx::Nats, dir: &Path) -> SinkRun {
        let (_writer, shared) = SpoolWriter::open(dir, 1 << 30, None).expect("spool");
        SinkRun::start(cfg, SpoolReader::open(dir, shared).expect("spool reader"))
    }

    fn delivered(&self) -> u64 {
        self.stats.delivered.load(Ordering::Relaxed)
    }

    /// Drops the sink where it stands; returns (delivered, server duplicates).
    async fn kill(self) -> (u64, u64) {
        self.task.abort();
        let _ = self.task.await;
        (
            self.stats.delivered.load(Ordering::Relaxed),
            self.stats.server_duplicates.load(Ordering::Relaxed),
        )
    }
}

/// Appends `samples` to the spool over about `over`, in chunks, as the store's writer would.
fn feed(
    mut writer: SpoolWriter,
    samples: Vec<SpoolSample>,
    over: Duration,
) -> tokio::task::JoinHandle<SpoolWriter> {
    tokio::spawn(async move {
        let chunks = 100usize;
        let per = samples.len().div_ceil(chunks);
        for c in samples.chunks(per) {
            assert_eq!(writer.append(c).expect("append"), c.len());
            writer.prepare().expect("prepare");
            writer.publish();
            tokio::time::sleep(over / chunks as u32).await;
        }
        writer
    })
}

/// A message of the stream.
struct Stored {
    subject: String,
    id: String,
    json: serde_json::Value,
}

async fn jetstream(servers: &str) -> async_nats::jetstream::Context {
    let urls: Vec<&str> = servers.split(',').collect();
    let client = async_nats::ConnectOptions::new()
        .connect(urls.as_slice())
        .await
        .expect("connecting to the test NATS cluster");
    async_nats::jetstream::new(client)
}

/// Messages in the stream now (0 while it cannot be reached).
async fn stream_count(js: &async_nats::jetstream::Context, stream: &str) -> u64 {
    match js.get_stream(stream).await {
        Ok(mut s) => s.info().await.map_or(0, |i| i.state.messages),
        Err(_) => 0,
    }
}

/// Every message of the stream, in stream order, read by an ordered consumer.
async fn read_stream(js: &async_nats::jetstream::Context, stream: &str) -> Vec<Stored> {
    let total = stream_count(js, stream).await;
    let s = js.get_stream(stream).await.expect("the stream");
    let consumer = s
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig::default())
        .await
        .expect("ordered consumer");
    let mut messages = consumer.messages().await.expect("messages");
    let mut out = Vec::new();
    while (out.len() as u64) < total {
        let m = tokio::time::timeout(Duration::from_secs(20), messages.next())
            .await
            .expect("the stream's messages in time")
            .expect("a message")
            .expect("a message without error");
        let id = m
            .headers
            .as_ref()
            .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
            .map(|v| v.as_str().to_owned())
            .unwrap_or_default();
        out.push(Stored {
            subject: m.subject.to_string(),
            id,
            json: serde_json::from_slice(&m.payload).expect("JSON payload"),
        });
    }
    out
}

/// What the stream holds against what was sent: (duplicates, problems).
fn check(stored: &[Stored], sent: &[SpoolSample], prefix: &str) -> (usize, Vec<String>) {
    let mut want: BTreeMap<(String, i64), &SpoolSample> = BTreeMap::new();
    for s in sent {
        want.insert((subject(prefix, &s.tag), s.time), s);
    }
    let mut count: BTreeMap<(&str, i64), usize> = BTreeMap::new();
    let mut last: BTreeMap<&str, i64> = BTreeMap::new();
    let mut problems = Vec::new();
    for m in stored {
        let t = source_time(&m.json);
        *count.entry((m.subject.as_str(), t)).or_default() += 1;
        if let Some(prev) = last.insert(m.subject.as_str(), t)
            && prev >= t
            && problems.len() < 20
        {
            problems.push(format!("{}: {t} after {prev}", m.subject));
        }
        match want.get(&(m.subject.clone(), t)) {
            None if problems.len() < 20 => {
                problems.push(format!("unexpected {} at {t}", m.subject))
            }
            None => {}
            Some(s) => {
                let Value::Double(v) = s.value else {
                    unreachable!()
                };
                let wrong = m.json["value"].as_f64() != Some(v)
                    || m.json["type"] != "Double"
                    || m.json["quality"]["name"] != "Good"
                    || m.json.get("late").is_some();
                if wrong && problems.len() < 20 {
                    problems.push(format!("{} at {t}: {}", m.subject, m.json));
                }
                if m.id.is_empty() && problems.len() < 20 {
                    problems.push(format!("{} at {t}: no Nats-Msg-Id", m.subject));
                }
            }
        }
    }
    let missing = want
        .keys()
        .filter(|(s, t)| !count.contains_key(&(s.as_str(), *t)))
        .count();
    if missing > 0 {
        problems.insert(0, format!("{missing} of {} samples missing", want.len()));
    }
    let dups = count.values().map(|n| n - 1).sum();
    (dups, problems)
}

/// Waits until the stream holds `n` messages (or more), then a little longer for stragglers.
async fn wait_for(js: &async_nats::jetstream::Context, stream: &str, n: u64, within: Duration) {
    let started = Instant::now();
    loop {
        let have = stream_count(js, stream).await;
        if have >= n {
            tokio::time::sleep(Duration::from_secs(1)).await;
            return;
        }
        assert!(
            started.elapsed() < within,
            "after {within:?} the stream holds {have} of {n} samples"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn ctl(what: &str, node: &str) {
    let Some(ctl) = service("GATEWAY_TEST_NATS_CTL") else {
        panic!("GATEWAY_TEST_NATS_CTL is not set")
    };
    let ok = std::process::Command::new(&ctl)
        .args([what, node])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "{ctl} {what} {node} failed");
}

/// The number (1 to 3) of the node leading `stream` now.
async fn leader(js: &async_nats::jetstream::Context, stream: &str) -> Option<String> {
    let mut s = js.get_stream(stream).await.ok()?;
    let info = s.info().await.ok()?;
    let name = info.cluster.as_ref()?.leader.clone()?;
    name.strip_prefix('n').map(str::to_owned)
}

async fn delete_stream(js: &async_nats::jetstream::Context, stream: &str) {
    let _ = js.delete_stream(stream).await;
}

/// Samples reach the stream on their tags' subjects, escaped where NATS reserves characters,
/// with the MQTT sink's payload and a message id each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_every_sample_on_its_subject_with_its_payload() {
    let Some(servers) = service("GATEWAY_TEST_NATS") else {
        return;
    };
    let _serial = SERIAL.lock().await;
    init_tracing();
    let (stream, prefix) = (unique("GWSUBJ"), unique("gwsubj"));
    let tmp = tempfile::tempdir().expect("temporary directory");
    let spool = tmp.path().join("spool");
    let sent = history(8, 25);
    let (mut w, shared) = SpoolWriter::open(&spool, 1 << 30, None).expect("spool");
    assert_eq!(w.append(&sent).expect("append"), sent.len());
    w.prepare().expect("prepare");
    w.publish();
    let run = SinkRun::start(
        &nats_cfg(&servers, &stream, &prefix, tmp.path()),
        SpoolReader::open(&spool, shared).expect("reader"),
    );
    let js = jetstream(&servers).await;
    wait_for(&js, &stream, sent.len() as u64, Duration::from_secs(60)).await;
    let stored = read_stream(&js, &stream).await;
    let (dups, problems) = check(&stored, &sent, &prefix);
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(dups, 0);
    let subjects: std::collections::BTreeSet<&str> =
        stored.iter().map(|m| m.subject.as_str()).collect();
    for s in [
        format!("{prefix}.site.area0.dev0.value"),
        format!("{prefix}.site.pump%201%2Espeed"),
        format!("{prefix}.site.%.flow%2A2%3E"),
        format!("{prefix}.caf%C3%A9.3%25"),
    ] {
        assert!(subjects.contains(s.as_str()), "{s} not in {subjects:?}");
    }
    let first = stored
        .iter()
        .find(|m| m.subject == format!("{prefix}.site.area0.dev0.value"))
        .expect("a sample");
    assert_eq!(first.id, "1700000000000000000:Double:site.area0.dev0.value");
    assert_eq!(
        first.json["source_time"], "2023-11-14T22:13:20.000000000Z",
        "{}",
        first.json
    );
    assert_eq!(run.delivered(), sent.len() as u64);
    run.kill().await;
    delete_stream(&js, &stream).await;
}

/// The sink killed mid-batch and restarted, again and again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_exactly_once_through_sink_kills() {
    let Some(servers) = service("GATEWAY_TEST_NATS") else {
        return;
    };
    let _serial = SERIAL.lock().await;
    init_tracing();
    let (stream, prefix) = (unique("GWKILL"), unique("gwkill"));
    let tmp = tempfile::tempdir().expect("temporary directory");
    let spool = tmp.path().join("spool");
    let sent = history(40, 150);
    let total = sent.len() as u64;
    {
        let (mut w, _) = SpoolWriter::open(&spool, 1 << 30, None).expect("spool");
        assert_eq!(w.append(&sent).expect("append"), sent.len());
        w.prepare().expect("prepare");
        w.publish();
    }
    let cfg = nats_cfg(&servers, &stream, &prefix, tmp.path());
    let js = jetstream(&servers).await;
    let kills = 6u64;
    let (mut acked, mut deduped) = (0u64, 0u64);
    for round in 1..=kills {
        let run = SinkRun::reopen(&cfg, &spool);
        let started = Instant::now();
        // Killed as soon as the stream holds more than the sink saw acknowledged: a batch is
        // in flight, partly stored.
        while (acked + run.delivered() < total * round / (kills + 2)
            || stream_count(&js, &stream).await <= acked + run.delivered())
            && started.elapsed() < Duration::from_secs(30)
        {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let (d, dup) = run.kill().await;
        acked += d;
        deduped += dup;
    }
    let run = SinkRun::reopen(&cfg, &spool);
    wait_for(&js, &stream, total, Duration::from_secs(60)).await;
    while run.delivered() + acked < total {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stored = read_stream(&js, &stream).await;
    let (dups, problems) = check(&stored, &sent, &prefix);
    let (_, last_dup) = run.kill().await;
    deduped += last_dup;
    eprintln!(
        "FAULT sink killed {kills} times | sent {total} | in the stream {} | duplicates {dups} \
         (the server dropped {deduped} re-published by id)",
        stored.len()
    );
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(dups, 0, "every sample exactly once");
    assert!(
        deduped > 0,
        "the kills fell mid-batch: the server dropped re-published samples"
    );
    delete_stream(&js, &stream).await;
}

/// A sink draining a spool that is fed over `feed_for`, with a fifth of it delivered: the
/// moment the cluster-side fault tests strike.
struct Flowing {
    stream: String,
    prefix: String,
    sent: Vec<SpoolSample>,
    run: SinkRun,
    feeder: tokio::task::JoinHandle<SpoolWriter>,
    started: Instant,
    _dir: tempfile::TempDir,
}

impl Flowing {
    async fn start(servers: &str, name: &str, per_tag: i64, feed_for: Duration) -> Flowing {
        let (stream, prefix) = (unique(&name.to_uppercase()), unique(name));
        let dir = tempfile::tempdir().expect("temporary directory");
        let spool = dir.path().join("spool");
        let sent = history(40, per_tag);
        let (writer, shared) = SpoolWriter::open(&spool, 1 << 30, None).expect("spool");
        let run = SinkRun::start(
            &nats_cfg(servers, &stream, &prefix, dir.path()),
            SpoolReader::open(&spool, shared).expect("reader"),
        );
        let feeder = feed(writer, sent.clone(), feed_for);
        let started = Instant::now();
        let total = sent.len() as u64;
        while run.delivered() < total / 5 && started.elapsed() < Duration::from_secs(30) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Flowing {
            stream,
            prefix,
            sent,
            run,
            feeder,
            started,
            _dir: dir,
        }
    }

    fn total(&self) -> u64 {
        self.sent.len() as u64
    }

    /// Waits for the whole feed to be in the stream, then stops the sink and deletes the
    /// stream; reports and asserts every sample exactly once. `fault` names what was done.
    async fn finish(self, js: &async_nats::jetstream::Context, within: Duration, fault: &str) {
        let total = self.total();
        let _writer = self.feeder.await.expect("feeder");
        wait_for(js, &self.stream, total, within).await;
        let stored = read_stream(js, &self.stream).await;
        let (dups, problems) = check(&stored, &self.sent, &self.prefix);
        let failures = self.run.stats.failures.load(Ordering::Relaxed);
        let (_, deduped) = self.run.kill().await;
        eprintln!(
            "FAULT {fault} | sent {total} | in the stream {} | duplicates {dups} (failed batches \
             {failures}, dropped by id {deduped}; {:.0?} in all)",
            stored.len(),
            self.started.elapsed()
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(dups, 0, "every sample exactly once");
        delete_stream(js, &self.stream).await;
    }
}

/// Samples flowing while the node leading the stream is killed (SIGKILL) and restarted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_exactly_once_through_a_node_kill() {
    let Some(servers) = service("GATEWAY_TEST_NATS") else {
        return;
    };
    let _serial = SERIAL.lock().await;
    init_tracing();
    let js = jetstream(&servers).await;
    let flow = Flowing::start(&servers, "gwnode", 200, Duration::from_secs(10)).await;
    let node = leader(&js, &flow.stream)
        .await
        .unwrap_or_else(|| "1".into());
    let at = flow.run.delivered();
    ctl("kill", &node);
    tokio::time::sleep(Duration::from_secs(3)).await;
    ctl("start", &node);
    let fault = format!("node n{node} (the stream's leader) killed for 3 s at {at} delivered");
    flow.finish(&js, Duration::from_secs(90), &fault).await;
}

/// Samples flowing while the whole cluster is stopped for 30 s and started again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_exactly_once_through_a_cluster_outage() {
    let Some(servers) = service("GATEWAY_TEST_NATS") else {
        return;
    };
    let _serial = SERIAL.lock().await;
    init_tracing();
    let flow = Flowing::start(&servers, "gwdown", 150, Duration::from_secs(8)).await;
    ctl("stop", "all");
    // An acknowledgement that left a server just before it stopped is counted by now.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let at = flow.run.delivered();
    tokio::time::sleep(Duration::from_secs(30)).await;
    let during = flow.run.delivered();
    ctl("start", "all");
    assert_eq!(
        during, at,
        "nothing is acknowledged while the cluster is down"
    );
    let js = jetstream(&servers).await;
    let fault = format!("whole cluster stopped 30 s at {at} delivered");
    flow.finish(&js, Duration::from_secs(120), &fault).await;
}

/// Samples per second into a replicas-3 stream through the whole receiving path (the store's
/// writer → the NATS spool → the sink → the cluster), as a ratio to the SQLite store's rate in
/// the same run: the store takes the batches as fast as its writer goes (feeding the spool in
/// each transaction), while the sink drains the spool. `GATEWAY_BENCH_NATS_SAMPLES` (default
/// 100,000) over 1,000 tags; `GATEWAY_BENCH_NATS_IN_FLIGHT` sets `max_in_flight` (default 256).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_throughput() {
    use gateway_rx::state::State;
    use gateway_rx::store::HistoryStore;
    use protocol::catalogue::Catalogue;
    use protocol::message::HistoryBatch;
    use protocol::model::{ModbusAddress, Sample, SourceAddress, TagInfo, ValueType};
    let Some(servers) = service("GATEWAY_TEST_NATS") else {
        return;
    };
    let _serial = SERIAL.lock().await;
    init_tracing();
    let n: u64 = std::env::var("GATEWAY_BENCH_NATS_SAMPLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let in_flight: u32 = std::env::var("GATEWAY_BENCH_NATS_IN_FLIGHT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    const TAGS: u32 = 1000;
    const PER_BATCH: u64 = 75;
    let (stream, prefix) = (unique("GWBENCH"), unique("gwbench"));
    let tmp = tempfile::tempdir().expect("temporary directory");
    let list: Vec<String> = servers.split(',').map(|s| format!("\"{s}\"")).collect();
    let cfg = parse_rx(&format!(
        "[link]\ninsecure_no_key = true\nbind = \"127.0.0.1:5600\"\n[store]\npath = {}\n\
         [nats]\nservers = [{}]\nstream = \"{stream}\"\nsubject_prefix = \"{prefix}\"\n\
         replicas = 3\nmax_in_flight = {in_flight}\n",
        toml_path(&tmp.path().join("history.sqlite")),
        list.join(", ")
    ));
    let cat = Catalogue::new(
        (0..TAGS)
            .map(|i| TagInfo {
                name: format!("site/area{}/dev{}/value", i / 100, i % 100),
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
            .collect(),
    );
    let hash = cat.hash();
    let state = Arc::new(State::new());
    state.apply_catalogue(cat);
    let (feed, sinks) = gateway_rx::sinks::start(&cfg, state.clone()).expect("sinks");
    let store = HistoryStore::start_with_sinks(cfg.store.clone(), state, feed).expect("store");
    let submit = store.sink().expect("the store's queue");
    let t0 = 1_700_000_000_000_000_000i64;
    let started = Instant::now();
    let mut seq = 0u64;
    while seq < n {
        let k = PER_BATCH.min(n - seq);
        // Within the store's queue (4,096 batches), so the run measures its writer, not drops.
        while seq / PER_BATCH > store.stats().samples_inserted / PER_BATCH + 2000 {
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
        submit.submit(HistoryBatch {
            catalogue: hash,
            log: 1,
            first_seq: seq,
            head_seq: seq + k,
            oldest_seq: 0,
            samples: (seq..seq + k)
                .map(|i| Sample {
                    tag: (i % u64::from(TAGS)) as u32,
                    value: Value::Double(i as f64 * 0.25),
                    quality: Quality::GOOD,
                    time: t0 + (i / u64::from(TAGS)) as i64 * 1_000_000_000,
                })
                .collect(),
        });
        seq += k;
    }
    while store.stats().samples_inserted < n {
        assert!(started.elapsed() < Duration::from_secs(300), "the store");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let store_secs = started.elapsed().as_secs_f64();
    let delivered = || sinks[0].stats().delivered;
    while delivered() < n {
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "{} of {n} in the stream",
            delivered()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let nats_secs = started.elapsed().as_secs_f64();
    let (store_rate, nats_rate) = (n as f64 / store_secs, n as f64 / nats_secs);
    eprintln!(
        "BENCH {n} samples over {TAGS} tags: SQLite store {store_rate:.0} samples/s; \
         NATS stream (replicas 3, max_in_flight {}) {nats_rate:.0} samples/s = {:.2} of the \
         store's rate",
        cfg.nats.as_ref().map_or(0, |c| c.max_in_flight),
        nats_rate / store_rate
    );
    let js = jetstream(&servers).await;
    assert_eq!(stream_count(&js, &stream).await, n);
    drop(sinks);
    delete_stream(&js, &stream).await;
}

/// Samples a healed gap brings after newer ones (older than what their tags had) are
/// published too, each once; the stream holds them after the newer ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_late_samples_are_published() {
    let Some(servers) = service("GATEWAY_TEST_NATS") else {
        return;
    };
    let _serial = SERIAL.lock().await;
    init_tracing();
    let (stream, prefix) = (unique("GWLATE"), unique("gwlate"));
    let tmp = tempfile::tempdir().expect("temporary directory");
    let spool = tmp.path().join("spool");
    let mut sent = history(8, 20);
    let late: Vec<SpoolSample> = sent
        .iter()
        .filter(|s| (s.time / 1_000_000) % 20 < 10)
        .map(|s| SpoolSample {
            time: s.time + 500_000,
            value: match s.value {
                Value::Double(v) => Value::Double(v + 0.5),
                ref v => v.clone(),
            },
            ..s.clone()
        })
        .collect();
    let n_late = late.len();
    sent.extend(late);
    let (mut w, shared) = SpoolWriter::open(&spool, 1 << 30, None).expect("spool");
    assert_eq!(w.append(&sent).expect("append"), sent.len());
    w.prepare().expect("prepare");
    w.publish();
    let run = SinkRun::start(
        &nats_cfg(&servers, &stream, &prefix, tmp.path()),
        SpoolReader::open(&spool, shared).expect("reader"),
    );
    let js = jetstream(&servers).await;
    wait_for(&js, &stream, sent.len() as u64, Duration::from_secs(60)).await;
    let stored = read_stream(&js, &stream).await;
    let (dups, problems) = check(&stored, &sent, &prefix);
    // Out of source-time order by design: the late samples follow the newer ones.
    let disorder = problems.iter().filter(|p| p.contains(" after ")).count();
    let other: Vec<&String> = problems.iter().filter(|p| !p.contains(" after ")).collect();
    assert!(other.is_empty(), "{other:?}");
    assert!(disorder > 0, "the late samples come after newer ones");
    assert_eq!(dups, 0);
    assert_eq!(stored.len(), sent.len());
    eprintln!(
        "{} samples, {n_late} of them late, all in the stream once",
        sent.len()
    );
    run.kill().await;
    delete_stream(&js, &stream).await;
}
