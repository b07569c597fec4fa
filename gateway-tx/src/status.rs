//! What gateway-tx shows operators: Prometheus metrics, health and the status page, all
//! computed when asked from counters the transmitter keeps anyway (the link sender's send
//! counters and encoder stats, the history stream's, each device's health, the tag table), plus
//! a one-second sampler that keeps ten minutes of history for the charts.
//!
//! The link's, the encoder's (see [`crate::link_stats`]), the history stream's and the
//! reloads' counters are each declared once and render their own part of the metrics, the
//! JSON and the page's rows (`observe::metrics`); this module composes those parts with what
//! only it knows. The sources are shown by kind (Modbus devices, OPC UA endpoints): each kind's
//! [`crate::source::View`] gives its metric families, its JSON array and its table, from each
//! source's [`crate::source::Health`]; the charts and the health check read every source alike.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use config::tx::TxLink;
use observe::metrics::Counters;
use observe::prom::Exposition;
use observe::trend::{self, Ring};
use observe::{Health, Query, Site};
use protocol::stats::EncoderStats;
use serde_json::{Value as Json, json};

use crate::link::{LinkCounters, SharedEncoderStats};
use crate::link_stats::ENCODER;
use crate::pacer::IP_UDP_OVERHEAD;
use crate::source::{Current, KINDS, Sources};
use crate::tags::{QualityCounts, TagTable};

/// The measured send rate is averaged over this many one-second samples.
const RATE_WINDOW: usize = 10;

/// Everything of a running transmitter the status reads. Shared with the HTTP server.
pub struct TxStatus {
    /// Replaced on a live reload (see [`TxStatus::replace`]).
    table: std::sync::RwLock<Arc<TagTable>>,
    /// Shared with the heartbeat; replaced on a live reload.
    sources: Current,
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
    /// The syslog listeners' counters, with `[syslog]`.
    syslog: std::sync::OnceLock<Arc<crate::syslog::SyslogStats>>,
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

    /// The sources now read.
    pub fn sources(&self) -> Arc<Sources> {
        self.sources.get()
    }

    /// After a live reload: the new table and sources.
    pub fn replace(&self, table: Arc<TagTable>, sources: Arc<Sources>) {
        *self.table.write().unwrap_or_else(|e| e.into_inner()) = table;
        self.sources.set(sources);
    }

    #[allow(clippy::too_many_arguments)]
    pub fn new(
        table: Arc<TagTable>,
        sources: Current,
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
            sources,
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
            syslog: std::sync::OnceLock::new(),
        }
    }

    /// Shows the history stream's counters (`[history]` configured).
    pub fn set_history_stream(&self, stats: Arc<crate::history::HistoryStats>) {
        let _ = self.history_stream.set(stats);
    }

    /// Shows the syslog listeners' counters (`[syslog]` configured).
    pub fn set_syslog(&self, stats: Arc<crate::syslog::SyslogStats>) {
        let _ = self.syslog.set(stats);
    }

    /// The syslog listeners' counters, with `[syslog]`.
    pub fn syslog(&self) -> Option<crate::syslog::SyslogStatsSnapshot> {
        self.syslog.get().map(|s| s.snapshot())
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
        let sources = self.sources();
        Sample {
            t_ms: observe::unix_ms(),
            datagrams: c.datagrams_sent,
            bytes: c.bytes_sent,
            pending: c.pending_datagrams,
            queue: self.table().pending_changes() as u64,
            polls_ok: sources.iter().map(|p| p.health.polls_ok()).sum(),
            polls_failed: sources.iter().map(|p| p.health.polls_failed()).sum(),
            connected: sources.iter().filter(|p| p.health.connected()).count() as u64,
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
    /// over the last `RATE_WINDOW` (10) seconds of history; 0 before two samples.
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
        let sources = self.sources();
        for kind in KINDS {
            let of = sources.of(kind);
            if !of.is_empty() && !of.iter().any(|p| p.health.connected()) {
                reasons.push(format!("all {} {}", of.len(), kind.view.all_down));
            }
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
        if let Some(s) = self.syslog() {
            s.metrics(e);
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
        let sources = self.sources();
        for kind in KINDS {
            (kind.view.metrics)(e, &sources.of(kind));
        }
    }

    pub fn status(&self, query: &Query) -> Json {
        let now = crate::unix_now();
        let c = self.counters.snapshot();
        let enc = self.encoder_stats();
        let health = self.health();
        let q = self.table().quality_counts();
        let rate = self.measured_rate_bps();
        let uptime = self.started.elapsed();

        // Each kind of source: its JSON array, its table, and its "up of n" fact if it has one.
        let sources = self.sources();
        let mut by_kind = serde_json::Map::new();
        let mut source_tables = Vec::new();
        let mut up_facts = Vec::new();
        for kind in KINDS {
            let v = &kind.view;
            let of = sources.of(kind);
            by_kind.insert(v.key.to_owned(), of.iter().map(|p| p.status()).collect());
            source_tables.push(json!({
                "title": v.title, "columns": v.columns,
                "rows": of.iter().map(|p| p.row()).collect::<Vec<Json>>(),
                "empty": v.empty, "wide": true,
            }));
            if let Some(label) = v.up_fact {
                let (up, n) = (of.iter().filter(|p| p.health.connected()).count(), of.len());
                up_facts.push(json!({ "label": label, "value": format!("{up} of {n}"),
                    "tone": if up == n { "good" } else if up == 0 { "bad" } else { "warn" } }));
            }
        }
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
        let mut facts = vec![
            json!({ "label": "Link sender", "value": if self.link_alive() { "running" } else { "STOPPED" },
                    "tone": if self.link_alive() { "good" } else { "bad" } }),
            json!({ "label": "Session", "value": format!("{:016x}", self.session) }),
            observe::page::auth_fact(self.link.key.is_some()),
            json!({ "label": "Uptime", "value": observe::page::age_text(Some(uptime.as_millis() as f64)) }),
            json!({ "label": "Destination", "value": self.link.destination.to_string() }),
            json!({ "label": "Send rate", "value": format!("{} of {}", mbit(rate), mbit(self.link.rate_bps as f64)),
                    "tone": if rate > 0.9 * self.link.rate_bps as f64 { "warn" } else { "" } }),
            json!({ "label": "Pacing backlog", "value": format!("{} datagrams", c.pending_datagrams) }),
            json!({ "label": "Change queue", "value": format!("{} tags", self.table().pending_changes()) }),
        ];
        facts.extend(up_facts);
        facts.extend([
            json!({ "label": "Tags good / uncertain / bad", "value": format!("{} / {} / {}", q.good, q.uncertain, q.bad),
                    "tone": if q.bad > 0 { "bad" } else if q.uncertain > 0 { "warn" } else { "good" } }),
            json!({ "label": "Datagrams sent", "value": c.datagrams_sent }),
            json!({ "label": "Samples sent / superseded", "value": format!("{} / {}", c.samples_sent, self.table().superseded()) }),
            json!({ "label": "FEC", "value": format!("{}+{} \u{d7}{}", fec.data_shards, fec.repair_shards, fec.interleave) }),
        ]);
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
            "tag_quality": { "good": q.good, "uncertain": q.uncertain, "bad": q.bad,
                             "no_value": q.no_value },
            "history": self.history_json(),
            "history_stream": history_stream.as_ref().map(|h| h.json()),
            "syslog": self.syslog().map(|s| s.json()),
            "tags": tags,
            "view": {
                "title": "gateway-tx",
                "subtitle": "OT side \u{b7} polls the plant, sends one way across the diode",
                "facts": facts,
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
                    { "title": "Link counters", "columns": ["counter", "value"], "rows": link_rows },
                    { "title": "Messages by stream", "columns": ["stream", "messages", "bytes"], "rows": stream_rows },
                ],
            },
        });
        if let Some(link) = page["link"].as_object_mut() {
            link.extend(c.json());
        }
        if let Some(p) = page.as_object_mut() {
            p.extend(by_kind);
        }
        if let Some(tables) = page["view"]["tables"].as_array_mut() {
            tables.splice(0..0, source_tables);
        }
        if let (Some(h), Some(tables)) = (&history_stream, page["view"]["tables"].as_array_mut()) {
            tables.push(
                json!({ "title": "History stream (buffer, carousel, backfills)",
                                "columns": ["counter", "value"],
                                "rows": h.rows() }),
            );
        }
        if let (Some(s), Some(tables)) = (self.syslog(), page["view"]["tables"].as_array_mut()) {
            tables.push(json!({ "title": "Syslog (listeners, queue)",
                                "columns": ["counter", "value"],
                                "rows": s.rows() }));
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
