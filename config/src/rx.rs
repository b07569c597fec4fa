//! The receiver's configuration, as the rest of the program sees it once validated.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use crate::http::HttpServer;
pub use crate::nats::{Nats, NatsAuth};
pub use crate::sinks::{Mqtt, MqttFormat, Postgres, Secret, Spool};

/// Validated `gateway-rx` configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct RxConfig {
    pub link: RxLink,
    pub modbus_server: Option<ModbusServer>,
    pub status: Status,
    /// `[http]`: the operators' HTTP server (metrics, health, status page); `None`: off.
    pub http: Option<HttpServer>,
    /// `[store]`: the embedded historian store (on by default).
    pub store: Store,
    /// `[mqtt]`: the MQTT publisher; `None`: off.
    pub mqtt: Option<Mqtt>,
    /// `[postgres]`: the PostgreSQL sink; `None`: off.
    pub postgres: Option<Postgres>,
    /// `[nats]`: the NATS JetStream sink; `None`: off.
    pub nats: Option<Nats>,
    /// `[opcua_server]`: the read-only OPC UA mirror; `None`: off.
    pub opcua_server: Option<crate::opcua_server::OpcUaServer>,
    /// `[syslog]`: the syslog spool and its outputs; `None`: off.
    pub syslog: Option<crate::syslog_rx::SyslogRx>,
}

/// The embedded historian store: every history sample received, kept once per (tag, source
/// timestamp), in SQLite.
#[derive(Debug, Clone, PartialEq)]
pub struct Store {
    /// Off: history received is counted and discarded.
    pub enabled: bool,
    /// The SQLite database file (created, with its directory, when the first history arrives).
    pub path: PathBuf,
    /// Samples whose source time is older than this are deleted.
    pub max_age: Duration,
    /// The oldest samples are deleted while the database is larger than this.
    pub max_bytes: u64,
    /// The gap audit log (JSON lines): every history gap opened, healed or expired.
    pub gap_log: PathBuf,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RxLink {
    /// Address the receiver listens on for datagrams from the diode.
    pub bind: SocketAddr,
    pub key: Option<[u8; 32]>,
    pub key_file: Option<PathBuf>,
    /// `insecure_no_key = true`: no key, by the operator's explicit choice (warned about at
    /// every start and on the status page).
    pub insecure_no_key: bool,
    /// Where the link state survives restarts: the newest transmitter session accepted and how far it got (refusing replays of older sessions).
    pub state_file: PathBuf,
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

// ---------------------------------------------------------------------------------------------
// Loading and validation.

use std::collections::HashMap;
use std::path::Path;

use crate::error::ConfigError;
use crate::walk::{Ctx, Req, Tbl};
use crate::{common, keyfile};

/// Defaults and limits of the RX schema.
pub mod limits {
    pub const HEARTBEAT_TIMEOUT_MS_DEFAULT: u64 = 3000;
    pub const RECV_BUFFER_BYTES_DEFAULT: usize = 8 * 1024 * 1024;
    pub const RECV_BUFFER_BYTES_MIN: usize = 64 * 1024;
    pub const RECV_BUFFER_BYTES_MAX: usize = 1024 * 1024 * 1024;
    pub const REORDER_WINDOW_DEFAULT: u32 = 4096;
    pub const REORDER_WINDOW_MIN: u32 = 64;
    pub const REORDER_WINDOW_MAX: u32 = 1_048_576;
    pub const LOG_INTERVAL_S_DEFAULT: u64 = 10;
    pub const STORE_PATH_DEFAULT: &str = "/var/lib/gateway/history.sqlite";
    /// Where the receiver keeps the newest transmitter session it accepted.
    pub const RX_STATE_FILE_DEFAULT: &str = "/var/lib/gateway/rx-link.state";
    /// Default gap audit log: this file name in the store's directory.
    pub const GAP_LOG_FILE_DEFAULT: &str = "history-gaps.jsonl";
    pub const STORE_MAX_AGE_DAYS_DEFAULT: u64 = 365;
    pub const STORE_MAX_AGE_DAYS_MAX: u64 = 36_500;
    pub const STORE_MAX_BYTES_DEFAULT: u64 = 16 << 30;
    pub const STORE_MAX_BYTES_MIN: u64 = 1 << 20;
    pub const STORE_MAX_BYTES_MAX: u64 = 1 << 50;
}
use limits::*;

const LINK_KEYS: &[&str] = &[
    "bind",
    "key_file",
    "insecure_no_key",
    "state_file",
    "heartbeat_timeout_ms",
    "recv_buffer_bytes",
    "reorder_window",
];
const MODBUS_SERVER_KEYS: &[&str] = &["bind", "on_bad_quality", "unit_map"];
const STATUS_KEYS: &[&str] = &["log_interval_s"];
const STORE_KEYS: &[&str] = &["enabled", "path", "max_age_days", "max_bytes", "gap_log"];
const ON_BAD_QUALITY: &[(&str, OnBadQuality)] = &[
    ("exception", OnBadQuality::Exception),
    ("last_value", OnBadQuality::LastValue),
    ("zero", OnBadQuality::Zero),
];

impl RxConfig {
    /// Reads and validates a `gateway-rx` config file.
    pub fn load(path: &Path) -> Result<RxConfig, ConfigError> {
        let text = common::read_config(path)?;
        RxConfig::parse(&text, path)
    }

    /// Validates config text. `path` names the file in messages, and a relative `key_file`
    /// is resolved against its directory.
    pub fn parse(text: &str, path: &Path) -> Result<RxConfig, ConfigError> {
        let mut ctx = Ctx::new(text, path);
        let config = ctx.parse_document(text).and_then(|doc| {
            let root = Tbl::root(&doc);
            root.check_keys(
                &mut ctx,
                &[
                    "link",
                    "modbus_server",
                    "status",
                    "http",
                    "store",
                    "mqtt",
                    "postgres",
                    "nats",
                    "opcua_server",
                    "syslog",
                ],
            );
            let link = root
                .table(
                    &mut ctx,
                    "link",
                    Req::Required("add a [link] section with at least bind = \"0.0.0.0:5600\""),
                )
                .and_then(|l| parse_link(&mut ctx, &l));
            let modbus_server = match root.table(&mut ctx, "modbus_server", Req::Optional) {
                Some(t) => parse_modbus_server(&mut ctx, &t).map(Some),
                None if root.has("modbus_server") => None,
                None => Some(None),
            };
            let status = root
                .table(&mut ctx, "status", Req::Optional)
                .unwrap_or_else(|| Tbl::empty("status".into(), "[status]".into(), 0..0));
            let status = parse_status(&mut ctx, &status);
            let http = crate::http::parse_optional(
                &mut ctx,
                &root,
                link.as_ref().map(|l| l.bind.ip()),
                "127.0.0.1:9101",
            );
            let store = root
                .table(&mut ctx, "store", Req::Optional)
                .unwrap_or_else(|| Tbl::empty("store".into(), "[store]".into(), 0..0));
            let store_tbl = store;
            let store = parse_store(&mut ctx, &store_tbl);
            // Sinks' spools default to the store's directory.
            let store_dir = store
                .as_ref()
                .and_then(|s| s.path.parent().map(Path::to_path_buf))
                .unwrap_or_else(|| PathBuf::from("/var/lib/gateway"));
            let mqtt = crate::sinks::parse_mqtt(&mut ctx, &root, &store_dir);
            let postgres = crate::sinks::parse_postgres(&mut ctx, &root, &store_dir);
            let nats = crate::nats::parse_nats(&mut ctx, &root, &store_dir);
            let opcua_server = crate::opcua_server::parse_optional(
                &mut ctx,
                &root,
                link.as_ref().map(|l| l.bind.ip()),
                &store_dir,
            );
            let syslog = crate::syslog_rx::parse_optional(&mut ctx, &root, &store_dir);
            if let Some(s) = &store
                && !s.enabled
            {
                let sinks: Vec<&str> = [
                    matches!(mqtt, Some(Some(_))).then_some("[mqtt]"),
                    matches!(postgres, Some(Some(_))).then_some("[postgres]"),
                    matches!(nats, Some(Some(_))).then_some("[nats]"),
                ]
                .into_iter()
                .flatten()
                .collect();
                if !sinks.is_empty() {
                    ctx.error(
                        store_tbl.offset_of("enabled"),
                        store_tbl.key("enabled"),
                        format!(
                            "{} {} history from the embedded store, which keeps each \
                             sample once and heals gaps before the sinks see them; keep \
                             enabled = true (a small max_age_days keeps it small) or remove {}",
                            sinks.join(" and "),
                            if sinks.len() == 1 {
                                "takes its"
                            } else {
                                "take their"
                            },
                            sinks.join(" and ")
                        ),
                    );
                }
            }
            Some(RxConfig {
                link: link?,
                modbus_server: modbus_server?,
                status: status?,
                http: http?,
                store: store?,
                mqtt: mqtt?,
                postgres: postgres?,
                nats: nats?,
                opcua_server: opcua_server?,
                syslog: syslog?,
            })
        });
        ctx.finish(config)
    }
}

fn parse_link(ctx: &mut Ctx<'_>, t: &Tbl<'_, '_>) -> Option<RxLink> {
    t.check_keys(ctx, LINK_KEYS);
    let bind = t
        .string(
            ctx,
            "bind",
            Req::Required(
                "give the address to receive the diode's datagrams on, like bind = \"0.0.0.0:5600\"",
            ),
        )
        .and_then(|a| common::socket_addr(ctx, &a))
        .and_then(|a| {
            if a.val.port() == 0 {
                ctx.error(
                    a.span.start,
                    &a.key,
                    "port 0 would pick a random port the transmitter cannot know; give the \
                     port the transmitter's destination uses, like \"0.0.0.0:5600\"",
                );
                return None;
            }
            Some(a.val)
        });
    let auth = keyfile::link_auth(ctx, t);
    let state_file = keyfile::state_file(ctx, t, RX_STATE_FILE_DEFAULT);
    let heartbeat_timeout = common::duration_ms(
        ctx,
        t,
        "heartbeat_timeout_ms",
        100..=3_600_000,
        HEARTBEAT_TIMEOUT_MS_DEFAULT,
    );
    let recv_buffer = common::int_or(
        ctx,
        t,
        "recv_buffer_bytes",
        RECV_BUFFER_BYTES_MIN as i64..=RECV_BUFFER_BYTES_MAX as i64,
        "bytes",
        RECV_BUFFER_BYTES_DEFAULT as i64,
    );
    let reorder_window = common::int_or(
        ctx,
        t,
        "reorder_window",
        i64::from(REORDER_WINDOW_MIN)..=i64::from(REORDER_WINDOW_MAX),
        "datagrams",
        i64::from(REORDER_WINDOW_DEFAULT),
    );
    let auth = auth?;
    let (key_file, key) = match auth.key {
        Some((path, key)) => (Some(path), Some(key)),
        None => (None, None),
    };
    Some(RxLink {
        bind: bind?,
        key,
        key_file,
        insecure_no_key: auth.insecure_no_key,
        state_file: state_file?,
        heartbeat_timeout: heartbeat_timeout?,
        recv_buffer_bytes: recv_buffer? as usize,
        reorder_window: reorder_window? as u32,
    })
}

fn parse_modbus_server(ctx: &mut Ctx<'_>, t: &Tbl<'_, '_>) -> Option<ModbusServer> {
    t.check_keys(ctx, MODBUS_SERVER_KEYS);
    let bind = t
        .string(
            ctx,
            "bind",
            Req::Required(
                "give the address the Modbus mirror listens on, like bind = \"0.0.0.0:5020\" \
                 (or remove [modbus_server] to run without it)",
            ),
        )
        .and_then(|a| common::socket_addr(ctx, &a))
        .map(|a| a.val);
    let on_bad = match t.choice(ctx, "on_bad_quality", Req::Optional, ON_BAD_QUALITY) {
        Some(c) => Some(c.val),
        None if t.has("on_bad_quality") => None,
        None => Some(OnBadQuality::Exception),
    };
    let unit_map = match t.int_map(ctx, "unit_map", 0..=255) {
        None if t.has("unit_map") => None,
        None => Some(Vec::new()),
        Some(entries) => {
            let mut ok = true;
            let mut by_unit: HashMap<i64, (String, usize)> = HashMap::new();
            let mut out = Vec::new();
            for (name, unit) in entries {
                let line = ctx.line(name.span.start);
                match common::check_name(ctx, name) {
                    Some(name) => {
                        if let Some((first, first_line)) = by_unit.get(&unit.val) {
                            ctx.error(
                                unit.span.start,
                                &unit.key,
                                format!(
                                    "unit id {} is already given to device \"{first}\" at line \
                                     {first_line}; each device needs its own unit id",
                                    unit.val
                                ),
                            );
                            ok = false;
                        } else {
                            by_unit.insert(unit.val, (name.val.clone(), line));
                        }
                        out.push((name.val, unit.val as u8));
                    }
                    None => ok = false,
                }
            }
            ok.then_some(out)
        }
    };
    Some(ModbusServer {
        bind: bind?,
        on_bad_quality: on_bad?,
        unit_map: unit_map?,
    })
}

fn parse_status(ctx: &mut Ctx<'_>, t: &Tbl<'_, '_>) -> Option<Status> {
    t.check_keys(ctx, STATUS_KEYS);
    let log_interval =
        common::duration_s(ctx, t, "log_interval_s", 1..=86_400, LOG_INTERVAL_S_DEFAULT)?;
    Some(Status { log_interval })
}

fn parse_store(ctx: &mut Ctx<'_>, t: &Tbl<'_, '_>) -> Option<Store> {
    t.check_keys(ctx, STORE_KEYS);
    let enabled = match t.boolean(ctx, "enabled", Req::Optional) {
        Some(b) => Some(b.val),
        None if t.has("enabled") => None,
        None => Some(true),
    };
    let path = match t.string(ctx, "path", Req::Optional) {
        None if t.has("path") => None,
        None => Some(PathBuf::from(STORE_PATH_DEFAULT)),
        Some(p) => common::dir_path(ctx, &p, "the SQLite database file"),
    };
    let max_age_days = common::int_or(
        ctx,
        t,
        "max_age_days",
        1..=STORE_MAX_AGE_DAYS_MAX as i64,
        "days",
        STORE_MAX_AGE_DAYS_DEFAULT as i64,
    );
    let max_bytes = common::int_or(
        ctx,
        t,
        "max_bytes",
        STORE_MAX_BYTES_MIN as i64..=STORE_MAX_BYTES_MAX as i64,
        "bytes",
        STORE_MAX_BYTES_DEFAULT as i64,
    );
    let gap_log = match t.string(ctx, "gap_log", Req::Optional) {
        None if t.has("gap_log") => None,
        None => path.as_ref().map(|p| match p.parent() {
            Some(dir) => dir.join(GAP_LOG_FILE_DEFAULT),
            None => PathBuf::from(GAP_LOG_FILE_DEFAULT),
        }),
        Some(p) => common::dir_path(ctx, &p, "the gap audit log file"),
    };
    Some(Store {
        enabled: enabled?,
        path: path?,
        max_age: Duration::from_secs(max_age_days? as u64 * 86_400),
        max_bytes: max_bytes? as u64,
        gap_log: gap_log?,
    })
}
