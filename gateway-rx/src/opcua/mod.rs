//! The read-only OPC UA mirror: the plant's tags, as the receiver learnt them over the link,
//! served to OPC UA clients on the IT side (async-opcua's server with our own node manager).
//!
//! # Address space
//!
//! Under Objects, a folder per tag path segment and a variable per tag:
//! `site/area/pump3/speed` is the variable `ns=<mirror>;s=site/area/pump3/speed` in the folders
//! `site`, `area`, `pump3`, where `<mirror>` is the index of the configured namespace URI.
//! A variable has the tag's value type as its DataType (the OPC UA built-in of the same name),
//! its description as Description, and an EngineeringUnits property (EUInformation whose
//! displayName is the unit) when the tag has a unit. AccessLevel and UserAccessLevel are
//! CurrentRead, plus HistoryRead when the embedded store is on. The address space follows the
//! catalogue while the server runs: new tags appear, removed ones disappear (their node ids
//! then answer BadNodeIdUnknown), a tag whose type, unit or description changed is rebuilt
//! under the same node id. See `address_space`.
//!
//! # Values
//!
//! A Read or a data change serves the receiver's current value (`state`, same rules as the
//! Modbus mirror):
//! - the value, the plant's StatusCode unchanged (`Quality` is the raw code), the plant's source
//!   timestamp (to the nanosecond: the picoseconds field carries what DateTime's 100 ns cannot),
//!   and as server timestamp the time the receiver applied the sample;
//! - while the link is down, and after a new transmitter session or an outage until the tag is
//!   received again, a value whose code is Good or Uncertain is served with
//!   UncertainNoCommunicationLastUsableValue (0x408F0000); a Bad code stays as it is;
//! - a tag that never received a value answers BadWaitingForInitialData, with no value.
//!
//! An index range on a tag's value answers BadIndexRangeNoData (values are scalars); maxAge is
//! ignored (the value is always the latest received).
//!
//! # Subscriptions
//!
//! A task drains the state's change feed (`State::take_changes`) at most every
//! [`FEED_INTERVAL`] and hands the changed tags to async-opcua's subscription cache, which
//! samples only tags that have monitored items. Between two drains a tag is listed once and
//! its latest value is what subscribers get (latest wins; the monitored items' queues and
//! filters then apply as OPC UA says). Link down, link up and a new session re-publish every
//! tag, so subscribers see the Uncertain quality, and Good again once values arrive. A tag
//! removed from the catalogue gets a last notification with BadNodeIdUnknown.
//!
//! # Read-only
//!
//! Write answers BadNotWritable (BadNodeIdUnknown for an unknown node); Call BadMethodInvalid
//! (the mirror has no methods); AddNodes, AddReferences, DeleteNodes and DeleteReferences
//! BadUserAccessDenied; HistoryUpdate BadHistoryOperationUnsupported. Each is counted. Nothing
//! here touches the link socket.
//!
//! # History
//!
//! HistoryRead raw, from the embedded store: see `history`.

#[cfg(all(feature = "opcua", not(feature = "fuzzing")))]
mod address_space;
/// Public for the fuzz target of the catalogue's layout as nodes.
#[cfg(all(feature = "opcua", feature = "fuzzing"))]
pub mod address_space;
#[cfg(feature = "opcua")]
pub mod convert;
#[cfg(not(feature = "opcua"))]
mod disabled;
#[cfg(feature = "opcua")]
pub mod history;
#[cfg(feature = "opcua")]
mod node_manager;

#[cfg(feature = "opcua")]
use std::net::SocketAddr;
#[cfg(feature = "opcua")]
use std::path::PathBuf;
#[cfg(feature = "opcua")]
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
#[cfg(feature = "opcua")]
use std::sync::atomic::Ordering;
use std::time::Duration;

#[cfg(feature = "opcua")]
use anyhow::Context;
#[cfg(feature = "opcua")]
use config::opcua_server::{OpcUaServer, SecurityMode, SecurityPolicy};
#[cfg(feature = "opcua")]
use opcua::server::node_manager::memory::InMemoryNodeManagerBuilder;
#[cfg(feature = "opcua")]
use opcua::server::{
    ANONYMOUS_USER_TOKEN_ID, ServerBuilder, ServerEndpoint, ServerHandle, ServerInfo,
    ServerUserToken, SubscriptionCache,
};
#[cfg(feature = "opcua")]
use opcua::types::{
    AttributeId, DataValue, MessageSecurityMode, StatusCode, TimestampsToReturn, VariableId,
    Variant,
};
#[cfg(feature = "opcua")]
use tokio::task::JoinHandle;
#[cfg(feature = "opcua")]
use tracing::{error, info, warn};

#[cfg(feature = "opcua")]
use crate::state::State;
#[cfg(feature = "opcua")]
use address_space::Layout;
#[cfg(not(feature = "opcua"))]
pub use disabled::{OpcUaMirror, OpcUaMonitor};
#[cfg(feature = "opcua")]
pub use node_manager::{MirrorNodeManager, MirrorNodes};

/// The change feed is drained at most this often, and subscriptions tick as often: a subscriber
/// waits about this long on average for a change (plus its publishing interval).
pub const FEED_INTERVAL: Duration = Duration::from_millis(5);

/// Notifications in one Publish response at most, whatever the client asks: keeps a response
/// for thousands of monitored items within message size limits (10,000 values in one
/// response never reached async-opcua's client).
pub const MAX_NOTIFICATIONS_PER_PUBLISH: u64 = 1000;

/// Counters of the OPC UA mirror since it started.
#[derive(Debug, Default)]
pub struct OpcUaCounters {
    /// Values read (Read service, and the first value of each new monitored item).
    pub reads: AtomicU64,
    pub writes_refused: AtomicU64,
    pub calls_refused: AtomicU64,
    /// AddNodes, AddReferences, DeleteNodes, DeleteReferences items refused.
    pub node_management_refused: AtomicU64,
    /// Nodes in HistoryRead requests.
    pub history_reads: AtomicU64,
    pub history_values: AtomicU64,
    /// Tags handed to the subscriptions after a change (each may reach several monitored
    /// items, or none).
    pub data_changes: AtomicU64,
    pub catalogue_syncs: AtomicU64,
    /// Tags whose name cannot be laid out as nodes.
    pub tags_not_served: AtomicU64,
}

#[cfg(feature = "opcua")]
/// What the status page reads of a running mirror.
#[derive(Clone)]
pub struct OpcUaMonitor {
    pub counters: Arc<OpcUaCounters>,
    info: Arc<ServerInfo>,
    pub endpoint_url: String,
}

#[cfg(feature = "opcua")]
impl OpcUaMonitor {
    fn summary(&self, id: VariableId) -> u64 {
        match self.info.diagnostics.summary.get(id) {
            Some(DataValue {
                value: Some(Variant::UInt32(n)),
                ..
            }) => u64::from(n),
            _ => 0,
        }
    }

    /// Sessions open now.
    pub fn sessions(&self) -> u64 {
        self.summary(
            VariableId::Server_ServerDiagnostics_ServerDiagnosticsSummary_CurrentSessionCount,
        )
    }

    /// Subscriptions open now.
    pub fn subscriptions(&self) -> u64 {
        self.summary(
            VariableId::Server_ServerDiagnostics_ServerDiagnosticsSummary_CurrentSubscriptionCount,
        )
    }
}

#[cfg(feature = "opcua")]
/// A running OPC UA mirror. Dropping it stops the server.
pub struct OpcUaMirror {
    /// The address the server listens on (the real port when the config said 0).
    pub addr: SocketAddr,
    pub endpoint_url: String,
    pub monitor: OpcUaMonitor,
    handle: ServerHandle,
    tasks: Vec<JoinHandle<()>>,
}

#[cfg(feature = "opcua")]
fn policy(p: SecurityPolicy) -> opcua::crypto::SecurityPolicy {
    match p {
        SecurityPolicy::None => opcua::crypto::SecurityPolicy::None,
        SecurityPolicy::Basic256Sha256 => opcua::crypto::SecurityPolicy::Basic256Sha256,
        SecurityPolicy::Aes128Sha256RsaOaep => opcua::crypto::SecurityPolicy::Aes128Sha256RsaOaep,
    }
}

#[cfg(feature = "opcua")]
fn mode(m: SecurityMode) -> MessageSecurityMode {
    match m {
        SecurityMode::None => MessageSecurityMode::None,
        SecurityMode::Sign => MessageSecurityMode::Sign,
        SecurityMode::SignAndEncrypt => MessageSecurityMode::SignAndEncrypt,
    }
}

#[cfg(feature = "opcua")]
impl OpcUaMirror {
    /// Binds and starts the server. `store`: the embedded store's database, for HistoryRead
    /// (`None`: the store is off, variables are not history-readable).
    pub async fn start(
        config: &OpcUaServer,
        state: Arc<State>,
        store: Option<PathBuf>,
    ) -> anyhow::Result<OpcUaMirror> {
        std::fs::create_dir_all(&config.pki_dir).with_context(|| {
            format!(
                "creating the OPC UA PKI directory {}",
                config.pki_dir.display()
            )
        })?;
        let listener = tokio::net::TcpListener::bind(config.bind)
            .await
            .with_context(|| format!("binding the OPC UA mirror to {}", config.bind))?;
        let addr = listener.local_addr()?;
        // Endpoint descriptions need a name clients can reach; for a wildcard bind, the host's.
        let host = if addr.ip().is_unspecified() {
            opcua::crypto::X509Data::computer_hostnames()
                .into_iter()
                .next()
                .unwrap_or_else(|| "localhost".to_owned())
        } else {
            addr.ip().to_string()
        };
        let url_host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.clone()
        };
        let endpoint_url = format!("opc.tcp://{url_host}:{}/", addr.port());

        let mut token_ids: Vec<String> = Vec::new();
        if config.anonymous {
            token_ids.push(ANONYMOUS_USER_TOKEN_ID.to_owned());
        }
        let counters = Arc::new(OpcUaCounters::default());
        let history = store.map(|p| Arc::new(history::HistoryReader::new(p)));
        let nm_state = state.clone();
        let nm_counters = counters.clone();
        let uri = config.namespace_uri.clone();
        let mut builder = ServerBuilder::new()
            .application_name(config.application_name.clone())
            .application_uri(config.application_uri.clone())
            .product_uri(config.application_uri.clone())
            .create_sample_keypair(true)
            .certificate_path("own/cert.der")
            .private_key_path("private/private.pem")
            .pki_dir(config.pki_dir.clone())
            .trust_client_certs(config.insecure_trust_any_client_certificate)
            .host(host)
            .port(addr.port())
            .discovery_urls(vec![endpoint_url.clone()])
            .diagnostics_enabled(true)
            // async-opcua ticks subscriptions every 100 ms by default, which floors a
            // subscriber's latency at about that; the mirror hands changes over every
            // FEED_INTERVAL, so its subscriptions tick as often.
            .subscription_poll_interval_ms(FEED_INTERVAL.as_millis() as u64)
            .max_sessions(config.max_sessions)
            .max_history_continuation_points(config.max_history_continuation_points)
            .with_node_manager(InMemoryNodeManagerBuilder::new(
                move |ctx, space: &mut _| {
                    MirrorNodes::new(&ctx, space, &uri, nm_state, history, nm_counters)
                },
            ));
        for user in &config.users {
            let id = format!("user:{}", user.name);
            builder = builder.add_user_token(
                &id,
                ServerUserToken::user_pass(user.name.as_str(), user.password.expose()),
            );
            token_ids.push(id);
        }
        for e in &config.endpoints {
            // On policy None a password would cross the network in the clear: anonymous only.
            let tokens: &[String] = if e.policy == SecurityPolicy::None {
                &token_ids[..usize::from(config.anonymous)]
            } else {
                &token_ids
            };
            if tokens.is_empty() {
                warn!(
                    policy = e.policy.uri_name(),
                    "OPC UA endpoint not offered: no login is allowed on it (anonymous is off, \
                     and users log in on secure endpoints only)"
                );
                continue;
            }
            let id = format!("{}_{}", e.policy.uri_name(), e.mode.uri_name());
            builder = builder.add_endpoint(
                id,
                ServerEndpoint::new("/", policy(e.policy), mode(e.mode), tokens),
            );
        }
        let limits = builder.limits_mut();
        limits.subscriptions.max_subscriptions_per_session = config.max_subscriptions_per_session;
        limits.subscriptions.max_monitored_items_per_sub =
            config.max_monitored_items_per_subscription;
        limits.subscriptions.max_notifications_per_publish = MAX_NOTIFICATIONS_PER_PUBLISH;
        // A sampling interval of 0 (report every change as it comes) is kept, not raised to
        // the library's 100 ms: values are pushed by the feed, not sampled, and a non-zero
        // interval would hold back (and re-time) a change that follows another within it.
        limits.subscriptions.min_sampling_interval_ms = 0.0;
        limits.subscriptions.min_publishing_interval_ms = FEED_INTERVAL.as_secs_f64() * 1000.0;

        let (server, handle) = builder
            .build()
            .map_err(|e| anyhow::anyhow!("the OPC UA mirror's configuration: {e}"))?;
        let nm = handle
            .node_managers()
            .get_of_type::<MirrorNodeManager>()
            .context("the OPC UA mirror's node manager is missing")?;
        let monitor = OpcUaMonitor {
            counters: counters.clone(),
            info: handle.info().clone(),
            endpoint_url: endpoint_url.clone(),
        };
        let mut tasks = Vec::new();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = server.run_with(listener).await {
                error!(error = %e, "OPC UA mirror stopped");
            }
        }));
        tasks.push(tokio::spawn(feed(
            state,
            nm,
            handle.subscriptions().clone(),
            counters,
        )));
        info!(endpoint = %endpoint_url, pki = %config.pki_dir.display(), "OPC UA mirror listening");
        Ok(OpcUaMirror {
            addr,
            endpoint_url,
            monitor,
            handle,
            tasks,
        })
    }

    pub fn handle(&self) -> &ServerHandle {
        &self.handle
    }
}

#[cfg(feature = "opcua")]
impl Drop for OpcUaMirror {
    fn drop(&mut self) {
        self.handle.cancel();
        for t in &self.tasks {
            t.abort();
        }
    }
}

#[cfg(feature = "opcua")]
/// Keeps the address space in step with the catalogue and pushes changed values to the
/// subscriptions (see the module doc).
async fn feed(
    state: Arc<State>,
    nm: Arc<MirrorNodeManager>,
    subscriptions: Arc<SubscriptionCache>,
    counters: Arc<OpcUaCounters>,
) {
    let ns = nm.inner().namespace_index();
    let history = nm.inner().history_enabled();
    state.enable_change_feed();
    let mut layout = Layout::default();
    let mut buffer = Vec::new();
    loop {
        state.changed().await;
        let changes = state.take_changes(buffer);
        if changes.catalogue
            && let Some(catalogue) = state.catalogue()
        {
            let out = {
                let mut space = nm.address_space().write();
                layout.sync(&mut space, ns, &catalogue, history)
            };
            counters.catalogue_syncs.fetch_add(1, Ordering::Relaxed);
            counters
                .tags_not_served
                .store(out.skipped as u64, Ordering::Relaxed);
            info!(
                tags = catalogue.len(),
                added = out.added,
                removed = out.removed.len(),
                rebuilt = out.rebuilt,
                not_served = out.skipped,
                "OPC UA mirror: address space follows the new catalogue"
            );
            let gone = DataValue {
                status: Some(StatusCode::BadNodeIdUnknown),
                server_timestamp: Some(opcua::types::DateTime::now()),
                ..DataValue::null()
            };
            subscriptions.notify_data_change(
                out.removed
                    .iter()
                    .map(|id| (gone.clone(), id, AttributeId::Value)),
            );
        }
        let notified = {
            // The state is locked per sampled item, not across the whole hand-over: the link
            // task keeps writing meanwhile, and the lock order stays subscription cache, then
            // state (nothing takes them the other way round).
            let sample = |id: &opcua::types::NodeId,
                          attribute: AttributeId,
                          range: &opcua::types::NumericRange,
                          _: &opcua::types::DataEncoding| {
                if attribute != AttributeId::Value {
                    return None;
                }
                let opcua::types::Identifier::String(name) = &id.identifier else {
                    return None;
                };
                let view = state.view();
                node_manager::served_value(&view, name.as_ref(), range, TimestampsToReturn::Both)
            };
            if changes.all || changes.catalogue {
                let ids: Vec<_> = layout
                    .node_ids()
                    .map(|id| (id, AttributeId::Value))
                    .collect();
                let n = ids.len();
                subscriptions.maybe_notify(ids.into_iter(), sample);
                n
            } else {
                let ids = changes
                    .tags
                    .iter()
                    .filter_map(|&t| layout.node_id(t as usize))
                    .map(|id| (id, AttributeId::Value));
                subscriptions.maybe_notify(ids, sample);
                changes.tags.len()
            }
        };
        counters
            .data_changes
            .fetch_add(notified as u64, Ordering::Relaxed);
        buffer = changes.tags;
        tokio::time::sleep(FEED_INTERVAL).await;
    }
}
