//! Starts and stops the receiver's tasks: the link receiver, the Modbus mirror, the OPC UA
//! mirror, the status log and, with `[http]`, the status server and its history sampler.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use config::rx::RxConfig;
use protocol::decoder::DecoderStats;
use tokio::task::JoinHandle;
use tracing::info;

use crate::link::{LinkReceiver, SharedStats};
use crate::state::State;
use crate::status::{RxSite, RxStatus};

/// A running receiver. Dropping it stops every task.
pub struct Receiver {
    pub state: Arc<State>,
    stats: SharedStats,
    pub link_addr: SocketAddr,
    pub modbus_addr: Option<SocketAddr>,
    /// Where the OPC UA mirror listens (the real port when the config said 0).
    pub opcua_addr: Option<SocketAddr>,
    /// The OPC UA mirror's endpoint URL, as it describes itself to clients.
    pub opcua_endpoint: Option<String>,
    /// Where the status HTTP server listens, when `[http]` is configured.
    pub http_addr: Option<SocketAddr>,
    /// What metrics, health and the status page read.
    pub status: Arc<RxStatus>,
    link: JoinHandle<anyhow::Result<()>>,
    others: Vec<JoinHandle<()>>,
    /// The embedded historian store (dropped after the tasks above are aborted).
    store: crate::store::HistoryStore,
    /// The sinks fed by the store (`[mqtt]`, `[postgres]`).
    sinks: Vec<crate::sinks::SinkHandle>,
    /// Stops its server when dropped.
    _opcua: Option<crate::opcua::OpcUaMirror>,
}

impl Receiver {
    pub async fn start(config: RxConfig) -> anyhow::Result<Receiver> {
        if config.link.insecure_no_key {
            tracing::warn!(
                "the link is NOT authenticated (insecure_no_key = true): any host that can reach \
                 the link port can feed the mirrors forged values and take the session over \
                 while the transmitter is silent; copy the transmitter's key file here and set \
                 key_file"
            );
        }
        let state = Arc::new(State::new());
        let stats: SharedStats = Arc::new(Mutex::new(DecoderStats::default()));
        let (feed, sinks) = crate::sinks::start(&config, state.clone())?;
        let store = crate::store::HistoryStore::start_with_sinks(
            config.store.clone(),
            state.clone(),
            feed,
        )?;
        let syslog = match &config.syslog {
            Some(s) => Some(crate::syslog::start(s)?),
            None => None,
        };
        let (syslog_input, syslog_monitor, syslog_tasks) = match syslog {
            Some(s) => (Some(s.input), Some((s.stats, s.outputs)), s.tasks),
            None => (None, None, Vec::new()),
        };
        let receiver = LinkReceiver::bind(config.link.clone(), state.clone(), stats.clone())
            .await?
            .with_history(store.sink())
            .with_syslog(syslog_input);
        let link_addr = receiver.local_addr()?;
        let mut others = syslog_tasks;
        let mut modbus_addr = None;
        let mut modbus_counters = None;
        if let Some(server) = config.modbus_server.clone() {
            let listener = tokio::net::TcpListener::bind(server.bind)
                .await
                .with_context(|| format!("binding the Modbus mirror to {}", server.bind))?;
            modbus_addr = Some(listener.local_addr()?);
            let state = state.clone();
            let counters = Arc::new(crate::modbus_server::ServerCounters::default());
            modbus_counters = Some(counters.clone());
            others.push(tokio::spawn(async move {
                let served =
                    crate::modbus_server::serve_with_counters(listener, state, server, counters);
                if let Err(e) = served.await {
                    tracing::error!(error = format!("{e:#}"), "Modbus mirror stopped");
                }
            }));
        }
        let opcua = match &config.opcua_server {
            Some(server) => {
                let store = config.store.enabled.then(|| config.store.path.clone());
                Some(crate::opcua::OpcUaMirror::start(server, state.clone(), store).await?)
            }
            None => None,
        };
        let opcua_addr = opcua.as_ref().map(|m| m.addr);
        let opcua_endpoint = opcua.as_ref().map(|m| m.endpoint_url.clone());
        others.push(tokio::spawn(status_log(
            state.clone(),
            stats.clone(),
            config.status.log_interval,
        )));
        let link_alive = Arc::new(AtomicBool::new(true));
        let monitors: Vec<crate::sinks::SinkMonitor> = sinks.iter().map(|s| s.monitor()).collect();
        others.push(tokio::spawn(crate::sinks::status_log(
            monitors.clone(),
            config.status.log_interval,
        )));
        let status = Arc::new(
            RxStatus::new(
                state.clone(),
                stats.clone(),
                modbus_counters,
                config.link.clone(),
                link_alive.clone(),
            )
            .with_sinks(monitors)
            .with_store(store.sink())
            .with_opcua(opcua.as_ref().map(|m| m.monitor.clone()))
            .with_syslog(syslog_monitor),
        );
        let mut http_addr = None;
        if let Some(http) = &config.http {
            let listener = tokio::net::TcpListener::bind(http.bind)
                .await
                .with_context(|| format!("binding the status HTTP server to {}", http.bind))?;
            http_addr = Some(listener.local_addr()?);
            others.push(tokio::spawn(status.clone().run_sampler()));
            others.push(tokio::spawn(observe::http::serve(
                listener,
                Arc::new(RxSite(status.clone())),
            )));
        }
        let link = tokio::spawn(async move {
            let result = receiver.run().await;
            link_alive.store(false, Ordering::Relaxed);
            result
        });
        info!(
            link = %link_addr,
            modbus = ?modbus_addr,
            opcua = ?opcua_endpoint,
            http = ?http_addr,
            "gateway-rx running"
        );
        Ok(Receiver {
            state,
            stats,
            link_addr,
            modbus_addr,
            opcua_addr,
            opcua_endpoint,
            http_addr,
            status,
            link,
            others,
            store,
            sinks,
            _opcua: opcua,
        })
    }

    /// Each sink's name and counters.
    pub fn sink_stats(&self) -> Vec<(&'static str, crate::sinks::SinkStatsSnapshot)> {
        self.sinks.iter().map(|s| (s.name, s.stats())).collect()
    }

    /// The embedded historian store's counters.
    pub fn history_stats(&self) -> crate::store::StoreStatsSnapshot {
        self.store.stats()
    }

    /// Whether the link receiver still runs (it ends only on a socket error).
    pub fn link_alive(&self) -> bool {
        !self.link.is_finished()
    }

    /// The decoder's counters as last published by the link task.
    pub fn stats(&self) -> DecoderStats {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Waits until the link receiver fails (it does not end otherwise).
    pub async fn wait(&mut self) -> anyhow::Result<()> {
        match (&mut self.link).await {
            Ok(result) => result,
            Err(e) => Err(anyhow::anyhow!("link receiver task ended: {e}")),
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.link.abort();
        for t in &self.others {
            t.abort();
        }
    }
}

async fn status_log(state: Arc<State>, stats: SharedStats, every: std::time::Duration) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tick.tick().await;
        let s = stats.lock().map(|s| s.clone()).unwrap_or_default();
        let [
            control_lost,
            live_lost,
            snapshot_lost,
            history_lost,
            syslog_lost,
        ] = s.messages_lost;
        info!(
            link = if state.link_is_down() { "down" } else { "up" },
            tags = state.tag_count(),
            received = s.datagrams_received,
            accepted = s.datagrams_accepted,
            missing = s.datagrams_missing,
            repaired = s.datagrams_repaired,
            lost = s.data_datagrams_lost,
            groups_repaired = s.groups_repaired,
            groups_lost = s.groups_lost,
            late = s.late,
            crc_failures = s.crc_failures,
            auth_failures = s.auth_failures,
            duplicates = s.duplicates,
            bad_magic = s.bad_magic,
            bad_length = s.bad_length,
            bad_version = s.bad_version,
            malformed = s.malformed,
            out_of_window = s.out_of_window,
            stale_session = s.stale_session_dropped,
            replayed = s.replayed,
            key_rate_limited = s.key_rate_limited,
            session_changes = s.session_changes,
            control_lost,
            live_lost,
            snapshot_lost,
            history_lost,
            syslog_lost,
            "status"
        );
    }
}
