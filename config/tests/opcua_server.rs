//! `[opcua_server]` in the RX config: defaults, every field, and each class of error with its
//! file, line, column and key.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use config::Diagnostic;
use config::opcua_server::{Endpoint, OpcUaServer, SecurityMode, SecurityPolicy, User};
use config::rx::{RxConfig, Secret};

const RX: &str = "[link]\ninsecure_no_key = true\nbind = \"192.0.2.10:5600\"\n";

fn rx_at(src: &str, path: &Path) -> RxConfig {
    RxConfig::parse(src, path).unwrap_or_else(|e| panic!("{e}"))
}

fn diags_at(src: &str, path: &Path) -> Vec<Diagnostic> {
    match RxConfig::parse(src, path) {
        Ok(c) => panic!("expected errors, got {c:#?}"),
        Err(e) => e.diagnostics().to_vec(),
    }
}

fn diags(src: &str) -> Vec<Diagnostic> {
    diags_at(src, Path::new("/etc/gw/rx.toml"))
}

#[track_caller]
fn one(d: Vec<Diagnostic>, line: usize, column: usize, key: &str, fragments: &[&str]) {
    assert_eq!(d.len(), 1, "expected one diagnostic, got: {d:#?}");
    let d = &d[0];
    assert_eq!(
        (d.line, d.column, d.key.as_str()),
        (line, column, key),
        "{d}"
    );
    assert_eq!(d.file, Path::new("/etc/gw/rx.toml"));
    for f in fragments {
        assert!(d.message.contains(f), "{f:?} not in: {d}");
    }
}

fn secret_file(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    p
}

#[test]
fn off_without_the_table_and_defaults_with_it() {
    let c = rx_at(RX, Path::new("/etc/gw/rx.toml"));
    assert_eq!(c.opcua_server, None);
    let c = rx_at(
        &format!("{RX}[opcua_server]\n"),
        Path::new("/etc/gw/rx.toml"),
    );
    assert_eq!(
        c.opcua_server,
        Some(OpcUaServer {
            bind: "0.0.0.0:4840".parse().unwrap(),
            namespace_uri: "urn:gateway:mirror".into(),
            application_name: "gateway-rx OPC UA mirror".into(),
            application_uri: "urn:gateway:rx".into(),
            pki_dir: "/var/lib/gateway/opcua-pki".into(),
            insecure_trust_any_client_certificate: false,
            endpoints: vec![
                Endpoint {
                    policy: SecurityPolicy::None,
                    mode: SecurityMode::None,
                },
                Endpoint {
                    policy: SecurityPolicy::Basic256Sha256,
                    mode: SecurityMode::SignAndEncrypt,
                },
            ],
            anonymous: true,
            users: vec![],
            max_sessions: 20,
            max_subscriptions_per_session: 10,
            max_monitored_items_per_subscription: 10_000,
            max_history_continuation_points: 10,
        })
    );
}

#[test]
fn every_field() {
    let dir = tempfile::tempdir().unwrap();
    secret_file(dir.path(), "historian.pass", "pa ss\nignored\n", 0o600);
    let src = format!(
        "{RX}[opcua_server]
bind = \"10.1.2.3\"
namespace_uri = \"urn:plant1:mirror\"
application_name = \"Plant 1 mirror\"
application_uri = \"urn:plant1:gateway-rx\"
pki_dir = \"pki\"
insecure_trust_any_client_certificate = true
anonymous = false
max_sessions = 5
max_subscriptions_per_session = 3
max_monitored_items_per_subscription = 100
max_history_continuation_points = 4

[[opcua_server.endpoint]]
security_policy = \"none\"

[[opcua_server.endpoint]]
security_policy = \"aes128_sha256_rsaoaep\"
security_mode = \"sign\"

[[opcua_server.user]]
name = \"historian\"
password_file = \"historian.pass\"
"
    );
    let path = dir.path().join("rx.toml");
    let c = rx_at(&src, &path).opcua_server.expect("on");
    assert_eq!(c.bind, "10.1.2.3:4840".parse().unwrap(), "the default port");
    assert_eq!(c.namespace_uri, "urn:plant1:mirror");
    assert_eq!(c.application_name, "Plant 1 mirror");
    assert_eq!(c.application_uri, "urn:plant1:gateway-rx");
    assert_eq!(
        c.pki_dir,
        dir.path().join("pki"),
        "relative to the config file"
    );
    assert!(c.insecure_trust_any_client_certificate);
    assert!(!c.anonymous);
    assert_eq!(
        (
            c.max_sessions,
            c.max_subscriptions_per_session,
            c.max_monitored_items_per_subscription,
            c.max_history_continuation_points
        ),
        (5, 3, 100, 4)
    );
    assert_eq!(
        c.endpoints,
        vec![
            Endpoint {
                policy: SecurityPolicy::None,
                mode: SecurityMode::None
            },
            Endpoint {
                policy: SecurityPolicy::Aes128Sha256RsaOaep,
                mode: SecurityMode::Sign
            },
        ]
    );
    assert_eq!(
        c.users,
        vec![User {
            name: "historian".into(),
            password: Secret::new("pa ss"),
            password_file: dir.path().join("historian.pass"),
        }]
    );
    assert!(
        !format!("{c:?}").contains("pa ss"),
        "passwords stay out of Debug"
    );
}

#[test]
fn errors_name_the_line_and_key() {
    let t = "[opcua_server]\n";
    one(
        diags(&format!("{RX}{t}bind = \"opc.tcp://host:4840\"\n")),
        5,
        8,
        "opcua_server.bind",
        &["not an IP address with a port"],
    );
    one(
        diags(&format!("{RX}{t}bind = \"192.0.2.10:4840\"\n")),
        5,
        8,
        "opcua_server.bind",
        &["diode link", "must not"],
    );
    one(
        diags(&format!("{RX}{t}max_session = 3\n")),
        5,
        1,
        "opcua_server.max_session",
        &["unknown key", "did you mean `max_sessions`?"],
    );
    one(
        diags(&format!("{RX}{t}max_sessions = 0\n")),
        5,
        16,
        "opcua_server.max_sessions",
        &["0 is out of range", "from 1 to 1000"],
    );
    one(
        diags(&format!(
            "{RX}{t}[[opcua_server.endpoint]]\nsecurity_policy = \"Basic256Sha256\"\nsecurity_mode = \"sign\"\n"
        )),
        6,
        19,
        "opcua_server.endpoint[0].security_policy",
        &[
            "did you mean \"basic256sha256\"?",
            "\"aes128_sha256_rsaoaep\"",
        ],
    );
    one(
        diags(&format!(
            "{RX}{t}[[opcua_server.endpoint]]\nsecurity_policy = \"basic256sha256\"\nsecurity_mode = \"none\"\n"
        )),
        7,
        17,
        "opcua_server.endpoint[0].security_mode",
        &["\"sign\" or \"sign_and_encrypt\""],
    );
    one(
        diags(&format!(
            "{RX}{t}[[opcua_server.endpoint]]\nsecurity_policy = \"basic256sha256\"\n"
        )),
        5,
        1,
        "opcua_server.endpoint[0].security_mode",
        &["missing required key `security_mode`"],
    );
    let twice = "[[opcua_server.endpoint]]\nsecurity_policy = \"none\"\n";
    one(
        diags(&format!("{RX}{t}{twice}{twice}")),
        7,
        1,
        "opcua_server.endpoint[1]",
        &["already listed at line 5"],
    );
    one(
        diags(&format!("{RX}{t}anonymous = false\n")),
        5,
        13,
        "opcua_server.anonymous",
        &["no client could open a session"],
    );
    one(
        diags(&format!(
            "{RX}{t}insecure_trust_any_client_certificate = \"yes\"\n"
        )),
        5,
        41,
        "opcua_server.insecure_trust_any_client_certificate",
        &["true or false"],
    );
}

#[test]
fn user_password_files_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    secret_file(dir.path(), "open.pass", "x\n", 0o644);
    let path = dir.path().join("rx.toml");
    let user = "[[opcua_server.user]]\nname = \"historian\"\n";
    let d = diags_at(
        &format!("{RX}[opcua_server]\n{user}password_file = \"open.pass\"\n"),
        &path,
    );
    assert_eq!(d.len(), 1, "{d:#?}");
    assert_eq!(
        (d[0].line, d[0].key.as_str()),
        (7, "opcua_server.user[0].password_file")
    );
    assert!(d[0].message.contains("chmod 600"), "{}", d[0]);
    assert_eq!(d[0].file, path);

    let d = diags_at(&format!("{RX}[opcua_server]\n{user}"), &path);
    assert_eq!(d.len(), 1, "{d:#?}");
    assert_eq!(d[0].key, "opcua_server.user[0].password_file");
    assert!(d[0].message.contains("missing required key"), "{}", d[0]);

    secret_file(dir.path(), "ok.pass", "x\n", 0o600);
    let d = diags_at(
        &format!(
            "{RX}[opcua_server]\n[[opcua_server.endpoint]]\nsecurity_policy = \"none\"\n{user}password_file = \"ok.pass\"\n"
        ),
        &path,
    );
    assert_eq!(d.len(), 1, "{d:#?}");
    assert_eq!((d[0].line, d[0].key.as_str()), (7, "opcua_server.user"));
    assert!(d[0].message.contains("in the clear"), "{}", d[0]);

    let ok = "password_file = \"ok.pass\"\n";
    let d = diags_at(
        &format!(
            "{RX}[opcua_server]\n{user}{ok}{user}{ok}[[opcua_server.user]]\nname = \"two words\"\n{ok}"
        ),
        &path,
    );
    assert_eq!(d.len(), 2, "{d:#?}");
    assert_eq!(
        (d[0].line, d[0].key.as_str()),
        (9, "opcua_server.user[1].name")
    );
    assert!(
        d[0].message.contains("already defined at line 6"),
        "{}",
        d[0]
    );
    assert_eq!(
        (d[1].line, d[1].key.as_str()),
        (12, "opcua_server.user[2].name")
    );
    assert!(d[1].message.contains("without spaces"), "{}", d[1]);
}
