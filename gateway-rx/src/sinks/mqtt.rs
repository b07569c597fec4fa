//! The MQTT publisher (`[mqtt]`, rumqttc): a topic per tag under a prefix, a JSON payload per
//! value, retained by default so that a new subscriber gets each tag's last value at once.
//! With `format = "sparkplug_b"` the same windows, journal and flows carry Sparkplug B
//! messages instead (`mqtt/sparkplug.rs`): births at each connection and on request, data by
//! alias, each message's `seq` appended when its flight is built, so that a window sent again
//! after a reconnect is numbered after that connection's NBIRTH.
//!
//! # Topics and payloads
//!
//! A tag `site/area/pump3/speed` is published on `<topic_prefix>/site/area/pump3/speed`. Each
//! level of the tag path becomes a topic level; the wildcards `+` and `#`, control characters
//! (NUL included) and Unicode noncharacters in a tag name become `_` (a broker may close the
//! connection of a client publishing them), an empty level becomes `_`, and a topic that would
//! start with `$` (reserved for the broker's own topics) gets a leading `_`. The payload:
//!
//! ```json
//! {"value": 1480.5, "type": "Double", "quality": {"code": 0, "name": "Good"},
//!  "source_time": "2026-01-01T12:00:00.000000000Z", "received_time": "2026-01-01T12:00:00.004000000Z"}
//! ```
//!
//! Values are JSON numbers, booleans or strings; a DateTime is an RFC 3339 string, a
//! ByteString lowercase hex, a NaN or infinite float `null`. A late sample (below) carries
//! `"late": true` as well.
//!
//! # Every sample, late ones too
//!
//! History samples come from the sink's spool in the order the store took them: per tag in
//! source-time order, except what a healed gap brings after newer values. Every one of them is
//! published. Per tag the publisher keeps a *mark*, the source time of the newest value it
//! published in order:
//!
//! - a sample newer than its tag's mark is published as configured (retained with
//!   `retain = true`) and moves the mark;
//! - a sample older than the mark is *late*: it is published on the same topic, with
//!   `"late": true`, and never retained, whatever `retain` says. A message published without
//!   RETAIN does not replace the broker's retained message (MQTT 3.1.1, 3.3.1.3), so a new
//!   subscriber still gets the newest value while a subscriber that builds history gets the
//!   late sample too (counted, `late_published`). The same topic rather than a separate one:
//!   a consumer of a tag's topic gets all of its history without knowing of a second tree,
//!   and the flag tells it what it is;
//! - a sample at its tag's mark has been published already (by the live path, say) and is
//!   not published again (counted, `skipped_duplicate`).
//!
//! The marks are kept in the journal, so they survive restarts.
//!
//! # Windows, the journal, and what each QoS guarantees
//!
//! Samples go out in windows of up to [`WINDOW`] messages. Before the first packet of a window
//! leaves, the window is written to the journal (`mqtt/journal.rs`, the file `mqtt.journal` in
//! the spool directory; synced first at QoS 2): its messages byte for byte, their packet
//! identifiers (1 to n), the spool position after them and the marks they move. The publisher
//! connects with a persistent session (clean session off, the configured `client_id`) and runs
//! the publisher's side of the QoS flows itself (`mqtt/flight.rs`) on the connection rumqttc
//! sets up (TCP or TLS, CONNECT and CONNACK, framing); at QoS 2 each PUBREC is journaled
//! (synced) before its PUBREL leaves, and at most `qos2_max_inflight` messages are in flight:
//! mosquitto acknowledges QoS 2 messages beyond its own limit for a client and drops them
//! (`flight.rs`). Once the broker has acknowledged the whole window (QoS 1: PUBACK,
//! QoS 2: PUBCOMP, QoS 0: written to the connection), the journal records it done (synced),
//! the marks move and the spool cursor moves past it. A window cut by a lost connection, or by
//! a restart (a crash, SIGKILL, a power loss), goes out again as the same packets: a message
//! not acknowledged as PUBLISH with the same packet identifier and DUP set, a released one as
//! PUBREL (counted, `resent`).
//!
//! - **QoS 2: exactly once**, across reconnects, restarts of the receiver (SIGKILL and power
//!   loss included) and restarts of the broker, provided the broker keeps the session: its
//!   persistence on (a broker killed without saving loses what it had not saved), no session
//!   expiry shorter than an outage, `client_id` unchanged, and `qos2_max_inflight` at most its
//!   limit for a client's incoming QoS 2 messages. The broker recognises the identifier of a
//!   message it holds and does not forward it twice; a PUBREL for a message it has forwarded
//!   only gets its PUBCOMP. When the broker answers that it has no session for the client
//!   while released messages are open (it lost its state), those are published anew: at
//!   least once for that window, logged.
//! - **QoS 1: at least once.** The broker forwards a message sent again, so after a lost
//!   connection or a restart a subscriber may get a sample twice: the same payload, same
//!   `source_time`, never flagged late; consumers key on (topic, `source_time`).
//! - **QoS 0:** no acknowledgement; a window counts once written to the connection, and is
//!   written again after a restart.
//!
//! rumqttc's own flow state (`MqttState`, driven by `EventLoop::poll`) cannot give QoS 2
//! across a restart: it answers a PUBREC with a PUBREL inside its read loop, before the
//! application sees the PUBREC, so "the broker owns this message" cannot be made durable before
//! the PUBREL leaves, and its in-flight table lives in memory only, with packet identifiers
//! from a counter that starts again at 1 in every event loop. A restarted process would
//! publish a message the broker had already forwarded under an identifier the broker no
//! longer holds: a duplicate. Hence `EventLoop::poll` only connects here; the packets then go
//! through the connection it opened (`EventLoop::network`).
//!
//! # Live values
//!
//! Live values are published only for tags the history stream does not carry: when no history
//! has arrived within [`LIVE_GRACE`] of the publisher starting (a transmitter without
//! `[history]`), it publishes each tag's current value from the current-value table whenever its
//! source time moves past the tag's mark (latest per tag: nothing is queued). Once history
//! arrives, every value comes from it, in order, and live publishing stops.

pub mod flight;
pub mod journal;
pub mod sparkplug;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use config::rx::{Mqtt, MqttFormat};
use config::sinks::topic_refuses;
use config::timefmt::format_rfc3339;
use protocol::model::{Quality, UnixNanos, Value};
use rumqttc::{
    Event, EventLoop, LastWill, MqttOptions, Packet, PubAck, PubComp, PubRec, PubRel, Publish, QoS,
    Subscribe, SubscribeFilter,
};
use tokio::time::Instant;
use tracing::{info, warn};

use super::SinkStats;
use super::delivery::{Ahead, Attempts, acknowledged};
use super::spool::{Pos, SpoolReader, SpoolSample};
use crate::state::State;
use flight::{Ack, Flight};
use journal::{Journal, Message, Window};

/// Messages per window (journaled and acknowledged together); their packet identifiers are
/// 1 to `WINDOW`. All of them are in flight at once at QoS 0 and 1, `qos2_max_inflight` at
/// QoS 2.
pub const WINDOW: usize = config::sinks::limits::MQTT_WINDOW as usize;
/// The broker answering nothing for a window in flight this long is a lost connection.
const ACK_TIMEOUT: Duration = Duration::from_secs(30);
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// With no history within this of starting, live values are published.
pub const LIVE_GRACE: Duration = Duration::from_secs(5);
const IDLE_WAIT: Duration = Duration::from_millis(250);
/// Topics cached per tag name, at most.
const TOPIC_CACHE: usize = 200_000;

/// The topic of `tag` under `prefix` (see the module doc).
pub fn topic(prefix: &str, tag: &str) -> String {
    let mut out = String::with_capacity(prefix.len() + tag.len() + 1);
    if !prefix.is_empty() {
        out.push_str(prefix);
        out.push('/');
    }
    for (i, level) in tag.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        if level.is_empty() {
            out.push('_');
            continue;
        }
        for c in level.chars() {
            out.push(if topic_refuses(c) { '_' } else { c });
        }
    }
    if out.starts_with('$') {
        out.insert(0, '_');
    }
    out
}

fn json_value(v: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        Value::Boolean(b) => J::Bool(*b),
        Value::Int16(x) => J::from(*x),
        Value::Int32(x) => J::from(*x),
        Value::Int64(x) => J::from(*x),
        Value::UInt16(x) => J::from(*x),
        Value::UInt32(x) => J::from(*x),
        Value::UInt64(x) => J::from(*x),
        Value::Float(x) => serde_json::Number::from_f64(f64::from(*x)).map_or(J::Null, J::Number),
        Value::Double(x) => serde_json::Number::from_f64(*x).map_or(J::Null, J::Number),
        Value::String(s) => J::String(s.clone()),
        Value::DateTime(t) => J::String(format_rfc3339(*t)),
        Value::ByteString(b) => J::String(b.iter().map(|x| format!("{x:02x}")).collect()),
    }
}

/// The JSON payload of one value; `late`: a sample older than what its topic already had.
pub fn payload(
    value: &Value,
    quality: Quality,
    source_time: UnixNanos,
    received: UnixNanos,
    late: bool,
) -> String {
    let mut j = serde_json::json!({
        "value": json_value(value),
        "type": crate::store::db::type_name(value.value_type()),
        "quality": {"code": quality.0, "name": quality.name()},
        "source_time": format_rfc3339(source_time),
        "received_time": format_rfc3339(received),
    });
    if late {
        j["late"] = serde_json::Value::Bool(true);
    }
    j.to_string()
}

fn tls_config(cfg: &Mqtt) -> anyhow::Result<rumqttc::TlsConfiguration> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    match &cfg.ca_file {
        Some(path) => {
            for cert in CertificateDer::pem_file_iter(path)
                .map_err(|e| anyhow::anyhow!("reading CA file {}: {e}", path.display()))?
            {
                let cert = cert.map_err(|e| anyhow::anyhow!("CA file {}: {e}", path.display()))?;
                roots.add(cert)?;
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            for cert in native.certs {
                let _ = roots.add(cert);
            }
        }
    }
    if roots.is_empty() {
        anyhow::bail!("no CA certificate to trust (ca_file, or the system's)");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(rumqttc::TlsConfiguration::Rustls(Arc::new(config)))
}

fn options(
    cfg: &Mqtt,
    tls: Option<&rumqttc::TlsConfiguration>,
    node: Option<&Node>,
) -> MqttOptions {
    let mut o = MqttOptions::new(cfg.client_id.clone(), cfg.host.clone(), cfg.port);
    o.set_keep_alive(cfg.keep_alive);
    // The broker keeps the session between connections: what makes a re-sent packet
    // identifier mean "the same message" to it (see the module doc).
    o.set_clean_session(false);
    o.set_max_packet_size(1 << 20, 1 << 20);
    if let Some(n) = node {
        // A DBIRTH holds every metric of a device: up to Mosquitto's default message limit.
        o.set_max_packet_size(1 << 20, 256 << 20);
        o.set_last_will(LastWill::new(
            n.ids.node_topic(sparkplug::Kind::NDeath),
            sparkplug::ndeath(n.bd_seq, observe::lifecycle::unix_now()),
            QoS::AtLeastOnce,
            false,
        ));
    }
    if let Some(user) = &cfg.username {
        o.set_credentials(
            user.clone(),
            cfg.password
                .as_ref()
                .map(|p| p.expose().to_owned())
                .unwrap_or_default(),
        );
    }
    if let Some(t) = tls {
        o.set_transport(rumqttc::Transport::tls_with_config(t.clone()));
    }
    o
}

/// Where a sample stands against its tag's mark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Newer than anything published in order for the tag (or the tag's first).
    InOrder,
    /// Older: published, flagged late, not retained.
    Late,
    /// At the mark: published already.
    Published,
}

pub fn order(mark: Option<UnixNanos>, time: UnixNanos) -> Order {
    match mark {
        Some(m) if time < m => Order::Late,
        Some(m) if time == m => Order::Published,
        _ => Order::InOrder,
    }
}

/// Gathers a window's messages against the marks (and the marks the window itself moves).
struct Builder<'a> {
    marks: &'a HashMap<Arc<str>, UnixNanos>,
    moved: HashMap<Arc<str>, UnixNanos>,
    qos: u8,
    retain: bool,
    messages: Vec<Message>,
    late: u32,
    published: u64,
}

impl<'a> Builder<'a> {
    fn new(marks: &'a HashMap<Arc<str>, UnixNanos>, cfg: &Mqtt) -> Builder<'a> {
        Builder {
            marks,
            moved: HashMap::new(),
            qos: cfg.qos,
            // Sparkplug data is never retained (a host learns state from births).
            retain: cfg.retain && cfg.format == MqttFormat::Json,
            messages: Vec::new(),
            late: 0,
            published: 0,
        }
    }

    fn mark(&self, tag: &str) -> Option<UnixNanos> {
        self.moved.get(tag).or_else(|| self.marks.get(tag)).copied()
    }

    #[cfg(test)]
    fn push(&mut self, s: &SpoolSample, topic: String) -> Order {
        self.push_with(s, |late| {
            let p = payload(&s.value, s.quality, s.time, s.received, late);
            (topic, p.into_bytes())
        })
    }

    /// Adds `s` as the message `make(late)` gives (topic and payload), if it is to be sent.
    fn push_with(
        &mut self,
        s: &SpoolSample,
        make: impl FnOnce(bool) -> (String, Vec<u8>),
    ) -> Order {
        let o = order(self.mark(&s.tag), s.time);
        match o {
            Order::Published => self.published += 1,
            Order::Late => {
                self.late += 1;
                let (topic, payload) = make(true);
                self.messages.push(Message {
                    topic,
                    payload,
                    retain: false,
                });
            }
            Order::InOrder => {
                self.moved.insert(s.tag.clone(), s.time);
                let (topic, payload) = make(false);
                self.messages.push(Message {
                    topic,
                    payload,
                    retain: self.retain,
                });
            }
        }
        o
    }

    fn finish(self, end: Option<Pos>) -> Option<Window> {
        if self.messages.is_empty() {
            return None;
        }
        let mut marks: Vec<(String, UnixNanos)> = self
            .moved
            .into_iter()
            .map(|(t, m)| (t.to_string(), m))
            .collect();
        marks.sort_unstable();
        Some(Window {
            qos: self.qos,
            end: end.map(journal::pos_tuple),
            late: self.late,
            marks,
            messages: self.messages,
        })
    }
}

#[derive(Debug)]
enum Failure {
    Connection(String),
    /// The journal could not be written: nothing more may be sent until it can.
    Journal(std::io::Error),
}

fn lost(why: impl Into<String>) -> Failure {
    Failure::Connection(why.into())
}

/// The connection rumqttc opened, driven directly: packets out, packets in, keep-alive.
struct Link<'a> {
    ev: &'a mut EventLoop,
    keep_alive: Duration,
    last_sent: Instant,
    ping_sent: Option<Instant>,
    foreign_logged: bool,
    /// Sparkplug: the node's NCMD topic, and whether a rebirth was asked on it.
    ncmd: Option<String>,
    rebirth: bool,
}

impl<'a> Link<'a> {
    fn new(ev: &'a mut EventLoop, keep_alive: Duration, ncmd: Option<String>) -> Link<'a> {
        Link {
            ev,
            keep_alive,
            last_sent: Instant::now(),
            ping_sent: None,
            foreign_logged: false,
            ncmd,
            rebirth: false,
        }
    }

    async fn send(&mut self, packets: Vec<Packet>) -> Result<(), Failure> {
        if packets.is_empty() {
            return Ok(());
        }
        let Some(net) = self.ev.network.as_mut() else {
            return Err(lost("not connected"));
        };
        let write = async {
            for p in packets {
                net.write(p).await?;
            }
            net.flush().await
        };
        tokio::time::timeout(WRITE_TIMEOUT, write)
            .await
            .map_err(|_| lost("writing to the broker timed out"))?
            .map_err(|e| lost(e.to_string()))?;
        self.last_sent = Instant::now();
        Ok(())
    }

    fn next_ping(&self) -> Instant {
        match self.ping_sent {
            Some(at) => at + self.keep_alive,
            None => self.last_sent + self.keep_alive,
        }
    }

    /// Sends PINGREQ when nothing went out for the keep-alive; fails when one went unanswered
    /// that long.
    async fn keep_alive(&mut self) -> Result<(), Failure> {
        if self.keep_alive.is_zero() || Instant::now() < self.next_ping() {
            return Ok(());
        }
        if self.ping_sent.is_some() {
            return Err(lost("the broker did not answer a PINGREQ"));
        }
        self.send(vec![Packet::PingReq]).await?;
        self.ping_sent = Some(Instant::now());
        Ok(())
    }

    /// A packet that has arrived already, if any (no waiting, no timer).
    async fn try_recv(&mut self) -> Result<Option<Packet>, Failure> {
        loop {
            let Some(net) = self.ev.network.as_mut() else {
                return Err(lost("not connected"));
            };
            let polled = {
                let mut read = std::pin::pin!(net.read());
                std::future::poll_fn(|cx| std::task::Poll::Ready(read.as_mut().poll(cx))).await
            };
            let packet = match polled {
                std::task::Poll::Pending => return Ok(None),
                std::task::Poll::Ready(r) => r.map_err(|e| lost(e.to_string()))?,
            };
            if let Some(p) = self.answer(packet).await? {
                return Ok(Some(p));
            }
        }
    }

    /// Handles what is not for the publisher; returns the rest.
    async fn answer(&mut self, packet: Packet) -> Result<Option<Packet>, Failure> {
        let answer = match packet {
            Packet::PingResp => {
                self.ping_sent = None;
                return Ok(None);
            }
            Packet::Publish(p) if self.ncmd.as_deref() == Some(p.topic.as_str()) => {
                // On the IT side only: a host asks this node to announce itself again.
                if sparkplug::is_rebirth(&p.payload) {
                    info!(topic = p.topic, "Sparkplug rebirth requested");
                    self.rebirth = true;
                }
                match p.qos {
                    QoS::AtMostOnce => return Ok(None),
                    QoS::AtLeastOnce => Packet::PubAck(PubAck::new(p.pkid)),
                    QoS::ExactlyOnce => Packet::PubRec(PubRec::new(p.pkid)),
                }
            }
            Packet::Publish(p) => {
                if !self.foreign_logged {
                    self.foreign_logged = true;
                    warn!(
                        topic = p.topic,
                        "the MQTT session delivers messages to the publisher (a subscription of an earlier client with its client_id?); they are acknowledged and dropped"
                    );
                }
                match p.qos {
                    QoS::AtMostOnce => return Ok(None),
                    QoS::AtLeastOnce => Packet::PubAck(PubAck::new(p.pkid)),
                    QoS::ExactlyOnce => Packet::PubRec(PubRec::new(p.pkid)),
                }
            }
            Packet::PubRel(r) => Packet::PubComp(PubComp::new(r.pkid)),
            other => return Ok(Some(other)),
        };
        self.send(vec![answer]).await?;
        Ok(None)
    }

    /// The next packet for the publisher, or `None` once `until` passes or `wake` is notified.
    /// Answers what is not for it: PINGRESP, and the broker's own publishes (a subscription
    /// an earlier client with this id left in the session: acknowledged and dropped).
    async fn recv(
        &mut self,
        until: Instant,
        wake: Option<&tokio::sync::Notify>,
    ) -> Result<Option<Packet>, Failure> {
        loop {
            self.keep_alive().await?;
            let wake_at = if self.keep_alive.is_zero() {
                until
            } else {
                until.min(self.next_ping())
            };
            let Some(net) = self.ev.network.as_mut() else {
                return Err(lost("not connected"));
            };
            let packet = tokio::select! {
                biased;
                r = net.read() => r.map_err(|e| lost(e.to_string()))?,
                () = async {
                    match wake {
                        Some(n) => n.notified().await,
                        None => std::future::pending().await,
                    }
                } => return Ok(None),
                () = tokio::time::sleep_until(wake_at) => {
                    if Instant::now() >= until {
                        return Ok(None);
                    }
                    continue;
                }
            };
            if let Some(p) = self.answer(packet).await? {
                return Ok(Some(p));
            }
        }
    }
}

struct Publisher {
    cfg: Mqtt,
    stats: Arc<SinkStats>,
    state: Arc<State>,
    history_seen: Arc<AtomicBool>,
    started: Instant,
    topics: HashMap<Arc<str>, String>,
    /// The journal's open window's flows, kept across reconnects (it knows what was acked).
    flight: Option<Flight>,
    /// With `format = "sparkplug_b"`: the edge node.
    node: Option<Node>,
}

/// The Sparkplug edge node's state (`mqtt/sparkplug.rs`).
struct Node {
    ids: sparkplug::Ids,
    /// This connection's (in its will and its NBIRTH).
    bd_seq: u8,
    seq: sparkplug::Seq,
    birth: sparkplug::Birth,
    /// Devices announced dead (their source Bad on the plant side), by id.
    dead: HashSet<String>,
}

impl Node {
    fn new(cfg: &Mqtt) -> Option<Node> {
        match &cfg.format {
            MqttFormat::Json => None,
            MqttFormat::SparkplugB {
                group_id,
                edge_node_id,
            } => Some(Node {
                ids: sparkplug::Ids {
                    group: group_id.clone(),
                    node: edge_node_id.clone(),
                },
                bd_seq: 0,
                seq: sparkplug::Seq::default(),
                birth: sparkplug::Birth::default(),
                dead: HashSet::new(),
            }),
        }
    }
}

/// A Sparkplug birth or death: QoS 0 and never retained, as the specification has them; they
/// are state announced again on every connection, not samples, so they are not journaled.
fn announce(topic: String, payload: Vec<u8>) -> Packet {
    Packet::Publish(Publish::new(topic, QoS::AtMostOnce, payload))
}

impl Publisher {
    /// Adds a sample to a window in the configured format.
    fn push(&mut self, b: &mut Builder<'_>, s: &SpoolSample) {
        match &self.node {
            Some(n) => {
                let now = observe::lifecycle::unix_now();
                b.push_with(s, |late| n.birth.data(&n.ids, s, now, late));
            }
            None => {
                let topic = self.topic(&s.tag);
                b.push_with(s, |late| {
                    let p = payload(&s.value, s.quality, s.time, s.received, late);
                    (topic, p.into_bytes())
                });
            }
        }
    }

    /// The flows of `w`; with Sparkplug, each message numbered (`seq`) in the order it is sent.
    fn flight_for(&mut self, w: &Window, released: &BTreeSet<u16>, resumed: bool) -> Flight {
        let limit = self.limit(w.qos);
        match self.node.as_mut() {
            Some(n) => {
                let mut w = w.clone();
                for m in &mut w.messages {
                    sparkplug::stamp(&mut m.payload, n.seq.advance());
                }
                Flight::new(&w, released, limit, resumed)
            }
            None => Flight::new(w, released, limit, resumed),
        }
    }

    /// NBIRTH, then a DBIRTH per device (and a DDEATH for each whose source is Bad).
    async fn births(&mut self, link: &mut Link<'_>) -> Result<(), Failure> {
        let Some(n) = self.node.as_mut() else {
            return Ok(());
        };
        let now = observe::lifecycle::unix_now();
        let (birth, devices) = sparkplug::Birth::new(&self.state.view(), now);
        let mut out = vec![announce(
            n.ids.node_topic(sparkplug::Kind::NBirth),
            sparkplug::nbirth(n.bd_seq, now),
        )];
        n.seq.reset();
        for d in devices {
            let topic = n.ids.device_topic(sparkplug::Kind::DBirth, &d.device);
            out.push(announce(topic, d.encode(n.seq.advance(), now)));
        }
        info!(
            bd_seq = n.bd_seq,
            devices = birth.devices.len(),
            catalogue = ?birth.catalogue,
            "Sparkplug births sent"
        );
        n.birth = birth;
        n.dead.clear();
        link.send(out).await?;
        self.health(link).await
    }

    /// DDEATH for a device whose source the last heartbeat says is Bad, DBIRTH when it is back.
    async fn health(&mut self, link: &mut Link<'_>) -> Result<(), Failure> {
        let Some(n) = self.node.as_mut() else {
            return Ok(());
        };
        let Some((_, hb)) = self.state.last_heartbeat() else {
            return Ok(());
        };
        let now = observe::lifecycle::unix_now();
        let mut out = Vec::new();
        let mut back = Vec::new();
        for (id, source) in &n.birth.devices {
            let Some(h) = hb.sources.iter().find(|h| &h.name == source) else {
                continue;
            };
            let dead = n.dead.contains(id);
            if !h.connected && !dead {
                warn!(
                    device = id,
                    source,
                    error = h.last_error,
                    "source Bad on the plant side: Sparkplug DDEATH"
                );
                out.push(announce(
                    n.ids.device_topic(sparkplug::Kind::DDeath, id),
                    sparkplug::ddeath(n.seq.advance(), now),
                ));
                n.dead.insert(id.clone());
            } else if h.connected && dead {
                back.push(id.clone());
            }
        }
        if !back.is_empty() {
            let (_, devices) = sparkplug::Birth::new(&self.state.view(), now);
            for d in devices.into_iter().filter(|d| back.contains(&d.device)) {
                info!(
                    device = d.device,
                    "source back on the plant side: Sparkplug DBIRTH"
                );
                n.dead.remove(&d.device);
                let topic = n.ids.device_topic(sparkplug::Kind::DBirth, &d.device);
                out.push(announce(topic, d.encode(n.seq.advance(), now)));
            }
        }
        link.send(out).await
    }

    /// Between windows: a rebirth when asked (NCMD) or when the catalogue changed; deaths and
    /// births of devices as their sources' health changes.
    async fn upkeep(&mut self, link: &mut Link<'_>) -> Result<(), Failure> {
        let Some(n) = self.node.as_ref() else {
            return Ok(());
        };
        if link.rebirth || !n.birth.is_for(self.state.catalogue().as_deref()) {
            link.rebirth = false;
            return self.births(link).await;
        }
        self.health(link).await
    }

    fn topic(&mut self, tag: &Arc<str>) -> String {
        if let Some(t) = self.topics.get(tag) {
            return t.clone();
        }
        if self.topics.len() >= TOPIC_CACHE {
            self.topics.clear();
        }
        let t = topic(&self.cfg.topic_prefix, tag);
        self.topics.insert(tag.clone(), t.clone());
        t
    }

    /// Messages in flight at once for a window at `qos` (its own: one from the journal may
    /// predate a change of `qos`).
    fn limit(&self, qos: u8) -> usize {
        if qos == 2 {
            usize::from(self.cfg.qos2_max_inflight).clamp(1, WINDOW)
        } else {
            WINDOW
        }
    }

    fn live_allowed(&self) -> bool {
        self.cfg.live
            && !self.history_seen.load(Ordering::Relaxed)
            && self.started.elapsed() >= LIVE_GRACE
    }

    /// Current values newer than their tags' marks, at most [`WINDOW`].
    fn live_window(&mut self, marks: &HashMap<Arc<str>, UnixNanos>) -> Option<Window> {
        let mut picked = Vec::new();
        {
            let view = self.state.view();
            let cat = view.catalogue()?;
            for (i, info) in cat.iter().enumerate() {
                let Some(v) = view.value(i as u32) else {
                    continue;
                };
                if order(marks.get(info.name).copied(), v.source_time) == Order::InOrder {
                    picked.push(SpoolSample {
                        tag: Arc::from(info.name),
                        value: v.value.clone(),
                        quality: v.quality,
                        time: v.source_time,
                        received: v.received_at,
                    });
                    if picked.len() >= WINDOW {
                        break;
                    }
                }
            }
        }
        let cfg = self.cfg.clone();
        let mut b = Builder::new(marks, &cfg);
        for s in &picked {
            self.push(&mut b, s);
        }
        b.finish(None)
    }

    /// The next window of history (spool items up to [`WINDOW`] messages), and the position
    /// after the items it covers (also when all of them were published already).
    fn history_window(
        &mut self,
        ahead: &mut Ahead,
        reader: &mut SpoolReader,
        marks: &HashMap<Arc<str>, UnixNanos>,
    ) -> (Option<Window>, Option<Pos>) {
        let cfg = self.cfg.clone();
        let mut b = Builder::new(marks, &cfg);
        let mut end = None;
        while b.messages.len() < WINDOW {
            let Some(item) = ahead.pop(reader, WINDOW * 4) else {
                break;
            };
            end = Some(item.after);
            self.push(&mut b, &item.sample);
        }
        self.stats
            .skipped_duplicate
            .fetch_add(b.published, Ordering::Relaxed);
        (b.finish(end), end)
    }

    /// Sends the open window's packets (again, those an earlier connection or process sent)
    /// and waits until the broker has acknowledged all of them, journaling each release on the
    /// way.
    async fn fly(&mut self, link: &mut Link<'_>, journal: &mut Journal) -> Result<(), Failure> {
        let Some(flight) = self.flight.as_mut() else {
            return Ok(());
        };
        let out = flight.connected();
        link.send(out).await?;
        self.stats
            .resent
            .fetch_add(flight.take_resent(), Ordering::Relaxed);
        if flight.qos() == QoS::AtMostOnce {
            flight.written();
            return Ok(());
        }
        let mut deadline = Instant::now() + ACK_TIMEOUT;
        while !flight.is_complete() {
            let first = link
                .recv(deadline, None)
                .await?
                .ok_or_else(|| lost("the broker did not acknowledge in time"))?;
            // What else has arrived: the PUBRECs of a burst are journaled with one sync.
            let mut packets = vec![first];
            while packets.len() < WINDOW {
                match link.try_recv().await? {
                    Some(p) => packets.push(p),
                    None => break,
                }
            }
            let (mut received, mut out, mut progress) = (Vec::new(), Vec::new(), false);
            for p in &packets {
                match flight.on_packet(p) {
                    Ack::Completed => progress = true,
                    Ack::Received(id) => received.push(id),
                    Ack::Rerelease(id) => out.push(Packet::PubRel(PubRel::new(id))),
                    Ack::None => {}
                }
            }
            if !received.is_empty() {
                journal.released(&received).map_err(Failure::Journal)?;
                out.extend(received.iter().filter_map(|id| flight.release(*id)));
                progress = true;
            }
            out.extend(flight.fill());
            link.send(out).await?;
            self.stats
                .resent
                .fetch_add(flight.take_resent(), Ordering::Relaxed);
            if progress {
                deadline = Instant::now() + ACK_TIMEOUT;
            }
        }
        Ok(())
    }

    /// The open window is acknowledged: journal it done, move the spool cursor, count.
    fn finish(&mut self, journal: &mut Journal, reader: &mut SpoolReader) -> Result<(), Failure> {
        let done = journal.done().map_err(Failure::Journal)?;
        self.flight = None;
        let Some(w) = done else { return Ok(()) };
        let n = w.messages.len() as u64;
        match w.end_pos() {
            Some(end) => {
                acknowledged(reader, &self.stats, end, n);
                self.stats
                    .late_published
                    .fetch_add(u64::from(w.late), Ordering::Relaxed);
            }
            None => {
                self.stats.live_published.fetch_add(n, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// One connection's life: finish the window left open, drain the spool, publish live
    /// values when allowed, keep the connection alive while idle. Returns when it fails.
    async fn session(
        &mut self,
        ev: &mut EventLoop,
        session_present: bool,
        reader: &mut SpoolReader,
        journal: &mut Journal,
    ) -> Failure {
        match self.drive(ev, session_present, reader, journal).await {
            Err(f) => f,
            Ok(never) => match never {},
        }
    }

    async fn drive(
        &mut self,
        ev: &mut EventLoop,
        session_present: bool,
        reader: &mut SpoolReader,
        journal: &mut Journal,
    ) -> Result<std::convert::Infallible, Failure> {
        let ncmd = (self.node.as_ref()).map(|n| n.ids.node_topic(sparkplug::Kind::NCmd));
        let mut link = Link::new(ev, self.cfg.keep_alive, ncmd.clone());
        let shared = reader.shared().clone();
        if let Some(topic) = ncmd {
            let mut sub = Subscribe::new_many([SubscribeFilter::new(topic, QoS::AtMostOnce)]);
            // Windows use 1 to WINDOW.
            sub.pkid = u16::MAX;
            link.send(vec![Packet::Subscribe(sub)]).await?;
            self.births(&mut link).await?;
        }
        if let Some(open) = journal.open_window() {
            let mut flight = match self.flight.take() {
                // The same packets as on the last connection; with Sparkplug they are
                // numbered again after this connection's NBIRTH.
                Some(f) if self.node.is_none() => f,
                _ => {
                    let (window, released) = (open.window.clone(), open.released.clone());
                    self.flight_for(&window, &released, true)
                }
            };
            if !session_present && flight.any_released() {
                warn!(
                    client_id = self.cfg.client_id,
                    "the MQTT broker has no session for this client any more (lost state, expired): the open window's released messages are published again; subscribers may get them twice"
                );
                journal.reset().map_err(Failure::Journal)?;
                flight.reset();
            }
            self.flight = Some(flight);
            self.fly(&mut link, journal).await?;
            self.finish(journal, reader)?;
        }
        let mut ahead = Ahead::default();
        ahead.restart(reader);
        loop {
            self.upkeep(&mut link).await?;
            let (window, end) = self.history_window(&mut ahead, reader, journal.marks());
            let window = match (window, end) {
                (Some(w), _) => Some(w),
                (None, Some(end)) => {
                    // Only samples published already: nothing to send for them.
                    reader.commit(end);
                    continue;
                }
                (None, None) if self.live_allowed() => self.live_window(journal.marks()),
                (None, None) => None,
            };
            if let Some(w) = window {
                self.flight = Some(self.flight_for(&w, &BTreeSet::new(), false));
                if let Err(e) = journal.begin(w) {
                    self.flight = None;
                    return Err(Failure::Journal(e));
                }
                self.fly(&mut link, journal).await?;
                self.finish(journal, reader)?;
                continue;
            }
            // Idle: answer the broker and keep the connection alive until the spool grows.
            link.recv(Instant::now() + IDLE_WAIT, Some(&shared.notify))
                .await?;
        }
    }
}

/// Waits for the broker's CONNACK; returns whether the broker had a session for the client.
async fn connect(eventloop: &mut EventLoop) -> Result<bool, String> {
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    loop {
        let ev = tokio::time::timeout_at(deadline, eventloop.poll())
            .await
            .map_err(|_| "no answer from the broker in time".to_owned())?
            .map_err(|e| e.to_string())?;
        if let Event::Incoming(Packet::ConnAck(ack)) = ev {
            return match ack.code {
                rumqttc::ConnectReturnCode::Success => Ok(ack.session_present),
                code => Err(format!("the broker refused the connection: {code:?}")),
            };
        }
    }
}

/// The publisher's task: opens its journal, connects (with backoff), drains its spool,
/// reconnects.
pub async fn run(
    cfg: Mqtt,
    mut reader: SpoolReader,
    state: Arc<State>,
    stats: Arc<SinkStats>,
    history_seen: Arc<AtomicBool>,
) {
    let tls = if cfg.tls {
        match tls_config(&cfg) {
            Ok(t) => Some(t),
            Err(e) => {
                // Not retryable: the config names a CA file that does not hold certificates.
                tracing::error!(error = %format!("{e:#}"), "MQTT publisher: TLS cannot be set up; not publishing (history waits in its spool)");
                return;
            }
        }
    } else {
        None
    };
    let mut p = Publisher {
        cfg,
        stats,
        state,
        history_seen,
        started: Instant::now(),
        topics: HashMap::new(),
        flight: None,
        node: None,
    };
    p.node = Node::new(&p.cfg);
    let mut journal: Option<Journal> = None;
    let mut attempts = Attempts::new(p.stats.clone());
    loop {
        if journal.is_none() {
            match Journal::open(reader.dir()) {
                Ok(j) => {
                    if let Some(pos) = j.resume() {
                        reader.commit(pos);
                    }
                    journal = Some(j);
                }
                Err(e) => {
                    if let Some(n) = attempts.failed() {
                        tracing::error!(dir = %reader.dir().display(), error = %e, attempts = n, "cannot open the MQTT journal; not publishing (history waits in its spool)");
                    }
                    attempts.pause().await;
                    continue;
                }
            }
        }
        let Some(j) = journal.as_mut() else { continue };
        if let Some(n) = p.node.as_mut() {
            // Each connection is a new Sparkplug session: its will and NBIRTH share a bdSeq.
            n.bd_seq = sparkplug::next_bd_seq(reader.dir());
        }
        let mut eventloop = EventLoop::new(options(&p.cfg, tls.as_ref(), p.node.as_ref()), 1);
        let broker = format!("{}:{}", p.cfg.host, p.cfg.port);
        match connect(&mut eventloop).await {
            Ok(session_present) => {
                attempts.connected();
                info!(broker, session_present, "MQTT publisher connected");
                let failure = p
                    .session(&mut eventloop, session_present, &mut reader, j)
                    .await;
                attempts.lost();
                match failure {
                    Failure::Connection(why) => warn!(
                        broker,
                        error = why,
                        "MQTT connection lost; history waits in the spool"
                    ),
                    Failure::Journal(e) => {
                        tracing::error!(dir = %reader.dir().display(), error = %e, "cannot write the MQTT journal; nothing is published until it can be (history waits in the spool)");
                        // Read back what is durable before going on.
                        journal = None;
                        p.flight = None;
                    }
                }
            }
            Err(e) => {
                if let Some(n) = attempts.failed() {
                    warn!(
                        broker,
                        error = e,
                        attempts = n,
                        "cannot connect to the MQTT broker; retrying"
                    );
                }
            }
        }
        drop(eventloop);
        attempts.pause().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics() {
        assert_eq!(topic("gw", "site/a/pump3/speed"), "gw/site/a/pump3/speed");
        assert_eq!(topic("", "site/a"), "site/a");
        assert_eq!(topic("gw", "a+b/#/c"), "gw/a_b/_/c");
        assert_eq!(topic("gw", "/a//b/"), "gw/_/a/_/b/_");
        assert_eq!(topic("", "$SYS/x"), "_$SYS/x");
        assert_eq!(topic("p/q", "x"), "p/q/x");
    }

    /// Mosquitto closes the connection of a client publishing to a topic with a control
    /// character or a Unicode noncharacter (MQTT 3.1.1, 1.5.3 allows it to), so the window
    /// holding it would be sent again on every reconnect and the sink would never move on.
    #[test]
    fn topics_hold_no_character_a_broker_may_refuse() {
        assert_eq!(
            topic(
                "gw",
                "a\nb/c\u{7f}/\u{85}x/\u{fffe}/\u{fdd0}\u{1ffff}/tab\there"
            ),
            "gw/a_b/c_/_x/_/__/tab_here"
        );
        assert_eq!(topic("", "caf\u{e9}/\u{fffd}"), "caf\u{e9}/\u{fffd}");
    }

    #[test]
    fn payloads() {
        let p = payload(
            &Value::Double(1.5),
            Quality::GOOD,
            1_700_000_000_000_000_001,
            1_700_000_000_500_000_000,
            false,
        );
        let j: serde_json::Value = serde_json::from_str(&p).unwrap();
        assert_eq!(j["value"], 1.5);
        assert_eq!(j["type"], "Double");
        assert_eq!(j["quality"]["code"], 0);
        assert_eq!(j["quality"]["name"], "Good");
        assert!(j.get("late").is_none(), "only a late sample says so");
        assert_eq!(j["source_time"], "2023-11-14T22:13:20.000000001Z");
        assert_eq!(j["received_time"], "2023-11-14T22:13:20.500000000Z");
        let p = payload(
            &Value::ByteString(vec![0xde, 0xad]),
            Quality::BAD_COMMUNICATION_ERROR,
            0,
            0,
            true,
        );
        let j: serde_json::Value = serde_json::from_str(&p).unwrap();
        assert_eq!(j["value"], "dead");
        assert_eq!(j["quality"]["code"], 0x8005_0000u32);
        assert_eq!(j["quality"]["name"], "BadCommunicationError");
        assert_eq!(j["late"], true);
        let j: serde_json::Value = serde_json::from_str(&payload(
            &Value::Float(f32::NAN),
            Quality::GOOD,
            0,
            0,
            false,
        ))
        .unwrap();
        assert!(j["value"].is_null());
    }

    fn mqtt_cfg(retain: bool) -> Mqtt {
        let text = format!(
            "[link]\ninsecure_no_key = true\nbind = \"127.0.0.1:5600\"\n[store]\npath = \"/tmp/x/history.sqlite\"\n\
             [mqtt]\nhost = \"127.0.0.1\"\nqos = 2\nretain = {retain}\n"
        );
        config::rx::RxConfig::parse(&text, std::path::Path::new("/tmp/x/rx.toml"))
            .unwrap()
            .mqtt
            .unwrap()
    }

    fn sample(tag: &Arc<str>, t: i64) -> SpoolSample {
        SpoolSample {
            tag: tag.clone(),
            value: Value::Int32(t as i32),
            quality: Quality::GOOD,
            time: t,
            received: t + 1,
        }
    }

    #[test]
    fn late_samples_are_published_flagged_and_not_retained() {
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("a"), Arc::from("b"));
        let marks: HashMap<Arc<str>, UnixNanos> = [(a.clone(), 100)].into();
        let cfg = mqtt_cfg(true);
        let mut w = Builder::new(&marks, &cfg);
        let pushed: Vec<Order> = [
            (&a, 90),  // older than the mark: a healed gap's sample
            (&a, 100), // the mark itself: published already
            (&a, 110), // in order: moves the mark within the window
            (&a, 105), // older than the window's own mark now
            (&b, 7),   // a tag without a mark
            (&b, 7),   // the same again
        ]
        .into_iter()
        .map(|(tag, t)| w.push(&sample(tag, t), format!("gw/{tag}")))
        .collect();
        assert_eq!(
            pushed,
            [
                Order::Late,
                Order::Published,
                Order::InOrder,
                Order::Late,
                Order::InOrder,
                Order::Published
            ]
        );
        assert_eq!(w.published, 2);
        let w = w.finish(Some(Pos::default())).unwrap();
        assert_eq!(w.qos, 2);
        assert_eq!(w.late, 2);
        assert_eq!(w.marks, [("a".to_owned(), 110), ("b".to_owned(), 7)]);
        let got: Vec<(&str, i64, bool, bool)> = w
            .messages
            .iter()
            .map(|m| {
                let j: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
                (
                    m.topic.as_str(),
                    j["value"].as_i64().unwrap(),
                    m.retain,
                    j["late"] == true,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("gw/a", 90, false, true),
                ("gw/a", 110, true, false),
                ("gw/a", 105, false, true),
                ("gw/b", 7, true, false),
            ]
        );
        // retain = false: nothing is retained, late samples are still flagged.
        let cfg = mqtt_cfg(false);
        let mut w = Builder::new(&marks, &cfg);
        w.push(&sample(&a, 50), "gw/a".into());
        w.push(&sample(&a, 150), "gw/a".into());
        let w = w.finish(None).unwrap();
        assert_eq!(w.end, None);
        assert!(w.messages.iter().all(|m| !m.retain));
        assert_eq!(w.late, 1);
        // Only published samples: no window.
        let mut w = Builder::new(&marks, &cfg);
        w.push(&sample(&a, 100), "gw/a".into());
        assert!(w.finish(Some(Pos::default())).is_none());
    }
}
