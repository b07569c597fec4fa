//! The `check-config` subcommand as an engineer uses it: exit status and what is printed.

use std::process::Command;

fn gateway_rx() -> Command {
    Command::new(env!("CARGO_BIN_EXE_gateway-rx"))
}

fn example() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/gateway-rx.toml")
}

/// The example, installed in `dir` beside the link key copied from the transmitting box.
fn installed_example(dir: &std::path::Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let key = dir.join("link.key");
    std::fs::write(&key, "5a".repeat(32)).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let path = dir.join("gateway-rx.toml");
    std::fs::copy(example(), &path).unwrap();
    path
}

#[test]
fn check_config_accepts_the_shipped_example_with_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let out = gateway_rx()
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
    let text =
        std::fs::read_to_string(&path)
            .unwrap()
            .replacen("[link]", "[link]\nreorder_window = 1", 1);
    std::fs::write(&path, text).unwrap();
    let out = gateway_rx()
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
    assert!(first.contains("key `link.reorder_window`"), "{stderr}");
}

#[test]
fn run_refuses_a_bad_config_before_starting() {
    let out = gateway_rx()
        .args(["run", "--config", "/nonexistent/gateway-rx.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/gateway-rx.toml"));
}
