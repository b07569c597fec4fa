//! The example configs shipped in deploy/examples must stay valid.

use std::path::{Path, PathBuf};
use std::time::Duration;

use config::rx::RxConfig;
use config::tx::TxConfig;

fn example(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/examples")
        .join(name)
}

/// The example, copied beside a key made as its comments say (`gateway-tx keygen`), as it is
/// installed in /etc/gateway.
fn installed(name: &str, dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let key = dir.join("link.key");
    std::fs::write(&key, "ab".repeat(32)).expect("write key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let path = dir.join(name);
    std::fs::copy(example(name), &path).expect("copy example");
    path
}

#[test]
fn tx_example_is_valid_and_authenticated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = match TxConfig::load(&installed("gateway-tx.toml", dir.path())) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(c.devices.len(), 2);
    assert_eq!(c.devices.iter().map(|d| d.tags.len()).sum::<usize>(), 10);
    assert_eq!(c.link.key, Some([0xab; 32]));
    assert!(!c.link.insecure_no_key);
}

#[test]
fn rx_example_is_valid_and_authenticated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = match RxConfig::load(&installed("gateway-rx.toml", dir.path())) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    assert!(c.modbus_server.is_some());
    assert_eq!(c.link.key, Some([0xab; 32]));
    assert!(!c.link.insecure_no_key);
}

/// Without the key beside it, an example is refused, saying how to make one.
#[test]
fn examples_without_their_key_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    for name in ["gateway-tx.toml", "gateway-rx.toml"] {
        let path = dir.path().join(name);
        std::fs::copy(example(name), &path).expect("copy example");
        let err = if name.contains("tx") {
            TxConfig::load(&path).map(|_| ()).unwrap_err()
        } else {
            RxConfig::load(&path).map(|_| ()).unwrap_err()
        };
        let text = err.to_string();
        assert!(text.contains("link.key_file"), "{text}");
        assert!(text.contains("gateway-tx keygen"), "{text}");
    }
}

#[test]
fn the_examples_turn_history_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tx =
        TxConfig::load(&installed("gateway-tx.toml", dir.path())).unwrap_or_else(|e| panic!("{e}"));
    let h = tx.history.expect("the TX example has [history]");
    assert_eq!(h.carousel_window, Duration::from_secs(300));
    let rx =
        RxConfig::load(&installed("gateway-rx.toml", dir.path())).unwrap_or_else(|e| panic!("{e}"));
    assert!(rx.store.enabled);
    assert_eq!(
        rx.store.path,
        PathBuf::from("/var/lib/gateway/history.sqlite")
    );
}
