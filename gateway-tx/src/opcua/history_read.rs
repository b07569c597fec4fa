//! The start-up HistoryRead: for `historize` tags, the raw values of the last
//! `history_window`, page by page (`history_values_per_request` values per node and request,
//! the server's continuation points between pages), pushed into the history stream.

use std::sync::Arc;
use std::time::Duration;

use opcua::client::{HistoryReadAction, Session};
use opcua::types::{
    ByteString, DataValue, HistoryData, HistoryReadValueId, NumericRange, QualifiedName,
    ReadRawModifiedDetails, TimestampsToReturn,
};
use protocol::model::{Sample, Value, ValueType};

use super::convert;
use super::endpoint::Item;
use crate::history::HistoryTap;

/// Values read per tag at most; past it the read stops early and the server's continuation
/// point is released (a window of days at a fast rate is better backfilled by the historian).
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
    let details = ReadRawModifiedDetails {
        is_read_modified: false,
        start_time: convert::to_datetime(start),
        end_time: convert::to_datetime(end),
        num_values_per_node: per_request,
        return_bounds: false,
    };
    let mut total = 0;
    let mut complete = true;
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
                    complete = false;
                    break;
                }
            };
            if r.status_code.is_bad() {
                tracing::warn!(node = %it.node, status = %r.status_code, "HistoryRead refused");
                break;
            }
            let values = r
                .history_data
                .into_inner_as::<HistoryData>()
                .and_then(|h| h.data_values)
                .unwrap_or_default();
            read += values.len();
            total += values.len();
            tap.push(values.iter().map(|dv| sample(it, dv)));
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
    (total, complete)
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
