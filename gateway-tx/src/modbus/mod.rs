//! The Modbus TCP source: request planning, the per-device poller and its health counters.

pub mod health;
pub mod plan;
pub mod poller;

pub use health::DeviceHealth;
pub use poller::{run_device, run_device_with};
