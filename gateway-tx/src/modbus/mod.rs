//! The Modbus TCP source: request planning, the per-device poller, and the device as a
//! [`crate::source::Source`].

pub mod plan;
pub mod poller;
pub mod source;

pub use poller::{run_device, run_device_with};
