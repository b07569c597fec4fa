//! Shared harness of the gateway-rx fuzz targets: reading structured values out of the
//! fuzzer's bytes.

use protocol::model::{Quality, Value, ValueType};

/// Reads fields from the fuzzer's input; past its end every read gives zeros, so any input
/// decodes to something.
pub struct Input<'a> {
    bytes: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Input { bytes }
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// What is left, taking it all.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.bytes)
    }

    pub fn u8(&mut self) -> u8 {
        match self.bytes.split_first() {
            Some((&b, rest)) => {
                self.bytes = rest;
                b
            }
            None => 0,
        }
    }

    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.bytes.split_at(n.min(self.bytes.len()));
        self.bytes = rest;
        head
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }

    pub fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    pub fn u64(&mut self) -> u64 {
        (u64::from(self.u32()) << 32) | u64::from(self.u32())
    }

    /// A string of fewer than `max` bytes of input (lossy UTF-8, so any bytes give one).
    pub fn text(&mut self, max: u8) -> String {
        let n = usize::from(self.u8() % max.max(1));
        String::from_utf8_lossy(self.bytes(n)).into_owned()
    }

    pub fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[usize::from(self.u8()) % from.len()]
    }

    /// A value of type `t`, any bits (NaN, infinities, extreme times and odd strings).
    pub fn value(&mut self, t: ValueType) -> Value {
        match t {
            ValueType::Boolean => Value::Boolean(self.u8() & 1 != 0),
            ValueType::Int16 => Value::Int16(self.u16() as i16),
            ValueType::Int32 => Value::Int32(self.u32() as i32),
            ValueType::Int64 => Value::Int64(self.u64() as i64),
            ValueType::UInt16 => Value::UInt16(self.u16()),
            ValueType::UInt32 => Value::UInt32(self.u32()),
            ValueType::UInt64 => Value::UInt64(self.u64()),
            ValueType::Float => Value::Float(f32::from_bits(self.u32())),
            ValueType::Double => Value::Double(f64::from_bits(self.u64())),
            ValueType::String => Value::String(self.text(40)),
            ValueType::DateTime => Value::DateTime(self.u64() as i64),
            ValueType::ByteString => {
                let n = usize::from(self.u8() % 24);
                Value::ByteString(self.bytes(n).to_vec())
            }
        }
    }

    /// A quality: the codes the gateway produces, or any 32 bits.
    pub fn quality(&mut self) -> Quality {
        match self.u8() % 6 {
            0 => Quality::GOOD,
            1 => Quality::UNCERTAIN_NO_COMMUNICATION_LAST_USABLE_VALUE,
            2 => Quality::BAD_NO_COMMUNICATION,
            3 => Quality::BAD_DEVICE_FAILURE,
            _ => Quality(self.u32()),
        }
    }
}

pub const VALUE_TYPES: [ValueType; 12] = [
    ValueType::Boolean,
    ValueType::Int16,
    ValueType::Int32,
    ValueType::Int64,
    ValueType::UInt16,
    ValueType::UInt32,
    ValueType::UInt64,
    ValueType::Float,
    ValueType::Double,
    ValueType::String,
    ValueType::DateTime,
    ValueType::ByteString,
];
