//! The model's values, qualities and times in OPC UA's terms, and back for HistoryRead's
//! time bounds.

use opcua::types::{
    ByteString, DataTypeId, DataValue, DateTime, StatusCode, TimestampsToReturn, UAString, Variant,
};
use protocol::model::{Quality, UnixNanos, Value, ValueType};

/// 100 ns ticks from 1601-01-01 (OPC UA's epoch) to 1970-01-01 (Unix's).
const UNIX_EPOCH_TICKS: i64 = 116_444_736_000_000_000;

/// The built-in DataType a tag of `t` is served with.
pub fn data_type(t: ValueType) -> DataTypeId {
    match t {
        ValueType::Boolean => DataTypeId::Boolean,
        ValueType::Int16 => DataTypeId::Int16,
        ValueType::Int32 => DataTypeId::Int32,
        ValueType::Int64 => DataTypeId::Int64,
        ValueType::UInt16 => DataTypeId::UInt16,
        ValueType::UInt32 => DataTypeId::UInt32,
        ValueType::UInt64 => DataTypeId::UInt64,
        ValueType::Float => DataTypeId::Float,
        ValueType::Double => DataTypeId::Double,
        ValueType::String => DataTypeId::String,
        ValueType::DateTime => DataTypeId::DateTime,
        ValueType::ByteString => DataTypeId::ByteString,
    }
}

pub fn variant(v: &Value) -> Variant {
    match v {
        Value::Boolean(b) => Variant::Boolean(*b),
        Value::Int16(x) => Variant::Int16(*x),
        Value::Int32(x) => Variant::Int32(*x),
        Value::Int64(x) => Variant::Int64(*x),
        Value::UInt16(x) => Variant::UInt16(*x),
        Value::UInt32(x) => Variant::UInt32(*x),
        Value::UInt64(x) => Variant::UInt64(*x),
        Value::Float(x) => Variant::Float(*x),
        Value::Double(x) => Variant::Double(*x),
        Value::String(s) => Variant::String(UAString::from(s.as_str())),
        Value::DateTime(t) => Variant::DateTime(Box::new(date_time(*t).0)),
        Value::ByteString(b) => Variant::ByteString(ByteString::from(b.clone())),
    }
}

/// The raw StatusCode the plant gave, unchanged.
pub fn status(q: Quality) -> StatusCode {
    StatusCode::from(q.0)
}

/// An OPC UA DateTime (100 ns resolution) and the picoseconds (10 ps units) that carry the
/// rest of the nanoseconds, so a source time survives to the nanosecond.
pub fn date_time(t: UnixNanos) -> (DateTime, u16) {
    // Every i64 of nanoseconds falls inside DateTime's range (1601..=9999), so no clamping.
    let ticks = t.div_euclid(100) + UNIX_EPOCH_TICKS;
    let rest = t.rem_euclid(100) as u16;
    (DateTime::from(ticks), rest * 100)
}

/// Unix nanoseconds of an OPC UA DateTime, saturating; `None` for the null (unspecified) time.
pub fn unix_nanos(t: &DateTime) -> Option<UnixNanos> {
    if t.is_null() {
        return None;
    }
    let ticks = t.checked_ticks();
    if ticks == i64::MAX {
        return Some(i64::MAX);
    }
    Some((ticks - UNIX_EPOCH_TICKS).saturating_mul(100))
}

/// A DataValue with the timestamps the client asked for.
pub fn data_value(
    value: Option<Variant>,
    status: StatusCode,
    source: Option<UnixNanos>,
    server: Option<UnixNanos>,
    which: TimestampsToReturn,
) -> DataValue {
    let (want_source, want_server) = match which {
        TimestampsToReturn::Source => (true, false),
        TimestampsToReturn::Server => (false, true),
        TimestampsToReturn::Neither => (false, false),
        _ => (true, true),
    };
    let source = source.filter(|_| want_source).map(date_time);
    let server = server.filter(|_| want_server).map(date_time);
    DataValue {
        value,
        status: Some(status),
        source_timestamp: source.map(|s| s.0),
        source_picoseconds: source.map(|s| s.1).filter(|p| *p != 0),
        server_timestamp: server.map(|s| s.0),
        server_picoseconds: server.map(|s| s.1).filter(|p| *p != 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip_to_the_nanosecond() {
        for t in [
            0,
            1,
            99,
            100,
            1_700_000_000_123_456_789,
            -1,
            -1_000_000_000_000_000_001,
        ] {
            let (dt, ps) = date_time(t);
            let back = unix_nanos(&dt).expect("not null");
            assert_eq!(back + i64::from(ps / 100), t, "{t}");
        }
        assert_eq!(
            date_time(0).0,
            DateTime::from((1970, 1, 1, 0, 0, 0)),
            "the Unix epoch"
        );
        assert_eq!(unix_nanos(&DateTime::null()), None);
    }

    #[test]
    fn status_is_the_raw_code() {
        assert_eq!(
            status(Quality(0x408F_0000)),
            StatusCode::UncertainNoCommunicationLastUsableValue
        );
        assert_eq!(
            status(Quality::BAD_DEVICE_FAILURE),
            StatusCode::BadDeviceFailure
        );
        assert_eq!(status(Quality(0x0000_0400)).bits(), 0x400);
    }
}
