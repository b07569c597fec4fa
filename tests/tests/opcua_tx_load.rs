//! Throughput of the OPC UA source: updates per second from the simulated server into the tag
//! table, by subscription, with 1,000 and 10,000 tags. Ignored by default (it measures, it does
//! not check a target):
//!
//! `cargo test -p tests --release --test opcua_tx_load -- --ignored --nocapture`

use std::path::Path;
use std::time::{Duration, Instant};

use config::tx::TxConfig;
use gateway_tx::Transmitter;
use protocol::model::{Quality, Value};
use tests::opcua_sim::{OpcUaSim, SimConfig};

async fn run(tags: usize, seconds: u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = OpcUaSim::start_new(
        SimConfig {
            namespace_uri: "urn:plant:load".into(),
            secure: false,
            pki_dir: dir.path().join("server-pki"),
            load_variables: tags,
            user: None,
        },
        0,
    )
    .await
    .expect("sim");
    let port = tests::free_udp_port().expect("port");
    let mut s = format!(
        "[link]\ninsecure_no_key = true\ndestination = \"127.0.0.1:{port}\"\n[[opcua]]\nname = \"load\"\nurl = \"{}\"\n\
         pki_dir = \"{}\"\npublishing_interval_ms = 100\n",
        sim.url(),
        dir.path().join("pki").display()
    );
    for i in 0..tags {
        s.push_str(&format!(
            "[[opcua.tag]]\nname = \"load/t{i}\"\nnode = \"nsu=urn:plant:load;s=Load.{i}\"\ntype = \"f64\"\nsampling_interval_ms = 0\nqueue_size = 10\n"
        ));
    }
    let config = TxConfig::parse(&s, Path::new("load.toml")).expect("config");
    let tx = Transmitter::start(config).await.expect("transmitter");
    let table = tx.table();
    let sources = tx.status.sources();
    let health = &sources.get("load").expect("endpoint load").health;
    let names: Vec<String> = (0..tags).map(|i| format!("Load.{i}")).collect();
    let start = Instant::now();
    while table.quality_counts().good < tags as u64 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "tags not all Good"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let setup = start.elapsed();
    let before = health.polls_ok();
    let t0 = Instant::now();
    let mut rounds = 0u64;
    while t0.elapsed() < Duration::from_secs(seconds) {
        rounds += 1;
        let t = gateway_tx::unix_now();
        sim.set_many(
            names
                .iter()
                .map(|n| (n.as_str(), Value::Double(rounds as f64), Quality::GOOD, t)),
        )
        .expect("set");
        // A new value for every tag each 20 ms at most: more than the subscription's 100 ms
        // publishing interval delivers, so what arrives is what the client side can take.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Wait for the last round to arrive everywhere.
    let last = Value::Double(rounds as f64);
    let settle = Instant::now();
    while (0..tags as u32).any(|i| table.current(i).map(|s| s.value) != Some(last.clone())) {
        assert!(
            settle.elapsed() < Duration::from_secs(30),
            "last round not delivered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let received = health.polls_ok() - before;
    println!(
        "opcua load: {tags} tags, subscription setup {:.2} s, {rounds} rounds of all tags set in {elapsed:.2} s, \
         {received} data changes received ({:.0} updates/s; {:.0}% of those set), last round complete",
        setup.as_secs_f64(),
        received as f64 / elapsed,
        received as f64 * 100.0 / (rounds as f64 * tags as f64)
    );
    assert_eq!(sim.mutations().total(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; run with --ignored --nocapture"]
async fn updates_per_second_1k_tags() {
    run(1_000, 5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; run with --ignored --nocapture"]
async fn updates_per_second_10k_tags() {
    run(10_000, 5).await;
}
