//! The PostgreSQL sink (`[postgres]`, tokio-postgres): every history sample from its spool into
//! a site historian database, in batches by binary COPY, each (tag, source time) kept once.
//!
//! # Schema (created if missing, in `schema`, `gateway` by default)
//!
//! ```sql
//! CREATE TABLE <schema>.tags (
//!     id serial PRIMARY KEY, name text NOT NULL, value_type text NOT NULL,
//!     UNIQUE (name, value_type));
//! CREATE TABLE <schema>.samples (
//!     tag_id integer NOT NULL,
//!     ts timestamptz NOT NULL,      -- source time, to the microsecond
//!     ns smallint NOT NULL,         -- and the nanoseconds within that microsecond (0..999)
//!     value double precision,       -- numbers and booleans (0/1); NULL for text types
//!     value_text text,              -- String, ByteString (hex), DateTime (RFC 3339), and the
//!                                   --   exact decimal of an Int64/UInt64 beyond 2^53
//!     quality bigint NOT NULL,      -- OPC UA StatusCode
//!     received timestamptz NOT NULL,
//!     PRIMARY KEY (tag_id, ts, ns));
//! ```
//!
//! With the `timescaledb` extension available on the server, the sink creates it (if it may)
//! and makes `samples` a hypertable on `ts`; otherwise `samples` is a plain table. A Grafana
//! panel reads it as `SELECT s.ts AS time, s.value FROM gateway.samples s JOIN gateway.tags t ON
//! t.id = s.tag_id WHERE t.name = 'site/area/pump3/speed' AND $__timeFilter(s.ts) ORDER BY 1`.
//!
//! # Writing
//!
//! A batch (up to `batch_samples`) is copied with `COPY ... FROM STDIN BINARY` into a temporary
//! staging table, then moved with `INSERT ... SELECT ... ON CONFLICT DO NOTHING` (COPY itself
//! cannot skip conflicts), in one transaction; the spool cursor moves after the commit. A
//! re-delivered sample (after a crash or a cut connection) is thus kept once. When the server
//! is unreachable or a batch fails, the sink reconnects with backoff (0.5 s doubling to 30 s)
//! and the samples wait in the spool. A batch is written whole or not at all: a sample whose tag
//! has no id (its row deleted meanwhile) fails its batch like a lost connection, and is never
//! skipped. Tag ids are cached, at most a million (name, type) pairs (beyond, the cache starts
//! over). NUL characters, which PostgreSQL text cannot hold, become U+FFFD.
//!
//! TLS to the server is not built yet: `sslmode` must be `disable` (the config refuses others).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use config::rx::Postgres;
use config::timefmt::format_rfc3339;
use protocol::model::{UnixNanos, Value, ValueType};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, NoTls};
use tracing::{info, warn};

use super::SinkStats;
use super::delivery::{Ahead, Attempts, acknowledged};
use super::spool::{SpoolReader, Spooled};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A batch (COPY and move) not done within this is taken as a lost connection.
const BATCH_TIMEOUT: Duration = Duration::from_secs(120);
const IDLE_WAIT: Duration = Duration::from_millis(500);
/// Tag ids cached, at most.
const TAG_CACHE: usize = 1_000_000;

fn pg_config(cfg: &Postgres) -> anyhow::Result<tokio_postgres::Config> {
    let mut c = match &cfg.url {
        Some(url) => url
            .parse::<tokio_postgres::Config>()
            .map_err(|e| anyhow::anyhow!("postgres.url: {e}"))?,
        None => {
            let mut c = tokio_postgres::Config::new();
            c.host(&cfg.host)
                .port(cfg.port)
                .user(&cfg.user)
                .dbname(&cfg.dbname);
            c
        }
    };
    if let Some(p) = &cfg.password {
        c.password(p.expose());
    }
    c.ssl_mode(tokio_postgres::config::SslMode::Disable)
        .connect_timeout(CONNECT_TIMEOUT)
        .application_name("gateway-rx");
    Ok(c)
}

/// Microseconds since 1970 as a `SystemTime`, and the nanoseconds left over.
fn split_time(t: UnixNanos) -> (SystemTime, i16) {
    let us = t.div_euclid(1000);
    let ns = t.rem_euclid(1000) as i16;
    let st = if us >= 0 {
        UNIX_EPOCH + Duration::from_micros(us as u64)
    } else {
        UNIX_EPOCH - Duration::from_micros(us.unsigned_abs())
    };
    (st, ns)
}

fn no_nul(s: &str) -> String {
    if s.contains('\0') {
        s.replace('\0', "\u{FFFD}")
    } else {
        s.to_owned()
    }
}

/// The (numeric, text) columns of a value.
pub fn columns(v: &Value) -> (Option<f64>, Option<String>) {
    const EXACT: i64 = 1 << 53;
    match v {
        Value::Boolean(b) => (Some(if *b { 1.0 } else { 0.0 }), None),
        Value::Int16(x) => (Some(f64::from(*x)), None),
        Value::Int32(x) => (Some(f64::from(*x)), None),
        Value::UInt16(x) => (Some(f64::from(*x)), None),
        Value::UInt32(x) => (Some(f64::from(*x)), None),
        Value::Int64(x) => (
            Some(*x as f64),
            (x.unsigned_abs() > EXACT as u64).then(|| x.to_string()),
        ),
        Value::UInt64(x) => (Some(*x as f64), (*x > EXACT as u64).then(|| x.to_string())),
        Value::Float(x) => (Some(f64::from(*x)), None),
        Value::Double(x) => (Some(*x), None),
        Value::String(s) => (None, Some(no_nul(s))),
        Value::DateTime(t) => (None, Some(format_rfc3339(*t))),
        Value::ByteString(b) => (None, Some(b.iter().map(|x| format!("{x:02x}")).collect())),
    }
}

/// Why a batch was not written (it is then read again from the spool after reconnecting).
#[derive(Debug, thiserror::Error)]
enum WriteError {
    #[error(transparent)]
    Postgres(#[from] tokio_postgres::Error),
    #[error(
        "tag {tag} ({value_type}) has no row in the tags table: deleted while the batch was written"
    )]
    Unresolved {
        tag: String,
        value_type: &'static str,
    },
}

struct Sink {
    cfg: Postgres,
    stats: Arc<SinkStats>,
    /// (name, type) → tag id.
    tags: HashMap<(Arc<str>, ValueType), i32>,
    /// `tags` holds at most this many.
    tag_cache: usize,
}

impl Sink {
    fn q(&self, table: &str) -> String {
        format!("\"{}\".{table}", self.cfg.schema)
    }

    /// Creates the schema, tables, staging table and (with TimescaleDB) the hypertable.
    async fn prepare(&self, client: &Client) -> Result<(), tokio_postgres::Error> {
        let schema = &self.cfg.schema;
        let exists = client
            .query_opt("SELECT 1 FROM pg_namespace WHERE nspname = $1", &[schema])
            .await?
            .is_some();
        if !exists {
            client
                .batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))
                .await?;
        }
        client
            .batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS {tags} (
                     id serial PRIMARY KEY,
                     name text NOT NULL,
                     value_type text NOT NULL,
                     UNIQUE (name, value_type));
                 CREATE TABLE IF NOT EXISTS {samples} (
                     tag_id integer NOT NULL,
                     ts timestamptz NOT NULL,
                     ns smallint NOT NULL DEFAULT 0,
                     value double precision,
                     value_text text,
                     quality bigint NOT NULL,
                     received timestamptz NOT NULL,
                     PRIMARY KEY (tag_id, ts, ns));
                 CREATE TEMPORARY TABLE IF NOT EXISTS gateway_staging (
                     tag_id integer, ts timestamptz, ns smallint, value double precision,
                     value_text text, quality bigint, received timestamptz)
                     ON COMMIT DELETE ROWS;",
                tags = self.q("tags"),
                samples = self.q("samples"),
            ))
            .await?;
        let timescale = client
            .query_opt(
                "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'",
                &[],
            )
            .await?
            .is_some();
        if timescale {
            let made = async {
                client
                    .batch_execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
                    .await?;
                client
                    .query_one(
                        "SELECT create_hypertable($1::text::regclass, 'ts', \
                         if_not_exists => TRUE, migrate_data => TRUE)::text",
                        &[&self.q("samples")],
                    )
                    .await
            }
            .await;
            match made {
                Ok(_) => info!(table = self.q("samples"), "TimescaleDB hypertable ready"),
                Err(e) => {
                    warn!(error = %e, "TimescaleDB is available but the hypertable could not be made; samples go to a plain table")
                }
            }
        }
        Ok(())
    }

    /// The tag id of each sample of `batch`, creating the tags that are new. The ids the
    /// cache lacks are read from the database; the cache then keeps them, within its bound.
    async fn resolve(
        &mut self,
        client: &Client,
        batch: &[Spooled],
    ) -> Result<Vec<i32>, WriteError> {
        let mut ids: Vec<Option<i32>> = Vec::with_capacity(batch.len());
        let mut names = Vec::new();
        let mut types = Vec::new();
        let mut keys = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for s in batch {
            let key = (s.sample.tag.clone(), s.sample.value.value_type());
            let id = self.tags.get(&key).copied();
            if id.is_none() && seen.insert(key.clone()) {
                names.push(no_nul(&key.0));
                types.push(crate::store::db::type_name(key.1).to_owned());
                keys.push(key);
            }
            ids.push(id);
        }
        if keys.is_empty() {
            return Ok(ids.into_iter().flatten().collect());
        }
        client
            .execute(
                &format!(
                    "INSERT INTO {} (name, value_type) SELECT * FROM unnest($1::text[], $2::text[]) \
                     ON CONFLICT DO NOTHING",
                    self.q("tags")
                ),
                &[&names, &types],
            )
            .await?;
        let rows = client
            .query(
                &format!(
                    "SELECT t.id, t.name, t.value_type FROM {} t \
                     JOIN unnest($1::text[], $2::text[]) AS k(name, value_type) \
                     ON t.name = k.name AND t.value_type = k.value_type",
                    self.q("tags")
                ),
                &[&names, &types],
            )
            .await?;
        let mut by: HashMap<(String, String), i32> = HashMap::new();
        for r in rows {
            by.insert((r.try_get(1)?, r.try_get(2)?), r.try_get(0)?);
        }
        let mut found: HashMap<(Arc<str>, ValueType), i32> = HashMap::with_capacity(keys.len());
        for (key, (n, t)) in keys.into_iter().zip(names.into_iter().zip(types)) {
            if let Some(id) = by.get(&(n, t)) {
                found.insert(key, *id);
            }
        }
        let ids = batch
            .iter()
            .zip(ids)
            .map(|(s, id)| {
                let vt = s.sample.value.value_type();
                id.or_else(|| found.get(&(s.sample.tag.clone(), vt)).copied())
                    // Created or found just above; missing means deleted meanwhile.
                    .ok_or_else(|| WriteError::Unresolved {
                        tag: s.sample.tag.to_string(),
                        value_type: crate::store::db::type_name(vt),
                    })
            })
            .collect::<Result<Vec<i32>, WriteError>>()?;
        // The batch holds its ids now, so the cache may start over when the new ones do not fit.
        if self.tags.len() + found.len() > self.tag_cache {
            self.tags.clear();
        }
        for (key, id) in found {
            if self.tags.len() >= self.tag_cache {
                break;
            }
            self.tags.insert(key, id);
        }
        Ok(ids)
    }

    /// Writes one batch in one transaction; returns the rows that were new.
    async fn write(&mut self, client: &mut Client, batch: &[Spooled]) -> Result<u64, WriteError> {
        let ids = self.resolve(client, batch).await?;
        let tx = client.transaction().await?;
        let sink = tx
            .copy_in(
                "COPY gateway_staging (tag_id, ts, ns, value, value_text, quality, received) \
                 FROM STDIN BINARY",
            )
            .await?;
        let writer = BinaryCopyInWriter::new(
            sink,
            &[
                Type::INT4,
                Type::TIMESTAMPTZ,
                Type::INT2,
                Type::FLOAT8,
                Type::TEXT,
                Type::INT8,
                Type::TIMESTAMPTZ,
            ],
        );
        let mut writer = std::pin::pin!(writer);
        for (s, id) in batch.iter().zip(&ids) {
            let s = &s.sample;
            let (ts, ns) = split_time(s.time);
            let (received, _) = split_time(s.received);
            let (value, text) = columns(&s.value);
            let quality = i64::from(s.quality.0);
            let row: [&(dyn ToSql + Sync); 7] = [id, &ts, &ns, &value, &text, &quality, &received];
            writer.as_mut().write(&row).await?;
        }
        writer.as_mut().finish().await?;
        let inserted = tx
            .execute(
                &format!(
                    "INSERT INTO {} (tag_id, ts, ns, value, value_text, quality, received) \
                     SELECT tag_id, ts, ns, value, value_text, quality, received \
                     FROM gateway_staging ON CONFLICT DO NOTHING",
                    self.q("samples")
                ),
                &[],
            )
            .await?;
        tx.commit().await?;
        Ok(inserted)
    }

    /// One connection's life: write batches until the spool is empty, wait, go on. Returns
    /// why the connection ended.
    async fn session(&mut self, client: &mut Client, reader: &mut SpoolReader) -> String {
        let mut ahead = Ahead::default();
        ahead.restart(reader);
        loop {
            let batch = ahead.take(reader, self.cfg.batch_samples);
            let Some(last) = batch.last().map(|s| s.after) else {
                if client.is_closed() {
                    return "the server closed the connection".into();
                }
                reader.wait(IDLE_WAIT).await;
                continue;
            };
            match tokio::time::timeout(BATCH_TIMEOUT, self.write(client, &batch)).await {
                Ok(Ok(_new)) => acknowledged(reader, &self.stats, last, batch.len() as u64),
                // The batch is read again (from the committed position) after reconnecting.
                Ok(Err(e)) => return format!("{e}"),
                Err(_) => return "a batch did not complete in time".into(),
            }
        }
    }
}

/// The sink's task: connects (with backoff), prepares the schema, drains its spool.
pub async fn run(cfg: Postgres, mut reader: SpoolReader, stats: Arc<SinkStats>) {
    let pg = match pg_config(&cfg) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "PostgreSQL sink cannot start; history waits in its spool");
            return;
        }
    };
    let server = match &cfg.url {
        Some(_) => "postgres.url".to_owned(),
        None => format!("{}:{}/{}", cfg.host, cfg.port, cfg.dbname),
    };
    let mut attempts = Attempts::new(stats.clone());
    let mut sink = Sink {
        cfg,
        stats,
        tags: HashMap::new(),
        tag_cache: TAG_CACHE,
    };
    loop {
        match pg.connect(NoTls).await {
            Ok((mut client, connection)) => {
                let conn = tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::debug!(error = %e, "PostgreSQL connection ended");
                    }
                });
                match sink.prepare(&client).await {
                    Ok(()) => {
                        attempts.connected();
                        info!(
                            server,
                            schema = sink.cfg.schema,
                            "PostgreSQL sink connected"
                        );
                        let why = sink.session(&mut client, &mut reader).await;
                        attempts.lost();
                        warn!(
                            server,
                            error = why,
                            "PostgreSQL sink: connection lost or batch failed; history waits in the spool"
                        );
                    }
                    Err(e) => {
                        attempts.failed();
                        warn!(server, error = %e, "PostgreSQL sink cannot prepare its schema; retrying");
                    }
                }
                // Ids may be stale if the tables were recreated meanwhile.
                sink.tags.clear();
                drop(client);
                conn.abort();
            }
            Err(e) => {
                if let Some(n) = attempts.failed() {
                    warn!(server, error = %e, attempts = n, "cannot connect to PostgreSQL; retrying");
                }
            }
        }
        attempts.pause().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::spool::{SpoolSample, SpoolWriter};
    use protocol::model::Quality;
    use std::sync::atomic::Ordering;

    #[test]
    fn times_split_to_micros_and_nanos() {
        let (t, ns) = split_time(1_700_000_000_123_456_789);
        assert_eq!(ns, 789);
        assert_eq!(
            t.duration_since(UNIX_EPOCH).unwrap(),
            Duration::from_nanos(1_700_000_000_123_456_000)
        );
        let (t, ns) = split_time(-1);
        assert_eq!(ns, 999);
        assert_eq!(
            UNIX_EPOCH.duration_since(t).unwrap(),
            Duration::from_micros(1)
        );
    }

    #[test]
    fn value_columns() {
        assert_eq!(columns(&Value::Boolean(true)), (Some(1.0), None));
        assert_eq!(columns(&Value::Int64(5)), (Some(5.0), None));
        assert_eq!(
            columns(&Value::UInt64(u64::MAX)),
            (Some(u64::MAX as f64), Some(u64::MAX.to_string()))
        );
        assert_eq!(
            columns(&Value::String("a\0b".into())),
            (None, Some("a\u{FFFD}b".into()))
        );
        assert_eq!(
            columns(&Value::ByteString(vec![1, 0xab])),
            (None, Some("01ab".into()))
        );
        assert_eq!(
            columns(&Value::DateTime(0)),
            (None, Some("1970-01-01T00:00:00.000000000Z".into()))
        );
    }

    /// The test server (`GATEWAY_TEST_PG_URL`, started by `.ci/services`); `None` (skip) when
    /// unset, except under `CI=true`, where a missing server fails.
    fn test_server() -> Option<String> {
        match std::env::var("GATEWAY_TEST_PG_URL") {
            Ok(v) if !v.trim().is_empty() => Some(v.trim().to_owned()),
            _ => {
                if std::env::var("CI").is_ok_and(|v| v == "true") {
                    panic!(
                        "GATEWAY_TEST_PG_URL is not set under CI=true: `.ci/services` must start PostgreSQL and export it"
                    );
                }
                eprintln!(
                    "skipping: GATEWAY_TEST_PG_URL is not set (`source .ci/services` starts PostgreSQL)"
                );
                None
            }
        }
    }

    /// Past its tag cache's bound, the sink still writes every sample of every batch under
    /// its own tag, and counts as delivered exactly what the table holds.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_sample_under_its_own_tag_past_the_tag_cache() {
        let Some(url) = test_server() else {
            return;
        };
        let dir = tempfile::tempdir().expect("temporary directory");
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let schema = format!("gwtest_tagcache_{}_{nanos}", std::process::id());
        let cfg = Postgres {
            url: Some(url),
            host: String::new(),
            port: 0,
            user: String::new(),
            password: std::env::var("GATEWAY_TEST_PG_PASSWORD")
                .ok()
                .map(config::rx::Secret::new),
            password_file: None,
            dbname: String::new(),
            schema: schema.clone(),
            batch_samples: 4,
            spool: config::rx::Spool {
                dir: dir.path().join("spool"),
                max_bytes: 1 << 20,
            },
        };
        // Seven (tag, type) keys, one name under two types, in turn: each batch of four holds
        // keys the cache (three) holds and keys it must look up, so it overflows at each batch.
        type MakeValue = fn(i64) -> Value;
        let keys: Vec<(Arc<str>, MakeValue)> = vec![
            (Arc::from("site/a/flow"), |i| Value::Double(i as f64 + 0.5)),
            (Arc::from("site/a/level"), |i| Value::Int32(i as i32)),
            (Arc::from("site/a/mode"), |i| Value::String(format!("m{i}"))),
            (Arc::from("site/a/mode"), |i| Value::Int16(i as i16)),
            (Arc::from("site/b/run"), |i| Value::Boolean(i % 2 == 0)),
            (Arc::from("site/b/speed"), |i| Value::Float(i as f32)),
            (Arc::from("site/b/count"), |i| Value::UInt32(i as u32 * 7)),
        ];
        let t0 = 1_700_000_000_000_000_000i64;
        let samples: Vec<SpoolSample> = (0..84i64)
            .map(|i| {
                let (tag, value) = &keys[i as usize % keys.len()];
                SpoolSample {
                    tag: tag.clone(),
                    value: value(i),
                    quality: Quality::GOOD,
                    time: t0 + i * 1_000_000,
                    received: t0,
                }
            })
            .collect();
        let n = samples.len() as u64;
        let (mut w, shared) =
            SpoolWriter::open(&cfg.spool.dir, cfg.spool.max_bytes, None).expect("spool");
        assert_eq!(w.append(&samples).expect("append"), samples.len());
        w.prepare().expect("prepare");
        w.publish();
        let mut reader = SpoolReader::open(&cfg.spool.dir, shared).expect("spool reader");

        let (mut client, connection) = pg_config(&cfg)
            .expect("config")
            .connect(NoTls)
            .await
            .expect("connecting to the test PostgreSQL");
        tokio::spawn(connection);
        let stats = Arc::new(SinkStats::default());
        let mut sink = Sink {
            cfg,
            stats: stats.clone(),
            tags: HashMap::new(),
            tag_cache: 3,
        };
        sink.prepare(&client).await.expect("schema");
        let delivered = || stats.delivered.load(Ordering::Relaxed);
        tokio::select! {
            why = sink.session(&mut client, &mut reader) => panic!("the session ended: {why}"),
            () = async {
                while delivered() < n {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            } => {}
            () = tokio::time::sleep(Duration::from_secs(60)) => panic!("{} of {n} delivered", delivered()),
        }
        assert!(
            sink.tags.len() <= 3,
            "the cache stays bounded: {}",
            sink.tags.len()
        );

        let rows = client
            .query(
                &format!(
                    "SELECT t.name, t.value_type, \
                     (EXTRACT(EPOCH FROM s.ts) * 1000000)::bigint * 1000 + s.ns, \
                     s.value, s.value_text FROM \"{schema}\".samples s \
                     JOIN \"{schema}\".tags t ON t.id = s.tag_id"
                ),
                &[],
            )
            .await
            .expect("samples");
        let got: std::collections::BTreeMap<i64, (String, String, Option<f64>, Option<String>)> =
            rows.iter()
                .map(|r| (r.get(2), (r.get(0), r.get(1), r.get(3), r.get(4))))
                .collect();
        let want: std::collections::BTreeMap<i64, (String, String, Option<f64>, Option<String>)> =
            samples
                .iter()
                .map(|s| {
                    let (value, text) = columns(&s.value);
                    let vt = crate::store::db::type_name(s.value.value_type()).to_owned();
                    (s.time, (s.tag.to_string(), vt, value, text))
                })
                .collect();
        let _ = client
            .batch_execute(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
            .await;
        let missing: Vec<_> = want.iter().filter(|(t, _)| !got.contains_key(*t)).collect();
        assert!(
            missing.is_empty(),
            "{} of {n} samples missing, {} counted delivered; e.g. {:?}",
            missing.len(),
            delivered(),
            &missing[..missing.len().min(3)]
        );
        assert_eq!(got, want, "every sample under its own tag");
        assert_eq!(
            rows.len() as u64,
            delivered(),
            "delivered counts the rows in the table"
        );
    }
}
