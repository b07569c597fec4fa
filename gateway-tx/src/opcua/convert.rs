//! OPC UA values into the gateway's model: Variant → [`Value`], StatusCode → [`Quality`],
//! DateTime → [`UnixNanos`].
//!
//! Rules (config/README.md repeats them for users):
//! - The sample's time is the value's source timestamp; without one the server timestamp;
//!   without either the time the transmitter received it.
//! - The StatusCode becomes the Quality unchanged (all 32 bits).
//! - A Variant of the configured type is taken as it is. One of another type is converted when
//!   the configured type holds the very same value (an Int16 into an i32 tag, a Double 2.0 into
//!   a u16 tag, a Float into an f64 tag, a Byte into a u16 tag); otherwise the sample gets
//!   Quality BadTypeMismatch (0x80740000) and the tag keeps its last value.
//! - An empty Variant (a Bad value usually has none) keeps the last value with the status.
//! - A String or ByteString longer than `protocol::model::MAX_VALUE_BYTES` is not taken: the
//!   sample gets Quality BadEncodingLimitsExceeded (0x80080000) and the tag keeps its last
//!   value. The value is measured before it is copied.

use opcua::types::{DataValue, DateTime, StatusCode, Variant};
use protocol::model::{Quality, UnixNanos, Value, ValueType};

use crate::tags::Update;

/// The code a value of a type that cannot be converted gets.
pub const BAD_TYPE_MISMATCH: Quality = Quality(0x8074_0000);

/// Ticks (100 ns) from 1601-01-01 (OPC UA's epoch) to 1970-01-01.
const EPOCH_OFFSET_TICKS: i64 = 116_444_736_000_000_000;

/// An OPC UA DateTime as nanoseconds since 1970; `None` for the null DateTime.
pub fn unix_nanos(t: &DateTime) -> Option<UnixNanos> {
    if t.is_null() {
        return None;
    }
    let ticks = t.ticks();
    Some((ticks - EPOCH_OFFSET_TICKS).saturating_mul(100))
}

/// Nanoseconds since 1970 as an OPC UA DateTime (100 ns resolution).
pub fn to_datetime(t: UnixNanos) -> DateTime {
    DateTime::from(t.div_euclid(100) + EPOCH_OFFSET_TICKS)
}

/// One DataValue of tag `tag` of type `ty`, received at `now`.
pub fn update(tag: u32, ty: ValueType, dv: &DataValue, now: UnixNanos) -> Update {
    let time = dv
        .source_timestamp
        .as_ref()
        .and_then(unix_nanos)
        .or_else(|| dv.server_timestamp.as_ref().and_then(unix_nanos))
        .unwrap_or(now);
    let status = Quality(dv.status.unwrap_or(StatusCode::Good).bits());
    let (value, quality) = match dv.value.as_ref() {
        None | Some(Variant::Empty) => (None, status),
        Some(v) if oversized(v) => (None, Quality::BAD_ENCODING_LIMITS_EXCEEDED),
        Some(v) => match convert(v, ty) {
            Some(v) => (Some(v), status),
            None => (None, BAD_TYPE_MISMATCH),
        },
    };
    Update {
        tag,
        value,
        quality,
        time,
    }
}

/// A String or ByteString beyond what the gateway carries.
fn oversized(v: &Variant) -> bool {
    let len = match v {
        Variant::String(s) => s.as_ref().len(),
        Variant::ByteString(b) => b.value.as_ref().map_or(0, Vec::len),
        _ => 0,
    };
    len > protocol::model::MAX_VALUE_BYTES
}

/// The Variant as a value of type `ty`, when that type holds it exactly.
pub fn convert(v: &Variant, ty: ValueType) -> Option<Value> {
    match (v, ty) {
        (Variant::Boolean(b), ValueType::Boolean) => Some(Value::Boolean(*b)),
        (Variant::String(s), ValueType::String) => Some(Value::String(s.as_ref().to_owned())),
        (Variant::ByteString(b), ValueType::ByteString) => {
            Some(Value::ByteString(b.value.clone().unwrap_or_default()))
        }
        // The null DateTime (1601-01-01) is before what nanoseconds since 1970 can hold.
        (Variant::DateTime(d), ValueType::DateTime) => {
            Some(Value::DateTime(unix_nanos(d).unwrap_or(i64::MIN)))
        }
        (Variant::Float(f), ValueType::Float) => Some(Value::Float(*f)),
        (Variant::Float(f), ValueType::Double) => Some(Value::Double(f64::from(*f))),
        (Variant::Double(d), ValueType::Double) => Some(Value::Double(*d)),
        (Variant::Double(d), ValueType::Float) => {
            let f = *d as f32;
            (f64::from(f) == *d || d.is_nan()).then_some(Value::Float(f))
        }
        (v, ty) => {
            if let Some(i) = integer(v) {
                from_integer(i, ty)
            } else {
                let f = match v {
                    Variant::Float(f) => f64::from(*f),
                    Variant::Double(d) => *d,
                    _ => return None,
                };
                // A float holding a whole number converts to an integer type that holds it.
                if f.fract() == 0.0 && f.abs() < 1.9e19 {
                    from_integer(f as i128, ty)
                } else {
                    None
                }
            }
        }
    }
}

fn integer(v: &Variant) -> Option<i128> {
    Some(match v {
        Variant::SByte(n) => i128::from(*n),
        Variant::Byte(n) => i128::from(*n),
        Variant::Int16(n) => i128::from(*n),
        Variant::UInt16(n) => i128::from(*n),
        Variant::Int32(n) => i128::from(*n),
        Variant::UInt32(n) => i128::from(*n),
        Variant::Int64(n) => i128::from(*n),
        Variant::UInt64(n) => i128::from(*n),
        _ => return None,
    })
}

fn from_integer(i: i128, ty: ValueType) -> Option<Value> {
    match ty {
        ValueType::Int16 => i16::try_from(i).ok().map(Value::Int16),
        ValueType::Int32 => i32::try_from(i).ok().map(Value::Int32),
        ValueType::Int64 => i64::try_from(i).ok().map(Value::Int64),
        ValueType::UInt16 => u16::try_from(i).ok().map(Value::UInt16),
        ValueType::UInt32 => u32::try_from(i).ok().map(Value::UInt32),
        ValueType::UInt64 => u64::try_from(i).ok().map(Value::UInt64),
        // Exactly representable: |i| <= 2^24 (f32) or 2^53 (f64).
        ValueType::Float => (i.abs() <= 1 << 24).then_some(Value::Float(i as f32)),
        ValueType::Double => (i.abs() <= 1 << 53).then_some(Value::Double(i as f64)),
        ValueType::Boolean | ValueType::String | ValueType::DateTime | ValueType::ByteString => {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lossless_conversions_only() {
        assert_eq!(
            convert(&Variant::Int16(-5), ValueType::Int32),
            Some(Value::Int32(-5))
        );
        assert_eq!(
            convert(&Variant::Byte(200), ValueType::UInt16),
            Some(Value::UInt16(200))
        );
        assert_eq!(convert(&Variant::Int32(70_000), ValueType::Int16), None);
        assert_eq!(convert(&Variant::Int32(-1), ValueType::UInt32), None);
        assert_eq!(
            convert(&Variant::Float(1.5), ValueType::Double),
            Some(Value::Double(1.5))
        );
        assert_eq!(convert(&Variant::Double(0.1), ValueType::Float), None);
        assert_eq!(
            convert(&Variant::Double(2.0), ValueType::UInt16),
            Some(Value::UInt16(2))
        );
        assert_eq!(convert(&Variant::Double(2.5), ValueType::Int64), None);
        assert_eq!(
            convert(&Variant::Int64(1 << 53), ValueType::Double),
            Some(Value::Double(9007199254740992.0))
        );
        assert_eq!(
            convert(&Variant::Int64((1 << 53) + 1), ValueType::Double),
            None
        );
        assert_eq!(convert(&Variant::Boolean(true), ValueType::Int32), None);
        assert_eq!(
            convert(&Variant::String("1".into()), ValueType::Int32),
            None
        );
    }

    #[test]
    fn times_and_status() {
        let t: UnixNanos = 1_700_000_000_123_456_700;
        assert_eq!(unix_nanos(&to_datetime(t)), Some(t));
        let dv = DataValue {
            value: Some(Variant::String("x".into())),
            status: Some(StatusCode::from(0x4096_0000u32)),
            source_timestamp: Some(to_datetime(t)),
            server_timestamp: Some(to_datetime(t + 1000)),
            ..Default::default()
        };
        let u = update(3, ValueType::Double, &dv, 9);
        assert_eq!(
            (u.tag, u.value, u.quality, u.time),
            (3, None, BAD_TYPE_MISMATCH, t)
        );
        let dv = DataValue {
            value: Some(Variant::Double(1.0)),
            status: None,
            source_timestamp: None,
            server_timestamp: Some(to_datetime(t)),
            ..Default::default()
        };
        let u = update(3, ValueType::Double, &dv, 9);
        assert_eq!(
            (u.value, u.quality, u.time),
            (Some(Value::Double(1.0)), Quality::GOOD, t)
        );
        let u = update(3, ValueType::Double, &DataValue::default(), 9);
        assert_eq!((u.value, u.quality, u.time), (None, Quality::GOOD, 9));
    }

    #[test]
    fn values_beyond_the_limit_are_refused_before_they_are_copied() {
        let max = protocol::model::MAX_VALUE_BYTES;
        let dv = |v: Variant| DataValue {
            value: Some(v),
            source_timestamp: Some(to_datetime(500)),
            ..Default::default()
        };
        let u = update(
            1,
            ValueType::String,
            &dv(Variant::String("x".repeat(max).into())),
            0,
        );
        assert_eq!(u.quality, Quality::GOOD);
        assert_eq!(
            u.value
                .map(|v| matches!(v, Value::String(s) if s.len() == max)),
            Some(true)
        );
        for (v, ty) in [
            (
                Variant::String("x".repeat(max + 1).into()),
                ValueType::String,
            ),
            (
                Variant::ByteString(vec![7u8; 17 << 20].into()),
                ValueType::ByteString,
            ),
        ] {
            let u = update(1, ty, &dv(v), 0);
            assert_eq!(
                (u.value, u.quality, u.time),
                (None, Quality::BAD_ENCODING_LIMITS_EXCEEDED, 500)
            );
        }
    }
}
