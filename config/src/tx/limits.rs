//! Defaults and limits of the TX schema, for the daemons and for documentation.

/// Smallest accepted link MTU: the IPv4 minimum every host must accept.
pub const MTU_MIN: u16 = 576;
/// IPv6 links have a minimum MTU of 1280 (RFC 8200).
pub const MTU_MIN_IPV6: u16 = 1280;
pub const MTU_DEFAULT: u16 = 1500;
/// IPv4 and UDP headers: a datagram's payload is at most `mtu` minus this. (gateway-tx
/// sizes datagrams the same way.)
pub const IP_UDP_OVERHEAD: usize = 28;
/// The protocol's header and CRC32 on every datagram (protocol's `wire::overhead` without
/// a key; a key adds a MAC, which only makes shards smaller, so checks made with this are
/// on the safe side).
pub const DATAGRAM_OVERHEAD: usize = 42;
pub const RATE_MBIT_DEFAULT: f64 = 100.0;
pub const RATE_MBIT_MAX: f64 = 100_000.0;
pub const HEARTBEAT_MS_DEFAULT: u64 = 1000;
pub const CATALOGUE_INTERVAL_S_DEFAULT: u64 = 30;
pub const SNAPSHOT_PERIOD_S_DEFAULT: u64 = 10;
pub const DATA_SHARDS_DEFAULT: u16 = 64;
pub const REPAIR_SHARDS_DEFAULT: u16 = 16;
/// Data plus repair shards of one FEC group (the protocol's `fec::MAX_GROUP_SHARDS`; shard
/// indices are 16-bit on the wire and the Reed-Solomon code supports every shape below it).
pub const GROUP_SHARDS_MAX: u16 = 4096;
pub const INTERLEAVE_DEFAULT: u16 = 4;
pub const INTERLEAVE_MAX: u16 = 64;
pub const FLUSH_MS_DEFAULT: u64 = 5;
/// The protocol's `encoder::DEFAULT_BLOCK_SPAN`.
pub const BLOCK_MS_DEFAULT: u64 = 50;
/// A receiver waits 200 ms for a gap to be repaired (`decoder::DEFAULT_GROUP_TIMEOUT`): a
/// block must close, and its repair arrive, well within that.
pub const BLOCK_MS_MAX: u64 = 150;
/// Bytes of one FEC group, (data + repair) × shard bytes (the protocol's
/// `fec::MAX_GROUP_BYTES`): what a receiver must buffer and decode at once.
pub const GROUP_BYTES_MAX: u64 = 32 << 20;
/// Bytes of one interleaved block, group bytes × interleave (the protocol's
/// `encoder::MAX_BLOCK_BYTES`): what each side buffers to encode or repair it.
pub const BLOCK_BYTES_MAX: u64 = 256 << 20;
pub const PORT_DEFAULT: u16 = 502;
pub const UNIT_ID_DEFAULT: u8 = 1;
pub const POLL_INTERVAL_MS_DEFAULT: u64 = 1000;
pub const POLL_INTERVAL_MS_MIN: u64 = 10;
pub const TIMEOUT_MS_DEFAULT: u64 = 1000;
pub const TIMEOUT_MS_MAX: u64 = 60_000;
/// Modbus reads at most 125 registers at once; a string must fit one read.
pub const STRING_LENGTH_MAX: u16 = 125;
pub const HISTORY_DIR_DEFAULT: &str = "/var/lib/gateway/tx-history";
/// Where the transmitter keeps the epoch of its last start (see `protocol::epoch`).
pub const TX_STATE_FILE_DEFAULT: &str = "/var/lib/gateway/tx-link.state";
pub const HISTORY_MAX_BYTES_DEFAULT: u64 = 4 << 30;
pub const HISTORY_MAX_BYTES_MIN: u64 = 1 << 20;
pub const HISTORY_MAX_BYTES_MAX: u64 = 1 << 50;
pub const HISTORY_MAX_AGE_S_DEFAULT: u64 = 7 * 86_400;
pub const HISTORY_MAX_AGE_S_MIN: u64 = 60;
pub const HISTORY_MAX_AGE_S_MAX: u64 = 10 * 365 * 86_400;
pub const CAROUSEL_SHARE_DEFAULT: f64 = 0.1;
pub const CAROUSEL_SHARE_MAX: f64 = 0.9;
pub const CAROUSEL_WINDOW_S_DEFAULT: u64 = 300;
pub const CAROUSEL_WINDOW_S_MAX: u64 = 86_400;
