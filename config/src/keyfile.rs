//! The link's pre-shared key file, shared by both daemons.

use std::path::{Path, PathBuf};

use crate::walk::{At, Ctx, Req, Tbl};

/// Far above a key's 32 raw bytes or 64 hex characters with whitespace.
const MAX_KEY_FILE_BYTES: u64 = 4096;

const GENERATE: &str = "generate one with `gateway-tx keygen link.key` and copy the same file to \
                        both sides";

/// How a link is authenticated, as `[link]` says: a key, or explicitly none.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkAuth {
    /// The pre-shared key and the file it came from; `None` only with `insecure_no_key`.
    pub key: Option<(PathBuf, [u8; 32])>,
    /// `insecure_no_key = true`: the operator chose to run without authentication.
    pub insecure_no_key: bool,
}

/// `key_file` or `insecure_no_key = true` of a `[link]` table: one of the two is required, so
/// that running without authentication is a choice written in the config, never a default.
pub(crate) fn link_auth(ctx: &mut Ctx<'_>, t: &Tbl<'_, '_>) -> Option<LinkAuth> {
    let insecure = t.boolean(ctx, "insecure_no_key", Req::Optional);
    let key_file = t.string(ctx, "key_file", Req::Optional);
    let insecure = match insecure {
        Some(b) => b.val,
        None if t.has("insecure_no_key") => return None,
        None => false,
    };
    match key_file {
        Some(kf) if insecure => {
            ctx.error(
                t.offset_of("insecure_no_key"),
                t.key("insecure_no_key"),
                format!(
                    "insecure_no_key = true and key_file = {:?} contradict each other; remove \
                     insecure_no_key to authenticate every datagram with the key",
                    kf.val
                ),
            );
            None
        }
        Some(kf) => load_key(ctx, &kf).map(|k| LinkAuth {
            key: Some(k),
            insecure_no_key: false,
        }),
        None if t.has("key_file") => None,
        None if insecure => Some(LinkAuth {
            key: None,
            insecure_no_key: true,
        }),
        None => {
            ctx.error(
                t.offset_of("key_file"),
                t.key("key_file"),
                format!(
                    "no key_file: every datagram on the link must be authenticated; {GENERATE}, \
                     then set key_file = \"link.key\" (relative to this config file's \
                     directory) on both sides; to run without authentication anyway (a lab, or a \
                     link nothing else can reach), set insecure_no_key = true"
                ),
            );
            None
        }
    }
}

/// `state_file` of a `[link]` table: where a daemon keeps its link state across restarts.
pub(crate) fn state_file(ctx: &mut Ctx<'_>, t: &Tbl<'_, '_>, default: &str) -> Option<PathBuf> {
    match t.string(ctx, "state_file", Req::Optional) {
        None if t.has("state_file") => None,
        None => Some(PathBuf::from(default)),
        Some(p) => crate::common::dir_path(ctx, &p, "the link state file"),
    }
}

/// Resolves `key_file` against the config file's directory, checks its permissions and reads
/// the key. Problems are reported at the `key_file` value.
pub(crate) fn load_key(ctx: &mut Ctx<'_>, key_file: &At<String>) -> Option<(PathBuf, [u8; 32])> {
    let at = key_file.span.start;
    let key = key_file.key.as_str();
    if key_file.val.trim().is_empty() {
        ctx.error(
            at,
            key,
            "the key file name is empty; give a path (relative to this config file's \
             directory), or replace key_file with insecure_no_key = true to run without \
             authentication",
        );
        return None;
    }
    let path = resolve(ctx.file(), Path::new(&key_file.val));
    let shown = path.display().to_string();
    let meta = match std::fs::metadata(&path) {
        Ok(m) => m,
        Err(e) => {
            ctx.error(
                at,
                key,
                format!(
                    "cannot read key file {shown}: {e}; the path is relative to this config \
                     file's directory; {GENERATE}"
                ),
            );
            return None;
        }
    };
    if !meta.is_file() {
        ctx.error(
            at,
            key,
            format!("key file {shown} is not a regular file; {GENERATE}"),
        );
        return None;
    }
    let mode = unix_mode(&meta).unwrap_or(0);
    if mode & 0o077 != 0 {
        ctx.error(
            at,
            key,
            format!(
                "key file {shown} is readable or writable by group or others (mode {:04o}); \
                 run `chmod 600 {shown}` so that only its owner can read it",
                mode & 0o7777
            ),
        );
        return None;
    }
    // A key is 32 bytes, or 64 hex characters with some whitespace: anything much larger is
    // the wrong file, and reading it whole would only cost memory.
    if meta.len() > MAX_KEY_FILE_BYTES {
        ctx.error(
            at,
            key,
            format!(
                "key file {shown} is {} bytes, not a key; it must hold 64 hex characters \
                 (whitespace and newlines allowed) or exactly 32 raw bytes; {GENERATE}",
                meta.len()
            ),
        );
        return None;
    }
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) => {
            ctx.error(
                at,
                key,
                format!("cannot read key file {shown}: {e}; check that the daemon's user owns it"),
            );
            return None;
        }
    };
    match decode(&bytes) {
        Ok(k) => Some((path, k)),
        Err(why) => {
            ctx.error(
                at,
                key,
                format!(
                    "key file {shown} {why}; it must hold 64 hex characters (whitespace and \
                     newlines allowed) or exactly 32 raw bytes; {GENERATE}"
                ),
            );
            None
        }
    }
}

fn resolve(config: &Path, key_file: &Path) -> PathBuf {
    if key_file.is_absolute() {
        return key_file.to_path_buf();
    }
    match config.parent() {
        Some(dir) => dir.join(key_file),
        None => key_file.to_path_buf(),
    }
}

#[cfg(unix)]
fn unix_mode(meta: &std::fs::Metadata) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    Some(meta.permissions().mode())
}

#[cfg(not(unix))]
fn unix_mode(_meta: &std::fs::Metadata) -> Option<u32> {
    None
}

/// A key as a key file holds it: 64 lowercase hex characters and a newline.
pub fn encode(key: &[u8; 32]) -> String {
    let mut s: String = key.iter().map(|b| format!("{b:02x}")).collect();
    s.push('\n');
    s
}

/// The key from the file's bytes, or what is wrong with them.
fn decode(bytes: &[u8]) -> Result<[u8; 32], String> {
    let text: Vec<u8> = bytes
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let all_hex = !text.is_empty() && text.iter().all(u8::is_ascii_hexdigit);
    let key = if all_hex && text.len() == 64 {
        let mut key = [0u8; 32];
        for (k, pair) in key.iter_mut().zip(text.chunks_exact(2)) {
            *k = (hex_val(pair[0]) << 4) | hex_val(pair[1]);
        }
        key
    } else if all_hex {
        // Checked before the raw case: 32 hex characters are a 16-byte key typed as hex,
        // and taking them as 32 raw bytes would silently halve the key's strength.
        return Err(format!(
            "holds {} hex characters ({} bits)",
            text.len(),
            text.len() * 4
        ));
    } else if let Ok(raw) = <[u8; 32]>::try_from(bytes) {
        raw
    } else {
        return Err(format!(
            "holds {} bytes that are neither 64 hex characters nor 32 raw bytes",
            bytes.len()
        ));
    };
    if key.iter().all(|&b| b == 0) {
        return Err("holds an all-zero key".to_owned());
    }
    Ok(key)
}

fn hex_val(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        b'A'..=b'F' => c - b'A' + 10,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::decode;

    #[test]
    fn decodes_hex_and_raw() {
        let hex = "00112233445566778899aabbccddeeff\n00112233445566778899AABBCCDDEEFF\n";
        let k = decode(hex.as_bytes()).expect("hex key");
        assert_eq!(k[1], 0x11);
        assert_eq!(k[31], 0xff);
        let raw: Vec<u8> = (1..=32).collect();
        assert_eq!(decode(&raw).expect("raw key")[0], 1);
        assert!(decode(b"00112233445566778899aabbccddeeff").is_err());
        assert!(decode(&[0u8; 32]).is_err());
        assert!(decode(b"short").is_err());
        let key: [u8; 32] = std::array::from_fn(|i| (i * 7 + 1) as u8);
        assert_eq!(decode(super::encode(&key).as_bytes()), Ok(key));
    }
}
