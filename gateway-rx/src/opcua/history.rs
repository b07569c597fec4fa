//! HistoryRead (raw) from the embedded SQLite store, through its own read-only connection, on
//! a blocking thread.
//!
//! # ReadRawModifiedDetails, as OPC UA Part 11 (6.4.3) says
//!
//! | start | end | order | values |
//! |---|---|---|---|
//! | set | set, later | forward | `start <= t < end` |
//! | set | set, equal | forward | `t == start` |
//! | set | set, earlier | reverse | `end < t <= start` |
//! | set | unspecified | forward | `t >= start` (numValuesPerNode must be set) |
//! | unspecified | set | reverse | `t <= end` (numValuesPerNode must be set) |
//!
//! Here `t` is a sample's source time as a DateTime shows it (truncated to 100 ns ticks; the
//! store keeps nanoseconds, and a bound takes in or leaves out a whole tick).
//! Both unspecified, or one unspecified with numValuesPerNode 0, is BadHistoryOperationInvalid.
//! isReadModified is BadHistoryOperationUnsupported (the store keeps each (tag, time) once and
//! no modification history). returnBounds is not supported: the values in the range are
//! returned, without bounding values. A response holds at most numValuesPerNode values, and at
//! most [`MAX_VALUES_PER_RESPONSE`] whatever it says; when more remain, a continuation point
//! says where the next call starts. The server keeps at most `max_history_continuation_points`
//! of them per session (`[opcua_server]`); a read that would need another gets
//! BadNoContinuationPoints. Releasing them (releaseContinuationPoints) works as the spec says.
//!
//! A tag with nothing stored (or a store not created yet, before the first history arrives)
//! answers Good with no values. The store keeps the source time, value and quality of each
//! sample; the server timestamp of a historical value is not stored, so none is returned.

use std::path::PathBuf;
use std::sync::Mutex;

use opcua::types::{DataValue, DateTime, HistoryData, StatusCode, TimestampsToReturn};
use protocol::model::{Quality, UnixNanos};
use rusqlite::{Connection, params};

use super::convert;
use crate::store::db;

/// Values in one HistoryRead result at most, whatever numValuesPerNode says.
pub const MAX_VALUES_PER_RESPONSE: usize = 10_000;

/// Where a paged read goes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub tag: String,
    /// Inclusive source-time bounds still to read.
    pub lo: UnixNanos,
    pub hi: UnixNanos,
    pub reverse: bool,
    pub page: usize,
}

/// The read-only side of the store, for the OPC UA mirror.
#[derive(Debug)]
pub struct HistoryReader {
    path: PathBuf,
    /// Opened on first use (the store may not exist when the server starts).
    conn: Mutex<Option<Connection>>,
}

/// One page: the values and, when more remain, where to go on.
pub type Page = (
    Vec<(UnixNanos, Option<protocol::model::Value>, Quality)>,
    Option<Cursor>,
);

impl HistoryReader {
    pub fn new(path: PathBuf) -> HistoryReader {
        HistoryReader {
            path,
            conn: Mutex::new(None),
        }
    }

    /// Reads one page. Blocking: call it from `spawn_blocking`.
    pub fn read(&self, cursor: &Cursor) -> Result<Page, rusqlite::Error> {
        let mut guard = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        if guard.is_none() {
            if !self.path.exists() {
                return Ok((Vec::new(), None));
            }
            *guard = Some(db::open_ro(&self.path)?);
        }
        let Some(conn) = guard.as_ref() else {
            return Ok((Vec::new(), None));
        };
        let result = read_page(conn, cursor);
        if result.is_err() {
            // A broken connection (the file replaced, say) is reopened next time.
            *guard = None;
        }
        result
    }
}

fn read_page(conn: &Connection, c: &Cursor) -> Result<Page, rusqlite::Error> {
    let sql = if c.reverse {
        "SELECT s.ts, s.value, s.quality, t.value_type FROM samples s JOIN tags t ON s.tag_id = t.id
         WHERE t.name = ?1 AND s.ts >= ?2 AND s.ts <= ?3 ORDER BY s.ts DESC LIMIT ?4"
    } else {
        "SELECT s.ts, s.value, s.quality, t.value_type FROM samples s JOIN tags t ON s.tag_id = t.id
         WHERE t.name = ?1 AND s.ts >= ?2 AND s.ts <= ?3 ORDER BY s.ts ASC LIMIT ?4"
    };
    let mut stmt = conn.prepare_cached(sql)?;
    // One more than a page tells whether a continuation point is needed.
    let limit = i64::try_from(c.page.saturating_add(1)).unwrap_or(i64::MAX);
    let mut rows = stmt.query(params![c.tag, c.lo, c.hi, limit])?;
    let mut out = Vec::with_capacity(c.page.min(1024));
    let mut more = false;
    while let Some(r) = rows.next()? {
        if out.len() == c.page {
            more = true;
            break;
        }
        let ts: i64 = r.get(0)?;
        let t: String = r.get(3)?;
        let value = db::type_from_name(&t).and_then(|t| db::from_sql(t, r.get_ref(1).ok()?));
        let quality = Quality(r.get::<_, i64>(2)? as u32);
        out.push((ts, value, quality));
    }
    let next = match (more, out.last()) {
        (true, Some(&(last, _, _))) => {
            let mut n = c.clone();
            if c.reverse {
                n.hi = last.saturating_sub(1);
            } else {
                n.lo = last.saturating_add(1);
            }
            Some(n)
        }
        _ => None,
    };
    Ok((out, next))
}

/// The last nanosecond of the DateTime tick (100 ns) starting at `t`: a client's DateTime
/// names the whole tick, and stored times keep their nanoseconds, so a bound that includes a
/// DateTime includes every sample within its tick (and one that excludes it, none).
fn tick_end(t: UnixNanos) -> UnixNanos {
    t.saturating_add(99)
}

/// The first cursor of a raw read, or the status that refuses it.
pub fn first_cursor(
    tag: &str,
    start: &DateTime,
    end: &DateTime,
    num_values: u32,
) -> Result<Cursor, StatusCode> {
    let page = match num_values {
        0 => MAX_VALUES_PER_RESPONSE,
        n => usize::try_from(n)
            .unwrap_or(usize::MAX)
            .min(MAX_VALUES_PER_RESPONSE),
    };
    let (lo, hi, reverse) = match (convert::unix_nanos(start), convert::unix_nanos(end)) {
        (None, None) => return Err(StatusCode::BadHistoryOperationInvalid),
        (Some(_), None) | (None, Some(_)) if num_values == 0 => {
            return Err(StatusCode::BadHistoryOperationInvalid);
        }
        (Some(s), None) => (s, i64::MAX, false),
        (None, Some(e)) => (i64::MIN, tick_end(e), true),
        (Some(s), Some(e)) if s == e => (s, tick_end(s), false),
        (Some(s), Some(e)) if s < e => (s, e.saturating_sub(1), false),
        (Some(s), Some(e)) => (tick_end(e).saturating_add(1), tick_end(s), true),
    };
    Ok(Cursor {
        tag: tag.to_owned(),
        lo,
        hi,
        reverse,
        page,
    })
}

/// A page as OPC UA history data.
pub fn history_data(
    page: Vec<(UnixNanos, Option<protocol::model::Value>, Quality)>,
    which: TimestampsToReturn,
) -> HistoryData {
    let values: Vec<DataValue> = page
        .into_iter()
        .map(|(ts, value, quality)| {
            let (value, status) = match value {
                Some(v) => (Some(convert::variant(&v)), convert::status(quality)),
                // Stored under a type it cannot be read back as: say so rather than guess.
                None => (None, StatusCode::BadDecodingError),
            };
            let which = match which {
                TimestampsToReturn::Both => TimestampsToReturn::Source,
                TimestampsToReturn::Server => TimestampsToReturn::Neither,
                w => w,
            };
            convert::data_value(value, status, Some(ts), None, which)
        })
        .collect();
    HistoryData {
        data_values: Some(values),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dt(ns: i64) -> DateTime {
        convert::date_time(ns).0
    }

    #[test]
    fn ranges_follow_part_11() {
        let c = first_cursor("t", &dt(100), &dt(200), 0).unwrap();
        assert_eq!(
            (c.lo, c.hi, c.reverse, c.page),
            (100, 199, false, MAX_VALUES_PER_RESPONSE)
        );
        let c = first_cursor("t", &dt(200), &dt(100), 5).unwrap();
        assert_eq!((c.lo, c.hi, c.reverse, c.page), (200, 299, true, 5));
        let c = first_cursor("t", &dt(100), &dt(100), 5).unwrap();
        assert_eq!((c.lo, c.hi), (100, 199));
        let c = first_cursor("t", &dt(100), &DateTime::null(), 3).unwrap();
        assert_eq!((c.lo, c.hi, c.reverse), (100, i64::MAX, false));
        let c = first_cursor("t", &DateTime::null(), &dt(100), 3).unwrap();
        assert_eq!((c.lo, c.hi, c.reverse), (i64::MIN, 199, true));
        assert_eq!(
            first_cursor("t", &DateTime::null(), &dt(100), 0),
            Err(StatusCode::BadHistoryOperationInvalid)
        );
        assert_eq!(
            first_cursor("t", &DateTime::null(), &DateTime::null(), 9),
            Err(StatusCode::BadHistoryOperationInvalid)
        );
    }
}
