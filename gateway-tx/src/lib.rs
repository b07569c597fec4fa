//! The OT-side daemon: sources poll the plant, the tag table keeps current values, and the link
//! sender pushes them one way across the diode.

pub mod daemon;
pub mod epoch;
pub mod history;
pub mod link;
pub mod link_stats;
pub mod modbus;
pub mod opcua;
pub mod pacer;
pub mod scheduler;
pub mod source;
pub mod status;
pub mod syslog;
pub mod tags;
pub mod udp;

pub use daemon::{ReloadSummary, Transmitter};

pub use observe::lifecycle::unix_now;
