//! The IT-side daemon: link receiver, current-value state and the sinks that serve it.

pub mod daemon;
pub mod link;
pub mod link_state;
pub mod link_stats;
pub mod modbus_server;
pub mod opcua;
pub mod sinks;
pub mod state;
pub mod status;
pub mod store;
pub mod syslog;
pub mod udp;

pub use daemon::Receiver;

pub use observe::lifecycle::unix_now;
