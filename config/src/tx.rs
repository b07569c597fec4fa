//! The transmitter's configuration, as the rest of the program sees it once validated.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use protocol::model::{ByteOrder, ModbusTable, ModbusType, WordOrder};

/// Validated `gateway-tx` configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct TxConfig {
    pub link: TxLink,
    pub devices: Vec<ModbusDevice>,
    /// SHA-256 (first 8 bytes, big-endian) of the file's bytes; sent in heartbeats.
    pub config_hash: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TxLink {
    /// Where the receiver listens (across the diode).
    pub destination: SocketAddr,
    /// Local address to send from; `0.0.0.0:0` by default.
    pub bind: SocketAddr,
    /// Link MTU in bytes (IP packet size); datagrams are sized to fit it.
    pub mtu: u16,
    /// Configured link rate in bits per second; the pacer never exceeds it.
    pub rate_bps: u64,
    pub fec: FecShape,
    /// Pre-shared key (32 bytes) read from the key file, when one is configured.
    pub key: Option<[u8; 32]>,
    pub key_file: Option<PathBuf>,
    pub heartbeat_interval: Duration,
    /// The full catalogue is re-sent this often (and on start and change).
    pub catalogue_interval: Duration,
    /// Every current value is re-sent once per this period, spread evenly over it.
    pub snapshot_period: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FecShape {
    pub data_shards: u16,
    pub repair_shards: u16,
    /// Number of FEC groups interleaved, against bursts of loss.
    pub interleave: u16,
    /// A group that is not full after this long is closed and sent anyway.
    pub flush: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModbusDevice {
    pub name: String,
    pub host: String,
    pub port: u16,
    pub unit_id: u8,
    pub poll_interval: Duration,
    pub timeout: Duration,
    pub tags: Vec<ModbusTag>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModbusTag {
    pub name: String,
    pub table: ModbusTable,
    pub address: u16,
    pub kind: ModbusType,
    /// Registers (or bits) occupied; derived from the type, or the configured length for strings.
    pub count: u16,
    pub byte_order: ByteOrder,
    pub word_order: WordOrder,
    pub scale: f64,
    pub offset: f64,
    /// A new value is reported only when it differs from the last reported one by more than
    /// this (absolute, in engineering units). 0 reports every change.
    pub deadband: f64,
    pub unit: String,
    pub description: String,
}
