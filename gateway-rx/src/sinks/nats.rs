//! The NATS JetStream sink (`[nats]`, async-nats): every history sample from its spool into a
//! JetStream stream, a subject per tag, exactly once.
//!
//! # Subjects
//!
//! A tag `site/area/pump3/speed` goes to `<subject_prefix>.site.area.pump3.speed`: each level
//! of the tag path (split on `/`, as the MQTT sink splits it into topic levels) is one subject
//! token. What a token may not hold is escaped as `%` and two uppercase hex digits per UTF-8
//! byte: `.` (the token separator, so `a.b/c` and `a/b/c` stay apart), the wildcards `*` and
//! `>`, whitespace, `%` itself, and every character that is not printable ASCII. An empty level
//! becomes the token `%` alone, which no escaped character can produce. Decoding is unique, so
//! two tags never share a subject: `pump 3.speed*` becomes `pump%203%2Espeed%2A`.
//!
//! # Payload
//!
//! The MQTT sink's JSON (`mqtt::payload`): `value`, `type`, `quality`, `source_time`,
//! `received_time`. One shape for both means a consumer written for one reads the other, and
//! JSON is what NATS tooling (`nats sub`, `nats stream view`) shows as it is. It carries no
//! `late` flag here: NATS has no retained message for a late sample to spare, and a stream is
//! read by sequence, so a consumer orders a tag's samples by `source_time`.
//!
//! # Exactly once into the stream
//!
//! Every message carries `Nats-Msg-Id: <source time>:<value type>:<subject tokens of the tag>`,
//! unique per (tag, source time). The stream's duplicate window (`duplicate_window_s`) drops a
//! message whose id it holds already, and says so in its acknowledgement (`duplicate: true`,
//! counted `server_duplicates`), so what a receiver restart, a spool replay or a re-sent batch
//! publishes again is stored once, as long as it comes again within the window.
//!
//! Samples go out in batches of at most `max_in_flight` publishes (and
//! `MAX_IN_FLIGHT_BYTES` of payload) in flight at once, pipelined: all published, then the
//! acknowledgements awaited. A batch holds at most one sample per tag, and the next batch
//! leaves only once the whole batch is acknowledged (stored, replicated as the stream says):
//! a tag's samples are thus stored in spool order (source-time order, but for a healed gap's
//! samples, which are published too, after newer ones), whatever is lost in between and sent
//! again. The spool cursor moves only past a batch acknowledged whole. A publish refused or
//! not acknowledged within `ack_timeout_s` (a node or the cluster down, a leader election)
//! fails its batch (counted `failures`); after a backoff the batch is published again from
//! the cursor, the part the server stored already being dropped as duplicates. The backoff
//! (0.5 s doubling to 30 s) is cut short by the client: at most 2 s while it is connected to a
//! server, and over as soon as it reconnects, so a cluster back from an outage is written to
//! within seconds.
//!
//! The one way to a duplicate: a sample stored whose acknowledgement was lost, published again
//! only after the duplicate window (a cluster down longer than it). Make the window longer
//! than the outages to ride through; the server keeps one id per message within it.
//!
//! # The stream
//!
//! Created at connection if missing: subjects `<subject_prefix>.>`, file storage, `replicas`,
//! `max_age_s`, `max_bytes` (the oldest dropped first), `duplicate_window_s`. A stream that
//! exists already is used as it is (its settings are the operator's).

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::jetstream::{self, message::PublishMessage};
use config::nats::limits::MAX_IN_FLIGHT_BYTES;
use config::nats::token_refuses;
use config::rx::{Nats, NatsAuth};
use tracing::{info, warn};

use super::SinkStats;
use super::delivery::{Ahead, Attempts, acknowledged};
use super::spool::{SpoolReader, SpoolSample, Spooled};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const IDLE_WAIT: Duration = Duration::from_millis(250);
/// The longest wait between attempts while the client is connected to a server.
const CONNECTED_RETRY: Duration = Duration::from_secs(2);
/// Subjects cached per tag name, at most.
const SUBJECT_CACHE: usize = 200_000;

/// The subject tokens of a tag path (see the module doc), without the prefix.
pub fn tag_tokens(tag: &str) -> String {
    let mut out = String::with_capacity(tag.len() + 8);
    for (i, level) in tag.split('/').enumerate() {
        if i > 0 {
            out.push('.');
        }
        if level.is_empty() {
            out.push('%');
            continue;
        }
        for c in level.chars() {
            if token_refuses(c) || c == '%' {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    let _ = write!(out, "%{b:02X}");
                }
            } else {
                out.push(c);
            }
        }
    }
    out
}

/// The subject of `tag` under `prefix`.
pub fn subject(prefix: &str, tag: &str) -> String {
    format!("{prefix}.{}", tag_tokens(tag))
}

/// The JetStream message id of a sample: unique per (tag, source time).
pub fn message_id(tokens: &str, s: &SpoolSample) -> String {
    format!(
        "{}:{}:{tokens}",
        s.time,
        crate::store::db::type_name(s.value.value_type())
    )
}

async fn connect_options(cfg: &Nats) -> Result<async_nats::ConnectOptions, NatsError> {
    let o = match &cfg.auth {
        NatsAuth::None => async_nats::ConnectOptions::new(),
        NatsAuth::CredsFile(path) => async_nats::ConnectOptions::with_credentials_file(path)
            .await
            .map_err(|source| NatsError::Credentials {
                path: path.display().to_string(),
                source,
            })?,
        NatsAuth::NKeySeed { seed, .. } => {
            async_nats::ConnectOptions::with_nkey(seed.expose().to_owned())
        }
        NatsAuth::UserPassword { user, password, .. } => {
            async_nats::ConnectOptions::with_user_and_password(
                user.clone(),
                password.expose().to_owned(),
            )
        }
    };
    let mut o = o
        .name("gateway-rx")
        .connection_timeout(CONNECT_TIMEOUT)
        // The client reconnects by itself for good; the sink re-sends what was not
        // acknowledged meanwhile.
        .max_reconnects(None)
        .reconnect_delay_callback(|n| {
            Duration::from_millis(250 * (1u64 << n.min(5))).min(Duration::from_secs(5))
        })
        .require_tls(cfg.tls);
    if let Some(ca) = &cfg.ca_file {
        o = o.add_root_certificates(ca.clone());
    }
    Ok(o)
}

/// Why the sink could not connect, or a batch was not stored whole.
#[derive(Debug, thiserror::Error)]
enum NatsError {
    #[error("reading credentials file {path}: {source}")]
    Credentials {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Connect(#[from] async_nats::ConnectError),
    #[error("publishing to {subject}: {source}")]
    Publish {
        subject: String,
        source: async_nats::jetstream::context::PublishError,
    },
    #[error("no acknowledgement for {subject}: {source}")]
    Ack {
        subject: String,
        source: async_nats::jetstream::context::PublishError,
    },
}

fn stream_config(cfg: &Nats) -> jetstream::stream::Config {
    jetstream::stream::Config {
        name: cfg.stream.clone(),
        subjects: vec![format!("{}.>", cfg.subject_prefix)],
        storage: jetstream::stream::StorageType::File,
        num_replicas: usize::from(cfg.replicas),
        max_age: cfg.max_age,
        max_bytes: cfg.max_bytes.map_or(-1, |b| b.min(i64::MAX as u64) as i64),
        duplicate_window: cfg.duplicate_window,
        ..Default::default()
    }
}

/// One message ready to publish.
struct Out {
    subject: String,
    id: String,
    payload: bytes::Bytes,
}

struct Sink {
    cfg: Nats,
    stats: Arc<SinkStats>,
    /// Tag name → its subject tokens.
    tokens: HashMap<Arc<str>, Arc<str>>,
}

impl Sink {
    fn tokens(&mut self, tag: &Arc<str>) -> Arc<str> {
        if let Some(t) = self.tokens.get(tag) {
            return t.clone();
        }
        if self.tokens.len() >= SUBJECT_CACHE {
            self.tokens.clear();
        }
        let t: Arc<str> = Arc::from(tag_tokens(tag));
        self.tokens.insert(tag.clone(), t.clone());
        t
    }

    fn message(&mut self, s: &SpoolSample) -> Out {
        let tokens = self.tokens(&s.tag);
        Out {
            subject: format!("{}.{tokens}", self.cfg.subject_prefix),
            id: message_id(&tokens, s),
            payload: bytes::Bytes::from(super::mqtt::payload(
                &s.value, s.quality, s.time, s.received, false,
            )),
        }
    }

    /// The next batch: spool items in order, at most one per tag, within the bounds in flight.
    fn batch(&mut self, ahead: &mut Ahead, reader: &mut SpoolReader) -> Vec<(Spooled, Out)> {
        let max = self.cfg.max_in_flight as usize;
        let mut out = Vec::new();
        let mut tags = HashSet::new();
        let mut bytes = 0usize;
        while out.len() < max {
            let Some(item) = ahead.pop(reader, max) else {
                break;
            };
            if !tags.insert(item.sample.tag.clone()) {
                ahead.unpop(item);
                break;
            }
            let m = self.message(&item.sample);
            bytes += m.payload.len();
            out.push((item, m));
            if bytes >= MAX_IN_FLIGHT_BYTES {
                break;
            }
        }
        out
    }

    /// Publishes a batch and waits for every acknowledgement.
    async fn publish(
        &self,
        js: &jetstream::Context,
        batch: &[(Spooled, Out)],
    ) -> Result<(), NatsError> {
        let mut acks = Vec::with_capacity(batch.len());
        for (_, m) in batch {
            let ack = js
                .send_publish(
                    m.subject.clone(),
                    PublishMessage::build()
                        .payload(m.payload.clone())
                        .message_id(&m.id),
                )
                .await
                .map_err(|source| NatsError::Publish {
                    subject: m.subject.clone(),
                    source,
                })?;
            acks.push(ack);
        }
        // Awaited in order, but acknowledged concurrently: each future's answer lands while
        // earlier ones are awaited. The first failure ends the batch; the rest are not
        // awaited, each of whose timeouts would otherwise run one after another (a cluster
        // down would hold the sink `max_in_flight` times `ack_timeout_s`).
        let mut duplicates = 0u64;
        let mut outcome = Ok(());
        for (ack, (_, m)) in acks.into_iter().zip(batch) {
            match ack.await {
                Ok(a) if a.duplicate => duplicates += 1,
                Ok(_) => {}
                Err(source) => {
                    outcome = Err(NatsError::Ack {
                        subject: m.subject.clone(),
                        source,
                    });
                    break;
                }
            }
        }
        self.stats
            .server_duplicates
            .fetch_add(duplicates, Ordering::Relaxed);
        outcome
    }

    /// Delivers batches until one fails; returns why. The backoff starts over once a batch
    /// is stored: a batch the server keeps refusing is retried ever more slowly.
    async fn session(
        &mut self,
        js: &jetstream::Context,
        reader: &mut SpoolReader,
        attempts: &mut Attempts,
    ) -> NatsError {
        let mut ahead = Ahead::default();
        ahead.restart(reader);
        let mut stored_one = false;
        loop {
            let batch = self.batch(&mut ahead, reader);
            let Some(end) = batch.last().map(|(s, _)| s.after) else {
                reader.wait(IDLE_WAIT).await;
                continue;
            };
            if let Err(why) = self.publish(js, &batch).await {
                return why;
            }
            acknowledged(reader, &self.stats, end, batch.len() as u64);
            if !stored_one {
                stored_one = true;
                attempts.progressed();
            }
        }
    }
}

/// The sink's task: connects (with backoff), makes the stream if missing, drains its spool,
/// and publishes a failed batch again after a backoff.
pub async fn run(cfg: Nats, mut reader: SpoolReader, stats: Arc<SinkStats>) {
    let servers = cfg.servers.join(",");
    let mut attempts = Attempts::new(stats.clone());
    let client = loop {
        let connected = match connect_options(&cfg).await {
            Ok(o) => o
                .connect(cfg.servers.as_slice())
                .await
                .map_err(NatsError::from),
            Err(e) => Err(e),
        };
        match connected {
            Ok(c) => break c,
            Err(e) => {
                if let Some(n) = attempts.failed() {
                    warn!(servers, error = %e, attempts = n, "cannot connect to NATS; retrying");
                }
                attempts.pause().await;
            }
        }
    };
    let watch = client.clone();
    let js = jetstream::ContextBuilder::new()
        .timeout(cfg.ack_timeout)
        .max_ack_inflight(cfg.max_in_flight as usize)
        .build(client);
    let mut sink = Sink {
        stats,
        tokens: HashMap::new(),
        cfg,
    };
    loop {
        match js.get_or_create_stream(stream_config(&sink.cfg)).await {
            Ok(_) => {
                attempts.up();
                info!(
                    servers,
                    stream = sink.cfg.stream,
                    "NATS sink connected; stream ready"
                );
                let why = sink.session(&js, &mut reader, &mut attempts).await;
                attempts.lost();
                warn!(
                    servers,
                    error = %why,
                    "NATS sink: a batch was not acknowledged; it is published again (the server drops what it stored already)"
                );
            }
            Err(e) => {
                if let Some(n) = attempts.failed() {
                    warn!(servers, stream = sink.cfg.stream, error = %e, attempts = n, "NATS sink cannot reach JetStream or make its stream; retrying");
                }
            }
        }
        pause(&mut attempts, &watch).await;
    }
}

/// The backoff between attempts, cut short by what the client knows: while it is
/// disconnected, the next attempt is made as soon as it reconnects; while it is connected (a
/// server is there, JetStream electing its leaders after a restart, say), the wait is at most
/// [`CONNECTED_RETRY`]. A cluster back from an outage is thus written to within seconds, not
/// after a backoff grown through the outage.
async fn pause(attempts: &mut Attempts, client: &async_nats::Client) {
    use async_nats::connection::State;
    if client.connection_state() == State::Connected {
        attempts.pause_at_most(CONNECTED_RETRY).await;
        return;
    }
    let reconnected = async {
        while client.connection_state() != State::Connected {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::select! {
        () = attempts.pause() => {}
        () = reconnected => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The inverse of `tag_tokens`, to show it is injective.
    fn decode(tokens: &str) -> Option<String> {
        let mut levels = Vec::new();
        for t in tokens.split('.') {
            if t == "%" {
                levels.push(String::new());
                continue;
            }
            let mut bytes = Vec::new();
            let mut it = t.bytes();
            while let Some(b) = it.next() {
                if b == b'%' {
                    let h = [it.next()?, it.next()?];
                    bytes.push(u8::from_str_radix(std::str::from_utf8(&h).ok()?, 16).ok()?);
                } else {
                    bytes.push(b);
                }
            }
            levels.push(String::from_utf8(bytes).ok()?);
        }
        Some(levels.join("/"))
    }

    #[test]
    fn subjects() {
        assert_eq!(subject("gw", "site/a/pump3/speed"), "gw.site.a.pump3.speed");
        assert_eq!(subject("p.q", "x"), "p.q.x");
        assert_eq!(
            subject("gw", "pump 3.speed*/>"),
            "gw.pump%203%2Espeed%2A.%3E"
        );
        assert_eq!(subject("gw", "/a//b/"), "gw.%.a.%.b.%");
        assert_eq!(subject("gw", "100%"), "gw.100%25");
        assert_eq!(subject("gw", "caf\u{e9}\tx\n"), "gw.caf%C3%A9%09x%0A");
    }

    /// Tags that a lossy mapping would merge (`.` against `/`, reserved characters against
    /// their escapes, empty levels against `%`) keep subjects of their own, every subject
    /// token is valid, and the tag is recovered from its tokens.
    #[test]
    fn subject_escaping_is_injective_and_valid() {
        let tags = [
            "a/b",
            "a.b",
            "a%2Eb",
            "a%b",
            "a/%",
            "a/",
            "a//",
            "a/%25",
            "*",
            ">",
            "%2A",
            "%3E",
            "a b",
            "a\u{0}b",
            "a\u{7f}",
            "\u{e9}",
            "%C3%A9",
            "",
            "/",
            "//",
            "a/b/c",
            "a.b/c",
            "a/b.c",
            "$SYS/x",
            "a\u{2028}b",
            "%%",
            "%",
            "%%/",
        ];
        let mut seen = HashMap::new();
        for tag in tags {
            let t = tag_tokens(tag);
            assert_eq!(decode(&t).as_deref(), Some(tag), "{tag:?} → {t:?}");
            for token in t.split('.') {
                assert!(!token.is_empty(), "{tag:?}: empty token in {t:?}");
                assert!(
                    token.chars().all(|c| !token_refuses(c)),
                    "{tag:?}: reserved character in {t:?}"
                );
            }
            if let Some(other) = seen.insert(t.clone(), tag) {
                panic!("{tag:?} and {other:?} share {t:?}");
            }
        }
        // Exhaustively over a small alphabet holding every kind of character.
        let alphabet = ['a', '.', '/', '%', '*', ' ', '2', 'E', '\u{e9}'];
        let mut all = HashMap::new();
        let mut stack = vec![String::new()];
        while let Some(s) = stack.pop() {
            let t = tag_tokens(&s);
            if let Some(other) = all.insert(t.clone(), s.clone()) {
                panic!("{s:?} and {other:?} share {t:?}");
            }
            if s.chars().count() < 4 {
                for c in alphabet {
                    stack.push(format!("{s}{c}"));
                }
            }
        }
        assert!(all.len() > 7000);
    }

    #[test]
    fn message_ids_are_per_tag_and_time() {
        let s = |tag: &str, time: i64| SpoolSample {
            tag: Arc::from(tag),
            value: protocol::model::Value::Double(1.0),
            quality: protocol::model::Quality::GOOD,
            time,
            received: 0,
        };
        let id = |tag: &str, time| message_id(&tag_tokens(tag), &s(tag, time));
        assert_eq!(id("a/b", 5), "5:Double:a.b");
        assert_ne!(id("a/b", 5), id("a.b", 5));
        assert_ne!(id("a/b", 5), id("a/b", 6));
        // The received time (which differs between re-sends) is not part of it.
        let mut r = s("a/b", 5);
        r.received = 99;
        assert_eq!(message_id(&tag_tokens("a/b"), &r), id("a/b", 5));
    }
}
