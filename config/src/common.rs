//! Pieces both schemas use.

use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::Path;
use std::time::Duration;

use crate::error::ConfigError;
use crate::walk::{At, Ctx, Req, Tbl};

/// Reads a config file as UTF-8; invalid UTF-8 is reported at its line and column.
pub(crate) fn read_config(path: &Path) -> Result<String, ConfigError> {
    let bytes = std::fs::read(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    String::from_utf8(bytes).map_err(|e| {
        let valid = e.utf8_error().valid_up_to();
        let bytes = e.as_bytes();
        // Locate the bad byte in the text that precedes it, which is valid UTF-8.
        let before = String::from_utf8_lossy(&bytes[..valid]).into_owned();
        let mut ctx = Ctx::new(&before, path);
        ctx.error(
            valid,
            "",
            "the file is not valid UTF-8; save it as UTF-8 (plain ASCII is fine)",
        );
        match ctx.finish::<()>(None) {
            Err(e) => e,
            Ok(()) => unreachable_config_error(path),
        }
    })
}

fn unreachable_config_error(path: &Path) -> ConfigError {
    ConfigError::Read {
        path: path.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, "invalid UTF-8"),
    }
}

/// First 8 bytes, big-endian, of the SHA-256 of the file.
pub(crate) fn config_hash(text: &str) -> u64 {
    let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest.as_ref()[..8]);
    u64::from_be_bytes(first)
}

/// `ip:port`; host names are refused because nothing may be resolved across a diode.
pub(crate) fn socket_addr(ctx: &mut Ctx<'_>, a: &At<String>) -> Option<At<SocketAddr>> {
    match a.val.trim().parse::<SocketAddr>() {
        Ok(addr) => Some(At {
            val: addr,
            span: a.span.clone(),
            key: a.key.clone(),
        }),
        Err(_) => {
            let hint = if a.val.parse::<std::net::IpAddr>().is_ok() {
                " (the port is missing)"
            } else {
                ""
            };
            ctx.error(
                a.span.start,
                &a.key,
                format!(
                    "\"{}\" is not an IP address with a port{hint}; write it like \
                     \"192.0.2.10:5600\" or \"[2001:db8::10]:5600\" (host names are not resolved)",
                    a.val
                ),
            );
            None
        }
    }
}

/// Device names: `[A-Za-z0-9_.-]{1,64}`, so they can serve in logs, metrics labels and maps.
pub(crate) fn check_name(ctx: &mut Ctx<'_>, n: At<String>) -> Option<At<String>> {
    let ok = !n.val.is_empty()
        && n.val.len() <= 64
        && n.val
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if ok {
        return Some(n);
    }
    ctx.error(
        n.span.start,
        &n.key,
        format!(
            "device name \"{}\" is not valid; use 1 to 64 letters, digits, '_', '.' or '-', \
             like \"plc1\"",
            n.val
        ),
    );
    None
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

/// An optional integer with a default; `None` only when present and invalid (reported).
pub(crate) fn int_or(
    ctx: &mut Ctx<'_>,
    t: &Tbl<'_, '_>,
    key: &str,
    range: RangeInclusive<i64>,
    unit: &str,
    default: i64,
) -> Option<i64> {
    match t.int(ctx, key, Req::Optional, range, unit) {
        Some(a) => Some(a.val),
        None if t.has(key) => None,
        None => Some(default),
    }
}

pub(crate) fn duration_ms(
    ctx: &mut Ctx<'_>,
    t: &Tbl<'_, '_>,
    key: &str,
    range: RangeInclusive<i64>,
    default: u64,
) -> Option<Duration> {
    let n = int_or(ctx, t, key, range, "milliseconds", default as i64)?;
    Some(Duration::from_millis(n as u64))
}

pub(crate) fn duration_s(
    ctx: &mut Ctx<'_>,
    t: &Tbl<'_, '_>,
    key: &str,
    range: RangeInclusive<i64>,
    default: u64,
) -> Option<Duration> {
    let n = int_or(ctx, t, key, range, "seconds", default as i64)?;
    Some(Duration::from_secs(n as u64))
}

/// A file or directory path for the daemon to create or open: not empty; a relative path is
/// taken relative to the config file's directory (like `key_file`). `what` names it in messages.
pub(crate) fn dir_path(
    ctx: &mut Ctx<'_>,
    p: &At<String>,
    what: &str,
) -> Option<std::path::PathBuf> {
    if p.val.trim().is_empty() {
        ctx.error(
            p.span.start,
            &p.key,
            format!(
                "the path is empty; give {what}, absolute or relative to this config file's \
                 directory, or leave the key out for the default"
            ),
        );
        return None;
    }
    let path = Path::new(&p.val);
    if path.is_absolute() {
        return Some(path.to_path_buf());
    }
    Some(match ctx.file().parent() {
        Some(dir) => dir.join(path),
        None => path.to_path_buf(),
    })
}

/// Group or other permission bits on a secret file, as a message tail ("is readable or
/// writable by group or others (mode 0644); run `chmod 600 ...`"); `None` when only its owner
/// has any.
pub(crate) fn loose_mode(path: &std::path::Path) -> Option<String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).ok()?.permissions().mode();
        if mode & 0o077 != 0 {
            return Some(format!(
                "is readable or writable by group or others (mode {:04o}); run `chmod 600 {}` \
                 so that only its owner can read it",
                mode & 0o7777,
                path.display()
            ));
        }
    }
    let _ = path;
    None
}
