//! `gateway-tx browse`: options are checked like `[[opcua]]` keys and reported by option name;
//! an unreachable server is a clear error and a failing exit status. Built without OPC UA, the
//! command only says it is missing, so there is nothing here to test.
#![cfg(feature = "opcua")]

use std::process::Command;

fn browse(args: &[&str]) -> (bool, String) {
    let pki = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_gateway-tx"))
        .arg("browse")
        .args(args)
        .args([
            "--pki-dir",
            &pki.path().display().to_string(),
            "--timeout-ms",
            "500",
        ])
        .output()
        .expect("run gateway-tx");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_options_are_named() {
    let (ok, err) = browse(&[
        "opc.tcp://127.0.0.1:4840/",
        "--security-policy",
        "basic128",
        "--security-mode",
        "sign",
    ]);
    assert!(!ok);
    assert!(
        err.contains("--security-policy: unknown value \"basic128\""),
        "{err}"
    );
    let (ok, err) = browse(&["http://127.0.0.1:4840/"]);
    assert!(!ok);
    assert!(
        err.contains("URL: \"http://127.0.0.1:4840/\" is not an OPC UA endpoint URL"),
        "{err}"
    );
    let (ok, err) = browse(&["opc.tcp://127.0.0.1:4840/", "--user", "reader"]);
    assert!(!ok);
    assert!(
        err.contains("--password-file: `user` needs `password_file`"),
        "{err}"
    );
}

#[test]
fn unreachable_server_fails_clearly() {
    // A port nobody listens on: bound and closed a moment ago.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let (ok, err) = browse(&[&format!("opc.tcp://127.0.0.1:{port}/")]);
    assert!(!ok);
    assert!(
        err.contains(&format!("cannot connect to opc.tcp://127.0.0.1:{port}/")),
        "{err}"
    );
}
