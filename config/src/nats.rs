//! `[nats]` in the RX schema: the NATS JetStream sink, fed like the other sinks through a
//! durable spool of its own. Absent means off.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common;
use crate::sinks::{Secret, Spool, bool_or, opt_string, read_password_file, spool};
use crate::walk::{At, Ctx, Req, Tbl};

/// Defaults and limits of `[nats]`.
pub mod limits {
    pub const NATS_PORT_DEFAULT: u16 = 4222;
    pub const STREAM_DEFAULT: &str = "GATEWAY";
    pub const SUBJECT_PREFIX_DEFAULT: &str = "gateway";
    pub const REPLICAS_DEFAULT: u8 = 1;
    /// JetStream's own ceiling on a stream's replicas.
    pub const REPLICAS_MAX: u8 = 5;
    /// The server's default duplicate window: long enough for a reconnect after a node or
    /// cluster restart, short enough that the server's table of message ids stays small.
    pub const DUPLICATE_WINDOW_S_DEFAULT: u64 = 120;
    pub const DUPLICATE_WINDOW_S_MAX: u64 = 7 * 86_400;
    pub const MAX_IN_FLIGHT_DEFAULT: u32 = 256;
    pub const MAX_IN_FLIGHT_MAX: u32 = 10_000;
    /// Bytes of payload awaiting the server's acknowledgement at once, whatever
    /// `max_in_flight` allows.
    pub const MAX_IN_FLIGHT_BYTES: usize = 8 << 20;
    pub const ACK_TIMEOUT_S_DEFAULT: u64 = 10;
    pub const SERVERS_MAX: usize = 32;
}
use limits::*;

/// How gateway-rx proves who it is to the NATS servers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NatsAuth {
    None,
    /// A `.creds` file (JWT and NKey seed, as `nsc` writes it).
    CredsFile(PathBuf),
    /// An NKey seed (`SU...`), read from its file.
    NKeySeed {
        file: PathBuf,
        seed: Secret,
    },
    UserPassword {
        user: String,
        password: Secret,
        file: PathBuf,
    },
}

/// `[nats]`: the NATS JetStream sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nats {
    /// `nats://host:port` or `tls://host:port` URLs: the cluster's seed servers.
    pub servers: Vec<String>,
    pub auth: NatsAuth,
    /// TLS to the servers (rustls); also on when a URL says `tls://`.
    pub tls: bool,
    /// PEM file of the CA certificates to trust; `None`: the system's.
    pub ca_file: Option<PathBuf>,
    /// The stream the samples go to, created if missing.
    pub stream: String,
    /// Subjects are `<subject_prefix>.<tag tokens>`; the stream is made for
    /// `<subject_prefix>.>`.
    pub subject_prefix: String,
    pub replicas: u8,
    /// Samples older than this are dropped by the server; zero: kept.
    pub max_age: Duration,
    /// The stream holds at most this (oldest dropped first); `None`: no limit.
    pub max_bytes: Option<u64>,
    /// The server drops a message whose id it has seen within this.
    pub duplicate_window: Duration,
    /// Publishes awaiting the server's acknowledgement at once.
    pub max_in_flight: u32,
    /// An acknowledgement not back within this fails the publish (it is retried).
    pub ack_timeout: Duration,
    pub spool: Spool,
}

const NATS_KEYS: &[&str] = &[
    "servers",
    "creds_file",
    "nkey_seed_file",
    "username",
    "password_file",
    "tls",
    "ca_file",
    "stream",
    "subject_prefix",
    "replicas",
    "max_age_s",
    "max_bytes",
    "duplicate_window_s",
    "max_in_flight",
    "ack_timeout_s",
    "spool_dir",
    "spool_max_bytes",
];

/// Whether `c` may not stand in a NATS subject token: the separator, the wildcards,
/// whitespace, and anything not printable ASCII (the server accepts more, clients and tools
/// do not all agree on it).
pub fn token_refuses(c: char) -> bool {
    !c.is_ascii_graphic() || matches!(c, '.' | '*' | '>')
}

/// A server URL: `nats://`, `tls://` or bare `host:port`, no credentials in it.
fn server(ctx: &mut Ctx<'_>, u: &At<String>) -> Option<String> {
    let v = u.val.trim();
    let (scheme, rest) = match v.split_once("://") {
        Some((s, r)) => (s, r),
        None => ("nats", v),
    };
    let why = if !matches!(scheme, "nats" | "tls") {
        Some(format!("has the scheme \"{scheme}\""))
    } else if rest.contains('@') {
        Some("holds credentials; give them by creds_file, nkey_seed_file or username and password_file".into())
    } else if rest.is_empty() || rest.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some("names no host".into())
    } else {
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(':') || h.starts_with('[') => (h, Some(p)),
            _ => (rest, None),
        };
        if host.is_empty() {
            Some("names no host".into())
        } else if port.is_some_and(|p| p.parse::<u16>().map_or(true, |p| p == 0)) {
            Some("has a port that is not 1 to 65535".into())
        } else {
            None
        }
    };
    match why {
        Some(why) => {
            ctx.error(
                u.span.start,
                &u.key,
                format!(
                    "server \"{}\" {why}; give a URL like \"nats://10.0.0.5:{NATS_PORT_DEFAULT}\" \
                     or \"tls://nats1.example.net:{NATS_PORT_DEFAULT}\"",
                    u.val
                ),
            );
            None
        }
        None if v.contains("://") => Some(v.to_owned()),
        None => Some(format!("nats://{v}")),
    }
}

fn stream_name(ctx: &mut Ctx<'_>, s: At<String>) -> Option<String> {
    let ok = !s.val.is_empty()
        && s.val.len() <= 64
        && s.val
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        return Some(s.val);
    }
    ctx.error(
        s.span.start,
        &s.key,
        format!(
            "stream name \"{}\" is not valid; use 1 to 64 letters, digits, '_' or '-', like \
             \"{STREAM_DEFAULT}\"",
            s.val
        ),
    );
    None
}

fn subject_prefix(ctx: &mut Ctx<'_>, p: At<String>) -> Option<String> {
    let why = if p.val.is_empty() {
        Some("is empty (the stream's subjects need a prefix of their own)")
    } else if p.val.starts_with('$') {
        Some("starts with '$', which NATS reserves for its own subjects ($JS, $SYS)")
    } else if p.val.split('.').any(str::is_empty) {
        Some("has an empty token (a leading, trailing or doubled '.')")
    } else if p.val.contains(['*', '>']) {
        Some("contains a wildcard ('*' or '>')")
    } else if p.val.chars().any(|c| c != '.' && token_refuses(c)) {
        Some("contains whitespace or a character that is not printable ASCII")
    } else if p.val.len() > 256 {
        Some("is longer than 256 bytes")
    } else {
        None
    };
    match why {
        None => Some(p.val),
        Some(why) => {
            ctx.error(
                p.span.start,
                &p.key,
                format!(
                    "subject prefix \"{}\" {why}; give tokens of printable ASCII separated by \
                     '.', like \"plant1.gateway\"",
                    p.val
                ),
            );
            None
        }
    }
}

/// A secret file that must exist and be the daemon's own (like a password file).
fn secret_path(ctx: &mut Ctx<'_>, p: &At<String>, what: &str) -> Option<PathBuf> {
    let path = common::dir_path(ctx, p, what)?;
    if !path.is_file() {
        ctx.error(
            p.span.start,
            &p.key,
            format!(
                "{what} {} does not exist or is not a file; the path is relative to this config \
                 file's directory",
                path.display()
            ),
        );
        return None;
    }
    if let Some(why) = common::loose_mode(&path) {
        ctx.error(
            p.span.start,
            &p.key,
            format!("{what} {} {why}", path.display()),
        );
        return None;
    }
    Some(path)
}

fn auth(ctx: &mut Ctx<'_>, t: &Tbl<'_, '_>) -> Option<NatsAuth> {
    let given: Vec<&str> = ["creds_file", "nkey_seed_file", "username"]
        .into_iter()
        .filter(|k| t.has(k))
        .collect();
    if given.len() > 1 {
        ctx.error(
            t.offset_of(given[1]),
            t.key(given[1]),
            format!(
                "`{}` and `{}` are two ways to authenticate; give one of creds_file, \
                 nkey_seed_file or username (with password_file)",
                given[0], given[1]
            ),
        );
        return None;
    }
    if t.has("password_file") && !t.has("username") {
        ctx.error(
            t.offset_of("password_file"),
            t.key("password_file"),
            "a password needs a user name; add username = \"...\" to [nats]",
        );
        return None;
    }
    if let Some(p) = opt_string(ctx, t, "creds_file")? {
        return secret_path(ctx, &p, "credentials file").map(NatsAuth::CredsFile);
    }
    if let Some(p) = opt_string(ctx, t, "nkey_seed_file")? {
        let (file, seed) = read_password_file(ctx, &p)?;
        if !seed.expose().trim().starts_with('S') {
            ctx.error(
                p.span.start,
                &p.key,
                format!(
                    "NKey seed file {} does not start with a seed (\"SU...\" for a user, as `nk \
                     -gen user` writes it)",
                    file.display()
                ),
            );
            return None;
        }
        let seed = Secret::new(seed.expose().trim());
        return Some(NatsAuth::NKeySeed { file, seed });
    }
    if let Some(u) = opt_string(ctx, t, "username")? {
        if u.val.is_empty() {
            ctx.error(u.span.start, &u.key, "the user name is empty");
            return None;
        }
        let p = t.string(
            ctx,
            "password_file",
            Req::Required("give the user's password in a file (mode 600), password_file = \"...\""),
        )?;
        let (file, password) = read_password_file(ctx, &p)?;
        return Some(NatsAuth::UserPassword {
            user: u.val,
            password,
            file,
        });
    }
    Some(NatsAuth::None)
}

/// The optional `[nats]` table: `Some(None)` when absent, `None` when invalid (reported).
pub(crate) fn parse_nats(
    ctx: &mut Ctx<'_>,
    root: &Tbl<'_, '_>,
    store_dir: &Path,
) -> Option<Option<Nats>> {
    let t = match root.table(ctx, "nats", Req::Optional) {
        Some(t) => t,
        None if root.has("nats") => return None,
        None => return Some(None),
    };
    t.check_keys(ctx, NATS_KEYS);
    let servers = t
        .strings(
            ctx,
            "servers",
            Req::Required(
                "give the cluster's servers, like servers = [\"nats://10.0.0.5:4222\", \
                 \"nats://10.0.0.6:4222\"] (or remove [nats] to run without the sink)",
            ),
        )
        .and_then(|list| {
            if list.is_empty() || list.len() > SERVERS_MAX {
                ctx.error(
                    t.offset_of("servers"),
                    t.key("servers"),
                    format!("give 1 to {SERVERS_MAX} servers"),
                );
                return None;
            }
            let out: Vec<Option<String>> = list.iter().map(|u| server(ctx, u)).collect();
            out.into_iter().collect::<Option<Vec<String>>>()
        });
    let auth = auth(ctx, &t);
    let tls = bool_or(ctx, &t, "tls", false);
    let ca_file = match opt_string(ctx, &t, "ca_file") {
        None => None,
        Some(None) => Some(None),
        Some(Some(p)) => match common::dir_path(ctx, &p, "the CA certificates' PEM file") {
            Some(path) if path.is_file() => Some(Some(path)),
            Some(path) => {
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
            None => None,
        },
    };
    let stream = match opt_string(ctx, &t, "stream") {
        None => None,
        Some(None) => Some(STREAM_DEFAULT.to_owned()),
        Some(Some(s)) => stream_name(ctx, s),
    };
    let prefix = match opt_string(ctx, &t, "subject_prefix") {
        None => None,
        Some(None) => Some(SUBJECT_PREFIX_DEFAULT.to_owned()),
        Some(Some(p)) => subject_prefix(ctx, p),
    };
    let replicas = common::int_or(
        ctx,
        &t,
        "replicas",
        1..=i64::from(REPLICAS_MAX),
        "",
        i64::from(REPLICAS_DEFAULT),
    );
    let max_age = common::duration_s(ctx, &t, "max_age_s", 0..=100 * 365 * 86_400, 0);
    let max_bytes = common::int_or(ctx, &t, "max_bytes", 0..=1 << 60, "bytes (0: no limit)", 0)
        .map(|b| (b > 0).then_some(b as u64));
    let duplicate_window = common::duration_s(
        ctx,
        &t,
        "duplicate_window_s",
        1..=DUPLICATE_WINDOW_S_MAX as i64,
        DUPLICATE_WINDOW_S_DEFAULT,
    );
    if let (Some(age), Some(dup)) = (max_age, duplicate_window)
        && !age.is_zero()
        && dup > age
    {
        ctx.error(
            t.offset_of("duplicate_window_s"),
            t.key("duplicate_window_s"),
            format!(
                "the duplicate window ({} s) is longer than max_age_s ({} s), which the server \
                 refuses; make it at most max_age_s",
                dup.as_secs(),
                age.as_secs()
            ),
        );
    }
    let max_in_flight = common::int_or(
        ctx,
        &t,
        "max_in_flight",
        1..=i64::from(MAX_IN_FLIGHT_MAX),
        "publishes",
        i64::from(MAX_IN_FLIGHT_DEFAULT),
    );
    let ack_timeout = common::duration_s(ctx, &t, "ack_timeout_s", 1..=600, ACK_TIMEOUT_S_DEFAULT);
    let spool = spool(ctx, &t, "nats", store_dir);
    let servers = servers?;
    let tls = tls? || servers.iter().any(|s| s.starts_with("tls://"));
    let ca_file = ca_file?;
    if ca_file.is_some() && !tls {
        ctx.error(
            t.offset_of("ca_file"),
            t.key("ca_file"),
            "ca_file is only used with TLS; add tls = true to [nats] (or tls:// URLs) or remove it",
        );
        return None;
    }
    if let (Some(age), Some(dup)) = (max_age, duplicate_window)
        && !age.is_zero()
        && dup > age
    {
        return None;
    }
    Some(Some(Nats {
        servers,
        auth: auth?,
        tls,
        ca_file,
        stream: stream?,
        subject_prefix: prefix?,
        replicas: replicas? as u8,
        max_age: max_age?,
        max_bytes: max_bytes?,
        duplicate_window: duplicate_window?,
        max_in_flight: max_in_flight? as u32,
        ack_timeout: ack_timeout?,
        spool: spool?,
    }))
}
