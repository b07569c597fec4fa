//! What `gateway-rx query` and `gateway-rx gaps` print, from a store opened read-only (they
//! work while the daemon writes: WAL lets readers in).

use std::io::Write;

use config::timefmt::format_rfc3339;
use protocol::model::{UnixNanos, Value};
use rusqlite::Connection;

use super::db;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Json,
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::DateTime(t) => format_rfc3339(*t),
        other => other.to_string(),
    }
}

fn value_json(v: &Value) -> serde_json::Value {
    use serde_json::json;
    match v {
        Value::Boolean(b) => json!(b),
        Value::Int16(x) => json!(x),
        Value::Int32(x) => json!(x),
        Value::Int64(x) => json!(x),
        Value::UInt16(x) => json!(x),
        Value::UInt32(x) => json!(x),
        Value::UInt64(x) => json!(x),
        // Non-finite floats have no JSON number; they print as text.
        Value::Float(x) if x.is_finite() => json!(f64::from(*x)),
        Value::Double(x) if x.is_finite() => json!(x),
        Value::Float(_) | Value::Double(_) => json!(v.to_string()),
        Value::String(s) => json!(s),
        Value::DateTime(t) => json!(format_rfc3339(*t)),
        Value::ByteString(_) => json!(v.to_string()),
    }
}

/// Writes the samples of `tags` with source time in `[from, to]`, tag by tag, each in time
/// order. Returns how many.
pub fn query(
    conn: &Connection,
    tags: &[String],
    from: UnixNanos,
    to: UnixNanos,
    format: Format,
    out: &mut dyn Write,
) -> anyhow::Result<usize> {
    let mut n = 0;
    match format {
        Format::Csv => writeln!(out, "tag,time,value,quality,status")?,
        Format::Json => writeln!(out, "[")?,
    }
    for tag in tags {
        for s in db::query(conn, tag, from, to)? {
            match format {
                Format::Csv => writeln!(
                    out,
                    "{},{},{},0x{:08X},{}",
                    csv_field(&s.tag),
                    format_rfc3339(s.time),
                    s.value
                        .as_ref()
                        .map(|v| csv_field(&value_text(v)))
                        .unwrap_or_default(),
                    s.quality.0,
                    s.quality.name()
                )?,
                Format::Json => {
                    let obj = serde_json::json!({
                        "tag": s.tag,
                        "time": format_rfc3339(s.time),
                        "time_ns": s.time,
                        "value": s.value.as_ref().map(value_json),
                        "quality": s.quality.0,
                        "status": s.quality.name(),
                    });
                    let sep = if n == 0 { " " } else { "," };
                    writeln!(out, "{sep}{obj}")?;
                }
            }
            n += 1;
        }
    }
    if format == Format::Json {
        writeln!(out, "]")?;
    }
    Ok(n)
}

/// Writes the gaps, oldest first (only open ones with `open_only`). Returns how many.
pub fn gaps(
    conn: &Connection,
    open_only: bool,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<usize> {
    let rows = db::list_gaps(conn, open_only, 1_000_000)?;
    if json {
        for g in &rows {
            let obj = serde_json::json!({
                "id": g.id,
                "stream": "history",
                "state": g.state,
                "log": format!("{:016x}", g.log),
                "first_seq": g.start_seq,
                "last_seq": g.end_seq.saturating_sub(1),
                "count": g.end_seq - g.start_seq,
                "from": g.from_ts.map(format_rfc3339),
                "to": g.to_ts.map(format_rfc3339),
                "reason": g.reason,
                "opened_at": format_rfc3339(g.opened_at),
                "closed_at": g.closed_at.map(format_rfc3339),
                "tags": g.tags,
            });
            writeln!(out, "{obj}")?;
        }
        return Ok(rows.len());
    }
    writeln!(
        out,
        "{:>6}  {:<9}  {:<16}  {:>21}  {:>9}  {:<30}  {:<30}  {:<20}  tags",
        "id", "state", "log", "sequence", "samples", "from", "to", "reason"
    )?;
    for g in &rows {
        let dash = || "-".to_string();
        writeln!(
            out,
            "{:>6}  {:<9}  {:016x}  {:>21}  {:>9}  {:<30}  {:<30}  {:<20}  {}",
            g.id,
            g.state,
            g.log,
            format!("{}..{}", g.start_seq, g.end_seq.saturating_sub(1)),
            g.end_seq - g.start_seq,
            g.from_ts.map_or_else(dash, format_rfc3339),
            g.to_ts.map_or_else(dash, format_rfc3339),
            g.reason,
            g.tags.join(" ")
        )?;
    }
    Ok(rows.len())
}
