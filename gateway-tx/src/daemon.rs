//! Starts and stops the transmitter's tasks: one poller per device, the link sender, and,
//! with `[http]`, the status server and its history sampler.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;

use config::tx::TxConfig;
use protocol::model::TagIndex;
use tokio::task::JoinHandle;

use crate::link::{HealthFn, LinkSender};
use crate::modbus::{DeviceHealth, run_device};
use crate::status::{DeviceStatus, TxSite, TxStatus};
use crate::tags::TagTable;

/// A running transmitter. Dropping it stops every task.
pub struct Transmitter {
    pub table: Arc<TagTable>,
    pub session: u64,
    /// What metrics, health and the status page read.
    pub status: Arc<TxStatus>,
    /// Where the status HTTP server listens, when `[http]` is configured.
    pub http_addr: Option<SocketAddr>,
    link: JoinHandle<anyhow::Result<()>>,
    pollers: Vec<JoinHandle<()>>,
    /// The history stream's buffer and thread, with `[history]` (stopped after the tasks).
    history: Option<crate::history::History>,
}

impl Transmitter {
    pub async fn start(config: TxConfig) -> anyhow::Result<Transmitter> {
        let table = Arc::new(TagTable::from_config(&config));
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
        let mut pollers = Vec::new();
        let mut healths = Vec::new();
        let mut devices = Vec::new();
        let mut first: TagIndex = 0;
        for device in &config.devices {
            let health = Arc::new(DeviceHealth::default());
            healths.push((device.name.clone(), health.clone()));
            devices.push(DeviceStatus {
                config: device.clone(),
                health: health.clone(),
            });
            let n = TagIndex::try_from(device.tags.len())?;
            pollers.push(tokio::spawn(run_device(
                device.clone(),
                first,
                table.clone(),
                health,
            )));
            first += n;
        }
        let health: HealthFn =
            Arc::new(move || healths.iter().map(|(name, h)| h.snapshot(name)).collect());
        let session = new_session_id()?;
        let sender = LinkSender::new(
            config.link.clone(),
            config.config_hash,
            table.clone(),
            health,
            session,
        )
        .await?
        .with_history(history.as_ref().map(|h| h.outlet()));
        let link_alive = Arc::new(AtomicBool::new(true));
        let status = Arc::new(TxStatus::new(
            table.clone(),
            devices,
            config.link.clone(),
            session,
            config.config_hash,
            sender.encoder_stats(),
            sender.counters(),
            link_alive.clone(),
        ));
        pollers.push(tokio::spawn(status_log(
            sender.counters(),
            sender.encoder_stats(),
            table.clone(),
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
            pollers.push(tokio::spawn(status.clone().run_sampler()));
            pollers.push(tokio::spawn(observe::http::serve(
                listener,
                Arc::new(TxSite(status.clone())),
            )));
        }
        Ok(Transmitter {
            table,
            session,
            status,
            http_addr,
            link,
            pollers,
            history,
        })
    }

    /// The history stream's counters, with `[history]`.
    pub fn history_stats(&self) -> Option<crate::history::HistoryStatsSnapshot> {
        self.history.as_ref().map(|h| h.stats().snapshot())
    }

    /// Whether the link sender still runs (it ends only on a socket error it cannot retry).
    pub fn link_alive(&self) -> bool {
        !self.link.is_finished()
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
        for p in &self.pollers {
            p.abort();
        }
    }
}

/// How often the transmitter logs a status line (what was sent, what waits).
const STATUS_LOG_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

async fn status_log(
    counters: Arc<crate::link::LinkCounters>,
    encoder: crate::link::SharedEncoderStats,
    table: Arc<TagTable>,
) {
    let mut tick = tokio::time::interval(STATUS_LOG_INTERVAL);
    tick.tick().await;
    loop {
        tick.tick().await;
        let e = encoder.lock().map(|e| e.clone()).unwrap_or_default();
        let get = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        tracing::info!(
            datagrams_sent = get(&counters.datagrams_sent),
            bytes_sent = get(&counters.bytes_sent),
            send_errors = get(&counters.send_errors),
            data_datagrams = e.data_datagrams,
            repair_datagrams = e.repair_datagrams,
            groups = e.groups,
            timer_flushes = e.timer_flushes,
            samples_sent = get(&counters.samples_sent),
            samples_superseded = table.superseded(),
            changes_waiting = table.pending_changes(),
            pending_datagrams = get(&counters.pending_datagrams),
            "status"
        );
    }
}

/// A fresh random session id, so the receiver can tell a restart from a continuation and
/// authentication nonces are never reused across runs.
fn new_session_id() -> anyhow::Result<u64> {
    use ring::rand::{SecureRandom, SystemRandom};
    let mut bytes = [0u8; 8];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| anyhow::anyhow!("the system random generator failed"))?;
    Ok(u64::from_be_bytes(bytes))
}
