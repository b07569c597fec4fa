//! A `[[modbus]]` device as a source: its tags in the catalogue, one poller task, and what the
//! status shows of it.

use config::tx::{ModbusDevice, ModbusTag, TxConfig};
use observe::prom::Exposition;
use protocol::model::{ModbusAddress, SourceAddress, TagInfo};
use serde_json::{Value as Json, json};
use tokio::task::JoinHandle;

use crate::source::{Built, Health, Kind, On, Placed, Source, Tag, View};

pub static KIND: Kind = Kind {
    name: "modbus",
    build,
    view: View {
        key: "devices",
        title: "Devices (Modbus TCP, read-only)",
        columns: &[
            "device",
            "address",
            "state",
            "polls ok",
            "failed",
            "last poll",
            "last error",
        ],
        empty: "no devices configured",
        all_down: "devices are down (not connected)",
        up_fact: Some("Devices up"),
        metrics,
    },
};

fn build(config: &TxConfig) -> Built {
    Ok(config
        .devices
        .iter()
        .map(|d| Box::new(Device(d.clone())) as Box<dyn Source>)
        .collect())
}

struct Device(ModbusDevice);

impl Source for Device {
    fn name(&self) -> &str {
        &self.0.name
    }

    fn tags(&self) -> Vec<Tag> {
        self.0
            .tags
            .iter()
            .map(|tag| Tag {
                info: tag_info(&self.0.name, self.0.unit_id, tag),
                deadband: tag.deadband,
            })
            .collect()
    }

    fn start(&self, on: &On<'_>) -> Vec<JoinHandle<()>> {
        vec![tokio::spawn(super::run_device(
            self.0.clone(),
            on.first,
            on.table.clone(),
            on.health.clone(),
        ))]
    }

    fn status(&self, h: &Health) -> Json {
        let d = &self.0;
        json!({
            "name": d.name,
            "host": d.host,
            "port": d.port,
            "unit_id": d.unit_id,
            "poll_interval_ms": d.poll_interval.as_millis() as u64,
            "tags": d.tags.len(),
            "connected": h.connected(),
            "polls_ok": h.polls_ok(),
            "polls_failed": h.polls_failed(),
            "last_latency_ms": h.last_latency().as_secs_f64() * 1000.0,
            "last_error": h.last_error(),
        })
    }

    fn row(&self, h: &Health) -> Json {
        let d = &self.0;
        let connected = h.connected();
        let error = h.last_error();
        json!([
            d.name,
            format!("{}:{} unit {}", d.host, d.port, d.unit_id),
            { "text": if connected { "up" } else { "down" },
              "tone": if connected { "good" } else { "bad" } },
            h.polls_ok(),
            { "text": h.polls_failed(),
              "tone": if h.polls_failed() > 0 { "warn" } else { "" } },
            format!("{:.1} ms", h.last_latency().as_secs_f64() * 1000.0),
            { "tone": if error.is_empty() { "" } else { "bad" },
              "text": if error.is_empty() { "\u{2013}".to_owned() } else { error } },
        ])
    }
}

fn tag_info(device: &str, unit_id: u8, tag: &ModbusTag) -> TagInfo {
    let address = ModbusAddress {
        device: device.to_string(),
        unit_id,
        table: tag.table,
        address: tag.address,
        kind: tag.kind,
        count: tag.count,
        byte_order: tag.byte_order,
        word_order: tag.word_order,
        scale: tag.scale,
        offset: tag.offset,
    };
    TagInfo {
        name: tag.name.clone(),
        value_type: protocol::registers::value_type(&address),
        unit: tag.unit.clone(),
        description: tag.description.clone(),
        source: SourceAddress::Modbus(address),
    }
}

fn metrics(e: &mut Exposition, devices: &[&Placed]) {
    e.labelled(
        "gateway_tx_device_up",
        "gauge",
        "1 while the device's Modbus TCP connection is up.",
        "device",
        devices.iter().map(|d| (d.name(), d.health.connected())),
    );
    e.family(
        "gateway_tx_device_polls_total",
        "counter",
        "Polls of each device, by outcome (failed: any request of the poll failed).",
    );
    for d in devices {
        for (outcome, n) in [
            ("ok", d.health.polls_ok()),
            ("failed", d.health.polls_failed()),
        ] {
            e.sample(
                "gateway_tx_device_polls_total",
                &[("device", d.name()), ("outcome", outcome)],
                n,
            );
        }
    }
    e.labelled(
        "gateway_tx_device_poll_latency_seconds",
        "gauge",
        "Duration of the device's last complete poll (all of its requests).",
        "device",
        devices
            .iter()
            .map(|d| (d.name(), d.health.last_latency().as_secs_f64())),
    );
    e.labelled(
        "gateway_tx_device_tags",
        "gauge",
        "Tags configured per device.",
        "device",
        devices.iter().map(|d| (d.name(), d.len)),
    );
}
