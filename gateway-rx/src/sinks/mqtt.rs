//! The MQTT publisher (`[mqtt]`, rumqttc): a topic per tag under a prefix, a JSON payload per
//! value, retained by default so that a new subscriber gets each tag's last value at once.
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
//! ByteString lowercase hex, a NaN or infinite float `null`.
//!
//! # Order and completeness
//!
//! History samples come from the sink's spool in the order the store took them, and are
//! published per tag in source-time order: a sample not newer than the last one published for
//! its tag (a re-delivery after a crash, or an old sample a healed gap brought after newer ones)
//! is not published, and counted (`skipped_not_newer`); the historian stores hold it. The spool
//! cursor moves only when the broker has acknowledged every publish of a window (QoS 1: PUBACK,
//! QoS 2: PUBCOMP, QoS 0: written to the connection), so while the broker is unreachable history
//! waits in the spool, and when it comes back it drains in order. A window cut by a lost
//! connection is sent again from its start: at least once, as MQTT QoS 1 is.
//!
//! Live values are published only for tags the history stream does not carry: when no history
//! has arrived within [`LIVE_GRACE`] of the publisher starting (a transmitter without
//! `[history]`), it publishes each tag's current value from the current-value table whenever its
//! source time moves on (latest per tag: nothing is queued). Once history arrives, every value
//! comes from it, in order, and live publishing stops.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use config::rx::Mqtt;
use config::sinks::topic_refuses;
use config::timefmt::format_rfc3339;
use protocol::model::{Quality, UnixNanos, Value};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Outgoing, Packet, QoS};
use tracing::{info, warn};

use super::spool::{SpoolReader, SpoolSample, Spooled};
use super::{Backoff, SinkStats};
use crate::state::State;

/// Publishes in flight at once (and per acknowledged window).
pub const WINDOW: usize = 500;
/// A window not acknowledged within this is taken as a lost connection.
const ACK_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// With no history within this of starting, live values are published.
pub const LIVE_GRACE: Duration = Duration::from_secs(5);
const IDLE_WAIT: Duration = Duration::from_millis(250);
/// Topics cached per tag name, at most.
const TOPIC_CACHE: usize = 200_000;

/// A publish ready to go: tag, source time, topic, payload.
type Out = (Arc<str>, UnixNanos, String, Vec<u8>);

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

/// The JSON payload of one value.
pub fn payload(
    value: &Value,
    quality: Quality,
    source_time: UnixNanos,
    received: UnixNanos,
) -> Vec<u8> {
    serde_json::json!({
        "value": json_value(value),
        "type": crate::store::db::type_name(value.value_type()),
        "quality": {"code": quality.0, "name": quality.name()},
        "source_time": format_rfc3339(source_time),
        "received_time": format_rfc3339(received),
    })
    .to_string()
    .into_bytes()
}

fn qos(n: u8) -> QoS {
    match n {
        0 => QoS::AtMostOnce,
        2 => QoS::ExactlyOnce,
        _ => QoS::AtLeastOnce,
    }
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

fn options(cfg: &Mqtt, tls: Option<&rumqttc::TlsConfiguration>) -> MqttOptions {
    let mut o = MqttOptions::new(cfg.client_id.clone(), cfg.host.clone(), cfg.port);
    o.set_keep_alive(cfg.keep_alive);
    o.set_clean_session(true);
    o.set_inflight(WINDOW as u16);
    o.set_max_packet_size(1 << 20, 1 << 20);
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

struct Publisher {
    cfg: Mqtt,
    stats: Arc<SinkStats>,
    state: Arc<State>,
    history_seen: Arc<AtomicBool>,
    started: Instant,
    /// Source time of the last value the broker acknowledged, per tag.
    published: HashMap<Arc<str>, UnixNanos>,
    topics: HashMap<Arc<str>, String>,
}

enum Failure {
    Connection(String),
}

impl Publisher {
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

    fn live_allowed(&self) -> bool {
        self.cfg.live
            && !self.history_seen.load(Ordering::Relaxed)
            && self.started.elapsed() >= LIVE_GRACE
    }

    /// Current values newer than what was published, at most [`WINDOW`].
    fn live_window(&mut self) -> Vec<Out> {
        let mut picked = Vec::new();
        {
            let view = self.state.view();
            let Some(cat) = view.catalogue() else {
                return Vec::new();
            };
            for (i, info) in cat.iter().enumerate() {
                let Some(v) = view.value(i as u32) else {
                    continue;
                };
                let newer = self
                    .published
                    .get(info.name)
                    .is_none_or(|t| v.source_time > *t);
                if newer {
                    picked.push((
                        info.name.to_owned(),
                        v.source_time,
                        payload(v.value, v.quality, v.source_time, v.received_at),
                    ));
                    if picked.len() >= WINDOW {
                        break;
                    }
                }
            }
        }
        picked
            .into_iter()
            .map(|(name, t, p)| {
                let tag: Arc<str> = Arc::from(name);
                let topic = self.topic(&tag);
                (tag, t, topic, p)
            })
            .collect()
    }

    /// Publishes one window and waits until the broker acknowledged all of it.
    async fn publish_window(
        &mut self,
        client: &AsyncClient,
        eventloop: &mut EventLoop,
        window: &[Out],
    ) -> Result<(), Failure> {
        let q = qos(self.cfg.qos);
        for (_, _, topic, payload) in window {
            client
                .try_publish(topic.clone(), q, self.cfg.retain, payload.clone())
                .map_err(|e| Failure::Connection(format!("queueing a publish: {e}")))?;
        }
        let mut done = 0usize;
        let deadline = tokio::time::Instant::now() + ACK_TIMEOUT;
        while done < window.len() {
            let ev = tokio::time::timeout_at(deadline, eventloop.poll())
                .await
                .map_err(|_| Failure::Connection("the broker did not acknowledge in time".into()))?
                .map_err(|e| Failure::Connection(e.to_string()))?;
            match (q, ev) {
                (QoS::AtMostOnce, Event::Outgoing(Outgoing::Publish(_)))
                | (QoS::AtLeastOnce, Event::Incoming(Packet::PubAck(_)))
                | (QoS::ExactlyOnce, Event::Incoming(Packet::PubComp(_))) => done += 1,
                _ => {}
            }
        }
        for (tag, t, _, _) in window {
            let e = self.published.entry(tag.clone()).or_insert(*t);
            *e = (*e).max(*t);
        }
        Ok(())
    }

    /// The spool items up to the next window's end: those to publish, and the position to
    /// commit once they are acknowledged.
    fn history_window(
        &mut self,
        ahead: &mut VecDeque<Spooled>,
        reader: &mut SpoolReader,
    ) -> (Vec<Out>, Option<super::spool::Pos>) {
        let mut window = Vec::new();
        let mut commit = None;
        let mut local: HashMap<Arc<str>, UnixNanos> = HashMap::new();
        while window.len() < WINDOW {
            if ahead.is_empty() {
                ahead.extend(reader.read(WINDOW * 4));
            }
            let Some(item) = ahead.pop_front() else { break };
            commit = Some(item.after);
            let s: &SpoolSample = &item.sample;
            let last = local
                .get(&s.tag)
                .or_else(|| self.published.get(&s.tag))
                .copied();
            if last.is_some_and(|t| s.time <= t) {
                self.stats.skipped_not_newer.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            local.insert(s.tag.clone(), s.time);
            let topic = self.topic(&s.tag);
            window.push((
                s.tag.clone(),
                s.time,
                topic,
                payload(&s.value, s.quality, s.time, s.received),
            ));
        }
        (window, commit)
    }

    /// One connection's life: drain the spool, publish live values when allowed, keep the
    /// connection alive while idle. Returns when the connection fails.
    async fn session(
        &mut self,
        client: &AsyncClient,
        eventloop: &mut EventLoop,
        reader: &mut SpoolReader,
    ) -> Failure {
        reader.rewind();
        let mut ahead: VecDeque<Spooled> = VecDeque::new();
        loop {
            let (window, commit) = self.history_window(&mut ahead, reader);
            if !window.is_empty() {
                if let Err(f) = self.publish_window(client, eventloop, &window).await {
                    return f;
                }
                self.stats
                    .delivered
                    .fetch_add(window.len() as u64, Ordering::Relaxed);
            }
            if let Some(pos) = commit {
                reader.commit(pos);
                continue;
            }
            if self.live_allowed() {
                let live = self.live_window();
                if !live.is_empty() {
                    if let Err(f) = self.publish_window(client, eventloop, &live).await {
                        return f;
                    }
                    self.stats
                        .live_published
                        .fetch_add(live.len() as u64, Ordering::Relaxed);
                    continue;
                }
            }
            // Idle: keep the connection serviced (pings) until something is appended.
            tokio::select! {
                ev = eventloop.poll() => {
                    if let Err(e) = ev {
                        return Failure::Connection(e.to_string());
                    }
                }
                () = reader.wait(IDLE_WAIT) => {}
            }
        }
    }
}

/// Waits for the broker's CONNACK.
async fn connect(eventloop: &mut EventLoop) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + CONNECT_TIMEOUT;
    loop {
        let ev = tokio::time::timeout_at(deadline, eventloop.poll())
            .await
            .map_err(|_| "no answer from the broker in time".to_owned())?
            .map_err(|e| e.to_string())?;
        if let Event::Incoming(Packet::ConnAck(ack)) = ev {
            return match ack.code {
                rumqttc::ConnectReturnCode::Success => Ok(()),
                code => Err(format!("the broker refused the connection: {code:?}")),
            };
        }
    }
}

/// The publisher's task: connects (with backoff), drains its spool, reconnects.
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
        published: HashMap::new(),
        topics: HashMap::new(),
    };
    let mut backoff = Backoff::new();
    let mut failures_logged = 0u64;
    loop {
        let (client, mut eventloop) = AsyncClient::new(options(&p.cfg, tls.as_ref()), WINDOW * 2);
        let broker = format!("{}:{}", p.cfg.host, p.cfg.port);
        match connect(&mut eventloop).await {
            Ok(()) => {
                backoff.reset();
                failures_logged = 0;
                p.stats.connected.store(true, Ordering::Relaxed);
                p.stats.connects.fetch_add(1, Ordering::Relaxed);
                info!(broker, "MQTT publisher connected");
                let Failure::Connection(why) =
                    p.session(&client, &mut eventloop, &mut reader).await;
                p.stats.connected.store(false, Ordering::Relaxed);
                p.stats.failures.fetch_add(1, Ordering::Relaxed);
                warn!(
                    broker,
                    error = why,
                    "MQTT connection lost; history waits in the spool"
                );
            }
            Err(e) => {
                p.stats.failures.fetch_add(1, Ordering::Relaxed);
                failures_logged += 1;
                if failures_logged.is_power_of_two() {
                    warn!(
                        broker,
                        error = e,
                        attempts = failures_logged,
                        "cannot connect to the MQTT broker; retrying"
                    );
                }
            }
        }
        drop(client);
        tokio::time::sleep(backoff.next_delay()).await;
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
        );
        let j: serde_json::Value = serde_json::from_slice(&p).unwrap();
        assert_eq!(j["value"], 1.5);
        assert_eq!(j["type"], "Double");
        assert_eq!(j["quality"]["code"], 0);
        assert_eq!(j["quality"]["name"], "Good");
        assert_eq!(j["source_time"], "2023-11-14T22:13:20.000000001Z");
        assert_eq!(j["received_time"], "2023-11-14T22:13:20.500000000Z");
        let p = payload(
            &Value::ByteString(vec![0xde, 0xad]),
            Quality::BAD_COMMUNICATION_ERROR,
            0,
            0,
        );
        let j: serde_json::Value = serde_json::from_slice(&p).unwrap();
        assert_eq!(j["value"], "dead");
        assert_eq!(j["quality"]["code"], 0x8005_0000u32);
        assert_eq!(j["quality"]["name"], "BadCommunicationError");
        let j: serde_json::Value =
            serde_json::from_slice(&payload(&Value::Float(f32::NAN), Quality::GOOD, 0, 0)).unwrap();
        assert!(j["value"].is_null());
    }
}
