//! Starts and stops the transmitter's tasks: the sources (see [`crate::source`]), the link
//! sender, and, with `[http]`, the status server and its history sampler.
//!
//! Live reload ([`Transmitter::reload`], on SIGHUP or a change of the file with `--watch`):
//! a valid config is applied in the same session and without restarting the link sender. The
//! new tag table takes the current values of the tags whose name, type and source are
//! unchanged; the link sender switches to it and sends its catalogue at once. Every source is
//! restarted on the new table (tag indexes shift when tags are added or removed before a
//! source's own; polls resume within one interval, values are kept meanwhile; an OPC UA
//! endpoint opens a new session, and its start-up HistoryRead is not repeated). What cannot
//! change live is refused, naming the key, and needs a restart: anything under `[link]`,
//! `[http]` and `[history]`, and, with `[history]`, the tag list (the history buffer names
//! tags by the catalogue it started with). A refused reload keeps the running config.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;

use config::tx::TxConfig;
use tokio::task::JoinHandle;
use tracing::warn;

use crate::link::LinkSender;
use crate::scheduler::HealthFn;
use crate::source::{Current, Running, Sources};
use crate::status::{TxSite, TxStatus};
use crate::tags::TagTable;

/// A running transmitter. Dropping it stops every task.
pub struct Transmitter {
    pub session: u64,
    /// What metrics, health and the status page read.
    pub status: Arc<TxStatus>,
    /// Where the status HTTP server listens, when `[http]` is configured.
    pub http_addr: Option<SocketAddr>,
    /// Where the syslog listeners listen (UDP, TCP), with `[syslog]`: the bound addresses, so
    /// port 0 in the config is usable.
    pub syslog_addrs: (Option<SocketAddr>, Option<SocketAddr>),
    link: JoinHandle<anyhow::Result<()>>,
    /// Tells the link sender to send what it holds and stop (see [`Transmitter::shutdown`]).
    stop_link: tokio::sync::watch::Sender<bool>,
    /// The status log, sampler and server (the sources' tasks are in [`Live`]).
    tasks: Vec<JoinHandle<()>>,
    /// What a live reload replaces.
    live: Mutex<Live>,
    /// Live reloads applied and refused.
    pub reloads: Arc<ReloadCounters>,
    /// The history stream's buffer and thread, with `[history]` (stopped after the tasks).
    history: Option<crate::history::History>,
}

impl Transmitter {
    pub async fn start(config: TxConfig) -> anyhow::Result<Transmitter> {
        if config.link.insecure_no_key {
            warn!(
                "the link is NOT authenticated (insecure_no_key = true): anything that can reach \
                 the receiver's link port can feed its mirrors forged values; create a key with \
                 `gateway-tx keygen` and set key_file on both sides"
            );
        }
        // First: a start that cannot persist its epoch must not send or poll anything.
        let session =
            crate::epoch::start_session(&config.link.state_file, config.link.key.is_some())?;
        let (sources, table) = Sources::build(&config, None)?;
        let table = Arc::new(table);
        // The history's tap goes in before any source can report a sample.
        let history = match &config.history {
            Some(h) => {
                let catalogue = protocol::catalogue::Catalogue::new(table.infos().to_vec());
                let history = crate::history::History::start(h, &config.link, &catalogue)?;
                table.set_history(history.tap());
                Some(history)
            }
            None => None,
        };
        let mut tasks = Vec::new();
        let mut syslog_stats = None;
        let history_hooks = history.as_ref().map(|h| h.hooks());
        let sources = Arc::new(sources);
        let running = sources.start(&table, history_hooks.as_ref());
        let current = Current::new(sources.clone());
        let health: HealthFn = {
            let current = current.clone();
            Arc::new(move || current.get().health())
        };
        let (table_tx, table_rx) = tokio::sync::watch::channel((table.clone(), config.config_hash));
        let sender = LinkSender::new(
            config.link.clone(),
            config.config_hash,
            table.clone(),
            health,
            session,
        )
        .await?
        .with_history(history.as_ref().map(|h| h.outlet()))
        .with_reload(table_rx.clone());
        // Bound before the link starts, so a port in use stops the start with its reason.
        let syslog = match &config.syslog {
            Some(s) => Some((crate::syslog::start(s).await?, s.messages_per_pass)),
            None => None,
        };
        let mut syslog_addrs = (None, None);
        let sender = match syslog {
            Some((listeners, per_pass)) => {
                syslog_addrs = (listeners.udp, listeners.tcp);
                tasks.extend(listeners.tasks);
                let queue = listeners.queue;
                syslog_stats = Some(queue.stats().clone());
                sender.with_syslog(queue, per_pass)
            }
            None => sender,
        };
        let (stop_link, stop_rx) = tokio::sync::watch::channel(false);
        let sender = sender.with_stop(stop_rx);
        let link_alive = Arc::new(AtomicBool::new(true));
        let status = Arc::new(TxStatus::new(
            table.clone(),
            current,
            config.link.clone(),
            session,
            config.config_hash,
            sender.encoder_stats(),
            sender.counters(),
            link_alive.clone(),
        ));
        if let Some(h) = &history {
            status.set_history_stream(h.stats());
        }
        if let Some(s) = &syslog_stats {
            status.set_syslog(s.clone());
        }
        tasks.push(tokio::spawn(status_log(
            sender.counters(),
            sender.encoder_stats(),
            table_rx,
        )));
        let link = tokio::spawn(async move {
            let result = sender.run().await;
            link_alive.store(false, Ordering::Relaxed);
            result
        });
        let mut http_addr = None;
        if let Some(http) = &config.http {
            let listener = tokio::net::TcpListener::bind(http.bind)
                .await
                .with_context(|| format!("binding the status HTTP server to {}", http.bind))?;
            http_addr = Some(listener.local_addr()?);
            tasks.push(tokio::spawn(status.clone().run_sampler()));
            tasks.push(tokio::spawn(observe::http::serve(
                listener,
                Arc::new(TxSite(status.clone())),
            )));
        }
        let reloads = status.reloads.clone();
        Ok(Transmitter {
            session,
            status,
            http_addr,
            syslog_addrs,
            link,
            stop_link,
            tasks,
            live: Mutex::new(Live {
                config,
                table,
                sources,
                running,
                table_tx,
                history: history_hooks,
            }),
            reloads,
            history,
        })
    }

    /// The tag table now in use (replaced by a live reload).
    pub fn table(&self) -> Arc<TagTable> {
        self.lock_live().table.clone()
    }

    /// The config now in use (replaced by a live reload).
    pub fn config(&self) -> TxConfig {
        self.lock_live().config.clone()
    }

    fn lock_live(&self) -> std::sync::MutexGuard<'_, Live> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Re-reads the config file and applies it live (see the module doc). A file that does
    /// not load is refused with the same file:line:column:key text as `check-config`; the
    /// running config stays. Either way the outcome is logged and counted.
    pub fn reload_file(&self, path: &std::path::Path) -> Result<ReloadSummary, String> {
        let result = TxConfig::load(path)
            .map_err(|e| e.to_string())
            .and_then(|c| self.apply(c));
        self.count(path, &result);
        result
    }

    /// Applies `new` live (see the module doc); refused, with the running config kept, when
    /// it changes something that needs a restart. Logged and counted like
    /// [`Transmitter::reload_file`].
    pub fn reload(&self, new: TxConfig) -> Result<ReloadSummary, String> {
        let result = self.apply(new);
        self.count(std::path::Path::new("(config)"), &result);
        result
    }

    fn count(&self, path: &std::path::Path, result: &Result<ReloadSummary, String>) {
        match result {
            Ok(s) => {
                self.reloads.applied.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    config = %path.display(),
                    tags = s.tags,
                    added = s.added,
                    removed = s.removed,
                    kept_values = s.kept_values,
                    "config reloaded"
                );
            }
            Err(e) => {
                self.reloads.refused.fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    config = %path.display(),
                    error = %e,
                    "config reload refused, the running config stays"
                );
            }
        }
    }

    fn apply(&self, new: TxConfig) -> Result<ReloadSummary, String> {
        let mut live = self.lock_live();
        let old = &live.config;
        let mut fixed = Vec::new();
        link_changes(&old.link, &new.link, &mut fixed);
        if old.http != new.http {
            fixed.push("http");
        }
        if old.history != new.history {
            fixed.push("history");
        }
        if old.syslog != new.syslog {
            fixed.push("syslog");
        }
        // Built before anything stops: a config the sources refuse keeps the running one.
        let (sources, table) =
            Sources::build(&new, Some(&live.sources)).map_err(|e| format!("{e:#}"))?;
        if live.history.is_some() && table.infos() != live.table.infos() {
            fixed.push("devices.tags (with [history], the tag list)");
        }
        if !fixed.is_empty() {
            return Err(format!(
                "reload refused: {} cannot change while running; restart gateway-tx to apply it",
                fixed.join(", ")
            ));
        }
        let old_names: std::collections::HashSet<&str> =
            live.table.infos().iter().map(|t| t.name.as_str()).collect();
        let new_names: std::collections::HashSet<&str> =
            table.infos().iter().map(|t| t.name.as_str()).collect();
        let added = new_names.difference(&old_names).count();
        let removed = old_names.difference(&new_names).count();
        // The old sources stop first, so no value reaches the old table after it was copied.
        live.running.stop();
        if let Some(h) = &live.history {
            table.set_history(h.tap.clone());
        }
        let kept_values = table.carry_over(&live.table);
        let table = Arc::new(table);
        let sources = Arc::new(sources);
        live.running = sources.start(&table, live.history.as_ref());
        live.sources = sources.clone();
        self.status.replace(table.clone(), sources);
        live.table_tx.send_replace((table.clone(), new.config_hash));
        let summary = ReloadSummary {
            tags: table.len(),
            added,
            removed,
            kept_values,
        };
        live.table = table;
        live.config = new;
        Ok(summary)
    }

    /// The history stream's counters, with `[history]`.
    pub fn history_stats(&self) -> Option<crate::history::HistoryStatsSnapshot> {
        self.history.as_ref().map(|h| h.stats().snapshot())
    }

    /// Whether the link sender still runs (it ends only on a socket error it cannot retry).
    pub fn link_alive(&self) -> bool {
        !self.link.is_finished()
    }

    /// A planned stop: the sources stop, and the link sender sends what it holds (the partial
    /// datagram, the open block and its repair) within `grace`, then everything is dropped.
    pub async fn shutdown(mut self, grace: Duration) {
        for p in &self.tasks {
            p.abort();
        }
        self.lock_live().running.stop();
        if self.link.is_finished() {
            return;
        }
        let _ = self.stop_link.send(true);
        match tokio::time::timeout(grace, &mut self.link).await {
            Ok(Ok(Err(e))) => warn!(error = %e, "link sender failed while stopping"),
            Ok(_) => {}
            Err(_) => warn!(
                grace_ms = grace.as_millis() as u64,
                "link sender did not finish sending within the grace period"
            ),
        }
    }

    /// Waits until the link sender fails (it does not end otherwise).
    pub async fn wait(&mut self) -> anyhow::Result<()> {
        match (&mut self.link).await {
            Ok(result) => result,
            Err(e) => Err(anyhow::anyhow!("link sender task ended: {e}")),
        }
    }
}

impl Drop for Transmitter {
    fn drop(&mut self) {
        self.link.abort();
        for p in &self.tasks {
            p.abort();
        }
        self.lock_live().running.stop();
    }
}

observe::family! {
    /// Live config reloads (SIGHUP, --watch) by outcome; a refused one keeps the running
    /// config.
    pub const RELOADS = counter "gateway_tx_config_reloads_total" by "outcome";
}

observe::counters! {
    /// Live reloads, for the log and the status.
    #[derive(Debug, Default)]
    pub struct ReloadCounters;
    /// A copy of [`ReloadCounters`].
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
    pub struct ReloadCountersSnapshot;

    applied => RELOADS["applied"];
    refused => RELOADS["refused"];
}

/// What a live reload changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReloadSummary {
    /// Tags in the new catalogue.
    pub tags: usize,
    /// Tag names new in it.
    pub added: usize,
    /// Tag names gone from it.
    pub removed: usize,
    /// Tags whose current value was carried over.
    pub kept_values: usize,
}

/// What a live reload replaces.
struct Live {
    config: TxConfig,
    table: Arc<TagTable>,
    sources: Arc<Sources>,
    running: Running,
    table_tx: tokio::sync::watch::Sender<(Arc<TagTable>, u64)>,
    history: Option<crate::history::SourceHooks>,
}

/// The `[link]` keys that differ; none of them can change while the link runs.
fn link_changes(old: &config::tx::TxLink, new: &config::tx::TxLink, out: &mut Vec<&'static str>) {
    let keys: [(&'static str, bool); 9] = [
        ("link.destination", old.destination != new.destination),
        ("link.bind", old.bind != new.bind),
        ("link.mtu", old.mtu != new.mtu),
        ("link.rate_mbit", old.rate_bps != new.rate_bps),
        ("link.fec", old.fec != new.fec),
        (
            "link.key_file",
            old.key != new.key || old.key_file != new.key_file,
        ),
        (
            "link.heartbeat_ms",
            old.heartbeat_interval != new.heartbeat_interval,
        ),
        (
            "link.catalogue_interval_s",
            old.catalogue_interval != new.catalogue_interval,
        ),
        (
            "link.snapshot_period_s",
            old.snapshot_period != new.snapshot_period,
        ),
    ];
    let before = out.len();
    out.extend(keys.iter().filter(|(_, changed)| *changed).map(|(k, _)| *k));
    if out.len() == before && old != new {
        out.push("link");
    }
}

/// How often the transmitter logs a status line (what was sent, what waits).
const STATUS_LOG_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

async fn status_log(
    counters: Arc<crate::link::LinkCounters>,
    encoder: crate::link::SharedEncoderStats,
    table: crate::link::TableUpdates,
) {
    let mut tick = tokio::time::interval(STATUS_LOG_INTERVAL);
    tick.tick().await;
    loop {
        tick.tick().await;
        let e = encoder.lock().map(|e| e.clone()).unwrap_or_default();
        let table = table.borrow().0.clone();
        let c = counters.snapshot();
        tracing::info!(
            datagrams_sent = c.datagrams_sent,
            bytes_sent = c.bytes_sent,
            send_errors = c.send_errors,
            data_datagrams = e.data_datagrams,
            repair_datagrams = e.repair_datagrams,
            groups = e.groups,
            timer_flushes = e.timer_flushes,
            samples_sent = c.samples_sent,
            samples_superseded = table.superseded(),
            changes_waiting = table.pending_changes(),
            pending_datagrams = c.pending_datagrams,
            "status"
        );
    }
}
