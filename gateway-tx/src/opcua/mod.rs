//! The OPC UA source: one task per `[[opcua]]` endpoint keeps a session to its server, reads
//! the endpoint's tags by subscription (or polled Read) into the tag table, and at start reads
//! the recent history of `historize` tags into the history stream. Only Browse, Read,
//! HistoryRead and the session and subscription services are ever called: never Write, Call,
//! node management or HistoryUpdate (read-only towards the plant: see THREATS.md).

#[cfg(feature = "opcua")]
pub mod backfill;
#[cfg(feature = "opcua")]
pub mod browse;
#[cfg(feature = "opcua")]
pub mod client;
#[cfg(feature = "opcua")]
pub mod convert;
#[cfg(feature = "opcua")]
pub mod endpoint;
#[cfg(feature = "opcua")]
pub mod history_read;
#[cfg(feature = "opcua")]
pub mod nodeid;
#[cfg(feature = "opcua")]
mod poll;
pub mod source;
#[cfg(feature = "opcua")]
mod subscribe;

#[cfg(feature = "opcua")]
pub use endpoint::run_endpoint;
