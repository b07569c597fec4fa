//! HistoryRead of `historize` tags into the history stream: the raw values of the last
//! `history_window` at start-up, and operators' backfill ranges (`backfill.rs`), page by page
//! (`history_values_per_request` values per node and request, the server's continuation
//! points between pages).

use std::sync::Arc;
use std::time::Duration;

use opcua::client::{HistoryReadAction, Session};
use opcua::types::{
    ByteString, DataValue, HistoryData, HistoryReadValueId, NodeId, NumericRange, QualifiedName,
    ReadRawModifiedDetails, StatusCode, TimestampsToReturn,
};
use protocol::model::{Sample, UnixNanos, Value, ValueType};

use super::convert;
use super::endpoint::Item;
use crate::history::{HistoryTap, TAP_BULK_LIMIT};

/// Values read per tag at most; past it the read stops early and the server's continuation
/// point is released (more is a job for an export from the historian itself).
pub const MAX_VALUES_PER_TAG: usize = 1_000_000;

/// Reads the window of every item into `tap`; returns the number of samples pushed and
/// whether every item was read to its end (false when a request failed, e.g. the connection
/// was lost; a node the server refuses counts as read).
pub(crate) async fn read_window(
    session: &Arc<Session>,
    items: &[Item],
    window: Duration,
    per_request: u32,
    tap: &HistoryTap,
) -> (usize, bool) {
    let end = crate::unix_now();
    let start = end.saturating_sub(i64::try_from(window.as_nanos()).unwrap_or(i64::MAX));
    let r = read_range(session, items, start, end, per_request, tap, &|_| {}).await;
    (r.values as usize, r.complete)
}

/// What [`read_range`] did.
#[derive(Debug, Default)]
pub(crate) struct RangeRead {
    pub values: u64,
    /// Every item was read to its end (or refused by the server).
    pub complete: bool,
    /// Nodes the server refused, with its status code.
    pub refused: Vec<(NodeId, StatusCode)>,
    /// Why the read stopped early, when it did.
    pub error: Option<String>,
}

/// Reads the raw values of every item with a source time in `from..=to` into `tap`, page by
/// page, waiting while the tap is full enough that live samples could be crowded out;
/// `on_values` hears of each page.
pub(crate) async fn read_range(
    session: &Arc<Session>,
    items: &[Item],
    from: UnixNanos,
    to: UnixNanos,
    per_request: u32,
    tap: &HistoryTap,
    on_values: &(dyn Fn(u64) + Sync),
) -> RangeRead {
    // OPC UA times have 100 ns ticks, and servers differ on whether the end time is included
    // (Part 11 leaves it to the bounds); ask one tick wider on each side and keep the range.
    let details = ReadRawModifiedDetails {
        is_read_modified: false,
        start_time: convert::to_datetime(from),
        end_time: convert::to_datetime(to.saturating_add(200)),
        num_values_per_node: per_request,
        return_bounds: false,
    };
    let mut out = RangeRead {
        complete: true,
        ..Default::default()
    };
    for it in items {
        let mut cp = ByteString::null();
        let mut read = 0usize;
        loop {
            let node = HistoryReadValueId {
                node_id: it.node.clone(),
                index_range: NumericRange::None,
                data_encoding: QualifiedName::null(),
                continuation_point: cp.clone(),
            };
            let result = session
                .history_read(
                    HistoryReadAction::ReadRawModifiedDetails(details.clone()),
                    TimestampsToReturn::Both,
                    false,
                    &[node],
                )
                .await;
            let r = match result.map(|r| r.into_iter().next()) {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(node = %it.node, error = %e, "HistoryRead failed");
                    out.complete = false;
                    out.error = Some(format!("HistoryRead of {} failed: {e}", it.node));
                    return out;
                }
            };
            if r.status_code.is_bad() {
                tracing::warn!(node = %it.node, status = %r.status_code, "HistoryRead refused");
                out.refused.push((it.node.clone(), r.status_code));
                break;
            }
            let values = r
                .history_data
                .into_inner_as::<HistoryData>()
                .and_then(|h| h.data_values)
                .unwrap_or_default();
            read += values.len();
            let samples: Vec<Sample> = values
                .iter()
                .map(|dv| sample(it, dv))
                .filter(|s| (from..=to).contains(&s.time))
                .collect();
            let n = samples.len() as u64;
            while tap.backlog() > TAP_BULK_LIMIT {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            tap.push(samples);
            out.values += n;
            on_values(n);
            if r.continuation_point.is_null() {
                break;
            }
            if read >= MAX_VALUES_PER_TAG {
                tracing::warn!(node = %it.node, values = read, "HistoryRead stopped at the per-tag limit");
                release(session, it, &details, r.continuation_point).await;
                break;
            }
            cp = r.continuation_point;
        }
    }
    out
}

/// Tells the server to drop a continuation point we will not use.
async fn release(session: &Session, it: &Item, details: &ReadRawModifiedDetails, cp: ByteString) {
    let node = HistoryReadValueId {
        node_id: it.node.clone(),
        index_range: NumericRange::None,
        data_encoding: QualifiedName::null(),
        continuation_point: cp,
    };
    let _ = session
        .history_read(
            HistoryReadAction::ReadRawModifiedDetails(details.clone()),
            TimestampsToReturn::Both,
            true,
            &[node],
        )
        .await;
}

fn sample(it: &Item, dv: &DataValue) -> Sample {
    let u = convert::update(it.tag, it.ty, dv, crate::unix_now());
    Sample {
        tag: it.tag,
        value: u.value.unwrap_or_else(|| zero_of(it.ty)),
        quality: u.quality,
        time: u.time,
    }
}

fn zero_of(t: ValueType) -> Value {
    match t {
        ValueType::Boolean => Value::Boolean(false),
        ValueType::Int16 => Value::Int16(0),
        ValueType::Int32 => Value::Int32(0),
        ValueType::Int64 => Value::Int64(0),
        ValueType::UInt16 => Value::UInt16(0),
        ValueType::UInt32 => Value::UInt32(0),
        ValueType::UInt64 => Value::UInt64(0),
        ValueType::Float => Value::Float(0.0),
        ValueType::Double => Value::Double(0.0),
        ValueType::String => Value::String(String::new()),
        ValueType::DateTime => Value::DateTime(0),
        ValueType::ByteString => Value::ByteString(Vec::new()),
    }
}
