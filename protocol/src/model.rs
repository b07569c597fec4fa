//! The data model shared by every crate: value types, values, qualities, tags and samples.
//!
//! These types travel on the link (through the codec) and are what both daemons and the config
//! crate speak, so they are defined here once.

use serde::{Deserialize, Serialize};

/// Nanoseconds since the Unix epoch, UTC. Signed so that dates before 1970 (which OPC UA
/// DateTime can express) survive a round trip.
pub type UnixNanos = i64;

/// OPC UA built-in types that a tag can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ValueType {
    Boolean,
    Int16,
    Int32,
    Int64,
    UInt16,
    UInt32,
    UInt64,
    Float,
    Double,
    String,
    DateTime,
    ByteString,
}

/// A value of one of the [`ValueType`]s.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Value {
    Boolean(bool),
    Int16(i16),
    Int32(i32),
    Int64(i64),
    UInt16(u16),
    UInt32(u32),
    UInt64(u64),
    Float(f32),
    Double(f64),
    String(String),
    DateTime(UnixNanos),
    ByteString(Vec<u8>),
}

/// The largest String or ByteString value the gateway carries, in bytes: 65,535, the default
/// string limit of OPC UA stacks, so that every value the mirror serves can be read by an IT
/// client with its default settings. A larger one (an OPC UA server may hold any size) is
/// refused where it enters, at the source, as Quality [`Quality::BAD_ENCODING_LIMITS_EXCEEDED`],
/// and the tag keeps its last value. Larger content belongs in a file.
pub const MAX_VALUE_BYTES: usize = 65_535;

impl Value {
    pub fn value_type(&self) -> ValueType {
        match self {
            Value::Boolean(_) => ValueType::Boolean,
            Value::Int16(_) => ValueType::Int16,
            Value::Int32(_) => ValueType::Int32,
            Value::Int64(_) => ValueType::Int64,
            Value::UInt16(_) => ValueType::UInt16,
            Value::UInt32(_) => ValueType::UInt32,
            Value::UInt64(_) => ValueType::UInt64,
            Value::Float(_) => ValueType::Float,
            Value::Double(_) => ValueType::Double,
            Value::String(_) => ValueType::String,
            Value::DateTime(_) => ValueType::DateTime,
            Value::ByteString(_) => ValueType::ByteString,
        }
    }

    /// Bytes of a String or ByteString value; 0 for the fixed-size types.
    pub fn byte_len(&self) -> usize {
        match self {
            Value::String(s) => s.len(),
            Value::ByteString(b) => b.len(),
            _ => 0,
        }
    }

    /// The value as a number, for deadbands and scaling; `None` for strings and byte strings.
    pub fn as_f64(&self) -> Option<f64> {
        Some(match *self {
            Value::Boolean(b) => f64::from(u8::from(b)),
            Value::Int16(v) => f64::from(v),
            Value::Int32(v) => f64::from(v),
            Value::Int64(v) => v as f64,
            Value::UInt16(v) => f64::from(v),
            Value::UInt32(v) => f64::from(v),
            Value::UInt64(v) => v as f64,
            Value::Float(v) => f64::from(v),
            Value::Double(v) => v,
            Value::DateTime(v) => v as f64,
            Value::String(_) | Value::ByteString(_) => return None,
        })
    }
}

/// An OPC UA StatusCode. The top two bits give the severity (00 Good, 01 Uncertain, 10 Bad);
/// the sub-code says why. Kept as the raw 32-bit code so it maps 1:1 to every sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Quality(pub u32);

impl Quality {
    pub const GOOD: Quality = Quality(0x0000_0000);
    pub const UNCERTAIN: Quality = Quality(0x4000_0000);
    pub const UNCERTAIN_NO_COMMUNICATION_LAST_USABLE_VALUE: Quality = Quality(0x408F_0000);
    pub const UNCERTAIN_LAST_USABLE_VALUE: Quality = Quality(0x4090_0000);
    pub const BAD: Quality = Quality(0x8000_0000);
    pub const BAD_INTERNAL_ERROR: Quality = Quality(0x8002_0000);
    /// A value larger than [`MAX_VALUE_BYTES`]: not carried; the tag keeps its last value.
    pub const BAD_ENCODING_LIMITS_EXCEEDED: Quality = Quality(0x8008_0000);
    pub const BAD_COMMUNICATION_ERROR: Quality = Quality(0x8005_0000);
    pub const BAD_DECODING_ERROR: Quality = Quality(0x8007_0000);
    pub const BAD_TIMEOUT: Quality = Quality(0x800A_0000);
    pub const BAD_NO_COMMUNICATION: Quality = Quality(0x8031_0000);
    pub const BAD_WAITING_FOR_INITIAL_DATA: Quality = Quality(0x8032_0000);
    pub const BAD_NODE_ID_UNKNOWN: Quality = Quality(0x8034_0000);
    pub const BAD_NOT_READABLE: Quality = Quality(0x803A_0000);
    pub const BAD_NOT_SUPPORTED: Quality = Quality(0x803D_0000);
    pub const BAD_OUT_OF_RANGE: Quality = Quality(0x803C_0000);
    pub const BAD_CONFIGURATION_ERROR: Quality = Quality(0x8089_0000);
    pub const BAD_NOT_CONNECTED: Quality = Quality(0x808A_0000);
    pub const BAD_DEVICE_FAILURE: Quality = Quality(0x808B_0000);
    pub const BAD_OUT_OF_SERVICE: Quality = Quality(0x808D_0000);

    pub fn is_good(self) -> bool {
        self.0 & 0xC000_0000 == 0
    }
    pub fn is_uncertain(self) -> bool {
        self.0 & 0xC000_0000 == 0x4000_0000
    }
    pub fn is_bad(self) -> bool {
        self.0 & 0x8000_0000 != 0
    }

    /// The symbolic name for the codes we produce, for logs and status pages.
    pub fn name(self) -> &'static str {
        match self {
            Quality::GOOD => "Good",
            Quality::UNCERTAIN => "Uncertain",
            Quality::UNCERTAIN_NO_COMMUNICATION_LAST_USABLE_VALUE => {
                "UncertainNoCommunicationLastUsableValue"
            }
            Quality::UNCERTAIN_LAST_USABLE_VALUE => "UncertainLastUsableValue",
            Quality::BAD => "Bad",
            Quality::BAD_INTERNAL_ERROR => "BadInternalError",
            Quality::BAD_ENCODING_LIMITS_EXCEEDED => "BadEncodingLimitsExceeded",
            Quality::BAD_COMMUNICATION_ERROR => "BadCommunicationError",
            Quality::BAD_DECODING_ERROR => "BadDecodingError",
            Quality::BAD_TIMEOUT => "BadTimeout",
            Quality::BAD_NO_COMMUNICATION => "BadNoCommunication",
            Quality::BAD_WAITING_FOR_INITIAL_DATA => "BadWaitingForInitialData",
            Quality::BAD_NODE_ID_UNKNOWN => "BadNodeIdUnknown",
            Quality::BAD_NOT_READABLE => "BadNotReadable",
            Quality::BAD_NOT_SUPPORTED => "BadNotSupported",
            Quality::BAD_OUT_OF_RANGE => "BadOutOfRange",
            Quality::BAD_CONFIGURATION_ERROR => "BadConfigurationError",
            Quality::BAD_NOT_CONNECTED => "BadNotConnected",
            Quality::BAD_DEVICE_FAILURE => "BadDeviceFailure",
            Quality::BAD_OUT_OF_SERVICE => "BadOutOfService",
            q if q.is_good() => "Good(other)",
            q if q.is_uncertain() => "Uncertain(other)",
            _ => "Bad(other)",
        }
    }
}

/// The four Modbus data tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ModbusTable {
    Coil,
    DiscreteInput,
    HoldingRegister,
    InputRegister,
}

impl ModbusTable {
    pub fn is_bits(self) -> bool {
        matches!(self, ModbusTable::Coil | ModbusTable::DiscreteInput)
    }
}

/// How a Modbus tag's raw registers are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ModbusType {
    Bool,
    U16,
    I16,
    U32,
    I32,
    U64,
    I64,
    F32,
    F64,
    /// ASCII/UTF-8 text packed two bytes per register; `length` registers long.
    String,
}

/// Byte order inside one 16-bit register. Modbus itself is big-endian; some devices swap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ByteOrder {
    Big,
    Little,
}

/// Order of the 16-bit registers of a multi-register value: `Big` puts the most significant
/// word at the lowest address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum WordOrder {
    Big,
    Little,
}

/// Where a Modbus tag lives on its device and how its registers turn into a value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModbusAddress {
    /// The device's name in the transmitter's config.
    pub device: String,
    pub unit_id: u8,
    pub table: ModbusTable,
    pub address: u16,
    pub kind: ModbusType,
    /// Number of registers (or bits) the tag occupies; for strings the configured length.
    pub count: u16,
    pub byte_order: ByteOrder,
    pub word_order: WordOrder,
    /// Engineering value = raw × scale + offset.
    pub scale: f64,
    pub offset: f64,
}

impl ModbusAddress {
    /// Whether scale and offset leave the raw value unchanged.
    pub fn is_unscaled(&self) -> bool {
        self.scale == 1.0 && self.offset == 0.0
    }
}

/// Where a tag's values come from on the OT side.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SourceAddress {
    Modbus(ModbusAddress),
    OpcUa {
        endpoint: String,
        node_id: String,
    },
    /// A source type this build does not know in detail; kept as text.
    Other(String),
}

/// One entry of the catalogue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TagInfo {
    /// Path-like name, e.g. `site/area/line/pump3/speed`.
    pub name: String,
    pub value_type: ValueType,
    pub unit: String,
    pub description: String,
    pub source: SourceAddress,
}

/// Index of a tag in the catalogue version named by a catalogue hash.
pub type TagIndex = u32;

/// One observation of one tag.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub tag: TagIndex,
    pub value: Value,
    pub quality: Quality,
    /// Source timestamp.
    pub time: UnixNanos,
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Boolean(v) => write!(f, "{v}"),
            Value::Int16(v) => write!(f, "{v}"),
            Value::Int32(v) => write!(f, "{v}"),
            Value::Int64(v) => write!(f, "{v}"),
            Value::UInt16(v) => write!(f, "{v}"),
            Value::UInt32(v) => write!(f, "{v}"),
            Value::UInt64(v) => write!(f, "{v}"),
            Value::Float(v) => write!(f, "{v}"),
            Value::Double(v) => write!(f, "{v}"),
            Value::String(v) => write!(f, "{v:?}"),
            Value::DateTime(v) => write!(f, "{v} ns"),
            Value::ByteString(v) => {
                for b in v {
                    write!(f, "{b:02x}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::fmt::Display for Quality {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (0x{:08X})", self.name(), self.0)
    }
}
