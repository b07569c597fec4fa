//! The OPC UA source: one task per `[[opcua]]` endpoint keeps a session to its server, reads
//! the endpoint's tags by subscription (or polled Read) into the tag table, and at start reads
//! the recent history of `historize` tags into the history stream. Only Browse, Read,
//! HistoryRead and the session and subscription services are ever called: never Write, Call,
//! node management or HistoryUpdate (DESIGN.md: read-only towards the plant).

pub mod browse;
pub mod client;
pub mod convert;
pub mod endpoint;
pub mod history_read;
pub mod nodeid;
mod poll;
mod subscribe;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

pub use endpoint::run_endpoint;

use crate::modbus::DeviceHealth;

/// Health of one endpoint: the Modbus devices' counters (connected, reads or publishes that
/// delivered values, failures, last error) plus reconnections.
#[derive(Debug, Default)]
pub struct EndpointHealth {
    pub base: DeviceHealth,
    reconnects: AtomicU64,
    /// The start-up HistoryRead ran; a live reload does not repeat it.
    history_done: AtomicBool,
}

impl EndpointHealth {
    pub fn new() -> EndpointHealth {
        EndpointHealth::default()
    }

    /// Sessions opened after the first.
    pub fn reconnects(&self) -> u64 {
        self.reconnects.load(Ordering::Relaxed)
    }

    pub(crate) fn reconnected(&self) {
        self.reconnects.fetch_add(1, Ordering::Relaxed);
    }

    /// True the first time only.
    pub(crate) fn take_history(&self) -> bool {
        !self.history_done.swap(true, Ordering::Relaxed)
    }

    pub fn snapshot(&self, name: &str) -> protocol::message::SourceHealth {
        self.base.snapshot(name)
    }
}
