//! The MQTT sink as a Sparkplug B edge node, end to end: simulated PLC → gateway-tx →
//! gateway-rx (store → spool) → an embedded broker (rumqttd) → a subscriber decoding every
//! message with the protobuf types of the specification's .proto.
//!
//! Checked: NBIRTH first (seq 0, a bdSeq), a DBIRTH for the PLC's device with every metric's
//! name, alias and datatype; every sample of the transmitter's history buffer arrives as a DDATA
//! metric by alias (resolving to its tag through the DBIRTH) with its source time and value;
//! seq numbers every message after NBIRTH by one, wrapping after 255; an NCMD
//! `Node Control/Rebirth` brings NBIRTH (same bdSeq, seq 0) and DBIRTH again; the receiver
//! going away leaves its will, the NDEATH with the NBIRTH's bdSeq.

#[allow(dead_code)] // the shared helpers serve several test files
mod common;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::peers::embedded_broker;
use common::peers::unique;
use common::toml_path;
use common::{PROCESS_PERIOD, init_tracing, parse_rx, parse_tx, rx_toml_with, tx_toml_with};
use gateway_rx::Receiver;
use gateway_rx::sinks::mqtt::sparkplug::{REBIRTH, pb};
use gateway_tx::Transmitter;
use prost::Message as _;
use tests::plc_sim::PlcSim;

type Seen = Arc<Mutex<Vec<(String, pb::Payload)>>>;

/// Subscribes to the group's topics; returns what arrives and a client to send commands with.
async fn subscribe(broker: SocketAddr, group: &str) -> (Seen, rumqttc::AsyncClient) {
    let mut o = rumqttc::MqttOptions::new(unique("host"), "127.0.0.1", broker.port());
    o.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut ev) = rumqttc::AsyncClient::new(o, 100);
    client
        .subscribe(format!("spBv1.0/{group}/#"), rumqttc::QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    let seen: Seen = Arc::default();
    let (seen2, suback) = (seen.clone(), Arc::new(tokio::sync::Notify::new()));
    let suback2 = suback.clone();
    tokio::spawn(async move {
        loop {
            match ev.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                    let payload = pb::Payload::decode(&p.payload[..]).expect("a Sparkplug payload");
                    seen2.lock().expect("lock").push((p.topic, payload));
                }
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))) => suback2.notify_one(),
                Ok(_) => {}
                Err(e) => panic!("subscriber lost the broker: {e}"),
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(10), suback.notified())
        .await
        .expect("SUBACK");
    (seen, client)
}

fn kind(topic: &str) -> &str {
    topic.split('/').nth(2).unwrap_or("")
}

fn value_of(m: &pb::Metric) -> Option<f64> {
    use pb::metric::Value as M;
    Some(match m.value.as_ref()? {
        M::IntValue(x) => f64::from(*x as i32),
        M::LongValue(x) => *x as i64 as f64,
        M::FloatValue(x) => f64::from(*x),
        M::DoubleValue(x) => *x,
        M::BooleanValue(b) => f64::from(u8::from(*b)),
        _ => return None,
    })
}

fn number(v: &protocol::model::Value) -> Option<f64> {
    use protocol::model::Value as V;
    Some(match v {
        V::Boolean(b) => f64::from(u8::from(*b)),
        V::Int16(x) => f64::from(*x),
        V::Int32(x) => f64::from(*x),
        V::Int64(x) => *x as f64,
        V::UInt16(x) => f64::from(*x),
        V::UInt32(x) => f64::from(*x),
        V::UInt64(x) => *x as f64,
        V::Float(x) => f64::from(*x),
        V::Double(x) => *x,
        _ => return None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sparkplug_births_data_by_alias_seq_rebirth_and_death() {
    init_tracing();
    let broker = embedded_broker(1 << 20);
    let group = unique("plant");
    let (seen, host) = subscribe(broker, &group).await;

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
            "\n[store]\npath = {}\n[mqtt]\nhost = \"127.0.0.1\"\nport = {}\nclient_id = \"{}\"\n\
             qos = 1\nformat = \"sparkplug_b\"\ngroup_id = \"{group}\"\nedge_node_id = \"gw\"\n",
            toml_path(&dir.path().join("rx/history.sqlite")),
            broker.port(),
            unique("gw"),
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
        &format!(
            "\n[history]\ndir = {}\ncarousel_window_s = 10\nmax_age_s = 3600\n",
            toml_path(&dir.path().join("tx-history"))
        ),
    );
    let tx = Transmitter::start(parse_tx(&tx_toml))
        .await
        .expect("gateway-tx");
    tokio::time::sleep(Duration::from_secs(3)).await;
    plc.stop_process();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let want: BTreeMap<(String, i64), protocol::model::Value> =
        gateway_tx::history::log::read_records(&dir.path().join("tx-history"))
            .expect("TX log")
            .into_iter()
            .map(|(_, name, s)| ((name.expect("names"), s.time), s.value))
            .collect();
    assert!(want.len() > 100, "the buffer holds {} samples", want.len());

    // Every sample arrives as DDATA, by alias.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (names, got) = loop {
        let msgs = seen.lock().expect("lock").clone();
        let mut names: HashMap<u64, String> = HashMap::new();
        let mut got: BTreeMap<(String, i64), (Option<f64>, bool)> = BTreeMap::new();
        for (topic, p) in &msgs {
            match kind(topic) {
                "DBIRTH" => {
                    for m in &p.metrics {
                        let name = m.name.clone().expect("a DBIRTH metric has its name");
                        assert!(m.datatype.is_some(), "{name}: datatype");
                        let alias = m.alias.expect("every metric has an alias");
                        names.insert(alias, name);
                    }
                }
                "DDATA" => {
                    for m in &p.metrics {
                        assert!(m.name.is_none(), "data goes by alias only");
                        let alias = m.alias.expect("alias");
                        let name = names.get(&alias).expect("the alias was born").clone();
                        let ms = m.timestamp.expect("source time") as i64;
                        got.insert((name, ms), (value_of(m), m.is_historical == Some(true)));
                    }
                }
                _ => {}
            }
        }
        let all = want
            .keys()
            .all(|(t, ns)| got.contains_key(&(t.clone(), ns.div_euclid(1_000_000))));
        if all || Instant::now() > deadline {
            break (names, got);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for ((tag, ns), v) in &want {
        let Some((x, _)) = got.get(&(tag.clone(), ns.div_euclid(1_000_000))) else {
            panic!(
                "{tag} at {ns} did not arrive; {} of {} did",
                got.len(),
                want.len()
            );
        };
        if let (Some(w), Some(x)) = (number(v), x) {
            assert!(
                (w - x).abs() <= 1e-6 * w.abs().max(1.0),
                "{tag}: {w} vs {x}"
            );
        }
    }
    assert!(names.len() >= 2, "aliases: {names:?}");

    // Births first, seq by one from NBIRTH.
    let msgs = seen.lock().expect("lock").clone();
    assert_eq!(kind(&msgs[0].0), "NBIRTH", "{:?}", msgs[0].0);
    let nbirth = &msgs[0].1;
    assert_eq!(nbirth.seq, Some(0));
    let bd_seq = nbirth
        .metrics
        .iter()
        .find(|m| m.name.as_deref() == Some("bdSeq"))
        .and_then(|m| m.value.clone())
        .expect("bdSeq");
    assert!(
        nbirth
            .metrics
            .iter()
            .any(|m| m.name.as_deref() == Some(REBIRTH))
    );
    // Each NBIRTH (one at connection, one once the catalogue has arrived) starts again at 0.
    let mut next = 0u64;
    for (i, (topic, p)) in msgs.iter().enumerate() {
        if kind(topic) == "NBIRTH" {
            next = 0;
        }
        assert_eq!(p.seq, Some(next % 256), "message {i} on {topic}");
        next += 1;
    }
    let births: Vec<&str> = msgs
        .iter()
        .map(|(t, _)| kind(t))
        .filter(|k| k.ends_with("BIRTH"))
        .collect();
    assert!(
        births.windows(2).any(|w| w == ["NBIRTH", "DBIRTH"]),
        "{births:?}"
    );

    // A rebirth on command.
    let before = msgs.len();
    let cmd = pb::Payload {
        metrics: vec![pb::Metric {
            name: Some(REBIRTH.into()),
            datatype: Some(11),
            value: Some(pb::metric::Value::BooleanValue(true)),
            ..Default::default()
        }],
        ..Default::default()
    };
    host.publish(
        format!("spBv1.0/{group}/NCMD/gw"),
        rumqttc::QoS::AtLeastOnce,
        false,
        cmd.encode_to_vec(),
    )
    .await
    .expect("NCMD");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let msgs = seen.lock().expect("lock").clone();
        let after: Vec<_> = msgs[before..]
            .iter()
            .filter(|(t, _)| kind(t) != "NCMD")
            .collect();
        if let Some(i) = after.iter().position(|(t, _)| kind(t) == "NBIRTH") {
            let (_, nb) = after[i];
            assert_eq!(nb.seq, Some(0));
            let again = nb
                .metrics
                .iter()
                .find(|m| m.name.as_deref() == Some("bdSeq"));
            assert_eq!(
                again.and_then(|m| m.value.clone()),
                Some(bd_seq.clone()),
                "a rebirth keeps bdSeq"
            );
            if let Some((t, db)) = after.get(i + 1) {
                assert_eq!(kind(t), "DBIRTH");
                assert_eq!(db.seq, Some(1));
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no rebirth after NCMD: {after:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The will: NDEATH with the same bdSeq once the receiver is gone.
    drop(tx);
    drop(rx);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let msgs = seen.lock().expect("lock").clone();
        if let Some((_, d)) = msgs.iter().find(|(t, _)| kind(t) == "NDEATH") {
            assert_eq!(d.metrics[0].name.as_deref(), Some("bdSeq"));
            assert_eq!(d.metrics[0].value, Some(bd_seq));
            break;
        }
        assert!(Instant::now() < deadline, "no NDEATH");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
