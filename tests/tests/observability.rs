//! What operators see, end to end: both daemons' HTTP servers (metrics, health, status JSON and
//! page) on the whole chain, scraped with a plain HTTP/1.1 client over a TCP socket, after a
//! run with loss beyond FEC, a cut link and a stopped transmitter; and the server's refusals
//! and bounds (read-only methods, sizes, connection limit).

#[allow(dead_code)]
mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{CONVERGE, Chain, PROCESS_PERIOD, Setup, eventually, parse_rx, rx_toml};
use gateway_rx::Receiver;
use observe::prom;
use protocol::decoder::DecoderStats;
use protocol::message::Stream;
use protocol::model::Quality;
use tests::relay::Impairments;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const HTTP: &str = "\n[http]\nbind = \"127.0.0.1:0\"\n";

/// One answer, as read off the socket.
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// Sends `raw` (a whole request) on a new connection and reads the answer until the server
/// closes it.
async fn exchange(addr: SocketAddr, raw: &[u8]) -> Result<Answer, String> {
    let io = async {
        let mut s = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        s.write_all(raw).await.map_err(|e| format!("write: {e}"))?;
        let mut bytes = Vec::new();
        s.read_to_end(&mut bytes)
            .await
            .map_err(|e| format!("read: {e}"))?;
        Ok::<_, String>(bytes)
    };
    let bytes = tokio::time::timeout(Duration::from_secs(10), io)
        .await
        .map_err(|_| "HTTP exchange timed out".to_owned())??;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no end of head in {text:?}"))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status in {head:?}"))?;
    Ok(Answer {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    })
}

async fn request(addr: SocketAddr, method: &str, path: &str) -> Answer {
    let raw = format!("{method} {path} HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n\r\n");
    exchange(addr, raw.as_bytes())
        .await
        .unwrap_or_else(|e| panic!("{method} {path} on {addr}: {e}"))
}

async fn get(addr: SocketAddr, path: &str) -> Answer {
    request(addr, "GET", path).await
}

fn metric(text: &str, series: &str) -> f64 {
    prom::find(text, series).unwrap_or_else(|| panic!("no series {series} in:\n{text}"))
}

/// Every decoder counter as its series on `/metrics`.
fn decoder_series(s: &DecoderStats) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = [
        (
            "gateway_rx_link_datagrams_received_total",
            s.datagrams_received,
        ),
        ("gateway_rx_link_bytes_received_total", s.bytes_received),
        (
            "gateway_rx_link_datagrams_missing_total",
            s.datagrams_missing,
        ),
        (
            "gateway_rx_link_datagrams_repaired_total",
            s.datagrams_repaired,
        ),
        (
            "gateway_rx_link_data_datagrams_lost_total",
            s.data_datagrams_lost,
        ),
        ("gateway_rx_link_datagrams_late_total", s.late),
        ("gateway_rx_link_frame_errors_total", s.frame_errors),
        ("gateway_rx_link_decode_errors_total", s.decode_errors),
        ("gateway_rx_session_changes_total", s.session_changes),
    ]
    .into_iter()
    .map(|(n, v)| (n.to_owned(), v))
    .collect();
    for (outcome, n) in [
        ("accepted", s.datagrams_accepted),
        ("bad_length", s.bad_length),
        ("bad_magic", s.bad_magic),
        ("crc_failure", s.crc_failures),
        ("bad_version", s.bad_version),
        ("malformed", s.malformed),
        ("auth_failure", s.auth_failures),
        ("duplicate", s.duplicates),
        ("out_of_window", s.out_of_window),
        ("stale_session", s.stale_session_dropped),
        ("replayed", s.replayed),
        ("key_rate_limited", s.key_rate_limited),
    ] {
        v.push((
            format!("gateway_rx_link_datagrams_total{{outcome=\"{outcome}\"}}"),
            n,
        ));
    }
    for (outcome, n) in [
        ("repaired", s.groups_repaired),
        ("lost", s.groups_lost),
        ("failed", s.fec_failures),
    ] {
        v.push((
            format!("gateway_rx_link_fec_groups_total{{outcome=\"{outcome}\"}}"),
            n,
        ));
    }
    for st in Stream::ALL {
        v.push((
            format!(
                "gateway_rx_messages_delivered_total{{stream=\"{}\"}}",
                st.name()
            ),
            s.delivered(st),
        ));
        v.push((
            format!("gateway_rx_messages_lost_total{{stream=\"{}\"}}", st.name()),
            s.lost(st),
        ));
    }
    v
}

/// The receiver restarted from its config with `[http]` added, so its HTTP server runs.
async fn with_http(c: &mut Chain) -> SocketAddr {
    let toml = format!("{}{HTTP}", c.rx_toml);
    c.restart_rx(&toml).await;
    c.rx().http_addr.expect("the RX config has [http]")
}

async fn wait_health(addr: SocketAddr, status: u16, what: &str) -> Answer {
    let mut last = None;
    eventually(what, CONVERGE, async || {
        let a = get(addr, "/health").await;
        let ok = a.status == status;
        let why = format!("{} {}", a.status, a.body);
        last = Some(a);
        if ok { Ok(()) } else { Err(why) }
    })
    .await;
    last.expect("at least one answer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_health_and_status_pages_after_loss_a_cut_and_a_stop() {
    let mut c = Chain::start(Setup {
        seed: 11,
        tx_link_extra: HTTP,
        ..Setup::default()
    })
    .await;
    let rx_http = with_http(&mut c).await;
    let tx_http = c.tx().http_addr.expect("the TX config has [http]");

    // Healthy once the catalogue and a heartbeat arrived.
    let h = wait_health(rx_http, 200, "gateway-rx healthy").await;
    assert_eq!(h.header("content-type"), Some("application/json"));
    assert_eq!(
        h.json(),
        serde_json::json!({ "status": "ok", "reasons": [] })
    );
    {
        let rx = c.rx();
        eventually("every tag Good", CONVERGE, async || {
            common::qualities_are(rx, Quality::GOOD)
        })
        .await;
    }
    let h = get(tx_http, "/health").await;
    assert_eq!((h.status, h.json()["status"].as_str()), (200, Some("ok")));

    // The transmitter's metrics: its device, its tags, its link.
    let m = get(tx_http, "/metrics").await;
    assert_eq!(m.status, 200);
    assert_eq!(
        m.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let t = &m.body;
    let tags = common::parse_tx(&c.tx_toml).devices[0].tags.len() as f64;
    assert_eq!(metric(t, "gateway_tx_device_up{device=\"plc1\"}"), 1.0);
    assert_eq!(metric(t, "gateway_tx_tags{quality=\"good\"}"), tags);
    assert_eq!(metric(t, "gateway_tx_catalogue_tags"), tags);
    assert_eq!(metric(t, "gateway_tx_link_sender_up"), 1.0);
    assert!(
        metric(
            t,
            "gateway_tx_device_polls_total{device=\"plc1\",outcome=\"ok\"}"
        ) > 0.0
    );
    assert!(metric(t, "gateway_tx_device_poll_latency_seconds{device=\"plc1\"}") > 0.0);
    assert!(metric(t, "gateway_tx_link_datagrams_sent_total") > 0.0);
    assert_eq!(
        metric(t, "gateway_tx_link_rate_limit_bits_per_second"),
        100e6,
        "the default rate"
    );
    for family in [
        "gateway_tx_link_rate_bits_per_second",
        "gateway_tx_link_pending_datagrams",
        "gateway_tx_change_queue_depth",
        "gateway_tx_samples_sent_total",
        "gateway_tx_samples_superseded_total",
    ] {
        assert!(t.contains(&format!("# TYPE {family} ")), "{family} missing");
    }

    // The status page shows the tags with their current values, escaped; the filter narrows
    // the table.
    let (name, value) = {
        let view = c.rx().state.view();
        let cat = view.catalogue().expect("a catalogue");
        let index = cat
            .index_of("plc1/line1/recipe/name")
            .expect("the string tag");
        let v = view.value(index).expect("a value");
        (
            cat.get(index).expect("the tag").name.to_owned(),
            observe::tags::value_text(v.value),
        )
    };
    assert!(
        value.starts_with('"'),
        "a string value is shown quoted: {value}"
    );
    let page = get(rx_http, "/").await;
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let csp = page.header("content-security-policy").expect("a CSP");
    assert!(csp.contains("default-src 'none'") && !csp.contains("unsafe-inline"));
    assert!(page.body.contains(&observe::page::escape(&name)));
    assert!(
        page.body.contains(&observe::page::escape(&value)),
        "the page shows {name} = {value}"
    );
    let filtered = get(rx_http, "/?tags=RECIPE%2Fname").await;
    assert!(filtered.body.contains("plc1/line1/recipe/name"));
    assert!(!filtered.body.contains("plc1/line1/pump1/speed"));
    assert!(filtered.body.contains("1 of 24 tags match"));
    let tx_page = get(tx_http, "/").await;
    assert!(tx_page.body.contains("plc1/line1/recipe/name"));
    assert!(tx_page.body.contains("Devices (Modbus TCP, read-only)"));

    // Loss beyond what FEC repairs: counted, and recorded as a gap in the status JSON.
    c.plc.run_process(PROCESS_PERIOD);
    c.relay.set(Impairments {
        loss: 0.4,
        ..Impairments::default()
    });
    // The loss is random and how much goes out in a second depends on how busy the machine is
    // (a fixed 2 s once saw 23 datagrams repaired and none lost): the loss stays on until a gap
    // shows, then stops.
    let mut status = serde_json::Value::Null;
    eventually("a loss gap in /api/status", CONVERGE, async || {
        status = get(rx_http, "/api/status").await.json();
        match status["gaps"].as_array() {
            Some(g) if !g.is_empty() => Ok(()),
            _ => Err(format!("no gap yet; counters {}", status["counters"])),
        }
    })
    .await;
    c.relay.set(Impairments::default());
    c.plc.stop_process();
    let gap = &status["gaps"][0];
    let lost_in_gap = gap["data_datagrams_lost"].as_u64().unwrap_or(0)
        + Stream::ALL
            .iter()
            .map(|s| gap["messages_lost"][s.name()].as_u64().unwrap_or(0))
            .sum::<u64>();
    assert!(lost_in_gap > 0, "an empty gap: {gap}");
    assert!(gap["start_ms"].as_i64() <= gap["end_ms"].as_i64(), "{gap}");
    assert!(status["gaps_total"].as_u64() >= Some(1));
    let tables = status["view"]["tables"].as_array().expect("tables");
    assert!(
        tables[0]["title"]
            .as_str()
            .unwrap_or("")
            .starts_with("Loss gaps")
            && !tables[0]["rows"].as_array().expect("rows").is_empty(),
        "the page's gap table lists it: {}",
        tables[0]
    );
    assert!(
        status["history"]["t"]
            .as_array()
            .is_some_and(|t| !t.is_empty())
    );
    let page = get(rx_http, "/").await;
    assert!(page.body.contains("Loss gaps"));
    assert!(!page.body.contains("no loss beyond repair since start"));

    // A cut link: health flips to 503 with the reason, and back.
    c.relay.set(Impairments {
        cut: true,
        ..Impairments::default()
    });
    let h = wait_health(rx_http, 503, "gateway-rx unhealthy on a cut link").await;
    let reasons = h.json()["reasons"].to_string();
    assert!(reasons.contains("link down: no heartbeat for"), "{reasons}");
    assert_eq!(h.json()["status"], "unhealthy");
    let m = get(rx_http, "/metrics").await.body;
    assert_eq!(metric(&m, "gateway_rx_link_up"), 0.0);
    // The store's losses are in /metrics and /api/status too (they were in neither).
    for family in [
        "gateway_rx_store_queue_full_samples_total",
        "gateway_rx_store_write_errors_total",
        "gateway_rx_store_gaps_opened_total",
        "gateway_rx_store_open_gaps",
    ] {
        assert!(m.contains(&format!("# TYPE {family} ")), "{family} missing");
    }
    assert!(
        status["store"]["write_errors"].is_u64(),
        "no store counters in /api/status: {}",
        status["store"]
    );
    assert!(metric(&m, "gateway_rx_tags{quality=\"uncertain\"}") > 0.0);
    c.relay.set(Impairments::default());
    wait_health(rx_http, 200, "gateway-rx healthy again").await;

    // Stopped transmitter, settled counters: /metrics says exactly what the decoder counted.
    c.stop_tx_and_wait().await;
    let started = Instant::now();
    let stats = loop {
        let before = c.rx().stats();
        tokio::time::sleep(Duration::from_millis(400)).await;
        let after = c.rx().stats();
        if before == after {
            break after;
        }
        assert!(started.elapsed() < CONVERGE, "the decoder did not settle");
    };
    assert!(
        stats.data_datagrams_lost > 0 && stats.datagrams_repaired > 0,
        "{stats:?}"
    );
    let m = get(rx_http, "/metrics").await.body;
    for (series, want) in decoder_series(&stats) {
        assert_eq!(metric(&m, &series), want as f64, "{series}: {stats:?}");
    }
    let outcomes: f64 = m
        .lines()
        .filter(|l| l.starts_with("gateway_rx_link_datagrams_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(outcomes, stats.datagrams_received as f64, "outcomes add up");
    let counters = c.rx().state.counters();
    assert_eq!(
        metric(&m, "gateway_rx_link_downs_total"),
        counters.link_downs as f64
    );
    assert_eq!(metric(&m, "gateway_rx_link_downs_total"), 1.0, "the cut");
    assert_eq!(
        metric(&m, "gateway_rx_heartbeats_total"),
        counters.heartbeats as f64
    );
    assert_eq!(
        metric(&m, "gateway_rx_samples_total{outcome=\"applied\"}"),
        counters.samples_applied as f64
    );
    let (_, gaps_total) = c.rx().status.gaps();
    assert_eq!(metric(&m, "gateway_rx_loss_gaps_total"), gaps_total as f64);
    assert_eq!(metric(&m, "gateway_rx_catalogue_tags"), tags);
    assert_eq!(metric(&m, "gateway_rx_source_up{source=\"plc1\"}"), 1.0);
    assert_eq!(c.plc.writes(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_only_reads_and_stays_bounded() {
    common::init_tracing();
    let port = tests::free_udp_port().expect("a free port");
    let rx = Receiver::start(parse_rx(&format!("{}{HTTP}", rx_toml(port, None))))
        .await
        .expect("starting gateway-rx");
    let addr = rx.http_addr.expect("[http] configured");

    // Nothing received: unhealthy, with both reasons.
    let h = get(addr, "/health").await;
    assert_eq!(h.status, 503);
    let reasons = h.json()["reasons"].to_string();
    assert!(
        reasons.contains("no heartbeat received yet") && reasons.contains("no catalogue"),
        "{reasons}"
    );

    // Every method but GET and HEAD is refused on every path, and nothing is routed for them.
    for method in [
        "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT",
    ] {
        for path in ["/", "/metrics", "/health", "/api/status", "/nothing"] {
            let target = if method == "CONNECT" {
                "gateway:80"
            } else {
                path
            };
            let a = request(addr, method, target).await;
            assert_eq!(a.status, 405, "{method} {target}: {a:?}");
            assert_eq!(a.header("allow"), Some("GET, HEAD"), "{method} {target}");
        }
    }
    // A body sent with a refused method is never read as a request of its own.
    let a = exchange(
        addr,
        b"POST /metrics HTTP/1.1\r\nHost: g\r\nContent-Length: 18\r\nConnection: close\r\n\r\nGET / HTTP/1.1\r\n\r\n",
    )
    .await
    .expect("an answer");
    assert_eq!(a.status, 405);
    assert!(!a.body.contains("HTTP/1.1 200"), "{a:?}");

    assert_eq!(get(addr, "/nothing").await.status, 404);
    let head = request(addr, "HEAD", "/metrics").await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty(), "HEAD has no body: {head:?}");
    assert!(head.header("content-length").is_some_and(|n| n != "0"));

    // Oversized requests: a huge head is refused with 431; a huge filter is cut, not refused.
    let big = format!(
        "GET / HTTP/1.1\r\nHost: g\r\nX-Fill: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(observe::http::MAX_HEAD_BYTES * 2)
    );
    match exchange(addr, big.as_bytes()).await {
        Ok(a) => assert_eq!(a.status, 431, "{a:?}"),
        // The server may close before reading it all, which resets the connection.
        Err(e) => assert!(e.contains("reset") || e.contains("write"), "{e}"),
    }
    let a = get(addr, &format!("/api/status?tags={}", "x".repeat(4000))).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.json()["tags"]["matched"], 0);

    // At most MAX_CONNECTIONS at once: one more is closed unanswered, and idle ones are closed
    // by the server when they send no request in time, freeing their slots.
    let mut idle = Vec::new();
    for _ in 0..observe::http::MAX_CONNECTIONS {
        idle.push(TcpStream::connect(addr).await.expect("connect"));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    match exchange(addr, b"GET /health HTTP/1.1\r\nConnection: close\r\n\r\n").await {
        Ok(a) => panic!("a connection over the limit was served: {a:?}"),
        Err(e) => assert!(e.contains("no end of head") || e.contains("reset"), "{e}"),
    }
    let started = Instant::now();
    for mut s in idle {
        let mut buf = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(15), s.read(&mut buf))
            .await
            .expect("an idle connection is closed by the server")
            .unwrap_or(0);
        assert_eq!(n, 0, "nothing is sent to a client that asked nothing");
    }
    let waited = started.elapsed();
    assert!(
        waited <= observe::http::HEADER_READ_TIMEOUT + Duration::from_secs(3),
        "idle connections closed after {waited:?}"
    );
    let m = get(addr, "/metrics").await.body;
    assert!(metric(&m, "gateway_rx_http_connections_total{outcome=\"refused\"}") >= 1.0);
    assert!(metric(&m, "gateway_rx_http_responses_total{code=\"405\"}") >= 35.0);
    assert!(rx.link_alive());
}
