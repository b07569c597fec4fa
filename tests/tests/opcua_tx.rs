//! gateway-tx's OPC UA source against the in-process simulated server (tests::opcua_sim):
//! values of every type with their source time and status, subscription and polled modes,
//! namespaces by URI, every kind of node id, unknown nodes, server restarts, trust of a
//! secured server's certificate, the security policies and modes gateway-tx offers
//! (Basic256Sha256, Aes128_Sha256_RsaOaep; Sign, SignAndEncrypt), user name and X.509 user
//! certificate identities, the start-up HistoryRead, `browse`, and that the server never sees a
//! request that would change it.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use config::tx::TxConfig;
use gateway_tx::Transmitter;
use gateway_tx::source::Health;
use gateway_tx::tags::TagTable;
use opcua::crypto::SecurityPolicy;
use opcua::types::MessageSecurityMode;
use protocol::model::{Quality, Sample, SourceAddress, Value, ValueType};
use tests::opcua_sim::{
    ALL_TYPES, OpcUaSim, Reader, SimConfig, SimSecurity, sample_value, type_var, x509_token_id,
};

const NS_URI: &str = "urn:plant:sim";
const CONVERGE: Duration = Duration::from_secs(20);
const BAD_NODE_ID_UNKNOWN: Quality = Quality(0x8034_0000);
const BAD_NOT_CONNECTED: Quality = Quality(0x808A_0000);

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "error".into()),
        )
        .with_test_writer()
        .try_init();
}

async fn sim(dir: &Path, secure: bool, load: usize) -> OpcUaSim {
    OpcUaSim::start_new(
        SimConfig {
            namespace_uri: NS_URI.into(),
            secure,
            pki_dir: dir.join("server-pki"),
            load_variables: load,
            user: None,
        },
        0,
    )
    .await
    .expect("simulated OPC UA server")
}

fn q(s: &str) -> String {
    assert!(!s.contains(['"', '\\']), "needs escaping: {s}");
    format!("\"{s}\"")
}

/// A TX config with one endpoint on `sim`; `endpoint_extra` adds lines to `[[opcua]]`, `tags`
/// are (tag name, node text, type name, extra lines).
fn tx_config(
    sim: &OpcUaSim,
    pki: &Path,
    endpoint_extra: &str,
    tags: &[(String, String, &str, &str)],
    top_extra: &str,
) -> TxConfig {
    tx_config_url(&sim.url(), pki, endpoint_extra, tags, top_extra)
}

fn tx_config_url(
    url: &str,
    pki: &Path,
    endpoint_extra: &str,
    tags: &[(String, String, &str, &str)],
    top_extra: &str,
) -> TxConfig {
    let port = tests::free_udp_port().expect("udp port");
    let mut s = format!(
        "[link]\ninsecure_no_key = true\ndestination = \"127.0.0.1:{port}\"\n{top_extra}\n[[opcua]]\nname = \"sim\"\nurl = {}\n\
         pki_dir = {}\ntimeout_ms = 2000\npublishing_interval_ms = 50\npoll_interval_ms = 50\n{endpoint_extra}\n",
        q(url),
        q(&pki.display().to_string()),
    );
    for (name, node, ty, extra) in tags {
        s.push_str(&format!(
            "[[opcua.tag]]\nname = {}\nnode = {}\ntype = \"{ty}\"\nsampling_interval_ms = 20\n{extra}\n",
            q(name),
            q(node)
        ));
    }
    TxConfig::parse(&s, Path::new("test/gateway-tx.toml"))
        .unwrap_or_else(|e| panic!("TX config refused: {e}\n{s}"))
}

/// [`tx_config`] with `[history]` in `dir/history`.
fn history_config(
    sim: &OpcUaSim,
    dir: &Path,
    endpoint_extra: &str,
    tags: &[(String, String, &str, &str)],
) -> TxConfig {
    let history = format!(
        "[history]\ndir = {}\n",
        q(&dir.join("history").display().to_string())
    );
    tx_config(sim, &dir.join("pki"), endpoint_extra, tags, &history)
}

/// Every sample in the transmitter's history buffer in `dir`, in sequence order.
fn buffered(dir: &Path) -> Vec<Sample> {
    gateway_tx::history::log::read_records(dir)
        .expect("read the history buffer")
        .into_iter()
        .map(|(_, _, sample)| sample)
        .collect()
}

async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < CONVERGE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The health of the transmitter's endpoint `sim`.
fn sim_health(tx: &Transmitter) -> std::sync::Arc<Health> {
    let sources = tx.status.sources();
    sources.get("sim").expect("endpoint sim").health.clone()
}

fn current(table: &TagTable, name: &str) -> Option<Sample> {
    let i = table.infos().iter().position(|t| t.name == name)?;
    table.current(i as u32)
}

/// Tags for every type's variable by namespace URI, plus the other node id kinds, an unknown
/// node, and the right name under the index a naive client would use.
fn type_tags(sim: &OpcUaSim) -> Vec<(String, String, &'static str, &'static str)> {
    let mut tags: Vec<(String, String, &'static str, &'static str)> = ALL_TYPES
        .iter()
        .map(|t| {
            (
                format!("sim/{}", type_var(*t)),
                sim.node_text(&type_var(*t)).expect("node"),
                config::opcua::type_name(*t),
                "",
            )
        })
        .collect();
    for (var, ty) in [
        ("NumericId", "f64"),
        ("GuidId", "i32"),
        ("OpaqueId", "string"),
    ] {
        tags.push((
            format!("sim/{var}"),
            sim.node_text(var).expect("node"),
            ty,
            "",
        ));
    }
    tags.push((
        "sim/unknown".into(),
        format!("nsu={NS_URI};s=NoSuchVariable"),
        "f64",
        "",
    ));
    // ns=2 is the extra namespace the simulator registers first; the variables are in ns=3.
    tags.push(("sim/naive_index".into(), "ns=2;s=Double".into(), "f64", ""));
    tags
}

/// Sets every type's variable to a fresh value with its own status and source time, and
/// checks that the table shows each unchanged.
async fn every_type_round_trip(sim: &OpcUaSim, table: &TagTable) {
    let t0: i64 = 1_750_000_000_000_000_000;
    let statuses = [
        Quality::GOOD,
        Quality(0x4092_0000), // UncertainSubNormal
        Quality(0x0096_0000), // GoodLocalOverride
        Quality(0x8040_0000), // BadSensorFailure: a Bad value still carries a value here
    ];
    let mut expect = Vec::new();
    for (i, t) in ALL_TYPES.iter().enumerate() {
        let v = sample_value(*t);
        let quality = statuses[i % statuses.len()];
        let time = t0 + i as i64 * 1_000_000_100;
        sim.set(&type_var(*t), v.clone(), quality, time)
            .expect("set");
        expect.push((format!("sim/{}", type_var(*t)), v, quality, time));
    }
    for (name, v, quality, time) in &expect {
        wait_for(&format!("{name} = {v:?}"), || {
            current(table, name).is_some_and(|s| s.quality == *quality && s.time == *time)
        })
        .await;
        let s = current(table, name).expect("value");
        assert_eq!(&s.value, v, "{name}");
    }
    // The other node id kinds still hold the simulator's initial values.
    for (name, v) in [
        ("sim/NumericId", Value::Double(10.5)),
        ("sim/GuidId", Value::Int32(42)),
        ("sim/OpaqueId", Value::String("opaque".into())),
    ] {
        wait_for(name, || current(table, name).is_some_and(|s| s.value == v)).await;
        assert_eq!(current(table, name).map(|s| s.quality), Some(Quality::GOOD));
    }
    for name in ["sim/unknown", "sim/naive_index"] {
        wait_for(&format!("{name} BadNodeIdUnknown"), || {
            current(table, name).is_some_and(|s| s.quality == BAD_NODE_ID_UNKNOWN)
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_delivers_every_type_with_source_time_and_status() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = sim(dir.path(), false, 0).await;
    assert_eq!(
        sim.namespace_index(),
        Some(3),
        "the sim's namespace must not be ns=2"
    );
    let config = tx_config(&sim, &dir.path().join("pki"), "", &type_tags(&sim), "");
    let tx = Transmitter::start(config).await.expect("transmitter");
    let table = tx.table();
    // Catalogue: OPC UA tags with their source address as configured.
    let info = &table.infos()[0];
    assert_eq!(info.value_type, ValueType::Boolean);
    assert_eq!(
        info.source,
        SourceAddress::OpcUa {
            endpoint: "sim".into(),
            node_id: format!("nsu={NS_URI};s=Boolean"),
        }
    );
    every_type_round_trip(&sim, &table).await;
    let ep = sim_health(&tx);
    assert!(ep.connected());
    assert_eq!(
        sim.mutations().total(),
        0,
        "the server saw a writing request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn type_mismatch_keeps_last_value_with_bad_type_mismatch() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = sim(dir.path(), false, 0).await;
    // Int32 holds -123456, which an i16 tag cannot hold; UInt16 converts into u32 exactly.
    let tags = vec![
        (
            "sim/narrow".to_owned(),
            sim.node_text("Int32").expect("node"),
            "i16",
            "",
        ),
        (
            "sim/wide".to_owned(),
            sim.node_text("UInt16").expect("node"),
            "u32",
            "",
        ),
    ];
    let config = tx_config(&sim, &dir.path().join("pki"), "", &tags, "");
    let tx = Transmitter::start(config).await.expect("transmitter");
    let table = tx.table();
    wait_for("wide", || {
        current(&table, "sim/wide").is_some_and(|s| s.value == Value::UInt32(54_321))
    })
    .await;
    wait_for("narrow BadTypeMismatch", || {
        current(&table, "sim/narrow").is_some_and(|s| s.quality == Quality(0x8074_0000))
    })
    .await;
    // An i16 that fits converts; then one that does not keeps it with BadTypeMismatch.
    sim.set("Int32", Value::Int32(-5), Quality::GOOD, 1_000)
        .expect("set");
    wait_for("narrow = -5", || {
        current(&table, "sim/narrow")
            .is_some_and(|s| s.value == Value::Int16(-5) && s.quality == Quality::GOOD)
    })
    .await;
    sim.set("Int32", Value::Int32(40_000), Quality::GOOD, 2_000)
        .expect("set");
    wait_for("narrow mismatch again", || {
        current(&table, "sim/narrow").is_some_and(|s| s.quality == Quality(0x8074_0000))
    })
    .await;
    assert_eq!(
        current(&table, "sim/narrow").map(|s| s.value),
        Some(Value::Int16(-5))
    );
    assert_eq!(sim.mutations().total(), 0);
}

/// A value beyond what the gateway carries is refused where it enters, as
/// BadEncodingLimitsExceeded: the tag keeps its last value and every other tag keeps flowing.
/// With the client library's 64 KiB string limit, such a value failed the decoding of its
/// whole Read (every other value in it lost); and one past the encoder's 16 MiB message limit
/// ended the link sender, and with it the daemon. Read by polling: the simulated server does
/// not send data changes of more than 64 KiB on subscriptions (both modes share
/// `convert::update`, whose unit tests cover it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_value_is_refused_at_the_source_and_the_link_carries_on() {
    init_tracing();
    {
        let mode = "mode = \"poll\"";
        let dir = tempfile::tempdir().expect("tempdir");
        let sim = sim(dir.path(), false, 0).await;
        let tags = vec![
            (
                "sim/text".to_owned(),
                sim.node_text("String").expect("node"),
                "string",
                "",
            ),
            (
                "sim/speed".to_owned(),
                sim.node_text("Double").expect("node"),
                "f64",
                "",
            ),
        ];
        let config = history_config(&sim, dir.path(), mode, &tags);
        let tx = Transmitter::start(config).await.expect("transmitter");
        let table = tx.table();
        sim.set("String", Value::String("ok".into()), Quality::GOOD, 1_000)
            .expect("set");
        wait_for("the first text", || {
            current(&table, "sim/text").is_some_and(|s| s.value == Value::String("ok".into()))
        })
        .await;
        for (i, len) in [protocol::model::MAX_VALUE_BYTES + 1]
            .into_iter()
            .enumerate()
        {
            sim.set(
                "String",
                Value::String("x".repeat(len)),
                Quality::GOOD,
                2_000 + i as i64,
            )
            .expect("set");
            wait_for(&format!("{len} bytes refused"), || {
                current(&table, "sim/text").is_some_and(|s| {
                    s.quality == Quality::BAD_ENCODING_LIMITS_EXCEEDED && s.time == 2_000 + i as i64
                })
            })
            .await;
            assert_eq!(
                current(&table, "sim/text").map(|s| s.value),
                Some(Value::String("ok".into())),
                "the last value is kept"
            );
            // The link goes on: a later change of another tag is sent.
            sim.set(
                "Double",
                Value::Double(i as f64 + 0.5),
                Quality::GOOD,
                3_000 + i as i64,
            )
            .expect("set");
            let sent_before = tx.status.counters.samples_sent.load(Ordering::Relaxed);
            wait_for("the next change sent", || {
                tx.status.counters.samples_sent.load(Ordering::Relaxed) > sent_before
            })
            .await;
            assert!(tx.link_alive(), "the link sender stopped ({mode})");
        }
        assert_eq!(
            tx.status.counters.messages_refused.load(Ordering::Relaxed),
            0,
            "refused at the source, never at the encoder"
        );
        // History has the refusal too, as the quality of a sample without the value.
        let history = buffered(&dir.path().join("history"));
        assert!(
            history
                .iter()
                .any(|s| s.quality == Quality::BAD_ENCODING_LIMITS_EXCEEDED),
            "{} samples in the buffer",
            history.len()
        );
        assert!(history.iter().all(|s| match &s.value {
            Value::String(t) => t.len() <= protocol::model::MAX_VALUE_BYTES,
            _ => true,
        }));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_mode_delivers_every_type() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = sim(dir.path(), false, 0).await;
    let config = tx_config(
        &sim,
        &dir.path().join("pki"),
        "mode = \"poll\"",
        &type_tags(&sim),
        "",
    );
    let tx = Transmitter::start(config).await.expect("transmitter");
    every_type_round_trip(&sim, &tx.table()).await;
    assert!(sim_health(&tx).polls_ok() > 0);
    assert_eq!(
        sim.mutations().total(),
        0,
        "the server saw a writing request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_restart_goes_bad_and_recovers_without_restarting_the_transmitter() {
    restart_recovers("").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_restart_recovers_in_poll_mode_too() {
    restart_recovers("mode = \"poll\"").await;
}

async fn restart_recovers(endpoint_extra: &str) {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sim = sim(dir.path(), false, 0).await;
    let tags = vec![(
        "sim/speed".to_owned(),
        sim.node_text("Double").expect("node"),
        "f64",
        "",
    )];
    let config = tx_config(&sim, &dir.path().join("pki"), endpoint_extra, &tags, "");
    let tx = Transmitter::start(config).await.expect("transmitter");
    let table = tx.table();
    sim.set("Double", Value::Double(1.0), Quality::GOOD, 10)
        .expect("set");
    wait_for("first value", || {
        current(&table, "sim/speed").is_some_and(|s| s.value == Value::Double(1.0))
    })
    .await;
    let port = sim.port;
    sim.stop().await;
    wait_for("BadNotConnected", || {
        current(&table, "sim/speed").is_some_and(|s| s.quality == BAD_NOT_CONNECTED)
    })
    .await;
    assert_eq!(
        current(&table, "sim/speed").map(|s| s.value),
        Some(Value::Double(1.0)),
        "the last value is kept while Bad"
    );
    let health = sim_health(&tx);
    assert!(!health.connected());
    let reasons = tx.status.health().reasons;
    assert!(
        reasons
            .iter()
            .any(|r| r == "all 1 OPC UA endpoints are down (no session)"),
        "{reasons:?}"
    );
    sim.start().await.expect("restart");
    assert_eq!(sim.port, port);
    sim.set("Double", Value::Double(2.0), Quality::GOOD, 20)
        .expect("set");
    wait_for("Good again", || {
        current(&table, "sim/speed")
            .is_some_and(|s| s.value == Value::Double(2.0) && s.quality == Quality::GOOD)
    })
    .await;
    assert!(health.connected());
    assert!(health.reconnects() >= 1);
    // What operators see: /metrics and the status page.
    let mut e = observe::prom::Exposition::new();
    tx.status.metrics(&mut e);
    let metrics = e.finish();
    assert!(
        metrics.contains("gateway_tx_opcua_up{endpoint=\"sim\"} 1\n"),
        "{metrics}"
    );
    assert!(metrics.contains("gateway_tx_opcua_reconnects_total{endpoint=\"sim\"} "));
    let status = tx.status.status(&observe::Query::default());
    let ep = &status["opcua"][0];
    assert_eq!(ep["name"], "sim");
    assert_eq!(ep["connected"], true);
    assert!(ep["reconnects"].as_u64().is_some_and(|n| n >= 1), "{ep}");
    assert!(tx.status.health().reasons.is_empty());
    assert_eq!(sim.mutations().total(), 0);
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secured_endpoint_refuses_an_unknown_server_certificate_until_it_is_trusted() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = sim(dir.path(), true, 0).await;
    let pki = dir.path().join("pki");
    let tags = vec![(
        "sim/speed".to_owned(),
        sim.node_text("Double").expect("node"),
        "f64",
        "",
    )];
    let config = tx_config(
        &sim,
        &pki,
        "security_policy = \"basic256sha256\"\nsecurity_mode = \"sign_and_encrypt\"",
        &tags,
        "",
    );
    let tx = Transmitter::start(config).await.expect("transmitter");
    let table = tx.table();
    wait_for("the server certificate in rejected/", || {
        !files_in(&pki.join("rejected")).is_empty()
    })
    .await;
    // The client's own certificate and key were created on first start.
    assert!(pki.join("own/cert.der").is_file());
    assert!(pki.join("private/private.pem").is_file());
    wait_for("tag Bad while untrusted", || {
        current(&table, "sim/speed").is_some_and(|s| s.quality == BAD_NOT_CONNECTED)
    })
    .await;
    let health = sim_health(&tx);
    assert!(!health.connected());
    assert!(!health.last_error().is_empty());
    // The engineer trusts it by moving the file.
    for f in files_in(&pki.join("rejected")) {
        let name = f.file_name().expect("file name").to_owned();
        std::fs::rename(&f, pki.join("trusted").join(name)).expect("move to trusted/");
    }
    sim.set("Double", Value::Double(3.5), Quality::GOOD, 30)
        .expect("set");
    wait_for("values over the secured session", || {
        current(&table, "sim/speed")
            .is_some_and(|s| s.value == Value::Double(3.5) && s.quality == Quality::GOOD)
    })
    .await;
    assert!(health.connected());
    assert_eq!(sim.mutations().total(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_history_read_pushes_the_window_into_the_history_stream() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = sim(dir.path(), false, 0).await;
    // OPC UA DateTime has 100 ns resolution.
    let now = gateway_tx::unix_now() / 100 * 100;
    // 220 values in the window (the first 5 s after its start), 40 before it; 100 per
    // request makes three pages.
    let flow: Vec<(Value, Quality, i64)> = (0..260)
        .map(|i| {
            (
                Value::Double(f64::from(i) * 0.5),
                if i % 7 == 0 {
                    Quality(0x4092_0000)
                } else {
                    Quality::GOOD
                },
                now - 2_995_000_000_000 + i64::from(i) * 10_000_000_000,
            )
        })
        .collect();
    sim.set_history("History.Flow", flow.clone());
    let count: Vec<(Value, Quality, i64)> = (0..30u32)
        .map(|i| {
            (
                Value::UInt32(i),
                Quality::GOOD,
                now - 60_000_000_000 + i64::from(i) * 1_000_000_000,
            )
        })
        .collect();
    sim.set_history("History.Count", count.clone());
    let history_dir = dir.path().join("history");
    let tags = vec![
        (
            "sim/flow".to_owned(),
            sim.node_text("History.Flow").expect("node"),
            "f64",
            "historize = true",
        ),
        (
            "sim/count".to_owned(),
            sim.node_text("History.Count").expect("node"),
            "u32",
            "historize = true",
        ),
        (
            "sim/live".to_owned(),
            sim.node_text("Double").expect("node"),
            "f64",
            "",
        ),
    ];
    let config = history_config(
        &sim,
        dir.path(),
        "history_window_s = 2600\nhistory_values_per_request = 100",
        &tags,
    );
    let tx = Transmitter::start(config).await.expect("transmitter");
    // 220 + 30 history samples plus the three tags' first live values.
    wait_for("history appended", || {
        tx.history_stats().is_some_and(|s| s.appended >= 253)
    })
    .await;
    drop(tx);
    let records = buffered(&history_dir);
    let window_start = now - 2_600_000_000_000;
    let of = |tag: u32| -> Vec<(Value, Quality, i64)> {
        records
            .iter()
            .filter(|r| r.tag == tag && r.time >= window_start && r.time < now)
            .map(|r| (r.value.clone(), r.quality, r.time))
            .collect()
    };
    let expect_flow: Vec<_> = flow
        .into_iter()
        .filter(|(_, _, t)| *t >= window_start)
        .collect();
    assert_eq!(expect_flow.len(), 220);
    assert_eq!(of(0), expect_flow);
    assert_eq!(of(1), count);
    assert_eq!(sim.mutations().total(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browse_prints_toml_the_config_accepts() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = sim(dir.path(), false, 0).await;
    let ep = tx_config(&sim, &dir.path().join("pki"), "", &[], "").opcua[0].clone();
    let report = gateway_tx::opcua::browse::browse(&ep, Some(&format!("nsu={NS_URI};s=Plant")), 1)
        .await
        .expect("browse");
    let toml = report.toml();
    assert!(
        report
            .tree
            .contains("Double (Variable, nsu=urn:plant:sim;s=Double)"),
        "{}",
        report.tree
    );
    let port = tests::free_udp_port().expect("port");
    let text = format!(
        "[link]\ninsecure_no_key = true\ndestination = \"127.0.0.1:{port}\"\n[[opcua]]\nname = \"sim\"\nurl = {}\n\n{toml}",
        q(&sim.url())
    );
    let config = TxConfig::parse(&text, Path::new("browsed.toml"))
        .unwrap_or_else(|e| panic!("browse output refused: {e}\n{text}"));
    let tags = &config.opcua[0].tags;
    for t in ALL_TYPES {
        let tag = tags
            .iter()
            .find(|x| x.name == type_var(t))
            .unwrap_or_else(|| panic!("no tag for {t:?} in\n{toml}"));
        assert_eq!(tag.value_type, t);
        assert_eq!(tag.node_text, format!("nsu={NS_URI};s={}", type_var(t)));
    }
    let double = tags.iter().find(|x| x.name == "Double").expect("Double");
    assert_eq!(double.unit, "rpm");
    assert_eq!(double.description, "simulated Double");
    let guid = tags.iter().find(|x| x.name == "GuidId").expect("GuidId");
    assert_eq!(
        guid.node_text,
        format!("nsu={NS_URI};g={}", tests::opcua_sim::GUID_NODE)
    );
    let opaque = tags
        .iter()
        .find(|x| x.name == "OpaqueId")
        .expect("OpaqueId");
    assert_eq!(opaque.node_text, format!("nsu={NS_URI};b=AQID"));
    assert_eq!(sim.mutations().total(), 0);
}

/// The counter the other tests rely on does count: a Write from a plain client reaches it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulator_counts_writes() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = sim(dir.path(), false, 0).await;
    let ep = tx_config(&sim, &dir.path().join("pki"), "", &[], "").opcua[0].clone();
    let mut client = gateway_tx::opcua::client::build(&ep).expect("client");
    let conn = gateway_tx::opcua::endpoint::connect(
        &mut client,
        &ep,
        opcua::client::IdentityToken::Anonymous,
    )
    .await
    .expect("connect");
    let ns = sim.namespace_index().expect("ns");
    let write = opcua::types::WriteValue {
        node_id: opcua::types::NodeId::new(ns, "Double"),
        attribute_id: opcua::types::AttributeId::Value as u32,
        value: opcua::types::DataValue::new_now(1.0f64),
        ..Default::default()
    };
    let _ = conn.session.write(&[write]).await;
    assert_eq!(sim.mutations().write.load(Ordering::Relaxed), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_name_identity_over_a_secured_endpoint() {
    use std::os::unix::fs::PermissionsExt;
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = OpcUaSim::start_new(
        SimConfig {
            namespace_uri: NS_URI.into(),
            secure: true,
            pki_dir: dir.path().join("server-pki"),
            load_variables: 0,
            user: Some(("reader".into(), "s3cret".into())),
        },
        0,
    )
    .await
    .expect("sim");
    let tags = vec![(
        "sim/speed".to_owned(),
        sim.node_text("Double").expect("node"),
        "f64",
        "",
    )];
    let mut txs = Vec::new();
    for (n, password) in [(0, "s3cret"), (1, "wrong")] {
        let pw = dir.path().join(format!("password{n}"));
        std::fs::write(&pw, format!("{password}\n")).expect("write");
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        // trust_server = "any": the escape for commissioning, accepted without trusted/.
        let extra = format!(
            "security_policy = \"basic256sha256\"\nsecurity_mode = \"sign_and_encrypt\"\n\
             trust_server = \"any\"\nuser = \"reader\"\npassword_file = {}",
            q(&pw.display().to_string())
        );
        let config = tx_config(&sim, &dir.path().join(format!("pki{n}")), &extra, &tags, "");
        txs.push(Transmitter::start(config).await.expect("transmitter"));
    }
    sim.set("Double", Value::Double(4.25), Quality::GOOD, 40)
        .expect("set");
    let good = txs[0].table();
    wait_for("values with the right password", || {
        current(&good, "sim/speed").is_some_and(|s| s.value == Value::Double(4.25))
    })
    .await;
    let refused = sim_health(&txs[1]);
    wait_for("the wrong password refused", || {
        !refused.last_error().is_empty()
    })
    .await;
    let error = refused.last_error();
    assert!(
        error.contains("refused user \"reader\"") && error.contains("BadIdentityTokenRejected"),
        "{error}"
    );
    assert!(!refused.connected());
    assert_eq!(
        current(&txs[1].table(), "sim/speed").map(|s| s.quality),
        Some(BAD_NOT_CONNECTED)
    );
    assert_eq!(sim.mutations().total(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_reload_restarts_the_endpoint_with_the_new_tags() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = sim(dir.path(), false, 0).await;
    let pki = dir.path().join("pki");
    let one = vec![(
        "sim/speed".to_owned(),
        sim.node_text("Double").expect("node"),
        "f64",
        "",
    )];
    let config = tx_config(&sim, &pki, "", &one, "");
    let link = config.link.clone();
    let tx = Transmitter::start(config).await.expect("transmitter");
    sim.set("Double", Value::Double(5.0), Quality::GOOD, 50)
        .expect("set");
    let table = tx.table();
    wait_for("first tag", || {
        current(&table, "sim/speed").is_some_and(|s| s.value == Value::Double(5.0))
    })
    .await;
    let mut two = one.clone();
    two.insert(
        0,
        (
            "sim/count".to_owned(),
            sim.node_text("UInt32").expect("node"),
            "u32",
            "",
        ),
    );
    let mut new = tx_config(&sim, &pki, "", &two, "");
    new.link = link;
    let summary = tx.reload(new).expect("reload applied");
    assert_eq!(
        (summary.tags, summary.added, summary.kept_values),
        (2, 1, 1)
    );
    let table = tx.table();
    assert_eq!(table.infos()[0].name, "sim/count");
    wait_for("new tag after reload", || {
        current(&table, "sim/count").is_some_and(|s| s.value == Value::UInt32(3_000_000_000))
    })
    .await;
    sim.set("Double", Value::Double(6.0), Quality::GOOD, 60)
        .expect("set");
    wait_for("moved tag still read", || {
        current(&table, "sim/speed").is_some_and(|s| s.value == Value::Double(6.0))
    })
    .await;
    assert_eq!(tx.status.sources().get("sim").map(|s| s.len), Some(2));
    assert_eq!(sim.mutations().total(), 0);
}

/// A TCP relay to the simulator that can swallow everything in both directions while keeping
/// the connections open: a network that drops packets, not a server that closes.
struct Blackhole {
    port: u16,
    swallow: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Blackhole {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn blackhole(target: u16) -> Blackhole {
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    async fn pump(
        mut r: tokio::net::tcp::OwnedReadHalf,
        mut w: tokio::net::tcp::OwnedWriteHalf,
        swallow: Arc<AtomicBool>,
    ) {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match r.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if swallow.load(Ordering::Relaxed) {
                continue;
            }
            if w.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind relay");
    let port = listener.local_addr().expect("addr").port();
    let swallow = Arc::new(AtomicBool::new(false));
    let s = swallow.clone();
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        while let Ok((inbound, _)) = listener.accept().await {
            let s = s.clone();
            conns.spawn(async move {
                let Ok(outbound) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await
                else {
                    return;
                };
                let (ri, wi) = inbound.into_split();
                let (ro, wo) = outbound.into_split();
                tokio::join!(pump(ri, wo, s.clone()), pump(ro, wi, s));
            });
        }
    });
    Blackhole {
        port,
        swallow,
        task,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_drop_goes_bad_and_recovers_through_a_relay() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = sim(dir.path(), false, 0).await;
    let relay = blackhole(sim.port).await;
    // The server advertises its own port; the transmitter must keep to the configured one.
    let url = format!("opc.tcp://127.0.0.1:{}/", relay.port);
    let tags = vec![(
        "sim/speed".to_owned(),
        sim.node_text("Double").expect("node"),
        "f64",
        "",
    )];
    let config = tx_config_url(&url, &dir.path().join("pki"), "", &tags, "");
    let tx = Transmitter::start(config).await.expect("transmitter");
    let table = tx.table();
    sim.set("Double", Value::Double(7.0), Quality::GOOD, 70)
        .expect("set");
    wait_for("value through the relay", || {
        current(&table, "sim/speed").is_some_and(|s| s.value == Value::Double(7.0))
    })
    .await;
    relay.swallow.store(true, Ordering::Relaxed);
    let dropped = Instant::now();
    wait_for("BadNotConnected after the network drop", || {
        current(&table, "sim/speed").is_some_and(|s| s.quality == BAD_NOT_CONNECTED)
    })
    .await;
    let detected = dropped.elapsed();
    println!("network drop noticed after {detected:?}");
    relay.swallow.store(false, Ordering::Relaxed);
    sim.set("Double", Value::Double(8.0), Quality::GOOD, 80)
        .expect("set");
    wait_for("Good again after the network is back", || {
        current(&table, "sim/speed")
            .is_some_and(|s| s.value == Value::Double(8.0) && s.quality == Quality::GOOD)
    })
    .await;
    assert!(
        detected < Duration::from_secs(15),
        "a silent network took {detected:?} to notice"
    );
    assert_eq!(sim.mutations().total(), 0);
}

/// Asks the running daemon for a backfill and returns its final status.
async fn backfill(
    history_dir: &Path,
    from: i64,
    to: i64,
    tags: Vec<String>,
    source: gateway_tx::history::backfill::Source,
) -> gateway_tx::history::backfill::BackfillStatus {
    let id = gateway_tx::history::backfill::submit(history_dir, from, to, tags, source)
        .expect("submit the request");
    let id = id.as_str();
    let start = Instant::now();
    loop {
        if let Some(st) = gateway_tx::history::backfill::read_status(history_dir, id)
            && st.is_final()
        {
            return st;
        }
        assert!(start.elapsed() < CONVERGE, "backfill {id} not finished");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_reads_what_the_buffer_never_held_from_the_source_historian() {
    use gateway_tx::history::backfill::Source;
    use gateway_tx::history::historian::PartState;
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sim = sim(dir.path(), false, 0).await;
    let now = gateway_tx::unix_now() / 100 * 100;
    let day = 86_400_000_000_000i64;
    // Two and one days old: long before the transmitter (and its buffer) started, and outside
    // the start-up window.
    let flow: Vec<(Value, Quality, i64)> = (0..300)
        .map(|i| {
            (
                Value::Double(f64::from(i) * 0.25),
                if i % 11 == 0 {
                    Quality(0x4092_0000)
                } else {
                    Quality::GOOD
                },
                now - 2 * day + i64::from(i) * 10_000_000_000,
            )
        })
        .collect();
    sim.set_history("History.Flow", flow.clone());
    let count: Vec<(Value, Quality, i64)> = (0..30u32)
        .map(|i| {
            (
                Value::UInt32(i * 3),
                Quality::GOOD,
                now - day + i64::from(i) * 1_000_000_000,
            )
        })
        .collect();
    sim.set_history("History.Count", count.clone());
    let history_dir = dir.path().join("history");
    let tags = vec![
        (
            "sim/flow".to_owned(),
            sim.node_text("History.Flow").expect("node"),
            "f64",
            "historize = true",
        ),
        (
            "sim/count".to_owned(),
            sim.node_text("History.Count").expect("node"),
            "u32",
            "historize = true",
        ),
        (
            "sim/nope".to_owned(),
            format!("nsu={NS_URI};s=History.Nope"),
            "f64",
            "historize = true",
        ),
    ];
    let config = history_config(
        &sim,
        dir.path(),
        "history_window_s = 60\nhistory_values_per_request = 64",
        &tags,
    );
    let tx = Transmitter::start(config).await.expect("transmitter");
    let both = vec!["sim/flow".to_owned(), "sim/count".to_owned()];

    // The buffer alone holds nothing that old; no historian part.
    let st = backfill(
        &history_dir,
        now - 3 * day,
        now - 3_600_000_000_000,
        both.clone(),
        Source::Buffer,
    )
    .await;
    assert_eq!(
        (st.state.as_str(), st.sent, st.historian.len()),
        ("done", 0, 0),
        "{st:?}"
    );

    // Older than the buffer: `auto` asks the historian, 64 values a page.
    let st = backfill(
        &history_dir,
        now - 3 * day,
        now - 3_600_000_000_000,
        both.clone(),
        Source::Auto,
    )
    .await;
    assert_eq!(st.state, "done", "{st:?}");
    assert_eq!(st.historian.len(), 1, "{st:?}");
    let part = &st.historian[0];
    assert_eq!(
        (part.source.as_str(), part.tags, part.state),
        ("sim", 2, PartState::Done)
    );
    assert_eq!(part.values, 330, "{st:?}");

    // Those values went into the buffer (the carousel covers them too): now the buffer
    // alone re-sends them.
    let st = backfill(
        &history_dir,
        now - 3 * day,
        now - 3_600_000_000_000,
        both.clone(),
        Source::Buffer,
    )
    .await;
    assert_eq!(
        (st.state.as_str(), st.sent, st.historian.len()),
        ("done", 330, 0),
        "{st:?}"
    );

    // Both ends inclusive: values 100..=109 of the flow.
    let st = backfill(
        &history_dir,
        flow[100].2,
        flow[109].2,
        vec!["sim/flow".to_owned()],
        Source::Historian,
    )
    .await;
    assert_eq!(
        (st.state.as_str(), st.historian[0].values),
        ("done", 10),
        "{st:?}"
    );

    // A node the server does not have: the part fails and says which.
    let st = backfill(
        &history_dir,
        now - 3 * day,
        now,
        vec!["sim/nope".to_owned()],
        Source::Historian,
    )
    .await;
    assert_eq!(st.state, "failed", "{st:?}");
    assert!(
        st.message.contains("History.Nope") && st.message.contains("BadNodeIdUnknown"),
        "{}",
        st.message
    );

    // The server is down: the read is retried, then fails with the reason.
    sim.stop().await;
    let st = backfill(
        &history_dir,
        now - 3 * day,
        now,
        Vec::new(),
        Source::Historian,
    )
    .await;
    assert_eq!(st.state, "failed", "{st:?}");
    assert!(
        st.message.contains("no complete read after 3 attempts"),
        "{}",
        st.message
    );

    drop(tx);
    // What the historian gave went into the history stream's buffer: every value with its
    // quality and source time (the narrow read's ten again; the receiver keeps them once).
    let records = buffered(&history_dir);
    let of = |tag: u32| -> Vec<(Value, Quality, i64)> {
        let mut v: Vec<_> = records
            .iter()
            .filter(|r| {
                // The variables' live values carry the simulator's fixed start time (2023).
                r.tag == tag && (now - 3 * day..now - 3_600_000_000_000).contains(&r.time)
            })
            .map(|r| (r.value.clone(), r.quality, r.time))
            .collect();
        v.sort_by_key(|s| s.2);
        v.dedup_by(|a, b| a.2 == b.2);
        v
    };
    assert_eq!(of(0), flow);
    assert_eq!(of(1), count);
    let flow_records = records
        .iter()
        .filter(|r| r.tag == 0 && (now - 3 * day..now - day).contains(&r.time))
        .count();
    assert_eq!(
        flow_records, 310,
        "300 from the range read, 10 from the narrow one"
    );
    assert_eq!(sim.mutations().total(), 0);
}

/// Puts the simulator's own certificate into `pki/trusted/` under the name async-opcua looks
/// for, as an engineer does after checking its fingerprint: the transmitter then connects
/// with `trust_server = "listed"` (the default) at once.
fn trust_sim(sim: &OpcUaSim, pki: &Path) {
    let cert = sim.certificate().expect("the simulator's certificate");
    let trusted = pki.join("trusted");
    std::fs::create_dir_all(&trusted).expect("trusted/");
    let der = cert.to_der().expect("DER of the simulator's certificate");
    std::fs::write(
        trusted.join(opcua::crypto::CertificateStore::cert_file_name(&cert)),
        der,
    )
    .expect("write to trusted/");
}

/// The simulator offering `endpoints` beside its None endpoint, accepting `user_certificates`
/// as X.509 identities.
async fn sim_with(
    dir: &Path,
    endpoints: Vec<(SecurityPolicy, MessageSecurityMode)>,
    user_certificates: Vec<PathBuf>,
) -> OpcUaSim {
    OpcUaSim::start_with(
        SimConfig {
            namespace_uri: NS_URI.into(),
            secure: false,
            pki_dir: dir.join("server-pki"),
            load_variables: 0,
            user: None,
        },
        SimSecurity {
            endpoints,
            user_certificates,
        },
        0,
    )
    .await
    .expect("simulated OPC UA server")
}

fn anonymous_reader(policy: SecurityPolicy, mode: MessageSecurityMode) -> Reader {
    Reader {
        security_policy_uri: policy.to_uri().to_owned(),
        security_mode: mode,
        user_token: opcua::server::ANONYMOUS_USER_TOKEN_ID.to_owned(),
    }
}

/// Every type's value, status and source time over an Aes128_Sha256_RsaOaep endpoint in
/// `mode`, the only secured endpoint the simulator offers (beside None), and proof from the
/// server's side that the reading session used that policy and mode.
async fn aes128_sha256_rsaoaep_round_trip(mode_config: &str, mode: MessageSecurityMode) {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = sim_with(
        dir.path(),
        vec![(SecurityPolicy::Aes128Sha256RsaOaep, mode)],
        Vec::new(),
    )
    .await;
    let pki = dir.path().join("pki");
    trust_sim(&sim, &pki);
    let extra =
        format!("security_policy = \"aes128_sha256_rsaoaep\"\nsecurity_mode = \"{mode_config}\"");
    let config = tx_config(&sim, &pki, &extra, &type_tags(&sim), "");
    let tx = Transmitter::start(config).await.expect("transmitter");
    every_type_round_trip(&sim, &tx.table()).await;
    let health = sim_health(&tx);
    assert!(health.connected());
    assert_eq!(
        sim.readers(),
        vec![anonymous_reader(SecurityPolicy::Aes128Sha256RsaOaep, mode)],
        "every read came over the configured policy and mode, none over the None endpoint"
    );
    assert!(
        files_in(&pki.join("rejected")).is_empty(),
        "the pre-trusted server certificate was accepted"
    );
    assert_eq!(sim.mutations().total(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aes128_sha256_rsaoaep_sign_delivers_values_with_status_and_source_time() {
    aes128_sha256_rsaoaep_round_trip("sign", MessageSecurityMode::Sign).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aes128_sha256_rsaoaep_sign_and_encrypt_delivers_values_with_status_and_source_time() {
    aes128_sha256_rsaoaep_round_trip("sign_and_encrypt", MessageSecurityMode::SignAndEncrypt).await;
}

/// A user certificate (DER) and its private key (PEM, mode 0600 as the config requires),
/// self-signed by async-opcua's crypto.
fn user_certificate(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let cert = dir.join(format!("{name}.der"));
    let key = dir.join(format!("{name}.pem"));
    let data = opcua::crypto::X509Data {
        key_size: 2048,
        common_name: name.to_owned(),
        organization: "gateway tests".to_owned(),
        organizational_unit: "OT".to_owned(),
        country: "DE".to_owned(),
        state: "Berlin".to_owned(),
        alt_host_names: Vec::<String>::new().into(),
        certificate_duration_days: 30,
    };
    opcua::crypto::CertificateStore::create_certificate_and_key(&data, false, &cert, &key)
        .expect("create a user certificate");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    (cert, key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x509_user_certificate_identity_is_accepted_only_for_the_trusted_certificate() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    let (trusted_cert, trusted_key) = user_certificate(dir.path(), "operator");
    let (unknown_cert, unknown_key) = user_certificate(dir.path(), "intruder");
    // Over Basic256Sha256 SignAndEncrypt and Aes128_Sha256_RsaOaep Sign; the server knows
    // only the first certificate.
    let sim = sim_with(
        dir.path(),
        vec![
            (
                SecurityPolicy::Basic256Sha256,
                MessageSecurityMode::SignAndEncrypt,
            ),
            (
                SecurityPolicy::Aes128Sha256RsaOaep,
                MessageSecurityMode::Sign,
            ),
        ],
        vec![trusted_cert.clone()],
    )
    .await;
    let tags = vec![(
        "sim/speed".to_owned(),
        sim.node_text("Double").expect("node"),
        "f64",
        "",
    )];
    let mut txs = Vec::new();
    for (n, policy, mode, cert, key) in [
        (
            0,
            "basic256sha256",
            "sign_and_encrypt",
            &trusted_cert,
            &trusted_key,
        ),
        (
            1,
            "aes128_sha256_rsaoaep",
            "sign",
            &trusted_cert,
            &trusted_key,
        ),
        (
            2,
            "basic256sha256",
            "sign_and_encrypt",
            &unknown_cert,
            &unknown_key,
        ),
    ] {
        let pki = dir.path().join(format!("pki{n}"));
        trust_sim(&sim, &pki);
        let extra = format!(
            "security_policy = \"{policy}\"\nsecurity_mode = \"{mode}\"\n\
             user_certificate = {}\nuser_private_key = {}",
            q(&cert.display().to_string()),
            q(&key.display().to_string())
        );
        let config = tx_config(&sim, &pki, &extra, &tags, "");
        assert!(matches!(
            config.opcua[0].identity,
            config::opcua::Identity::Certificate { .. }
        ));
        txs.push(Transmitter::start(config).await.expect("transmitter"));
    }
    // On whole 100 ns ticks: OPC UA's DateTime holds no finer.
    let time = 1_750_000_000_123_456_700;
    sim.set("Double", Value::Double(9.75), Quality::GOOD, time)
        .expect("set");
    for tx in &txs[..2] {
        let table = tx.table();
        wait_for("values with the trusted user certificate", || {
            current(&table, "sim/speed").is_some_and(|s| {
                s.value == Value::Double(9.75) && s.quality == Quality::GOOD && s.time == time
            })
        })
        .await;
        assert!(sim_health(tx).connected());
    }
    let refused = sim_health(&txs[2]);
    wait_for("the unknown user certificate refused", || {
        !refused.last_error().is_empty()
    })
    .await;
    // What the operator sees on the status page: which certificate was refused, and why.
    let status = txs[2].status.status(&observe::Query::default());
    let error = status["opcua"][0]["last_error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        error.contains("refused the user certificate")
            && error.contains(&unknown_cert.display().to_string())
            && error.contains("BadIdentityTokenRejected"),
        "{error}"
    );
    assert_eq!(status["opcua"][0]["connected"], false);
    assert!(!refused.connected());
    assert_eq!(
        current(&txs[2].table(), "sim/speed").map(|s| s.quality),
        Some(BAD_NOT_CONNECTED)
    );
    // The server's side: the two sessions that read were the certificate's user, each over
    // its own policy and mode; nobody read anonymously or as anyone else.
    let x509 = |policy: SecurityPolicy, mode| Reader {
        user_token: x509_token_id(0),
        ..anonymous_reader(policy, mode)
    };
    let mut readers = sim.readers();
    readers.sort_by(|a, b| a.security_policy_uri.cmp(&b.security_policy_uri));
    let mut expect = vec![
        x509(
            SecurityPolicy::Basic256Sha256,
            MessageSecurityMode::SignAndEncrypt,
        ),
        x509(
            SecurityPolicy::Aes128Sha256RsaOaep,
            MessageSecurityMode::Sign,
        ),
    ];
    expect.sort_by(|a, b| a.security_policy_uri.cmp(&b.security_policy_uri));
    assert_eq!(readers, expect);
    assert_eq!(sim.mutations().total(), 0);
}
