//! The pre-shared key file: permissions, content, path resolution; same rules on both sides.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use config::rx::RxConfig;
use config::tx::TxConfig;

const HEX: &str = "000102030405060708090a0b0c0d0e0f\n101112131415161718191a1b1c1d1e1f\n";

fn write_key(dir: &Path, name: &str, content: &[u8], mode: u32) {
    let p = dir.join(name);
    fs::write(&p, content).expect("write key");
    fs::set_permissions(&p, fs::Permissions::from_mode(mode)).expect("chmod");
}

fn tx(dir: &Path, key_file: &str) -> Result<TxConfig, config::ConfigError> {
    let src = format!("[link]\ndestination = \"127.0.0.1:5600\"\nkey_file = \"{key_file}\"\n");
    TxConfig::parse(&src, &dir.join("tx.toml"))
}

#[test]
fn relative_key_file_is_resolved_against_the_config_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_key(dir.path(), "link.key", HEX.as_bytes(), 0o600);
    let c = tx(dir.path(), "link.key").expect("valid");
    let key = c.link.key.expect("key");
    assert_eq!(key[0], 0);
    assert_eq!(key[31], 0x1f);
    assert_eq!(
        c.link.key_file.as_deref(),
        Some(dir.path().join("link.key").as_path())
    );
}

#[test]
fn raw_32_byte_key_and_absolute_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let raw: Vec<u8> = (100..132).collect();
    write_key(dir.path(), "raw.key", &raw, 0o400);
    let abs = dir.path().join("raw.key");
    let c = tx(Path::new("/nonexistent"), abs.to_str().expect("utf8")).expect("valid");
    assert_eq!(c.link.key.expect("key").to_vec(), raw);
}

#[test]
fn group_readable_key_file_says_chmod_600() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_key(dir.path(), "link.key", HEX.as_bytes(), 0o644);
    let err = tx(dir.path(), "link.key").unwrap_err();
    let d = &err.diagnostics()[0];
    assert_eq!((d.line, d.column, d.key.as_str()), (3, 12, "link.key_file"));
    assert!(d.message.contains("(mode 0644)"), "{d}");
    assert!(d.message.contains("run `chmod 600 "), "{d}");
}

#[test]
fn missing_key_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let err = tx(dir.path(), "nope.key").unwrap_err();
    let d = &err.diagnostics()[0];
    assert_eq!((d.line, d.column, d.key.as_str()), (3, 12, "link.key_file"));
    assert!(d.message.contains("cannot read key file"), "{d}");
    assert!(
        d.message
            .contains("relative to this config file's directory"),
        "{d}"
    );
    assert!(d.message.contains("gateway-tx keygen link.key"), "{d}");
}

#[test]
fn wrong_key_content() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (content, why) in [
        (
            &b"0011223344556677"[..],
            "holds 16 hex characters (64 bits)",
        ),
        (
            &b"00112233445566778899aabbccddeeff"[..],
            "holds 32 hex characters (128 bits)",
        ),
        (&b"not a key at all"[..], "holds 16 bytes that are neither"),
        (&[0u8; 32][..], "all-zero key"),
    ] {
        write_key(dir.path(), "bad.key", content, 0o600);
        let err = tx(dir.path(), "bad.key").unwrap_err();
        let d = &err.diagnostics()[0];
        assert_eq!((d.line, d.column, d.key.as_str()), (3, 12, "link.key_file"));
        assert!(d.message.contains(why), "{why:?} not in {d}");
        assert!(d.message.contains("64 hex characters"), "{d}");
    }
}

#[test]
fn rx_uses_the_same_rules() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_key(dir.path(), "link.key", HEX.as_bytes(), 0o640);
    let src = "[link]\nbind = \"0.0.0.0:5600\"\nkey_file = \"link.key\"\n";
    let err = RxConfig::parse(src, &dir.path().join("rx.toml")).unwrap_err();
    let d = &err.diagnostics()[0];
    assert_eq!((d.line, d.column, d.key.as_str()), (3, 12, "link.key_file"));
    assert!(d.message.contains("chmod 600"), "{d}");

    fs::set_permissions(
        dir.path().join("link.key"),
        fs::Permissions::from_mode(0o600),
    )
    .expect("chmod");
    let c = RxConfig::parse(src, &dir.path().join("rx.toml")).expect("valid");
    assert_eq!(c.link.key.expect("key")[1], 1);
}

#[test]
fn oversized_key_file_is_refused_without_reading_it_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_key(dir.path(), "big.key", &vec![b'a'; 1 << 20], 0o600);
    let err = tx(dir.path(), "big.key").unwrap_err();
    let d = &err.diagnostics()[0];
    assert_eq!((d.line, d.column, d.key.as_str()), (3, 12, "link.key_file"));
    assert!(d.message.contains("is 1048576 bytes, not a key"), "{d}");
}

/// Running without authentication is a choice the config must state; it is never a default.
#[test]
fn a_link_without_key_file_is_refused_unless_insecure_no_key_says_so() {
    for (src, parse) in [
        (
            "[link]\ndestination = \"127.0.0.1:5600\"\n",
            (|s| TxConfig::parse(s, Path::new("tx.toml")).map(|c| c.link.insecure_no_key))
                as fn(&str) -> Result<bool, config::ConfigError>,
        ),
        ("[link]\nbind = \"127.0.0.1:5600\"\n", |s| {
            RxConfig::parse(s, Path::new("rx.toml")).map(|c| c.link.insecure_no_key)
        }),
    ] {
        let err = parse(src).unwrap_err();
        let d = &err.diagnostics()[0];
        assert_eq!((d.line, d.column, d.key.as_str()), (1, 1, "link.key_file"));
        for part in [
            "no key_file",
            "gateway-tx keygen link.key",
            "key_file = \"link.key\"",
            "insecure_no_key = true",
        ] {
            assert!(d.message.contains(part), "{part:?} not in: {d}");
        }
        let explicit = format!("{src}insecure_no_key = true\n");
        assert!(parse(&explicit).expect("valid"));
        let both = format!("{src}insecure_no_key = true\nkey_file = \"link.key\"\n");
        let err = parse(&both).unwrap_err();
        let d = &err.diagnostics()[0];
        assert_eq!((d.line, d.key.as_str()), (3, "link.insecure_no_key"));
        assert!(d.message.contains("contradict"), "{d}");
        // `false` is no choice at all.
        let off = format!("{src}insecure_no_key = false\n");
        assert!(parse(&off).is_err());
    }
}

#[test]
fn the_state_file_defaults_under_var_lib_and_resolves_relative_paths() {
    let tx = TxConfig::parse(
        "[link]\ndestination = \"127.0.0.1:5600\"\ninsecure_no_key = true\n",
        Path::new("/etc/gw/tx.toml"),
    )
    .expect("valid");
    assert_eq!(
        tx.link.state_file,
        Path::new("/var/lib/gateway/tx-link.state")
    );
    let rx = RxConfig::parse(
        "[link]\nbind = \"127.0.0.1:5600\"\ninsecure_no_key = true\nstate_file = \"s/rx.state\"\n",
        Path::new("/etc/gw/rx.toml"),
    )
    .expect("valid");
    assert_eq!(rx.link.state_file, Path::new("/etc/gw/s/rx.state"));
}
