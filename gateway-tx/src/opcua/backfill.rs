//! Backfills from the endpoint's historian: operator requests (`gateway-tx backfill`) for
//! ranges the transmitter's buffer does not hold are read with HistoryRead on a session of
//! their own, so a long read never delays the subscriptions' publishing on the live session.
//! The session is opened for a request and closed after it: servers have few sessions.

use std::sync::Arc;
use std::time::Duration;

use config::opcua::OpcUaEndpoint;
use opcua::client::Client;
use tokio::sync::mpsc::UnboundedReceiver;

use super::endpoint::{self, Item};
use super::{client, history_read, nodeid};
use crate::history::HistoryTap;
use crate::history::historian::HistorianRead;

/// Attempts per request when the connection fails or drops, and the pause between them.
const ATTEMPTS: u32 = 3;
const RETRY_PAUSE: Duration = Duration::from_secs(2);

/// The `historize` tags of `ep` (positions in its tag list), in the order the historian
/// registry is given their names.
pub fn historized(ep: &OpcUaEndpoint) -> Vec<usize> {
    ep.tags
        .iter()
        .enumerate()
        .filter(|(_, t)| t.historize)
        .map(|(i, _)| i)
        .collect()
}

/// Serves the endpoint's backfill reads until the registry drops its queue (or the task is
/// aborted by a live reload, which fails the read in progress). The endpoint's tags are
/// `first..` of the catalogue.
pub async fn run(
    ep: OpcUaEndpoint,
    first: protocol::model::TagIndex,
    mut reads: UnboundedReceiver<HistorianRead>,
    tap: Arc<HistoryTap>,
) {
    let historized = historized(&ep);
    let mut client = None;
    while let Some(read) = reads.recv().await {
        read.progress.running();
        let c = match client.take() {
            Some(c) => c,
            None => match client::build(&ep) {
                Ok(c) => c,
                Err(e) => {
                    read.progress.fail(e.to_string());
                    continue;
                }
            },
        };
        let c = client.insert(c);
        serve(c, &ep, first, &historized, &read, &tap).await;
    }
}

async fn serve(
    client: &mut Client,
    ep: &OpcUaEndpoint,
    first: protocol::model::TagIndex,
    historized: &[usize],
    read: &HistorianRead,
    tap: &HistoryTap,
) {
    let identity = match client::identity(ep) {
        Ok(i) => i,
        Err(e) => {
            read.progress.fail(e.to_string());
            return;
        }
    };
    let locals: Vec<usize> = read
        .tags
        .iter()
        .filter_map(|&p| historized.get(p).copied())
        .collect();
    let mut last_error = String::new();
    for attempt in 1..=ATTEMPTS {
        if attempt > 1 {
            tokio::time::sleep(RETRY_PAUSE).await;
        }
        let conn = match endpoint::connect(client, ep, identity.clone()).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(endpoint = %ep.name, request = read.request, attempt, error = %e, "backfill session failed");
                last_error = e;
                continue;
            }
        };
        let namespaces = match endpoint::read_namespaces(&conn.session).await {
            Ok(n) => n,
            Err(code) => {
                last_error = format!("reading the NamespaceArray: {code}");
                continue;
            }
        };
        let mut unknown = Vec::new();
        let items: Vec<Item> = locals
            .iter()
            .filter_map(|&local| {
                let t = &ep.tags[local];
                let node = nodeid::resolve(&t.node, &namespaces);
                if node.is_none() {
                    unknown.push(t.name.clone());
                }
                Some(Item {
                    tag: first + u32::try_from(local).ok()?,
                    ty: t.value_type,
                    node: node?,
                    local,
                })
            })
            .collect();
        tracing::info!(endpoint = %ep.name, request = read.request, nodes = items.len(), from = read.from, to = read.to, "backfill from the historian");
        let progress = read.progress.clone();
        let r = history_read::read_range(
            &conn.session,
            &items,
            read.from,
            read.to,
            ep.history_values_per_request,
            tap,
            &move |n| progress.add_values(n),
        )
        .await;
        drop(conn);
        if !r.complete {
            // Values already read are kept: the receiver stores each (tag, time) once, so
            // the next attempt re-reading them costs link bytes only.
            last_error = r.error.unwrap_or_else(|| "the read stopped early".into());
            continue;
        }
        let mut message = format!(
            "{} values from {} nodes",
            read.progress.values(),
            items.len()
        );
        if !unknown.is_empty() {
            message += &format!("; namespace not on the server for: {}", unknown.join(", "));
        }
        if !r.refused.is_empty() {
            let refused: Vec<String> = r
                .refused
                .iter()
                .map(|(node, code)| format!("{node} ({code})"))
                .collect();
            message += &format!("; refused: {}", refused.join(", "));
            read.progress.fail(message);
        } else if !unknown.is_empty() {
            read.progress.fail(message);
        } else {
            read.progress.done(message);
        }
        tracing::info!(endpoint = %ep.name, request = read.request, values = read.progress.values(), "backfill from the historian finished");
        return;
    }
    read.progress.fail(format!(
        "no complete read after {ATTEMPTS} attempts: {last_error}"
    ));
}
