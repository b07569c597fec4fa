//! Syslog across the diode, end to end: messages sent to gateway-tx over UDP and TCP arrive at
//! a TCP collector behind gateway-rx byte for byte and in order, through the impairment relay;
//! what the link lost beyond repair is exactly what the receiver's markers report. Then the
//! same with Debian's rsyslog at both ends (`rsyslog_*`).

#[allow(dead_code)] // the shared helpers serve several test files
mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use gateway_rx::Receiver;
use gateway_rx::syslog::marker::{Loss, parse_marker};
use gateway_tx::Transmitter;
use tests::plc_sim::PlcSim;
use tests::relay::{Impairments, Relay};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

/// A syslog collector speaking RFC 6587 octet counting, as gateway-rx's tcp:// output does.
/// Stopped (listener and every connection closed) when dropped.
struct Collector {
    addr: SocketAddr,
    got: Arc<Mutex<Vec<Vec<u8>>>>,
    task: tokio::task::JoinHandle<()>,
    connections: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.task.abort();
        for c in self.connections.lock().unwrap().drain(..) {
            c.abort();
        }
    }
}

impl Collector {
    async fn start() -> Collector {
        Collector::start_on("127.0.0.1:0".parse().unwrap()).await
    }

    async fn start_on(addr: SocketAddr) -> Collector {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        let sink = got.clone();
        let connections = Arc::new(Mutex::new(Vec::new()));
        let conns = connections.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                let sink = sink.clone();
                let handle = tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = vec![0u8; 64 << 10];
                    loop {
                        let n = match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        buf.extend_from_slice(&chunk[..n]);
                        let mut at = 0;
                        while let Some(sp) = buf[at..].iter().position(|&b| b == b' ') {
                            let len: usize = std::str::from_utf8(&buf[at..at + sp])
                                .expect("octet count")
                                .parse()
                                .expect("octet count");
                            let start = at + sp + 1;
                            if buf.len() < start + len {
                                break;
                            }
                            sink.lock().unwrap().push(buf[start..start + len].to_vec());
                            at = start + len;
                        }
                        buf.drain(..at);
                    }
                });
                conns.lock().unwrap().push(handle);
            }
        });
        Collector {
            addr,
            got,
            task,
            connections,
        }
    }

    fn got(&self) -> Vec<Vec<u8>> {
        self.got.lock().unwrap().clone()
    }
}

struct SyslogChain {
    // Dropped first: nothing is sent into a half-dismantled chain.
    tx: Transmitter,
    rx: Option<Receiver>,
    rx_toml: String,
    relay: Relay,
    _plc: PlcSim,
    udp: SocketAddr,
    tcp: SocketAddr,
    _dir: tempfile::TempDir,
}

impl SyslogChain {
    fn rx(&self) -> &Receiver {
        self.rx.as_ref().expect("the receiver runs")
    }

    /// Stops the receiver and starts it again on the same port, spool and config.
    async fn restart_rx(&mut self) {
        self.rx = None;
        let config = parse_rx(&self.rx_toml);
        let started = Instant::now();
        loop {
            // The old link socket closes a moment after its task is aborted.
            match Receiver::start(config.clone()).await {
                Ok(rx) => break self.rx = Some(rx),
                Err(e) if started.elapsed() < Duration::from_secs(5) => {
                    tracing::debug!(error = format!("{e:#}"), "RX port not released yet");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("restarting gateway-rx: {e:#}"),
            }
        }
    }

    /// Both daemons through the relay at `loss`; gateway-rx forwards to `forward` (TOML lines
    /// of one `[[syslog.forward]]`).
    async fn start(loss: f64, seed: u64, forward: &str) -> SyslogChain {
        init_tracing();
        let dir = tempfile::tempdir().unwrap();
        let plc = PlcSim::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let rx_port = tests::free_udp_port().unwrap();
        let mut rx_toml = rx_toml(rx_port, None);
        rx_toml.push_str(&format!(
            "\n[store]\npath = {}\n\n[syslog]\nspool_dir = {}\n\n[[syslog.forward]]\n{forward}\n",
            toml_string(&dir.path().join("store.db")),
            toml_string(&dir.path().join("spool"))
        ));
        let rx = Receiver::start(parse_rx(&rx_toml)).await.unwrap();
        let relay = Relay::start(
            rx.link_addr,
            Impairments {
                loss,
                ..Impairments::default()
            },
            seed,
        )
        .await
        .unwrap();
        let mut tx_toml = tx_toml(relay.listen, plc.local_addr(), None, POLL_MS);
        tx_toml.push_str("\n[syslog]\nudp = \"127.0.0.1:0\"\ntcp = \"127.0.0.1:0\"\n");
        let tx = Transmitter::start(parse_tx(&tx_toml)).await.unwrap();
        let (udp, tcp) = tx.syslog_addrs;
        SyslogChain {
            tx,
            rx: Some(rx),
            rx_toml,
            relay,
            _plc: plc,
            udp: udp.unwrap(),
            tcp: tcp.unwrap(),
            _dir: dir,
        }
    }
}

fn tcp_message(i: usize) -> Vec<u8> {
    // RFC 5424, with structured data and a UTF-8 BOM: all of it must pass untouched.
    format!(
        "<165>1 2026-12-07T10:00:00.000001Z plc-{} app 42 ID{i} [ex@32473 i=\"{i}\"] \u{feff}tcp message {i:08}",
        i % 7
    )
    .into_bytes()
}

fn udp_message(i: usize) -> Vec<u8> {
    // RFC 3164: no version, a BSD timestamp.
    format!(
        "<13>Dec  7 10:00:00 hmi-{} scada[7]: udp message {i:08}",
        i % 3
    )
    .into_bytes()
}

/// Sends `msgs` on one TCP connection, octet counting and LF framing alternately (a
/// connection may mix them), `per_tick` every millisecond.
async fn send_tcp(to: SocketAddr, msgs: &[Vec<u8>], per_tick: usize) {
    let mut s = TcpStream::connect(to).await.unwrap();
    for (c, chunk) in msgs.chunks(per_tick).enumerate() {
        let mut buf = Vec::new();
        for (j, m) in chunk.iter().enumerate() {
            if (c * per_tick + j).is_multiple_of(2) {
                buf.extend_from_slice(format!("{} ", m.len()).as_bytes());
                buf.extend_from_slice(m);
            } else {
                buf.extend_from_slice(m);
                buf.push(b'\n');
            }
        }
        s.write_all(&buf).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    s.flush().await.unwrap();
}

async fn send_udp(to: SocketAddr, msgs: &[Vec<u8>], per_tick: usize) {
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for chunk in msgs.chunks(per_tick) {
        for m in chunk {
            s.send_to(m, to).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// What a collector received, split: the messages and the loss the markers report.
struct Received {
    messages: Vec<Vec<u8>>,
    loss: Loss,
    markers: usize,
}

fn split(got: Vec<Vec<u8>>) -> Received {
    let mut r = Received {
        messages: Vec::new(),
        loss: Loss::default(),
        markers: 0,
    };
    for m in got {
        match parse_marker(&m) {
            Some(l) if m.windows(12).any(|w| w == b" gateway-rx ") => {
                r.loss.link += l.link;
                r.loss.transmitter += l.transmitter;
                r.loss.spool += l.spool;
                r.markers += 1;
            }
            _ => r.messages.push(m),
        }
    }
    r
}

/// Every received message was sent, none twice, and each sender's messages in its order.
fn assert_in_order(received: &[Vec<u8>], streams: &[&[Vec<u8>]]) {
    let unique: HashSet<&Vec<u8>> = received.iter().collect();
    assert_eq!(unique.len(), received.len(), "a message arrived twice");
    for sent in streams {
        let index: std::collections::HashMap<&Vec<u8>, usize> =
            sent.iter().enumerate().map(|(i, m)| (m, i)).collect();
        let mut last = None;
        for m in received {
            if let Some(&i) = index.get(m) {
                assert!(
                    last.is_none_or(|l| l < i),
                    "message {i} arrived after {last:?}"
                );
                last = Some(i);
            }
        }
    }
    let all: HashSet<&Vec<u8>> = streams.iter().flat_map(|s| s.iter()).collect();
    for m in received {
        assert!(
            all.contains(m),
            "not sent, or changed: {:?}",
            String::from_utf8_lossy(m)
        );
    }
}

async fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// UDP and TCP senders at once; everything arrives at `loss` (which FEC repairs).
async fn all_arrive(loss: f64, seed: u64) {
    let collector = Collector::start().await;
    let chain = SyslogChain::start(loss, seed, &format!("to = \"tcp://{}\"", collector.addr)).await;
    let tcp: Vec<_> = (0..3000).map(tcp_message).collect();
    let udp: Vec<_> = (0..2000).map(udp_message).collect();
    tokio::join!(send_tcp(chain.tcp, &tcp, 30), send_udp(chain.udp, &udp, 20));
    wait_for(
        "every message at the collector",
        Duration::from_secs(60),
        || collector.got().len() >= tcp.len() + udp.len(),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = split(collector.got());
    assert_eq!(r.markers, 0, "no loss, no marker: {:?}", r.loss);
    assert_eq!(r.messages.len(), tcp.len() + udp.len());
    assert_in_order(&r.messages, &[&tcp, &udp]);
    let tx = chain.tx.status.syslog().unwrap();
    assert_eq!((tx.received_tcp, tx.received_udp), (3000, 2000));
    assert_eq!(tx.queue_full + tx.oversized + tx.malformed, 0);
    let rx = chain.rx().status.syslog().unwrap();
    assert_eq!((rx.spooled, rx.markers, rx.lost_link), (5000, 0, 0));
    if loss > 0.0 {
        assert!(
            tests::relay::RelayCounters::get(&chain.relay.counters.dropped) > 0,
            "the relay dropped nothing"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syslog_udp_and_tcp_arrive_byte_identical_and_in_order() {
    all_arrive(0.0, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syslog_at_1_percent_loss_all_arrive() {
    all_arrive(0.01, 2).await;
}

/// While the collector is down messages wait in the spool; a restarted receiver then neither
/// re-sends what the collector took nor skips what it did not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syslog_waits_for_the_collector_and_resumes_after_a_receiver_restart() {
    let collector = Collector::start().await;
    let at = collector.addr;
    let mut chain = SyslogChain::start(0.0, 5, &format!("to = \"tcp://{at}\"")).await;
    let sent: Vec<_> = (0..1500).map(tcp_message).collect();
    send_tcp(chain.tcp, &sent[..500], 20).await;
    wait_for("the first 500", Duration::from_secs(30), || {
        collector.got().len() >= 500
    })
    .await;
    assert_eq!(collector.got(), sent[..500]);
    drop(collector);
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The collector is down: the next 500 wait in the spool.
    send_tcp(chain.tcp, &sent[500..1000], 20).await;
    wait_for("1000 spooled", Duration::from_secs(30), || {
        chain.rx().status.syslog().unwrap().spooled >= 1000
    })
    .await;
    chain.restart_rx().await;
    let collector = Collector::start_on(at).await;
    wait_for("the 500 that waited", Duration::from_secs(30), || {
        collector.got().len() >= 500
    })
    .await;
    send_tcp(chain.tcp, &sent[1000..], 20).await;
    wait_for("the last 500", Duration::from_secs(30), || {
        collector.got().len() >= 1000
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Exactly what the first collector did not take, in order: nothing again, nothing skipped.
    assert_eq!(collector.got(), sent[500..]);
}

/// Sends numbered TCP messages until the collector has one at or past `n - 1`; then the loss
/// up to the last one received is exactly what the markers say.
async fn loss_equals_markers(
    chain: &SyslogChain,
    collector: &Collector,
    n: usize,
    per_tick: usize,
) -> (usize, Loss) {
    let mut s = TcpStream::connect(chain.tcp).await.unwrap();
    let mut sent = 0usize;
    let start = Instant::now();
    let index = |m: &[u8]| -> Option<usize> {
        let t = std::str::from_utf8(m).ok()?;
        t.rsplit_once("tcp message ")?.1.parse().ok()
    };
    let mut next_tick = Instant::now();
    loop {
        // The newest message only: cloning all of them each tick made the run quadratic.
        let last = collector
            .got
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find_map(|m| index(m));
        if last.is_some_and(|l| l + 1 >= n) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "timed out, {sent} sent, last {last:?}"
        );
        // Past n, a trickle: only what shows where the last loss ends.
        let burst = if sent < n { per_tick } else { 1 };
        let mut buf = Vec::new();
        for _ in 0..burst {
            let m = tcp_message(sent);
            buf.extend_from_slice(format!("{} ", m.len()).as_bytes());
            buf.extend_from_slice(&m);
            sent += 1;
        }
        s.write_all(&buf).await.unwrap();
        next_tick += if sent <= n {
            Duration::from_millis(1)
        } else {
            Duration::from_millis(20)
        };
        tokio::time::sleep_until(next_tick.into()).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = split(collector.got());
    let last = r.messages.iter().filter_map(|m| index(m)).max().unwrap();
    let sent_msgs: Vec<_> = (0..=last).map(tcp_message).collect();
    let received: Vec<_> = r
        .messages
        .iter()
        .filter(|m| index(m).is_some_and(|i| i <= last))
        .cloned()
        .collect();
    assert_in_order(&received, &[&sent_msgs]);
    let missing = last + 1 - received.len();
    assert_eq!(r.loss.transmitter, 0, "the transmitter dropped none");
    assert_eq!(r.loss.spool, 0);
    assert_eq!(
        r.loss.link as usize,
        missing,
        "markers report {} lost, {missing} of {} missing",
        r.loss.link,
        last + 1
    );
    (last + 1, r.loss)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syslog_at_20_percent_loss_markers_count_exactly_what_is_missing() {
    let collector = Collector::start().await;
    let chain = SyslogChain::start(0.20, 3, &format!("to = \"tcp://{}\"", collector.addr)).await;
    let (sent, loss) = loss_equals_markers(&chain, &collector, 4000, 20).await;
    assert!(loss.link > 0, "20 % loss lost nothing of {sent}");
    let rx = chain.rx().status.syslog().unwrap();
    assert_eq!(rx.lost_link, loss.link, "metrics agree with the markers");
    println!("20 % loss: {} of {sent} lost, all reported", loss.link);
}

/// The measured run: `SYSLOG_RATE_SECS` (10 by default) of 10,000 messages/s over TCP, at
/// `loss`; with 0 or 1 % all must arrive, in order, once.
async fn rate_run(loss: f64, secs: u64) -> (usize, Loss, Duration) {
    let collector = Collector::start().await;
    let chain = SyslogChain::start(loss, 7, &format!("to = \"tcp://{}\"", collector.addr)).await;
    let n = 10_000 * secs as usize;
    let start = Instant::now();
    let (sent, l) = loss_equals_markers(&chain, &collector, n, 10).await;
    let took = start.elapsed();
    let tx = chain.tx.status.syslog().unwrap();
    let rx = chain.rx().status.syslog().unwrap();
    println!(
        "loss {loss}: sent {sent} in {took:?} ({:.0}/s); tx received {} dropped {}; rx spooled {} markers {} lost {}",
        sent as f64 / took.as_secs_f64(),
        tx.received_tcp,
        tx.queue_full + tx.oversized + tx.malformed,
        rx.spooled,
        rx.markers,
        rx.lost_link
    );
    (sent, l, took)
}

fn rate_secs() -> u64 {
    std::env::var("SYSLOG_RATE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syslog_10k_per_second_at_1_percent_loss() {
    let secs = rate_secs();
    let (sent, loss, took) = rate_run(0.01, secs).await;
    println!("rate run 1 %: {sent} messages in {took:?}, lost {loss:?}");
    assert_eq!(loss.link, 0, "1 % loss is repaired");
}

/// The measured run without loss, for the baseline (`docs/benchmarks.md`, "Syslog").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a minute of load; run for the figures"]
async fn syslog_10k_per_second_without_loss() {
    let secs = rate_secs();
    let (sent, loss, took) = rate_run(0.0, secs).await;
    println!("rate run 0 %: {sent} messages in {took:?}, lost {loss:?}");
    assert_eq!(loss.link, 0);
}

/// The 60 s version of the measured run at 20 % (`docs/benchmarks.md`, "Syslog"):
/// `SYSLOG_RATE_SECS=60 cargo test -p tests --test syslog syslog_10k -- --include-ignored --nocapture --test-threads 1`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a minute of load; run for the figures"]
async fn syslog_10k_per_second_at_20_percent_loss() {
    let secs = rate_secs();
    let (sent, loss, took) = rate_run(0.20, secs).await;
    println!(
        "rate run 20 %: {sent} messages in {took:?}, lost {} (= markers)",
        loss.link
    );
}

/// An rsyslogd of the test's own: its config, pid file and work directory under a temporary
/// directory, loopback ports only, in the foreground; never the system's rsyslog. Killed
/// (this process's child, by its handle) when dropped.
struct Rsyslogd {
    child: std::process::Child,
}

impl Rsyslogd {
    fn start(bin: &str, dir: &std::path::Path, name: &str, config: &str) -> Rsyslogd {
        let work = dir.join(format!("{name}-work"));
        std::fs::create_dir_all(&work).unwrap();
        let conf = dir.join(format!("{name}.conf"));
        std::fs::write(
            &conf,
            format!("global(workDirectory=\"{}\")\n{config}", work.display()),
        )
        .unwrap();
        let child = std::process::Command::new(bin)
            .arg("-n")
            .arg("-f")
            .arg(&conf)
            .arg("-i")
            .arg(dir.join(format!("{name}.pid")))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {bin}: {e}"));
        Rsyslogd { child }
    }
}

impl Drop for Rsyslogd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn wait_listening(addr: SocketAddr) {
    wait_for(
        &format!("rsyslogd on {addr}"),
        Duration::from_secs(20),
        || std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok(),
    )
    .await;
}

/// rsyslog at both ends: an OT rsyslogd forwards (omfwd, TCP, octet-counted) to gateway-tx,
/// and gateway-rx forwards to an IT rsyslogd (imtcp) that writes a file. Every message
/// arrives, once and in order. `GATEWAY_TEST_RSYSLOGD` names the binary (`.ci/services`
/// installs Debian's rsyslog and sets it); without it the test says why and passes, except
/// under `CI=true`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsyslog_sender_and_collector_through_the_gateway() {
    let Some(bin) = common::peers::service("GATEWAY_TEST_RSYSLOGD") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let it_port = tests::free_tcp_port().unwrap();
    let it_log = dir.path().join("it.log");
    let _it = Rsyslogd::start(
        &bin,
        dir.path(),
        "it",
        &format!(
            "module(load=\"imtcp\")\n\
             input(type=\"imtcp\" address=\"127.0.0.1\" port=\"{it_port}\")\n\
             template(name=\"raw\" type=\"string\" string=\"%rawmsg%\\n\")\n\
             *.* action(type=\"omfile\" file=\"{}\" template=\"raw\")\n",
            it_log.display()
        ),
    );
    let chain = SyslogChain::start(0.01, 11, &format!("to = \"tcp://127.0.0.1:{it_port}\"")).await;
    let ot_port = tests::free_tcp_port().unwrap();
    let _ot = Rsyslogd::start(
        &bin,
        dir.path(),
        "ot",
        &format!(
            "module(load=\"imtcp\")\n\
             input(type=\"imtcp\" address=\"127.0.0.1\" port=\"{ot_port}\")\n\
             template(name=\"fwd\" type=\"string\" string=\"<%PRI%>1 %TIMESTAMP:::date-rfc3339% %HOSTNAME% %APP-NAME% %PROCID% %MSGID% %STRUCTURED-DATA% %msg%\")\n\
             *.* action(type=\"omfwd\" target=\"127.0.0.1\" port=\"{}\" protocol=\"tcp\" \
             tcp_framing=\"octet-counted\" template=\"fwd\" action.resumeRetryCount=\"-1\" \
             queue.type=\"LinkedList\")\n",
            chain.tcp.port()
        ),
    );
    wait_listening(format!("127.0.0.1:{it_port}").parse().unwrap()).await;
    wait_listening(format!("127.0.0.1:{ot_port}").parse().unwrap()).await;
    let n = 2000;
    let sent: Vec<Vec<u8>> = (0..n)
        .map(|i| {
            format!("<134>1 2026-12-07T10:00:00Z plc-7 historian 99 - - rsyslog message {i:06}")
                .into_bytes()
        })
        .collect();
    send_tcp(format!("127.0.0.1:{ot_port}").parse().unwrap(), &sent, 20).await;
    let lines = || -> Vec<String> {
        std::fs::read_to_string(&it_log)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    };
    wait_for(
        "every message in the IT rsyslog's file",
        Duration::from_secs(60),
        || {
            lines()
                .iter()
                .filter(|l| l.contains("rsyslog message "))
                .count()
                >= n
        },
    )
    .await;
    let got: Vec<usize> = lines()
        .iter()
        .filter_map(|l| l.rsplit_once("rsyslog message ")?.1.trim().parse().ok())
        .collect();
    assert_eq!(got, (0..n).collect::<Vec<_>>(), "in order, each once");
    // The host and application the OT rsyslog gave each message came through untouched.
    let first = lines()
        .into_iter()
        .find(|l| l.contains("rsyslog message 000000"))
        .unwrap();
    assert!(first.contains(" plc-7 historian 99 "), "{first}");
    let tx = chain.tx.status.syslog().unwrap();
    assert_eq!(tx.malformed + tx.oversized + tx.queue_full, 0);
}

/// A tls:// output to `openssl s_server` (a throwaway CA made by the openssl command line, as
/// `.ci/services` does for Mosquitto): the messages arrive octet-counted inside TLS, verified
/// against `ca_file`. Without openssl the test says why and passes, except under `CI=true`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syslog_tls_output_to_openssl_s_server() {
    use std::process::{Command, Stdio};
    if Command::new("openssl").arg("version").output().is_err() {
        assert!(
            !std::env::var("CI").is_ok_and(|v| v == "true"),
            "openssl is missing under CI=true"
        );
        eprintln!("skipping: no openssl");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let run = |args: &[&str]| {
        let ok = Command::new("openssl")
            .args(args)
            .current_dir(d)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success();
        assert!(ok, "openssl {args:?}");
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    std::fs::write(d.join("ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "ext",
        "-out",
        "server.pem",
    ]);
    let port = tests::free_tcp_port().unwrap();
    let out = std::fs::File::create(d.join("received")).unwrap();
    let mut server = Command::new("openssl")
        .args([
            "s_server",
            "-quiet",
            "-accept",
            &format!("127.0.0.1:{port}"),
            "-cert",
            "server.pem",
            "-key",
            "server.key",
        ])
        .current_dir(d)
        .stdin(Stdio::piped())
        .stdout(out)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let chain = SyslogChain::start(
        0.0,
        13,
        &format!(
            "to = \"tls://127.0.0.1:{port}\"\nca_file = {}",
            toml_string(&d.join("ca.pem"))
        ),
    )
    .await;
    let sent: Vec<_> = (0..300).map(tcp_message).collect();
    send_tcp(chain.tcp, &sent, 20).await;
    let mut expected = Vec::new();
    for m in &sent {
        expected.extend_from_slice(format!("{} ", m.len()).as_bytes());
        expected.extend_from_slice(m);
    }
    let received = || std::fs::read(d.join("received")).unwrap_or_default();
    let done = Instant::now();
    while received().len() < expected.len() && done.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(
        String::from_utf8_lossy(&received()),
        String::from_utf8_lossy(&expected),
        "octet-counted, in order, byte for byte"
    );
}

/// A file output: one message per line, in order, byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syslog_file_output_one_message_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ot.log");
    let chain = SyslogChain::start(0.0, 17, &format!("file = {}", toml_string(&file))).await;
    let sent: Vec<_> = (0..500).map(udp_message).collect();
    send_udp(chain.udp, &sent, 10).await;
    let mut expected = Vec::new();
    for m in &sent {
        expected.extend_from_slice(m);
        expected.push(b'\n');
    }
    wait_for("every line", Duration::from_secs(30), || {
        std::fs::read(&file).unwrap_or_default().len() >= expected.len()
    })
    .await;
    assert_eq!(std::fs::read(&file).unwrap(), expected);
}
