//! The OT-side daemon: sources poll the plant, the tag table keeps current values, and the link
//! sender pushes them one way across the diode.

pub mod daemon;
pub mod history;
pub mod link;
pub mod modbus;
pub mod pacer;
pub mod status;
pub mod tags;
pub mod udp;

pub use daemon::Transmitter;

/// Wall-clock time as the data model stores it. Daemons read clocks; the protocol never does.
pub fn unix_now() -> protocol::model::UnixNanos {
    let now = std::time::SystemTime::now();
    match now.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_nanos()).unwrap_or(i64::MAX),
    }
}
