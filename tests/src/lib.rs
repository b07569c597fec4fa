//! Shared pieces of the end-to-end tests and the demo: the simulated PLC and the impairment relay.
pub mod plc_sim;
pub mod relay;
