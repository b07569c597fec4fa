//! `[mqtt]` and `[postgres]` in the RX schema: the IT-side sinks that get every history sample
//! through a durable spool each. Absent means off.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common;
use crate::walk::{At, Ctx, Req, Tbl};

/// Defaults and limits of the sinks' tables.
pub mod limits {
    /// Largest password file accepted: a password is one line, so anything bigger is a
    /// mistake (a key, a log) rather than a secret to load.
    pub const PASSWORD_FILE_MAX_BYTES: u64 = 4096;
    pub const SPOOL_MAX_BYTES_DEFAULT: u64 = 1 << 30;
    pub const SPOOL_MAX_BYTES_MIN: u64 = 1 << 20;
    pub const SPOOL_MAX_BYTES_MAX: u64 = 1 << 50;
    /// Default spool directory: `spool/<sink>` in the store's directory.
    pub const SPOOL_DIR_DEFAULT: &str = "spool";
    pub const MQTT_PORT_DEFAULT: u16 = 1883;
    pub const MQTT_TLS_PORT_DEFAULT: u16 = 8883;
    pub const MQTT_CLIENT_ID_DEFAULT: &str = "gateway-rx";
    pub const MQTT_TOPIC_PREFIX_DEFAULT: &str = "gateway";
    pub const MQTT_QOS_DEFAULT: u8 = 1;
    pub const MQTT_KEEP_ALIVE_S_DEFAULT: u64 = 30;
    /// QoS 2 messages awaiting the broker's acknowledgement at once: mosquitto's default limit
    /// for a client's incoming QoS 2 messages (`max_inflight_messages`).
    pub const MQTT_QOS2_MAX_INFLIGHT_DEFAULT: u16 = 20;
    /// The publisher's window (packet identifiers 1 to this), all in flight at QoS 0 and 1.
    pub const MQTT_WINDOW: u16 = 500;
    pub const PG_PORT_DEFAULT: u16 = 5432;
    pub const PG_USER_DEFAULT: &str = "gateway";
    pub const PG_DBNAME_DEFAULT: &str = "gateway";
    pub const PG_SCHEMA_DEFAULT: &str = "gateway";
    pub const PG_BATCH_SAMPLES_DEFAULT: usize = 5000;
    pub const PG_BATCH_SAMPLES_MIN: usize = 1;
    pub const PG_BATCH_SAMPLES_MAX: usize = 1_000_000;
}
use limits::*;

/// A password read from a file: never shown by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// A sink's durable spool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spool {
    /// Its directory (segments and cursor), created at start.
    pub dir: PathBuf,
    /// The segments together hold at most this; what does not fit is counted and recorded as a
    /// gap.
    pub max_bytes: u64,
}

/// Whether an MQTT topic name may not hold `c`: the wildcards, and what a broker may close the
/// connection for (MQTT 3.1.1, 1.5.3: NUL, the other control characters and the Unicode
/// noncharacters; Mosquitto does close it). The prefix check here and the receiver's topic of a
/// tag both follow it.
pub fn topic_refuses(c: char) -> bool {
    let noncharacter = ('\u{FDD0}'..='\u{FDEF}').contains(&c) || u32::from(c) & 0xFFFE == 0xFFFE;
    matches!(c, '+' | '#') || c.is_control() || noncharacter
}

/// `[mqtt]`: the MQTT publisher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mqtt {
    /// The broker's host name or IP address.
    pub host: String,
    pub port: u16,
    pub client_id: String,
    /// Topics are `<topic_prefix>/<tag path>`; empty: the tag path alone.
    pub topic_prefix: String,
    /// 0, 1 or 2.
    pub qos: u8,
    /// Publish retained, so a new subscriber gets each tag's last value at once.
    pub retain: bool,
    /// Publish live values too, for tags the history stream does not carry.
    pub live: bool,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub password_file: Option<PathBuf>,
    /// TLS to the broker (rustls).
    pub tls: bool,
    /// PEM file of the CA certificates to trust; `None`: the system's.
    pub ca_file: Option<PathBuf>,
    pub keep_alive: Duration,
    /// QoS 2 messages awaiting the broker's acknowledgement at once: at most the broker's
    /// limit for a client's incoming QoS 2 messages, so that it never has to queue one.
    pub qos2_max_inflight: u16,
    /// What the messages are: a JSON document per value, or Sparkplug B.
    pub format: MqttFormat,
    pub spool: Spool,
}

/// `[mqtt] format`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum MqttFormat {
    /// A topic per tag under `topic_prefix`, a JSON document per value.
    #[default]
    Json,
    /// gateway-rx is a Sparkplug B edge node: `spBv1.0/<group_id>/<type>/<edge_node_id>[/<device>]`.
    SparkplugB {
        group_id: String,
        edge_node_id: String,
    },
}

/// `[postgres]`: the PostgreSQL (or TimescaleDB) sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Postgres {
    /// A `postgresql://` URL; when set, `host`, `port`, `user` and `dbname` are not.
    pub url: Option<String>,
    /// Host name, IP address, or a Unix socket directory (starting with `/`).
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Option<Secret>,
    pub password_file: Option<PathBuf>,
    pub dbname: String,
    /// The schema holding the sink's tables (`tags`, `samples`), created if missing.
    pub schema: String,
    /// Samples per COPY, at most.
    pub batch_samples: usize,
    pub spool: Spool,
}

const MQTT_KEYS: &[&str] = &[
    "host",
    "port",
    "client_id",
    "topic_prefix",
    "qos",
    "retain",
    "live",
    "username",
    "password_file",
    "tls",
    "ca_file",
    "keep_alive_s",
    "qos2_max_inflight",
    "format",
    "group_id",
    "edge_node_id",
    "spool_dir",
    "spool_max_bytes",
];

const PG_KEYS: &[&str] = &[
    "url",
    "host",
    "port",
    "user",
    "password_file",
    "dbname",
    "schema",
    "sslmode",
    "batch_samples",
    "spool_dir",
    "spool_max_bytes",
];

pub(crate) fn bool_or(
    ctx: &mut Ctx<'_>,
    t: &Tbl<'_, '_>,
    key: &str,
    default: bool,
) -> Option<bool> {
    match t.boolean(ctx, key, Req::Optional) {
        Some(b) => Some(b.val),
        None if t.has(key) => None,
        None => Some(default),
    }
}

pub(crate) fn opt_string(
    ctx: &mut Ctx<'_>,
    t: &Tbl<'_, '_>,
    key: &str,
) -> Option<Option<At<String>>> {
    match t.string(ctx, key, Req::Optional) {
        Some(s) => Some(Some(s)),
        None if t.has(key) => None,
        None => Some(None),
    }
}

pub(crate) fn host(ctx: &mut Ctx<'_>, h: At<String>) -> Option<String> {
    let v = h.val.trim();
    if v.is_empty() || v.chars().any(|c| c.is_whitespace() || c.is_control()) {
        ctx.error(
            h.span.start,
            &h.key,
            format!(
                "\"{}\" is not a host; give a host name or an IP address without a port, like \
                 \"broker.example.net\" or \"192.0.2.20\"",
                h.val
            ),
        );
        return None;
    }
    Some(v.to_owned())
}

pub(crate) fn spool(
    ctx: &mut Ctx<'_>,
    t: &Tbl<'_, '_>,
    sink: &str,
    store_dir: &Path,
) -> Option<Spool> {
    let dir = match t.string(ctx, "spool_dir", Req::Optional) {
        None if t.has("spool_dir") => None,
        None => Some(store_dir.join(SPOOL_DIR_DEFAULT).join(sink)),
        Some(p) => common::dir_path(ctx, &p, "the spool's directory"),
    };
    let max_bytes = common::int_or(
        ctx,
        t,
        "spool_max_bytes",
        SPOOL_MAX_BYTES_MIN as i64..=SPOOL_MAX_BYTES_MAX as i64,
        "bytes",
        SPOOL_MAX_BYTES_DEFAULT as i64,
    );
    Some(Spool {
        dir: dir?,
        max_bytes: max_bytes? as u64,
    })
}

/// A password file: resolved against the config's directory, no permission bits for group or
/// others, UTF-8, the first line is the password.
pub(crate) fn password_file(
    ctx: &mut Ctx<'_>,
    t: &Tbl<'_, '_>,
) -> Option<Option<(PathBuf, Secret)>> {
    let Some(p) = opt_string(ctx, t, "password_file")? else {
        return Some(None);
    };
    read_password_file(ctx, &p).map(Some)
}

/// A password file named by `p`: resolved against the config's directory, a small regular
/// file, no permission bits for group or others, UTF-8; the first line is the password. Used
/// by every key that names one (sinks, OPC UA users and endpoints).
pub(crate) fn read_password_file(ctx: &mut Ctx<'_>, p: &At<String>) -> Option<(PathBuf, Secret)> {
    let path = common::dir_path(ctx, p, "the password file")?;
    let shown = path.display().to_string();
    let meta = match std::fs::metadata(&path) {
        Ok(m) => m,
        Err(e) => {
            ctx.error(
                p.span.start,
                &p.key,
                format!(
                    "cannot read password file {shown}: {e}; the path is relative to this \
                     config file's directory; write the password on its first line and \
                     `chmod 600` the file"
                ),
            );
            return None;
        }
    };
    if !meta.is_file() || meta.len() > PASSWORD_FILE_MAX_BYTES {
        ctx.error(
            p.span.start,
            &p.key,
            format!(
                "password file {shown} is not a small regular file; write the password on its \
                 first line"
            ),
        );
        return None;
    }
    if let Some(why) = common::loose_mode(&path) {
        ctx.error(p.span.start, &p.key, format!("password file {shown} {why}"));
        return None;
    }
    let text = match std::fs::read(&path).map(String::from_utf8) {
        Ok(Ok(t)) => t,
        Ok(Err(_)) => {
            ctx.error(
                p.span.start,
                &p.key,
                format!("password file {shown} is not UTF-8 text"),
            );
            return None;
        }
        Err(e) => {
            ctx.error(
                p.span.start,
                &p.key,
                format!(
                    "cannot read password file {shown}: {e}; check that the daemon's user owns it"
                ),
            );
            return None;
        }
    };
    let password = text.lines().next().unwrap_or("").to_owned();
    if password.is_empty() {
        ctx.error(
            p.span.start,
            &p.key,
            format!("password file {shown} is empty; write the password on its first line"),
        );
        return None;
    }
    Some((path, Secret(password)))
}

fn port(ctx: &mut Ctx<'_>, t: &Tbl<'_, '_>, default: u16) -> Option<u16> {
    common::int_or(ctx, t, "port", 1..=65535, "", i64::from(default)).map(|p| p as u16)
}

/// The optional `[mqtt]` table: `Some(None)` when absent, `None` when invalid (reported).
pub(crate) fn parse_mqtt(
    ctx: &mut Ctx<'_>,
    root: &Tbl<'_, '_>,
    store_dir: &Path,
) -> Option<Option<Mqtt>> {
    let t = match root.table(ctx, "mqtt", Req::Optional) {
        Some(t) => t,
        None if root.has("mqtt") => return None,
        None => return Some(None),
    };
    t.check_keys(ctx, MQTT_KEYS);
    let host_v = t
        .string(
            ctx,
            "host",
            Req::Required(
                "give the broker's host name or IP address, like host = \"127.0.0.1\" (or \
                 remove [mqtt] to run without the publisher)",
            ),
        )
        .and_then(|h| host(ctx, h));
    let tls = bool_or(ctx, &t, "tls", false);
    let port = port(
        ctx,
        &t,
        if tls == Some(true) {
            MQTT_TLS_PORT_DEFAULT
        } else {
            MQTT_PORT_DEFAULT
        },
    );
    let client_id = match opt_string(ctx, &t, "client_id") {
        None => None,
        Some(None) => Some(MQTT_CLIENT_ID_DEFAULT.to_owned()),
        Some(Some(c)) => {
            let ok = !c.val.is_empty()
                && c.val.len() <= 64
                && c.val
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || "_.-".contains(ch));
            if ok {
                Some(c.val)
            } else {
                ctx.error(
                    c.span.start,
                    &c.key,
                    format!(
                        "client id \"{}\" is not valid; use 1 to 64 letters, digits, '_', '.' \
                         or '-' (at most 23 for the strictest brokers), like \"gateway-rx\"",
                        c.val
                    ),
                );
                None
            }
        }
    };
    let topic_prefix = match opt_string(ctx, &t, "topic_prefix") {
        None => None,
        Some(None) => Some(MQTT_TOPIC_PREFIX_DEFAULT.to_owned()),
        Some(Some(p)) => {
            let v = p.val.trim_end_matches('/');
            let why = if v.contains(['+', '#']) {
                Some("contains a wildcard ('+' or '#'), which cannot appear in a topic name")
            } else if v.contains('\0') {
                Some("contains a NUL character")
            } else if v.chars().any(topic_refuses) {
                Some(
                    "contains a control character or a Unicode noncharacter, which a broker may \
                     refuse",
                )
            } else if v.starts_with('$') {
                Some("starts with '$', which brokers reserve for their own topics ($SYS)")
            } else if v.len() > 1024 {
                Some("is longer than 1024 bytes")
            } else {
                None
            };
            match why {
                Some(why) => {
                    ctx.error(
                        p.span.start,
                        &p.key,
                        format!(
                            "topic prefix \"{}\" {why}; give topic levels separated by '/', \
                             like \"plant1/gateway\" (or \"\" for none)",
                            p.val
                        ),
                    );
                    None
                }
                None => Some(v.to_owned()),
            }
        }
    };
    let qos = common::int_or(ctx, &t, "qos", 0..=2, "", i64::from(MQTT_QOS_DEFAULT));
    let retain = bool_or(ctx, &t, "retain", true);
    let live = bool_or(ctx, &t, "live", true);
    let username = opt_string(ctx, &t, "username").map(|u| u.map(|u| u.val));
    let password = password_file(ctx, &t);
    if let (Some(None), Some(Some(_))) = (&username, &password) {
        ctx.error(
            t.offset_of("password_file"),
            t.key("password_file"),
            "a password needs a user name; add username = \"...\" to [mqtt]",
        );
    }
    let ca_file = match opt_string(ctx, &t, "ca_file") {
        None => None,
        Some(None) => Some(None),
        Some(Some(p)) => {
            let path = common::dir_path(ctx, &p, "the CA certificates' PEM file");
            match (path, tls) {
                (Some(path), Some(false)) => {
                    ctx.error(
                        p.span.start,
                        &p.key,
                        "ca_file is only used with TLS; add tls = true to [mqtt] or remove it",
                    );
                    let _ = path;
                    None
                }
                (Some(path), _) if !path.is_file() => {
                    ctx.error(
                        p.span.start,
                        &p.key,
                        format!(
                            "CA file {} does not exist or is not a file; give a PEM file of the \
                             certificates to trust, or remove ca_file to trust the system's",
                            path.display()
                        ),
                    );
                    None
                }
                (path, _) => path.map(Some),
            }
        }
    };
    let keep_alive =
        common::duration_s(ctx, &t, "keep_alive_s", 5..=3600, MQTT_KEEP_ALIVE_S_DEFAULT);
    let qos2_max_inflight = common::int_or(
        ctx,
        &t,
        "qos2_max_inflight",
        1..=i64::from(MQTT_WINDOW),
        "",
        i64::from(MQTT_QOS2_MAX_INFLIGHT_DEFAULT),
    );
    let format = mqtt_format(ctx, &t);
    if let Some(MqttFormat::SparkplugB { .. }) = &format {
        // Sparkplug fixes the topics and forbids retained data messages: a key saying
        // otherwise would be silently ignored, so it is refused.
        for key in ["topic_prefix", "retain"] {
            if t.has(key) {
                ctx.error(
                    t.offset_of(key),
                    t.key(key),
                    format!(
                        "{key} is not used with format = \"sparkplug_b\" (Sparkplug fixes the \
                         topics and never retains data); remove it"
                    ),
                );
            }
        }
    } else {
        for key in ["group_id", "edge_node_id"] {
            if t.has(key) {
                ctx.error(
                    t.offset_of(key),
                    t.key(key),
                    format!(
                        "{key} is only used with format = \"sparkplug_b\"; remove it or add that"
                    ),
                );
            }
        }
    }
    let spool = spool(ctx, &t, "mqtt", store_dir);
    let (password_file, password) = match password? {
        Some((p, s)) => (Some(p), Some(s)),
        None => (None, None),
    };
    Some(Some(Mqtt {
        host: host_v?,
        port: port?,
        client_id: client_id?,
        topic_prefix: topic_prefix?,
        qos: qos? as u8,
        retain: retain?,
        live: live?,
        username: username?,
        password,
        password_file,
        tls: tls?,
        ca_file: ca_file?,
        keep_alive: keep_alive?,
        qos2_max_inflight: qos2_max_inflight? as u16,
        format: format?,
        spool: spool?,
    }))
}

/// `format`, and with Sparkplug its `group_id` and `edge_node_id` (required).
fn mqtt_format(ctx: &mut Ctx<'_>, t: &Tbl<'_, '_>) -> Option<MqttFormat> {
    let f = match t.string(ctx, "format", Req::Optional) {
        None if t.has("format") => return None,
        None => return Some(MqttFormat::Json),
        Some(f) => f,
    };
    match f.val.as_str() {
        "json" => return Some(MqttFormat::Json),
        "sparkplug_b" => {}
        other => {
            ctx.error(
                f.span.start,
                &f.key,
                format!("format \"{other}\" is not known; give \"json\" or \"sparkplug_b\""),
            );
            return None;
        }
    }
    let mut id = |key: &str, example: &str| -> Option<String> {
        let v = t.string(
            ctx,
            key,
            Req::Required("Sparkplug B needs its group id and edge node id, like group_id = \"plant1\" and edge_node_id = \"gateway-rx\""),
        )?;
        // Sparkplug ids are topic levels: no separator, no wildcard.
        let bad = v.val.is_empty()
            || v.val.len() > 256
            || v.val.chars().any(|c| c == '/' || topic_refuses(c));
        if bad {
            ctx.error(
                v.span.start,
                &v.key,
                format!(
                    "{key} \"{}\" is not a Sparkplug id; give 1 to 256 characters without '/', \
                     '+', '#' or control characters, like \"{example}\"",
                    v.val
                ),
            );
            return None;
        }
        Some(v.val)
    };
    let group_id = id("group_id", "plant1");
    let edge_node_id = id("edge_node_id", "gateway-rx");
    Some(MqttFormat::SparkplugB {
        group_id: group_id?,
        edge_node_id: edge_node_id?,
    })
}

/// The optional `[postgres]` table: `Some(None)` when absent, `None` when invalid (reported).
pub(crate) fn parse_postgres(
    ctx: &mut Ctx<'_>,
    root: &Tbl<'_, '_>,
    store_dir: &Path,
) -> Option<Option<Postgres>> {
    let t = match root.table(ctx, "postgres", Req::Optional) {
        Some(t) => t,
        None if root.has("postgres") => return None,
        None => return Some(None),
    };
    t.check_keys(ctx, PG_KEYS);
    let url = match opt_string(ctx, &t, "url") {
        None => None,
        Some(None) => Some(None),
        Some(Some(u)) => check_url(ctx, &u).map(Some),
    };
    if let Some(Some(_)) = &url {
        for k in ["host", "port", "user", "dbname"] {
            if t.has(k) {
                ctx.error(
                    t.offset_of(k),
                    t.key(k),
                    format!(
                        "`{k}` and `url` both say where to connect; give either url or \
                         host/port/user/dbname"
                    ),
                );
            }
        }
    }
    let host_v = if t.has("url") {
        Some(String::new())
    } else {
        t.string(
            ctx,
            "host",
            Req::Required(
                "give the PostgreSQL server's host name or IP address, like host = \
                 \"127.0.0.1\", or a url = \"postgresql://gateway@db.example/gateway\" (or \
                 remove [postgres] to run without the sink)",
            ),
        )
        .and_then(|h| host(ctx, h))
    };
    let port = port(ctx, &t, PG_PORT_DEFAULT);
    let user = match opt_string(ctx, &t, "user") {
        None => None,
        Some(None) => Some(PG_USER_DEFAULT.to_owned()),
        Some(Some(u)) if u.val.trim().is_empty() => {
            ctx.error(u.span.start, &u.key, "the user name is empty");
            None
        }
        Some(Some(u)) => Some(u.val),
    };
    let dbname = match opt_string(ctx, &t, "dbname") {
        None => None,
        Some(None) => Some(PG_DBNAME_DEFAULT.to_owned()),
        Some(Some(u)) if u.val.trim().is_empty() => {
            ctx.error(u.span.start, &u.key, "the database name is empty");
            None
        }
        Some(Some(u)) => Some(u.val),
    };
    let schema = match opt_string(ctx, &t, "schema") {
        None => None,
        Some(None) => Some(PG_SCHEMA_DEFAULT.to_owned()),
        Some(Some(u)) => {
            let ok = u.val.len() <= 63
                && u.val
                    .starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
                && u.val
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            if ok {
                Some(u.val)
            } else {
                ctx.error(
                    u.span.start,
                    &u.key,
                    format!(
                        "schema \"{}\" is not a plain PostgreSQL identifier; use 1 to 63 \
                         lowercase letters, digits or '_', not starting with a digit, like \
                         \"gateway\"",
                        u.val
                    ),
                );
                None
            }
        }
    };
    let sslmode = match opt_string(ctx, &t, "sslmode") {
        None => None,
        Some(None) => Some(()),
        Some(Some(m)) if m.val == "disable" => Some(()),
        Some(Some(m)) => {
            ctx.error(
                m.span.start,
                &m.key,
                format!(
                    "sslmode \"{}\" is not supported yet: this build connects to PostgreSQL \
                     without TLS; use sslmode = \"disable\" over a trusted network or a Unix \
                     socket (host = \"/var/run/postgresql\"), or a TLS tunnel",
                    m.val
                ),
            );
            None
        }
    };
    let batch = common::int_or(
        ctx,
        &t,
        "batch_samples",
        PG_BATCH_SAMPLES_MIN as i64..=PG_BATCH_SAMPLES_MAX as i64,
        "samples",
        PG_BATCH_SAMPLES_DEFAULT as i64,
    );
    let password = password_file(ctx, &t);
    let spool = spool(ctx, &t, "postgres", store_dir);
    sslmode?;
    let (password_file, password) = match password? {
        Some((p, s)) => (Some(p), Some(s)),
        None => (None, None),
    };
    Some(Some(Postgres {
        url: url?,
        host: host_v?,
        port: port?,
        user: user?,
        password,
        password_file,
        dbname: dbname?,
        schema: schema?,
        batch_samples: batch? as usize,
        spool: spool?,
    }))
}

/// A `postgres://` or `postgresql://` URL without a password in it (that goes in
/// `password_file`) and without TLS modes this build cannot do.
fn check_url(ctx: &mut Ctx<'_>, u: &At<String>) -> Option<String> {
    let v = u.val.trim();
    let Some(rest) = v
        .strip_prefix("postgresql://")
        .or_else(|| v.strip_prefix("postgres://"))
    else {
        ctx.error(
            u.span.start,
            &u.key,
            format!(
                "\"{}\" is not a PostgreSQL URL; write it like \
                 \"postgresql://gateway@db.example:5432/gateway\"",
                u.val
            ),
        );
        return None;
    };
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    if let Some((userinfo, _)) = authority.rsplit_once('@')
        && userinfo.contains(':')
    {
        ctx.error(
            u.span.start,
            &u.key,
            "the URL holds a password; put the password in a file named by password_file \
             (mode 600) and leave it out of the URL",
        );
        return None;
    }
    let query = rest.split_once('?').map_or("", |(_, q)| q);
    for param in query.split('&') {
        let (k, val) = param.split_once('=').unwrap_or((param, ""));
        if k == "password" {
            ctx.error(
                u.span.start,
                &u.key,
                "the URL holds a password; put it in password_file instead",
            );
            return None;
        }
        if k == "sslmode" && val != "disable" {
            ctx.error(
                u.span.start,
                &u.key,
                format!(
                    "sslmode={val} is not supported yet: this build connects to PostgreSQL \
                     without TLS; use sslmode=disable over a trusted network or a Unix socket"
                ),
            );
            return None;
        }
    }
    if authority.is_empty() && !query.split('&').any(|p| p.starts_with("host=")) {
        ctx.error(
            u.span.start,
            &u.key,
            "the URL names no host; write it like \"postgresql://gateway@db.example/gateway\"",
        );
        return None;
    }
    Some(v.to_owned())
}
