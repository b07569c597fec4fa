//! `[[opcua]]` in the transmitter's config: a full endpoint with every key, the defaults, and
//! the mistakes a user makes, each reported at its file, line and key.

use std::path::Path;
use std::time::Duration;

use config::opcua::{
    DeadbandType, Identifier, Identity, Mode, Namespace, SecurityMode, SecurityPolicy, TrustServer,
};
use config::tx::TxConfig;
use protocol::model::ValueType;

const LINK: &str = "[link]\ninsecure_no_key = true\ndestination = \"127.0.0.1:5600\"\n";

fn errors(src: &str) -> Vec<String> {
    match TxConfig::parse(src, Path::new("tx.toml")) {
        Ok(_) => panic!("accepted:\n{src}"),
        Err(e) => e.diagnostics().iter().map(ToString::to_string).collect(),
    }
}

fn password_file(dir: &Path, mode: u32) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join("opcua-password");
    std::fs::write(&p, "s3cret\nignored\n").expect("write");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
    p
}

#[test]
fn full_endpoint_parses() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pw = password_file(dir.path(), 0o600);
    let src = format!(
        r#"{LINK}
[[modbus]]
name = "plc1"
host = "127.0.0.1"
[[modbus.tag]]
name = "a/b"
table = "holding"
address = 0
type = "u16"

[[opcua]]
name = "plant-historian"
url = "opc.tcp://10.0.0.5:4840/"
security_policy = "basic256sha256"
security_mode = "sign_and_encrypt"
user = "reader"
password_file = "{}"
pki_dir = "pki"
mode = "subscribe"
publishing_interval_ms = 250
poll_interval_ms = 2000
timeout_ms = 3000
history_window_s = 600
history_values_per_request = 50

[[opcua.tag]]
name = "site/area/pump3/speed"
node = "nsu=urn:plant:pumps;s=Pump3.Speed"
type = "double"
sampling_interval_ms = 250
queue_size = 5
deadband = 0.5
deadband_type = "percent"
historize = true
unit = "rpm"
description = "pump 3 speed"

[[opcua.tag]]
name = "site/area/pump3/count"
node = "ns=2;i=1001"
type = "u32"
"#,
        pw.display()
    );
    let path = dir.path().join("tx.toml");
    let c = match TxConfig::parse(&src, &path) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(c.opcua.len(), 1);
    let e = &c.opcua[0];
    assert_eq!(e.name, "plant-historian");
    assert_eq!(e.url, "opc.tcp://10.0.0.5:4840/");
    assert_eq!(e.security_policy, SecurityPolicy::Basic256Sha256);
    assert_eq!(e.security_mode, SecurityMode::SignAndEncrypt);
    match &e.identity {
        Identity::UserName { user, password, .. } => {
            assert_eq!(user, "reader");
            assert_eq!(password.expose(), "s3cret");
        }
        other => panic!("identity {other:?}"),
    }
    assert_eq!(e.pki_dir, dir.path().join("pki"));
    assert_eq!(e.trust_server, TrustServer::Listed);
    assert_eq!(e.mode, Mode::Subscribe);
    assert_eq!(e.publishing_interval, Duration::from_millis(250));
    assert_eq!(e.poll_interval, Duration::from_millis(2000));
    assert_eq!(e.timeout, Duration::from_millis(3000));
    assert_eq!(e.history_window, Duration::from_secs(600));
    assert_eq!(e.history_values_per_request, 50);
    let t = &e.tags[0];
    assert_eq!(t.name, "site/area/pump3/speed");
    assert_eq!(t.node.namespace, Namespace::Uri("urn:plant:pumps".into()));
    assert_eq!(t.node.identifier, Identifier::String("Pump3.Speed".into()));
    assert_eq!(t.node_text, "nsu=urn:plant:pumps;s=Pump3.Speed");
    assert_eq!(t.value_type, ValueType::Double);
    assert_eq!(t.sampling_interval, Duration::from_millis(250));
    assert_eq!((t.queue_size, t.deadband), (5, 0.5));
    assert_eq!(t.deadband_type, DeadbandType::Percent);
    assert!(t.historize);
    assert_eq!(
        (t.unit.as_str(), t.description.as_str()),
        ("rpm", "pump 3 speed")
    );
    let t = &e.tags[1];
    assert_eq!(t.node.namespace, Namespace::Index(2));
    assert_eq!(t.node.identifier, Identifier::Numeric(1001));
    assert_eq!(t.value_type, ValueType::UInt32);
    assert_eq!((t.queue_size, t.deadband, t.historize), (10, 0.0, false));
}

#[test]
fn defaults() {
    let src = format!(
        "{LINK}[[opcua]]\nname = \"s\"\nurl = \"opc.tcp://127.0.0.1:4840\"\n\
         [[opcua.tag]]\nname = \"x\"\nnode = \"ns=1;g=72962b91-fa75-4ae6-8d28-b404dc7daf63\"\ntype = \"bool\"\n"
    );
    let c = TxConfig::parse(&src, Path::new("/etc/gateway/tx.toml")).expect("valid");
    let e = &c.opcua[0];
    assert_eq!(e.security_policy, SecurityPolicy::None);
    assert_eq!(e.security_mode, SecurityMode::None);
    assert_eq!(e.identity, Identity::Anonymous);
    assert_eq!(e.pki_dir, Path::new("/var/lib/gateway/opcua-pki"));
    assert_eq!(e.mode, Mode::Subscribe);
    assert_eq!(e.timeout, Duration::from_secs(5));
    assert_eq!(e.history_window, Duration::from_secs(3600));
    assert!(matches!(e.tags[0].node.identifier, Identifier::Guid(_)));
}

#[test]
fn bad_node_string_names_line_and_key() {
    let src = format!(
        "{LINK}[[opcua]]\nname = \"s\"\nurl = \"opc.tcp://127.0.0.1:4840\"\n\
         [[opcua.tag]]\nname = \"x\"\nnode = \"ns=2;q=7\"\ntype = \"f64\"\n"
    );
    let e = errors(&src);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with(
            "tx.toml:9:8: key `opcua[0].tag[0].node`: node id \"ns=2;q=7\" has no identifier"
        ),
        "{}",
        e[0]
    );
}

#[test]
fn unknown_security_policy_is_named_with_a_suggestion() {
    let src = format!(
        "{LINK}[[opcua]]\nname = \"s\"\nurl = \"opc.tcp://127.0.0.1:4840\"\n\
         security_policy = \"basic256_sha256\"\nsecurity_mode = \"sign\"\n"
    );
    let e = errors(&src);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with("tx.toml:7:19: key `opcua[0].security_policy`: unknown value \"basic256_sha256\" (did you mean \"basic256sha256\"?)"),
        "{}",
        e[0]
    );
}

#[test]
fn policy_without_mode() {
    let src = format!(
        "{LINK}[[opcua]]\nname = \"s\"\nurl = \"opc.tcp://127.0.0.1:4840\"\n\
         security_policy = \"aes128_sha256_rsaoaep\"\n"
    );
    let e = errors(&src);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with(
            "tx.toml:7:19: key `opcua[0].security_mode`: security_policy needs a security_mode"
        ),
        "{}",
        e[0]
    );
}

#[test]
fn password_file_missing_or_loose() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = format!(
        "{LINK}[[opcua]]\nname = \"s\"\nurl = \"opc.tcp://127.0.0.1:4840\"\n\
         user = \"reader\"\npassword_file = \"nope\"\n"
    );
    let path = dir.path().join("tx.toml");
    let e: Vec<String> = match TxConfig::parse(&src, &path) {
        Ok(_) => panic!("accepted"),
        Err(e) => e.diagnostics().iter().map(ToString::to_string).collect(),
    };
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].contains(":8:17: key `opcua[0].password_file`: cannot read password file"),
        "{}",
        e[0]
    );
    assert!(e[0].contains("nope"), "{}", e[0]);

    let pw = password_file(dir.path(), 0o644);
    let src = src.replace("\"nope\"", &format!("\"{}\"", pw.display()));
    let e: Vec<String> = match TxConfig::parse(&src, &path) {
        Ok(_) => panic!("accepted"),
        Err(e) => e.diagnostics().iter().map(ToString::to_string).collect(),
    };
    assert!(
        e[0].contains("readable or writable by group or others (mode 0644)"),
        "{}",
        e[0]
    );

    let src = format!(
        "{LINK}[[opcua]]\nname = \"s\"\nurl = \"opc.tcp://127.0.0.1:4840\"\nuser = \"reader\"\n"
    );
    let e = errors(&src);
    assert!(
        e[0].contains("key `opcua[0].password_file`: `user` needs `password_file`"),
        "{}",
        e[0]
    );
}

#[test]
fn names_unique_across_devices_and_endpoints_and_tags_across_sources() {
    let src = format!(
        "{LINK}[[modbus]]\nname = \"plc1\"\nhost = \"127.0.0.1\"\n[[modbus.tag]]\nname = \"a\"\n\
         table = \"holding\"\naddress = 0\ntype = \"u16\"\n\
         [[opcua]]\nname = \"plc1\"\nurl = \"opc.tcp://127.0.0.1:4840\"\n\
         [[opcua.tag]]\nname = \"a\"\nnode = \"i=1\"\ntype = \"u16\"\n"
    );
    let e = errors(&src);
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(e[0].contains("key `opcua[0].name`: duplicate device or endpoint name \"plc1\", first used by modbus[0] at line 5"), "{}", e[0]);
    assert!(
        e[1].contains(
            "key `opcua[0].tag[0].name`: duplicate tag name \"a\", first used by modbus[0].tag[0]"
        ),
        "{}",
        e[1]
    );
}

#[test]
fn other_mistakes() {
    let src = format!(
        "{LINK}[[opcua]]\nname = \"s\"\nurl = \"http://127.0.0.1:4840\"\nmode = \"poll\"\n\
         [[opcua.tag]]\nname = \"x\"\nnode = \"i=1\"\ntype = \"f64\"\ndeadband = 1.0\ndeadband_type = \"percent\"\n\
         [[opcua.tag]]\nname = \"y\"\nnode = \"i=2\"\n\
         [[opcua.tag]]\nname = \"z\"\nnode = \"i=3\"\ntype = \"f64\"\nsampling_interval = 5\n"
    );
    let e = errors(&src);
    assert_eq!(e.len(), 4, "{e:?}");
    assert!(
        e[0].contains(
            "key `opcua[0].url`: \"http://127.0.0.1:4840\" is not an OPC UA endpoint URL"
        ),
        "{}",
        e[0]
    );
    assert!(
        e[1].contains("key `opcua[0].tag[0].deadband_type`: a percent deadband"),
        "{}",
        e[1]
    );
    assert!(
        e[2].contains("key `opcua[0].tag[1].type`: missing required key `type`"),
        "{}",
        e[2]
    );
    assert!(e[3].contains("key `opcua[0].tag[2].sampling_interval`: unknown key `sampling_interval` (did you mean `sampling_interval_ms`?)"), "{}", e[3]);
}
