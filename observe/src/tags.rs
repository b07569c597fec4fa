//! Tag rows of the status JSON, the same on both sides: name, value, unit, quality and its
//! tone, age, source address and description.

use protocol::model::{ModbusTable, Quality, UnixNanos, Value};
use protocol::tag_ref::{SourceRef, TagRef};
use serde_json::{Value as Json, json};

/// Longest value text shown (a long string or byte string is cut, with an ellipsis).
pub const MAX_VALUE_CHARS: usize = 200;

/// `good`, `warn` (uncertain) or `bad`: the tone the page shows a quality in.
pub fn quality_tone(q: Quality) -> &'static str {
    if q.is_good() {
        "good"
    } else if q.is_uncertain() {
        "warn"
    } else {
        "bad"
    }
}

/// Where a tag comes from, in a few words: `plc1 u1 holding 100`. Takes a
/// `&SourceAddress` or a [`SourceRef`].
pub fn source_text<'a>(source: impl Into<SourceRef<'a>>) -> String {
    match source.into() {
        SourceRef::Modbus(a) => {
            let table = match a.table {
                ModbusTable::Coil => "coil",
                ModbusTable::DiscreteInput => "discrete",
                ModbusTable::HoldingRegister => "holding",
                ModbusTable::InputRegister => "input",
            };
            format!("{} u{} {table} {}", a.device, a.unit_id, a.address)
        }
        SourceRef::OpcUa { endpoint, node_id } => format!("{endpoint} {node_id}"),
        SourceRef::Other(s) => s.to_owned(),
    }
}

/// A value as text, cut at [`MAX_VALUE_CHARS`].
pub fn value_text(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() <= MAX_VALUE_CHARS {
        return s;
    }
    let mut cut: String = s.chars().take(MAX_VALUE_CHARS).collect();
    cut.push('\u{2026}');
    cut
}

/// One row of the tag table. `value` is the value, its quality as served and its source time;
/// `None` when the tag never had one. `info` is a `&TagInfo` (the transmitter's table) or a
/// [`TagRef`] (the receiver's catalogue).
pub fn row<'a>(
    info: impl Into<TagRef<'a>>,
    value: Option<(&Value, Quality, UnixNanos)>,
    now: UnixNanos,
) -> Json {
    let info = info.into();
    let source = source_text(info.source);
    match value {
        Some((v, q, time)) => json!({
            "name": info.name,
            "value": value_text(v),
            "unit": info.unit,
            "quality": q.name(),
            "tone": quality_tone(q),
            "age_ms": now.saturating_sub(time) / 1_000_000,
            "source": source,
            "description": info.description,
        }),
        None => json!({
            "name": info.name,
            "value": null,
            "unit": info.unit,
            "quality": "no value yet",
            "tone": "muted",
            "age_ms": null,
            "source": source,
            "description": info.description,
        }),
    }
}

/// Whether a tag matches a status query's filter (name, unit, description or source).
pub fn matches<'a>(filter: &crate::http::TagFilter, info: impl Into<TagRef<'a>>) -> bool {
    let info = info.into();
    filter.is_empty()
        || filter.matches(&[info.name, info.unit, info.description])
        || filter.matches(&[&source_text(info.source)])
}
