//! OPC UA end to end: how many tag changes per second get from a plant OPC UA server through
//! gateway-tx, the link and gateway-rx's mirror to a client subscribed to the mirror, and how
//! long each takes (source timestamp at the plant to the data change at the subscriber), at
//! 1,000 and 10,000 tags. The baseline, measured in the same run with the same server, client
//! and load, is that client subscribed to the plant directly: ratios say what the gateway costs.
//!
//! Everything runs in this one process on loopback (the simulated plant, both daemons' tasks,
//! the client), so the machine's cores are shared by all of it, as they are by the baseline.
//!
//! Two loads per tag count:
//! - paced: every tag changes once a second (1,000 and 10,000 changes/s), changes spread over
//!   10 ms ticks; latency median, p99 and max of the changes that arrived, and the share that
//!   arrived (each change is distinct, so any missing one is counted);
//! - flat out: every tag changes at every 10 ms tick, as fast as the plant server takes it;
//!   data changes per second at the subscriber (latest wins on every hop, so fewer may arrive
//!   than were made: what matters is how many reach the subscriber).
//!
//! `cargo bench -p tests --bench opcua` (OPCUA_SECONDS=3 per phase by default); figures also
//! go to target/bench/opcua.json.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use gateway_rx::Receiver;
use gateway_tx::Transmitter;
use opcua::client::{ClientBuilder, DataChangeCallback, IdentityToken, Session};
use opcua::types::{
    AttributeId, MessageSecurityMode, MonitoredItemCreateRequest, MonitoringMode,
    MonitoringParameters, NodeId, ReadValueId, StatusCode, TimestampsToReturn,
};
use protocol::model::{Quality, UnixNanos, Value};
use tests::opcua_sim::{OpcUaSim, SimConfig};

const PLANT_NS: &str = "urn:plant:bench";
const MIRROR_NS: &str = "urn:gateway:mirror:bench";
const TICK: Duration = Duration::from_millis(10);

/// What the subscriber saw: latency of every data change (source timestamp to arrival).
#[derive(Default)]
struct Seen {
    latencies_ns: Vec<i64>,
    /// Data changes carrying a value set after `since` (the phase's start).
    count: u64,
    since: UnixNanos,
}

struct Phase {
    offered: u64,
    seconds: f64,
    seen: u64,
    latencies_ns: Vec<i64>,
}

impl Phase {
    fn offered_per_s(&self) -> f64 {
        self.offered as f64 / self.seconds
    }
    fn seen_per_s(&self) -> f64 {
        self.seen as f64 / self.seconds
    }
    fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies_ns.is_empty() {
            return f64::NAN;
        }
        let i = ((self.latencies_ns.len() - 1) as f64 * p).round() as usize;
        self.latencies_ns[i] as f64 / 1e6
    }
}

async fn connect(url: &str, pki: &Path) -> anyhow::Result<Arc<Session>> {
    let mut client = ClientBuilder::new()
        .application_name("gateway OPC UA bench client")
        .application_uri("urn:gateway:bench:client")
        .pki_dir(pki)
        .create_sample_keypair(true)
        .trust_server_certs(true)
        .session_retry_limit(0)
        .client()
        .map_err(|e| anyhow!("client config: {e:?}"))?;
    let (session, event_loop) = client
        .connect_to_matching_endpoint(
            (url, "None", MessageSecurityMode::None),
            IdentityToken::Anonymous,
        )
        .await
        .map_err(|e| anyhow!("connect {url}: {e}"))?;
    event_loop.spawn();
    if !session.wait_for_connection().await {
        return Err(anyhow!("no session with {url}"));
    }
    Ok(session)
}

/// Subscribes to every node (sampling 0: each change as it comes; queue 1: latest wins), and
/// records what arrives in `seen`.
async fn subscribe(
    session: &Session,
    nodes: Vec<NodeId>,
    seen: Arc<Mutex<Seen>>,
) -> anyhow::Result<()> {
    let sub = session
        .create_subscription(
            TICK,
            1000,
            20,
            // At most 1000 notifications a Publish response: 10,000 in one exceed what
            // async-opcua's client takes in one message.
            1000,
            0,
            true,
            DataChangeCallback::new(move |v, _| {
                let now = gateway_tx::unix_now();
                let Some(t) = v
                    .source_timestamp
                    .as_ref()
                    .and_then(gateway_tx::opcua::convert::unix_nanos)
                else {
                    return;
                };
                let mut s = seen.lock().unwrap_or_else(|e| e.into_inner());
                if t >= s.since {
                    s.count += 1;
                    s.latencies_ns.push(now - t);
                }
            }),
        )
        .await
        .context("subscription")?;
    for chunk in nodes.chunks(1000) {
        let items = chunk
            .iter()
            .map(|n| MonitoredItemCreateRequest {
                item_to_monitor: ReadValueId {
                    node_id: n.clone(),
                    attribute_id: AttributeId::Value as u32,
                    ..Default::default()
                },
                monitoring_mode: MonitoringMode::Reporting,
                requested_parameters: MonitoringParameters {
                    sampling_interval: 0.0,
                    queue_size: 1,
                    discard_oldest: true,
                    ..Default::default()
                },
            })
            .collect();
        let created = session
            .create_monitored_items(sub, TimestampsToReturn::Both, items)
            .await
            .context("monitored items")?;
        if let Some(bad) = created
            .iter()
            .find(|c| c.result.status_code != StatusCode::Good)
        {
            return Err(anyhow!(
                "monitored item refused: {}",
                bad.result.status_code
            ));
        }
    }
    Ok(())
}

/// Drives the plant for `seconds`: each 10 ms tick sets `per_tick` tags (round-robin) to a
/// fresh value with the current time as source timestamp. Returns what the subscriber saw of
/// changes made during the phase, counted after a drain of one second.
async fn drive(
    sim: &OpcUaSim,
    names: &[String],
    per_tick: usize,
    seconds: f64,
    seen: &Arc<Mutex<Seen>>,
) -> anyhow::Result<Phase> {
    let start_ns = gateway_tx::unix_now();
    {
        let mut s = seen.lock().unwrap_or_else(|e| e.into_inner());
        s.since = start_ns;
        s.count = 0;
        s.latencies_ns.clear();
    }
    let start = Instant::now();
    let mut next = 0usize;
    let mut offered = 0u64;
    let mut value = 0.0f64;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    while start.elapsed().as_secs_f64() < seconds {
        tick.tick().await;
        let t = gateway_tx::unix_now();
        value += 1.0;
        let batch = (0..per_tick.min(names.len())).map(|_| {
            let name = names[next].as_str();
            next = (next + 1) % names.len();
            (name, Value::Double(value), Quality::GOOD, t)
        });
        sim.set_many(batch)?;
        offered += per_tick.min(names.len()) as u64;
    }
    let elapsed = start.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut s = seen.lock().unwrap_or_else(|e| e.into_inner());
    let mut latencies = std::mem::take(&mut s.latencies_ns);
    latencies.sort_unstable();
    Ok(Phase {
        offered,
        seconds: elapsed,
        seen: s.count,
        latencies_ns: latencies,
    })
}

async fn wait_initial(seen: &Arc<Mutex<Seen>>, tags: usize) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        if seen.lock().map(|s| s.count).unwrap_or(0) >= tags as u64 {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(120) {
            return Err(anyhow!("initial values did not all arrive"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

struct Run {
    tags: usize,
    path: &'static str,
    paced: Phase,
    flat: Phase,
}

async fn run(tags: usize, via_gateway: bool, seconds: f64) -> anyhow::Result<Run> {
    let dir = tempfile::tempdir()?;
    let sim = OpcUaSim::start_new(
        SimConfig {
            namespace_uri: PLANT_NS.into(),
            secure: false,
            pki_dir: dir.path().join("plant-pki"),
            load_variables: tags,
            user: None,
        },
        0,
    )
    .await?;
    let names: Vec<String> = (0..tags).map(|i| format!("Load.{i}")).collect();
    let seen = Arc::new(Mutex::new(Seen::default()));
    // Kept alive for the run.
    let mut _daemons: Option<(Receiver, Transmitter)> = None;
    let (url, nodes_of): (String, Box<dyn Fn(u16) -> Vec<NodeId>>) = if via_gateway {
        let link_port = tests::free_udp_port()?;
        let rx_text = format!(
            "[link]\ninsecure_no_key = true\nbind = \"127.0.0.1:{link_port}\"\n\n[opcua_server]\nbind = \"127.0.0.1:0\"\n\
             namespace_uri = \"{MIRROR_NS}\"\npki_dir = \"{}\"\nmax_monitored_items_per_subscription = 100000\n\n\
             [status]\nlog_interval_s = 3600\n\n[store]\nenabled = false\n",
            dir.path().join("mirror-pki").display()
        );
        let rx = Receiver::start(
            config::rx::RxConfig::parse(&rx_text, Path::new("bench/gateway-rx.toml"))
                .map_err(|e| anyhow!("{e}"))?,
        )
        .await?;
        let mut tx_text = format!(
            "[link]\ninsecure_no_key = true\ndestination = \"127.0.0.1:{link_port}\"\n\n[[opcua]]\nname = \"plant\"\n\
             url = \"{}\"\npki_dir = \"{}\"\npublishing_interval_ms = 10\n",
            sim.url(),
            dir.path().join("tx-pki").display()
        );
        for name in &names {
            tx_text.push_str(&format!(
                "[[opcua.tag]]\nname = \"bench/{name}\"\nnode = \"nsu={PLANT_NS};s={name}\"\n\
                 type = \"f64\"\nsampling_interval_ms = 0\nqueue_size = 1\n"
            ));
        }
        let tx = Transmitter::start(
            config::tx::TxConfig::parse(&tx_text, Path::new("bench/gateway-tx.toml"))
                .map_err(|e| anyhow!("{e}"))?,
        )
        .await?;
        let url = rx
            .opcua_endpoint
            .clone()
            .ok_or_else(|| anyhow!("no mirror"))?;
        _daemons = Some((rx, tx));
        let names = names.clone();
        (
            url,
            Box::new(move |ns| {
                names
                    .iter()
                    .map(|n| NodeId::new(ns, format!("bench/{n}")))
                    .collect()
            }),
        )
    } else {
        let names = names.clone();
        (
            sim.url(),
            Box::new(move |ns| names.iter().map(|n| NodeId::new(ns, n.as_str())).collect()),
        )
    };
    let session = connect(&url, &dir.path().join("client-pki")).await?;
    let uri = if via_gateway { MIRROR_NS } else { PLANT_NS };
    // The mirror's namespace appears once the catalogue arrived; retry briefly.
    let start = Instant::now();
    let ns = loop {
        match session.get_namespace_index(uri).await {
            Ok(ns) => break ns,
            Err(_) if start.elapsed() < Duration::from_secs(30) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(anyhow!("namespace {uri}: {e}")),
        }
    };
    // Every tag first has a value from the plant (the gateway's catalogue and snapshot).
    sim.set_many(names.iter().map(|n| {
        (
            n.as_str(),
            Value::Double(-1.0),
            Quality::GOOD,
            gateway_tx::unix_now(),
        )
    }))?;
    {
        seen.lock().map_err(|_| anyhow!("poisoned"))?.since = 0;
    }
    let start = Instant::now();
    loop {
        // Subscribing before the mirror has every node would get BadNodeIdUnknown items.
        let reads: Vec<ReadValueId> = nodes_of(ns)
            .into_iter()
            .map(|node_id| ReadValueId {
                node_id,
                attribute_id: AttributeId::Value as u32,
                ..Default::default()
            })
            .collect();
        let mut good = 0;
        for chunk in reads.chunks(1000) {
            let v = session.read(chunk, TimestampsToReturn::Both, 0.0).await?;
            good += v
                .iter()
                .filter(|d| d.status == Some(StatusCode::Good))
                .count();
        }
        if good == tags {
            break;
        }
        if start.elapsed() > Duration::from_secs(120) {
            return Err(anyhow!("only {good} of {tags} tags Good at {url}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    subscribe(&session, nodes_of(ns), seen.clone()).await?;
    wait_initial(&seen, tags).await?;
    let paced = drive(&sim, &names, tags / 100, seconds, &seen).await?;
    let flat = drive(&sim, &names, tags, seconds, &seen).await?;
    let _ = session.disconnect().await;
    Ok(Run {
        tags,
        path: if via_gateway {
            "plant -> gateway -> mirror -> client"
        } else {
            "plant -> client (baseline)"
        },
        paced,
        flat,
    })
}

fn json_phase(p: &Phase) -> serde_json::Value {
    serde_json::json!({
        "offered_per_s": p.offered_per_s(),
        "seen_per_s": p.seen_per_s(),
        "delivered_share": p.seen as f64 / p.offered.max(1) as f64,
        "latency_ms": {
            "p50": p.percentile_ms(0.5),
            "p99": p.percentile_ms(0.99),
            "max": p.percentile_ms(1.0),
        },
    })
}

fn main() -> anyhow::Result<()> {
    let seconds: f64 = std::env::var("OPCUA_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut runs = Vec::new();
    for tags in [1_000usize, 10_000] {
        for via in [false, true] {
            eprintln!("opcua bench: {tags} tags, via gateway: {via} ...");
            runs.push(rt.block_on(run(tags, via, seconds))?);
        }
    }
    println!(
        "\n== OPC UA end to end ({seconds} s a phase, one process on loopback, {} CPUs)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "{:>6} | {:<38} | {:>9} {:>9} {:>7} | {:>8} {:>8} {:>8} | {:>9} {:>9} {:>7}",
        "tags",
        "path",
        "paced/s",
        "arrived",
        "share",
        "p50 ms",
        "p99 ms",
        "max ms",
        "flat/s",
        "arrived/s",
        "ratio"
    );
    let mut json = Vec::new();
    for pair in runs.chunks(2) {
        let (base, gw) = (&pair[0], &pair[1]);
        for r in pair {
            let ratio = r.flat.seen_per_s() / base.flat.seen_per_s();
            println!(
                "{:>6} | {:<38} | {:>9.0} {:>9.0} {:>6.1}% | {:>8.2} {:>8.2} {:>8.2} | {:>9.0} {:>9.0} {:>6.2}x",
                r.tags,
                r.path,
                r.paced.offered_per_s(),
                r.paced.seen_per_s(),
                100.0 * r.paced.seen as f64 / r.paced.offered.max(1) as f64,
                r.paced.percentile_ms(0.5),
                r.paced.percentile_ms(0.99),
                r.paced.percentile_ms(1.0),
                r.flat.offered_per_s(),
                r.flat.seen_per_s(),
                ratio
            );
            json.push(serde_json::json!({
                "tags": r.tags,
                "path": r.path,
                "paced": json_phase(&r.paced),
                "flat_out": json_phase(&r.flat),
                "flat_out_ratio_to_baseline": ratio,
            }));
        }
        println!(
            "{:>6} | gateway adds {:.2} ms at the median, {:.2} ms at p99 (paced)",
            gw.tags,
            gw.paced.percentile_ms(0.5) - base.paced.percentile_ms(0.5),
            gw.paced.percentile_ms(0.99) - base.paced.percentile_ms(0.99),
        );
    }
    println!(
        "  paced: every tag changes once a second; arrived: data changes at the subscriber, share of changes made;\n  flat: every tag changes every 10 ms as fast as the plant server takes it; ratio: arrived/s against the baseline"
    );
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("opcua.json"),
        serde_json::to_string_pretty(&serde_json::json!({
            "seconds_per_phase": seconds,
            "runs": json,
        }))?,
    )?;
    Ok(())
}
