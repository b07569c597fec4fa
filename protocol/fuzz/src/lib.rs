//! Shared harness of the protocol fuzz targets: reading structured values out of the fuzzer's
//! bytes.

use protocol::model::{
    ByteOrder, ModbusAddress, ModbusTable, ModbusType, SourceAddress, TagInfo, ValueType, WordOrder,
};

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

    /// A string of up to `max` bytes (lossy UTF-8, so any bytes give one).
    pub fn text(&mut self, max: u8) -> String {
        let n = usize::from(self.u8() % max.max(1));
        String::from_utf8_lossy(self.bytes(n)).into_owned()
    }

    pub fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[usize::from(self.u8()) % from.len()]
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

/// A catalogue entry; names are short and often repeat, so lookups by name meet duplicates.
pub fn tag_info(input: &mut Input<'_>) -> TagInfo {
    let kind = input.u8();
    let name = match kind & 3 {
        0 => format!("site/line{}/tag", input.u8() % 8),
        _ => input.text(24),
    };
    let source = match kind >> 2 & 3 {
        0 => SourceAddress::OpcUa {
            endpoint: input.text(12),
            node_id: input.text(12),
        },
        1 => SourceAddress::Other(input.text(12)),
        _ => SourceAddress::Modbus(ModbusAddress {
            device: input.text(8),
            unit_id: input.u8(),
            table: input.pick(&[
                ModbusTable::Coil,
                ModbusTable::DiscreteInput,
                ModbusTable::HoldingRegister,
                ModbusTable::InputRegister,
            ]),
            address: input.u16(),
            kind: input.pick(&[
                ModbusType::Bool,
                ModbusType::U16,
                ModbusType::I16,
                ModbusType::U32,
                ModbusType::I32,
                ModbusType::U64,
                ModbusType::I64,
                ModbusType::F32,
                ModbusType::F64,
                ModbusType::String,
            ]),
            count: input.u16(),
            byte_order: input.pick(&[ByteOrder::Big, ByteOrder::Little]),
            word_order: input.pick(&[WordOrder::Big, WordOrder::Little]),
            // Any bits, NaN included: the link is not trusted.
            scale: f64::from_bits(input.u64()),
            offset: f64::from_bits(input.u64()),
        }),
    };
    TagInfo {
        name,
        value_type: input.pick(&VALUE_TYPES),
        unit: input.text(6),
        description: input.text(12),
        source,
    }
}
