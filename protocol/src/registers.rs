//! The Modbus register codec shared by both daemons: raw registers to an engineering [`Value`]
//! (the transmitter's poller) and back (the receiver's read-only Modbus mirror, which serves the
//! same registers the source device did). Pure: no IO.
//!
//! Layout rules:
//! - Byte order applies inside each 16-bit register: `Big` is Modbus's own order (high byte
//!   first on the wire), `Little` swaps the two bytes of every register.
//! - Word order applies to multi-register numbers: `Big` puts the most significant register at
//!   the lowest address, `Little` the least significant one. A 64-bit value with `Little` word
//!   order has its four registers fully reversed.
//! - Strings take two bytes per register in address order; word order does not apply to them
//!   (text has no significance order), byte order says which byte of a register comes first.
//!   Trailing NULs are trimmed on decode and added as padding on encode. Invalid UTF-8 decodes
//!   lossily (U+FFFD for each bad sequence) rather than failing: a stray byte in a PLC's text
//!   register should not turn the tag Bad, and the replacement character makes it visible.
//! - Scaling: engineering = raw × scale + offset. An unscaled tag keeps its raw type; a scaled
//!   one is a `Double` (see [`value_type`]). `Bool` and `String` ignore scale and offset.
//! - A `Bool` in a register table is one register, true when non-zero; in a bit table the
//!   caller uses [`decode_bit`] / [`encode_bit`].

use thiserror::Error;

use crate::model::{ByteOrder, ModbusAddress, ModbusType, Value, ValueType, WordOrder};
use crate::tag_ref::ModbusRef;

#[derive(Debug, Clone, PartialEq, Error)]
pub enum RegisterError {
    #[error("{kind:?} needs {expected} registers, got {got}")]
    WrongLength {
        kind: ModbusType,
        expected: usize,
        got: usize,
    },
    #[error("a {got:?} value cannot be stored as Modbus {kind:?}")]
    TypeMismatch { kind: ModbusType, got: ValueType },
    #[error("{value} is out of range for Modbus {kind:?}")]
    OutOfRange { kind: ModbusType, value: f64 },
    #[error("NaN cannot be stored as Modbus {kind:?}")]
    NotANumber { kind: ModbusType },
    #[error("a string of {bytes} bytes does not fit in {registers} registers")]
    StringTooLong { bytes: usize, registers: u16 },
    #[error("scale {scale} cannot be inverted")]
    BadScale { scale: f64 },
}

/// The value type a Modbus tag carries: the raw type when unscaled, `Double` once scaled, since
/// raw × scale + offset is no longer an integer (or an exact f32) in general.
pub fn value_type(addr: &ModbusAddress) -> ValueType {
    match addr.kind {
        ModbusType::Bool => ValueType::Boolean,
        ModbusType::String => ValueType::String,
        _ if !addr.is_unscaled() => ValueType::Double,
        ModbusType::U16 => ValueType::UInt16,
        ModbusType::I16 => ValueType::Int16,
        ModbusType::U32 => ValueType::UInt32,
        ModbusType::I32 => ValueType::Int32,
        ModbusType::U64 => ValueType::UInt64,
        ModbusType::I64 => ValueType::Int64,
        ModbusType::F32 => ValueType::Float,
        ModbusType::F64 => ValueType::Double,
    }
}

/// Registers a type occupies; `None` for strings, whose length is configured.
pub fn type_width(kind: ModbusType) -> Option<u16> {
    match kind {
        ModbusType::Bool | ModbusType::U16 | ModbusType::I16 => Some(1),
        ModbusType::U32 | ModbusType::I32 | ModbusType::F32 => Some(2),
        ModbusType::U64 | ModbusType::I64 | ModbusType::F64 => Some(4),
        ModbusType::String => None,
    }
}

/// Registers (or bits, in a bit table) the tag occupies: the type's width, or the configured
/// length for strings. This, not `addr.count`, is what [`decode`] expects for fixed-width types,
/// so a stale count can never make the codec read past the value. Takes a `&ModbusAddress` or
/// a [`ModbusRef`] (a catalogue's view).
pub fn register_count<'a>(addr: impl Into<ModbusRef<'a>>) -> u16 {
    let addr = addr.into();
    if addr.table.is_bits() {
        return 1;
    }
    type_width(addr.kind).unwrap_or(addr.count)
}

/// A bit from a coil or discrete input.
pub fn decode_bit(bit: bool) -> Value {
    Value::Boolean(bit)
}

/// The bit a coil or discrete input should show for `value`.
pub fn encode_bit(value: &Value) -> Result<bool, RegisterError> {
    match value {
        Value::Boolean(b) => Ok(*b),
        other => Err(RegisterError::TypeMismatch {
            kind: ModbusType::Bool,
            got: other.value_type(),
        }),
    }
}

/// Decodes a tag's registers (exactly [`register_count`] of them) into its engineering value.
pub fn decode(addr: &ModbusAddress, regs: &[u16]) -> Result<Value, RegisterError> {
    let expected = usize::from(register_count(addr));
    if regs.len() != expected {
        return Err(RegisterError::WrongLength {
            kind: addr.kind,
            expected,
            got: regs.len(),
        });
    }
    let raw = match addr.kind {
        ModbusType::Bool => return Ok(Value::Boolean(regs[0] != 0)),
        ModbusType::String => return Ok(Value::String(decode_string(addr.byte_order, regs))),
        kind => {
            let bits = gather(addr.byte_order, addr.word_order, regs);
            // The `as` casts below truncate to the type's width and reinterpret the sign bit,
            // which is exactly the two's complement / IEEE 754 meaning of the registers.
            match kind {
                ModbusType::U16 => Value::UInt16(bits as u16),
                ModbusType::I16 => Value::Int16(bits as u16 as i16),
                ModbusType::U32 => Value::UInt32(bits as u32),
                ModbusType::I32 => Value::Int32(bits as u32 as i32),
                ModbusType::U64 => Value::UInt64(bits),
                ModbusType::I64 => Value::Int64(bits as i64),
                ModbusType::F32 => Value::Float(f32::from_bits(bits as u32)),
                _ => Value::Double(f64::from_bits(bits)),
            }
        }
    };
    if addr.is_unscaled() {
        return Ok(raw);
    }
    let raw = raw.as_f64().unwrap_or(f64::NAN);
    Ok(Value::Double(raw * addr.scale + addr.offset))
}

/// Appends the registers that make `value` (an engineering value) for the tag: the inverse of
/// [`decode`]. Scale and offset are removed and integers rounded to the nearest; a value the raw
/// type cannot hold is an error. On error nothing is appended.
///
/// Numbers are accepted from any numeric [`Value`] (the receiver may hold a value whose type
/// came from an older catalogue); integers convert exactly, without passing through f64.
pub fn encode(
    addr: &ModbusAddress,
    value: &Value,
    out: &mut Vec<u16>,
) -> Result<(), RegisterError> {
    let kind = addr.kind;
    let mismatch = || RegisterError::TypeMismatch {
        kind,
        got: value.value_type(),
    };
    let n = register_count(addr);
    match kind {
        ModbusType::Bool => {
            let Value::Boolean(b) = value else {
                return Err(mismatch());
            };
            out.push(u16::from(*b));
            return Ok(());
        }
        ModbusType::String => {
            let Value::String(s) = value else {
                return Err(mismatch());
            };
            return encode_string(addr.byte_order, s, n, out);
        }
        _ => {}
    }
    if matches!(
        value,
        Value::String(_) | Value::ByteString(_) | Value::Boolean(_)
    ) {
        return Err(mismatch());
    }
    let bits: u64 = if addr.is_unscaled() {
        match (kind, value) {
            // The plant's bits, as read: through f64 a signalling NaN would come back quiet.
            (ModbusType::F32, Value::Float(f)) => f.to_bits().into(),
            (ModbusType::F32, _) => f64_to_f32(kind, value_f64(value))?.to_bits().into(),
            (ModbusType::F64, _) => value_f64(value).to_bits(),
            _ => {
                let i = match exact_integer(value) {
                    Some(i) => i,
                    None => round_to_i128(kind, value_f64(value))?,
                };
                int_bits(kind, i)?
            }
        }
    } else {
        if addr.scale == 0.0 || !addr.scale.is_finite() || !addr.offset.is_finite() {
            return Err(RegisterError::BadScale { scale: addr.scale });
        }
        let raw = (value_f64(value) - addr.offset) / addr.scale;
        match kind {
            ModbusType::F32 => f64_to_f32(kind, raw)?.to_bits().into(),
            ModbusType::F64 => raw.to_bits(),
            _ => int_bits(kind, round_to_i128(kind, raw)?)?,
        }
    };
    scatter(addr.byte_order, addr.word_order, bits, n, out);
    Ok(())
}

fn value_f64(value: &Value) -> f64 {
    value.as_f64().unwrap_or(f64::NAN)
}

fn exact_integer(value: &Value) -> Option<i128> {
    Some(match *value {
        Value::Int16(v) => v.into(),
        Value::Int32(v) => v.into(),
        Value::Int64(v) => v.into(),
        Value::UInt16(v) => v.into(),
        Value::UInt32(v) => v.into(),
        Value::UInt64(v) => v.into(),
        Value::DateTime(v) => v.into(),
        _ => return None,
    })
}

fn round_to_i128(kind: ModbusType, v: f64) -> Result<i128, RegisterError> {
    if v.is_nan() {
        return Err(RegisterError::NotANumber { kind });
    }
    let r = v.round();
    // Beyond ±2^127 (and for infinities) the cast would saturate; every Modbus integer type is
    // far narrower, so report those as out of range directly.
    if r.abs() >= 1.7e38 {
        return Err(RegisterError::OutOfRange { kind, value: v });
    }
    Ok(r as i128)
}

fn int_bits(kind: ModbusType, i: i128) -> Result<u64, RegisterError> {
    let out_of_range = || RegisterError::OutOfRange {
        kind,
        value: i as f64,
    };
    Ok(match kind {
        ModbusType::U16 => u16::try_from(i).map_err(|_| out_of_range())?.into(),
        ModbusType::I16 => (i16::try_from(i).map_err(|_| out_of_range())? as u16).into(),
        ModbusType::U32 => u32::try_from(i).map_err(|_| out_of_range())?.into(),
        ModbusType::I32 => (i32::try_from(i).map_err(|_| out_of_range())? as u32).into(),
        ModbusType::U64 => u64::try_from(i).map_err(|_| out_of_range())?,
        ModbusType::I64 => i64::try_from(i).map_err(|_| out_of_range())? as u64,
        _ => return Err(out_of_range()),
    })
}

fn f64_to_f32(kind: ModbusType, v: f64) -> Result<f32, RegisterError> {
    let f = v as f32;
    // A finite value beyond f32's range would silently become infinity.
    if v.is_finite() && f.is_infinite() {
        return Err(RegisterError::OutOfRange { kind, value: v });
    }
    Ok(f)
}

fn order_register(byte_order: ByteOrder, r: u16) -> u16 {
    match byte_order {
        ByteOrder::Big => r,
        ByteOrder::Little => r.swap_bytes(),
    }
}

/// Assembles up to four registers into an integer, most significant word first.
fn gather(byte_order: ByteOrder, word_order: WordOrder, regs: &[u16]) -> u64 {
    let words = regs.iter().map(|&r| order_register(byte_order, r));
    let fold = |acc: u64, w: u16| (acc << 16) | u64::from(w);
    match word_order {
        WordOrder::Big => words.fold(0, fold),
        WordOrder::Little => words.rev().fold(0, fold),
    }
}

fn scatter(byte_order: ByteOrder, word_order: WordOrder, bits: u64, n: u16, out: &mut Vec<u16>) {
    let word = |i: u16| order_register(byte_order, (bits >> (16 * u32::from(i))) as u16);
    match word_order {
        WordOrder::Big => out.extend((0..n).rev().map(word)),
        WordOrder::Little => out.extend((0..n).map(word)),
    }
}

fn decode_string(byte_order: ByteOrder, regs: &[u16]) -> String {
    let mut bytes: Vec<u8> = regs
        .iter()
        .flat_map(|&r| order_register(byte_order, r).to_be_bytes())
        .collect();
    while bytes.last() == Some(&0) {
        bytes.pop();
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

fn encode_string(
    byte_order: ByteOrder,
    s: &str,
    registers: u16,
    out: &mut Vec<u16>,
) -> Result<(), RegisterError> {
    let bytes = s.as_bytes();
    if bytes.len() > usize::from(registers) * 2 {
        return Err(RegisterError::StringTooLong {
            bytes: bytes.len(),
            registers,
        });
    }
    for i in 0..usize::from(registers) {
        let hi = bytes.get(2 * i).copied().unwrap_or(0);
        let lo = bytes.get(2 * i + 1).copied().unwrap_or(0);
        out.push(order_register(byte_order, u16::from_be_bytes([hi, lo])));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ModbusTable;
    use proptest::prelude::*;

    fn addr(kind: ModbusType, bo: ByteOrder, wo: WordOrder) -> ModbusAddress {
        ModbusAddress {
            device: "plc".into(),
            unit_id: 1,
            table: ModbusTable::HoldingRegister,
            address: 0,
            kind,
            count: type_width(kind).unwrap_or(4),
            byte_order: bo,
            word_order: wo,
            scale: 1.0,
            offset: 0.0,
        }
    }

    fn enc(a: &ModbusAddress, v: &Value) -> Vec<u16> {
        let mut out = Vec::new();
        encode(a, v, &mut out).unwrap();
        out
    }

    use ByteOrder as B;
    use WordOrder as W;

    #[test]
    fn golden_f32() {
        let one = Value::Float(1.0);
        let cases = [
            (B::Big, W::Big, [0x3F80, 0x0000]),
            (B::Big, W::Little, [0x0000, 0x3F80]),
            (B::Little, W::Big, [0x803F, 0x0000]),
            (B::Little, W::Little, [0x0000, 0x803F]),
        ];
        for (bo, wo, regs) in cases {
            let a = addr(ModbusType::F32, bo, wo);
            assert_eq!(enc(&a, &one), regs, "{bo:?}/{wo:?}");
            assert_eq!(decode(&a, &regs).unwrap(), one, "{bo:?}/{wo:?}");
        }
    }

    #[test]
    fn golden_integers() {
        let a = addr(ModbusType::U32, B::Big, W::Big);
        assert_eq!(
            decode(&a, &[0x1234, 0x5678]).unwrap(),
            Value::UInt32(0x1234_5678)
        );
        let a = addr(ModbusType::U32, B::Big, W::Little);
        assert_eq!(
            decode(&a, &[0x5678, 0x1234]).unwrap(),
            Value::UInt32(0x1234_5678)
        );
        let a = addr(ModbusType::I16, B::Big, W::Big);
        assert_eq!(decode(&a, &[0xFFFE]).unwrap(), Value::Int16(-2));
        let a = addr(ModbusType::I16, B::Little, W::Big);
        assert_eq!(decode(&a, &[0xFEFF]).unwrap(), Value::Int16(-2));
        let a = addr(ModbusType::U64, B::Big, W::Little);
        assert_eq!(enc(&a, &Value::UInt64(0x0001_0002_0003_0004)), [4, 3, 2, 1]);
        let a = addr(ModbusType::I64, B::Big, W::Big);
        assert_eq!(enc(&a, &Value::Int64(-1)), [0xFFFF; 4]);
        let a = addr(ModbusType::F64, B::Big, W::Big);
        assert_eq!(enc(&a, &Value::Double(1.0)), [0x3FF0, 0, 0, 0]);
    }

    #[test]
    fn scaling_applies_and_inverts() {
        let mut a = addr(ModbusType::I16, B::Big, W::Big);
        a.scale = 0.1;
        a.offset = -40.0;
        assert_eq!(value_type(&a), ValueType::Double);
        // 653 × 0.1 − 40 = 25.3
        let v = decode(&a, &[653]).unwrap();
        let Value::Double(d) = v else { panic!("{v:?}") };
        assert!((d - 25.3).abs() < 1e-9);
        assert_eq!(enc(&a, &Value::Double(25.3)), [653]);
        // Rounds to the nearest raw step.
        assert_eq!(enc(&a, &Value::Double(25.34)), [653]);
        // −32768 × 0.1 − 40 = −3316.8 is the lowest representable value.
        let mut out = Vec::new();
        assert!(matches!(
            encode(&a, &Value::Double(-3400.0), &mut out),
            Err(RegisterError::OutOfRange { .. })
        ));
        assert!(out.is_empty(), "nothing appended on error");
    }

    #[test]
    fn strings_pad_trim_and_swap() {
        let mut a = addr(ModbusType::String, B::Big, W::Big);
        a.count = 3;
        assert_eq!(
            enc(&a, &Value::String("ABC".into())),
            [0x4142, 0x4300, 0x0000]
        );
        assert_eq!(
            decode(&a, &[0x4142, 0x4300, 0x0000]).unwrap(),
            Value::String("ABC".into())
        );
        a.byte_order = B::Little;
        assert_eq!(
            enc(&a, &Value::String("ABC".into())),
            [0x4241, 0x0043, 0x0000]
        );
        let mut out = Vec::new();
        assert_eq!(
            encode(&a, &Value::String("ABCDEFG".into()), &mut out),
            Err(RegisterError::StringTooLong {
                bytes: 7,
                registers: 3
            })
        );
        // Invalid UTF-8 decodes lossily instead of failing.
        a.byte_order = B::Big;
        assert_eq!(
            decode(&a, &[0x41FF, 0, 0]).unwrap(),
            Value::String("A\u{FFFD}".into())
        );
    }

    #[test]
    fn wrong_length_and_type_are_errors() {
        let a = addr(ModbusType::F64, B::Big, W::Big);
        assert_eq!(
            decode(&a, &[1, 2, 3]),
            Err(RegisterError::WrongLength {
                kind: ModbusType::F64,
                expected: 4,
                got: 3
            })
        );
        let mut out = Vec::new();
        assert!(matches!(
            encode(&a, &Value::String("x".into()), &mut out),
            Err(RegisterError::TypeMismatch { .. })
        ));
        let a = addr(ModbusType::U16, B::Big, W::Big);
        assert!(matches!(
            encode(&a, &Value::Int32(-1), &mut out),
            Err(RegisterError::OutOfRange { .. })
        ));
        assert!(matches!(
            encode(&a, &Value::Double(f64::NAN), &mut out),
            Err(RegisterError::NotANumber { .. })
        ));
        assert!(matches!(
            encode(&a, &Value::Double(f64::INFINITY), &mut out),
            Err(RegisterError::OutOfRange { .. })
        ));
        let a = addr(ModbusType::F32, B::Big, W::Big);
        assert!(matches!(
            encode(&a, &Value::Double(1e300), &mut out),
            Err(RegisterError::OutOfRange { .. })
        ));
        assert!(out.is_empty());
    }

    #[test]
    fn signalling_nan_keeps_its_bits() {
        // 0xFF90_0000 is a signalling NaN: converted through f64 it would come back quiet
        // (0xFFD0_0000), and the mirror would serve other registers than the PLC's.
        let a = addr(ModbusType::F32, B::Big, W::Big);
        let regs = [0xFF90, 0x0000];
        let v = decode(&a, &regs).unwrap();
        assert_eq!(enc(&a, &v), regs);
    }

    #[test]
    fn bools_and_bits() {
        let a = addr(ModbusType::Bool, B::Big, W::Big);
        assert_eq!(decode(&a, &[0]).unwrap(), Value::Boolean(false));
        assert_eq!(decode(&a, &[7]).unwrap(), Value::Boolean(true));
        assert_eq!(enc(&a, &Value::Boolean(true)), [1]);
        assert_eq!(decode_bit(true), Value::Boolean(true));
        assert_eq!(encode_bit(&Value::Boolean(false)), Ok(false));
        assert!(encode_bit(&Value::Int16(1)).is_err());
    }

    fn order() -> impl Strategy<Value = (ByteOrder, WordOrder)> {
        (
            prop_oneof![Just(B::Big), Just(B::Little)],
            prop_oneof![Just(W::Big), Just(W::Little)],
        )
    }

    fn typed_value() -> impl Strategy<Value = (ModbusType, Value)> {
        prop_oneof![
            any::<bool>().prop_map(|v| (ModbusType::Bool, Value::Boolean(v))),
            any::<u16>().prop_map(|v| (ModbusType::U16, Value::UInt16(v))),
            any::<i16>().prop_map(|v| (ModbusType::I16, Value::Int16(v))),
            any::<u32>().prop_map(|v| (ModbusType::U32, Value::UInt32(v))),
            any::<i32>().prop_map(|v| (ModbusType::I32, Value::Int32(v))),
            any::<u64>().prop_map(|v| (ModbusType::U64, Value::UInt64(v))),
            any::<i64>().prop_map(|v| (ModbusType::I64, Value::Int64(v))),
            any::<f32>().prop_map(|v| (ModbusType::F32, Value::Float(v))),
            any::<f64>().prop_map(|v| (ModbusType::F64, Value::Double(v))),
            // No trailing NULs: those are padding by definition.
            "[a-zA-Z0-9 /._\u{e9}\u{4e2d}-]{0,16}"
                .prop_map(|s| (ModbusType::String, Value::String(s))),
        ]
    }

    /// Floats compared by bits, so NaN round trips count.
    fn same(a: &Value, b: &Value) -> bool {
        match (a, b) {
            (Value::Float(x), Value::Float(y)) => x.to_bits() == y.to_bits(),
            (Value::Double(x), Value::Double(y)) => x.to_bits() == y.to_bits(),
            _ => a == b,
        }
    }

    proptest! {
        #[test]
        fn unscaled_round_trip((kind, v) in typed_value(), (bo, wo) in order()) {
            let mut a = addr(kind, bo, wo);
            if kind == ModbusType::String {
                a.count = 24; // 48 bytes: room for 16 chars of up to 3 bytes
            }
            prop_assert_eq!(value_type(&a), v.value_type());
            let regs = enc(&a, &v);
            prop_assert_eq!(regs.len(), usize::from(register_count(&a)));
            let back = decode(&a, &regs).unwrap();
            prop_assert!(same(&back, &v), "{:?} -> {:?} -> {:?}", v, regs, back);
        }

        #[test]
        fn unscaled_registers_round_trip(
            kind in prop_oneof![
                Just(ModbusType::U16), Just(ModbusType::I16), Just(ModbusType::U32),
                Just(ModbusType::I32), Just(ModbusType::U64), Just(ModbusType::I64),
                Just(ModbusType::F32), Just(ModbusType::F64),
            ],
            regs in proptest::collection::vec(any::<u16>(), 4),
            (bo, wo) in order(),
        ) {
            let a = addr(kind, bo, wo);
            let regs = &regs[..usize::from(register_count(&a))];
            let v = decode(&a, regs).unwrap();
            prop_assert_eq!(enc(&a, &v), regs);
        }

        /// Scaled integers: the raw registers survive decode then encode, since the f64
        /// arithmetic error is far below half a raw step for 32-bit raw values.
        #[test]
        fn scaled_registers_round_trip(
            kind in prop_oneof![
                Just(ModbusType::U16), Just(ModbusType::I16), Just(ModbusType::U32),
                Just(ModbusType::I32), Just(ModbusType::F32),
            ],
            regs in proptest::collection::vec(any::<u16>(), 2),
            (bo, wo) in order(),
            scale in prop_oneof![Just(0.1), Just(0.01), Just(2.5), Just(-0.5), Just(1e-3)],
            offset in -1000.0f64..1000.0,
        ) {
            let mut a = addr(kind, bo, wo);
            a.scale = scale;
            a.offset = offset;
            let regs = &regs[..usize::from(register_count(&a))];
            let v = decode(&a, regs).unwrap();
            if kind == ModbusType::F32 {
                let raw = decode(&addr(kind, bo, wo), regs).unwrap();
                // Only well-behaved floats: NaN/inf and extremes lose their bits through f64
                // arithmetic, which is not what the mirror will meet in practice.
                let Value::Float(f) = raw else { unreachable!() };
                prop_assume!(f.is_finite() && (f == 0.0 || f.abs() > 1e-30) && f.abs() < 1e30);
                prop_assume!(f.abs() as f64 * scale.abs() > offset.abs() * 1e-6);
            }
            prop_assert_eq!(enc(&a, &v), regs, "value {:?}", v);
        }

        #[test]
        fn decode_never_panics(
            kind in prop_oneof![
                Just(ModbusType::Bool), Just(ModbusType::U16), Just(ModbusType::I64),
                Just(ModbusType::F32), Just(ModbusType::String),
            ],
            regs in proptest::collection::vec(any::<u16>(), 0..8),
            count in 0u16..8,
        ) {
            let mut a = addr(kind, B::Big, W::Little);
            a.count = count;
            let _ = decode(&a, &regs);
        }
    }
}
