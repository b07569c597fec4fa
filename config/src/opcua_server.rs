//! gateway-rx's OPC UA mirror server: the `[opcua_server]` section. Absent means off.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use crate::common;
use crate::sinks::Secret;
use crate::walk::{At, Ctx, Req, Tbl};

/// Defaults and limits of `[opcua_server]`.
pub mod limits {
    pub const PORT_DEFAULT: u16 = 4840;
    pub const BIND_DEFAULT: &str = "0.0.0.0:4840";
    pub const NAMESPACE_URI_DEFAULT: &str = "urn:gateway:mirror";
    pub const APPLICATION_NAME_DEFAULT: &str = "gateway-rx OPC UA mirror";
    pub const APPLICATION_URI_DEFAULT: &str = "urn:gateway:rx";
    /// Default PKI directory: this name in the store's directory.
    pub const PKI_DIR_DEFAULT: &str = "opcua-pki";
    pub const MAX_SESSIONS_DEFAULT: usize = 20;
    pub const MAX_SESSIONS_MAX: usize = 1000;
    pub const MAX_SUBSCRIPTIONS_PER_SESSION_DEFAULT: usize = 10;
    pub const MAX_SUBSCRIPTIONS_PER_SESSION_MAX: usize = 1000;
    pub const MAX_MONITORED_ITEMS_PER_SUBSCRIPTION_DEFAULT: usize = 10_000;
    pub const MAX_MONITORED_ITEMS_PER_SUBSCRIPTION_MAX: usize = 1_000_000;
    pub const MAX_HISTORY_CONTINUATION_POINTS_DEFAULT: usize = 10;
    pub const MAX_HISTORY_CONTINUATION_POINTS_MAX: usize = 1000;
}
use limits::*;

/// `[opcua_server]`: the read-only OPC UA mirror of the plant's tags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpcUaServer {
    /// Address to listen on. Port 0 picks a free port (tests).
    pub bind: SocketAddr,
    /// The namespace the mirrored tags' nodes live in.
    pub namespace_uri: String,
    pub application_name: String,
    pub application_uri: String,
    /// `own/cert.der` and `private/private.pem` (created on first start when absent),
    /// `trusted/` and `rejected/` for client certificates.
    pub pki_dir: PathBuf,
    /// Accept every client certificate without it being in `trusted/`. For tests only.
    pub insecure_trust_any_client_certificate: bool,
    /// At least one; no duplicates.
    pub endpoints: Vec<Endpoint>,
    /// Anonymous sessions are accepted.
    pub anonymous: bool,
    pub users: Vec<User>,
    pub max_sessions: usize,
    pub max_subscriptions_per_session: usize,
    pub max_monitored_items_per_subscription: usize,
    /// Open HistoryRead continuation points per session.
    pub max_history_continuation_points: usize,
}

/// A security policy and message security mode offered to clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Endpoint {
    pub policy: SecurityPolicy,
    pub mode: SecurityMode,
}

use crate::opcua::{MODE_ALIASES, MODES, POLICIES, POLICY_ALIASES};
pub use crate::opcua::{SecurityMode, SecurityPolicy};

/// A user name and its password (read from a file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub password: Secret,
    pub password_file: PathBuf,
}

const KEYS: &[&str] = &[
    "bind",
    "namespace_uri",
    "application_name",
    "application_uri",
    "pki_dir",
    "insecure_trust_any_client_certificate",
    "endpoint",
    "anonymous",
    "user",
    "max_sessions",
    "max_subscriptions_per_session",
    "max_monitored_items_per_subscription",
    "max_history_continuation_points",
];
const ENDPOINT_KEYS: &[&str] = &["security_policy", "security_mode"];
const USER_KEYS: &[&str] = &["name", "password_file"];

/// The endpoints offered when the config lists none: any client can read without setting up
/// certificates, and one that can gets a signed and encrypted channel.
pub const ENDPOINTS_DEFAULT: [Endpoint; 2] = [
    Endpoint {
        policy: SecurityPolicy::None,
        mode: SecurityMode::None,
    },
    Endpoint {
        policy: SecurityPolicy::Basic256Sha256,
        mode: SecurityMode::SignAndEncrypt,
    },
];

fn bool_or(ctx: &mut Ctx<'_>, t: &Tbl<'_, '_>, key: &str, default: bool) -> Option<bool> {
    match t.boolean(ctx, key, Req::Optional) {
        Some(b) => Some(b.val),
        None if t.has(key) => None,
        None => Some(default),
    }
}

fn string_or(ctx: &mut Ctx<'_>, t: &Tbl<'_, '_>, key: &str, default: &str) -> Option<String> {
    match t.string(ctx, key, Req::Optional) {
        None if t.has(key) => None,
        None => Some(default.to_owned()),
        Some(s) if s.val.trim().is_empty() || s.val.chars().any(char::is_control) => {
            ctx.error(
                s.span.start,
                &s.key,
                format!("the value is empty or holds control characters; give text like \"{default}\" or leave the key out for that default"),
            );
            None
        }
        Some(s) => Some(s.val),
    }
}

/// The optional `[opcua_server]` table of `root`: `Some(None)` when absent, `None` when present
/// and invalid (reported). `link_ip` is the receiver's own address on the diode link;
/// `store_dir` is where the PKI directory goes by default.
pub(crate) fn parse_optional(
    ctx: &mut Ctx<'_>,
    root: &Tbl<'_, '_>,
    link_ip: Option<IpAddr>,
    store_dir: &Path,
) -> Option<Option<OpcUaServer>> {
    match root.table(ctx, "opcua_server", Req::Optional) {
        Some(t) => parse(ctx, &t, link_ip, store_dir).map(Some),
        None if root.has("opcua_server") => None,
        None => Some(None),
    }
}

fn bind(ctx: &mut Ctx<'_>, t: &Tbl<'_, '_>, link_ip: Option<IpAddr>) -> Option<SocketAddr> {
    let Some(b) = t.string(ctx, "bind", Req::Optional) else {
        return (!t.has("bind")).then(|| SocketAddr::new(IpAddr::from([0, 0, 0, 0]), PORT_DEFAULT));
    };
    // An address without a port takes OPC UA's registered port.
    let addr = match b.val.trim().parse::<IpAddr>() {
        Ok(ip) => SocketAddr::new(ip, PORT_DEFAULT),
        Err(_) => common::socket_addr(ctx, &b)?.val,
    };
    // A loopback link (tests, the demo) has no diode interface to protect.
    if let Some(ip) = link_ip.filter(|ip| !ip.is_unspecified() && !ip.is_loopback())
        && addr.ip() == ip
    {
        ctx.error(
            b.span.start,
            &b.key,
            format!(
                "{ip} is this daemon's address on the diode link; the OPC UA mirror must not \
                 listen on the diode interface: bind it on the IT network's address, like \
                 \"{BIND_DEFAULT}\" with the diode interface firewalled"
            ),
        );
        return None;
    }
    Some(addr)
}

fn endpoints(ctx: &mut Ctx<'_>, t: &Tbl<'_, '_>) -> Option<Vec<Endpoint>> {
    let tables = t.array_of_tables(ctx, "endpoint");
    if tables.is_empty() {
        return (!t.has("endpoint")).then(|| ENDPOINTS_DEFAULT.to_vec());
    }
    let mut ok = true;
    let mut seen: HashMap<Endpoint, usize> = HashMap::new();
    let mut out = Vec::new();
    for e in &tables {
        e.check_keys(ctx, ENDPOINT_KEYS);
        let policy = e.choice_with_aliases(
            ctx,
            "security_policy",
            Req::Required(
                "give one of \"none\", \"basic256sha256\", \"aes128_sha256_rsaoaep\", like \
                 security_policy = \"basic256sha256\"",
            ),
            POLICIES,
            POLICY_ALIASES,
        );
        let mode =
            match e.choice_with_aliases(ctx, "security_mode", Req::Optional, MODES, MODE_ALIASES) {
                Some(m) => Some(Some(m)),
                None if e.has("security_mode") => None,
                None => Some(None),
            };
        let (Some(policy), Some(mode)) = (policy, mode) else {
            ok = false;
            continue;
        };
        // The mode follows from policy None; a secure policy needs one said explicitly.
        let mode_val = match (policy.val, &mode) {
            (SecurityPolicy::None, None) => SecurityMode::None,
            (SecurityPolicy::None, Some(m)) if m.val != SecurityMode::None => {
                ctx.error(
                    m.span.start,
                    &m.key,
                    "security policy \"none\" has no signing or encryption; use \
                     security_mode = \"none\" with it, or a secure policy such as \
                     \"basic256sha256\" for \"sign\" or \"sign_and_encrypt\"",
                );
                ok = false;
                continue;
            }
            (_, None) => {
                ctx.error(
                    e.span.start,
                    e.key("security_mode"),
                    format!(
                        "missing required key `security_mode` in [[opcua_server.endpoint]]; \
                         with security_policy = \"{}\" give \"sign\" or \"sign_and_encrypt\"",
                        policy.val.config_name()
                    ),
                );
                ok = false;
                continue;
            }
            (p, Some(m)) if p != SecurityPolicy::None && m.val == SecurityMode::None => {
                ctx.error(
                    m.span.start,
                    &m.key,
                    format!(
                        "security_mode \"none\" goes only with security_policy \"none\"; with \
                         \"{}\" give \"sign\" or \"sign_and_encrypt\"",
                        p.config_name()
                    ),
                );
                ok = false;
                continue;
            }
            (_, Some(m)) => m.val,
        };
        let endpoint = Endpoint {
            policy: policy.val,
            mode: mode_val,
        };
        let line = ctx.line(e.span.start);
        if let Some(first) = seen.get(&endpoint) {
            ctx.error(
                e.span.start,
                e.path.clone(),
                format!(
                    "endpoint {}/{} is already listed at line {first}; list each policy and \
                     mode once",
                    endpoint.policy.config_name(),
                    endpoint.mode.config_name()
                ),
            );
            ok = false;
            continue;
        }
        seen.insert(endpoint, line);
        out.push(endpoint);
    }
    ok.then_some(out)
}

fn users(ctx: &mut Ctx<'_>, t: &Tbl<'_, '_>) -> Option<Vec<User>> {
    let tables = t.array_of_tables(ctx, "user");
    let mut ok = !(tables.is_empty() && t.has("user"));
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut out = Vec::new();
    for u in &tables {
        u.check_keys(ctx, USER_KEYS);
        let name = u.string(
            ctx,
            "name",
            Req::Required("give the user name clients log in with, like name = \"historian\""),
        );
        let name = name.and_then(|n| check_user_name(ctx, n));
        let password = crate::sinks::password_file(ctx, u);
        let password = match password {
            Some(Some(p)) => Some(p),
            Some(None) => {
                ctx.error(
                    u.span.start,
                    u.key("password_file"),
                    "missing required key `password_file` in [[opcua_server.user]]; give the \
                     file holding the password on its first line (chmod 600), like \
                     password_file = \"opcua-historian.pass\"",
                );
                None
            }
            None => None,
        };
        let (Some(name), Some((password_file, password))) = (name, password) else {
            ok = false;
            continue;
        };
        let line = ctx.line(name.span.start);
        if let Some(first) = seen.get(&name.val) {
            ctx.error(
                name.span.start,
                &name.key,
                format!(
                    "user \"{}\" is already defined at line {first}; each user name once",
                    name.val
                ),
            );
            ok = false;
            continue;
        }
        seen.insert(name.val.clone(), line);
        out.push(User {
            name: name.val,
            password,
            password_file,
        });
    }
    ok.then_some(out)
}

fn check_user_name(ctx: &mut Ctx<'_>, n: At<String>) -> Option<At<String>> {
    let ok = !n.val.is_empty()
        && n.val.chars().count() <= 64
        && !n.val.chars().any(|c| c.is_control() || c.is_whitespace());
    if ok {
        return Some(n);
    }
    ctx.error(
        n.span.start,
        &n.key,
        format!(
            "user name \"{}\" is not valid; use 1 to 64 characters without spaces or control \
             characters, like \"historian\"",
            n.val.escape_debug()
        ),
    );
    None
}

fn count(
    ctx: &mut Ctx<'_>,
    t: &Tbl<'_, '_>,
    key: &str,
    max: usize,
    default: usize,
) -> Option<usize> {
    common::int_or(ctx, t, key, 1..=max as i64, "", default as i64).map(|n| n as usize)
}

fn parse(
    ctx: &mut Ctx<'_>,
    t: &Tbl<'_, '_>,
    link_ip: Option<IpAddr>,
    store_dir: &Path,
) -> Option<OpcUaServer> {
    t.check_keys(ctx, KEYS);
    let bind = bind(ctx, t, link_ip);
    let namespace_uri = string_or(ctx, t, "namespace_uri", NAMESPACE_URI_DEFAULT);
    let application_name = string_or(ctx, t, "application_name", APPLICATION_NAME_DEFAULT);
    let application_uri = string_or(ctx, t, "application_uri", APPLICATION_URI_DEFAULT);
    let pki_dir = match t.string(ctx, "pki_dir", Req::Optional) {
        None if t.has("pki_dir") => None,
        None => Some(store_dir.join(PKI_DIR_DEFAULT)),
        Some(p) => common::dir_path(ctx, &p, "the OPC UA certificates' directory"),
    };
    let trust_any = bool_or(ctx, t, "insecure_trust_any_client_certificate", false);
    let endpoints = endpoints(ctx, t);
    let anonymous = bool_or(ctx, t, "anonymous", true);
    let users = users(ctx, t);
    if let (Some(false), Some(users)) = (anonymous, &users)
        && users.is_empty()
    {
        ctx.error(
            t.offset_of("anonymous"),
            t.key("anonymous"),
            "with anonymous = false and no [[opcua_server.user]], no client could open a \
             session; add a user (name and password_file) or allow anonymous sessions",
        );
    }
    if let (Some(endpoints), Some(users)) = (&endpoints, &users)
        && !users.is_empty()
        && endpoints.iter().all(|e| e.policy == SecurityPolicy::None)
    {
        ctx.error(
            t.offset_of("user"),
            t.key("user"),
            "users log in only on a secure endpoint (on security policy \"None\" their \
             passwords would cross the network in the clear); add an [[opcua_server.endpoint]] \
             with security_policy = \"basic256sha256\" and security_mode = \"sign_and_encrypt\"",
        );
    }
    let max_sessions = count(
        ctx,
        t,
        "max_sessions",
        MAX_SESSIONS_MAX,
        MAX_SESSIONS_DEFAULT,
    );
    let max_subs = count(
        ctx,
        t,
        "max_subscriptions_per_session",
        MAX_SUBSCRIPTIONS_PER_SESSION_MAX,
        MAX_SUBSCRIPTIONS_PER_SESSION_DEFAULT,
    );
    let max_items = count(
        ctx,
        t,
        "max_monitored_items_per_subscription",
        MAX_MONITORED_ITEMS_PER_SUBSCRIPTION_MAX,
        MAX_MONITORED_ITEMS_PER_SUBSCRIPTION_DEFAULT,
    );
    let max_cps = count(
        ctx,
        t,
        "max_history_continuation_points",
        MAX_HISTORY_CONTINUATION_POINTS_MAX,
        MAX_HISTORY_CONTINUATION_POINTS_DEFAULT,
    );
    Some(OpcUaServer {
        bind: bind?,
        namespace_uri: namespace_uri?,
        application_name: application_name?,
        application_uri: application_uri?,
        pki_dir: pki_dir?,
        insecure_trust_any_client_certificate: trust_any?,
        endpoints: endpoints?,
        anonymous: anonymous?,
        users: users?,
        max_sessions: max_sessions?,
        max_subscriptions_per_session: max_subs?,
        max_monitored_items_per_subscription: max_items?,
        max_history_continuation_points: max_cps?,
    })
}
