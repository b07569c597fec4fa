//! gateway-tx's OPC UA sources: `[[opcua]]` endpoints and their `[[opcua.tag]]` entries.
//!
//! Node ids are parsed here (the text forms of OPC UA Part 6 §5.3.1.10, plus `nsu=` namespace
//! URIs) so that a bad node string is reported at its line like every other mistake; the
//! transmitter resolves namespace URIs against the server's NamespaceArray on each connection.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use protocol::model::ValueType;

use crate::common;
use crate::sinks::Secret;
use crate::walk::{At, Ctx, Req, Tbl};

/// Defaults and limits of the `[[opcua]]` tables.
pub mod limits {
    pub const PKI_DIR_DEFAULT: &str = "/var/lib/gateway/opcua-pki";
    pub const PUBLISHING_INTERVAL_MS_DEFAULT: u64 = 500;
    pub const POLL_INTERVAL_MS_DEFAULT: u64 = 1000;
    pub const INTERVAL_MS_MIN: u64 = 10;
    pub const TIMEOUT_MS_DEFAULT: u64 = 5000;
    pub const TIMEOUT_MS_MAX: u64 = 600_000;
    pub const HISTORY_WINDOW_S_DEFAULT: u64 = 3600;
    pub const HISTORY_WINDOW_S_MAX: u64 = 366 * 86_400;
    /// Values asked for per node and HistoryRead request; the server pages with continuation
    /// points beyond it.
    pub const HISTORY_VALUES_PER_REQUEST_DEFAULT: u32 = 1000;
    pub const HISTORY_VALUES_PER_REQUEST_MAX: u32 = 100_000;
    pub const QUEUE_SIZE_DEFAULT: u32 = 10;
    pub const QUEUE_SIZE_MAX: u32 = 10_000;
}
use limits::*;

/// One OPC UA server the transmitter reads from.
#[derive(Debug, Clone, PartialEq)]
pub struct OpcUaEndpoint {
    /// Unique among `[[modbus]]` devices and `[[opcua]]` endpoints.
    pub name: String,
    /// `opc.tcp://host:port/path`.
    pub url: String,
    pub security_policy: SecurityPolicy,
    pub security_mode: SecurityMode,
    pub identity: Identity,
    /// `own/cert.der`, `private/private.pem` (created on first start if absent), `trusted/`,
    /// `rejected/`.
    pub pki_dir: PathBuf,
    /// Which server certificates are accepted.
    pub trust_server: TrustServer,
    pub mode: Mode,
    pub publishing_interval: Duration,
    pub poll_interval: Duration,
    /// Limit of every service call (and of connecting).
    pub timeout: Duration,
    /// How far back HistoryRead reads at start for `historize` tags; zero: not at all.
    pub history_window: Duration,
    /// Values per node asked for in one HistoryRead request.
    pub history_values_per_request: u32,
    pub tags: Vec<OpcUaTag>,
}

/// An OPC UA security policy, for gateway-tx's endpoints and gateway-rx's mirror alike (both
/// configs spell it the same way).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SecurityPolicy {
    None,
    Basic256Sha256,
    Aes128Sha256RsaOaep,
}

impl SecurityPolicy {
    /// The policy's URI suffix as OPC UA names it (`Basic256Sha256`).
    pub fn uri_name(self) -> &'static str {
        match self {
            SecurityPolicy::None => "None",
            SecurityPolicy::Basic256Sha256 => "Basic256Sha256",
            SecurityPolicy::Aes128Sha256RsaOaep => "Aes128_Sha256_RsaOaep",
        }
    }

    /// How the config spells it.
    pub fn config_name(self) -> &'static str {
        POLICIES
            .iter()
            .find(|(_, p)| *p == self)
            .map_or("?", |(n, _)| n)
    }
}

/// An OPC UA message security mode, for both daemons' configs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SecurityMode {
    None,
    Sign,
    SignAndEncrypt,
}

impl SecurityMode {
    /// The mode as OPC UA names it (`SignAndEncrypt`).
    pub fn uri_name(self) -> &'static str {
        match self {
            SecurityMode::None => "None",
            SecurityMode::Sign => "Sign",
            SecurityMode::SignAndEncrypt => "SignAndEncrypt",
        }
    }

    /// How the config spells it.
    pub fn config_name(self) -> &'static str {
        MODES
            .iter()
            .find(|(_, m)| *m == self)
            .map_or("?", |(n, _)| n)
    }
}

/// How the transmitter identifies itself to the server.
#[derive(Debug, Clone, PartialEq)]
pub enum Identity {
    Anonymous,
    UserName {
        user: String,
        password: Secret,
        password_file: PathBuf,
    },
    /// An X.509 user certificate (DER) and its private key (PEM).
    Certificate {
        cert: PathBuf,
        key: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrustServer {
    /// Only certificates in `pki_dir/trusted/`; unknown ones are refused and saved to
    /// `pki_dir/rejected/`.
    Listed,
    /// Any server certificate (logged as a warning on every connection).
    Any,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A subscription with one monitored item per tag.
    Subscribe,
    /// A Read of every tag each `poll_interval`.
    Poll,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadbandType {
    Absolute,
    /// Percent of the variable's EURange, applied by the server (subscriptions only).
    Percent,
}

/// One variable read from an endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct OpcUaTag {
    pub name: String,
    pub node: NodeRef,
    /// The node string as configured, for the catalogue's source address.
    pub node_text: String,
    pub value_type: ValueType,
    pub sampling_interval: Duration,
    pub queue_size: u32,
    pub deadband: f64,
    pub deadband_type: DeadbandType,
    pub historize: bool,
    pub unit: String,
    pub description: String,
}

/// A node id as configured: the namespace by index or URI, and the identifier.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NodeRef {
    pub namespace: Namespace,
    pub identifier: Identifier,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Namespace {
    Index(u16),
    /// Resolved against the server's NamespaceArray on each connection.
    Uri(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Identifier {
    Numeric(u32),
    String(String),
    Guid([u8; 16]),
    Opaque(Vec<u8>),
}

impl std::fmt::Display for NodeRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Namespace::Index(0) => {}
            Namespace::Index(i) => write!(f, "ns={i};")?,
            Namespace::Uri(u) => write!(f, "nsu={u};")?,
        }
        match &self.identifier {
            Identifier::Numeric(n) => write!(f, "i={n}"),
            Identifier::String(s) => write!(f, "s={s}"),
            Identifier::Guid(g) => write!(f, "g={}", guid_text(g)),
            Identifier::Opaque(b) => write!(f, "b={}", base64_encode(b)),
        }
    }
}

/// Parses `ns=2;s=Name`, `nsu=urn:x;i=5`, `i=2258`, `ns=1;g=<uuid>`, `ns=1;b=<base64>`.
pub fn parse_node(text: &str) -> Result<NodeRef, String> {
    let (namespace, rest) = if let Some(r) = text.strip_prefix("nsu=") {
        let Some((uri, rest)) = r.split_once(';') else {
            return Err("has `nsu=` but no `;` before the identifier".to_owned());
        };
        if uri.is_empty() {
            return Err("has an empty namespace URI after `nsu=`".to_owned());
        }
        (Namespace::Uri(uri.to_owned()), rest)
    } else if let Some(r) = text.strip_prefix("ns=") {
        let Some((idx, rest)) = r.split_once(';') else {
            return Err("has `ns=` but no `;` before the identifier".to_owned());
        };
        let idx = idx.parse::<u16>().map_err(|_| {
            format!("has namespace index \"{idx}\", not an integer from 0 to 65535")
        })?;
        (Namespace::Index(idx), rest)
    } else {
        (Namespace::Index(0), text)
    };
    let identifier = if let Some(n) = rest.strip_prefix("i=") {
        Identifier::Numeric(n.parse::<u32>().map_err(|_| {
            format!("has numeric identifier \"{n}\", not an integer from 0 to 4294967295")
        })?)
    } else if let Some(s) = rest.strip_prefix("s=") {
        if s.is_empty() {
            return Err("has an empty string identifier".to_owned());
        }
        Identifier::String(s.to_owned())
    } else if let Some(g) = rest.strip_prefix("g=") {
        Identifier::Guid(parse_guid(g).ok_or_else(|| {
            format!("has GUID \"{g}\", not of the form 72962b91-fa75-4ae6-8d28-b404dc7daf63")
        })?)
    } else if let Some(b) = rest.strip_prefix("b=") {
        let bytes =
            base64_decode(b).ok_or_else(|| format!("has opaque identifier \"{b}\", not base64"))?;
        if bytes.is_empty() {
            return Err("has an empty opaque identifier".to_owned());
        }
        Identifier::Opaque(bytes)
    } else {
        return Err(
            "has no identifier; it must end in i=<number>, s=<string>, g=<guid> or b=<base64>"
                .to_owned(),
        );
    };
    Ok(NodeRef {
        namespace,
        identifier,
    })
}

pub fn parse_guid(s: &str) -> Option<[u8; 16]> {
    let groups: Vec<&str> = s.split('-').collect();
    let lens: Vec<usize> = groups.iter().map(|g| g.len()).collect();
    if lens != [8, 4, 4, 4, 12] {
        return None;
    }
    let hex: String = groups.concat();
    let mut out = [0u8; 16];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

pub fn guid_text(g: &[u8; 16]) -> String {
    let h: String = g.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

pub fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.trim_end_matches('=');
    let mut out = Vec::new();
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.bytes() {
        let v = B64.iter().position(|&x| x == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

const ENDPOINT_KEYS: &[&str] = &[
    "name",
    "url",
    "security_policy",
    "security_mode",
    "user",
    "password_file",
    "user_certificate",
    "user_private_key",
    "pki_dir",
    "trust_server",
    "mode",
    "publishing_interval_ms",
    "poll_interval_ms",
    "timeout_ms",
    "history_window_s",
    "history_values_per_request",
    "tag",
];
const TAG_KEYS: &[&str] = &[
    "name",
    "node",
    "type",
    "sampling_interval_ms",
    "queue_size",
    "deadband",
    "deadband_type",
    "historize",
    "unit",
    "description",
];
pub(crate) const POLICIES: &[(&str, SecurityPolicy)] = &[
    ("none", SecurityPolicy::None),
    ("basic256sha256", SecurityPolicy::Basic256Sha256),
    ("aes128_sha256_rsaoaep", SecurityPolicy::Aes128Sha256RsaOaep),
];
pub(crate) const POLICY_ALIASES: &[(&str, &str)] = &[
    ("basic256_sha256", "basic256sha256"),
    ("aes128sha256rsaoaep", "aes128_sha256_rsaoaep"),
    ("aes128_sha256_rsa_oaep", "aes128_sha256_rsaoaep"),
];
pub(crate) const MODES: &[(&str, SecurityMode)] = &[
    ("none", SecurityMode::None),
    ("sign", SecurityMode::Sign),
    ("sign_and_encrypt", SecurityMode::SignAndEncrypt),
];
pub(crate) const MODE_ALIASES: &[(&str, &str)] = &[
    ("signandencrypt", "sign_and_encrypt"),
    ("sign_encrypt", "sign_and_encrypt"),
    ("encrypt", "sign_and_encrypt"),
];
const READ_MODES: &[(&str, Mode)] = &[("subscribe", Mode::Subscribe), ("poll", Mode::Poll)];
const TRUST: &[(&str, TrustServer)] = &[("listed", TrustServer::Listed), ("any", TrustServer::Any)];
const DEADBAND_TYPES: &[(&str, DeadbandType)] = &[
    ("absolute", DeadbandType::Absolute),
    ("percent", DeadbandType::Percent),
];

/// The tag types: the Modbus tags' names where they overlap, then OPC UA's own names for the
/// same types, then the two types only OPC UA has.
pub const TYPES: &[(&str, ValueType)] = &[
    ("bool", ValueType::Boolean),
    ("i16", ValueType::Int16),
    ("u16", ValueType::UInt16),
    ("i32", ValueType::Int32),
    ("u32", ValueType::UInt32),
    ("i64", ValueType::Int64),
    ("u64", ValueType::UInt64),
    ("f32", ValueType::Float),
    ("f64", ValueType::Double),
    ("string", ValueType::String),
    ("datetime", ValueType::DateTime),
    ("bytestring", ValueType::ByteString),
    ("boolean", ValueType::Boolean),
    ("int16", ValueType::Int16),
    ("uint16", ValueType::UInt16),
    ("int32", ValueType::Int32),
    ("uint32", ValueType::UInt32),
    ("int64", ValueType::Int64),
    ("uint64", ValueType::UInt64),
    ("float", ValueType::Float),
    ("double", ValueType::Double),
];
const TYPE_ALIASES: &[(&str, &str)] = &[
    ("real", "f32"),
    ("lreal", "f64"),
    ("byte_string", "bytestring"),
    ("bytes", "bytestring"),
    ("date_time", "datetime"),
    ("str", "string"),
];

/// The canonical (Modbus-style) name of a type, as `browse` prints it.
pub fn type_name(t: ValueType) -> &'static str {
    TYPES.iter().find(|(_, v)| *v == t).map_or("?", |(n, _)| n)
}

/// Where a name was first used, for duplicate messages.
pub(crate) struct Seen {
    pub path: String,
    pub line: usize,
}

/// Parses every `[[opcua]]` table. `names` holds the `[[modbus]]` device names and `tag_names`
/// their tags' names, so that both are unique across sources.
pub(crate) fn parse_endpoints(
    ctx: &mut Ctx<'_>,
    root: &Tbl<'_, '_>,
    names: &mut HashMap<String, Seen>,
    tag_names: &mut HashMap<String, Seen>,
) -> Option<Vec<OpcUaEndpoint>> {
    let mut out = Vec::new();
    let mut ok = true;
    for t in root.array_of_tables(ctx, "opcua") {
        let name = t
            .string(
                ctx,
                "name",
                Req::Required("give the endpoint a unique name, like name = \"plant-historian\""),
            )
            .and_then(|n| common::check_name(ctx, n));
        if let Some(n) = &name {
            unique(
                ctx,
                names,
                n,
                &t.path,
                "device or endpoint name",
                "devices and endpoints",
            );
        }
        match parse_endpoint(ctx, &t, name, tag_names) {
            Some(e) => out.push(e),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

fn unique(
    ctx: &mut Ctx<'_>,
    seen: &mut HashMap<String, Seen>,
    n: &At<String>,
    path: &str,
    what: &str,
    among: &str,
) -> bool {
    if let Some(first) = seen.get(&n.val) {
        ctx.error(
            n.span.start,
            &n.key,
            format!(
                "duplicate {what} \"{}\", first used by {} at line {}; names must be unique \
                 across {among}",
                n.val, first.path, first.line
            ),
        );
        return false;
    }
    seen.insert(
        n.val.clone(),
        Seen {
            path: path.to_owned(),
            line: ctx.line(n.span.start),
        },
    );
    true
}

fn parse_endpoint(
    ctx: &mut Ctx<'_>,
    t: &Tbl<'_, '_>,
    name: Option<At<String>>,
    tag_names: &mut HashMap<String, Seen>,
) -> Option<OpcUaEndpoint> {
    t.check_keys(ctx, ENDPOINT_KEYS);
    let url = t
        .string(
            ctx,
            "url",
            Req::Required(
                "give the server's endpoint URL, like url = \"opc.tcp://10.0.0.5:4840/\"",
            ),
        )
        .and_then(|u| check_url(ctx, u));
    let policy = t.choice_with_aliases(
        ctx,
        "security_policy",
        Req::Optional,
        POLICIES,
        POLICY_ALIASES,
    );
    let mode = t.choice_with_aliases(ctx, "security_mode", Req::Optional, MODES, MODE_ALIASES);
    let security = match (policy, mode) {
        (None, None) if t.has("security_policy") || t.has("security_mode") => None,
        (None, None) => Some((SecurityPolicy::None, SecurityMode::None)),
        (Some(p), None) if p.val != SecurityPolicy::None => {
            if !t.has("security_mode") {
                ctx.error(
                    p.span.start,
                    t.key("security_mode"),
                    "security_policy needs a security_mode; add security_mode = \"sign\" or \
                     \"sign_and_encrypt\"",
                );
            }
            None
        }
        (Some(p), None) => (!t.has("security_mode")).then_some((p.val, SecurityMode::None)),
        (None, Some(m)) if m.val != SecurityMode::None => {
            if !t.has("security_policy") {
                ctx.error(
                    m.span.start,
                    t.key("security_policy"),
                    "security_mode needs a security_policy; add security_policy = \
                     \"basic256sha256\" or \"aes128_sha256_rsaoaep\"",
                );
            }
            None
        }
        (None, Some(m)) => (!t.has("security_policy")).then_some((SecurityPolicy::None, m.val)),
        (Some(p), Some(m)) => {
            let none_p = p.val == SecurityPolicy::None;
            let none_m = m.val == SecurityMode::None;
            if none_p != none_m {
                ctx.error(
                    m.span.start,
                    &m.key,
                    if none_p {
                        "security_mode \"sign\" or \"sign_and_encrypt\" needs a security_policy \
                         other than \"none\"; set security_policy = \"basic256sha256\" or use \
                         security_mode = \"none\""
                    } else {
                        "a security_policy other than \"none\" needs security_mode \"sign\" or \
                         \"sign_and_encrypt\""
                    },
                );
                None
            } else {
                Some((p.val, m.val))
            }
        }
    };
    let identity = parse_identity(ctx, t);
    let pki_dir = match t.string(ctx, "pki_dir", Req::Optional) {
        None if t.has("pki_dir") => None,
        None => Some(PathBuf::from(PKI_DIR_DEFAULT)),
        Some(d) => common::dir_path(ctx, &d, "the OPC UA certificate directory"),
    };
    let trust = match t.choice(ctx, "trust_server", Req::Optional, TRUST) {
        Some(v) => Some(v.val),
        None => (!t.has("trust_server")).then_some(TrustServer::Listed),
    };
    let read_mode = match t.choice(ctx, "mode", Req::Optional, READ_MODES) {
        Some(v) => Some(v.val),
        None => (!t.has("mode")).then_some(Mode::Subscribe),
    };
    let publishing = common::duration_ms(
        ctx,
        t,
        "publishing_interval_ms",
        INTERVAL_MS_MIN as i64..=86_400_000,
        PUBLISHING_INTERVAL_MS_DEFAULT,
    );
    let poll = common::duration_ms(
        ctx,
        t,
        "poll_interval_ms",
        INTERVAL_MS_MIN as i64..=86_400_000,
        POLL_INTERVAL_MS_DEFAULT,
    );
    let timeout = common::duration_ms(
        ctx,
        t,
        "timeout_ms",
        100..=TIMEOUT_MS_MAX as i64,
        TIMEOUT_MS_DEFAULT,
    );
    let history_window = common::duration_s(
        ctx,
        t,
        "history_window_s",
        0..=HISTORY_WINDOW_S_MAX as i64,
        HISTORY_WINDOW_S_DEFAULT,
    );
    let per_request = common::int_or(
        ctx,
        t,
        "history_values_per_request",
        1..=i64::from(HISTORY_VALUES_PER_REQUEST_MAX),
        "values per node and request",
        i64::from(HISTORY_VALUES_PER_REQUEST_DEFAULT),
    );

    let mut tags = Vec::new();
    let mut tags_ok = true;
    let mut nodes: HashMap<String, Seen> = HashMap::new();
    for tt in t.array_of_tables(ctx, "tag") {
        match parse_tag(ctx, &tt, tag_names, &mut nodes, read_mode) {
            Some(tag) => tags.push(tag),
            None => tags_ok = false,
        }
    }
    let (policy, mode) = security?;
    if !tags_ok {
        return None;
    }
    Some(OpcUaEndpoint {
        name: name?.val,
        url: url?,
        security_policy: policy,
        security_mode: mode,
        identity: identity?,
        pki_dir: pki_dir?,
        trust_server: trust?,
        mode: read_mode?,
        publishing_interval: publishing?,
        poll_interval: poll?,
        timeout: timeout?,
        history_window: history_window?,
        history_values_per_request: per_request? as u32,
        tags,
    })
}

/// `opc.tcp://host[:port][/path]`.
fn check_url(ctx: &mut Ctx<'_>, u: At<String>) -> Option<String> {
    let ok = u.val.strip_prefix("opc.tcp://").is_some_and(|rest| {
        let host_port = rest.split('/').next().unwrap_or("");
        let host = match host_port.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') && h.contains(':') => {
                host_port.is_empty() && p.is_empty()
            }
            Some((h, p)) => !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0),
            None => !host_port.is_empty(),
        };
        host && !rest.chars().any(|c| c.is_whitespace() || c.is_control())
    });
    if ok {
        return Some(u.val);
    }
    ctx.error(
        u.span.start,
        &u.key,
        format!(
            "\"{}\" is not an OPC UA endpoint URL; write it like \"opc.tcp://10.0.0.5:4840/\" \
             (scheme opc.tcp, a host, an optional port and path)",
            u.val
        ),
    );
    None
}

fn opt_string(ctx: &mut Ctx<'_>, t: &Tbl<'_, '_>, key: &str) -> Option<Option<At<String>>> {
    match t.string(ctx, key, Req::Optional) {
        Some(s) => Some(Some(s)),
        None if t.has(key) => None,
        None => Some(None),
    }
}

fn parse_identity(ctx: &mut Ctx<'_>, t: &Tbl<'_, '_>) -> Option<Identity> {
    let user = opt_string(ctx, t, "user");
    let password_file = opt_string(ctx, t, "password_file");
    let cert = opt_string(ctx, t, "user_certificate");
    let key = opt_string(ctx, t, "user_private_key");
    let (user, password_file, cert, key) = (user?, password_file?, cert?, key?);
    match (user, password_file, cert, key) {
        (None, None, None, None) => Some(Identity::Anonymous),
        (Some(u), Some(p), None, None) => {
            if u.val.is_empty() {
                ctx.error(u.span.start, &u.key, "the user name is empty; give the server account's name or remove `user` and `password_file` for anonymous access");
                return None;
            }
            let (path, password) = crate::sinks::read_password_file(ctx, &p)?;
            Some(Identity::UserName {
                user: u.val,
                password,
                password_file: path,
            })
        }
        (Some(u), None, None, None) => {
            ctx.error(
                u.span.start,
                t.key("password_file"),
                "`user` needs `password_file`, a file whose first line is the password (mode 0600)",
            );
            None
        }
        (None, Some(p), None, None) => {
            ctx.error(
                p.span.start,
                t.key("user"),
                "`password_file` needs `user`, the account's name",
            );
            None
        }
        (None, None, Some(c), Some(k)) => {
            let cert = common::dir_path(ctx, &c, "the user certificate (DER)")?;
            let key_path = common::dir_path(ctx, &k, "the user certificate's private key (PEM)")?;
            let mut ok = true;
            for (p, at) in [(&cert, &c), (&key_path, &k)] {
                if let Err(e) = std::fs::metadata(p) {
                    ctx.error(
                        at.span.start,
                        &at.key,
                        format!("cannot read {}: {e}; the path is relative to this config file's directory", p.display()),
                    );
                    ok = false;
                }
            }
            if ok && let Some(why) = common::loose_mode(&key_path) {
                ctx.error(
                    k.span.start,
                    &k.key,
                    format!("private key {} {why}", key_path.display()),
                );
                ok = false;
            }
            ok.then_some(Identity::Certificate {
                cert,
                key: key_path,
            })
        }
        (None, None, Some(c), None) => {
            ctx.error(
                c.span.start,
                t.key("user_private_key"),
                "`user_certificate` needs `user_private_key`, the certificate's private key (PEM)",
            );
            None
        }
        (None, None, None, Some(k)) => {
            ctx.error(
                k.span.start,
                t.key("user_certificate"),
                "`user_private_key` needs `user_certificate`, the user certificate (DER)",
            );
            None
        }
        (_, _, Some(c), _) | (_, _, _, Some(c)) => {
            ctx.error(
                c.span.start,
                &c.key,
                "give either `user` with `password_file`, or `user_certificate` with \
                 `user_private_key`, not both",
            );
            None
        }
    }
}

fn parse_tag(
    ctx: &mut Ctx<'_>,
    t: &Tbl<'_, '_>,
    tag_names: &mut HashMap<String, Seen>,
    nodes: &mut HashMap<String, Seen>,
    mode: Option<Mode>,
) -> Option<OpcUaTag> {
    t.check_keys(ctx, TAG_KEYS);
    let name = t
        .string(
            ctx,
            "name",
            Req::Required(
                "give the tag a unique path-like name, like name = \"site/area/pump3/speed\"",
            ),
        )
        .and_then(|n| crate::common::check_tag_name(ctx, n));
    let name_ok = match &name {
        Some(n) => unique(ctx, tag_names, n, &t.path, "tag name", "the whole file"),
        None => false,
    };
    let node = t
        .string(
            ctx,
            "node",
            Req::Required("give the variable's node id, like node = \"nsu=urn:plant:pumps;s=Pump3.Speed\" or \"ns=2;i=1001\""),
        )
        .and_then(|n| match parse_node(&n.val) {
            Ok(r) => Some((r, n)),
            Err(why) => {
                ctx.error(
                    n.span.start,
                    &n.key,
                    format!(
                        "node id \"{}\" {why}; write it like \"ns=2;s=Pump3.Speed\", \
                         \"nsu=urn:plant:pumps;i=1001\", \"ns=1;g=72962b91-fa75-4ae6-8d28-b404dc7daf63\" \
                         or \"ns=1;b=AQID\"",
                        n.val
                    ),
                );
                None
            }
        });
    let node_ok = match &node {
        Some((_, n)) => unique(ctx, nodes, n, &t.path, "node", "the endpoint's tags"),
        None => false,
    };
    let kind = t.choice_with_aliases(
        ctx,
        "type",
        Req::Required(
            "say what the variable holds, e.g. type = \"f64\"; the catalogue is built before \
             connecting; valid types are bool, i16, u16, i32, u32, i64, u64, f32, f64, string, \
             datetime, bytestring (or the OPC UA names boolean, int16, ..., double)",
        ),
        TYPES,
        TYPE_ALIASES,
    );
    let sampling = common::duration_ms(ctx, t, "sampling_interval_ms", 0..=86_400_000, 0);
    let queue = common::int_or(
        ctx,
        t,
        "queue_size",
        1..=i64::from(QUEUE_SIZE_MAX),
        "values the server queues between publishes",
        i64::from(QUEUE_SIZE_DEFAULT),
    );
    let deadband = match t.float(ctx, "deadband", Req::Optional) {
        Some(d) if !d.val.is_finite() || d.val < 0.0 => {
            ctx.error(
                d.span.start,
                &d.key,
                format!("deadband {} is not usable; expected a finite number >= 0 (0 reports every change)", d.val),
            );
            None
        }
        Some(d) => Some(d.val),
        None => (!t.has("deadband")).then_some(0.0),
    };
    let deadband_type = t.choice(ctx, "deadband_type", Req::Optional, DEADBAND_TYPES);
    let mut ok = true;
    if let (Some(k), Some(d)) = (&kind, deadband)
        && d > 0.0
        && matches!(
            k.val,
            ValueType::String | ValueType::ByteString | ValueType::Boolean
        )
    {
        ctx.error(
            t.offset_of("deadband"),
            t.key("deadband"),
            format!(
                "`deadband` does not apply to \"{}\" tags; remove it (it applies to numbers)",
                type_name(k.val)
            ),
        );
        ok = false;
    }
    if let Some(dt) = &deadband_type {
        if dt.val == DeadbandType::Percent && mode == Some(Mode::Poll) {
            ctx.error(
                dt.span.start,
                &dt.key,
                "a percent deadband is applied by the server to subscriptions (it needs the \
                 variable's EURange); with mode = \"poll\" use deadband_type = \"absolute\"",
            );
            ok = false;
        }
        if dt.val == DeadbandType::Percent && deadband.is_some_and(|d| d > 100.0) {
            ctx.error(
                dt.span.start,
                t.key("deadband"),
                "a percent deadband is at most 100",
            );
            ok = false;
        }
    }
    let deadband_type = match deadband_type {
        Some(d) => Some(d.val),
        None => (!t.has("deadband_type")).then_some(DeadbandType::Absolute),
    };
    let historize = match t.boolean(ctx, "historize", Req::Optional) {
        Some(b) => Some(b.val),
        None => (!t.has("historize")).then_some(false),
    };
    let unit = match t.string(ctx, "unit", Req::Optional) {
        Some(u) => Some(u.val),
        None => (!t.has("unit")).then(String::new),
    };
    let description = match t.string(ctx, "description", Req::Optional) {
        Some(u) => Some(u.val),
        None => (!t.has("description")).then(String::new),
    };
    if !(ok && name_ok && node_ok) {
        return None;
    }
    let (node, node_text) = node?;
    Some(OpcUaTag {
        name: name?.val,
        node,
        node_text: node_text.val,
        value_type: kind?.val,
        sampling_interval: sampling?,
        queue_size: queue? as u32,
        deadband: deadband?,
        deadband_type: deadband_type?,
        historize: historize?,
        unit: unit?,
        description: description?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_forms() {
        let n = parse_node("nsu=urn:plant:pumps;s=Pump3.Speed").expect("nsu");
        assert_eq!(n.namespace, Namespace::Uri("urn:plant:pumps".into()));
        assert_eq!(n.identifier, Identifier::String("Pump3.Speed".into()));
        assert_eq!(
            parse_node("i=2258").expect("i").namespace,
            Namespace::Index(0)
        );
        let g = parse_node("ns=3;g=72962b91-fa75-4ae6-8d28-b404dc7daf63").expect("g");
        assert_eq!(g.to_string(), "ns=3;g=72962b91-fa75-4ae6-8d28-b404dc7daf63");
        let b = parse_node("ns=1;b=AQID").expect("b");
        assert_eq!(b.identifier, Identifier::Opaque(vec![1, 2, 3]));
        assert_eq!(b.to_string(), "ns=1;b=AQID");
        assert!(parse_node("ns=x;i=1").is_err());
        assert!(parse_node("ns=2;q=1").is_err());
        assert!(parse_node("ns=2;g=123").is_err());
        assert!(parse_node("nsu=urn:x").is_err());
        // A string identifier may itself contain `;` and `=`.
        let s = parse_node("ns=2;s=a;b=c").expect("s");
        assert_eq!(s.identifier, Identifier::String("a;b=c".into()));
    }

    #[test]
    fn base64_round_trip() {
        for n in 0..20u8 {
            let v: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37)).collect();
            assert_eq!(base64_decode(&base64_encode(&v)), Some(v));
        }
        assert_eq!(base64_encode(b"hello"), "aGVsbG8=");
    }
}
