//! `[http]`, in both schemas: the operators' HTTP server (Prometheus metrics, health, the
//! read-only status page). Absent means off.

use std::net::{IpAddr, SocketAddr};

use crate::common;
use crate::walk::{Ctx, Req, Tbl};

/// The operators' HTTP server of either daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpServer {
    /// Address to listen on: a management interface, never the diode's. Port 0 picks a free
    /// port (for tests).
    pub bind: SocketAddr,
}

const KEYS: &[&str] = &["bind"];

/// The optional `[http]` table of `root`: `Some(None)` when absent, `None` when present and
/// invalid (reported). `link_ip` is the daemon's own address on the diode link, when the
/// config names one; `example` is a valid bind for messages.
pub(crate) fn parse_optional(
    ctx: &mut Ctx<'_>,
    root: &Tbl<'_, '_>,
    link_ip: Option<IpAddr>,
    example: &str,
) -> Option<Option<HttpServer>> {
    match root.table(ctx, "http", Req::Optional) {
        Some(t) => parse(ctx, &t, link_ip, example).map(Some),
        None if root.has("http") => None,
        None => Some(None),
    }
}

fn parse(
    ctx: &mut Ctx<'_>,
    t: &Tbl<'_, '_>,
    link_ip: Option<IpAddr>,
    example: &str,
) -> Option<HttpServer> {
    t.check_keys(ctx, KEYS);
    let hint = if example.starts_with("127.") {
        "give the management address to serve metrics, health and the status page on, like \
         bind = \"127.0.0.1:9100\" (or remove [http] to turn the server off)"
    } else {
        "give the management address to serve metrics, health and the status page on"
    };
    let bind = t
        .string(ctx, "bind", Req::Required(hint))
        .and_then(|a| common::socket_addr(ctx, &a))?;
    // A loopback link (tests, the demo) has no diode interface to protect.
    if let Some(ip) = link_ip.filter(|ip| !ip.is_unspecified() && !ip.is_loopback())
        && bind.val.ip() == ip
    {
        ctx.error(
            bind.span.start,
            &bind.key,
            format!(
                "{ip} is this daemon's address on the diode link; the status server must not \
                 listen on the diode interface: bind it on a management address, like \
                 \"{example}\""
            ),
        );
        return None;
    }
    Some(HttpServer { bind: bind.val })
}
