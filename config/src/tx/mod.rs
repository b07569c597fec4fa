//! The transmitter's configuration, as the rest of the program sees it once validated: the
//! `[link]` (with its `[link.fec]`), the `[[modbus]]` devices, the `[[opcua]]` servers, `[http]`
//! and `[history]`. Each table's types and walker live in their own module; this one walks the
//! document and assembles them.

mod history;
pub mod limits;
mod link;
mod modbus;
mod syslog;

use std::collections::HashMap;
use std::path::Path;

pub use crate::http::HttpServer;
pub use history::History;
pub use link::{FecShape, TxLink};
pub use modbus::{ModbusDevice, ModbusTag};
pub use syslog::Syslog;

use crate::common;
use crate::error::ConfigError;
use crate::walk::{Ctx, Req, Tbl};

/// Validated `gateway-tx` configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct TxConfig {
    pub link: TxLink,
    pub devices: Vec<ModbusDevice>,
    /// `[[opcua]]`: OPC UA servers read by subscription or polling, in file order (their tags
    /// follow the Modbus tags in the catalogue).
    pub opcua: Vec<crate::opcua::OpcUaEndpoint>,
    /// `[http]`: the operators' HTTP server (metrics, health, status page); `None`: off.
    pub http: Option<HttpServer>,
    /// `[history]`: the history stream and its on-disk buffer; `None` when the table is absent
    /// (the transmitter then sends live values only).
    pub history: Option<History>,
    /// `[syslog]`: syslog listeners whose messages go across the diode; `None`: off.
    pub syslog: Option<Syslog>,
    /// SHA-256 (first 8 bytes, big-endian) of the file's bytes; sent in heartbeats.
    pub config_hash: u64,
}

impl TxConfig {
    /// Reads and validates a `gateway-tx` config file.
    pub fn load(path: &Path) -> Result<TxConfig, ConfigError> {
        let text = common::read_config(path)?;
        TxConfig::parse(&text, path)
    }

    /// Validates config text. `path` names the file in messages, and a relative `key_file`
    /// is resolved against its directory.
    pub fn parse(text: &str, path: &Path) -> Result<TxConfig, ConfigError> {
        let mut ctx = Ctx::new(text, path);
        let config = ctx.parse_document(text).and_then(|doc| {
            let root = Tbl::root(&doc);
            root.check_keys(
                &mut ctx,
                &["link", "modbus", "opcua", "http", "history", "syslog"],
            );
            let link = root
                .table(
                    &mut ctx,
                    "link",
                    Req::Required(
                        "add a [link] section with at least destination = \"192.0.2.10:5600\"",
                    ),
                )
                .and_then(|l| link::parse_link(&mut ctx, &l));
            let mut device_names = HashMap::new();
            let mut tag_names = HashMap::new();
            let devices = modbus::parse_devices(&mut ctx, &root, &mut device_names, &mut tag_names);
            let opcua =
                crate::opcua::parse_endpoints(&mut ctx, &root, &mut device_names, &mut tag_names);
            let http = crate::http::parse_optional(
                &mut ctx,
                &root,
                link.as_ref().map(|l| l.bind.ip()),
                "127.0.0.1:9100",
            );
            let history = match root.table(&mut ctx, "history", Req::Optional) {
                Some(t) => history::parse_history(&mut ctx, &t).map(Some),
                None if root.has("history") => None,
                None => Some(None),
            };
            let syslog = match root.table(&mut ctx, "syslog", Req::Optional) {
                Some(t) => syslog::parse_syslog(&mut ctx, &t).map(Some),
                None if root.has("syslog") => None,
                None => Some(None),
            };
            Some(TxConfig {
                link: link?,
                devices: devices?,
                opcua: opcua?,
                http: http?,
                history: history?,
                syslog: syslog?,
                config_hash: common::config_hash(text),
            })
        });
        ctx.finish(config)
    }
}
