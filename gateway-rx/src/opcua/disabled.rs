//! Built without the `opcua` feature: a config with `[opcua_server]` is refused rather than
//! silently not served. The types exist so that the daemon and the status page need no
//! conditional code; none of them can be made.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use config::opcua_server::OpcUaServer;

use super::OpcUaCounters;
use crate::state::State;

#[derive(Clone)]
pub struct OpcUaMonitor {
    pub counters: Arc<OpcUaCounters>,
    pub endpoint_url: String,
    never: Infallible,
}

impl OpcUaMonitor {
    pub fn sessions(&self) -> u64 {
        match self.never {}
    }

    pub fn subscriptions(&self) -> u64 {
        match self.never {}
    }
}

pub struct OpcUaMirror {
    pub addr: SocketAddr,
    pub endpoint_url: String,
    pub monitor: OpcUaMonitor,
}

impl OpcUaMirror {
    pub async fn start(
        _config: &OpcUaServer,
        _state: Arc<State>,
        _store: Option<PathBuf>,
    ) -> anyhow::Result<OpcUaMirror> {
        anyhow::bail!(
            "the config has [opcua_server], but this gateway-rx was built without OPC UA \
             (cargo feature `opcua`)"
        )
    }
}
