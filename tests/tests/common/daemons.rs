//! The release daemons that the process-level tests run (the diode system test, the chaos
//! test): they build nothing themselves; `cargo build --release -p gateway-tx -p gateway-rx`
//! (which `.ci/run` runs before the tests) does.

use std::path::{Path, PathBuf};

/// The release `gateway-tx` and `gateway-rx`.
pub struct ReleaseDaemons {
    pub tx: PathBuf,
    pub rx: PathBuf,
}

/// The release daemons, from `$DIODE_BIN_DIR`, else the `release` directory of
/// [`target_dir`]; an error naming what is missing, or the newest source file when one is
/// older than its sources (its crate's, protocol's, config's, observe's: testing it would
/// report on code that is not there any more), unless `DIODE_ALLOW_STALE=1`.
pub fn release_daemons() -> Result<ReleaseDaemons, String> {
    let release = std::env::var_os("DIODE_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("release"));
    let tx = release.join("gateway-tx");
    let rx = release.join("gateway-rx");
    for b in [&tx, &rx] {
        if !b.is_file() {
            return Err(format!(
                "{} is missing: run `cargo build --release -p gateway-tx -p gateway-rx` first",
                b.display()
            ));
        }
    }
    // Each binary against the sources it is built from (gateway-tx is not relinked when only
    // gateway-rx changes).
    let allow_stale = std::env::var("DIODE_ALLOW_STALE").is_ok_and(|v| v == "1");
    for (bin, own) in [(&tx, "gateway-tx/src"), (&rx, "gateway-rx/src")] {
        let built = std::fs::metadata(bin).and_then(|m| m.modified()).ok();
        let sources = [own, "protocol/src", "config/src", "observe/src"]
            .iter()
            .filter_map(|d| newest(&workspace().join(d)))
            .max();
        if let (Some(built), Some((sources, file))) = (built, sources)
            && sources > built
            && !allow_stale
        {
            return Err(format!(
                "{} is older than {}: run `cargo build --release -p gateway-tx -p gateway-rx` first",
                bin.display(),
                file.display()
            ));
        }
    }
    Ok(ReleaseDaemons { tx, rx })
}

/// The workspace's root directory.
pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Whether this process runs as root (effective uid 0).
pub fn is_root() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(2))
        == Some("0")
}

/// The newest modification time of a file under `dir`, and that file.
fn newest(dir: &Path) -> Option<(std::time::SystemTime, PathBuf)> {
    let mut best: Option<(std::time::SystemTime, PathBuf)> = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let candidate = if path.is_dir() {
            newest(&path)
        } else {
            entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .map(|t| (t, path))
        };
        if let Some(c) = candidate
            && best.as_ref().is_none_or(|b| c.0 > b.0)
        {
            best = Some(c);
        }
    }
    best
}

/// The Cargo target directory: `$CARGO_TARGET_DIR`, else two levels above this test's
/// executable (`<target>/<profile>/deps/<test>-…`), else `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(d);
    }
    if let Ok(exe) = std::env::current_exe()
        && let Some(t) = exe.parent().and_then(Path::parent).and_then(Path::parent)
        && t.join("release").is_dir()
    {
        return t.to_path_buf();
    }
    workspace().join("target")
}
