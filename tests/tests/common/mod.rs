//! Shared pieces of the end-to-end tests: the whole chain (simulated PLC → gateway-tx → relay →
//! gateway-rx → Modbus mirror) built from TOML text, a Modbus client for the mirror that never
//! hangs, a wiretap that knows what the relay really did to each datagram, and bounded waits.

// Not every test file that includes this module uses these.
#[allow(dead_code)]
pub mod daemons;
#[allow(dead_code)]
pub mod peers;
#[allow(dead_code)]
pub mod tmpfs;

use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use config::rx::RxConfig;
use config::tx::TxConfig;
use gateway_rx::Receiver;
use gateway_tx::Transmitter;
use protocol::decoder::DecoderStats;
use protocol::model::{ModbusTable, Quality, TagIndex};
use tests::plc_sim::{DEMO_TAGS, DemoTag, PlcHandle, PlcSim, demo_device_toml};
use tests::relay::{Impairments, Relay};
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;
use tokio_modbus::client::{Context, Reader};
use tokio_modbus::{ExceptionCode, Slave};

/// Device name of the simulated PLC in the TX config; the mirror serves it as unit id 1.
pub const DEVICE: &str = "plc1";
pub const UNIT_ID: u8 = 1;
pub const POLL_MS: u64 = 50;
pub const PLC_TIMEOUT_MS: u64 = 500;
pub const HEARTBEAT_MS: u64 = 200;
pub const HEARTBEAT_TIMEOUT_MS: u64 = 1000;
/// Step period of the simulated process when a test runs it.
pub const PROCESS_PERIOD: Duration = Duration::from_millis(50);
/// Deadline for anything that converges (catalogue, snapshot, reconnects). Generous because
/// the machine is shared and small; a passing run takes a fraction of it.
pub const CONVERGE: Duration = Duration::from_secs(20);
/// Every Modbus request to the mirror runs under this; tokio-modbus has no timeout itself.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// Logs go to the test's captured output; `RUST_LOG=info cargo test ... -- --nocapture` shows
/// them.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "error".into()),
        )
        .with_test_writer()
        .try_init();
}

pub fn rx_toml(port: u16, key_file: Option<&Path>) -> String {
    rx_toml_with(port, key_file, "")
}

/// `link_extra`: more lines for the `[link]` table.
pub fn rx_toml_with(port: u16, key_file: Option<&Path>, link_extra: &str) -> String {
    let mut s = format!(
        "[link]\nbind = \"127.0.0.1:{port}\"\nheartbeat_timeout_ms = {HEARTBEAT_TIMEOUT_MS}\n"
    );
    s.push_str(&link_auth(key_file, "rx-link.state"));
    s.push_str(link_extra);
    s.push_str("\n[modbus_server]\nbind = \"127.0.0.1:0\"\n\n[status]\nlog_interval_s = 3600\n");
    s
}

pub fn tx_toml(
    destination: SocketAddr,
    plc: SocketAddr,
    key_file: Option<&Path>,
    poll_ms: u64,
) -> String {
    tx_toml_with(destination, plc, key_file, poll_ms, "")
}

/// `link_extra`: more lines for the `[link]` table, or tables below it such as `[link.fec]`.
pub fn tx_toml_with(
    destination: SocketAddr,
    plc: SocketAddr,
    key_file: Option<&Path>,
    poll_ms: u64,
    link_extra: &str,
) -> String {
    let mut s = format!(
        "[link]\ndestination = \"{destination}\"\nheartbeat_ms = {HEARTBEAT_MS}\n\
         catalogue_interval_s = 1\nsnapshot_period_s = 1\n"
    );
    s.push_str(&link_auth(key_file, "tx-link.state"));
    s.push_str(link_extra);
    s.push('\n');
    s.push_str(&demo_device_toml(DEVICE, plc, poll_ms, PLC_TIMEOUT_MS));
    s
}

/// The `[link]` lines for `key_file`, with the link state beside the key (each test's key is
/// in a directory of its own, so tests never share what a daemon remembers of sessions); or,
/// without a key, the explicit choice to run unauthenticated.
pub fn link_auth(key_file: Option<&Path>, state: &str) -> String {
    match key_file {
        Some(k) => {
            let dir = k.parent().expect("a key file is in a directory");
            format!(
                "key_file = {}\nstate_file = {}\n",
                toml_string(k),
                toml_string(&dir.join(state))
            )
        }
        None => "insecure_no_key = true\n".to_owned(),
    }
}

pub fn toml_string(p: &Path) -> String {
    let text = p.to_str().expect("temporary paths are UTF-8");
    assert!(
        !text.contains(['"', '\\']) && !text.chars().any(char::is_control),
        "path needs TOML escaping: {text:?}"
    );
    format!("\"{text}\"")
}

pub fn parse_rx(text: &str) -> RxConfig {
    RxConfig::parse(text, Path::new("test/gateway-rx.toml"))
        .unwrap_or_else(|e| panic!("RX config refused: {e}\n{text}"))
}

pub fn parse_tx(text: &str) -> TxConfig {
    TxConfig::parse(text, Path::new("test/gateway-tx.toml"))
        .unwrap_or_else(|e| panic!("TX config refused: {e}\n{text}"))
}

#[allow(unused_imports)]
pub use tests::KeyFile;

/// How to build a chain.
#[derive(Default)]
pub struct Setup {
    pub impairments: Impairments,
    pub seed: u64,
    pub tx_key: Option<PathBuf>,
    pub rx_key: Option<PathBuf>,
    /// Puts a [`Wiretap`] on both sides of the relay.
    pub wiretap: bool,
    /// The PLC's poll interval; [`POLL_MS`] when `None`.
    pub poll_ms: Option<u64>,
    /// Appended to the TX config's `[link]` table (may open `[link.fec]`).
    pub tx_link_extra: &'static str,
    /// The transmitter sends straight to the receiver; the relay is left idle.
    pub direct: bool,
}

/// The whole chain on loopback. Fields drop in declaration order: the transmitter first, so
/// nothing is polled or sent into a half-dismantled chain.
pub struct Chain {
    pub tx: Option<Transmitter>,
    pub rx: Option<Receiver>,
    pub mirror: Mirror,
    pub relay: Relay,
    pub wiretap: Option<Wiretap>,
    pub plc: PlcSim,
    /// The receiver's link port, fixed for the chain's life (restarts reuse it).
    pub rx_port: u16,
    pub rx_toml: String,
    pub tx_toml: String,
}

impl Chain {
    pub async fn start(setup: Setup) -> Chain {
        init_tracing();
        let plc = PlcSim::start("127.0.0.1:0".parse().unwrap())
            .await
            .expect("starting the simulated PLC");
        let rx_port = tests::free_udp_port().expect("a free UDP port");
        let rx_toml = rx_toml(rx_port, setup.rx_key.as_deref());
        let rx = Receiver::start(parse_rx(&rx_toml))
            .await
            .expect("starting gateway-rx");
        let mut wiretap = if setup.wiretap {
            Some(Wiretap::bind().await)
        } else {
            None
        };
        let relay_target = wiretap.as_ref().map_or(rx.link_addr, |w| w.after);
        let relay = Relay::start(relay_target, setup.impairments, setup.seed)
            .await
            .expect("starting the relay");
        let destination = match &mut wiretap {
            Some(w) => {
                w.run(relay.listen, rx.link_addr);
                w.before
            }
            None if setup.direct => rx.link_addr,
            None => relay.listen,
        };
        let tx_toml = tx_toml_with(
            destination,
            plc.local_addr(),
            setup.tx_key.as_deref(),
            setup.poll_ms.unwrap_or(POLL_MS),
            setup.tx_link_extra,
        );
        let tx = Transmitter::start(parse_tx(&tx_toml))
            .await
            .expect("starting gateway-tx");
        let mirror = Mirror::new(rx.modbus_addr.expect("the RX config has a Modbus mirror"));
        Chain {
            tx: Some(tx),
            rx: Some(rx),
            mirror,
            relay,
            wiretap,
            plc,
            rx_port,
            rx_toml,
            tx_toml,
        }
    }

    pub fn rx(&self) -> &Receiver {
        self.rx.as_ref().expect("the receiver is running")
    }

    pub fn tx(&self) -> &Transmitter {
        self.tx.as_ref().expect("the transmitter is running")
    }

    /// Stops the transmitter, as when its process ends.
    pub fn stop_tx(&mut self) {
        self.tx = None;
    }

    /// Stops the transmitter and waits until it is silent: its tasks are aborted, which takes
    /// effect at their next await, and a heartbeat is due every [`HEARTBEAT_MS`] while any
    /// part of it runs.
    pub async fn stop_tx_and_wait(&mut self) {
        self.stop_tx();
        let started = Instant::now();
        let mut last = self.relay.counters.received.load(Ordering::Relaxed);
        loop {
            tokio::time::sleep(Duration::from_millis(HEARTBEAT_MS + 100)).await;
            let now = self.relay.counters.received.load(Ordering::Relaxed);
            if now == last {
                return;
            }
            assert!(
                started.elapsed() < CONVERGE,
                "the transmitter still sends after it was dropped"
            );
            last = now;
        }
    }

    /// Stops the transmitter and waits until the wiretap and the decoder's counters no longer
    /// move and the decoder has seen every datagram the wiretap delivered. Returns both.
    pub async fn settle(&mut self) -> (TapCounts, DecoderStats) {
        self.stop_tx();
        let tap = self.wiretap.as_ref().expect("a chain with a wiretap");
        let started = Instant::now();
        loop {
            let before = (tap.counts(), self.rx().stats());
            // Longer than the decoder's group timeout, so gaps still open are given up.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let after = (tap.counts(), self.rx().stats());
            if before == after && after.0.delivered == after.1.datagrams_received {
                return after;
            }
            assert!(
                started.elapsed() < CONVERGE,
                "traffic did not settle: wiretap {:?}, decoder received {}",
                after.0,
                after.1.datagrams_received
            );
        }
    }

    /// Stops the transmitter and starts a new one (a new process: a new session) from the same
    /// config text.
    pub async fn restart_tx(&mut self) {
        self.stop_tx();
        self.tx = Some(
            Transmitter::start(parse_tx(&self.tx_toml))
                .await
                .expect("restarting gateway-tx"),
        );
    }

    /// Stops the receiver and starts a new one from `rx_toml` (the same link port), with a
    /// fresh mirror client for the new mirror.
    pub async fn restart_rx(&mut self, rx_toml: &str) {
        let config = parse_rx(rx_toml);
        // Dropping the receiver aborts its tasks; the socket closes when the runtime drops the
        // link task, a moment later (a real restart releases it when the process exits). The
        // retry only covers that moment; any other failure is reported.
        self.rx = None;
        let started = Instant::now();
        let rx = loop {
            match Receiver::start(config.clone()).await {
                Ok(rx) => break rx,
                Err(e) if started.elapsed() < Duration::from_secs(5) => {
                    tracing::debug!(error = format!("{e:#}"), "RX port not released yet");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("restarting gateway-rx on the same port: {e:#}"),
            }
        };
        self.mirror = Mirror::new(rx.modbus_addr.expect("the RX config has a Modbus mirror"));
        self.rx = Some(rx);
        self.rx_toml = rx_toml.to_string();
    }

    /// The first difference between the mirror and the simulator, over every demo tag.
    pub async fn mirror_diff(&mut self) -> Result<(), String> {
        mirror_diff(&mut self.mirror, &self.plc).await
    }

    /// Waits until the mirror serves exactly the simulator's words for every demo tag.
    pub async fn wait_mirror_matches(&mut self, what: &str) -> Duration {
        let (mirror, plc) = (&mut self.mirror, &self.plc);
        eventually(what, CONVERGE, async || mirror_diff(mirror, plc).await).await
    }

    /// Waits until every demo tag is served with `quality` by the RX state.
    pub async fn wait_quality(&self, what: &str, quality: Quality) -> Duration {
        let rx = self.rx();
        eventually(what, CONVERGE, async || qualities_are(rx, quality)).await
    }
}

/// Checks that the catalogue has every demo tag and each is served with `quality`.
pub fn qualities_are(rx: &Receiver, quality: Quality) -> Result<(), String> {
    let view = rx.state.view();
    let Some(catalogue) = view.catalogue() else {
        return Err("no catalogue yet".into());
    };
    if catalogue.len() != DEMO_TAGS.len() {
        return Err(format!(
            "catalogue has {} tags, expected {}",
            catalogue.len(),
            DEMO_TAGS.len()
        ));
    }
    let mut wrong = Vec::new();
    for (i, tag) in catalogue.tags().iter().enumerate() {
        let index = TagIndex::try_from(i).unwrap();
        match view.value(index) {
            Some(v) if v.quality == quality => {}
            Some(v) => wrong.push(format!("{} is {}", tag.name, v.quality.name())),
            None => wrong.push(format!("{} has no value", tag.name)),
        }
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "expected every tag {}: {}",
            quality.name(),
            wrong.join(", ")
        ))
    }
}

/// Polls `check` every 50 ms until it succeeds; panics with its last complaint at `limit`.
/// Returns how long it took.
pub async fn eventually(
    what: &str,
    limit: Duration,
    mut check: impl AsyncFnMut() -> Result<(), String>,
) -> Duration {
    let started = Instant::now();
    loop {
        let result = check().await;
        match result {
            Ok(()) => return started.elapsed(),
            Err(why) if started.elapsed() >= limit => {
                panic!("{what}: not reached within {limit:?}: {why}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// A Modbus TCP client for the IT-side mirror: every request under a timeout, and a new
/// connection after any transport error.
pub struct Mirror {
    addr: SocketAddr,
    ctx: Option<Context>,
}

/// What a read got: the words (0/1 per bit for bit tables), or the exception the server
/// answered. The outer `Err` is a transport failure or a timeout.
pub type ReadResult = Result<Result<Vec<u16>, ExceptionCode>, String>;

impl Mirror {
    pub fn new(addr: SocketAddr) -> Mirror {
        Mirror { addr, ctx: None }
    }

    pub async fn context(&mut self) -> Result<&mut Context, String> {
        if self.ctx.is_none() {
            let ctx = tokio::time::timeout(
                REQUEST_TIMEOUT,
                tokio_modbus::client::tcp::connect_slave(self.addr, Slave(UNIT_ID)),
            )
            .await
            .map_err(|_| format!("connecting to the mirror at {} timed out", self.addr))?
            .map_err(|e| format!("connecting to the mirror at {}: {e}", self.addr))?;
            self.ctx = Some(ctx);
        }
        Ok(self.ctx.as_mut().expect("just connected"))
    }

    /// Runs one request under the timeout; forgets the connection on a transport failure.
    pub async fn call<T>(
        &mut self,
        request: impl AsyncFnOnce(&mut Context) -> tokio_modbus::Result<T>,
    ) -> Result<Result<T, ExceptionCode>, String> {
        let ctx = self.context().await?;
        match tokio::time::timeout(REQUEST_TIMEOUT, request(ctx)).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(e)) => {
                self.ctx = None;
                Err(format!("Modbus transport error: {e}"))
            }
            Err(_) => {
                self.ctx = None;
                Err("Modbus request timed out".into())
            }
        }
    }

    pub async fn read(&mut self, table: ModbusTable, address: u16, count: u16) -> ReadResult {
        let words = |bits: Vec<bool>| bits.into_iter().map(u16::from).collect::<Vec<u16>>();
        match table {
            ModbusTable::Coil => Ok(self
                .call(async |c| c.read_coils(address, count).await)
                .await?
                .map(words)),
            ModbusTable::DiscreteInput => Ok(self
                .call(async |c| c.read_discrete_inputs(address, count).await)
                .await?
                .map(words)),
            ModbusTable::HoldingRegister => {
                self.call(async |c| c.read_holding_registers(address, count).await)
                    .await
            }
            ModbusTable::InputRegister => {
                self.call(async |c| c.read_input_registers(address, count).await)
                    .await
            }
        }
    }

    pub async fn read_tag(&mut self, tag: &DemoTag) -> ReadResult {
        self.read(tag.table, tag.address, tag.count()).await
    }
}

/// The simulator's words for a demo tag (0/1 per bit for bit tables).
pub fn sim_words(plc: &PlcHandle, tag: &DemoTag) -> Vec<u16> {
    let bits = |b: Vec<bool>| b.into_iter().map(u16::from).collect();
    match tag.table {
        ModbusTable::Coil => bits(plc.coils(tag.address, tag.count())),
        ModbusTable::DiscreteInput => bits(plc.discrete(tag.address, tag.count())),
        ModbusTable::HoldingRegister => plc.holding(tag.address, tag.count()),
        ModbusTable::InputRegister => plc.input(tag.address, tag.count()),
    }
}

/// Every demo tag whose words on the mirror differ from the simulator's, described.
pub async fn mirror_diff(mirror: &mut Mirror, plc: &PlcHandle) -> Result<(), String> {
    let mut diffs = Vec::new();
    for tag in DEMO_TAGS {
        let want = sim_words(plc, tag);
        match mirror.read_tag(tag).await {
            Ok(Ok(got)) if got == want => {}
            got => diffs.push(format!(
                "{} ({:?} {}): mirror {got:04x?}, simulator {want:04x?}",
                tag.path, tag.table, tag.address
            )),
        }
    }
    if diffs.is_empty() {
        Ok(())
    } else {
        Err(diffs.join("; "))
    }
}

/// What passed the wiretap. "Altered" datagrams are those the relay damaged: delivered bytes
/// that the transmitter never sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TapCounts {
    /// Datagrams the transmitter sent (into the relay).
    pub sent: u64,
    /// Of those, data datagrams (not FEC repair shards).
    pub sent_data: u64,
    /// Datagrams delivered to the receiver (out of the relay).
    pub delivered: u64,
    /// Altered datagrams whose first four bytes are no longer the magic.
    pub altered_magic: u64,
    /// Altered datagrams with the magic intact.
    pub altered_other: u64,
    /// Unaltered datagrams delivered again after a first delivery.
    pub repeats: u64,
    /// Distinct data datagrams delivered unaltered at least once.
    pub delivered_data: u64,
}

#[derive(Default)]
struct TapState {
    counts: TapCounts,
    originals: HashSet<u64>,
    delivered: HashSet<u64>,
}

/// Sits on both sides of the relay and compares what the transmitter sent with what the
/// receiver got, byte for byte, so the test knows the ground truth of every impairment
/// independently of both the relay's counters and the decoder.
pub struct Wiretap {
    /// Where the transmitter sends.
    pub before: SocketAddr,
    /// Where the relay sends.
    pub after: SocketAddr,
    sockets: Option<(UdpSocket, UdpSocket)>,
    state: Arc<Mutex<TapState>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Wiretap {
    pub async fn bind() -> Wiretap {
        let a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        Wiretap {
            before: a.local_addr().unwrap(),
            after: b.local_addr().unwrap(),
            sockets: Some((a, b)),
            state: Arc::default(),
            tasks: Vec::new(),
        }
    }

    pub fn run(&mut self, relay: SocketAddr, rx: SocketAddr) {
        let Some((a, b)) = self.sockets.take() else {
            return;
        };
        let state = self.state.clone();
        self.tasks.push(tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            loop {
                let Ok(n) = a.recv(&mut buf).await else {
                    continue;
                };
                {
                    let mut s = state.lock().unwrap();
                    s.counts.sent += 1;
                    if !is_repair(&buf[..n]) {
                        s.counts.sent_data += 1;
                    }
                    s.originals.insert(digest(&buf[..n]));
                }
                let _ = a.send_to(&buf[..n], relay).await;
            }
        }));
        let state = self.state.clone();
        self.tasks.push(tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            loop {
                let Ok(n) = b.recv(&mut buf).await else {
                    continue;
                };
                let d = &buf[..n];
                {
                    let mut s = state.lock().unwrap();
                    s.counts.delivered += 1;
                    let h = digest(d);
                    if !s.originals.contains(&h) {
                        if d.get(..4) == Some(&protocol::wire::MAGIC[..]) {
                            s.counts.altered_other += 1;
                        } else {
                            s.counts.altered_magic += 1;
                        }
                    } else if !s.delivered.insert(h) {
                        s.counts.repeats += 1;
                    } else if !is_repair(d) {
                        s.counts.delivered_data += 1;
                    }
                }
                let _ = b.send_to(d, rx).await;
            }
        }));
    }

    pub fn counts(&self) -> TapCounts {
        self.state.lock().unwrap().counts.clone()
    }
}

impl Drop for Wiretap {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Whether an intact datagram is an FEC repair shard (the header's flags; see WIRE.md).
fn is_repair(datagram: &[u8]) -> bool {
    protocol::wire::Header::parse(datagram).is_some_and(|h| h.is_repair())
}

fn digest(bytes: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// xorshift64*: reproducible test bytes without a dependency.
pub struct XorShift(pub u64);

impl XorShift {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A value in `range` (end exclusive).
    pub fn below(&mut self, range: std::ops::Range<usize>) -> usize {
        range.start + (self.next() as usize) % (range.end - range.start)
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// `p` as a TOML string (quoted and escaped), for configs written as text.
#[allow(dead_code)] // not every test file writes paths into its configs
pub fn toml_path(p: &Path) -> String {
    toml::Value::String(p.display().to_string()).to_string()
}
