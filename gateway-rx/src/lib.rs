//! The IT-side daemon: link receiver, current-value state and the sinks that serve it.

pub mod modbus_server;
pub mod state;
