//! The OPC UA source: one task per `[[opcua]]` endpoint keeps a session to its server, reads
//! the endpoint's tags by subscription (or polled Read) into the tag table, and at start reads
//! the recent history of `historize` tags into the history stream. Only Browse, Read,
//! HistoryRead and the session and subscription services are ever called: never Write, Call,
//! node management or HistoryUpdate (read-only towards the plant: see THREATS.md).

#[cfg(feature = "opcua")]
pub mod backfill;
#[cfg(feature = "opcua")]
pub mod browse;
#[cfg(feature = "opcua")]
pub mod client;
#[cfg(feature = "opcua")]
pub mod convert;
#[cfg(feature = "opcua")]
pub mod endpoint;
#[cfg(feature = "opcua")]
pub mod history_read;
#[cfg(feature = "opcua")]
pub mod nodeid;
#[cfg(feature = "opcua")]
mod poll;
#[cfg(feature = "opcua")]
mod subscribe;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

#[cfg(feature = "opcua")]
pub use endpoint::run_endpoint;

use crate::modbus::DeviceHealth;

/// Health of one endpoint: the Modbus devices' counters (connected, reads or publishes that
/// delivered values, failures, last error) plus reconnections.
#[derive(Debug, Default)]
pub struct EndpointHealth {
    pub base: DeviceHealth,
    /// Sessions opened, live reloads included.
    sessions: AtomicU64,
    /// The start-up HistoryRead completed; later sessions and live reloads do not repeat it.
    history_done: AtomicBool,
}

impl EndpointHealth {
    pub fn new() -> EndpointHealth {
        EndpointHealth::default()
    }

    /// Sessions opened after the first (a live reload opens one too).
    pub fn reconnects(&self) -> u64 {
        self.sessions.load(Ordering::Relaxed).saturating_sub(1)
    }

    #[cfg_attr(not(feature = "opcua"), allow(dead_code))]
    pub(crate) fn session_opened(&self) {
        self.sessions.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether the start-up HistoryRead is still to do.
    #[cfg_attr(not(feature = "opcua"), allow(dead_code))]
    pub(crate) fn history_pending(&self) -> bool {
        !self.history_done.load(Ordering::Relaxed)
    }

    /// The start-up HistoryRead completed (an interrupted one is redone on the next session:
    /// the receiver's store keeps each tag and source time once).
    #[cfg_attr(not(feature = "opcua"), allow(dead_code))]
    pub(crate) fn history_finished(&self) {
        self.history_done.store(true, Ordering::Relaxed);
    }

    pub fn snapshot(&self, name: &str) -> protocol::message::SourceHealth {
        self.base.snapshot(name)
    }
}
