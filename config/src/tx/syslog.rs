//! `[syslog]`: syslog messages received on the OT side and forwarded across the diode.

use std::net::SocketAddr;

use crate::common;
use crate::walk::{Ctx, Req, Tbl};

pub const SYSLOG_MAX_MESSAGE_DEFAULT: i64 = 8192;
/// The largest syslog message carried (`protocol::message::MAX_SYSLOG_MESSAGE`).
pub const SYSLOG_MAX_MESSAGE_MAX: i64 = 65_535;
/// RFC 5424 requires receivers to take at least 480 bytes; less would refuse plain messages.
pub const SYSLOG_MAX_MESSAGE_MIN: i64 = 480;
pub const SYSLOG_QUEUE_BYTES_DEFAULT: i64 = 16 << 20;
pub const SYSLOG_QUEUE_BYTES_MAX: i64 = 1 << 30;
pub const SYSLOG_PER_PASS_DEFAULT: i64 = 2048;
pub const SYSLOG_PER_PASS_MAX: i64 = 100_000;
pub const SYSLOG_CONNECTIONS_DEFAULT: i64 = 64;
pub const SYSLOG_CONNECTIONS_MAX: i64 = 4096;

/// Where gateway-tx listens for syslog, and how much of it it holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Syslog {
    /// UDP listen address: one datagram is one message.
    pub udp: Option<SocketAddr>,
    /// TCP listen address: RFC 6587 framing, octet counting or LF-terminated.
    pub tcp: Option<SocketAddr>,
    /// Longer messages are dropped and counted.
    pub max_message_bytes: usize,
    /// The queue between the listeners and the link, in message bytes; when full, the
    /// newest message is dropped and counted.
    pub queue_bytes: usize,
    /// Messages handed to the link per scheduler pass, at most: the stream's share of the link.
    pub messages_per_pass: usize,
    /// TCP connections open at once; further ones are refused (closed at once) and counted.
    pub max_connections: usize,
}

const SYSLOG_KEYS: &[&str] = &[
    "udp",
    "tcp",
    "max_message_bytes",
    "queue_bytes",
    "messages_per_pass",
    "max_connections",
];

pub(super) fn parse_syslog(ctx: &mut Ctx<'_>, t: &Tbl<'_, '_>) -> Option<Syslog> {
    t.check_keys(ctx, SYSLOG_KEYS);
    let addr = |ctx: &mut Ctx<'_>, key: &str| match t.string(ctx, key, Req::Optional) {
        Some(a) => common::socket_addr(ctx, &a).map(|a| Some(a.val)),
        None if t.has(key) => None,
        None => Some(None),
    };
    let udp = addr(ctx, "udp");
    let tcp = addr(ctx, "tcp");
    let max_message = common::int_or(
        ctx,
        t,
        "max_message_bytes",
        SYSLOG_MAX_MESSAGE_MIN..=SYSLOG_MAX_MESSAGE_MAX,
        "bytes",
        SYSLOG_MAX_MESSAGE_DEFAULT,
    );
    let queue = common::int_or(
        ctx,
        t,
        "queue_bytes",
        SYSLOG_MAX_MESSAGE_MAX..=SYSLOG_QUEUE_BYTES_MAX,
        "bytes",
        SYSLOG_QUEUE_BYTES_DEFAULT,
    );
    let per_pass = common::int_or(
        ctx,
        t,
        "messages_per_pass",
        1..=SYSLOG_PER_PASS_MAX,
        "messages",
        SYSLOG_PER_PASS_DEFAULT,
    );
    let connections = common::int_or(
        ctx,
        t,
        "max_connections",
        1..=SYSLOG_CONNECTIONS_MAX,
        "connections",
        SYSLOG_CONNECTIONS_DEFAULT,
    );
    let (udp, tcp) = (udp?, tcp?);
    if udp.is_none() && tcp.is_none() {
        ctx.error(
            t.offset_of("udp"),
            t.key("udp"),
            "[syslog] listens nowhere; add udp = \"0.0.0.0:514\" and/or tcp = \"0.0.0.0:514\", \
             or remove the section",
        );
        return None;
    }
    Some(Syslog {
        udp,
        tcp,
        max_message_bytes: max_message? as usize,
        queue_bytes: queue? as usize,
        messages_per_pass: per_pass? as usize,
        max_connections: connections? as usize,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::tx::TxConfig;

    const LINK: &str = "[link]\ndestination = \"127.0.0.1:5600\"\ninsecure_no_key = true\n";

    #[test]
    fn defaults_and_errors() {
        let c = TxConfig::parse(
            &format!("{LINK}[syslog]\ntcp = \"127.0.0.1:6514\"\n"),
            Path::new("tx.toml"),
        )
        .unwrap();
        let s = c.syslog.unwrap();
        assert_eq!(s.tcp, Some("127.0.0.1:6514".parse().unwrap()));
        assert_eq!(s.udp, None);
        assert_eq!(s.max_message_bytes, 8192);
        for (text, want) in [
            ("[syslog]\n", "listens nowhere"),
            ("[syslog]\nudp = \"localhost:514\"\n", "not an IP address"),
            (
                "[syslog]\nudp = \"0.0.0.0:514\"\nmax_message_bytes = 70000\n",
                "max_message_bytes",
            ),
            ("[syslog]\nudp = \"0.0.0.0:514\"\nqueue = 1\n", "queue"),
        ] {
            let e = TxConfig::parse(&format!("{LINK}{text}"), Path::new("tx.toml"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{text}: {e}");
            assert!(e.contains("tx.toml"), "{e}");
        }
    }
}
