//! Shared harness of the config fuzz targets: a directory holding key files (so `key_file`
//! values in the corpus reach the key decoder), and the checks every rejection must pass.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use config::ConfigError;

/// The directory the fuzzed config "lives" in: relative `key_file` values resolve against it.
/// Under the fuzz crate's (ignored) target directory, created once per process.
pub fn config_path(file_name: &str) -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/keydir");
        std::fs::create_dir_all(&dir).expect("create key dir");
        let files: [(&str, &[u8], u32); 5] = [
            // Valid: 64 hex characters, and 32 raw bytes.
            (
                "link.key",
                b"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n",
                0o600,
            ),
            ("raw.key", &[0xA5; 32], 0o600),
            // Invalid: readable by others, too short, all zero.
            (
                "open.key",
                b"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
                0o644,
            ),
            ("short.key", b"0001020304050607", 0o600),
            (
                "zero.key",
                b"0000000000000000000000000000000000000000000000000000000000000000",
                0o600,
            ),
        ];
        for (name, bytes, mode) in files {
            let p = dir.join(name);
            std::fs::write(&p, bytes).expect("write key file");
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))
                .expect("chmod key file");
        }
        dir
    })
    .join(file_name)
}

/// What every rejection must be: located diagnostics (line and column inside the text), with a
/// message, and never the parser's "rejected without a reason" fallback.
pub fn check_rejection(text: &str, err: &ConfigError) {
    let shown = err.to_string();
    let diags = err.diagnostics();
    assert!(!diags.is_empty(), "rejection without diagnostics: {shown}");
    let lines: Vec<&str> = text.split('\n').collect();
    for d in diags {
        assert!(
            d.line >= 1 && d.line <= lines.len(),
            "line {} outside the text ({} lines): {d}",
            d.line,
            lines.len()
        );
        let line_bytes = lines[d.line - 1].len();
        assert!(
            d.column >= 1 && d.column <= line_bytes + 1,
            "column {} outside line {} ({} bytes): {d}",
            d.column,
            d.line,
            line_bytes
        );
        assert!(!d.message.is_empty(), "empty message: {d:?}");
        assert!(
            !d.message.contains("internal error"),
            "a walker rejected the config without a reason: {d}"
        );
    }
}
