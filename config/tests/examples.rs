//! The example configs shipped in deploy/examples must stay valid.

use std::path::PathBuf;

use config::rx::RxConfig;
use config::tx::TxConfig;

fn example(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/examples")
        .join(name)
}

#[test]
fn tx_example_is_valid() {
    let c = match TxConfig::load(&example("gateway-tx.toml")) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(c.devices.len(), 2);
    assert_eq!(c.devices.iter().map(|d| d.tags.len()).sum::<usize>(), 10);
    assert!(c.link.key.is_none());
}

#[test]
fn rx_example_is_valid() {
    let c = match RxConfig::load(&example("gateway-rx.toml")) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    assert!(c.modbus_server.is_some());
}

/// The commented-out `key_file` lines work once uncommented next to a key made as the
/// comments say.
#[test]
fn examples_with_key_file_enabled() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("link.key");
    std::fs::write(&key, "ab".repeat(32)).expect("write key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    for name in ["gateway-tx.toml", "gateway-rx.toml"] {
        let text = std::fs::read_to_string(example(name)).expect("read example");
        let enabled = text.replace("# key_file = \"link.key\"", "key_file = \"link.key\"");
        assert_ne!(text, enabled, "{name} has no commented key_file line");
        let path = dir.path().join(name);
        let key = if name.contains("tx") {
            TxConfig::parse(&enabled, &path).map(|c| c.link.key)
        } else {
            RxConfig::parse(&enabled, &path).map(|c| c.link.key)
        };
        match key {
            Ok(k) => assert_eq!(k, Some([0xab; 32])),
            Err(e) => panic!("{e}"),
        }
    }
}
