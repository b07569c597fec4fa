//! One endpoint's task: connect, resolve the tags' node ids against the server's
//! NamespaceArray, read (subscription or polling) until the connection is lost, mark the tags
//! Bad, back off, and start over with a fresh session (subscriptions are recreated, never
//! transferred: namespace indexes may have moved).

use std::sync::Arc;
use std::time::Duration;

use config::opcua::{Identity, Mode, OpcUaEndpoint};
use opcua::client::{Client, Session, SessionPollResult};
use opcua::types::{AttributeId, NodeId, ReadValueId, StatusCode, TimestampsToReturn, Variant};
use protocol::model::{Quality, TagIndex, ValueType};
use tokio::sync::oneshot;

use super::{client, history_read, nodeid, poll, subscribe};
use crate::history::HistoryTap;
use crate::source::Health;
use crate::tags::{TagTable, Update};

const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// One tag of the endpoint as the readers see it.
#[derive(Debug, Clone)]
pub(crate) struct Item {
    pub tag: TagIndex,
    pub ty: ValueType,
    pub node: NodeId,
    /// Position in the endpoint's tag list.
    pub local: usize,
}

/// A connected session and the task that drives it. Dropping it (the endpoint task aborted
/// by a live reload or a shutdown) closes the session on the server, within a second, before
/// stopping the driver: servers have few sessions, and an abandoned one holds its slot until
/// it times out.
pub struct Connection {
    pub session: Arc<Session>,
    /// Resolves with the status code when the connection is lost.
    pub lost: oneshot::Receiver<StatusCode>,
    driver: Option<tokio::task::JoinHandle<()>>,
}

/// How long closing a dropped session may take.
const CLOSE_ON_DROP: Duration = Duration::from_secs(1);

impl Drop for Connection {
    fn drop(&mut self) {
        let Some(driver) = self.driver.take() else {
            return;
        };
        if driver.is_finished() {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                let session = self.session.clone();
                rt.spawn(async move {
                    let _ = tokio::time::timeout(CLOSE_ON_DROP, session.disconnect()).await;
                    driver.abort();
                });
            }
            Err(_) => driver.abort(),
        }
    }
}

/// Runs the endpoint until aborted. Its tags are `first..first + ep.tags.len()` of `table`.
pub async fn run_endpoint(
    ep: OpcUaEndpoint,
    first: TagIndex,
    table: Arc<TagTable>,
    health: Arc<Health>,
    history: Option<Arc<HistoryTap>>,
) {
    let mut client = match client::build(&ep) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(endpoint = %ep.name, error = %e, "OPC UA endpoint cannot start");
            health.poll_failed(&e.to_string());
            mark_all(&table, first, &ep, Quality::BAD_CONFIGURATION_ERROR);
            return;
        }
    };
    let identity = match client::identity(&ep) {
        Ok(i) => i,
        Err(e) => {
            tracing::error!(endpoint = %ep.name, error = %e, "OPC UA endpoint cannot start");
            health.poll_failed(&e.to_string());
            mark_all(&table, first, &ep, Quality::BAD_CONFIGURATION_ERROR);
            return;
        }
    };
    let historize = ep.tags.iter().any(|t| t.historize) && !ep.history_window.is_zero();
    if historize && history.is_none() && health.history_pending() {
        tracing::info!(
            endpoint = %ep.name,
            "historize tags but no [history] section: the start-up HistoryRead is skipped"
        );
    }
    let mut backoff = BACKOFF_MIN;
    loop {
        let started = std::time::Instant::now();
        let code = match connect(&mut client, &ep, identity.clone()).await {
            Ok(mut conn) => {
                health.session_opened();
                health.set_connected(true);
                tracing::info!(endpoint = %ep.name, url = %ep.url, "OPC UA session open");
                // Dropping `conn` closes the session if the server still has it.
                serve(&mut conn, &ep, first, &table, &health, history.as_ref()).await
            }
            Err(e) => {
                tracing::warn!(endpoint = %ep.name, url = %ep.url, error = %e, "OPC UA connection failed");
                health.poll_failed(&e);
                StatusCode::BadNotConnected
            }
        };
        health.set_connected(false);
        tracing::warn!(endpoint = %ep.name, status = %code, "OPC UA session lost; tags are Bad until it is back");
        mark_all(&table, first, &ep, Quality::BAD_NOT_CONNECTED);
        if started.elapsed() > BACKOFF_MAX {
            backoff = BACKOFF_MIN;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Opens a session, within the endpoint's timeout.
pub async fn connect(
    client: &mut Client,
    ep: &OpcUaEndpoint,
    identity: opcua::client::IdentityToken,
) -> Result<Connection, String> {
    let endpoint = tokio::time::timeout(ep.timeout, client::select_endpoint(client, ep))
        .await
        .map_err(|_| format!("no answer from {} within {:?}", ep.url, ep.timeout))??;
    let (session, event_loop) = client
        .connect_to_endpoint_directly(endpoint, identity)
        .map_err(|e| e.to_string())?;
    session.disable_reconnects();
    let (lost_tx, mut lost) = oneshot::channel();
    let driver = tokio::spawn(async move {
        use futures_util::StreamExt;
        let stream = event_loop.enter();
        tokio::pin!(stream);
        let code = loop {
            match stream.next().await {
                Some(Ok(SessionPollResult::ConnectionLost(c)))
                | Some(Ok(SessionPollResult::ReconnectFailed(c)))
                | Some(Err(c)) => break c,
                Some(Ok(_)) => {}
                None => break StatusCode::BadNotConnected,
            }
        };
        let _ = lost_tx.send(code);
    });
    let conn_driver = driver;
    tokio::select! {
        ok = session.wait_for_connection() => {
            if !ok {
                conn_driver.abort();
                return Err("the session could not be established".to_owned());
            }
        }
        code = &mut lost => {
            conn_driver.abort();
            return Err(refusal(ep, code.unwrap_or(StatusCode::BadNotConnected)));
        }
        _ = tokio::time::sleep(ep.timeout) => {
            conn_driver.abort();
            return Err(format!("no session with {} within {:?}", ep.url, ep.timeout));
        }
    }
    Ok(Connection {
        session,
        lost,
        driver: Some(conn_driver),
    })
}

/// Why the server ended the connection while the session was being opened. A refused
/// identity gets the identity and what to do: the code alone (the same for a wrong password
/// and an unknown user certificate) leaves the operator to guess which setting to check, and
/// "refused" alone reads like a TCP refusal.
fn refusal(ep: &OpcUaEndpoint, code: StatusCode) -> String {
    let identity_refused = matches!(
        code,
        StatusCode::BadIdentityTokenRejected
            | StatusCode::BadIdentityTokenInvalid
            | StatusCode::BadUserAccessDenied
            | StatusCode::BadUserSignatureInvalid
    );
    if !identity_refused {
        return format!("connection refused: {code}");
    }
    match &ep.identity {
        Identity::Anonymous => format!(
            "the server refused anonymous access ({code}); give `user` and `password_file`, or \
             `user_certificate` and `user_private_key`"
        ),
        Identity::UserName {
            user,
            password_file,
            ..
        } => format!(
            "the server refused user \"{user}\" ({code}); check the user name and the password \
             in {}",
            password_file.display()
        ),
        Identity::Certificate { cert, key } => format!(
            "the server refused the user certificate {} ({code}); the server's administrator \
             must accept that certificate for a user, and {} must be its private key",
            cert.display(),
            key.display()
        ),
    }
}

/// Reads the endpoint's tags over `conn` until the connection is lost; returns why.
async fn serve(
    conn: &mut Connection,
    ep: &OpcUaEndpoint,
    first: TagIndex,
    table: &Arc<TagTable>,
    health: &Arc<Health>,
    history: Option<&Arc<HistoryTap>>,
) -> StatusCode {
    let namespaces = match read_namespaces(&conn.session).await {
        Ok(n) => n,
        Err(code) => {
            health.poll_failed(&format!("reading the NamespaceArray: {code}"));
            return code;
        }
    };
    let now = crate::unix_now();
    let mut items = Vec::new();
    let mut unknown = Vec::new();
    for (i, t) in ep.tags.iter().enumerate() {
        let tag = first + i as TagIndex;
        match nodeid::resolve(&t.node, &namespaces) {
            Some(node) => items.push(Item {
                tag,
                ty: t.value_type,
                node,
                local: i,
            }),
            None => {
                tracing::warn!(endpoint = %ep.name, tag = %t.name, node = %t.node_text, "namespace URI not in the server's NamespaceArray");
                unknown.push(Update {
                    tag,
                    value: None,
                    quality: Quality::BAD_NODE_ID_UNKNOWN,
                    time: now,
                });
            }
        }
    }
    table.apply(unknown);

    let history_task = match history {
        Some(tap)
            if ep.tags.iter().any(|t| t.historize)
                && !ep.history_window.is_zero()
                && health.history_pending() =>
        {
            let session = conn.session.clone();
            let tap = tap.clone();
            let health = health.clone();
            let hist_items: Vec<Item> = items
                .iter()
                .filter(|it| ep.tags[it.local].historize)
                .cloned()
                .collect();
            let (window, per_request, name) = (
                ep.history_window,
                ep.history_values_per_request,
                ep.name.clone(),
            );
            Some(AbortOnDrop(tokio::spawn(async move {
                let (n, complete) =
                    history_read::read_window(&session, &hist_items, window, per_request, &tap)
                        .await;
                if complete {
                    health.history_finished();
                }
                tracing::info!(endpoint = %name, samples = n, complete, "start-up HistoryRead done");
            })))
        }
        _ => None,
    };

    let code = match ep.mode {
        Mode::Subscribe => subscribe::run(conn, ep, &items, table, health).await,
        Mode::Poll => poll::run(conn, ep, &items, table, health).await,
    };
    drop(history_task);
    code
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The server's NamespaceArray (index → URI).
pub(crate) async fn read_namespaces(session: &Session) -> Result<Vec<String>, StatusCode> {
    let read = ReadValueId {
        node_id: nodeid::namespace_array_node(),
        attribute_id: AttributeId::Value as u32,
        ..Default::default()
    };
    let values = session
        .read(&[read], TimestampsToReturn::Neither, 0.0)
        .await
        .map_err(|e| e.status())?;
    let Some(Variant::Array(a)) = values.into_iter().next().and_then(|dv| dv.value) else {
        return Err(StatusCode::BadUnexpectedError);
    };
    Ok(a.values
        .iter()
        .map(|v| match v {
            Variant::String(s) => s.as_ref().to_owned(),
            _ => String::new(),
        })
        .collect())
}

/// Nodes per Read and monitored items per CreateMonitoredItems when the server states no
/// smaller limit.
pub(crate) const PER_CALL_DEFAULT: usize = 1000;

/// The server's MaxNodesPerRead and MaxMonitoredItemsPerCall (OperationLimits), each at most
/// [`PER_CALL_DEFAULT`]; a limit the server does not state (or states as 0) is the default.
pub(crate) async fn operation_limits(session: &Session) -> (usize, usize) {
    use opcua::types::VariableId as V;
    let read = |id: V| ReadValueId {
        node_id: id.into(),
        attribute_id: AttributeId::Value as u32,
        ..Default::default()
    };
    let values = session
        .read(
            &[
                read(V::Server_ServerCapabilities_OperationLimits_MaxNodesPerRead),
                read(V::Server_ServerCapabilities_OperationLimits_MaxMonitoredItemsPerCall),
            ],
            TimestampsToReturn::Neither,
            0.0,
        )
        .await
        .unwrap_or_default();
    let limit = |i: usize| match values.get(i).and_then(|dv| dv.value.as_ref()) {
        Some(Variant::UInt32(n)) if *n > 0 => (*n as usize).min(PER_CALL_DEFAULT),
        _ => PER_CALL_DEFAULT,
    };
    (limit(0), limit(1))
}

/// Gives every tag of the endpoint `quality`, keeping its last value.
fn mark_all(table: &TagTable, first: TagIndex, ep: &OpcUaEndpoint, quality: Quality) {
    let now = crate::unix_now();
    table.apply((0..ep.tags.len()).map(|i| Update {
        tag: first + i as TagIndex,
        value: None,
        quality,
        time: now,
    }));
}
