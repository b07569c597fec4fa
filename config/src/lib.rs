//! Configuration of both daemons: TOML schemas, validation, and error reports that point at the
//! file, line, column and key.
//!
//! [`tx::TxConfig::load`] and [`rx::RxConfig::load`] read and validate a file; every problem
//! found is reported as a [`Diagnostic`] (`file:line:column: key `a.b`: what is wrong; what
//! would be valid`), all of them at once, in file order. The schemas are documented in this
//! crate's README.md.

mod common;
mod error;
mod http;
pub mod keyfile;
mod walk;

pub mod nats;
pub mod opcua;
pub mod opcua_server;
pub mod rx;
pub mod sinks;
pub mod syslog_rx;
pub mod timefmt;
pub mod tx;

pub use error::{ConfigError, Diagnostic};
pub use http::HttpServer;
