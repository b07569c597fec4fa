//! The IT-side daemon: link receiver, current-value state and the sinks that serve it.

pub mod daemon;
pub mod link;
pub mod modbus_server;
pub mod state;
pub mod status;
pub mod store;
pub mod udp;

pub use daemon::Receiver;

/// Wall-clock time as the data model stores it. Daemons read clocks; the protocol never does.
pub fn unix_now() -> protocol::model::UnixNanos {
    let now = std::time::SystemTime::now();
    match now.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_nanos()).unwrap_or(i64::MAX),
    }
}
