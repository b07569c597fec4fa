//! `[nats]` in the RX config: defaults, every key, and errors that name the file, line,
//! column and key and say what is valid.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use config::Diagnostic;
use config::rx::{NatsAuth, RxConfig, Spool};

const RX: &str = "[link]\ninsecure_no_key = true\nbind = \"0.0.0.0:5600\"\n";

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
fn nats_defaults() {
    let c = rx_at(
        &format!("{RX}[nats]\nservers = \"10.0.0.5:4222\"\n"),
        Path::new("/etc/gw/rx.toml"),
    );
    let n = c.nats.expect("[nats]");
    assert_eq!(n.servers, ["nats://10.0.0.5:4222"]);
    assert_eq!(n.auth, NatsAuth::None);
    assert!(!n.tls);
    assert_eq!(n.ca_file, None);
    assert_eq!(n.stream, "GATEWAY");
    assert_eq!(n.subject_prefix, "gateway");
    assert_eq!(n.replicas, 1);
    assert_eq!(n.max_age, Duration::ZERO);
    assert_eq!(n.max_bytes, None);
    assert_eq!(n.duplicate_window, Duration::from_secs(120));
    assert_eq!(n.max_in_flight, 256);
    assert_eq!(n.ack_timeout, Duration::from_secs(10));
    assert_eq!(
        n.spool,
        Spool {
            dir: "/var/lib/gateway/spool/nats".into(),
            max_bytes: 1 << 30,
        }
    );
}

#[test]
fn nats_every_field() {
    let dir = tempfile::tempdir().unwrap();
    secret_file(
        dir.path(),
        "gw.nk",
        "SUACSSL3UAHUDXKFSNVUZRF5UHPMWZ6BFDTJ7M6USDXIEDNPPQYYYCU3VY\n",
        0o600,
    );
    std::fs::write(dir.path().join("ca.pem"), "x").unwrap();
    let c = rx_at(
        &format!(
            "{RX}[nats]\nservers = [\"tls://a.example:4222\", \"nats://10.0.0.6\", \"[::1]:4223\"]\n\
             nkey_seed_file = \"gw.nk\"\nca_file = \"ca.pem\"\nstream = \"PLANT_1-gw\"\n\
             subject_prefix = \"plant1.gw\"\nreplicas = 3\nmax_age_s = 86400\n\
             max_bytes = 1000000\nduplicate_window_s = 600\nmax_in_flight = 1000\n\
             ack_timeout_s = 5\nspool_dir = \"spool-nats\"\nspool_max_bytes = 2097152\n"
        ),
        &dir.path().join("rx.toml"),
    );
    let n = c.nats.expect("[nats]");
    assert_eq!(
        n.servers,
        [
            "tls://a.example:4222",
            "nats://10.0.0.6",
            "nats://[::1]:4223"
        ]
    );
    assert!(
        matches!(&n.auth, NatsAuth::NKeySeed { seed, .. } if seed.expose().starts_with("SUAC"))
    );
    assert!(n.tls, "a tls:// URL turns TLS on");
    assert_eq!(n.ca_file, Some(dir.path().join("ca.pem")));
    assert_eq!(
        (n.stream.as_str(), n.subject_prefix.as_str(), n.replicas),
        ("PLANT_1-gw", "plant1.gw", 3)
    );
    assert_eq!(n.max_age, Duration::from_secs(86400));
    assert_eq!(n.max_bytes, Some(1_000_000));
    assert_eq!(n.duplicate_window, Duration::from_secs(600));
    assert_eq!(
        (n.max_in_flight, n.ack_timeout),
        (1000, Duration::from_secs(5))
    );
    assert_eq!(n.spool.dir, dir.path().join("spool-nats"));
    assert_eq!(n.spool.max_bytes, 2 << 20);

    secret_file(dir.path(), "nats.pass", "s3cret\n", 0o600);
    secret_file(
        dir.path(),
        "gw.creds",
        "-----BEGIN NATS USER JWT-----\n",
        0o600,
    );
    let user = rx_at(
        &format!(
            "{RX}[nats]\nservers = [\"n:4222\"]\nusername = \"gw\"\npassword_file = \"nats.pass\"\n"
        ),
        &dir.path().join("rx.toml"),
    );
    assert!(matches!(
        user.nats.unwrap().auth,
        NatsAuth::UserPassword { ref user, ref password, .. } if user == "gw" && password.expose() == "s3cret"
    ));
    let creds = rx_at(
        &format!("{RX}[nats]\nservers = [\"n:4222\"]\ncreds_file = \"gw.creds\"\n"),
        &dir.path().join("rx.toml"),
    );
    assert_eq!(
        creds.nats.unwrap().auth,
        NatsAuth::CredsFile(dir.path().join("gw.creds"))
    );
}

#[test]
fn nats_errors() {
    let t = |body: &str| diags(&format!("{RX}[nats]\n{body}"));
    one(
        t("stream = \"X\"\n"),
        4,
        1,
        "nats.servers",
        &["missing required key `servers`", "nats://10.0.0.5:4222"],
    );
    one(
        t("servers = [\"nats://a:4222\", \"http://b:4222\"]\n"),
        5,
        29,
        "nats.servers[1]",
        &["scheme \"http\"", "nats://"],
    );
    one(
        t("servers = [\"nats://gw:pw@a:4222\"]\n"),
        5,
        12,
        "nats.servers[0]",
        &["credentials", "creds_file"],
    );
    one(
        t("servers = [\"a:0\"]\n"),
        5,
        12,
        "nats.servers[0]",
        &["port"],
    );
    one(
        t("servers = [4222]\n"),
        5,
        12,
        "nats.servers[0]",
        &["where a string is needed"],
    );
    one(
        t("servers = []\n"),
        5,
        11,
        "nats.servers",
        &["1 to 32 servers"],
    );
    let s = "servers = \"a:4222\"\n";
    one(
        t(&format!("{s}subject_prefix = \"a..b\"\n")),
        6,
        18,
        "nats.subject_prefix",
        &["empty token", "plant1.gateway"],
    );
    one(
        t(&format!("{s}subject_prefix = \"a.*\"\n")),
        6,
        18,
        "nats.subject_prefix",
        &["wildcard"],
    );
    one(
        t(&format!("{s}subject_prefix = \"$JS.x\"\n")),
        6,
        18,
        "nats.subject_prefix",
        &["reserves"],
    );
    one(
        t(&format!("{s}subject_prefix = \"a b\"\n")),
        6,
        18,
        "nats.subject_prefix",
        &["whitespace"],
    );
    one(
        t(&format!("{s}stream = \"a.b\"\n")),
        6,
        10,
        "nats.stream",
        &["1 to 64 letters"],
    );
    one(
        t(&format!("{s}replicas = 6\n")),
        6,
        12,
        "nats.replicas",
        &["from 1 to 5"],
    );
    one(
        t(&format!("{s}max_age_s = 60\nduplicate_window_s = 120\n")),
        7,
        22,
        "nats.duplicate_window_s",
        &["longer than max_age_s"],
    );
    one(
        t(&format!("{s}creds_file = \"a\"\nusername = \"u\"\n")),
        7,
        12,
        "nats.username",
        &["two ways to authenticate"],
    );
    one(
        t(&format!("{s}password_file = \"p\"\n")),
        6,
        17,
        "nats.password_file",
        &["needs a user name"],
    );
    one(
        t(&format!("{s}ca_file = \"/etc/hostname\"\n")),
        6,
        11,
        "nats.ca_file",
        &["only used with TLS"],
    );
    one(
        t(&format!("{s}creds_file = \"/nonexistent/gw.creds\"\n")),
        6,
        14,
        "nats.creds_file",
        &["does not exist"],
    );
    one(
        t(&format!("{s}max_in_flight = 0\n")),
        6,
        17,
        "nats.max_in_flight",
        &["from 1 to 10000"],
    );
    one(
        t(&format!("{s}subjects = \"x\"\n")),
        6,
        1,
        "nats.subjects",
        &["unknown key", "subject_prefix"],
    );
}

#[test]
fn nats_secret_files_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    secret_file(dir.path(), "open.creds", "x", 0o644);
    secret_file(dir.path(), "bad.nk", "not a seed\n", 0o600);
    let d = diags_at(
        &format!("{RX}[nats]\nservers = \"a:4222\"\ncreds_file = \"open.creds\"\n"),
        &dir.path().join("rx.toml"),
    );
    one(
        d,
        6,
        14,
        "nats.creds_file",
        &["group or others", "chmod 600"],
    );
    let d = diags_at(
        &format!("{RX}[nats]\nservers = \"a:4222\"\nnkey_seed_file = \"bad.nk\"\n"),
        &dir.path().join("rx.toml"),
    );
    one(
        d,
        6,
        18,
        "nats.nkey_seed_file",
        &["does not start with a seed"],
    );
}

#[test]
fn nats_needs_the_store() {
    let d = diags(&format!(
        "{RX}[store]\nenabled = false\n[nats]\nservers = \"a:4222\"\n"
    ));
    one(d, 5, 11, "store.enabled", &["[nats]"]);
}
