//! Starts and stops the transmitter's tasks: one poller per device and the link sender.

use std::sync::Arc;

use config::tx::TxConfig;
use protocol::model::TagIndex;
use tokio::task::JoinHandle;

use crate::link::{HealthFn, LinkSender};
use crate::modbus::{DeviceHealth, run_device};
use crate::tags::TagTable;

/// A running transmitter. Dropping it stops every task.
pub struct Transmitter {
    pub table: Arc<TagTable>,
    pub session: u64,
    link: JoinHandle<anyhow::Result<()>>,
    pollers: Vec<JoinHandle<()>>,
}

impl Transmitter {
    pub async fn start(config: TxConfig) -> anyhow::Result<Transmitter> {
        let table = Arc::new(TagTable::from_config(&config));
        let mut pollers = Vec::new();
        let mut healths = Vec::new();
        let mut first: TagIndex = 0;
        for device in &config.devices {
            let health = Arc::new(DeviceHealth::default());
            healths.push((device.name.clone(), health.clone()));
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
        .await?;
        let link = tokio::spawn(sender.run());
        Ok(Transmitter {
            table,
            session,
            link,
            pollers,
        })
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
