//! The `check-config` subcommand as an engineer uses it: exit status and what is printed.

use std::process::Command;

fn gateway_tx() -> Command {
    Command::new(env!("CARGO_BIN_EXE_gateway-tx"))
}

fn example() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/gateway-tx.toml")
}

/// The example, installed in `dir` beside a key that `gateway-tx keygen` made.
fn installed_example(dir: &std::path::Path) -> std::path::PathBuf {
    let out = gateway_tx()
        .arg("keygen")
        .arg(dir.join("link.key"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let path = dir.join("gateway-tx.toml");
    std::fs::copy(example(), &path).unwrap();
    path
}

#[test]
fn check_config_accepts_the_shipped_example_with_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let out = gateway_tx()
        .arg("check-config")
        .arg(installed_example(dir.path()))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(": ok ("), "{stdout}");
}

#[test]
fn check_config_reports_file_line_and_key_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let path = installed_example(dir.path());
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replacen("[link]", "[link]\nmtu = 12", 1);
    std::fs::write(&path, text).unwrap();
    let out = gateway_tx()
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let first = stderr.lines().next().unwrap_or_default();
    assert!(
        first.starts_with(&format!("{}:", path.display())),
        "{stderr}"
    );
    assert!(first.contains("key `link.mtu`"), "{stderr}");
}

#[test]
fn run_refuses_a_bad_config_before_starting() {
    let out = gateway_tx()
        .args(["run", "--config", "/nonexistent/gateway-tx.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/gateway-tx.toml"));
}

#[test]
fn keygen_writes_a_private_key_once_and_the_example_needs_it() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("link.key");
    let out = gateway_tx().arg("keygen").arg(&key).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("copy the same file to the receiving box")
    );
    let text = std::fs::read_to_string(&key).unwrap();
    assert_eq!(text.len(), 65, "{text:?}");
    assert!(text.trim_end().chars().all(|c| c.is_ascii_hexdigit()));
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // A second key would leave the two boxes disagreeing: never overwritten.
    let again = gateway_tx().arg("keygen").arg(&key).output().unwrap();
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("never overwritten"));
    assert_eq!(std::fs::read_to_string(&key).unwrap(), text);
    // Two keys are two keys.
    let other = dir.path().join("other.key");
    assert!(
        gateway_tx()
            .arg("keygen")
            .arg(&other)
            .output()
            .unwrap()
            .status
            .success()
    );
    assert_ne!(std::fs::read_to_string(&other).unwrap(), text);

    // The shipped example without its key is refused, saying how to make one.
    let bare = tempfile::tempdir().unwrap();
    let path = bare.path().join("gateway-tx.toml");
    std::fs::copy(example(), &path).unwrap();
    let out = gateway_tx()
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("key `link.key_file`"), "{stderr}");
    assert!(stderr.contains("gateway-tx keygen"), "{stderr}");
}
