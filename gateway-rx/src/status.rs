//! What gateway-rx shows operators: Prometheus metrics, health and the status page, all
//! computed when asked from counters the receiver keeps anyway (the decoder's stats, the
//! state's counters and values, the Modbus mirror's counters, the sinks', the last heartbeat),
//! plus a one-second sampler that keeps ten minutes of history for the charts and the list of
//! loss gaps.
//!
//! Each subsystem declares its counters once and renders its own part of the metrics, the
//! JSON and the page's rows from that declaration (`observe::metrics`; the decoder's in
//! [`crate::link_stats`]); this module composes those parts with what only it knows (the link
//! state, the heartbeat, tag qualities, gaps, the charts' history).
//!
//! A *gap* here is a run of consecutive seconds in which the decoder counted loss beyond what
//! FEC repaired (data datagrams or messages lost). Live values heal with the transmitter's
//! next rolling snapshot; the gap records when and how much was lost. The decoder counts a
//! loss once the datagram leaves its reorder window or its group times out, so a gap's times
//! are those of the counting, within a fraction of a second of the loss itself.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use config::rx::RxLink;
use observe::metrics::Counters;
use observe::prom::Exposition;
use observe::trend::{self, Ring};
use observe::{Health, Query, Site};
use protocol::decoder::DecoderStats;
use protocol::message::Stream;
use serde_json::{Value as Json, json};

use crate::link::SharedStats;
use crate::link_stats::DECODER;
use crate::modbus_server::ServerCounters;
use crate::state::{LinkState, State};

/// Gaps kept for the status page (the total is counted without bound).
pub const MAX_GAPS: usize = 100;

/// Tags of the current catalogue by served quality.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QualityCounts {
    pub good: u64,
    pub uncertain: u64,
    pub bad: u64,
    pub no_value: u64,
}

/// One run of seconds with loss beyond repair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    pub start_ms: i64,
    pub end_ms: i64,
    pub data_datagrams_lost: u64,
    /// Per stream, indexed like [`Stream::ALL`].
    pub messages_lost: [u64; Stream::COUNT],
}

#[derive(Debug, Clone)]
struct Sample {
    t_ms: i64,
    stats: DecoderStats,
    link_up: bool,
    tags: QualityCounts,
    modbus_reads: u64,
}

struct History {
    samples: Ring<Sample>,
    gaps: Ring<Gap>,
    gaps_total: u64,
}

/// Everything of a running receiver the status reads. Shared with the HTTP server.
pub struct RxStatus {
    pub state: Arc<State>,
    pub stats: SharedStats,
    pub modbus: Option<Arc<ServerCounters>>,
    pub link: RxLink,
    /// Cleared when the link receiver's task ends.
    pub link_alive: Arc<AtomicBool>,
    pub started: Instant,
    pub started_unix_ms: i64,
    history: Mutex<History>,
    /// The sinks fed by the store (`[mqtt]`, `[postgres]`, `[nats]`).
    sinks: Vec<crate::sinks::SinkMonitor>,
    /// The syslog spool's counters and its outputs', with `[syslog]`.
    syslog: Option<(
        Arc<crate::syslog::SyslogRxStats>,
        Vec<crate::syslog::forward::OutputMonitor>,
    )>,
    /// The embedded historian store's counters, when it takes history.
    store: Option<crate::store::HistorySink>,
    /// The OPC UA mirror, when `[opcua_server]` is configured.
    opcua: Option<crate::opcua::OpcUaMonitor>,
}

impl RxStatus {
    pub fn new(
        state: Arc<State>,
        stats: SharedStats,
        modbus: Option<Arc<ServerCounters>>,
        link: RxLink,
        link_alive: Arc<AtomicBool>,
    ) -> RxStatus {
        RxStatus {
            state,
            stats,
            modbus,
            link,
            link_alive,
            started: Instant::now(),
            started_unix_ms: observe::unix_ms(),
            history: Mutex::new(History {
                samples: Ring::new(trend::CAPACITY),
                gaps: Ring::new(MAX_GAPS),
                gaps_total: 0,
            }),
            sinks: Vec::new(),
            syslog: None,
            store: None,
            opcua: None,
        }
    }

    /// Adds the OPC UA mirror's counters to the metrics and the status page.
    pub fn with_opcua(mut self, opcua: Option<crate::opcua::OpcUaMonitor>) -> RxStatus {
        self.opcua = opcua;
        self
    }

    /// Adds the sinks' counters to the metrics.
    /// Adds the store's counters to the metrics, the status JSON and the page.
    pub fn with_store(mut self, store: Option<crate::store::HistorySink>) -> RxStatus {
        self.store = store;
        self
    }

    /// Adds the syslog forwarder's counters.
    pub fn with_syslog(
        mut self,
        syslog: Option<(
            Arc<crate::syslog::SyslogRxStats>,
            Vec<crate::syslog::forward::OutputMonitor>,
        )>,
    ) -> RxStatus {
        self.syslog = syslog;
        self
    }

    /// The syslog spool's counters, with `[syslog]`.
    pub fn syslog(&self) -> Option<crate::syslog::SyslogRxStatsSnapshot> {
        self.syslog.as_ref().map(|(s, _)| s.snapshot())
    }

    /// Each syslog output's name and counters.
    pub fn syslog_outputs(&self) -> Vec<(String, crate::syslog::forward::OutputStatsSnapshot)> {
        self.syslog.as_ref().map_or_else(Vec::new, |(_, o)| {
            o.iter()
                .map(|m| (m.name.clone(), m.stats.snapshot()))
                .collect()
        })
    }

    pub fn with_sinks(mut self, sinks: Vec<crate::sinks::SinkMonitor>) -> RxStatus {
        self.sinks = sinks;
        self
    }

    pub fn link_alive(&self) -> bool {
        self.link_alive.load(Ordering::Relaxed)
    }

    /// The decoder's counters as last published by the link task.
    pub fn decoder_stats(&self) -> DecoderStats {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }

    fn history(&self) -> MutexGuard<'_, History> {
        self.history.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Tags of the current catalogue by the quality they are served with.
    pub fn quality_counts(&self) -> QualityCounts {
        let view = self.state.view();
        let mut c = QualityCounts::default();
        let Some(catalogue) = view.catalogue() else {
            return c;
        };
        for i in 0..catalogue.len() {
            let Ok(index) = u32::try_from(i) else { break };
            match view.value(index) {
                None => c.no_value += 1,
                Some(v) if v.quality.is_good() => c.good += 1,
                Some(v) if v.quality.is_uncertain() => c.uncertain += 1,
                Some(_) => c.bad += 1,
            }
        }
        c
    }

    /// The gaps kept (newest last) and how many there were in all.
    pub fn gaps(&self) -> (Vec<Gap>, u64) {
        let h = self.history();
        (h.gaps.iter().cloned().collect(), h.gaps_total)
    }

    fn modbus_reads(&self) -> u64 {
        self.modbus
            .as_ref()
            .map_or(0, |m| m.snapshot().reads_served)
    }

    /// Takes one history sample a second until the task is dropped.
    pub async fn run_sampler(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tick.tick().await;
            self.take_sample();
        }
    }

    /// Records one history sample and extends or opens a gap when loss was counted since the
    /// previous one.
    pub fn take_sample(&self) {
        let sample = Sample {
            t_ms: observe::unix_ms(),
            stats: self.decoder_stats(),
            link_up: !self.state.link_is_down(),
            tags: self.quality_counts(),
            modbus_reads: self.modbus_reads(),
        };
        let mut h = self.history();
        if let Some(prev) = h.samples.last() {
            let (a, b) = (&prev.stats, &sample.stats);
            let data = trend::delta(a.data_datagrams_lost, b.data_datagrams_lost);
            let mut messages = [0u64; Stream::COUNT];
            for (i, m) in messages.iter_mut().enumerate() {
                *m = trend::delta(a.messages_lost[i], b.messages_lost[i]);
            }
            if data > 0 || messages.iter().any(|&m| m > 0) {
                let prev_t = prev.t_ms;
                match h.gaps.last_mut().filter(|g| g.end_ms == prev_t) {
                    Some(g) => {
                        g.end_ms = sample.t_ms;
                        // Sums of counts a sender's sequence numbers make: saturate.
                        g.data_datagrams_lost = g.data_datagrams_lost.saturating_add(data);
                        for (total, m) in g.messages_lost.iter_mut().zip(messages) {
                            *total = total.saturating_add(m);
                        }
                    }
                    None => {
                        h.gaps.push(Gap {
                            start_ms: prev_t,
                            end_ms: sample.t_ms,
                            data_datagrams_lost: data,
                            messages_lost: messages,
                        });
                        h.gaps_total += 1;
                    }
                }
            }
        }
        h.samples.push(sample);
    }

    pub fn health(&self) -> Health {
        let mut reasons = Vec::new();
        if !self.link_alive() {
            reasons.push("link receiver stopped".to_owned());
        }
        if self.state.link_is_down() {
            reasons.push(match self.state.last_heartbeat() {
                None => "link down: no heartbeat received yet".to_owned(),
                Some((at, _)) => format!(
                    "link down: no heartbeat for {}",
                    observe::page::age_text(Some(
                        (crate::unix_now().saturating_sub(at) / 1_000_000) as f64
                    ))
                ),
            });
        }
        if self.state.catalogue_hash().is_none() {
            reasons.push("no catalogue received yet".to_owned());
        }
        Health { reasons }
    }

    pub fn metrics(&self, e: &mut Exposition) {
        let s = self.decoder_stats();
        let c = self.state.counters();
        let link = self.state.link_state();
        e.family(
            "gateway_rx_info",
            "gauge",
            "Constant 1, labelled with the receiver's version.",
        )
        .sample(
            "gateway_rx_info",
            &[("version", env!("CARGO_PKG_VERSION"))],
            1u64,
        );
        e.gauge(
            "gateway_rx_link_authenticated",
            "1 when every datagram must be authenticated with the link key; 0 when the config \
             says insecure_no_key = true.",
            u64::from(self.link.key.is_some()),
        );
        e.gauge(
            "gateway_rx_start_time_seconds",
            "When the receiver started, in seconds since the Unix epoch.",
            self.started_unix_ms as f64 / 1000.0,
        );
        e.gauge(
            "gateway_rx_link_receiver_up",
            "1 while the link receiver task runs.",
            self.link_alive(),
        );
        e.gauge(
            "gateway_rx_link_up",
            "1 while heartbeats arrive (the link is up), 0 when none came for the heartbeat \
             timeout or none yet.",
            matches!(link, LinkState::Up { .. }),
        );
        observe::metrics::metrics(e, DECODER, &s);
        c.metrics(e);
        let heartbeat = self.state.last_heartbeat();
        e.gauge(
            "gateway_rx_last_heartbeat_timestamp_seconds",
            "When the last heartbeat arrived, in seconds since the Unix epoch (NaN: none yet).",
            heartbeat
                .as_ref()
                .map_or(f64::NAN, |(at, _)| *at as f64 / 1e9),
        );
        e.counter(
            "gateway_rx_loss_gaps_total",
            "Runs of consecutive seconds with loss beyond repair (see the status page).",
            self.history().gaps_total,
        );
        e.gauge(
            "gateway_rx_catalogue_tags",
            "Tags in the current catalogue (0: none received yet).",
            self.state.tag_count(),
        );
        let q = self.quality_counts();
        e.labelled(
            "gateway_rx_tags",
            "gauge",
            "Tags of the catalogue by the quality they are served with (no_value: none \
             received yet).",
            "quality",
            [
                ("good", q.good),
                ("uncertain", q.uncertain),
                ("bad", q.bad),
                ("no_value", q.no_value),
            ],
        );
        if let Some((_, hb)) = &heartbeat {
            e.gauge(
                "gateway_rx_transmitter_uptime_seconds",
                "The transmitter's uptime as its last heartbeat reported it.",
                hb.uptime_ms as f64 / 1000.0,
            );
            e.counter(
                "gateway_rx_transmitter_datagrams_sent_total",
                "Datagrams the transmitter reports it sent (its last heartbeat).",
                hb.counters.datagrams_sent,
            );
            e.counter(
                "gateway_rx_transmitter_samples_superseded_total",
                "Live changes the transmitter replaced by newer values before sending.",
                hb.counters.samples_superseded,
            );
            e.labelled(
                "gateway_rx_source_up",
                "gauge",
                "Each source's connection as the transmitter's last heartbeat reported it.",
                "source",
                hb.sources.iter().map(|s| (s.name.as_str(), s.connected)),
            );
            e.family(
                "gateway_rx_source_polls_total",
                "counter",
                "Each source's polls by outcome, as the transmitter's last heartbeat reported \
                 them.",
            );
            for src in &hb.sources {
                e.sample(
                    "gateway_rx_source_polls_total",
                    &[("source", &src.name), ("outcome", "ok")],
                    src.polls_ok,
                );
                e.sample(
                    "gateway_rx_source_polls_total",
                    &[("source", &src.name), ("outcome", "failed")],
                    src.polls_failed,
                );
            }
        }
        if let Some(m) = &self.modbus {
            m.snapshot().metrics(e);
        }
        if let Some(o) = &self.opcua {
            let c = &o.counters;
            let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
            e.labelled(
                "gateway_rx_opcua_operations_total",
                "counter",
                "Operations on the read-only OPC UA mirror, by kind (each refused kind is a \
                 write, call or node management item answered with a Bad code).",
                "kind",
                [
                    ("read", get(&c.reads)),
                    ("history_read", get(&c.history_reads)),
                    ("write_refused", get(&c.writes_refused)),
                    ("call_refused", get(&c.calls_refused)),
                    ("node_management_refused", get(&c.node_management_refused)),
                ],
            );
            e.counter(
                "gateway_rx_opcua_history_values_total",
                "Values returned by HistoryRead.",
                get(&c.history_values),
            );
            e.counter(
                "gateway_rx_opcua_data_changes_total",
                "Tag changes handed to the OPC UA subscriptions.",
                get(&c.data_changes),
            );
            e.gauge(
                "gateway_rx_opcua_sessions",
                "OPC UA sessions open now.",
                o.sessions(),
            );
            e.gauge(
                "gateway_rx_opcua_subscriptions",
                "OPC UA subscriptions open now.",
                o.subscriptions(),
            );
            e.gauge(
                "gateway_rx_opcua_tags_not_served",
                "Catalogue tags whose name cannot be laid out as OPC UA nodes.",
                get(&c.tags_not_served),
            );
        }
        if let Some(store) = &self.store {
            store.stats().metrics(e);
        }
        self.sink_metrics(e);
        if let Some(s) = self.syslog() {
            s.metrics(e);
        }
        let outputs = self.syslog_outputs();
        let each: Vec<(&str, crate::syslog::forward::OutputStatsSnapshot)> =
            outputs.iter().map(|(n, s)| (n.as_str(), *s)).collect();
        observe::metrics::metrics_by(
            e,
            crate::syslog::forward::OutputStatsSnapshot::COUNTERS,
            "output",
            &each,
        );
    }

    fn sink_metrics(&self, e: &mut Exposition) {
        let all: Vec<(&str, crate::sinks::SinkStatsSnapshot)> =
            self.sinks.iter().map(|m| (m.name, m.stats())).collect();
        observe::metrics::metrics_by(e, crate::sinks::SinkStatsSnapshot::COUNTERS, "sink", &all);
    }

    pub fn status(&self, query: &Query) -> Json {
        let now = crate::unix_now();
        let s = self.decoder_stats();
        let c = self.state.counters();
        let health = self.health();
        let link = self.state.link_state();
        let heartbeat = self.state.last_heartbeat();
        let q = self.quality_counts();
        let (gaps, gaps_total) = self.gaps();
        let catalogue = self.state.catalogue();
        let messages_lost: u64 = s.messages_lost.iter().sum();
        let up = matches!(link, LinkState::Up { .. });
        let session = match link {
            LinkState::Up { session } => Some(format!("{session:016x}")),
            LinkState::Down => None,
        };
        let hb_age_ms = heartbeat
            .as_ref()
            .map(|(at, _)| now.saturating_sub(*at) / 1_000_000);
        let link_text = if up {
            "up".to_owned()
        } else if heartbeat.is_none() {
            "DOWN (no heartbeat yet)".to_owned()
        } else {
            "DOWN".to_owned()
        };

        let gap_rows: Vec<Json> = gaps
            .iter()
            .rev()
            .map(|g| {
                let lost: Vec<String> = Stream::ALL
                    .iter()
                    .filter(|st| g.messages_lost[**st as usize] > 0)
                    .map(|st| format!("{} {}", g.messages_lost[*st as usize], st.name()))
                    .collect();
                json!([
                    utc_time(g.start_ms),
                    format!("{} s", ((g.end_ms - g.start_ms) as f64 / 1000.0).round()),
                    { "text": g.data_datagrams_lost, "tone": if g.data_datagrams_lost > 0 { "bad" } else { "" } },
                    { "text": if lost.is_empty() { "\u{2013}".to_owned() } else { lost.join(", ") },
                      "tone": if lost.is_empty() { "" } else { "bad" } },
                ])
            })
            .collect();
        let gaps_json: Vec<Json> = gaps
            .iter()
            .map(|g| {
                json!({
                    "start_ms": g.start_ms,
                    "end_ms": g.end_ms,
                    "data_datagrams_lost": g.data_datagrams_lost,
                    "messages_lost": Stream::ALL.iter()
                        .map(|st| (st.name().to_owned(), json!(g.messages_lost[*st as usize])))
                        .collect::<serde_json::Map<String, Json>>(),
                })
            })
            .collect();

        let mut counter_rows = observe::metrics::rows(DECODER, &s);
        counter_rows.extend(c.rows());
        let stream_rows = crate::link_stats::stream_rows(&s);
        let source_rows: Vec<Json> = heartbeat
            .as_ref()
            .map(|(_, hb)| {
                hb.sources
                    .iter()
                    .map(|src| {
                        json!([
                            src.name,
                            { "text": if src.connected { "up" } else { "down" },
                              "tone": if src.connected { "good" } else { "bad" } },
                            src.polls_ok,
                            src.polls_failed,
                            { "text": if src.last_error.is_empty() { "\u{2013}".to_owned() } else { src.last_error.clone() },
                              "tone": if src.last_error.is_empty() { "" } else { "bad" } },
                        ])
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mut tables = vec![
            json!({ "title": "Loss gaps (loss beyond FEC repair, newest first)",
                    "columns": ["start (UTC)", "length", "data datagrams lost", "messages lost"],
                    "rows": gap_rows, "empty": "no loss beyond repair since start" }),
            json!({ "title": "Link counters", "columns": ["counter", "value"], "rows": counter_rows }),
            json!({ "title": "Messages by stream", "columns": ["stream", "delivered", "lost"], "rows": stream_rows }),
            json!({ "title": "Sources (as the transmitter's heartbeat reports them)",
                    "columns": ["source", "state", "polls ok", "failed", "last error"],
                    "rows": source_rows, "empty": "no heartbeat yet" }),
        ];
        if let Some(m) = &self.modbus {
            tables.push(
                json!({ "title": "Modbus mirror (read-only)", "columns": ["counter", "value"],
                                "rows": m.snapshot().rows() }),
            );
        }
        if let Some(sl) = self.syslog() {
            let mut rows = sl.rows();
            for (name, o) in self.syslog_outputs() {
                rows.push(json!([
                    format!("output {name}"),
                    format!(
                        "{} delivered, {} failures, {}",
                        o.delivered,
                        o.failures,
                        if o.connected > 0 {
                            "connected"
                        } else {
                            "not connected"
                        }
                    )
                ]));
            }
            tables.push(
                json!({ "title": "Syslog (spool, outputs)", "columns": ["counter", "value"],
                                "rows": rows }),
            );
        }
        let store = self.store.as_ref().map(|st| st.stats());
        if let Some(st) = &store {
            tables.push(
                json!({ "title": "History store", "columns": ["counter", "value"],
                                "rows": st.rows() }),
            );
        }

        if let Some(o) = &self.opcua {
            let c = &o.counters;
            let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
            tables.push(json!({ "title": "OPC UA mirror (read-only)", "columns": ["counter", "value"], "rows": [
                ["endpoint", o.endpoint_url.clone()],
                ["sessions / subscriptions open", format!("{} / {}", o.sessions(), o.subscriptions())],
                ["values read", get(&c.reads)],
                ["data changes to subscriptions", get(&c.data_changes)],
                ["history reads / values", format!("{} / {}", get(&c.history_reads), get(&c.history_values))],
                ["writes / calls / node management refused", format!("{} / {} / {}",
                    get(&c.writes_refused), get(&c.calls_refused), get(&c.node_management_refused))],
            ]}));
        }

        let mut counters = observe::metrics::json(DECODER, &s);
        counters.extend(c.json());

        json!({
            "daemon": "gateway-rx",
            "version": env!("CARGO_PKG_VERSION"),
            "now_ms": observe::unix_ms(),
            "uptime_s": self.started.elapsed().as_secs(),
            "health": health.to_json(),
            "link": {
                "up": up,
                "authenticated": self.link.key.is_some(),
                "receiver_alive": self.link_alive(),
                "session": session,
                "last_heartbeat_age_ms": hb_age_ms,
                "down_since_ms": self.state.link_down_since().map(|t| t / 1_000_000),
                "transmitter_uptime_ms": heartbeat.as_ref().map(|(_, hb)| hb.uptime_ms),
                "transmitter_config_hash": heartbeat.as_ref().map(|(_, hb)| format!("{:016x}", hb.config_hash)),
                "catalogue": catalogue.as_ref().map(|c| format!("{:016x}", c.hash())),
            },
            "counters": counters,
            "store": store.map(|st| st.json()),
            "syslog": self.syslog().map(|sl| sl.json()),
            "gaps": gaps_json,
            "gaps_total": gaps_total,
            "tag_quality": { "good": q.good, "uncertain": q.uncertain, "bad": q.bad, "no_value": q.no_value },
            "history": self.history_json(),
            "tags": self.tag_rows(query, now),
            "view": {
                "title": "gateway-rx",
                "subtitle": "IT side \u{b7} receives from the diode, serves read-only mirrors",
                "facts": [
                    { "label": "Link", "value": link_text, "tone": if up { "good" } else { "bad" } },
                    { "label": "Session", "value": session.clone().unwrap_or_else(|| "\u{2013}".into()) },
                    observe::page::auth_fact(self.link.key.is_some()),
                    { "label": "Last heartbeat", "value": match hb_age_ms {
                        Some(ms) => format!("{} ago", observe::page::age_text(Some(ms as f64))),
                        None => "none yet".to_owned() } },
                    { "label": "Transmitter uptime", "value": heartbeat.as_ref()
                        .map_or("\u{2013}".to_owned(), |(_, hb)| observe::page::age_text(Some(hb.uptime_ms as f64))) },
                    { "label": "Catalogue", "value": match &catalogue {
                        Some(cat) => format!("{} tags ({:08x}\u{2026})", cat.len(), cat.hash() >> 32),
                        None => "none yet".to_owned() },
                      "tone": if catalogue.is_some() { "" } else { "bad" } },
                    { "label": "Tags good / uncertain / bad", "value": format!("{} / {} / {}", q.good, q.uncertain, q.bad),
                      "tone": if q.bad > 0 { "bad" } else if q.uncertain > 0 || q.no_value > 0 { "warn" } else { "good" } },
                    { "label": "Datagrams accepted", "value": s.datagrams_accepted },
                    { "label": "Repaired by FEC", "value": s.datagrams_repaired },
                    { "label": "Lost beyond FEC", "value": format!("{} datagrams, {} messages", s.data_datagrams_lost, messages_lost),
                      "tone": if messages_lost > 0 || s.data_datagrams_lost > 0 { "bad" } else { "good" } },
                    { "label": "Loss gaps", "value": gaps_total, "tone": if gaps_total > 0 { "warn" } else { "" } },
                    { "label": "Rejected datagrams", "value": s.rejected(),
                      "tone": if s.crc_failures + s.auth_failures + s.bad_magic > 0 { "warn" } else { "" } },
                    { "label": "Session changes", "value": s.session_changes },
                ],
                "charts": [
                    { "title": "Datagrams per second", "unit": "/s",
                      "series": [ { "key": "accepted", "label": "accepted", "color": "#2f6fde" },
                                  { "key": "repaired", "label": "repaired by FEC", "color": "#1d8348" },
                                  { "key": "rejected", "label": "rejected", "color": "#b9770e" } ] },
                    { "title": "Loss per second", "unit": "/s",
                      "series": [ { "key": "missing", "label": "missing on the link", "color": "#b9770e" },
                                  { "key": "lost", "label": "lost beyond FEC", "color": "#c0392b" },
                                  { "key": "messages_lost", "label": "messages lost", "color": "#6f42c1" } ] },
                    { "title": "Link throughput", "unit": "Mbit/s",
                      "series": [ { "key": "mbit", "label": "received", "color": "#2f6fde" } ] },
                    { "title": "Tags by quality", "unit": "tags",
                      "series": [ { "key": "good", "label": "good", "color": "#1d8348" },
                                  { "key": "uncertain", "label": "uncertain", "color": "#b9770e" },
                                  { "key": "bad", "label": "bad", "color": "#c0392b" } ] },
                ],
                "tables": tables,
            },
        })
    }

    fn tag_rows(&self, query: &Query, now: i64) -> Json {
        // The scan runs on the catalogue alone, outside the state's lock: with a million tags
        // it takes a while, and the link task must not wait for it to apply values. The lock
        // is taken once, for the values of the rows shown.
        let Some(catalogue) = self.state.catalogue() else {
            return json!({ "total": 0, "matched": 0, "rows": [] });
        };
        let filter = query.filter();
        let mut matched = 0usize;
        let mut shown = Vec::new();
        for (i, info) in catalogue.iter().enumerate() {
            if !observe::tags::matches(&filter, info) {
                continue;
            }
            matched += 1;
            if shown.len() < query.limit
                && let Ok(index) = u32::try_from(i)
            {
                shown.push(index);
            }
        }
        let view = self.state.view();
        // The catalogue may have been replaced meanwhile: its values then belong to another
        // list of tags, and the rows show none.
        let same = view
            .catalogue()
            .is_some_and(|c| c.hash() == catalogue.hash());
        let rows: Vec<Json> = shown
            .into_iter()
            .filter_map(|index| {
                let info = catalogue.get(index)?;
                let v = if same {
                    view.value(index)
                        .map(|v| (v.value, v.quality, v.source_time))
                } else {
                    None
                };
                Some(observe::tags::row(info, v, now))
            })
            .collect();
        json!({ "total": catalogue.len(), "matched": matched, "rows": rows })
    }

    fn history_json(&self) -> Json {
        let h = self.history();
        let pairs: Vec<(&Sample, &Sample)> =
            h.samples.iter().zip(h.samples.iter().skip(1)).collect();
        let per_s = |a: &Sample, b: &Sample, v: u64| {
            let dt = (b.t_ms - a.t_ms).max(1) as f64 / 1000.0;
            v as f64 / dt
        };
        let series = |f: &dyn Fn(&Sample, &Sample) -> f64| -> Vec<f64> {
            pairs.iter().map(|(a, b)| f(a, b)).collect()
        };
        let d = |a: &Sample, b: &Sample, f: fn(&DecoderStats) -> u64| {
            per_s(a, b, trend::delta(f(&a.stats), f(&b.stats)))
        };
        json!({
            "t": pairs.iter().map(|(_, b)| b.t_ms).collect::<Vec<_>>(),
            "series": {
                "accepted": series(&|a, b| d(a, b, |s| s.datagrams_accepted)),
                "repaired": series(&|a, b| d(a, b, |s| s.datagrams_repaired)),
                "rejected": series(&|a, b| d(a, b, DecoderStats::rejected)),
                "missing": series(&|a, b| d(a, b, |s| s.datagrams_missing)),
                "lost": series(&|a, b| d(a, b, |s| s.data_datagrams_lost)),
                "messages_lost": series(&|a, b| d(a, b, |s| s.messages_lost.iter().sum())),
                "mbit": series(&|a, b| d(a, b, |s| s.bytes_received) * 8.0 / 1e6),
                "link_up": series(&|_, b| f64::from(u8::from(b.link_up))),
                "good": series(&|_, b| b.tags.good as f64),
                "uncertain": series(&|_, b| b.tags.uncertain as f64),
                "bad": series(&|_, b| b.tags.bad as f64),
                "modbus_reads": series(&|a, b| per_s(a, b, trend::delta(a.modbus_reads, b.modbus_reads))),
            },
        })
    }
}

/// `2024-05-01 12:00:00` (UTC) of a Unix time in milliseconds.
fn utc_time(ms: i64) -> String {
    let text = config::timefmt::format_rfc3339(ms.saturating_mul(1_000_000));
    text.get(..19).unwrap_or(&text).replace('T', " ")
}

/// The HTTP server's view of a receiver.
pub struct RxSite(pub Arc<RxStatus>);

impl Site for RxSite {
    fn prefix(&self) -> &'static str {
        "gateway_rx"
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
