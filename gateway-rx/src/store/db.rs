//! The SQLite schema of the embedded historian store, and the statements on it.
//!
//! ```sql
//! tags(id INTEGER PRIMARY KEY, name TEXT, value_type TEXT, UNIQUE(name, value_type))
//! samples(tag_id, ts INTEGER /* source time, Unix ns */, value, quality INTEGER,
//!         PRIMARY KEY(tag_id, ts)) WITHOUT ROWID
//! catalogues(hash INTEGER PRIMARY KEY, names BLOB)       -- tag names of each version seen
//! history_logs(log INTEGER PRIMARY KEY, baseline, expected_end, oldest, checked_until)
//! history_received(log, start, end, t_first, t_last, PRIMARY KEY(log, start)) WITHOUT ROWID
//! gaps(id INTEGER PRIMARY KEY, log, start_seq, end_seq, from_ts, to_ts, reason, state,
//!      opened_at, closed_at, tags)
//! ```
//!
//! `samples` is clustered by (tag, time): a query for one tag over a time range reads one
//! contiguous stretch of the B-tree, and `INSERT OR IGNORE` keeps each (tag, source timestamp)
//! once whatever arrives twice. A tag whose value type changes between catalogue versions gets a
//! second `tags` row (its history keeps the type it had); queries by name read both. Values are
//! stored in SQLite's native types (INTEGER, REAL, TEXT, BLOB) and read back by the tag's type;
//! a UInt64 above i64::MAX is stored bit-cast.
//!
//! The database runs in WAL mode, so `gateway-rx query` and `gateway-rx gaps` read while the
//! daemon writes, and with incremental auto-vacuum, so retention gives space back.

use std::path::Path;

use protocol::model::{Quality, UnixNanos, Value, ValueType};
use rusqlite::types::{Value as SqlValue, ValueRef};
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use super::ranges::Range;

pub type Result<T> = rusqlite::Result<T>;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS tags(
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    value_type TEXT NOT NULL,
    UNIQUE(name, value_type));
CREATE TABLE IF NOT EXISTS samples(
    tag_id INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    value,
    quality INTEGER NOT NULL,
    PRIMARY KEY(tag_id, ts)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS catalogues(
    hash INTEGER PRIMARY KEY,
    names BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS history_logs(
    log INTEGER PRIMARY KEY,
    baseline INTEGER NOT NULL,
    expected_end INTEGER NOT NULL,
    oldest INTEGER NOT NULL,
    checked_until INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS history_received(
    log INTEGER NOT NULL,
    start INTEGER NOT NULL,
    end INTEGER NOT NULL,
    t_first INTEGER NOT NULL,
    t_last INTEGER NOT NULL,
    PRIMARY KEY(log, start)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS gaps(
    id INTEGER PRIMARY KEY,
    log INTEGER NOT NULL,
    start_seq INTEGER NOT NULL,
    end_seq INTEGER NOT NULL,
    from_ts INTEGER,
    to_ts INTEGER,
    reason TEXT NOT NULL,
    state TEXT NOT NULL,
    opened_at INTEGER NOT NULL,
    closed_at INTEGER,
    tags TEXT NOT NULL DEFAULT '[]');
CREATE INDEX IF NOT EXISTS gaps_state ON gaps(state, id);
CREATE TABLE IF NOT EXISTS spool_heads(
    sink TEXT PRIMARY KEY,
    segment INTEGER NOT NULL,
    len INTEGER NOT NULL);
";

/// Opens (creating if needed) the store for writing.
pub fn open_rw(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path)?;
    // auto_vacuum must be chosen before the first table exists; harmless afterwards.
    conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.execute_batch(SCHEMA)?;
    Ok(conn)
}

/// Records, in the transaction that commits the samples, where `sink`'s spool ends with them.
pub fn save_spool_head(conn: &Connection, sink: &str, (segment, len): (u64, u64)) -> Result<()> {
    conn.execute(
        "INSERT INTO spool_heads(sink, segment, len) VALUES (?1, ?2, ?3) \
         ON CONFLICT(sink) DO UPDATE SET segment = excluded.segment, len = excluded.len",
        rusqlite::params![sink, segment as i64, len as i64],
    )?;
    Ok(())
}

/// Where each sink's spool ended at the store's last commit, from the store at `path`; empty
/// when there is no store yet (or one from before this was recorded).
pub fn spool_heads(path: &Path) -> std::collections::HashMap<String, (u64, u64)> {
    let mut out = std::collections::HashMap::new();
    if !path.exists() {
        return out;
    }
    let read = || -> Result<Vec<(String, i64, i64)>> {
        let conn = open_ro(path)?;
        let mut stmt = conn.prepare("SELECT sink, segment, len FROM spool_heads")?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<Result<Vec<_>>>()?;
        Ok(rows)
    };
    match read() {
        Ok(rows) => {
            for (sink, segment, len) in rows {
                if let (Ok(segment), Ok(len)) = (u64::try_from(segment), u64::try_from(len)) {
                    out.insert(sink, (segment, len));
                }
            }
        }
        Err(e) => {
            tracing::debug!(path = %path.display(), error = %e, "no spool heads in the store");
        }
    }
    out
}

/// Opens an existing store for reading (the command-line tools), beside a running daemon.
pub fn open_ro(path: &Path) -> Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(conn)
}

pub fn type_name(t: ValueType) -> &'static str {
    match t {
        ValueType::Boolean => "Boolean",
        ValueType::Int16 => "Int16",
        ValueType::Int32 => "Int32",
        ValueType::Int64 => "Int64",
        ValueType::UInt16 => "UInt16",
        ValueType::UInt32 => "UInt32",
        ValueType::UInt64 => "UInt64",
        ValueType::Float => "Float",
        ValueType::Double => "Double",
        ValueType::String => "String",
        ValueType::DateTime => "DateTime",
        ValueType::ByteString => "ByteString",
    }
}

pub fn type_from_name(s: &str) -> Option<ValueType> {
    Some(match s {
        "Boolean" => ValueType::Boolean,
        "Int16" => ValueType::Int16,
        "Int32" => ValueType::Int32,
        "Int64" => ValueType::Int64,
        "UInt16" => ValueType::UInt16,
        "UInt32" => ValueType::UInt32,
        "UInt64" => ValueType::UInt64,
        "Float" => ValueType::Float,
        "Double" => ValueType::Double,
        "String" => ValueType::String,
        "DateTime" => ValueType::DateTime,
        "ByteString" => ValueType::ByteString,
        _ => return None,
    })
}

pub fn to_sql(v: &Value) -> SqlValue {
    match v {
        Value::Boolean(b) => SqlValue::Integer(i64::from(*b)),
        Value::Int16(x) => SqlValue::Integer(i64::from(*x)),
        Value::Int32(x) => SqlValue::Integer(i64::from(*x)),
        Value::Int64(x) => SqlValue::Integer(*x),
        Value::UInt16(x) => SqlValue::Integer(i64::from(*x)),
        Value::UInt32(x) => SqlValue::Integer(i64::from(*x)),
        Value::UInt64(x) => SqlValue::Integer(*x as i64),
        Value::Float(x) => SqlValue::Real(f64::from(*x)),
        Value::Double(x) => SqlValue::Real(*x),
        Value::String(s) => SqlValue::Text(s.clone()),
        Value::DateTime(t) => SqlValue::Integer(*t),
        Value::ByteString(b) => SqlValue::Blob(b.clone()),
    }
}

/// The value stored for a tag of type `t`; `None` when the column holds something else.
pub fn from_sql(t: ValueType, v: ValueRef<'_>) -> Option<Value> {
    let int = |v: ValueRef<'_>| match v {
        ValueRef::Integer(i) => Some(i),
        _ => None,
    };
    Some(match t {
        ValueType::Boolean => Value::Boolean(int(v)? != 0),
        ValueType::Int16 => Value::Int16(i16::try_from(int(v)?).ok()?),
        ValueType::Int32 => Value::Int32(i32::try_from(int(v)?).ok()?),
        ValueType::Int64 => Value::Int64(int(v)?),
        ValueType::UInt16 => Value::UInt16(u16::try_from(int(v)?).ok()?),
        ValueType::UInt32 => Value::UInt32(u32::try_from(int(v)?).ok()?),
        ValueType::UInt64 => Value::UInt64(int(v)? as u64),
        ValueType::Float => match v {
            ValueRef::Real(x) => Value::Float(x as f32),
            _ => return None,
        },
        ValueType::Double => match v {
            ValueRef::Real(x) => Value::Double(x),
            _ => return None,
        },
        ValueType::String => match v {
            ValueRef::Text(s) => Value::String(String::from_utf8_lossy(s).into_owned()),
            _ => return None,
        },
        ValueType::DateTime => Value::DateTime(int(v)?),
        ValueType::ByteString => match v {
            ValueRef::Blob(b) => Value::ByteString(b.to_vec()),
            _ => return None,
        },
    })
}

/// The id of (name, type), created if new.
pub fn tag_id(conn: &Connection, name: &str, t: ValueType) -> Result<i64> {
    let tn = type_name(t);
    if let Some(id) = conn
        .prepare_cached("SELECT id FROM tags WHERE name = ?1 AND value_type = ?2")?
        .query_row(params![name, tn], |r| r.get(0))
        .optional()?
    {
        return Ok(id);
    }
    conn.prepare_cached("INSERT INTO tags(name, value_type) VALUES (?1, ?2)")?
        .execute(params![name, tn])?;
    Ok(conn.last_insert_rowid())
}

/// Inserts a sample unless (tag, ts) is already stored; returns whether it was new.
pub fn insert_sample(
    conn: &Connection,
    tag_id: i64,
    ts: UnixNanos,
    value: &Value,
    quality: Quality,
) -> Result<bool> {
    let n = conn
        .prepare_cached(
            "INSERT OR IGNORE INTO samples(tag_id, ts, value, quality) VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![tag_id, ts, to_sql(value), i64::from(quality.0)])?;
    Ok(n > 0)
}

pub fn save_catalogue(conn: &Connection, hash: u64, names: &[String]) -> Result<()> {
    let blob = protocol::codec::encode(&names).unwrap_or_default();
    conn.prepare_cached("INSERT OR REPLACE INTO catalogues(hash, names) VALUES (?1, ?2)")?
        .execute(params![hash as i64, blob])?;
    Ok(())
}

pub fn load_catalogue(conn: &Connection, hash: u64) -> Result<Option<Vec<String>>> {
    let blob: Option<Vec<u8>> = conn
        .prepare_cached("SELECT names FROM catalogues WHERE hash = ?1")?
        .query_row(params![hash as i64], |r| r.get(0))
        .optional()?;
    Ok(blob.and_then(|b| protocol::codec::decode(&b).ok()))
}

/// The persisted tracking state of one transmitter log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogRow {
    pub baseline: u64,
    pub expected_end: u64,
    pub oldest: u64,
    pub checked_until: u64,
}

pub fn load_log(conn: &Connection, log: u64) -> Result<Option<(LogRow, Vec<Range>)>> {
    let row = conn
        .prepare_cached(
            "SELECT baseline, expected_end, oldest, checked_until FROM history_logs WHERE log = ?1",
        )?
        .query_row(params![log as i64], |r| {
            Ok(LogRow {
                baseline: r.get::<_, i64>(0)? as u64,
                expected_end: r.get::<_, i64>(1)? as u64,
                oldest: r.get::<_, i64>(2)? as u64,
                checked_until: r.get::<_, i64>(3)? as u64,
            })
        })
        .optional()?;
    let Some(row) = row else { return Ok(None) };
    let mut stmt = conn.prepare_cached(
        "SELECT start, end, t_first, t_last FROM history_received WHERE log = ?1 ORDER BY start",
    )?;
    let ranges = stmt
        .query_map(params![log as i64], |r| {
            Ok(Range {
                start: r.get::<_, i64>(0)? as u64,
                end: r.get::<_, i64>(1)? as u64,
                t_first: r.get(2)?,
                t_last: r.get(3)?,
            })
        })?
        .collect::<Result<Vec<_>>>()?;
    Ok(Some((row, ranges)))
}

pub fn save_log(conn: &Connection, log: u64, row: &LogRow) -> Result<()> {
    conn.prepare_cached(
        "INSERT OR REPLACE INTO history_logs(log, baseline, expected_end, oldest, checked_until)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        log as i64,
        row.baseline as i64,
        row.expected_end as i64,
        row.oldest as i64,
        row.checked_until as i64
    ])?;
    Ok(())
}

pub fn save_range_change(
    conn: &Connection,
    log: u64,
    removed: &[u64],
    merged: &Range,
) -> Result<()> {
    for s in removed {
        conn.prepare_cached("DELETE FROM history_received WHERE log = ?1 AND start = ?2")?
            .execute(params![log as i64, *s as i64])?;
    }
    conn.prepare_cached(
        "INSERT OR REPLACE INTO history_received(log, start, end, t_first, t_last)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        log as i64,
        merged.start as i64,
        merged.end as i64,
        merged.t_first,
        merged.t_last
    ])?;
    Ok(())
}

pub fn delete_range(conn: &Connection, log: u64, start: u64) -> Result<()> {
    conn.prepare_cached("DELETE FROM history_received WHERE log = ?1 AND start = ?2")?
        .execute(params![log as i64, start as i64])?;
    Ok(())
}

/// A gap as stored and listed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GapRow {
    pub id: i64,
    pub log: u64,
    pub start_seq: u64,
    /// Exclusive.
    pub end_seq: u64,
    pub from_ts: Option<UnixNanos>,
    pub to_ts: Option<UnixNanos>,
    pub reason: String,
    /// `open`, `healed`, `expired` or `abandoned`.
    pub state: String,
    pub opened_at: UnixNanos,
    pub closed_at: Option<UnixNanos>,
    pub tags: Vec<String>,
}

pub fn insert_gap(conn: &Connection, g: &GapRow) -> Result<i64> {
    conn.prepare_cached(
        "INSERT INTO gaps(log, start_seq, end_seq, from_ts, to_ts, reason, state, opened_at,
                          closed_at, tags)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
        g.log as i64,
        g.start_seq as i64,
        g.end_seq as i64,
        g.from_ts,
        g.to_ts,
        g.reason,
        g.state,
        g.opened_at,
        g.closed_at,
        serde_json::to_string(&g.tags).unwrap_or_else(|_| "[]".into()),
    ])?;
    Ok(conn.last_insert_rowid())
}

pub fn close_gap(conn: &Connection, g: &GapRow) -> Result<()> {
    conn.prepare_cached("UPDATE gaps SET state = ?2, closed_at = ?3, tags = ?4 WHERE id = ?1")?
        .execute(params![
            g.id,
            g.state,
            g.closed_at,
            serde_json::to_string(&g.tags).unwrap_or_else(|_| "[]".into()),
        ])?;
    Ok(())
}

fn gap_from_row(r: &rusqlite::Row<'_>) -> Result<GapRow> {
    let tags: String = r.get(10)?;
    Ok(GapRow {
        id: r.get(0)?,
        log: r.get::<_, i64>(1)? as u64,
        start_seq: r.get::<_, i64>(2)? as u64,
        end_seq: r.get::<_, i64>(3)? as u64,
        from_ts: r.get(4)?,
        to_ts: r.get(5)?,
        reason: r.get(6)?,
        state: r.get(7)?,
        opened_at: r.get(8)?,
        closed_at: r.get(9)?,
        tags: serde_json::from_str(&tags).unwrap_or_default(),
    })
}

const GAP_COLUMNS: &str =
    "id, log, start_seq, end_seq, from_ts, to_ts, reason, state, opened_at, closed_at, tags";

/// Gaps, oldest first; only open ones if `open_only`; at most `limit`.
pub fn list_gaps(conn: &Connection, open_only: bool, limit: usize) -> Result<Vec<GapRow>> {
    let sql = if open_only {
        format!("SELECT {GAP_COLUMNS} FROM gaps WHERE state = 'open' ORDER BY id LIMIT ?1")
    } else {
        format!("SELECT {GAP_COLUMNS} FROM gaps ORDER BY id LIMIT ?1")
    };
    let mut stmt = conn.prepare(&sql)?;
    stmt.query_map(params![limit as i64], gap_from_row)?
        .collect()
}

pub fn open_gaps_of(conn: &Connection, log: u64) -> Result<Vec<GapRow>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {GAP_COLUMNS} FROM gaps WHERE state = 'open' AND log = ?1 ORDER BY start_seq"
    ))?;
    stmt.query_map(params![log as i64], gap_from_row)?.collect()
}

/// One stored sample, as queries return it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredSample {
    pub tag: String,
    pub time: UnixNanos,
    pub value: Option<Value>,
    pub quality: Quality,
}

/// The samples of tag `name` with source time in `[from, to]`, in time order.
pub fn query(
    conn: &Connection,
    name: &str,
    from: UnixNanos,
    to: UnixNanos,
) -> Result<Vec<StoredSample>> {
    let mut tags = conn.prepare("SELECT id, value_type FROM tags WHERE name = ?1")?;
    let ids: Vec<(i64, String)> = tags
        .query_map(params![name], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_>>()?;
    let mut out = Vec::new();
    let mut stmt = conn.prepare(
        "SELECT ts, value, quality FROM samples WHERE tag_id = ?1 AND ts >= ?2 AND ts <= ?3
         ORDER BY ts",
    )?;
    for (id, type_name) in ids {
        let t = type_from_name(&type_name);
        let mut rows = stmt.query(params![id, from, to])?;
        while let Some(r) = rows.next()? {
            let value = t.and_then(|t| from_sql(t, r.get_ref_unwrap(1)));
            out.push(StoredSample {
                tag: name.to_owned(),
                time: r.get(0)?,
                value,
                quality: Quality(r.get::<_, i64>(2)? as u32),
            });
        }
    }
    out.sort_by_key(|s| s.time);
    Ok(out)
}

/// Every tag id, for retention.
pub fn tag_ids(conn: &Connection) -> Result<Vec<i64>> {
    let mut stmt = conn.prepare_cached("SELECT id FROM tags")?;
    stmt.query_map([], |r| r.get(0))?.collect()
}

/// Deletes samples older than `cutoff`; returns how many.
pub fn delete_older_than(conn: &Connection, cutoff: UnixNanos) -> Result<u64> {
    let mut n = 0u64;
    for id in tag_ids(conn)? {
        n += conn
            .prepare_cached("DELETE FROM samples WHERE tag_id = ?1 AND ts < ?2")?
            .execute(params![id, cutoff])? as u64;
    }
    Ok(n)
}

/// The oldest and newest source times stored (per-tag primary-key lookups, no full scan).
pub fn time_span(conn: &Connection) -> Result<Option<(UnixNanos, UnixNanos)>> {
    let mut span: Option<(i64, i64)> = None;
    for id in tag_ids(conn)? {
        let (lo, hi): (Option<i64>, Option<i64>) = conn
            .prepare_cached("SELECT MIN(ts), MAX(ts) FROM samples WHERE tag_id = ?1")?
            .query_row(params![id], |r| Ok((r.get(0)?, r.get(1)?)))?;
        if let (Some(lo), Some(hi)) = (lo, hi) {
            span = Some(match span {
                None => (lo, hi),
                Some((a, b)) => (a.min(lo), b.max(hi)),
            });
        }
    }
    Ok(span)
}

/// Bytes the database uses (pages not on the free list).
pub fn used_bytes(conn: &Connection) -> Result<u64> {
    let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
    let free: i64 = conn.query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
    let size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
    Ok(((pages - free).max(0) * size) as u64)
}
