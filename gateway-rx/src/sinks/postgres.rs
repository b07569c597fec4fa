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
//! and the samples wait in the spool. NUL characters, which PostgreSQL text cannot hold, become
//! U+FFFD.
//!
//! TLS to the server is not built yet: `sslmode` must be `disable` (the config refuses others).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use config::rx::Postgres;
use config::timefmt::format_rfc3339;
use protocol::model::{UnixNanos, Value, ValueType};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, NoTls};
use tracing::{info, warn};

use super::spool::{SpoolReader, Spooled};
use super::{Backoff, SinkStats};

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

struct Sink {
    cfg: Postgres,
    stats: Arc<SinkStats>,
    /// (name, type) → tag id.
    tags: HashMap<(Arc<str>, ValueType), i32>,
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

    /// Resolves the tag ids of a batch, creating the tags that are new.
    async fn resolve(
        &mut self,
        client: &Client,
        batch: &[Spooled],
    ) -> Result<(), tokio_postgres::Error> {
        let mut names = Vec::new();
        let mut types = Vec::new();
        let mut keys = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for s in batch {
            let key = (s.sample.tag.clone(), s.sample.value.value_type());
            if !self.tags.contains_key(&key) && seen.insert(key.clone()) {
                names.push(no_nul(&key.0));
                types.push(crate::store::db::type_name(key.1).to_owned());
                keys.push(key);
            }
        }
        if keys.is_empty() {
            return Ok(());
        }
        if self.tags.len() + keys.len() > TAG_CACHE {
            self.tags.clear();
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
        for (key, (n, t)) in keys.into_iter().zip(names.into_iter().zip(types)) {
            if let Some(id) = by.get(&(n, t)) {
                self.tags.insert(key, *id);
            }
        }
        Ok(())
    }

    /// Writes one batch in one transaction; returns the rows that were new.
    async fn write(
        &mut self,
        client: &mut Client,
        batch: &[Spooled],
    ) -> Result<u64, tokio_postgres::Error> {
        self.resolve(client, batch).await?;
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
        for s in batch {
            let s = &s.sample;
            let Some(id) = self.tags.get(&(s.tag.clone(), s.value.value_type())) else {
                // Resolved just above; a tag missing here was deleted meanwhile: the batch
                // fails and is retried after reconnecting (the cache is cleared then).
                continue;
            };
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
        reader.rewind();
        let mut ahead: std::collections::VecDeque<Spooled> = std::collections::VecDeque::new();
        loop {
            if ahead.len() < self.cfg.batch_samples {
                ahead.extend(reader.read(self.cfg.batch_samples - ahead.len()));
            }
            let n = ahead.len().min(self.cfg.batch_samples);
            let batch: Vec<Spooled> = ahead.drain(..n).collect();
            let Some(last) = batch.last().map(|s| s.after) else {
                if client.is_closed() {
                    return "the server closed the connection".into();
                }
                reader.wait(IDLE_WAIT).await;
                continue;
            };
            match tokio::time::timeout(BATCH_TIMEOUT, self.write(client, &batch)).await {
                Ok(Ok(_new)) => {
                    reader.commit(last);
                    self.stats
                        .delivered
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                }
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
    let mut sink = Sink {
        cfg,
        stats,
        tags: HashMap::new(),
    };
    let mut backoff = Backoff::new();
    let mut failures = 0u64;
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
                        backoff.reset();
                        failures = 0;
                        sink.stats.connected.store(true, Ordering::Relaxed);
                        sink.stats.connects.fetch_add(1, Ordering::Relaxed);
                        info!(
                            server,
                            schema = sink.cfg.schema,
                            "PostgreSQL sink connected"
                        );
                        let why = sink.session(&mut client, &mut reader).await;
                        sink.stats.connected.store(false, Ordering::Relaxed);
                        sink.stats.failures.fetch_add(1, Ordering::Relaxed);
                        warn!(
                            server,
                            error = why,
                            "PostgreSQL sink: connection lost or batch failed; history waits in the spool"
                        );
                    }
                    Err(e) => {
                        sink.stats.failures.fetch_add(1, Ordering::Relaxed);
                        warn!(server, error = %e, "PostgreSQL sink cannot prepare its schema; retrying");
                    }
                }
                // Ids may be stale if the tables were recreated meanwhile.
                sink.tags.clear();
                drop(client);
                conn.abort();
            }
            Err(e) => {
                sink.stats.failures.fetch_add(1, Ordering::Relaxed);
                failures += 1;
                if failures.is_power_of_two() {
                    warn!(server, error = %e, attempts = failures, "cannot connect to PostgreSQL; retrying");
                }
            }
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
