//! The receiver's configuration, as the rest of the program sees it once validated.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Validated `gateway-rx` configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct RxConfig {
    pub link: RxLink,
    pub modbus_server: Option<ModbusServer>,
    pub status: Status,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RxLink {
    /// Address the receiver listens on for datagrams from the diode.
    pub bind: SocketAddr,
    pub key: Option<[u8; 32]>,
    pub key_file: Option<PathBuf>,
    /// The link is declared down when no heartbeat arrived for this long.
    pub heartbeat_timeout: Duration,
    /// Socket receive buffer to ask the kernel for.
    pub recv_buffer_bytes: usize,
    /// How many datagrams the receiver may hold waiting for reordering and FEC repair.
    pub reorder_window: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModbusServer {
    pub bind: SocketAddr,
    /// What a read of a register whose tag has Bad quality answers.
    pub on_bad_quality: OnBadQuality,
    /// Serve a source device under another unit id: (device name, unit id). Devices not listed
    /// keep the unit id they have on the source.
    pub unit_map: Vec<(String, u8)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnBadQuality {
    /// Answer Modbus exception 04 (server device failure).
    Exception,
    /// Answer the last value received, whatever its quality.
    LastValue,
    /// Answer zero.
    Zero,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    /// A summary line (link state, counters) is logged this often.
    pub log_interval: Duration,
}
