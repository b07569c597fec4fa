//! What operators see of both daemons, in one place so the two sides look and behave alike:
//!
//! - [`http`]: a small read-only HTTP/1 server for `/metrics`, `/health`, `/api/status` and the
//!   status page (GET and HEAD only; bounded connections, request sizes and time).
//! - [`metrics`]: counters declared once (the atomics, their snapshot, and how they show in
//!   `/metrics`, `/api/status` and the status page), with [`counters!`] and [`family!`].
//! - [`prom`]: the Prometheus text exposition format, written directly from the daemons'
//!   counters at scrape time.
//! - [`page`]: the status page, rendered on the server from the same JSON that `/api/status`
//!   serves (so it reads without JavaScript), and updated once a second by an inline script.
//! - [`trend`]: a bounded ring of per-second samples for the charts.
//! - [`notify`]: systemd readiness, watchdog and stopping notifications.
//! - [`lifecycle`]: logging set-up, the wall clock, and running until a signal.
//!
//! The daemons own what is measured; this crate owns how it is served.

pub mod http;
pub mod lifecycle;
pub mod metrics;
pub mod notify;
pub mod page;
pub mod prom;
pub mod tags;
pub mod trend;

pub use http::{Health, Query, Site};

/// Milliseconds since the Unix epoch, for timestamps in the status JSON.
pub fn unix_ms() -> i64 {
    match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(_) => 0,
    }
}
