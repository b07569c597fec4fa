//! An `[[opcua]]` endpoint as a source: its tags in the catalogue, its task (and, with
//! `[history]` and `historize` tags, the task serving backfills from its historian), and what
//! the status shows of it. Built without the cargo feature `opcua`, a config with endpoints is
//! refused rather than silently not read.

use config::tx::TxConfig;
use observe::prom::Exposition;

use crate::source::{Built, Kind, Placed, View};

pub static KIND: Kind = Kind {
    name: "opcua",
    build,
    view: View {
        key: "opcua",
        title: "OPC UA endpoints (read-only)",
        columns: &[
            "endpoint",
            "url",
            "state",
            "reconnects",
            "values",
            "failures",
            "last error",
        ],
        empty: "no OPC UA endpoints configured",
        all_down: "OPC UA endpoints are down (no session)",
        up_fact: None,
        metrics,
    },
};

#[cfg(feature = "opcua")]
fn build(config: &TxConfig) -> Built {
    Ok(config
        .opcua
        .iter()
        .map(|ep| Box::new(enabled::Endpoint(ep.clone())) as Box<dyn crate::source::Source>)
        .collect())
}

#[cfg(not(feature = "opcua"))]
fn build(config: &TxConfig) -> Built {
    anyhow::ensure!(
        config.opcua.is_empty(),
        "the config has [[opcua]] endpoints, but this gateway-tx was built without OPC UA \
         (cargo feature `opcua`)"
    );
    Ok(Vec::new())
}

#[cfg(feature = "opcua")]
mod enabled {
    use config::opcua::{DeadbandType, OpcUaEndpoint};
    use protocol::model::{SourceAddress, TagInfo};
    use serde_json::{Value as Json, json};
    use tokio::task::JoinHandle;

    use crate::source::{Health, On, Source, Tag};

    pub(super) struct Endpoint(pub OpcUaEndpoint);

    impl Source for Endpoint {
        fn name(&self) -> &str {
            &self.0.name
        }

        fn tags(&self) -> Vec<Tag> {
            let ep = &self.0;
            ep.tags
                .iter()
                .map(|tag| Tag {
                    info: TagInfo {
                        name: tag.name.clone(),
                        value_type: tag.value_type,
                        unit: tag.unit.clone(),
                        description: tag.description.clone(),
                        source: SourceAddress::OpcUa {
                            endpoint: ep.name.clone(),
                            node_id: tag.node_text.clone(),
                        },
                    },
                    // A percent deadband needs the variable's EURange: the server applies it.
                    deadband: match tag.deadband_type {
                        DeadbandType::Absolute => tag.deadband,
                        DeadbandType::Percent => 0.0,
                    },
                })
                .collect()
        }

        /// The endpoint's task; with a history and historized tags, also the task serving
        /// backfills from its historian. An endpoint whose health was carried over by a live
        /// reload does not repeat its start-up HistoryRead.
        fn start(&self, on: &On<'_>) -> Vec<JoinHandle<()>> {
            let ep = &self.0;
            let mut tasks = vec![tokio::spawn(crate::opcua::run_endpoint(
                ep.clone(),
                on.first,
                on.table.clone(),
                on.health.clone(),
                on.history.map(|h| h.tap()),
            ))];
            if let Some(h) = on.history {
                let historized = crate::opcua::backfill::historized(ep);
                if !historized.is_empty() {
                    let names = historized
                        .iter()
                        .map(|&i| ep.tags[i].name.clone())
                        .collect();
                    let reads = h.serve_backfills(&ep.name, names);
                    tasks.push(tokio::spawn(crate::opcua::backfill::run(
                        ep.clone(),
                        on.first,
                        reads,
                        h.tap(),
                    )));
                }
            }
            tasks
        }

        fn status(&self, h: &Health) -> Json {
            let ep = &self.0;
            json!({
                "name": ep.name,
                "url": ep.url,
                "mode": format!("{:?}", ep.mode).to_lowercase(),
                "tags": ep.tags.len(),
                "connected": h.connected(),
                "reconnects": h.reconnects(),
                "values": h.polls_ok(),
                "failures": h.polls_failed(),
                "last_error": h.last_error(),
            })
        }

        fn row(&self, h: &Health) -> Json {
            let ep = &self.0;
            let connected = h.connected();
            let error = h.last_error();
            json!([
                ep.name,
                ep.url,
                { "text": if connected { "up" } else { "down" },
                  "tone": if connected { "good" } else { "bad" } },
                h.reconnects(),
                h.polls_ok(),
                { "text": h.polls_failed(),
                  "tone": if h.polls_failed() > 0 { "warn" } else { "" } },
                { "tone": if error.is_empty() { "" } else { "bad" },
                  "text": if error.is_empty() { "\u{2013}".to_owned() } else { error } },
            ])
        }
    }
}

fn metrics(e: &mut Exposition, endpoints: &[&Placed]) {
    e.labelled(
        "gateway_tx_opcua_up",
        "gauge",
        "1 while the OPC UA endpoint's session is open.",
        "endpoint",
        endpoints.iter().map(|x| (x.name(), x.health.connected())),
    );
    e.labelled(
        "gateway_tx_opcua_reconnects_total",
        "counter",
        "Sessions opened to the OPC UA endpoint after the first.",
        "endpoint",
        endpoints.iter().map(|x| (x.name(), x.health.reconnects())),
    );
    e.labelled(
        "gateway_tx_opcua_values_total",
        "counter",
        "Data changes received (subscription) or Read rounds done (poll) per endpoint.",
        "endpoint",
        endpoints.iter().map(|x| (x.name(), x.health.polls_ok())),
    );
    e.labelled(
        "gateway_tx_opcua_failures_total",
        "counter",
        "Failed connections, service calls and refused monitored items per endpoint.",
        "endpoint",
        endpoints
            .iter()
            .map(|x| (x.name(), x.health.polls_failed())),
    );
}
