//! The sinks' tables of the RX config: `[mqtt]` and `[postgres]`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use config::Diagnostic;
use config::rx::{Mqtt, MqttFormat, Postgres, RxConfig, Secret, Spool};

const RX: &str = "[link]\ninsecure_no_key = true\nbind = \"0.0.0.0:5600\"\n";

fn rx_at(src: &str, path: &Path) -> RxConfig {
    RxConfig::parse(src, path).unwrap_or_else(|e| panic!("{e}"))
}

fn rx(src: &str) -> RxConfig {
    rx_at(src, Path::new("/etc/gw/rx.toml"))
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
fn sinks_are_off_without_their_tables() {
    let c = rx(RX);
    assert_eq!((c.mqtt, c.postgres), (None, None));
}

#[test]
fn mqtt_defaults() {
    let c = rx(&format!("{RX}[mqtt]\nhost = \"127.0.0.1\"\n"));
    assert_eq!(
        c.mqtt,
        Some(Mqtt {
            host: "127.0.0.1".into(),
            port: 1883,
            client_id: "gateway-rx".into(),
            topic_prefix: "gateway".into(),
            qos: 1,
            retain: true,
            live: true,
            username: None,
            password: None,
            password_file: None,
            tls: false,
            ca_file: None,
            keep_alive: Duration::from_secs(30),
            qos2_max_inflight: 20,
            format: MqttFormat::Json,
            spool: Spool {
                dir: "/var/lib/gateway/spool/mqtt".into(),
                max_bytes: 1 << 30,
            },
        })
    );
}

#[test]
fn mqtt_every_field() {
    let dir = tempfile::tempdir().unwrap();
    secret_file(dir.path(), "mqtt.pass", "s3cret\n", 0o600);
    std::fs::write(dir.path().join("ca.pem"), "-----BEGIN CERTIFICATE-----\n").unwrap();
    let cfg = dir.path().join("rx.toml");
    let c = rx_at(
        &format!(
            "{RX}[store]\npath = \"/srv/h/history.sqlite\"\n[mqtt]\nhost = \"broker.example\"\n\
             client_id = \"rx-2\"\ntopic_prefix = \"plant1/gw/\"\nqos = 2\nretain = false\n\
             live = false\nusername = \"gw\"\npassword_file = \"mqtt.pass\"\ntls = true\n\
             ca_file = \"ca.pem\"\nkeep_alive_s = 60\nqos2_max_inflight = 10\nspool_max_bytes = 1048576\n"
        ),
        &cfg,
    );
    let m = c.mqtt.expect("mqtt");
    assert_eq!(m.port, 8883, "TLS changes the default port");
    assert_eq!(m.topic_prefix, "plant1/gw", "a trailing slash is dropped");
    assert_eq!((m.qos, m.retain, m.live), (2, false, false));
    assert_eq!(m.username.as_deref(), Some("gw"));
    assert_eq!(m.password, Some(Secret::new("s3cret")));
    assert_eq!(format!("{:?}", m.password), "Some(Secret(..))");
    assert_eq!(m.ca_file, Some(dir.path().join("ca.pem")));
    assert_eq!(m.keep_alive, Duration::from_secs(60));
    assert_eq!(m.qos2_max_inflight, 10);
    assert_eq!(
        m.spool,
        Spool {
            dir: "/srv/h/spool/mqtt".into(),
            max_bytes: 1 << 20
        }
    );
    assert!(m.tls);
}

#[test]
fn mqtt_errors() {
    one(
        diags(&format!("{RX}[mqtt]\nport = 1883\n")),
        4,
        1,
        "mqtt.host",
        &["missing required key `host` in [mqtt]", "remove [mqtt]"],
    );
    one(
        diags(&format!("{RX}[mqtt]\nhost = \"b\"\nqos = 3\n")),
        6,
        7,
        "mqtt.qos",
        &["3 is out of range", "from 0 to 2"],
    );
    one(
        diags(&format!(
            "{RX}[mqtt]\nhost = \"b\"\nqos2_max_inflight = 501\n"
        )),
        6,
        21,
        "mqtt.qos2_max_inflight",
        &["501 is out of range", "from 1 to 500"],
    );
    one(
        diags(&format!(
            "{RX}[mqtt]\nhost = \"b\"\ntopic_prefix = \"a/+/b\"\n"
        )),
        6,
        16,
        "mqtt.topic_prefix",
        &["wildcard"],
    );
    one(
        diags(&format!(
            "{RX}[mqtt]\nhost = \"b\"\ntopic_prefix = \"$SYS\"\n"
        )),
        6,
        16,
        "mqtt.topic_prefix",
        &["reserve"],
    );
    // A broker closes the connection of a client publishing such a topic.
    for prefix in ["a\\tb", "a\\u007Fb", "a\\uFFFEb"] {
        one(
            diags(&format!(
                "{RX}[mqtt]\nhost = \"b\"\ntopic_prefix = \"{prefix}\"\n"
            )),
            6,
            16,
            "mqtt.topic_prefix",
            &["control character or a Unicode noncharacter"],
        );
    }
    one(
        diags(&format!("{RX}[mqtt]\nhost = \"b\"\nqoss = 1\n")),
        6,
        1,
        "mqtt.qoss",
        &["unknown key `qoss` (did you mean `qos`?)"],
    );
    one(
        diags(&format!(
            "{RX}[mqtt]\nhost = \"b\"\nca_file = \"/etc/ssl/x.pem\"\n"
        )),
        6,
        11,
        "mqtt.ca_file",
        &["only used with TLS"],
    );
    one(
        diags(&format!("{RX}[mqtt]\nhost = \"b\"\nclient_id = \"a b\"\n")),
        6,
        13,
        "mqtt.client_id",
        &["client id \"a b\" is not valid"],
    );
}

#[test]
fn password_files_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("rx.toml");
    secret_file(dir.path(), "open.pass", "pw\n", 0o644);
    secret_file(dir.path(), "empty.pass", "\n", 0o600);
    let d = diags_at(
        &format!("{RX}[mqtt]\nhost = \"b\"\nusername = \"u\"\npassword_file = \"open.pass\"\n"),
        &cfg,
    );
    one(d, 7, 17, "mqtt.password_file", &["chmod 600", "0644"]);
    let d = diags_at(
        &format!("{RX}[postgres]\nhost = \"b\"\npassword_file = \"empty.pass\"\n"),
        &cfg,
    );
    one(d, 6, 17, "postgres.password_file", &["is empty"]);
    let d = diags_at(
        &format!("{RX}[postgres]\nhost = \"b\"\npassword_file = \"nope\"\n"),
        &cfg,
    );
    one(
        d,
        6,
        17,
        "postgres.password_file",
        &["cannot read password file"],
    );
    secret_file(dir.path(), "ok.pass", "pw\n", 0o600);
    let d = diags_at(
        &format!("{RX}[mqtt]\nhost = \"b\"\npassword_file = \"ok.pass\"\n"),
        &cfg,
    );
    one(d, 6, 17, "mqtt.password_file", &["needs a user name"]);
}

#[test]
fn postgres_defaults_and_every_field() {
    let c = rx(&format!("{RX}[postgres]\nhost = \"127.0.0.1\"\n"));
    assert_eq!(
        c.postgres,
        Some(Postgres {
            url: None,
            host: "127.0.0.1".into(),
            port: 5432,
            user: "gateway".into(),
            password: None,
            password_file: None,
            dbname: "gateway".into(),
            schema: "gateway".into(),
            batch_samples: 5000,
            spool: Spool {
                dir: "/var/lib/gateway/spool/postgres".into(),
                max_bytes: 1 << 30,
            },
        })
    );
    let dir = tempfile::tempdir().unwrap();
    secret_file(dir.path(), "pg.pass", "pw", 0o600);
    let c = rx_at(
        &format!(
            "{RX}[postgres]\nhost = \"/var/run/postgresql\"\nport = 5433\nuser = \"hist\"\n\
             password_file = \"pg.pass\"\ndbname = \"plant\"\nschema = \"hist_1\"\nsslmode = \"disable\"\n\
             batch_samples = 20000\nspool_dir = \"spool-pg\"\nspool_max_bytes = 2097152\n"
        ),
        &dir.path().join("rx.toml"),
    );
    let p = c.postgres.expect("postgres");
    assert_eq!(
        (p.host.as_str(), p.port, p.user.as_str(), p.dbname.as_str()),
        ("/var/run/postgresql", 5433, "hist", "plant")
    );
    assert_eq!(p.password, Some(Secret::new("pw")));
    assert_eq!(p.batch_samples, 20_000);
    assert_eq!(p.schema, "hist_1");
    assert_eq!(p.spool.dir, dir.path().join("spool-pg"));
    assert_eq!(p.spool.max_bytes, 2 << 20);
    let c = rx(&format!(
        "{RX}[postgres]\nurl = \"postgresql://hist@db.example:5433/plant?sslmode=disable\"\n"
    ));
    assert_eq!(
        c.postgres.expect("postgres").url.as_deref(),
        Some("postgresql://hist@db.example:5433/plant?sslmode=disable")
    );
}

#[test]
fn postgres_errors() {
    one(
        diags(&format!("{RX}[postgres]\ndbname = \"x\"\n")),
        4,
        1,
        "postgres.host",
        &["missing required key `host` in [postgres]", "url ="],
    );
    one(
        diags(&format!(
            "{RX}[postgres]\nurl = \"postgresql://a@b/c\"\nhost = \"b\"\n"
        )),
        6,
        8,
        "postgres.host",
        &["either url or host"],
    );
    one(
        diags(&format!(
            "{RX}[postgres]\nurl = \"postgresql://a:pw@b/c\"\n"
        )),
        5,
        7,
        "postgres.url",
        &["password_file"],
    );
    one(
        diags(&format!("{RX}[postgres]\nurl = \"mysql://a@b/c\"\n")),
        5,
        7,
        "postgres.url",
        &["not a PostgreSQL URL"],
    );
    one(
        diags(&format!(
            "{RX}[postgres]\nhost = \"b\"\nsslmode = \"require\"\n"
        )),
        6,
        11,
        "postgres.sslmode",
        &["not supported yet", "without TLS"],
    );
    one(
        diags(&format!(
            "{RX}[postgres]\nurl = \"postgresql://a@b/c?sslmode=verify-full\"\n"
        )),
        5,
        7,
        "postgres.url",
        &["sslmode=verify-full is not supported yet"],
    );
    one(
        diags(&format!(
            "{RX}[postgres]\nhost = \"b\"\nschema = \"Gate-way\"\n"
        )),
        6,
        10,
        "postgres.schema",
        &["not a plain PostgreSQL identifier"],
    );
    one(
        diags(&format!(
            "{RX}[postgres]\nhost = \"b\"\nbatch_samples = 0\n"
        )),
        6,
        17,
        "postgres.batch_samples",
        &["0 is out of range"],
    );
}

#[test]
fn sinks_need_the_store() {
    one(
        diags(&format!(
            "{RX}[store]\nenabled = false\n[mqtt]\nhost = \"b\"\n[postgres]\nhost = \"c\"\n"
        )),
        5,
        11,
        "store.enabled",
        &[
            "[mqtt] and [postgres] take their history from the embedded store",
            "keep enabled = true",
        ],
    );
}

/// The commented `[mqtt]` and `[postgres]` sections of deploy/examples/gateway-rx.toml are
/// valid once uncommented (but for `url`, the alternative to `host`, and the files they name).
#[test]
fn example_sink_sections_are_valid_uncommented() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/gateway-rx.toml");
    // The key file lives beside the real config; these sections do not need it.
    let text = std::fs::read_to_string(&path)
        .expect("example")
        .replace("key_file = \"link.key\"", "insecure_no_key = true");
    let mut out = String::new();
    let mut inside = false;
    let mut uncommented = 0;
    for line in text.lines() {
        if line == "# [mqtt]" || line == "# [postgres]" || line == "# [nats]" {
            inside = true;
        } else if line.trim().is_empty() {
            inside = false;
        }
        let body = line.strip_prefix("# ").unwrap_or(line);
        let setting = body.starts_with('[')
            || body
                .split_once(" = ")
                .is_some_and(|(k, _)| k.chars().all(|c| c.is_ascii_lowercase() || c == '_'));
        let skip = ["url", "password_file", "ca_file", "tls", "creds_file"]
            .iter()
            .any(|k| body.starts_with(&format!("{k} = ")));
        if inside && setting && !skip {
            out.push_str(body);
            uncommented += 1;
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    assert!(uncommented > 20, "{uncommented} lines uncommented");
    let c = rx_at(&out, Path::new("/etc/gateway/gateway-rx.toml"));
    let m = c.mqtt.expect("[mqtt]");
    assert_eq!((m.topic_prefix.as_str(), m.qos), ("plant1/gateway", 1));
    let p = c.postgres.expect("[postgres]");
    assert_eq!(
        (p.host.as_str(), p.schema.as_str(), p.batch_samples),
        ("192.0.2.60", "gateway", 5000)
    );
    let n = c.nats.expect("[nats]");
    assert_eq!(
        (n.servers.len(), n.subject_prefix.as_str(), n.replicas),
        (3, "plant1.gateway", 3)
    );
}

#[test]
fn mqtt_sparkplug_b() {
    let c = rx(&format!(
        "{RX}[mqtt]\nhost = \"127.0.0.1\"\nformat = \"sparkplug_b\"\ngroup_id = \"plant1\"\n\
         edge_node_id = \"gw-rx\"\n"
    ));
    assert_eq!(
        c.mqtt.unwrap().format,
        MqttFormat::SparkplugB {
            group_id: "plant1".into(),
            edge_node_id: "gw-rx".into()
        }
    );
    let c = rx(&format!("{RX}[mqtt]\nhost = \"h\"\nformat = \"json\"\n"));
    assert_eq!(c.mqtt.unwrap().format, MqttFormat::Json);
    for (body, says) in [
        ("format = \"xml\"", "is not known"),
        ("format = \"sparkplug_b\"\ngroup_id = \"a\"", "edge_node_id"),
        (
            "format = \"sparkplug_b\"\ngroup_id = \"a/b\"\nedge_node_id = \"n\"",
            "is not a Sparkplug id",
        ),
        (
            "format = \"sparkplug_b\"\ngroup_id = \"a\"\nedge_node_id = \"n+\"",
            "is not a Sparkplug id",
        ),
        (
            "format = \"sparkplug_b\"\ngroup_id = \"a\"\nedge_node_id = \"n\"\nretain = true",
            "retain is not used",
        ),
        (
            "format = \"sparkplug_b\"\ngroup_id = \"a\"\nedge_node_id = \"n\"\ntopic_prefix = \"x\"",
            "topic_prefix is not used",
        ),
        ("group_id = \"a\"", "only used with format"),
    ] {
        let d = diags_at(
            &format!("{RX}[mqtt]\nhost = \"h\"\n{body}\n"),
            Path::new("/etc/gw/rx.toml"),
        );
        let text = format!("{d:?}");
        assert!(text.contains(says), "{body}: {text}");
    }
}
