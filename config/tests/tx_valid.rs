//! Valid TX configs: defaults, every field set, the config hash.

use std::path::Path;
use std::time::Duration;

use config::tx::{FecShape, ModbusDevice, ModbusTag, TxConfig, TxLink};
use protocol::model::{ByteOrder, ModbusTable, ModbusType, WordOrder};

fn parse(src: &str) -> TxConfig {
    match TxConfig::parse(src, Path::new("tx.toml")) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn minimal_config_gets_every_default() {
    let src = "[link]\ninsecure_no_key = true\ndestination = \"127.0.0.1:5600\"\n";
    let c = parse(src);
    assert_eq!(
        c,
        TxConfig {
            link: TxLink {
                destination: "127.0.0.1:5600".parse().unwrap(),
                bind: "0.0.0.0:0".parse().unwrap(),
                mtu: 1500,
                rate_bps: 100_000_000,
                fec: FecShape {
                    data_shards: 64,
                    repair_shards: 16,
                    interleave: 4,
                    flush: Duration::from_millis(5),
                    block_span: Duration::from_millis(50),
                },
                key: None,
                key_file: None,
                insecure_no_key: true,
                state_file: "/var/lib/gateway/tx-link.state".into(),
                heartbeat_interval: Duration::from_secs(1),
                catalogue_interval: Duration::from_secs(30),
                snapshot_period: Duration::from_secs(10),
            },
            devices: vec![],
            opcua: vec![],
            http: None,
            history: None,
            syslog: None,
            // The first 8 bytes of `sha256sum` of the same text.
            config_hash: 0x65fd_1120_6eba_1bae,
        }
    );
}

#[test]
fn ipv6_destination_binds_ipv6_by_default() {
    let c = parse("[link]\ninsecure_no_key = true\ndestination = \"[2001:db8::1]:5600\"\n");
    assert_eq!(c.link.bind, "[::]:0".parse().unwrap());
}

#[test]
fn tag_defaults_and_counts() {
    let src = r#"
[link]
insecure_no_key = true
destination = "127.0.0.1:5600"

[[modbus]]
name = "plc1"
host = "127.0.0.1"

[[modbus.tag]]
name = "a/bit"
table = "coil"
address = 0
type = "bool"

[[modbus.tag]]
name = "a/u16"
table = "holding"
address = 0
type = "u16"

[[modbus.tag]]
name = "a/f32"
table = "holding"
address = 1
type = "f32"

[[modbus.tag]]
name = "a/i64"
table = "input"
address = 65532
type = "i64"

[[modbus.tag]]
name = "a/text"
table = "input"
address = 0
type = "string"
length = 10
"#;
    let c = parse(src);
    let dev = &c.devices[0];
    assert_eq!(
        (dev.port, dev.unit_id, dev.poll_interval, dev.timeout),
        (502, 1, Duration::from_secs(1), Duration::from_secs(1))
    );
    let counts: Vec<(ModbusType, u16)> = dev.tags.iter().map(|t| (t.kind, t.count)).collect();
    assert_eq!(
        counts,
        [
            (ModbusType::Bool, 1),
            (ModbusType::U16, 1),
            (ModbusType::F32, 2),
            (ModbusType::I64, 4),
            (ModbusType::String, 10)
        ]
    );
    let t = &dev.tags[1];
    assert_eq!(
        (t.byte_order, t.word_order, t.scale, t.offset, t.deadband),
        (ByteOrder::Big, WordOrder::Big, 1.0, 0.0, 0.0)
    );
    assert_eq!((t.unit.as_str(), t.description.as_str()), ("", ""));
}

#[test]
fn every_field_set() {
    let src = r#"
[link]
insecure_no_key = true
destination = "192.0.2.10:6000"
bind = "192.0.2.1:7000"
mtu = 9000
rate_mbit = 2.5
heartbeat_ms = 250
catalogue_interval_s = 60
snapshot_period_s = 20

[link.fec]
data_shards = 32
repair_shards = 0
interleave = 8
flush_ms = 20
block_ms = 120

[[modbus]]
name = "plc-2.a_b"
host = "plc2.example.net"
port = 5020
unit_id = 255
poll_interval_ms = 10
timeout_ms = 5000

[[modbus.tag]]
name = "site/area/line/pump3/speed"
table = "holding"
address = 0x10
type = "f64"
byte_order = "little"
word_order = "little"
scale = 0.1
offset = -5
deadband = 0.5
unit = "rpm"
description = "Pump 3 speed"
"#;
    let c = parse(src);
    assert_eq!(c.link.destination, "192.0.2.10:6000".parse().unwrap());
    assert_eq!(c.link.bind, "192.0.2.1:7000".parse().unwrap());
    assert_eq!((c.link.mtu, c.link.rate_bps), (9000, 2_500_000));
    assert_eq!(c.link.heartbeat_interval, Duration::from_millis(250));
    assert_eq!(c.link.catalogue_interval, Duration::from_secs(60));
    assert_eq!(c.link.snapshot_period, Duration::from_secs(20));
    assert_eq!(
        c.link.fec,
        FecShape {
            data_shards: 32,
            repair_shards: 0,
            interleave: 8,
            flush: Duration::from_millis(20),
            block_span: Duration::from_millis(120),
        }
    );
    assert_eq!(
        c.devices,
        [ModbusDevice {
            name: "plc-2.a_b".into(),
            host: "plc2.example.net".into(),
            port: 5020,
            unit_id: 255,
            poll_interval: Duration::from_millis(10),
            timeout: Duration::from_secs(5),
            tags: vec![ModbusTag {
                name: "site/area/line/pump3/speed".into(),
                table: ModbusTable::HoldingRegister,
                address: 16,
                kind: ModbusType::F64,
                count: 4,
                byte_order: ByteOrder::Little,
                word_order: WordOrder::Little,
                scale: 0.1,
                offset: -5.0,
                deadband: 0.5,
                unit: "rpm".into(),
                description: "Pump 3 speed".into(),
            }],
        }]
    );
}

#[test]
fn hash_changes_with_any_byte() {
    let a = parse("[link]\ninsecure_no_key = true\ndestination = \"127.0.0.1:5600\"\n");
    let b = parse("[link]\ninsecure_no_key = true\ndestination = \"127.0.0.1:5600\" \n");
    assert_ne!(a.config_hash, b.config_hash);
}

#[test]
fn same_address_in_different_tables_and_devices_is_fine() {
    let src = r#"
[link]
insecure_no_key = true
destination = "127.0.0.1:5600"
[[modbus]]
name = "a"
host = "127.0.0.1"
[[modbus.tag]]
name = "a/coil"
table = "coil"
address = 1
type = "bool"
[[modbus.tag]]
name = "a/discrete"
table = "discrete"
address = 1
type = "bool"
[[modbus.tag]]
name = "a/holding"
table = "holding"
address = 1
type = "u16"
[[modbus.tag]]
name = "a/holding2"
table = "holding"
address = 2
type = "u16"
[[modbus]]
name = "b"
host = "127.0.0.1"
[[modbus.tag]]
name = "b/holding"
table = "holding"
address = 1
type = "u16"
"#;
    let c = parse(src);
    assert_eq!(c.devices.len(), 2);
}
