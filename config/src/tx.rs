//! The transmitter's configuration, as the rest of the program sees it once validated.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use crate::http::HttpServer;

use protocol::model::{ByteOrder, ModbusTable, ModbusType, WordOrder};

/// Validated `gateway-tx` configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct TxConfig {
    pub link: TxLink,
    pub devices: Vec<ModbusDevice>,
    /// `[[opcua]]`: OPC UA servers read by subscription or polling, in file order (their tags
    /// follow the Modbus tags in the catalogue).
    pub opcua: Vec<crate::opcua::OpcUaEndpoint>,
    /// `[http]`: the operators' HTTP server (metrics, health, status page); `None`: off.
    pub http: Option<HttpServer>,
    /// `[history]`: the history stream and its on-disk buffer; `None` when the table is absent
    /// (the transmitter then sends live values only).
    pub history: Option<History>,
    /// SHA-256 (first 8 bytes, big-endian) of the file's bytes; sent in heartbeats.
    pub config_hash: u64,
}

/// The history stream: every accepted sample is appended to a bounded on-disk buffer and sent
/// with its own sequence number; recent windows are re-sent by the carousel.
#[derive(Debug, Clone, PartialEq)]
pub struct History {
    /// Directory of the buffer's segment files (created if missing). A relative path is
    /// relative to the config file's directory.
    pub dir: PathBuf,
    /// The buffer's size limit; the oldest segments are deleted beyond it.
    pub max_bytes: u64,
    /// Segments older than this are deleted.
    pub max_age: Duration,
    /// Share of the link rate the carousel (and operator backfills) may use, 0 < share <= 0.9.
    pub carousel_share: f64,
    /// The carousel re-sends the samples appended within this long, oldest first, over and over.
    pub carousel_window: Duration,
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
    /// `insecure_no_key = true`: no key, by the operator's explicit choice (warned about at
    /// every start and on the status page).
    pub insecure_no_key: bool,
    /// Where the link state survives restarts: the transmitter's session epoch.
    pub state_file: PathBuf,
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
    /// A data datagram that is not full after this long is sent anyway.
    pub flush: Duration,
    /// A block of groups that is not full after this long is closed and its repair shards
    /// sent; at least `flush`.
    pub block_span: Duration,
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

// ---------------------------------------------------------------------------------------------
// Loading and validation.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use crate::error::ConfigError;
use crate::walk::{At, Ctx, Req, Tbl};
use crate::{common, keyfile};

/// Defaults and limits of the TX schema, for the daemons and for documentation.
pub mod limits {
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
}
use limits::*;

const LINK_KEYS: &[&str] = &[
    "destination",
    "bind",
    "mtu",
    "rate_mbit",
    "key_file",
    "insecure_no_key",
    "state_file",
    "heartbeat_ms",
    "catalogue_interval_s",
    "snapshot_period_s",
    "fec",
];
const FEC_KEYS: &[&str] = &[
    "data_shards",
    "repair_shards",
    "interleave",
    "flush_ms",
    "block_ms",
];
const HISTORY_KEYS: &[&str] = &[
    "dir",
    "max_bytes",
    "max_age_s",
    "carousel_share",
    "carousel_window_s",
];
const DEVICE_KEYS: &[&str] = &[
    "name",
    "host",
    "port",
    "unit_id",
    "poll_interval_ms",
    "timeout_ms",
    "tag",
];
const TAG_KEYS: &[&str] = &[
    "name",
    "table",
    "address",
    "type",
    "length",
    "byte_order",
    "word_order",
    "scale",
    "offset",
    "deadband",
    "unit",
    "description",
];

const TABLES: &[(&str, ModbusTable)] = &[
    ("coil", ModbusTable::Coil),
    ("discrete", ModbusTable::DiscreteInput),
    ("holding", ModbusTable::HoldingRegister),
    ("input", ModbusTable::InputRegister),
];
const TYPES: &[(&str, ModbusType)] = &[
    ("bool", ModbusType::Bool),
    ("u16", ModbusType::U16),
    ("i16", ModbusType::I16),
    ("u32", ModbusType::U32),
    ("i32", ModbusType::I32),
    ("u64", ModbusType::U64),
    ("i64", ModbusType::I64),
    ("f32", ModbusType::F32),
    ("f64", ModbusType::F64),
    ("string", ModbusType::String),
];
/// Names other tools use, for suggestions.
const TABLE_ALIASES: &[(&str, &str)] = &[
    ("coils", "coil"),
    ("discrete_input", "discrete"),
    ("discrete_inputs", "discrete"),
    ("di", "discrete"),
    ("holding_register", "holding"),
    ("holding_registers", "holding"),
    ("hr", "holding"),
    ("input_register", "input"),
    ("input_registers", "input"),
    ("ir", "input"),
];
const TYPE_ALIASES: &[(&str, &str)] = &[
    ("boolean", "bool"),
    ("bit", "bool"),
    ("word", "u16"),
    ("uint", "u16"),
    ("uint16", "u16"),
    ("int", "i16"),
    ("int16", "i16"),
    ("dword", "u32"),
    ("udint", "u32"),
    ("uint32", "u32"),
    ("dint", "i32"),
    ("int32", "i32"),
    ("uint64", "u64"),
    ("ulint", "u64"),
    ("lint", "i64"),
    ("int64", "i64"),
    ("float", "f32"),
    ("real", "f32"),
    ("float32", "f32"),
    ("double", "f64"),
    ("lreal", "f64"),
    ("float64", "f64"),
    ("str", "string"),
    ("text", "string"),
];
const BYTE_ORDERS: &[(&str, ByteOrder)] = &[("big", ByteOrder::Big), ("little", ByteOrder::Little)];
const WORD_ORDERS: &[(&str, WordOrder)] = &[("big", WordOrder::Big), ("little", WordOrder::Little)];

impl TxConfig {
    /// Reads and validates a `gateway-tx` config file.
    pub fn load(path: &Path) -> Result<TxConfig, ConfigError> {
        let text = common::read_config(path)?;
        TxConfig::parse(&text, path)
    }

    /// Validates config text. `path` names the file in messages, and a relative `key_file`
    /// is resolved against its directory.
    pub fn parse(text: &str, path: &Path) -> Result<TxConfig, ConfigError> {
        let mut ctx = Ctx::new(text, path);
        let config = ctx.parse_document(text).and_then(|doc| {
            let root = Tbl::root(&doc);
            root.check_keys(&mut ctx, &["link", "modbus", "opcua", "http", "history"]);
            let link = root
                .table(
                    &mut ctx,
                    "link",
                    Req::Required(
                        "add a [link] section with at least destination = \"192.0.2.10:5600\"",
                    ),
                )
                .and_then(|l| parse_link(&mut ctx, &l));
            let mut device_names = HashMap::new();
            let mut tag_names = HashMap::new();
            let devices = parse_devices(&mut ctx, &root, &mut device_names, &mut tag_names);
            let opcua =
                crate::opcua::parse_endpoints(&mut ctx, &root, &mut device_names, &mut tag_names);
            let http = crate::http::parse_optional(
                &mut ctx,
                &root,
                link.as_ref().map(|l| l.bind.ip()),
                "127.0.0.1:9100",
            );
            let history = match root.table(&mut ctx, "history", Req::Optional) {
                Some(t) => parse_history(&mut ctx, &t).map(Some),
                None if root.has("history") => None,
                None => Some(None),
            };
            Some(TxConfig {
                link: link?,
                devices: devices?,
                opcua: opcua?,
                http: http?,
                history: history?,
                config_hash: common::config_hash(text),
            })
        });
        ctx.finish(config)
    }
}

fn parse_link(ctx: &mut Ctx<'_>, t: &Tbl<'_, '_>) -> Option<TxLink> {
    t.check_keys(ctx, LINK_KEYS);
    let destination = t
        .string(
            ctx,
            "destination",
            Req::Required(
                "give the receiver's address across the diode, like destination = \"192.0.2.10:5600\"",
            ),
        )
        .and_then(|a| common::socket_addr(ctx, &a))
        .and_then(|a| {
            if a.val.ip().is_unspecified() || a.val.port() == 0 {
                ctx.error(
                    a.span.start,
                    &a.key,
                    format!(
                        "{} cannot be sent to; give the receiver's real address and port, like \"192.0.2.10:5600\"",
                        a.val
                    ),
                );
                return None;
            }
            Some(a)
        });
    let bind = t
        .string(ctx, "bind", Req::Optional)
        .map(|a| common::socket_addr(ctx, &a));
    let bind = match (bind, &destination) {
        (Some(Some(b)), Some(d)) if b.val.is_ipv4() != d.val.is_ipv4() => {
            ctx.error(
                b.span.start,
                &b.key,
                format!(
                    "{} and destination {} are of different IP versions; bind an address of \
                     the destination's version, e.g. \"{}\"",
                    b.val,
                    d.val,
                    unspecified_like(d.val.ip())
                ),
            );
            None
        }
        (Some(b), _) => b.map(|b| b.val),
        // The socket must be of the destination's family to reach it.
        (None, Some(d)) => Some(SocketAddr::new(unspecified_like(d.val.ip()), 0)),
        (None, None) => None,
    };

    let mtu = t
        .int(
            ctx,
            "mtu",
            Req::Optional,
            i64::from(MTU_MIN)..=i64::from(u16::MAX),
            "bytes, the link's IP packet size",
        )
        .map(|a| a.val as u16);
    let mtu = match (&destination, t.has("mtu")) {
        (Some(d), _) if d.val.is_ipv6() && mtu.unwrap_or(MTU_DEFAULT) < MTU_MIN_IPV6 => {
            ctx.error(
                t.offset_of("mtu"),
                t.key("mtu"),
                format!(
                    "{} is below the IPv6 minimum MTU; the destination is IPv6, so use an \
                     integer from {MTU_MIN_IPV6} to 65535",
                    mtu.unwrap_or(MTU_DEFAULT)
                ),
            );
            None
        }
        (_, true) => mtu,
        (_, false) => Some(MTU_DEFAULT),
    };

    let rate_bps = match t.float(ctx, "rate_mbit", Req::Optional) {
        None if t.has("rate_mbit") => None,
        None => Some((RATE_MBIT_DEFAULT * 1e6) as u64),
        Some(r) => {
            let min_mbit = f64::from(mtu.unwrap_or(MTU_DEFAULT)) * 8.0 / 1e6;
            if !r.val.is_finite() || r.val <= 0.0 || r.val > RATE_MBIT_MAX {
                ctx.error(
                    r.span.start,
                    &r.key,
                    format!(
                        "{} is not a usable rate; expected a number of Mbit/s greater than 0 \
                         and at most {RATE_MBIT_MAX}",
                        r.val
                    ),
                );
                None
            } else if r.val < min_mbit {
                ctx.error(
                    r.span.start,
                    &r.key,
                    format!(
                        "{} Mbit/s cannot carry even one {}-byte datagram per second; use at \
                         least {min_mbit} Mbit/s",
                        r.val,
                        mtu.unwrap_or(MTU_DEFAULT)
                    ),
                );
                None
            } else {
                Some((r.val * 1e6).round() as u64)
            }
        }
    };

    let auth = keyfile::link_auth(ctx, t);
    let state_file = keyfile::state_file(ctx, t, TX_STATE_FILE_DEFAULT);

    let heartbeat = common::duration_ms(ctx, t, "heartbeat_ms", 100..=60_000, HEARTBEAT_MS_DEFAULT);
    let catalogue = common::duration_s(
        ctx,
        t,
        "catalogue_interval_s",
        1..=86_400,
        CATALOGUE_INTERVAL_S_DEFAULT,
    );
    let snapshot = common::duration_s(
        ctx,
        t,
        "snapshot_period_s",
        1..=86_400,
        SNAPSHOT_PERIOD_S_DEFAULT,
    );

    let fec_table = t
        .table(ctx, "fec", Req::Optional)
        .unwrap_or_else(|| Tbl::empty(t.key("fec"), format!("[{}]", t.key("fec")), t.span.clone()));
    let fec = parse_fec(ctx, &fec_table, t, mtu);

    let auth = auth?;
    let (key_file, key) = match auth.key {
        Some((path, key)) => (Some(path), Some(key)),
        None => (None, None),
    };
    Some(TxLink {
        destination: destination?.val,
        bind: bind?,
        mtu: mtu?,
        rate_bps: rate_bps?,
        fec: fec?,
        key,
        key_file,
        insecure_no_key: auth.insecure_no_key,
        state_file: state_file?,
        heartbeat_interval: heartbeat?,
        catalogue_interval: catalogue?,
        snapshot_period: snapshot?,
    })
}

fn parse_history(ctx: &mut Ctx<'_>, t: &Tbl<'_, '_>) -> Option<History> {
    t.check_keys(ctx, HISTORY_KEYS);
    let dir = match t.string(ctx, "dir", Req::Optional) {
        None if t.has("dir") => None,
        None => Some(PathBuf::from(HISTORY_DIR_DEFAULT)),
        Some(d) => common::dir_path(ctx, &d, "the history buffer's directory"),
    };
    let max_bytes = common::int_or(
        ctx,
        t,
        "max_bytes",
        HISTORY_MAX_BYTES_MIN as i64..=HISTORY_MAX_BYTES_MAX as i64,
        "bytes",
        HISTORY_MAX_BYTES_DEFAULT as i64,
    );
    let max_age = common::duration_s(
        ctx,
        t,
        "max_age_s",
        HISTORY_MAX_AGE_S_MIN as i64..=HISTORY_MAX_AGE_S_MAX as i64,
        HISTORY_MAX_AGE_S_DEFAULT,
    );
    let share = match t.float(ctx, "carousel_share", Req::Optional) {
        None if t.has("carousel_share") => None,
        None => Some(CAROUSEL_SHARE_DEFAULT),
        Some(s) if s.val.is_finite() && s.val > 0.0 && s.val <= CAROUSEL_SHARE_MAX => Some(s.val),
        Some(s) => {
            ctx.error(
                s.span.start,
                &s.key,
                format!(
                    "{} is not a usable share of the link rate; expected a number greater than 0 \
                     and at most {CAROUSEL_SHARE_MAX}, like 0.1 (the carousel is how the \
                     receiver heals history lost on the link, so it cannot be turned off)",
                    s.val
                ),
            );
            None
        }
    };
    let window = common::duration_s(
        ctx,
        t,
        "carousel_window_s",
        1..=CAROUSEL_WINDOW_S_MAX as i64,
        CAROUSEL_WINDOW_S_DEFAULT,
    );
    let (max_age, window) = (max_age?, window?);
    if window > max_age {
        ctx.error(
            t.offset_of("carousel_window_s"),
            t.key("carousel_window_s"),
            format!(
                "the carousel window ({} s) is longer than the buffer keeps history \
                 (max_age_s = {} s); use a window of at most max_age_s",
                window.as_secs(),
                max_age.as_secs()
            ),
        );
        return None;
    }
    Some(History {
        dir: dir?,
        max_bytes: max_bytes? as u64,
        max_age,
        carousel_share: share?,
        carousel_window: window,
    })
}

fn unspecified_like(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

fn parse_fec(
    ctx: &mut Ctx<'_>,
    t: &Tbl<'_, '_>,
    link: &Tbl<'_, '_>,
    mtu: Option<u16>,
) -> Option<FecShape> {
    t.check_keys(ctx, FEC_KEYS);
    let max = i64::from(GROUP_SHARDS_MAX);
    let data = common::int_or(
        ctx,
        t,
        "data_shards",
        1..=max,
        "datagrams per FEC group",
        DATA_SHARDS_DEFAULT.into(),
    );
    let repair = common::int_or(
        ctx,
        t,
        "repair_shards",
        0..=max - 1,
        "0 turns FEC off",
        REPAIR_SHARDS_DEFAULT.into(),
    );
    let interleave = common::int_or(
        ctx,
        t,
        "interleave",
        1..=i64::from(INTERLEAVE_MAX),
        "FEC groups sent interleaved",
        INTERLEAVE_DEFAULT.into(),
    );
    let flush = common::duration_ms(
        ctx,
        t,
        "flush_ms",
        1..=BLOCK_MS_MAX as i64,
        FLUSH_MS_DEFAULT,
    );
    let block = common::duration_ms(
        ctx,
        t,
        "block_ms",
        1..=BLOCK_MS_MAX as i64,
        BLOCK_MS_DEFAULT,
    );
    let (data, repair, interleave) = (data? as u16, repair? as u16, interleave? as u16);
    let (flush, block_span) = (flush?, block?);
    if block_span < flush {
        let at = if t.has("block_ms") {
            "block_ms"
        } else {
            "flush_ms"
        };
        ctx.error(
            t.offset_of(at),
            t.key(at),
            format!(
                "block_ms ({} ms) is shorter than flush_ms ({} ms): a block must stay open at \
                 least as long as a data datagram waits to fill; make block_ms at least {}",
                block_span.as_millis(),
                flush.as_millis(),
                flush.as_millis()
            ),
        );
        return None;
    }
    if data + repair > GROUP_SHARDS_MAX {
        let at = if t.has("repair_shards") {
            "repair_shards"
        } else {
            "data_shards"
        };
        ctx.error(
            t.offset_of(at),
            t.key(at),
            format!(
                "data_shards + repair_shards = {data} + {repair} = {} is more than one FEC \
                 group can hold; their sum must be at most {GROUP_SHARDS_MAX}",
                data + repair
            ),
        );
        return None;
    }
    if let Some(mtu) = mtu {
        // Blame a value the user wrote; with an all-default [link.fec] that is the mtu.
        let blame = |keys: &[&str]| {
            keys.iter().find(|k| t.has(k)).map_or_else(
                || (link.offset_of("mtu"), link.key("mtu")),
                |k| (t.offset_of(k), t.key(k)),
            )
        };
        let shard = (usize::from(mtu) - IP_UDP_OVERHEAD - DATAGRAM_OVERHEAD) as u64 & !1;
        let shards = u64::from(data + repair);
        let group = shards * shard;
        if group > GROUP_BYTES_MAX {
            let (offset, key) = blame(&["data_shards", "repair_shards"]);
            ctx.error(
                offset,
                key,
                format!(
                    "one FEC group of {data} + {repair} shards of {shard} bytes (mtu {mtu}) \
                     is {group} bytes, more than the {GROUP_BYTES_MAX} a receiver buffers per \
                     group; with this mtu, data_shards + repair_shards can be at most {}",
                    GROUP_BYTES_MAX / shard
                ),
            );
            return None;
        }
        let block = group * u64::from(interleave);
        if block > BLOCK_BYTES_MAX {
            let (offset, key) = blame(&["interleave", "data_shards", "repair_shards"]);
            ctx.error(
                offset,
                key,
                format!(
                    "an interleaved block of {interleave} groups × ({data} + {repair}) shards × \
                     {shard} bytes is {block} bytes, more than the {BLOCK_BYTES_MAX} each side \
                     buffers; with these shards and mtu, interleave can be at most {}",
                    BLOCK_BYTES_MAX / group
                ),
            );
            return None;
        }
    }
    Some(FecShape {
        data_shards: data,
        repair_shards: repair,
        interleave,
        flush,
        block_span,
    })
}

/// Where a device or tag was, for messages that relate two of them.
use crate::opcua::Seen as Loc;

fn parse_devices(
    ctx: &mut Ctx<'_>,
    root: &Tbl<'_, '_>,
    device_names: &mut HashMap<String, Loc>,
    tag_names: &mut HashMap<String, Loc>,
) -> Option<Vec<ModbusDevice>> {
    let mut devices = Vec::new();
    let mut ok = true;
    for d in root.array_of_tables(ctx, "modbus") {
        let name = d.string(
            ctx,
            "name",
            Req::Required("give the device a unique name, like name = \"plc1\""),
        );
        if let Some(n) = &name {
            if let Some(first) = device_names.get(&n.val) {
                ctx.error(
                    n.span.start,
                    &n.key,
                    format!(
                        "duplicate device name \"{}\", first used by {} at line {}; device \
                         names must be unique",
                        n.val, first.path, first.line
                    ),
                );
            } else {
                device_names.insert(
                    n.val.clone(),
                    Loc {
                        path: d.path.clone(),
                        line: ctx.line(n.span.start),
                    },
                );
            }
        }
        match parse_device(ctx, &d, name, tag_names) {
            Some(dev) => devices.push(dev),
            None => ok = false,
        }
    }
    ok.then_some(devices)
}

fn parse_device(
    ctx: &mut Ctx<'_>,
    t: &Tbl<'_, '_>,
    name: Option<At<String>>,
    tag_names: &mut HashMap<String, Loc>,
) -> Option<ModbusDevice> {
    t.check_keys(ctx, DEVICE_KEYS);
    let name = name.and_then(|n| common::check_name(ctx, n));
    let host = t
        .string(
            ctx,
            "host",
            Req::Required("give the device's IP address or host name, like host = \"192.0.2.20\""),
        )
        .and_then(|h| check_host(ctx, h));
    let port = common::int_or(ctx, t, "port", 1..=65535, "TCP port", PORT_DEFAULT.into());
    let unit_id = common::int_or(
        ctx,
        t,
        "unit_id",
        0..=255,
        "Modbus unit id; 255 or 0 for a device addressed by IP alone",
        UNIT_ID_DEFAULT.into(),
    );
    let poll = common::duration_ms(
        ctx,
        t,
        "poll_interval_ms",
        POLL_INTERVAL_MS_MIN as i64..=86_400_000,
        POLL_INTERVAL_MS_DEFAULT,
    );
    let timeout = common::duration_ms(
        ctx,
        t,
        "timeout_ms",
        1..=TIMEOUT_MS_MAX as i64,
        TIMEOUT_MS_DEFAULT,
    );

    let mut tags = Vec::new();
    let mut locs = Vec::new();
    let mut tags_ok = true;
    for tt in t.array_of_tables(ctx, "tag") {
        match parse_tag(ctx, &tt, tag_names) {
            Some((tag, loc)) => {
                tags.push(tag);
                locs.push(loc);
            }
            None => tags_ok = false,
        }
    }
    let overlaps_ok = check_overlaps(ctx, &tags, &locs);

    if !(tags_ok && overlaps_ok) {
        return None;
    }
    Some(ModbusDevice {
        name: name?.val,
        host: host?,
        port: port? as u16,
        unit_id: unit_id? as u8,
        poll_interval: poll?,
        timeout: timeout?,
        tags,
    })
}

/// An IP address or a DNS name; never `host:port`, a URL or blank.
fn check_host(ctx: &mut Ctx<'_>, h: At<String>) -> Option<String> {
    let s = h.val.as_str();
    if s.parse::<IpAddr>().is_ok() {
        return Some(h.val);
    }
    let hint = if s.parse::<SocketAddr>().is_ok()
        || s.rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        "; put the port in `port`, not in `host`"
    } else if s.contains("://") {
        "; give only the host, not a URL"
    } else {
        ""
    };
    let valid_name = !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if valid_name {
        return Some(h.val);
    }
    ctx.error(
        h.span.start,
        &h.key,
        format!(
            "\"{s}\" is not an IP address or host name{hint}; write e.g. host = \"192.0.2.20\" \
             or host = \"plc1.example.net\""
        ),
    );
    None
}

fn type_name(kind: ModbusType) -> &'static str {
    TYPES
        .iter()
        .find(|(_, k)| *k == kind)
        .map_or("?", |(n, _)| n)
}

fn table_name(table: ModbusTable) -> &'static str {
    match table {
        ModbusTable::Coil => "coil",
        ModbusTable::DiscreteInput => "discrete",
        ModbusTable::HoldingRegister => "holding",
        ModbusTable::InputRegister => "input",
    }
}

/// Where a tag sits, for overlap and duplicate messages.
struct TagLoc {
    path: String,
    address_at: usize,
    line: usize,
}

fn parse_tag(
    ctx: &mut Ctx<'_>,
    t: &Tbl<'_, '_>,
    tag_names: &mut HashMap<String, Loc>,
) -> Option<(ModbusTag, TagLoc)> {
    t.check_keys(ctx, TAG_KEYS);
    let name = t
        .string(
            ctx,
            "name",
            Req::Required(
                "give the tag a unique path-like name, like name = \"site/area/pump3/speed\"",
            ),
        )
        .and_then(|n| check_tag_name(ctx, n));
    if let Some(n) = &name {
        if let Some(first) = tag_names.get(&n.val) {
            ctx.error(
                n.span.start,
                &n.key,
                format!(
                    "duplicate tag name \"{}\", first used by {} at line {}; tag names must be \
                     unique across the whole file",
                    n.val, first.path, first.line
                ),
            );
        } else {
            tag_names.insert(
                n.val.clone(),
                Loc {
                    path: t.path.clone(),
                    line: ctx.line(n.span.start),
                },
            );
        }
    }
    let table = t.choice_with_aliases(
        ctx,
        "table",
        Req::Required("say which Modbus table the tag is read from: table = \"holding\", \"input\", \"coil\" or \"discrete\""),
        TABLES,
        TABLE_ALIASES,
    );
    let kind = t.choice_with_aliases(
        ctx,
        "type",
        Req::Required("say how to decode the tag, e.g. type = \"u16\"; valid types are bool, u16, i16, u32, i32, u64, i64, f32, f64, string"),
        TYPES,
        TYPE_ALIASES,
    );
    let address = t.int(
        ctx,
        "address",
        Req::Required("give the tag's 0-based Modbus address, like address = 100"),
        0..=65535,
        "0-based Modbus address",
    );
    let length = t.int(
        ctx,
        "length",
        Req::Optional,
        1..=i64::from(STRING_LENGTH_MAX),
        "registers",
    );
    let byte_order = t.choice(ctx, "byte_order", Req::Optional, BYTE_ORDERS);
    let word_order = t.choice(ctx, "word_order", Req::Optional, WORD_ORDERS);
    let scale = t.float(ctx, "scale", Req::Optional);
    let offset = t.float(ctx, "offset", Req::Optional);
    let deadband = t.float(ctx, "deadband", Req::Optional);
    let unit = t.string(ctx, "unit", Req::Optional);
    let description = t.string(ctx, "description", Req::Optional);

    // Checks that relate fields; each needs the fields it relates to be valid.
    let mut ok = true;
    if let (Some(table), Some(kind)) = (&table, &kind) {
        if table.val.is_bits() && kind.val != ModbusType::Bool {
            ctx.error(
                kind.span.start,
                &kind.key,
                format!(
                    "type \"{}\" needs registers, but table \"{}\" holds single bits; use \
                     type = \"bool\" there, or table = \"holding\" or \"input\" for \"{}\"",
                    type_name(kind.val),
                    table_name(table.val),
                    type_name(kind.val)
                ),
            );
            ok = false;
        } else if !table.val.is_bits() && kind.val == ModbusType::Bool {
            ctx.error(
                kind.span.start,
                &kind.key,
                format!(
                    "type \"bool\" needs a bit table, but table \"{}\" holds 16-bit registers; \
                     use table = \"coil\" or \"discrete\" for bool, or a numeric type such as \
                     \"u16\" here",
                    table_name(table.val)
                ),
            );
            ok = false;
        }
    }
    let count = match (&kind, &length) {
        (Some(k), None) if k.val == ModbusType::String => {
            if !t.has("length") {
                ctx.error(
                    k.span.start,
                    t.key("length"),
                    format!(
                        "a string tag needs `length`, its size in registers (two characters \
                         each); add e.g. length = 8 (1 to {STRING_LENGTH_MAX})"
                    ),
                );
            }
            None
        }
        (Some(k), Some(l)) if k.val != ModbusType::String => {
            ctx.error(
                l.span.start,
                &l.key,
                format!(
                    "`length` applies only to string tags; a \"{}\" tag occupies {} \
                     register(s) by its type, so remove `length`",
                    type_name(k.val),
                    fixed_count(k.val)
                ),
            );
            None
        }
        (Some(_), Some(l)) => Some(l.val as u16),
        (Some(k), None) => Some(fixed_count(k.val)),
        (None, _) => None,
    };
    if let (Some(a), Some(count), Some(k)) = (&address, count, &kind) {
        let end = a.val + i64::from(count) - 1;
        if end > 65535 {
            ctx.error(
                a.span.start,
                &a.key,
                format!(
                    "a \"{}\" tag at address {} occupies {}-{}, past the last Modbus address \
                     65535; the address can be at most {}",
                    type_name(k.val),
                    a.val,
                    a.val,
                    end,
                    65536 - i64::from(count)
                ),
            );
            ok = false;
        }
    }
    let no_arithmetic = kind
        .as_ref()
        .filter(|k| matches!(k.val, ModbusType::Bool | ModbusType::String));
    for (field, value) in [
        ("scale", &scale),
        ("offset", &offset),
        ("deadband", &deadband),
    ] {
        if let (Some(k), Some(v)) = (no_arithmetic, value) {
            ctx.error(
                v.span.start,
                &v.key,
                format!(
                    "`{field}` does not apply to \"{}\" tags; remove it (it applies to numeric types)",
                    type_name(k.val)
                ),
            );
            ok = false;
        }
    }
    let scale = match scale {
        Some(s) if !s.val.is_finite() || s.val == 0.0 => {
            ctx.error(
                s.span.start,
                &s.key,
                format!(
                    "scale {} is not usable; expected a finite number other than 0",
                    s.val
                ),
            );
            None
        }
        Some(s) => Some(s.val),
        None => (!t.has("scale")).then_some(1.0),
    };
    let offset = match offset {
        Some(o) if !o.val.is_finite() => {
            ctx.error(
                o.span.start,
                &o.key,
                format!("offset {} is not usable; expected a finite number", o.val),
            );
            None
        }
        Some(o) => Some(o.val),
        None => (!t.has("offset")).then_some(0.0),
    };
    let deadband = match deadband {
        Some(d) if !d.val.is_finite() || d.val < 0.0 => {
            ctx.error(
                d.span.start,
                &d.key,
                format!(
                    "deadband {} is not usable; expected a finite number >= 0 (in engineering \
                     units; 0 reports every change)",
                    d.val
                ),
            );
            None
        }
        Some(d) => Some(d.val),
        None => (!t.has("deadband")).then_some(0.0),
    };

    let unit = unit
        .map(|u| u.val)
        .or_else(|| (!t.has("unit")).then(String::new));
    let description = description
        .map(|d| d.val)
        .or_else(|| (!t.has("description")).then(String::new));
    let byte_order = byte_order
        .map(|b| b.val)
        .or_else(|| (!t.has("byte_order")).then_some(ByteOrder::Big));
    let word_order = word_order
        .map(|w| w.val)
        .or_else(|| (!t.has("word_order")).then_some(WordOrder::Big));

    let address = address?;
    let loc = TagLoc {
        path: t.path.clone(),
        address_at: address.span.start,
        line: ctx.line(address.span.start),
    };
    if !ok {
        return None;
    }
    Some((
        ModbusTag {
            name: name?.val,
            table: table?.val,
            address: address.val as u16,
            kind: kind?.val,
            count: count?,
            byte_order: byte_order?,
            word_order: word_order?,
            scale: scale?,
            offset: offset?,
            deadband: deadband?,
            unit: unit?,
            description: description?,
        },
        loc,
    ))
}

/// Registers (or bits) a fixed-size type occupies.
fn fixed_count(kind: ModbusType) -> u16 {
    match kind {
        ModbusType::Bool | ModbusType::U16 | ModbusType::I16 | ModbusType::String => 1,
        ModbusType::U32 | ModbusType::I32 | ModbusType::F32 => 2,
        ModbusType::U64 | ModbusType::I64 | ModbusType::F64 => 4,
    }
}

/// Path segments of `[A-Za-z0-9_.-]+` separated by `/`.
pub(crate) fn check_tag_name(ctx: &mut Ctx<'_>, n: At<String>) -> Option<At<String>> {
    let s = n.val.as_str();
    let problem = if s.is_empty() {
        Some("is empty".to_owned())
    } else if s.len() > 255 {
        Some(format!("is {} bytes long, more than 255", s.len()))
    } else if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "_.-/".contains(*c)))
    {
        Some(format!("contains {c:?}"))
    } else if s.split('/').any(str::is_empty) {
        Some("has an empty path segment (a leading, trailing or doubled '/')".to_owned())
    } else if s.split('/').any(|seg| seg.chars().all(|c| c == '.')) {
        Some("has a path segment made only of dots".to_owned())
    } else {
        None
    };
    match problem {
        None => Some(n),
        Some(p) => {
            ctx.error(
                n.span.start,
                &n.key,
                format!(
                    "tag name \"{s}\" {p}; a tag name is one or more segments of letters, \
                     digits, '_', '.' and '-' separated by '/', like \"site/area/pump3/speed\""
                ),
            );
            None
        }
    }
}

/// Reports every pair of tags of one device that read the same register or bit of one table.
fn check_overlaps(ctx: &mut Ctx<'_>, tags: &[ModbusTag], locs: &[TagLoc]) -> bool {
    let mut ranges: Vec<(ModbusTable, u32, u32, usize)> = tags
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let start = u32::from(t.address);
            (t.table, start, start + u32::from(t.count.max(1)) - 1, i)
        })
        .collect();
    ranges.sort_unstable();
    let mut ok = true;
    // Sweep by start address, keeping the tags whose range is still open.
    let mut open: Vec<(ModbusTable, u32, usize)> = Vec::new();
    for &(table, start, end, i) in &ranges {
        open.retain(|&(t, e, _)| t == table && e >= start);
        for &(_, _, j) in &open {
            // Point at whichever comes later in the file, naming the earlier one.
            let (later, earlier) = if locs[i].address_at > locs[j].address_at {
                (i, j)
            } else {
                (j, i)
            };
            let (a, b) = (&tags[later], &tags[earlier]);
            ctx.error(
                locs[later].address_at,
                format!("{}.address", locs[later].path),
                format!(
                    "tag \"{}\" ({} {}) overlaps tag \"{}\" ({} {}, {} at line {}); tags of \
                     one device must not share registers or bits of the same table",
                    a.name,
                    table_name(table),
                    range_text(a),
                    b.name,
                    table_name(table),
                    range_text(b),
                    locs[earlier].path,
                    locs[earlier].line
                ),
            );
            ok = false;
        }
        open.push((table, end, i));
    }
    ok
}

fn range_text(t: &ModbusTag) -> String {
    let end = u32::from(t.address) + u32::from(t.count.max(1)) - 1;
    if t.count <= 1 {
        format!("address {}", t.address)
    } else {
        format!("addresses {}-{end}", t.address)
    }
}
