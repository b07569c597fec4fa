//! The IT-side sinks end to end: simulated PLC → gateway-tx (with a history buffer) →
//! gateway-rx (store → spools) → MQTT broker / PostgreSQL, checked against every sample the
//! transmitter's history buffer holds.
//!
//! - An embedded broker (rumqttd) always: every value in order per tag, retained last values
//!   for a late subscriber, and a broker outage (a TCP proxy cut in front of it) spooled and
//!   drained in order.
//! - A real Mosquitto when `GATEWAY_TEST_MQTT` (`host:port`) is set, a real PostgreSQL when
//!   `GATEWAY_TEST_PG_URL` is (`.ci/services` starts both and exports them). Without them these
//!   tests print why and pass, except under `CI=true`, where a missing service fails.
//!   `GATEWAY_TEST_PG_CTL` (a command taking `stop` or `start`) lets the PostgreSQL test stop
//!   and restart the server in the middle of a run.

#[allow(dead_code)] // the shared helpers serve several test files
mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::peers::embedded_broker;
use common::peers::{
    PersistentMosquitto, Rows, Seen, SessionSubscriber, json_value, pg_addr, pg_client, pg_rows,
    pg_table, same_value, service, source_time, unique,
};
use common::toml_path;
use common::{PROCESS_PERIOD, init_tracing, parse_rx, parse_tx, rx_toml_with, tx_toml_with};
use gateway_rx::Receiver;
use gateway_tx::Transmitter;
use protocol::model::Value;
use tests::plc_sim::PlcSim;
use tokio::net::{TcpListener, TcpStream};

// --- A TCP proxy that can cut its connections, standing for a broker or database outage ---------

struct Proxy {
    addr: SocketAddr,
    up: Arc<AtomicBool>,
    cut: tokio::sync::watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("proxy listen");
        let addr = listener.local_addr().expect("proxy address");
        let up = Arc::new(AtomicBool::new(true));
        let (cut, _) = tokio::sync::watch::channel(0u64);
        let (up2, cut2) = (up.clone(), cut.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    continue;
                };
                if !up2.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let mut cut_rx = cut2.subscribe();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut_rx.changed() => {}
                    }
                });
            }
        });
        Proxy {
            addr,
            up,
            cut,
            task,
        }
    }

    /// Drops every connection and refuses new ones.
    fn down(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.cut.send_modify(|n| *n += 1);
    }

    fn up(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// --- The chain ----------------------------------------------------------------------------------

struct Chain {
    tx: Option<Transmitter>,
    rx: Option<Receiver>,
    plc: PlcSim,
    dir: tempfile::TempDir,
}

impl Chain {
    /// `rx_sinks`: the RX config's sink tables.
    async fn start(rx_sinks: &str) -> Chain {
        Chain::start_with(rx_sinks, true).await
    }

    /// `history`: the transmitter has a history buffer (else it sends live values only).
    async fn start_with(rx_sinks: &str, history: bool) -> Chain {
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
                "\n[store]\npath = {}\n{rx_sinks}\n",
                toml_path(&dir.path().join("rx/history.sqlite"))
            ),
        );
        let rx = Receiver::start(parse_rx(&rx_toml))
            .await
            .expect("gateway-rx");
        let tx_toml = tx_toml_with(
            rx.link_addr,
            plc.local_addr(),
            None,
            common::POLL_MS,
            &if history {
                format!(
                    "\n[history]\ndir = {}\ncarousel_window_s = 10\nmax_age_s = 3600\n",
                    toml_path(&dir.path().join("tx-history"))
                )
            } else {
                String::new()
            },
        );
        let tx = Transmitter::start(parse_tx(&tx_toml))
            .await
            .expect("gateway-tx");
        Chain {
            tx: Some(tx),
            rx: Some(rx),
            plc,
            dir,
        }
    }

    fn rx(&self) -> &Receiver {
        self.rx.as_ref().expect("receiver running")
    }

    fn sink(&self, name: &str) -> gateway_rx::sinks::SinkStatsSnapshot {
        self.rx()
            .sink_stats()
            .into_iter()
            .find(|(n, _)| *n == name)
            .map(|(_, s)| s)
            .expect("the sink is configured")
    }

    /// Every sample in the transmitter's history buffer.
    fn tx_rows(&self) -> Rows {
        let records = gateway_tx::history::log::read_records(&self.dir.path().join("tx-history"))
            .expect("TX log");
        records
            .into_iter()
            .map(|(_, name, s)| {
                (
                    (name.expect("TX names are kept"), s.time),
                    (s.value, s.quality.0),
                )
            })
            .collect()
    }

    /// Stops the process changing, lets the last polls land, and returns the buffer.
    async fn stop_process(&mut self) -> Rows {
        self.plc.stop_process();
        tokio::time::sleep(Duration::from_millis(600)).await;
        self.tx_rows()
    }
}

// --- MQTT ---------------------------------------------------------------------------------------

/// A subscriber to `<prefix>/#` collecting everything it receives, in order.
struct Subscriber {
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Subscriber {
    async fn start(broker: &str, prefix: &str, id: &str) -> Subscriber {
        let (host, port) = broker.rsplit_once(':').expect("host:port");
        let mut o = rumqttc::MqttOptions::new(id, host, port.parse().expect("port"));
        o.set_keep_alive(Duration::from_secs(30));
        o.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut eventloop) = rumqttc::AsyncClient::new(o, 100);
        client
            .subscribe(format!("{prefix}/#"), rumqttc::QoS::AtLeastOnce)
            .await
            .expect("subscribe");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (seen2, suback) = (seen.clone(), Arc::new(tokio::sync::Notify::new()));
        let suback2 = suback.clone();
        let task = tokio::spawn(async move {
            let _client = client;
            loop {
                match eventloop.poll().await {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                        let json = serde_json::from_slice(&p.payload).unwrap_or_default();
                        seen2.lock().expect("lock").push(Seen {
                            topic: p.topic,
                            retained: p.retain,
                            json,
                        });
                    }
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))) => {
                        suback2.notify_one();
                    }
                    Ok(_) => {}
                    Err(e) => panic!("test subscriber lost its broker: {e}"),
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), suback.notified())
            .await
            .expect("SUBACK");
        Subscriber { seen, task }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn topic_of(prefix: &str, tag: &str) -> String {
    format!("{prefix}/{tag}")
}

/// Checks that the subscriber saw every row, per tag in source-time order (a value re-sent
/// after a cut connection may repeat, in order: QoS 1 is at least once). Returns how many
/// messages repeated one already seen.
fn check_in_order(seen: &[Seen], want: &Rows, prefix: &str) -> Result<usize, String> {
    let mut by_topic: BTreeMap<&str, Vec<(i64, &serde_json::Value)>> = BTreeMap::new();
    for s in seen.iter().filter(|s| !s.retained) {
        by_topic
            .entry(s.topic.as_str())
            .or_default()
            .push((source_time(&s.json), &s.json));
    }
    type Wanted<'a> = Vec<(i64, &'a (Value, u32))>;
    let mut want_by_topic: BTreeMap<String, Wanted<'_>> = BTreeMap::new();
    for ((tag, t), v) in want {
        want_by_topic
            .entry(topic_of(prefix, tag))
            .or_default()
            .push((*t, v));
    }
    let mut repeats = 0usize;
    for (topic, rows) in &want_by_topic {
        let got = by_topic.get(topic.as_str()).cloned().unwrap_or_default();
        // First sightings only; a repeat must be of something already seen.
        let mut first: Vec<(i64, &serde_json::Value)> = Vec::new();
        let mut seen_times = std::collections::BTreeSet::new();
        for (t, j) in got {
            if seen_times.insert(t) {
                first.push((t, j));
            } else {
                repeats += 1;
            }
        }
        if first.len() < rows.len() {
            return Err(format!(
                "{topic}: {} of {} values seen so far",
                first.len(),
                rows.len()
            ));
        }
        if let Some(w) = first.windows(2).find(|w| w[0].0 >= w[1].0) {
            return Err(format!("{topic}: out of order: {} then {}", w[0].0, w[1].0));
        }
        for ((t, j), (wt, (wv, wq))) in first.iter().zip(rows) {
            if *t != *wt || !same_value(&j["value"], wv) || j["quality"]["code"] != *wq {
                return Err(format!(
                    "{topic}: saw {j} at {t}, the buffer has {wv:?} (quality {wq:#x}) at {wt}"
                ));
            }
        }
        if first.len() > rows.len() {
            return Err(format!(
                "{topic}: {} values, the buffer has {}",
                first.len(),
                rows.len()
            ));
        }
    }
    Ok(repeats)
}

async fn wait_all_in_order(sub: &Subscriber, want: &Rows, prefix: &str, within: Duration) -> usize {
    let started = Instant::now();
    loop {
        match check_in_order(&sub.seen(), want, prefix) {
            Ok(repeats) => return repeats,
            Err(e) if started.elapsed() > within => panic!("after {within:?}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(300)).await,
        }
    }
}

/// A late subscriber gets exactly one retained message per tag: its last value.
async fn check_retained(broker: &str, want: &Rows, prefix: &str) {
    let mut last: BTreeMap<String, (i64, &(Value, u32))> = BTreeMap::new();
    for ((tag, t), v) in want {
        last.insert(topic_of(prefix, tag), (*t, v));
    }
    let late = Subscriber::start(broker, prefix, &unique("late")).await;
    let started = Instant::now();
    loop {
        let seen = late.seen();
        let retained: BTreeMap<&str, &Seen> = seen
            .iter()
            .filter(|s| s.retained)
            .map(|s| (s.topic.as_str(), s))
            .collect();
        let ok = last.iter().all(|(topic, (t, (v, q)))| {
            retained.get(topic.as_str()).is_some_and(|s| {
                source_time(&s.json) == *t
                    && same_value(&s.json["value"], v)
                    && s.json["quality"]["code"] == *q
            })
        });
        if ok {
            assert_eq!(retained.len(), last.len(), "one retained value per tag");
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "retained values for a late subscriber: want {} tags' last values, got {:?}",
            last.len(),
            retained
                .values()
                .map(|s| (&s.topic, &s.json))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn mqtt_table(broker: &str, prefix: &str) -> String {
    let (host, port) = broker.rsplit_once(':').expect("host:port");
    format!(
        "[mqtt]\nhost = \"{host}\"\nport = {port}\nclient_id = \"{}\"\ntopic_prefix = \"{prefix}\"\nqos = 1\n",
        unique("gw")
    )
}

/// Every value reaches a subscriber, in order per tag; a late subscriber gets the retained
/// last values. `broker`: `host:port`.
async fn every_value_in_order(broker: &str) {
    let prefix = unique("gwtest");
    every_value_in_order_with(broker, &mqtt_table(broker, &prefix), &prefix).await;
}

/// The same with the publisher configured by `table`; the subscribers use `broker`.
async fn every_value_in_order_with(broker: &str, table: &str, prefix: &str) {
    let prefix = prefix.to_owned();
    let sub = Subscriber::start(broker, &prefix, &unique("sub")).await;
    let mut chain = Chain::start(table).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let want = chain.stop_process().await;
    assert!(want.len() > 100, "the buffer holds {} samples", want.len());
    let repeats = wait_all_in_order(&sub, &want, &prefix, Duration::from_secs(30)).await;
    assert_eq!(repeats, 0, "nothing repeats without a cut connection");
    check_retained(broker, &want, &prefix).await;
    let s = chain.sink("mqtt");
    assert_eq!(s.overflow_samples, 0);
    assert_eq!(
        s.live_published, 0,
        "with history, live values are left to it"
    );
    eprintln!(
        "{} samples in order (subscribers on {broker}); sink {s:?}",
        want.len()
    );
    chain.tx = None;
    chain.rx = None;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_embedded_every_value_in_order_and_retained() {
    let broker = embedded_broker(20 * 1024);
    every_value_in_order(&broker.to_string()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_embedded_broker_outage_spools_then_drains_in_order() {
    let broker = embedded_broker(20 * 1024);
    let proxy = Proxy::start(broker).await;
    let prefix = unique("gwtest");
    // The subscriber talks to the broker itself; only the publisher's path is cut.
    let sub = Subscriber::start(&broker.to_string(), &prefix, &unique("sub")).await;
    let mut chain = Chain::start(&mqtt_table(&proxy.addr.to_string(), &prefix)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(chain.sink("mqtt").connected);
    proxy.down();
    let cut_at = chain.sink("mqtt").delivered;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let during = chain.sink("mqtt");
    assert!(!during.connected, "{during:?}");
    assert!(
        during.appended > cut_at + 100,
        "history kept coming into the spool: {during:?}"
    );
    let delivered_during = during.delivered;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(chain.sink("mqtt").delivered, delivered_during);
    proxy.up();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let want = chain.stop_process().await;
    let repeats = wait_all_in_order(&sub, &want, &prefix, Duration::from_secs(60)).await;
    let after = chain.sink("mqtt");
    assert!(after.connects >= 2, "{after:?}");
    assert_eq!(after.overflow_samples, 0);
    eprintln!(
        "{} samples in order through a broker outage; {} repeated after the cut; sink {after:?}",
        want.len(),
        repeats
    );
    check_retained(&broker.to_string(), &want, &prefix).await;
}

/// Without a history stream (a transmitter without `[history]`), the publisher sends each tag's
/// live value, in source-time order per tag, retained.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_embedded_live_values_without_history() {
    let broker = embedded_broker(20 * 1024).to_string();
    let prefix = unique("gwtest");
    let sub = Subscriber::start(&broker, &prefix, &unique("sub")).await;
    let mut chain = Chain::start_with(&mqtt_table(&broker, &prefix), false).await;
    let grace = gateway_rx::sinks::mqtt::LIVE_GRACE;
    tokio::time::sleep(grace + Duration::from_secs(3)).await;
    chain.plc.stop_process();
    // The last values, as the receiver holds them, once nothing changes them any more (the
    // transmitter re-reports values with new source times as it polls).
    chain.tx = None;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let current: BTreeMap<String, (i64, serde_json::Value)> = {
        let view = chain.rx().state.view();
        let cat = view.catalogue().expect("catalogue");
        cat.tags()
            .iter()
            .enumerate()
            .filter_map(|(i, t)| {
                let v = view.value(i as u32)?;
                Some((
                    topic_of(&prefix, &t.name),
                    (v.source_time, json_value(v.value)),
                ))
            })
            .collect()
    };
    assert!(!current.is_empty());
    let started = Instant::now();
    loop {
        let seen = sub.seen();
        let mut by_topic: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
        for s in &seen {
            by_topic
                .entry(s.topic.as_str())
                .or_default()
                .push(source_time(&s.json));
        }
        for (topic, times) in &by_topic {
            assert!(
                times.windows(2).all(|w| w[0] < w[1]),
                "{topic}: not in source-time order: {times:?}"
            );
        }
        let last_ok = current.iter().all(|(topic, (t, _))| {
            by_topic
                .get(topic.as_str())
                .and_then(|v| v.last())
                .is_some_and(|last| last == t)
        });
        if last_ok {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "live values: want the last of {} tags, differing (want, last seen): {:?}",
            current.len(),
            current
                .iter()
                .filter_map(|(topic, (t, _))| {
                    let last = by_topic.get(topic.as_str()).and_then(|v| v.last());
                    (last != Some(t)).then_some((topic, t, last))
                })
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let s = chain.sink("mqtt");
    assert!(s.live_published >= current.len() as u64, "{s:?}");
    assert_eq!(s.appended, 0, "no history without a history stream");
    eprintln!(
        "live values of {} tags published; sink {s:?}",
        current.len()
    );
}

/// TLS (rustls, the CI's throwaway CA) with a user name and password to a real Mosquitto
/// (`GATEWAY_TEST_MQTT_TLS` and the other `GATEWAY_TEST_MQTT_*` from `.ci/services`); the
/// subscribers use the plain listener of the same broker (`GATEWAY_TEST_MQTT`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_mosquitto_tls_with_user() {
    use std::os::unix::fs::PermissionsExt;
    let (Some(plain), Some(tls)) = (
        service("GATEWAY_TEST_MQTT"),
        service("GATEWAY_TEST_MQTT_TLS"),
    ) else {
        return;
    };
    let var = |v: &str| std::env::var(v).unwrap_or_else(|_| panic!("{v} (set by .ci/services)"));
    let (ca, user, password) = (
        var("GATEWAY_TEST_MQTT_CA"),
        var("GATEWAY_TEST_MQTT_USER"),
        var("GATEWAY_TEST_MQTT_PASSWORD"),
    );
    let dir = tempfile::tempdir().expect("temporary directory");
    let pw = dir.path().join("mqtt.pass");
    std::fs::write(&pw, format!("{password}\n")).expect("password file");
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let prefix = unique("gwtls");
    let table = format!(
        "{}tls = true\nca_file = {}\nusername = \"{user}\"\npassword_file = {}\n",
        mqtt_table(&tls, &prefix),
        toml_path(Path::new(&ca)),
        toml_path(&pw)
    );
    every_value_in_order_with(&plain, &table, &prefix).await;
}

/// The same against a real Mosquitto (`GATEWAY_TEST_MQTT=host:port`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_mosquitto_every_value_in_order_and_retained() {
    let Some(broker) = service("GATEWAY_TEST_MQTT") else {
        return;
    };
    every_value_in_order(&broker).await;
}

// --- MQTT: late samples, restarts, exactly once -------------------------------------------------

/// (topic, source time) → (value, late).
type Want = BTreeMap<(String, i64), (f64, bool)>;

/// History as a healed gap leaves it in a spool: each tag's samples in source-time order, then
/// older ones the gap held (late: each is older than what its tag already had), then newer
/// ones again. Returns the samples in spool order and what a subscriber must get.
fn history_with_late(
    prefix: &str,
    tags: usize,
    per_tag: i64,
) -> (Vec<gateway_rx::sinks::spool::SpoolSample>, Want) {
    let t0 = 1_700_000_000_000_000_000i64;
    let names: Vec<Arc<str>> = (0..tags)
        .map(|i| Arc::from(format!("site/area{}/dev{i}/value", i % 3)))
        .collect();
    let mut order: Vec<(usize, i64)> = Vec::new();
    for k in 0..per_tag {
        order.extend((0..tags).map(|t| (t, 2 * k)));
    }
    for k in per_tag / 4..per_tag / 2 {
        order.extend((0..tags).map(|t| (t, 2 * k + 1)));
    }
    for k in per_tag..per_tag * 3 / 2 {
        order.extend((0..tags).map(|t| (t, 2 * k)));
    }
    let mut newest: BTreeMap<usize, i64> = BTreeMap::new();
    let mut samples = Vec::new();
    let mut want = Want::new();
    for (t, step) in order {
        let time = t0 + step * 1_000_000;
        let value = (t * 100_000) as f64 + step as f64 * 0.5;
        let late = newest.get(&t).is_some_and(|n| time < *n);
        if !late {
            newest.insert(t, time);
        }
        samples.push(gateway_rx::sinks::spool::SpoolSample {
            tag: names[t].clone(),
            value: Value::Double(value),
            quality: protocol::model::Quality::GOOD,
            time,
            received: time + 1_000,
        });
        want.insert((topic_of(prefix, &names[t]), time), (value, late));
    }
    (samples, want)
}

fn write_spool(dir: &Path, samples: &[gateway_rx::sinks::spool::SpoolSample]) {
    let (mut w, _) =
        gateway_rx::sinks::spool::SpoolWriter::open(dir, 1 << 30, None).expect("spool");
    assert_eq!(w.append(samples).expect("append"), samples.len());
    w.prepare().expect("prepare");
    w.publish();
}

/// The `[mqtt]` config of a sink publishing under `prefix` to `broker` at `qos`.
fn sink_cfg(broker: &str, prefix: &str, qos: u8, dir: &Path) -> config::rx::Mqtt {
    let (host, port) = broker.rsplit_once(':').expect("host:port");
    parse_rx(&format!(
        "[link]\ninsecure_no_key = true\nbind = \"127.0.0.1:5600\"\n[store]\npath = {}\n[mqtt]\nhost = \"{host}\"\n\
         port = {port}\nclient_id = \"{}\"\ntopic_prefix = \"{prefix}\"\nqos = {qos}\nlive = false\n",
        toml_path(&dir.join("history.sqlite")),
        unique("gw")
    ))
    .mqtt
    .expect("[mqtt]")
}

/// The MQTT sink as a receiver process runs it: its spool opened afresh from `dir`.
struct SinkRun {
    task: tokio::task::JoinHandle<()>,
    stats: Arc<gateway_rx::sinks::SinkStats>,
}

impl SinkRun {
    fn start(cfg: &config::rx::Mqtt, dir: &Path) -> SinkRun {
        use gateway_rx::sinks::spool::{SpoolReader, SpoolWriter};
        let (_writer, shared) = SpoolWriter::open(dir, 1 << 30, None).expect("spool");
        let reader = SpoolReader::open(dir, shared).expect("spool reader");
        let stats = Arc::new(gateway_rx::sinks::SinkStats::default());
        let task = tokio::spawn(gateway_rx::sinks::mqtt::run(
            cfg.clone(),
            reader,
            Arc::new(gateway_rx::state::State::new()),
            stats.clone(),
            Arc::new(AtomicBool::new(true)),
        ));
        SinkRun { task, stats }
    }

    fn delivered(&self) -> u64 {
        self.stats.delivered.load(Ordering::Relaxed)
    }

    /// Kills the sink where it stands (no shutdown path runs, as with SIGKILL); returns what
    /// it had delivered.
    async fn kill(self) -> u64 {
        self.task.abort();
        let delivered = self.stats.clone();
        let _ = self.task.await;
        delivered.delivered.load(Ordering::Relaxed)
    }
}

/// What a subscriber saw (retained messages aside) against `want`: how many messages repeated
/// one seen already, and what is wrong (missing, unexpected, different).
fn compare(seen: &[Seen], want: &Want) -> (usize, Vec<String>) {
    let mut count: BTreeMap<(&str, i64), usize> = BTreeMap::new();
    let mut problems = Vec::new();
    for s in seen.iter().filter(|s| !s.retained) {
        let t = source_time(&s.json);
        *count.entry((s.topic.as_str(), t)).or_default() += 1;
        match want.get(&(s.topic.clone(), t)) {
            None => problems.push(format!("unexpected {} at {t}: {}", s.topic, s.json)),
            Some((v, late)) => {
                if s.json["value"].as_f64() != Some(*v) || (s.json["late"] == true) != *late {
                    problems.push(format!(
                        "{} at {t}: {} (want value {v}, late {late})",
                        s.topic, s.json
                    ));
                }
            }
        }
    }
    let missing: Vec<&(String, i64)> = want
        .keys()
        .filter(|(topic, t)| !count.contains_key(&(topic.as_str(), *t)))
        .collect();
    if !missing.is_empty() {
        let late = missing.iter().filter(|k| want[**k].1).count();
        problems.insert(
            0,
            format!(
                "{} of {} samples missing ({late} of them late), e.g. {:?}",
                missing.len(),
                want.len(),
                &missing[..missing.len().min(3)]
            ),
        );
    }
    let repeats = count.values().map(|n| n - 1).sum();
    (repeats, problems)
}

/// Waits until `seen()` holds every sample of `want`; then a little longer, for repeats.
async fn wait_for_all(seen: impl Fn() -> Vec<Seen>, want: &Want, within: Duration) -> Vec<Seen> {
    let started = Instant::now();
    loop {
        let (_, problems) = compare(&seen(), want);
        if !problems.iter().any(|p| p.contains("missing")) {
            tokio::time::sleep(Duration::from_secs(2)).await;
            return seen();
        }
        if started.elapsed() > within {
            panic!("after {within:?}: {}", problems.join("; "));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A new subscriber gets one retained message per topic: the newest sample, never a late one.
async fn check_retained_newest(broker: &str, want: &Want, prefix: &str) {
    let mut newest: BTreeMap<&str, (i64, f64)> = BTreeMap::new();
    for ((topic, t), (v, late)) in want {
        if !late {
            newest.insert(topic.as_str(), (*t, *v));
        }
    }
    let sub = Subscriber::start(broker, prefix, &unique("retained")).await;
    let started = Instant::now();
    loop {
        let seen = sub.seen();
        let retained: BTreeMap<&str, &Seen> = seen
            .iter()
            .filter(|s| s.retained)
            .map(|s| (s.topic.as_str(), s))
            .collect();
        let ok = newest.iter().all(|(topic, (t, v))| {
            retained.get(topic).is_some_and(|s| {
                source_time(&s.json) == *t
                    && s.json["value"].as_f64() == Some(*v)
                    && s.json.get("late").is_none()
            })
        });
        if ok {
            assert_eq!(retained.len(), newest.len(), "one retained value per topic");
            assert_eq!(seen.len(), newest.len(), "a new subscriber gets only those");
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "retained values: want the newest of {} topics, got {:?}",
            newest.len(),
            retained
                .values()
                .map(|s| (&s.topic, &s.json))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Samples a healed gap brings after newer ones reach a subscriber too, on their topics,
/// flagged `"late": true`, while the retained value of each topic stays its newest sample.
async fn late_samples_are_published(broker: &str) {
    init_tracing();
    let prefix = unique("gwlate");
    let sub = Subscriber::start(broker, &prefix, &unique("sub")).await;
    let tmp = tempfile::tempdir().expect("temporary directory");
    let spool = tmp.path().join("spool");
    let (samples, want) = history_with_late(&prefix, 8, 40);
    let late = want.values().filter(|(_, l)| *l).count();
    assert!(late >= 80, "{late} late samples");
    write_spool(&spool, &samples);
    let run = SinkRun::start(&sink_cfg(broker, &prefix, 1, tmp.path()), &spool);
    let seen = wait_for_all(|| sub.seen(), &want, Duration::from_secs(30)).await;
    let (repeats, problems) = compare(&seen, &want);
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(repeats, 0, "nothing repeats without a cut connection");
    check_retained_newest(broker, &want, &prefix).await;
    assert_eq!(run.delivered(), want.len() as u64);
    assert_eq!(
        run.stats.late_published.load(Ordering::Relaxed),
        late as u64
    );
    eprintln!(
        "{} samples, {late} of them late, all published (broker {broker})",
        want.len()
    );
    run.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_embedded_late_samples_are_published_flagged_and_not_retained() {
    late_samples_are_published(&embedded_broker(20 * 1024).to_string()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_mosquitto_late_samples_are_published_flagged_and_not_retained() {
    let Some(broker) = service("GATEWAY_TEST_MQTT") else {
        return;
    };
    late_samples_are_published(&broker).await;
}

/// The sink killed again and again in the middle of a window (with samples at the subscriber
/// that the sink had not yet seen acknowledged), and the broker restarted, both while the sink
/// was down and while it was publishing; a subscriber with a persistent session listens
/// throughout. At QoS 2 it ends with every sample exactly once, at QoS 1 at least once; late
/// samples included, flagged; nothing on a wrong topic; the retained values the newest.
async fn through_kills_and_broker_restarts(qos: u8) {
    let Some(bin) = service("GATEWAY_TEST_MOSQUITTO") else {
        return;
    };
    init_tracing();
    let mut broker = PersistentMosquitto::start(&bin).await;
    let addr = broker.addr();
    let prefix = unique("gwkill");
    let sub = SessionSubscriber::start(&addr, &prefix, &unique("sub")).await;
    let tmp = tempfile::tempdir().expect("temporary directory");
    let spool = tmp.path().join("spool");
    // QoS 1 goes faster (a whole window in flight): more history, for the kills to land in it.
    let (samples, want) = history_with_late(&prefix, 30, if qos == 2 { 200 } else { 600 });
    write_spool(&spool, &samples);
    let cfg = sink_cfg(&addr, &prefix, qos, tmp.path());
    let total = want.len() as u64;
    // Acknowledged to the sink in earlier runs: the subscriber holding more means a window was
    // cut in the middle.
    let mut acked = 0u64;
    let (mut mid_window, mut restarts) = (0usize, 0usize);
    let mid = |run: &SinkRun, acked: u64| sub.distinct() as u64 > acked + run.delivered();
    async fn wait_mid(run: &SinkRun, acked: u64, mid: &impl Fn(&SinkRun, u64) -> bool) -> bool {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            if mid(run, acked) {
                return true;
            }
            tokio::task::yield_now().await;
        }
        false
    }
    for round in 0..9u64 {
        let run = SinkRun::start(&cfg, &spool);
        // The kills spread over the whole history, the late samples' part included.
        let started = Instant::now();
        while acked + run.delivered() < total * round / 10
            && started.elapsed() < Duration::from_secs(30)
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let mut cut = wait_mid(&run, acked, &mid).await;
        if round % 3 == 2 {
            // The broker restarted under the running sink; then the sink killed too.
            broker.restart().await;
            restarts += 1;
            cut = wait_mid(&run, acked, &mid).await;
        }
        acked += run.kill().await;
        mid_window += usize::from(cut);
        if round % 3 == 1 {
            broker.restart().await;
            restarts += 1;
        }
    }
    let run = SinkRun::start(&cfg, &spool);
    let seen = wait_for_all(|| sub.seen(), &want, Duration::from_secs(90)).await;
    let (repeats, problems) = compare(&seen, &want);
    assert!(problems.is_empty(), "{problems:?}");
    if qos == 2 {
        assert_eq!(repeats, 0, "QoS 2: every sample exactly once");
    }
    check_retained_newest(&addr, &want, &prefix).await;
    let last = run.kill().await;
    assert!(
        mid_window >= 6,
        "killed in the middle of a window {mid_window} times of 9"
    );
    eprintln!(
        "QoS {qos}: {total} samples ({} late) at the subscriber, {repeats} repeated, through 9 \
         kills of the sink ({mid_window} in the middle of a window) and {restarts} broker \
         restarts; {} acknowledged in the last run",
        want.values().filter(|(_, l)| *l).count(),
        last
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_mosquitto_qos2_exactly_once_through_sink_kills_and_broker_restarts() {
    through_kills_and_broker_restarts(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_mosquitto_qos1_at_least_once_through_sink_kills_and_broker_restarts() {
    through_kills_and_broker_restarts(1).await;
}

// --- PostgreSQL ---------------------------------------------------------------------------------

/// The PostgreSQL tests run one at a time: one of them stops and restarts the server.
static PG_SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn wait_pg_complete(
    client: &tokio_postgres::Client,
    schema: &str,
    want: &Rows,
    within: Duration,
) {
    let started = Instant::now();
    loop {
        let got = pg_rows(client, schema).await;
        if &got == want {
            return;
        }
        if started.elapsed() > within {
            let missing = want.keys().filter(|k| !got.contains_key(*k)).count();
            let extra = got.keys().filter(|k| !want.contains_key(*k)).count();
            let differ: Vec<_> = want
                .iter()
                .filter(|(k, v)| got.get(*k).is_some_and(|g| g != *v))
                .take(3)
                .collect();
            panic!(
                "PostgreSQL does not match the TX buffer after {within:?}: want {}, got {}, \
                 {missing} missing, {extra} extra, differing e.g. {differ:?}",
                want.len(),
                got.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Every sample reaches PostgreSQL once, through a cut connection (a proxy) and, with
/// `GATEWAY_TEST_PG_CTL`, the server stopped and restarted in the middle of the run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_every_sample_once_through_outages() {
    let Some(url) = service("GATEWAY_TEST_PG_URL") else {
        return;
    };
    let _serial = PG_SERIAL.lock().await;
    let client = pg_client(&url).await;
    let schema = unique("gwtest_");
    let proxy = Proxy::start(pg_addr(&url)).await;
    let tmp = tempfile::tempdir().expect("temporary directory");
    let mut chain = Chain::start(&pg_table(&url, tmp.path(), &schema, Some(proxy.addr))).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        chain.sink("postgres").connected,
        "{:?}",
        chain.sink("postgres")
    );
    // The connection cut: samples wait in the spool.
    proxy.down();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = chain.sink("postgres");
    assert!(!during.connected, "{during:?}");
    assert!(during.appended > during.delivered, "{during:?}");
    proxy.up();
    // The server itself stopped and restarted.
    let restarted = match std::env::var("GATEWAY_TEST_PG_CTL") {
        Ok(ctl) if !ctl.is_empty() => {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let ok = std::process::Command::new(&ctl)
                .arg("stop")
                .status()
                .expect("stopping PostgreSQL");
            assert!(ok.success(), "{ctl} stop");
            tokio::time::sleep(Duration::from_secs(3)).await;
            let stopped = chain.sink("postgres");
            let ok = std::process::Command::new(&ctl)
                .arg("start")
                .status()
                .expect("starting PostgreSQL");
            assert!(ok.success(), "{ctl} start");
            assert!(!stopped.connected, "{stopped:?}");
            true
        }
        _ => {
            eprintln!("GATEWAY_TEST_PG_CTL not set: PostgreSQL is not restarted");
            false
        }
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let want = chain.stop_process().await;
    let client = if restarted {
        pg_client(&url).await
    } else {
        client
    };
    wait_pg_complete(&client, &schema, &want, Duration::from_secs(60)).await;
    let s = chain.sink("postgres");
    assert_eq!(s.overflow_samples, 0);
    assert!(s.connects >= 2 + u64::from(restarted), "{s:?}");
    eprintln!(
        "{} samples in PostgreSQL once each, through a cut connection{}; sink {s:?}",
        want.len(),
        if restarted {
            " and a server restart"
        } else {
            ""
        }
    );
    let _ = client
        .batch_execute(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .await;
}

/// History samples per second into PostgreSQL through the sink (spool → binary COPY → staging
/// → INSERT ON CONFLICT), new samples, then the same again (all duplicates). Samples:
/// `GATEWAY_BENCH_PG_SAMPLES` (default 200,000) over 1,000 tags.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_throughput() {
    use gateway_rx::sinks::spool::{SpoolSample, SpoolWriter};
    let Some(url) = service("GATEWAY_TEST_PG_URL") else {
        return;
    };
    init_tracing();
    let _serial = PG_SERIAL.lock().await;
    let n: usize = std::env::var("GATEWAY_BENCH_PG_SAMPLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let client = pg_client(&url).await;
    let schema = unique("gwbench_");
    let tmp = tempfile::tempdir().expect("temporary directory");
    let cfg = parse_rx(&format!(
        "[link]\ninsecure_no_key = true\nbind = \"127.0.0.1:5600\"\n[store]\npath = {}\n{}",
        toml_path(&tmp.path().join("history.sqlite")),
        pg_table(&url, tmp.path(), &schema, None)
    ))
    .postgres
    .expect("[postgres]");
    let names: Vec<Arc<str>> = (0..1000)
        .map(|i| Arc::from(format!("site/area{}/dev{}/value", i / 100, i % 100)))
        .collect();
    let samples: Vec<SpoolSample> = (0..n)
        .map(|i| SpoolSample {
            tag: names[i % names.len()].clone(),
            value: Value::Double(i as f64 * 0.5),
            quality: protocol::model::Quality::GOOD,
            time: 1_700_000_000_000_000_000 + (i / names.len()) as i64 * 1_000_000_000,
            received: 1_700_000_000_000_000_000,
        })
        .collect();
    let mut rates = Vec::new();
    for round in ["new", "duplicate"] {
        let dir = tmp.path().join(format!("spool-{round}"));
        let (mut w, shared) = SpoolWriter::open(&dir, 1 << 34, None).expect("spool");
        assert_eq!(w.append(&samples).expect("append"), n);
        w.prepare().expect("prepare");
        w.publish();
        let reader = gateway_rx::sinks::spool::SpoolReader::open(&dir, shared).expect("reader");
        let stats = Arc::new(gateway_rx::sinks::SinkStats::default());
        let started = Instant::now();
        let task = tokio::spawn(gateway_rx::sinks::postgres::run(
            cfg.clone(),
            reader,
            stats.clone(),
        ));
        while stats.delivered.load(Ordering::Relaxed) < n as u64 {
            assert!(
                started.elapsed() < Duration::from_secs(300),
                "{round}: {} of {n} delivered",
                stats.delivered.load(Ordering::Relaxed)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let secs = started.elapsed().as_secs_f64();
        task.abort();
        rates.push((round, n as f64 / secs));
        eprintln!(
            "PostgreSQL sink, {round} samples: {n} in {secs:.2} s = {:.0} samples/s (batch {})",
            n as f64 / secs,
            cfg.batch_samples
        );
    }
    let count: i64 = client
        .query_one(&format!("SELECT count(*) FROM \"{schema}\".samples"), &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(count, n as i64, "each (tag, time) once");
    let _ = client
        .batch_execute(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .await;
}

/// History samples per second through the MQTT publisher (spool → QoS 1 windows →
/// embedded broker), with a subscriber receiving them all. Samples:
/// `GATEWAY_BENCH_MQTT_SAMPLES` (default 50,000) over 1,000 tags.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_throughput() {
    use gateway_rx::sinks::spool::{SpoolReader, SpoolSample, SpoolWriter};
    init_tracing();
    let n: usize = std::env::var("GATEWAY_BENCH_MQTT_SAMPLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000);
    // `GATEWAY_BENCH_MQTT_BROKER=host:port` measures against another broker (Mosquitto).
    let broker = std::env::var("GATEWAY_BENCH_MQTT_BROKER")
        .ok()
        .filter(|b| !b.is_empty())
        .unwrap_or_else(|| embedded_broker(20 * 1024).to_string());
    let prefix = unique("gwbench");
    let sub = Subscriber::start(&broker, &prefix, &unique("sub")).await;
    let tmp = tempfile::tempdir().expect("temporary directory");
    let cfg = parse_rx(&format!(
        "[link]\ninsecure_no_key = true\nbind = \"127.0.0.1:5600\"\n[store]\npath = {}\n{}live = false\n",
        toml_path(&tmp.path().join("history.sqlite")),
        mqtt_table(&broker, &prefix)
    ))
    .mqtt
    .expect("[mqtt]");
    let names: Vec<Arc<str>> = (0..1000)
        .map(|i| Arc::from(format!("site/area{}/dev{}/value", i / 100, i % 100)))
        .collect();
    let samples: Vec<SpoolSample> = (0..n)
        .map(|i| SpoolSample {
            tag: names[i % names.len()].clone(),
            value: Value::Double(i as f64 * 0.5),
            quality: protocol::model::Quality::GOOD,
            time: 1_700_000_000_000_000_000 + (i / names.len()) as i64 * 1_000_000_000,
            received: 1_700_000_000_000_000_000,
        })
        .collect();
    let dir = tmp.path().join("spool");
    let (mut w, shared) = SpoolWriter::open(&dir, 1 << 34, None).expect("spool");
    assert_eq!(w.append(&samples).expect("append"), n);
    w.prepare().expect("prepare");
    w.publish();
    let reader = SpoolReader::open(&dir, shared).expect("reader");
    let stats = Arc::new(gateway_rx::sinks::SinkStats::default());
    let state = Arc::new(gateway_rx::state::State::new());
    let started = Instant::now();
    let task = tokio::spawn(gateway_rx::sinks::mqtt::run(
        cfg,
        reader,
        state,
        stats.clone(),
        Arc::new(AtomicBool::new(true)),
    ));
    while stats.delivered.load(Ordering::Relaxed) < n as u64 {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "{} of {n} delivered",
            stats.delivered.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    task.abort();
    let got = loop {
        let got = sub.seen().len();
        if got >= n || started.elapsed() > Duration::from_secs(60) {
            break got;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(got, n, "the subscriber received every publish");
    eprintln!(
        "MQTT publisher (QoS 1, broker {broker}): {n} samples acknowledged in {secs:.2} s = {:.0} samples/s",
        n as f64 / secs
    );
}
