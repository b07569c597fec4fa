//! RX configs: defaults, every field, and each class of error.

use std::path::Path;
use std::time::Duration;

use config::Diagnostic;
use config::rx::{ModbusServer, OnBadQuality, RxConfig, RxLink, Status, Store};

fn parse(src: &str) -> RxConfig {
    match RxConfig::parse(src, Path::new("rx.toml")) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    }
}

fn diags(src: &str) -> Vec<Diagnostic> {
    match RxConfig::parse(src, Path::new("rx.toml")) {
        Ok(c) => panic!("expected errors, got {c:#?}"),
        Err(e) => e.diagnostics().to_vec(),
    }
}

#[track_caller]
fn one(src: &str, line: usize, column: usize, key: &str, fragments: &[&str]) {
    let d = diags(src);
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

const LINK: &str = "[link]\ninsecure_no_key = true\nbind = \"0.0.0.0:5600\"\n";

#[test]
fn minimal_config_gets_every_default() {
    assert_eq!(
        parse(LINK),
        RxConfig {
            link: RxLink {
                bind: "0.0.0.0:5600".parse().unwrap(),
                key: None,
                key_file: None,
                insecure_no_key: true,
                state_file: "/var/lib/gateway/rx-link.state".into(),
                heartbeat_timeout: Duration::from_secs(3),
                recv_buffer_bytes: 8 * 1024 * 1024,
                reorder_window: 4096,
            },
            modbus_server: None,
            status: Status {
                log_interval: Duration::from_secs(10)
            },
            http: None,
            store: Store {
                enabled: true,
                path: "/var/lib/gateway/history.sqlite".into(),
                max_age: Duration::from_secs(365 * 86_400),
                max_bytes: 16 << 30,
                gap_log: "/var/lib/gateway/history-gaps.jsonl".into(),
            },
            mqtt: None,
            postgres: None,
            nats: None,
            opcua_server: None,
            syslog: None,
        }
    );
}

#[test]
fn modbus_server_defaults_and_every_field() {
    let c = parse(&format!(
        "{LINK}[modbus_server]\nbind = \"127.0.0.1:5020\"\n"
    ));
    assert_eq!(
        c.modbus_server,
        Some(ModbusServer {
            bind: "127.0.0.1:5020".parse().unwrap(),
            on_bad_quality: OnBadQuality::Exception,
            unit_map: vec![],
        })
    );
    let c = parse(
        "[link]\ninsecure_no_key = true\nbind = \"[::]:5600\"\nheartbeat_timeout_ms = 10000\nrecv_buffer_bytes = 65536\n\
         reorder_window = 64\n[modbus_server]\nbind = \"[::1]:502\"\non_bad_quality = \"last_value\"\n\
         unit_map = { plc1 = 5, plc2 = 0 }\n[status]\nlog_interval_s = 60\n",
    );
    assert_eq!(c.link.heartbeat_timeout, Duration::from_secs(10));
    assert_eq!(
        (c.link.recv_buffer_bytes, c.link.reorder_window),
        (65536, 64)
    );
    let m = c.modbus_server.expect("modbus server");
    assert_eq!(m.on_bad_quality, OnBadQuality::LastValue);
    assert_eq!(m.unit_map, [("plc1".to_owned(), 5), ("plc2".to_owned(), 0)]);
    assert_eq!(c.status.log_interval, Duration::from_secs(60));
    let c = parse(&format!(
        "{LINK}[modbus_server]\nbind = \"127.0.0.1:5020\"\non_bad_quality = \"zero\"\n"
    ));
    assert_eq!(
        c.modbus_server.expect("server").on_bad_quality,
        OnBadQuality::Zero
    );
}

#[test]
fn missing_bind() {
    one(
        "[link]\ninsecure_no_key = true\n",
        1,
        1,
        "link.bind",
        &[
            "missing required key `bind` in [link]",
            "bind = \"0.0.0.0:5600\"",
        ],
    );
    one(
        &format!("{LINK}\n[modbus_server]\non_bad_quality = \"zero\"\n"),
        5,
        1,
        "modbus_server.bind",
        &[
            "missing required key `bind` in [modbus_server]",
            "or remove [modbus_server]",
        ],
    );
}

#[test]
fn bind_port_zero() {
    one(
        "[link]\ninsecure_no_key = true\nbind = \"0.0.0.0:0\"\n",
        3,
        8,
        "link.bind",
        &["port 0", "\"0.0.0.0:5600\""],
    );
}

#[test]
fn ranges() {
    one(
        &format!("{LINK}reorder_window = 63\n"),
        4,
        18,
        "link.reorder_window",
        &["63 is out of range", "from 64 to 1048576 (datagrams)"],
    );
    one(
        &format!("{LINK}recv_buffer_bytes = 1024\n"),
        4,
        21,
        "link.recv_buffer_bytes",
        &["from 65536 to 1073741824 (bytes)"],
    );
    one(
        &format!("{LINK}heartbeat_timeout_ms = 0\n"),
        4,
        24,
        "link.heartbeat_timeout_ms",
        &["from 100 to 3600000 (milliseconds)"],
    );
    one(
        &format!("{LINK}[status]\nlog_interval_s = 0\n"),
        5,
        18,
        "status.log_interval_s",
        &["from 1 to 86400 (seconds)"],
    );
}

#[test]
fn unknown_keys_list_valid_ones() {
    one(
        &format!("{LINK}[status]\nlog_interval = 5\n"),
        5,
        1,
        "status.log_interval",
        &[
            "did you mean `log_interval_s`?",
            "valid keys in [status] are: `log_interval_s`",
        ],
    );
    one(
        &format!("{LINK}[kafka]\n"),
        4,
        2,
        "kafka",
        &["valid keys in the top level are: `link`, `modbus_server`, `status`"],
    );
    one(
        &format!("{LINK}[modbus_server]\nbind = \"127.0.0.1:502\"\nunitmap = {{}}\n"),
        6,
        1,
        "modbus_server.unitmap",
        &[
            "did you mean `unit_map`?",
            "`bind`, `on_bad_quality`, `unit_map`",
        ],
    );
}

#[test]
fn on_bad_quality_lists_choices() {
    one(
        &format!("{LINK}[modbus_server]\nbind = \"127.0.0.1:502\"\non_bad_quality = \"last\"\n"),
        6,
        18,
        "modbus_server.on_bad_quality",
        &[
            "unknown value \"last\"",
            "valid values are \"exception\", \"last_value\", \"zero\"",
        ],
    );
}

#[test]
fn unit_map_errors() {
    one(
        &format!("{LINK}[modbus_server]\nbind = \"127.0.0.1:502\"\nunit_map = {{ plc1 = 300 }}\n"),
        6,
        21,
        "modbus_server.unit_map.plc1",
        &["300 is out of range", "from 0 to 255"],
    );
    one(
        &format!(
            "{LINK}[modbus_server]\nbind = \"127.0.0.1:502\"\nunit_map = {{ plc1 = 5, plc2 = 5 }}\n"
        ),
        6,
        31,
        "modbus_server.unit_map.plc2",
        &[
            "unit id 5 is already given to device \"plc1\" at line 6",
            "its own unit id",
        ],
    );
    one(
        &format!("{LINK}[modbus_server]\nbind = \"127.0.0.1:502\"\nunit_map = 5\n"),
        6,
        12,
        "modbus_server.unit_map",
        &[
            "expected a table, found the integer 5",
            "unit_map = { plc1 = 5 }",
        ],
    );
    one(
        &format!(
            "{LINK}[modbus_server]\nbind = \"127.0.0.1:502\"\nunit_map = {{ \"plc 1\" = 5 }}\n"
        ),
        6,
        14,
        "modbus_server.unit_map.\"plc 1\"",
        &["device name \"plc 1\" is not valid"],
    );
}

#[test]
fn several_errors_at_once() {
    let d = diags(
        "[link]\ninsecure_no_key = true\nbind = \"x\"\nreorder_window = 1\n[status]\nlog_interval_s = \"10\"\n",
    );
    let keys: Vec<&str> = d.iter().map(|d| d.key.as_str()).collect();
    assert_eq!(
        keys,
        ["link.bind", "link.reorder_window", "status.log_interval_s"]
    );
}
