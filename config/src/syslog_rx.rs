//! `[syslog]` on the receiver: the spool of syslog messages from the link and the collectors
//! they are forwarded to (`[[syslog.forward]]`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::common;
use crate::sinks::Spool;
use crate::walk::{Ctx, Req, Tbl};

pub const SYSLOG_SPOOL_MAX_BYTES_DEFAULT: i64 = 256 << 20;
pub const SYSLOG_SPOOL_MAX_BYTES_MIN: i64 = 1 << 20;
pub const SYSLOG_SPOOL_MAX_BYTES_MAX: i64 = 1 << 40;

/// Where one output delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// One datagram per message.
    Udp(SocketAddr),
    /// RFC 6587 octet counting.
    Tcp(SocketAddr),
    /// RFC 6587 octet counting inside TLS (RFC 5425).
    Tls {
        addr: SocketAddr,
        /// The name the collector's certificate must carry; the address when absent.
        server_name: Option<String>,
        /// PEM CA certificates to trust; the system's when absent.
        ca_file: Option<PathBuf>,
    },
    /// Appended, one message per line, fsync'd.
    File(PathBuf),
}

/// One `[[syslog.forward]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    /// Names the output's cursor file and its metrics: `[A-Za-z0-9_.-]`, unique.
    pub name: String,
    pub target: Target,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SyslogRx {
    /// Messages from the link wait here until every output took them.
    pub spool: Spool,
    pub forward: Vec<Forward>,
}

const SYSLOG_KEYS: &[&str] = &["spool_dir", "spool_max_bytes", "forward"];
const FORWARD_KEYS: &[&str] = &["name", "to", "file", "ca_file", "server_name"];

pub(crate) fn parse_optional(
    ctx: &mut Ctx<'_>,
    root: &Tbl<'_, '_>,
    store_dir: &Path,
) -> Option<Option<SyslogRx>> {
    match root.table(ctx, "syslog", Req::Optional) {
        Some(t) => parse(ctx, &t, store_dir).map(Some),
        None if root.has("syslog") => None,
        None => Some(None),
    }
}

fn parse(ctx: &mut Ctx<'_>, t: &Tbl<'_, '_>, store_dir: &Path) -> Option<SyslogRx> {
    t.check_keys(ctx, SYSLOG_KEYS);
    let dir = match t.string(ctx, "spool_dir", Req::Optional) {
        None if t.has("spool_dir") => None,
        None => Some(store_dir.join("syslog-spool")),
        Some(p) => common::dir_path(ctx, &p, "the syslog spool's directory"),
    };
    let max_bytes = common::int_or(
        ctx,
        t,
        "spool_max_bytes",
        SYSLOG_SPOOL_MAX_BYTES_MIN..=SYSLOG_SPOOL_MAX_BYTES_MAX,
        "bytes",
        SYSLOG_SPOOL_MAX_BYTES_DEFAULT,
    );
    let tables = t.array_of_tables(ctx, "forward");
    if tables.is_empty() && !t.has("forward") {
        ctx.error(
            t.offset_of("forward"),
            t.key("forward"),
            "[syslog] forwards nowhere; add a [[syslog.forward]] with to = \
             \"tcp://192.0.2.20:514\" (or udp://, tls://) or file = \"/var/log/ot.log\"",
        );
        return None;
    }
    let mut forward = Vec::new();
    let mut ok = true;
    for f in &tables {
        match parse_forward(ctx, f) {
            Some(f) if forward.iter().any(|o: &Forward| o.name == f.name) => {
                ctx.error(
                    f_offset(&tables, &f.name),
                    "syslog.forward.name",
                    format!(
                        "two outputs are named \"{}\"; each needs its own name (it names the \
                         output's place in the spool)",
                        f.name
                    ),
                );
                ok = false;
            }
            Some(f) => forward.push(f),
            None => ok = false,
        }
    }
    let (dir, max_bytes) = (dir?, max_bytes?);
    ok.then_some(SyslogRx {
        spool: Spool {
            dir,
            max_bytes: max_bytes as u64,
        },
        forward,
    })
}

fn f_offset(tables: &[Tbl<'_, '_>], _name: &str) -> usize {
    tables.last().map_or(0, |t| t.offset_of("name"))
}

fn parse_forward(ctx: &mut Ctx<'_>, t: &Tbl<'_, '_>) -> Option<Forward> {
    t.check_keys(ctx, FORWARD_KEYS);
    let to = t.string(ctx, "to", Req::Optional);
    let file = t.string(ctx, "file", Req::Optional);
    let ca_file = match t.string(ctx, "ca_file", Req::Optional) {
        Some(p) => Some(common::dir_path(ctx, &p, "the CA file")?),
        None => None,
    };
    let server_name = t.string(ctx, "server_name", Req::Optional).map(|s| s.val);
    let (name, target) = match (to, file) {
        (Some(to), None) => {
            let text = to.val.trim();
            let Some((scheme, rest)) = text.split_once("://") else {
                ctx.error(
                    to.span.start,
                    &to.key,
                    format!(
                        "\"{}\" names no protocol; write udp://, tcp:// or tls:// and an \
                         address with a port, like \"tcp://192.0.2.20:514\"",
                        to.val
                    ),
                );
                return None;
            };
            let addr = common::socket_addr(
                ctx,
                &crate::walk::At {
                    val: rest.to_owned(),
                    span: to.span.clone(),
                    key: to.key.clone(),
                },
            )?
            .val;
            let target = match scheme {
                "udp" => Target::Udp(addr),
                "tcp" => Target::Tcp(addr),
                "tls" => Target::Tls {
                    addr,
                    server_name: server_name.clone(),
                    ca_file: ca_file.clone(),
                },
                other => {
                    ctx.error(
                        to.span.start,
                        &to.key,
                        format!(
                            "unknown protocol \"{other}\"; use udp://, tcp:// or tls://, like \
                             \"tcp://192.0.2.20:514\""
                        ),
                    );
                    return None;
                }
            };
            (
                format!(
                    "{scheme}-{}",
                    addr.to_string().replace([':', '[', ']'], "_")
                ),
                target,
            )
        }
        (None, Some(f)) => {
            let path = common::dir_path(ctx, &f, "the syslog output file")?;
            let base = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            (format!("file-{base}"), Target::File(path))
        }
        (Some(to), Some(_)) => {
            ctx.error(
                to.span.start,
                &to.key,
                "an output has both to and file; write one [[syslog.forward]] for each",
            );
            return None;
        }
        (None, None) => {
            ctx.error(
                t.offset_of("to"),
                t.key("to"),
                "an output needs to = \"tcp://192.0.2.20:514\" (or udp://, tls://) or \
                 file = \"/var/log/ot.log\"",
            );
            return None;
        }
    };
    let name = match t.string(ctx, "name", Req::Optional) {
        Some(n) => common::check_name(ctx, n)?.val,
        None if t.has("name") => return None,
        None => name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .take(64)
            .collect(),
    };
    Some(Forward { name, target })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::Target;
    use crate::rx::RxConfig;

    const LINK: &str = "[link]\nbind = \"127.0.0.1:5600\"\ninsecure_no_key = true\n";

    #[test]
    fn outputs_and_errors() {
        let c = RxConfig::parse(
            &format!(
                "{LINK}[syslog]\nspool_dir = \"/tmp/s\"\n\
                 [[syslog.forward]]\nto = \"tcp://127.0.0.1:6514\"\n\
                 [[syslog.forward]]\nto = \"udp://[::1]:514\"\n\
                 [[syslog.forward]]\nname = \"archive\"\nfile = \"/var/log/ot.log\"\n\
                 [[syslog.forward]]\nto = \"tls://192.0.2.1:6514\"\nserver_name = \"logs\"\n"
            ),
            Path::new("rx.toml"),
        )
        .unwrap();
        let s = c.syslog.unwrap();
        assert_eq!(s.forward.len(), 4);
        assert_eq!(s.forward[0].name, "tcp-127.0.0.1_6514");
        assert_eq!(
            s.forward[0].target,
            Target::Tcp("127.0.0.1:6514".parse().unwrap())
        );
        assert_eq!(s.forward[2].name, "archive");
        assert!(
            matches!(&s.forward[3].target, Target::Tls { server_name: Some(n), .. } if n == "logs")
        );
        for (text, want) in [
            ("[syslog]\n", "forwards nowhere"),
            (
                "[syslog]\n[[syslog.forward]]\nto = \"ftp://1.2.3.4:1\"\n",
                "unknown protocol",
            ),
            (
                "[syslog]\n[[syslog.forward]]\nto = \"127.0.0.1:1\"\n",
                "names no protocol",
            ),
            (
                "[syslog]\n[[syslog.forward]]\nto = \"tcp://host:1\"\n",
                "not an IP address",
            ),
            ("[syslog]\n[[syslog.forward]]\nname = \"a\"\n", "needs to ="),
            (
                "[syslog]\n[[syslog.forward]]\nname = \"a\"\nfile = \"/x\"\n[[syslog.forward]]\nname = \"a\"\nfile = \"/y\"\n",
                "two outputs",
            ),
        ] {
            let e = RxConfig::parse(&format!("{LINK}{text}"), Path::new("rx.toml"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{text}: {e}");
            assert!(e.contains("rx.toml"), "{e}");
        }
    }
}
