//! One source's health, whatever its protocol: written by its tasks, read by the heartbeat
//! (as the `SourceHealth` it sends) and by the status (metrics, health, the page). One type
//! for every kind of source, so that the heartbeat, the sampler's charts and the health check
//! read every source alike; a live reload carries it to the source of the same kind and name
//! (see [`crate::source`]).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use protocol::message::SourceHealth;

/// Counters and state of one source. Lock-free except for the error text, which is written
/// only on a failure transition and read once per heartbeat.
#[derive(Debug, Default)]
pub struct Health {
    connected: AtomicBool,
    /// Modbus: complete polls; OPC UA: data changes received or Read rounds done.
    polls_ok: AtomicU64,
    polls_failed: AtomicU64,
    /// Microseconds of the last complete poll (all of the device's requests).
    last_latency_us: AtomicU64,
    last_error: Mutex<String>,
    /// Sessions opened, live reloads included (sources with sessions: OPC UA).
    sessions: AtomicU64,
    /// The start-up history read (OPC UA: HistoryRead of `historize` tags) completed; later
    /// sessions and live reloads do not repeat it.
    history_done: AtomicBool,
}

impl Health {
    pub fn new() -> Health {
        Health::default()
    }

    pub fn snapshot(&self, name: &str) -> SourceHealth {
        SourceHealth {
            name: name.to_string(),
            connected: self.connected(),
            polls_ok: self.polls_ok(),
            polls_failed: self.polls_failed(),
            last_error: self.last_error(),
        }
    }

    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    pub fn polls_ok(&self) -> u64 {
        self.polls_ok.load(Ordering::Relaxed)
    }

    pub fn polls_failed(&self) -> u64 {
        self.polls_failed.load(Ordering::Relaxed)
    }

    pub fn last_latency(&self) -> Duration {
        Duration::from_micros(self.last_latency_us.load(Ordering::Relaxed))
    }

    /// The current error; empty once a poll succeeds completely.
    pub fn last_error(&self) -> String {
        self.error_lock().clone()
    }

    /// Sessions opened after the first (a live reload opens one too).
    pub fn reconnects(&self) -> u64 {
        self.sessions.load(Ordering::Relaxed).saturating_sub(1)
    }

    pub(crate) fn set_connected(&self, connected: bool) {
        self.connected.store(connected, Ordering::Relaxed);
    }

    /// A poll in which every request was answered with data.
    pub(crate) fn poll_ok(&self, latency: Duration) {
        self.polls_ok.fetch_add(1, Ordering::Relaxed);
        self.set_latency(latency);
        let mut e = self.error_lock();
        if !e.is_empty() {
            e.clear();
        }
    }

    /// A poll (or connection attempt) that failed in whole or in part.
    pub(crate) fn poll_failed(&self, error: &str) {
        self.polls_failed.fetch_add(1, Ordering::Relaxed);
        let mut e = self.error_lock();
        if *e != error {
            error.clone_into(&mut e);
        }
    }

    pub(crate) fn set_latency(&self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.last_latency_us.store(us, Ordering::Relaxed);
    }

    #[cfg_attr(not(feature = "opcua"), allow(dead_code))]
    pub(crate) fn session_opened(&self) {
        self.sessions.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether the start-up history read is still to do.
    #[cfg_attr(not(feature = "opcua"), allow(dead_code))]
    pub(crate) fn history_pending(&self) -> bool {
        !self.history_done.load(Ordering::Relaxed)
    }

    /// The start-up history read completed (an interrupted one is redone on the next session:
    /// the receiver's store keeps each tag and source time once).
    #[cfg_attr(not(feature = "opcua"), allow(dead_code))]
    pub(crate) fn history_finished(&self) {
        self.history_done.store(true, Ordering::Relaxed);
    }

    fn error_lock(&self) -> std::sync::MutexGuard<'_, String> {
        // A poisoned lock still holds a valid string.
        self.last_error.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_reflects_counters_and_clears_error_on_success() {
        let h = Health::new();
        h.set_connected(true);
        h.poll_failed("exception 02");
        h.poll_failed("exception 02");
        let s = h.snapshot("plc1");
        assert_eq!(
            (s.name.as_str(), s.connected, s.polls_ok, s.polls_failed),
            ("plc1", true, 0, 2)
        );
        assert_eq!(s.last_error, "exception 02");
        h.poll_ok(Duration::from_millis(3));
        let s = h.snapshot("plc1");
        assert_eq!((s.polls_ok, s.last_error.as_str()), (1, ""));
        assert_eq!(h.last_latency(), Duration::from_millis(3));
    }
}
