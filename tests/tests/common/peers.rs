//! The sinks' peers for the end-to-end tests: services from the environment (`.ci/services`),
//! PostgreSQL as the sink writes it, a Mosquitto of a test's own with persistence (restarted
//! mid-test), and a QoS 2 subscriber with a persistent session that speaks the protocol itself.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use protocol::model::Value;
use tokio::net::TcpStream;

/// (tag, source time) → (value, quality).
pub type Rows = BTreeMap<(String, i64), (Value, u32)>;

/// A service's address from the environment; `None` (skip) when unset, except under CI.
pub fn service(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => Some(v.trim().to_owned()),
        _ => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!(
                    "{var} is not set under CI=true: `.ci/services` must start the service and export it"
                );
            }
            eprintln!("skipping: {var} is not set (`source .ci/services` starts the service)");
            None
        }
    }
}

pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{prefix}{}_{nanos}", std::process::id())
}

/// A message as a subscriber saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub topic: String,
    pub retained: bool,
    pub json: serde_json::Value,
}

/// Source time of a payload, as Unix nanoseconds.
pub fn source_time(j: &serde_json::Value) -> i64 {
    let s = j["source_time"].as_str().expect("source_time");
    config::timefmt::parse_rfc3339(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

pub fn json_value(v: &Value) -> serde_json::Value {
    match v {
        Value::Boolean(b) => (*b).into(),
        Value::Int16(x) => (*x).into(),
        Value::Int32(x) => (*x).into(),
        Value::Int64(x) => (*x).into(),
        Value::UInt16(x) => (*x).into(),
        Value::UInt32(x) => (*x).into(),
        Value::UInt64(x) => (*x).into(),
        Value::Float(x) => f64::from(*x).into(),
        Value::Double(x) => (*x).into(),
        Value::String(s) => s.clone().into(),
        other => panic!("the demo PLC has no {other:?}"),
    }
}

/// Whether a JSON value is `want` (floats within an ulp or so: serde_json's parser, without its
/// `float_roundtrip` feature, may land one ulp off the publisher's shortest representation).
pub fn same_value(got: &serde_json::Value, want: &Value) -> bool {
    let w = json_value(want);
    match (got.as_f64(), w.as_f64(), got.is_f64() || w.is_f64()) {
        (Some(a), Some(b), true) => a == b || (a - b).abs() <= b.abs() * 1e-15,
        _ => *got == w,
    }
}

/// A Mosquitto of the test's own with persistence on, on a free loopback port, that the test
/// restarts (SIGTERM, so it saves its sessions, then started again on the same port).
pub struct PersistentMosquitto {
    bin: String,
    dir: tempfile::TempDir,
    port: u16,
    child: Option<std::process::Child>,
}

impl PersistentMosquitto {
    pub async fn start(bin: &str) -> PersistentMosquitto {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("temporary directory");
        // Started as root, mosquitto drops to its own user: it must write here.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))
            .expect("chmod");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free TCP port")
            .port();
        let d = dir.path().display();
        std::fs::write(
            dir.path().join("mosquitto.conf"),
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n\
                 persistence_location {d}/\nlog_dest file {d}/mosquitto.log\n\
                 max_queued_messages 100000\n"
            ),
        )
        .expect("mosquitto.conf");
        let mut m = PersistentMosquitto {
            bin: bin.to_owned(),
            dir,
            port,
            child: None,
        };
        m.spawn().await;
        m
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub async fn spawn(&mut self) {
        let child = std::process::Command::new(&self.bin)
            .arg("-c")
            .arg(self.dir.path().join("mosquitto.conf"))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("starting mosquitto");
        self.child = Some(child);
        let started = Instant::now();
        while TcpStream::connect(self.addr()).await.is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "mosquitto did not start; its log: {}",
                std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let _ = c.wait();
        }
    }

    pub async fn restart(&mut self) {
        self.stop();
        self.spawn().await;
    }
}

impl Drop for PersistentMosquitto {
    fn drop(&mut self) {
        self.stop();
    }
}

/// MQTT 3.1.1 packets over one TCP connection (rumqttc's codec).
struct Wire {
    stream: TcpStream,
    buf: bytes::BytesMut,
}

impl Wire {
    async fn send(&mut self, p: rumqttc::Packet) -> std::io::Result<()> {
        use tokio::io::AsyncWriteExt;
        let mut b = bytes::BytesMut::new();
        p.write(&mut b, 1 << 20)
            .map_err(|e| std::io::Error::other(format!("{e:?}")))?;
        self.stream.write_all(&b).await
    }

    async fn recv(&mut self) -> std::io::Result<rumqttc::Packet> {
        use tokio::io::AsyncReadExt;
        loop {
            match rumqttc::Packet::read(&mut self.buf, 1 << 20) {
                Ok(p) => return Ok(p),
                Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => {}
                Err(e) => return Err(std::io::Error::other(format!("{e:?}"))),
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
    }
}

/// A QoS 2 subscriber to `<prefix>/#` with a persistent session that listens throughout,
/// reconnecting (same client id, clean session off) when the broker restarts. It keeps the
/// packet ids of the QoS 2 messages it took and has not seen released across reconnects, so a
/// message the broker sends again takes nothing twice: exactly once on its side. (rumqttc's
/// client forgets those ids on a reconnect, and then fails on the broker's PUBREL.)
pub struct SessionSubscriber {
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Distinct (topic, source time) received so far.
    distinct: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl SessionSubscriber {
    pub async fn start(broker: &str, prefix: &str, id: &str) -> SessionSubscriber {
        use rumqttc::{Packet, PubAck, PubComp, PubRec, QoS};
        let seen = Arc::new(Mutex::new(Vec::new()));
        let distinct = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let subscribed = Arc::new(tokio::sync::Notify::new());
        let (broker, filter, id) = (broker.to_owned(), format!("{prefix}/#"), id.to_owned());
        let (seen2, distinct2, subscribed2) = (seen.clone(), distinct.clone(), subscribed.clone());
        let task = tokio::spawn(async move {
            let mut held = std::collections::BTreeSet::new();
            let mut keys = std::collections::HashSet::new();
            loop {
                let Ok(stream) = TcpStream::connect(&broker).await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let mut wire = Wire {
                    stream,
                    buf: bytes::BytesMut::new(),
                };
                let mut connect = rumqttc::Connect::new(id.clone());
                connect.clean_session = false;
                connect.keep_alive = 0;
                let session = async {
                    wire.send(Packet::Connect(connect)).await?;
                    match wire.recv().await? {
                        Packet::ConnAck(a) if a.code == rumqttc::ConnectReturnCode::Success => {
                            if !a.session_present {
                                held.clear();
                                let mut s =
                                    rumqttc::Subscribe::new(filter.clone(), QoS::ExactlyOnce);
                                s.pkid = 1;
                                wire.send(Packet::Subscribe(s)).await?;
                            }
                        }
                        other => return Err(std::io::Error::other(format!("{other:?}"))),
                    }
                    loop {
                        match wire.recv().await? {
                            Packet::Publish(p) => {
                                let new = p.qos != QoS::ExactlyOnce || held.insert(p.pkid);
                                if new {
                                    let json: serde_json::Value =
                                        serde_json::from_slice(&p.payload).unwrap_or_default();
                                    if !p.retain
                                        && keys.insert((
                                            p.topic.clone(),
                                            json["source_time"].to_string(),
                                        ))
                                    {
                                        distinct2.fetch_add(1, Ordering::SeqCst);
                                    }
                                    seen2.lock().expect("lock").push(Seen {
                                        topic: p.topic.clone(),
                                        retained: p.retain,
                                        json,
                                    });
                                }
                                match p.qos {
                                    QoS::AtMostOnce => {}
                                    QoS::AtLeastOnce => {
                                        wire.send(Packet::PubAck(PubAck::new(p.pkid))).await?
                                    }
                                    QoS::ExactlyOnce => {
                                        wire.send(Packet::PubRec(PubRec::new(p.pkid))).await?
                                    }
                                }
                            }
                            Packet::PubRel(r) => {
                                held.remove(&r.pkid);
                                wire.send(Packet::PubComp(PubComp::new(r.pkid))).await?;
                            }
                            Packet::SubAck(_) => subscribed2.notify_one(),
                            _ => {}
                        }
                    }
                };
                let _: std::io::Result<()> = session.await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        tokio::time::timeout(Duration::from_secs(10), subscribed.notified())
            .await
            .expect("SUBACK");
        SessionSubscriber {
            seen,
            distinct,
            task,
        }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }

    pub fn distinct(&self) -> usize {
        self.distinct.load(Ordering::SeqCst)
    }
}

impl Drop for SessionSubscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The `[postgres]` table for the CI server (`GATEWAY_TEST_PG_URL`, password from
/// `GATEWAY_TEST_PG_PASSWORD` in a mode-600 file under `dir`), writing to `schema`, through
/// `via` (a proxy) when given.
pub fn pg_table(url: &str, dir: &Path, schema: &str, via: Option<SocketAddr>) -> String {
    use std::os::unix::fs::PermissionsExt;
    let mut url = url.to_owned();
    if let Some(via) = via {
        // postgresql://user@host:port/db -> the proxy's address.
        let (scheme_user, rest) = url.split_once('@').expect("URL with a user");
        let path = rest.split_once('/').map_or("", |(_, p)| p);
        url = format!("{scheme_user}@{via}/{path}");
    }
    let mut t = format!("[postgres]\nurl = \"{url}\"\nschema = \"{schema}\"\n");
    if let Ok(pw) = std::env::var("GATEWAY_TEST_PG_PASSWORD") {
        let p = dir.join(format!("{schema}.pass"));
        std::fs::write(&p, format!("{pw}\n")).expect("password file");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        t.push_str(&format!("password_file = {}\n", super::toml_string(&p)));
    }
    t
}

pub async fn pg_client(url: &str) -> tokio_postgres::Client {
    let mut c: tokio_postgres::Config = url.parse().expect("GATEWAY_TEST_PG_URL");
    if let Ok(pw) = std::env::var("GATEWAY_TEST_PG_PASSWORD") {
        c.password(pw);
    }
    let (client, conn) = c
        .connect(tokio_postgres::NoTls)
        .await
        .expect("connecting to the test PostgreSQL");
    tokio::spawn(conn);
    client
}

pub fn pg_addr(url: &str) -> SocketAddr {
    let rest = url.split_once('@').expect("URL with a user").1;
    let hostport = rest.split(['/', '?']).next().expect("host");
    hostport.parse().expect("the test URL names IP:port")
}

/// Every row of the sink's tables, by (tag, source time). Panics on a (tag, time) twice.
pub async fn pg_rows(client: &tokio_postgres::Client, schema: &str) -> Rows {
    let rows = match client
        .query(
            &format!(
                "SELECT t.name, (EXTRACT(EPOCH FROM s.ts) * 1000000)::bigint * 1000 + s.ns, \
                 s.value, s.value_text, s.quality, t.value_type \
                 FROM \"{schema}\".samples s JOIN \"{schema}\".tags t ON t.id = s.tag_id"
            ),
            &[],
        )
        .await
    {
        Ok(r) => r,
        Err(_) => return Rows::new(), // not created yet
    };
    let mut out = Rows::new();
    for r in rows {
        let name: String = r.get(0);
        let t: i64 = r.get(1);
        let value: Option<f64> = r.get(2);
        let text: Option<String> = r.get(3);
        let quality: i64 = r.get(4);
        let vt: String = r.get(5);
        let v = match (vt.as_str(), value, text) {
            ("Boolean", Some(x), _) => Value::Boolean(x != 0.0),
            ("Int16", Some(x), _) => Value::Int16(x as i16),
            ("Int32", Some(x), _) => Value::Int32(x as i32),
            ("UInt16", Some(x), _) => Value::UInt16(x as u16),
            ("UInt32", Some(x), _) => Value::UInt32(x as u32),
            ("Int64", _, Some(s)) => Value::Int64(s.parse().expect("exact Int64")),
            ("Int64", Some(x), None) => Value::Int64(x as i64),
            ("UInt64", _, Some(s)) => Value::UInt64(s.parse().expect("exact UInt64")),
            ("UInt64", Some(x), None) => Value::UInt64(x as u64),
            ("Float", Some(x), _) => Value::Float(x as f32),
            ("Double", Some(x), _) => Value::Double(x),
            ("String", _, Some(s)) => Value::String(s),
            other => panic!("unexpected row {other:?}"),
        };
        let old = out.insert((name, t), (v, quality as u32));
        assert!(old.is_none(), "PostgreSQL holds each (tag, time) once");
    }
    out
}

/// An embedded MQTT broker (rumqttd) on a free loopback port, in its own thread for the
/// process's life, taking publishes of up to `max_payload` bytes.
pub fn embedded_broker(max_payload: usize) -> SocketAddr {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free TCP port")
        .port();
    let text = format!(
        "id = 0\n\
         [router]\nid = 0\nmax_connections = 100\nmax_outgoing_packet_count = 200\n\
         max_segment_size = 104857600\nmax_segment_count = 10\n\
         [v4.1]\nname = \"v4-1\"\nlisten = \"127.0.0.1:{port}\"\nnext_connection_delay_ms = 1\n\
         [v4.1.connections]\nconnection_timeout_ms = 60000\nmax_payload_size = {max_payload}\n\
         max_inflight_count = 500\ndynamic_filters = true\n"
    );
    let config: rumqttd::Config = toml::from_str(&text).expect("rumqttd config");
    std::thread::spawn(move || {
        let mut broker = rumqttd::Broker::new(config);
        if let Err(e) = broker.start() {
            eprintln!("embedded broker stopped: {e}");
        }
    });
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
    let started = Instant::now();
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the embedded broker did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    addr
}
