//! What gateway-tx shows operators: Prometheus metrics, health and the status page, all
//! computed when asked from counters the transmitter keeps anyway (the link sender's send
//! counters and encoder stats, the history stream's, each device's health, the tag table), plus
//! a one-second sampler that keeps ten minutes of history for the charts.
//!
//! The link's, the encoder's (see [`crate::link_stats`]), the history stream's and the
//! reloads' counters are each declared once and render their own part of the metrics, the
//! JSON and the page's rows (`observe::metrics`); this module composes those parts with what
//! only it knows. Devices and OPC UA endpoints are families with one sample per instance,
//! written here from their health.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use config::tx::{ModbusDevice, TxLink};
use observe::metrics::Counters;
use observe::prom::Exposition;
use observe::trend::{self, Ring};
use observe::{Health, Query, Site};
use protocol::stats::EncoderStats;
use serde_json::{Value as Json, json};

use crate::link::{LinkCounters, SharedEncoderStats};
use crate::link_stats::ENCODER;
use crate::modbus::DeviceHealth;
use crate::pacer::IP_UDP_OVERHEAD;
use crate::tags::{QualityCounts, TagTable};

/// The measured send rate is averaged over this many one-second samples.
const RATE_WINDOW: usize = 10;

/// One device as the status shows it: its config and the health its poller writes.
pub struct DeviceStatus {
    pub config: ModbusDevice,
    pub health: Arc<DeviceHealth>,
}

/// One OPC UA endpoint as the status shows it: its config and the health its task writes.
pub struct EndpointStatus {
    pub config: config::opcua::OpcUaEndpoint,
    pub health: Arc<crate::opcua::EndpointHealth>,
}

/// Everything of a running transmitter the status reads. Shared with the HTTP server.
pub struct TxStatus {
    /// Replaced on a live reload (see [`TxStatus::replace`]).
    table: std::sync::RwLock<Arc<TagTable>>,
    devices: std::sync::RwLock<Arc<Vec<DeviceStatus>>>,
    endpoints: std::sync::RwLock<Arc<Vec<EndpointStatus>>>,
    pub link: TxLink,
    pub session: u64,
    pub config_hash: u64,
    pub encoder: SharedEncoderStats,
    pub counters: Arc<LinkCounters>,
    /// Cleared when the link sender's task ends.
    pub link_alive: Arc<AtomicBool>,
    /// Live reloads applied and refused.
    pub reloads: Arc<crate::daemon::ReloadCounters>,
    pub started: Instant,
    pub started_unix_ms: i64,
    history: Mutex<Ring<Sample>>,
    /// The history stream's counters, with `[history]`.
    history_stream: std::sync::OnceLock<Arc<crate::history::HistoryStats>>,
}

/// One second of history.
#[derive(Debug, Clone, Copy)]
struct Sample {
    t_ms: i64,
    datagrams: u64,
    bytes: u64,
    pending: u64,
    queue: u64,
    polls_ok: u64,
    polls_failed: u64,
    connected: u64,
    tags: QualityCounts,
}

impl TxStatus {
    /// The tag table now in use.
    pub fn table(&self) -> Arc<TagTable> {
        self.table.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The devices now polled.
    pub fn devices(&self) -> Arc<Vec<DeviceStatus>> {
        self.devices
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The OPC UA endpoints now read.
    pub fn endpoints(&self) -> Arc<Vec<EndpointStatus>> {
        self.endpoints
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// At start and after a live reload: the OPC UA endpoints.
    pub fn set_endpoints(&self, endpoints: Vec<EndpointStatus>) {
        *self.endpoints.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(endpoints);
    }

    /// After a live reload: the new table and devices.
    pub fn replace(&self, table: Arc<TagTable>, devices: Vec<DeviceStatus>) {
        *self.table.write().unwrap_or_else(|e| e.into_inner()) = table;
        *self.devices.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(devices);
    }

    #[allow(clippy::too_many_arguments)]
    pub fn new(
        table: Arc<TagTable>,
        devices: Vec<DeviceStatus>,
        link: TxLink,
        session: u64,
        config_hash: u64,
        encoder: SharedEncoderStats,
        counters: Arc<LinkCounters>,
        link_alive: Arc<AtomicBool>,
    ) -> TxStatus {
        TxStatus {
            reloads: Arc::default(),
            table: std::sync::RwLock::new(table),
            devices: std::sync::RwLock::new(Arc::new(devices)),
            endpoints: std::sync::RwLock::new(Arc::new(Vec::new())),
            link,
            session,
            config_hash,
            encoder,
            counters,
            link_alive,
            started: Instant::now(),
            started_unix_ms: observe::unix_ms(),
            history: Mutex::new(Ring::new(trend::CAPACITY)),
            history_stream: std::sync::OnceLock::new(),
        }
    }

    /// Shows the history stream's counters (`[history]` configured).
    pub fn set_history_stream(&self, stats: Arc<crate::history::HistoryStats>) {
        let _ = self.history_stream.set(stats);
    }

    fn history_stream(&self) -> Option<crate::history::HistoryStatsSnapshot> {
        self.history_stream.get().map(|s| s.snapshot())
    }

    pub fn link_alive(&self) -> bool {
        self.link_alive.load(Ordering::Relaxed)
    }

    fn encoder_stats(&self) -> EncoderStats {
        self.encoder.lock().map(|s| s.clone()).unwrap_or_default()
    }

    fn history(&self) -> std::sync::MutexGuard<'_, Ring<Sample>> {
        self.history.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn sample(&self) -> Sample {
        let c = self.counters.snapshot();
        Sample {
            t_ms: observe::unix_ms(),
            datagrams: c.datagrams_sent,
            bytes: c.bytes_sent,
            pending: c.pending_datagrams,
            queue: self.table().pending_changes() as u64,
            polls_ok: self
                .devices()
                .iter()
                .map(|d| d.health.polls_ok())
                .sum::<u64>()
                + self
                    .endpoints()
                    .iter()
                    .map(|e| e.health.base.polls_ok())
                    .sum::<u64>(),
            polls_failed: self
                .devices()
                .iter()
                .map(|d| d.health.polls_failed())
                .sum::<u64>()
                + self
                    .endpoints()
                    .iter()
                    .map(|e| e.health.base.polls_failed())
                    .sum::<u64>(),
            connected: (self
                .devices()
                .iter()
                .filter(|d| d.health.connected())
                .count()
                + self
                    .endpoints()
                    .iter()
                    .filter(|e| e.health.base.connected())
                    .count()) as u64,
            tags: self.table().quality_counts(),
        }
    }

    /// Takes one history sample a second until the task is dropped.
    pub async fn run_sampler(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tick.tick().await;
            let s = self.sample();
            self.history().push(s);
        }
    }

    /// Bits per second on the wire (IP and UDP headers included, as the pacer counts them)
    /// over the last [`RATE_WINDOW`] seconds of history; 0 before two samples.
    pub fn measured_rate_bps(&self) -> f64 {
        let h = self.history();
        match h.window(RATE_WINDOW) {
            Some((a, b)) if b.t_ms > a.t_ms => {
                let datagrams = trend::delta(a.datagrams, b.datagrams);
                let bytes = trend::delta(a.bytes, b.bytes) + datagrams * IP_UDP_OVERHEAD as u64;
                bytes as f64 * 8.0 * 1000.0 / (b.t_ms - a.t_ms) as f64
            }
            _ => 0.0,
        }
    }

    pub fn health(&self) -> Health {
        let mut reasons = Vec::new();
        if !self.link_alive() {
            reasons.push("link sender stopped".to_owned());
        }
        let up = self
            .devices()
            .iter()
            .filter(|d| d.health.connected())
            .count();
        if !self.devices().is_empty() && up == 0 {
            reasons.push(format!(
                "all {} devices are down (not connected)",
                self.devices().len()
            ));
        }
        let endpoints = self.endpoints();
        if !endpoints.is_empty() && !endpoints.iter().any(|e| e.health.base.connected()) {
            reasons.push(format!(
                "all {} OPC UA endpoints are down (no session)",
                endpoints.len()
            ));
        }
        Health { reasons }
    }

    pub fn metrics(&self, e: &mut Exposition) {
        let enc = self.encoder_stats();
        e.family(
            "gateway_tx_info",
            "gauge",
            "Constant 1, labelled with the transmitter's session id and config hash.",
        )
        .sample(
            "gateway_tx_info",
            &[
                ("session", &format!("{:016x}", self.session)),
                ("config_hash", &format!("{:016x}", self.config_hash)),
                ("version", env!("CARGO_PKG_VERSION")),
            ],
            1u64,
        );
        e.gauge(
            "gateway_tx_link_authenticated",
            "1 when every datagram is authenticated with the link key; 0 when the config says \
             insecure_no_key = true.",
            u64::from(self.link.key.is_some()),
        );
        e.gauge(
            "gateway_tx_start_time_seconds",
            "When the transmitter started, in seconds since the Unix epoch.",
            self.started_unix_ms as f64 / 1000.0,
        );
        e.gauge(
            "gateway_tx_link_sender_up",
            "1 while the link sender task runs.",
            self.link_alive(),
        );
        self.counters.snapshot().metrics(e);
        observe::metrics::metrics(e, ENCODER, &enc);
        if let Some(h) = self.history_stream() {
            h.metrics(e);
        }
        e.gauge(
            "gateway_tx_link_rate_limit_bits_per_second",
            "Configured link rate: the pacer never exceeds it (IP and UDP headers included).",
            self.link.rate_bps,
        );
        e.gauge(
            "gateway_tx_link_rate_bits_per_second",
            "Measured send rate over the last 10 s, IP and UDP headers included (0 until two \
             one-second samples exist).",
            self.measured_rate_bps(),
        );
        e.gauge(
            "gateway_tx_change_queue_depth",
            "Live changes waiting for the link (at most one per tag).",
            self.table().pending_changes(),
        );
        e.counter(
            "gateway_tx_samples_superseded_total",
            "Live changes replaced by a newer value of the same tag before they were sent \
             (latest wins; the newer value is sent).",
            self.table().superseded(),
        );
        e.counter(
            "gateway_tx_values_refused_too_large_total",
            "Values larger than the gateway carries (65,535 bytes), refused at the source as \
             BadEncodingLimitsExceeded.",
            self.table().refused_too_large(),
        );
        self.reloads.snapshot().metrics(e);
        let q = self.table().quality_counts();
        e.labelled(
            "gateway_tx_tags",
            "gauge",
            "Tags by the quality of their current value (no_value: never read yet).",
            "quality",
            [
                ("good", q.good),
                ("uncertain", q.uncertain),
                ("bad", q.bad),
                ("no_value", q.no_value),
            ],
        );
        e.gauge(
            "gateway_tx_catalogue_tags",
            "Tags in the catalogue.",
            self.table().len(),
        );
        e.labelled(
            "gateway_tx_device_up",
            "gauge",
            "1 while the device's Modbus TCP connection is up.",
            "device",
            self.devices()
                .iter()
                .map(|d| (d.config.name.as_str(), d.health.connected())),
        );
        e.family(
            "gateway_tx_device_polls_total",
            "counter",
            "Polls of each device, by outcome (failed: any request of the poll failed).",
        );
        for d in self.devices().iter() {
            let name = d.config.name.as_str();
            e.sample(
                "gateway_tx_device_polls_total",
                &[("device", name), ("outcome", "ok")],
                d.health.polls_ok(),
            );
            e.sample(
                "gateway_tx_device_polls_total",
                &[("device", name), ("outcome", "failed")],
                d.health.polls_failed(),
            );
        }
        e.labelled(
            "gateway_tx_device_poll_latency_seconds",
            "gauge",
            "Duration of the device's last complete poll (all of its requests).",
            "device",
            self.devices().iter().map(|d| {
                (
                    d.config.name.as_str(),
                    d.health.last_latency().as_secs_f64(),
                )
            }),
        );
        e.labelled(
            "gateway_tx_device_tags",
            "gauge",
            "Tags configured per device.",
            "device",
            self.devices()
                .iter()
                .map(|d| (d.config.name.as_str(), d.config.tags.len())),
        );
        let endpoints = self.endpoints();
        e.labelled(
            "gateway_tx_opcua_up",
            "gauge",
            "1 while the OPC UA endpoint's session is open.",
            "endpoint",
            endpoints
                .iter()
                .map(|x| (x.config.name.as_str(), x.health.base.connected())),
        );
        e.labelled(
            "gateway_tx_opcua_reconnects_total",
            "counter",
            "Sessions opened to the OPC UA endpoint after the first.",
            "endpoint",
            endpoints
                .iter()
                .map(|x| (x.config.name.as_str(), x.health.reconnects())),
        );
        e.labelled(
            "gateway_tx_opcua_values_total",
            "counter",
            "Data changes received (subscription) or Read rounds done (poll) per endpoint.",
            "endpoint",
            endpoints
                .iter()
                .map(|x| (x.config.name.as_str(), x.health.base.polls_ok())),
        );
        e.labelled(
            "gateway_tx_opcua_failures_total",
            "counter",
            "Failed connections, service calls and refused monitored items per endpoint.",
            "endpoint",
            endpoints
                .iter()
                .map(|x| (x.config.name.as_str(), x.health.base.polls_failed())),
        );
    }

    pub fn status(&self, query: &Query) -> Json {
        let now = crate::unix_now();
        let c = self.counters.snapshot();
        let enc = self.encoder_stats();
        let health = self.health();
        let q = self.table().quality_counts();
        let rate = self.measured_rate_bps();
        let up = self
            .devices()
            .iter()
            .filter(|d| d.health.connected())
            .count();
        let uptime = self.started.elapsed();

        let devices: Vec<Json> = self
            .devices()
            .iter()
            .map(|d| {
                json!({
                    "name": d.config.name,
                    "host": d.config.host,
                    "port": d.config.port,
                    "unit_id": d.config.unit_id,
                    "poll_interval_ms": d.config.poll_interval.as_millis() as u64,
                    "tags": d.config.tags.len(),
                    "connected": d.health.connected(),
                    "polls_ok": d.health.polls_ok(),
                    "polls_failed": d.health.polls_failed(),
                    "last_latency_ms": d.health.last_latency().as_secs_f64() * 1000.0,
                    "last_error": d.health.last_error(),
                })
            })
            .collect();
        let device_rows: Vec<Json> = self
            .devices()
            .iter()
            .map(|d| {
                let connected = d.health.connected();
                let error = d.health.last_error();
                json!([
                    d.config.name,
                    format!("{}:{} unit {}", d.config.host, d.config.port, d.config.unit_id),
                    { "text": if connected { "up" } else { "down" },
                      "tone": if connected { "good" } else { "bad" } },
                    d.health.polls_ok(),
                    { "text": d.health.polls_failed(),
                      "tone": if d.health.polls_failed() > 0 { "warn" } else { "" } },
                    format!("{:.1} ms", d.health.last_latency().as_secs_f64() * 1000.0),
                    { "text": if error.is_empty() { "\u{2013}".to_owned() } else { error },
                      "tone": if d.health.last_error().is_empty() { "" } else { "bad" } },
                ])
            })
            .collect();

        let endpoints = self.endpoints();
        let opcua: Vec<Json> = endpoints
            .iter()
            .map(|x| {
                json!({
                    "name": x.config.name,
                    "url": x.config.url,
                    "mode": format!("{:?}", x.config.mode).to_lowercase(),
                    "tags": x.config.tags.len(),
                    "connected": x.health.base.connected(),
                    "reconnects": x.health.reconnects(),
                    "values": x.health.base.polls_ok(),
                    "failures": x.health.base.polls_failed(),
                    "last_error": x.health.base.last_error(),
                })
            })
            .collect();
        let opcua_rows: Vec<Json> = endpoints
            .iter()
            .map(|x| {
                let connected = x.health.base.connected();
                let error = x.health.base.last_error();
                json!([
                    x.config.name,
                    x.config.url,
                    { "text": if connected { "up" } else { "down" },
                      "tone": if connected { "good" } else { "bad" } },
                    x.health.reconnects(),
                    x.health.base.polls_ok(),
                    { "text": x.health.base.polls_failed(),
                      "tone": if x.health.base.polls_failed() > 0 { "warn" } else { "" } },
                    { "text": if error.is_empty() { "\u{2013}".to_owned() } else { error.clone() },
                      "tone": if error.is_empty() { "" } else { "bad" } },
                ])
            })
            .collect();
        let mut link_rows = c.rows();
        link_rows.extend(observe::metrics::rows(ENCODER, &enc));
        link_rows.extend([
            json!(["samples superseded", self.table().superseded()]),
            json!(["values refused (too large)", { "text": self.table().refused_too_large(), "tone": if self.table().refused_too_large() > 0 { "bad" } else { "" } }]),
        ]);
        let stream_rows = crate::link_stats::stream_rows(&enc);

        let tags = self.tag_rows(query, now);
        let fec = &self.link.fec;
        let history_stream = self.history_stream();
        let mut page = json!({
            "daemon": "gateway-tx",
            "version": env!("CARGO_PKG_VERSION"),
            "now_ms": observe::unix_ms(),
            "uptime_s": uptime.as_secs(),
            "health": health.to_json(),
            "session": format!("{:016x}", self.session),
            "config_hash": format!("{:016x}", self.config_hash),
            "link": {
                "alive": self.link_alive(),
                "destination": self.link.destination.to_string(),
                "authenticated": self.link.key.is_some(),
                "mtu": self.link.mtu,
                "rate_limit_bps": self.link.rate_bps,
                "rate_bps": rate,
                "fec": { "data_shards": fec.data_shards, "repair_shards": fec.repair_shards,
                         "interleave": fec.interleave },
                "change_queue": self.table().pending_changes(),
                "samples_superseded": self.table().superseded(),
                "values_refused_too_large": self.table().refused_too_large(),
            },
            "devices": devices,
            "opcua": opcua,
            "tag_quality": { "good": q.good, "uncertain": q.uncertain, "bad": q.bad,
                             "no_value": q.no_value },
            "history": self.history_json(),
            "history_stream": history_stream.as_ref().map(|h| h.json()),
            "tags": tags,
            "view": {
                "title": "gateway-tx",
                "subtitle": "OT side \u{b7} polls the plant, sends one way across the diode",
                "facts": [
                    { "label": "Link sender", "value": if self.link_alive() { "running" } else { "STOPPED" },
                      "tone": if self.link_alive() { "good" } else { "bad" } },
                    { "label": "Session", "value": format!("{:016x}", self.session) },
                    observe::page::auth_fact(self.link.key.is_some()),
                    { "label": "Uptime", "value": observe::page::age_text(Some(uptime.as_millis() as f64)) },
                    { "label": "Destination", "value": self.link.destination.to_string() },
                    { "label": "Send rate", "value": format!("{} of {}", mbit(rate), mbit(self.link.rate_bps as f64)),
                      "tone": if rate > 0.9 * self.link.rate_bps as f64 { "warn" } else { "" } },
                    { "label": "Pacing backlog", "value": format!("{} datagrams", c.pending_datagrams) },
                    { "label": "Change queue", "value": format!("{} tags", self.table().pending_changes()) },
                    { "label": "Devices up", "value": format!("{up} of {}", self.devices().len()),
                      "tone": if up == self.devices().len() { "good" } else if up == 0 { "bad" } else { "warn" } },
                    { "label": "Tags good / uncertain / bad", "value": format!("{} / {} / {}", q.good, q.uncertain, q.bad),
                      "tone": if q.bad > 0 { "bad" } else if q.uncertain > 0 { "warn" } else { "good" } },
                    { "label": "Datagrams sent", "value": c.datagrams_sent },
                    { "label": "Samples sent / superseded", "value": format!("{} / {}", c.samples_sent, self.table().superseded()) },
                    { "label": "FEC", "value": format!("{}+{} \u{d7}{}", fec.data_shards, fec.repair_shards, fec.interleave) },
                ],
                "charts": [
                    { "title": "Link send rate", "unit": "Mbit/s",
                      "series": [ { "key": "mbit", "label": format!("sent (limit {})", mbit(self.link.rate_bps as f64)), "color": "#2f6fde" } ] },
                    { "title": "Datagrams sent per second", "unit": "/s",
                      "series": [ { "key": "datagrams", "label": "datagrams", "color": "#6f42c1" } ] },
                    { "title": "Pacing backlog", "unit": "",
                      "series": [ { "key": "pending", "label": "datagrams waiting", "color": "#b9770e" },
                                  { "key": "queue", "label": "changes queued", "color": "#687084" } ] },
                    { "title": "Polls per second", "unit": "/s",
                      "series": [ { "key": "polls_ok", "label": "ok", "color": "#1d8348" },
                                  { "key": "polls_failed", "label": "failed", "color": "#c0392b" } ] },
                ],
                "tables": [
                    { "title": "Devices (Modbus TCP, read-only)",
                      "columns": ["device", "address", "state", "polls ok", "failed", "last poll", "last error"],
                      "rows": device_rows, "empty": "no devices configured", "wide": true },
                    { "title": "OPC UA endpoints (read-only)",
                      "columns": ["endpoint", "url", "state", "reconnects", "values", "failures", "last error"],
                      "rows": opcua_rows, "empty": "no OPC UA endpoints configured", "wide": true },
                    { "title": "Link counters", "columns": ["counter", "value"], "rows": link_rows },
                    { "title": "Messages by stream", "columns": ["stream", "messages", "bytes"], "rows": stream_rows },
                ],
            },
        });
        if let Some(link) = page["link"].as_object_mut() {
            link.extend(c.json());
        }
        if let (Some(h), Some(tables)) = (&history_stream, page["view"]["tables"].as_array_mut()) {
            tables.push(
                json!({ "title": "History stream (buffer, carousel, backfills)",
                                "columns": ["counter", "value"],
                                "rows": h.rows() }),
            );
        }
        page
    }

    fn tag_rows(&self, query: &Query, now: i64) -> Json {
        let table = self.table();
        let infos = table.infos();
        let filter = query.filter();
        let mut matched = 0usize;
        let mut rows = Vec::new();
        // The values of the rows shown only, one at a time: the table's lock is never held
        // for the whole scan.
        for (i, info) in infos.iter().enumerate() {
            if !observe::tags::matches(&filter, info) {
                continue;
            }
            matched += 1;
            if rows.len() < query.limit {
                let sample = u32::try_from(i).ok().and_then(|t| table.current(t));
                let v = sample.as_ref().map(|s| (&s.value, s.quality, s.time));
                rows.push(observe::tags::row(info, v, now));
            }
        }
        json!({ "total": infos.len(), "matched": matched, "rows": rows })
    }

    fn history_json(&self) -> Json {
        let h = self.history();
        let pairs: Vec<(&Sample, &Sample)> = h.iter().zip(h.iter().skip(1)).collect();
        let per_s = |a: &Sample, b: &Sample, v: u64| {
            let dt = (b.t_ms - a.t_ms).max(1) as f64 / 1000.0;
            v as f64 / dt
        };
        let series = |f: &dyn Fn(&Sample, &Sample) -> f64| -> Vec<f64> {
            pairs.iter().map(|(a, b)| f(a, b)).collect()
        };
        json!({
            "t": pairs.iter().map(|(_, b)| b.t_ms).collect::<Vec<_>>(),
            "series": {
                "mbit": series(&|a, b| {
                    let d = trend::delta(a.datagrams, b.datagrams);
                    let bytes = trend::delta(a.bytes, b.bytes) + d * IP_UDP_OVERHEAD as u64;
                    per_s(a, b, bytes) * 8.0 / 1e6
                }),
                "datagrams": series(&|a, b| per_s(a, b, trend::delta(a.datagrams, b.datagrams))),
                "pending": series(&|_, b| b.pending as f64),
                "queue": series(&|_, b| b.queue as f64),
                "polls_ok": series(&|a, b| per_s(a, b, trend::delta(a.polls_ok, b.polls_ok))),
                "polls_failed": series(&|a, b| per_s(a, b, trend::delta(a.polls_failed, b.polls_failed))),
                "connected": series(&|_, b| b.connected as f64),
                "good": series(&|_, b| b.tags.good as f64),
                "bad": series(&|_, b| b.tags.bad as f64),
            },
        })
    }
}

fn mbit(bps: f64) -> String {
    if bps >= 1e6 {
        format!("{:.1} Mbit/s", bps / 1e6)
    } else {
        format!("{:.1} kbit/s", bps / 1e3)
    }
}

/// The HTTP server's view of a transmitter.
pub struct TxSite(pub Arc<TxStatus>);

impl Site for TxSite {
    fn prefix(&self) -> &'static str {
        "gateway_tx"
    }

    fn metrics(&self, out: &mut Exposition) {
        self.0.metrics(out);
    }

    fn health(&self) -> Health {
        self.0.health()
    }

    fn status(&self, query: &Query) -> Json {
        self.0.status(query)
    }
}
