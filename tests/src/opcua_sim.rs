//! A simulated OPC UA server acting as the plant's source, in process (async-opcua server).
//!
//! - A namespace with a configurable URI, registered after an extra namespace so that its
//!   index is not the one a naive client would guess (ns=3, not ns=2).
//! - A folder `Plant` under Objects with one variable of every [`ValueType`] (string node ids
//!   named after the type: `s=Double`...), plus one variable with each other kind of node id
//!   (`i=1001`, a GUID and an opaque id), historized variables with stored history answering
//!   HistoryRead (raw, forward, continuation points), and optional `Load.<n>` variables for
//!   load tests.
//! - Values, status codes and source timestamps set by the test: [`OpcUaSim::set`].
//! - Every Write, Call, AddNodes, AddReferences, DeleteNodes, DeleteReferences and HistoryUpdate
//!   request reaching the simulated namespace is counted ([`OpcUaSim::mutations`]), so tests can
//!   prove that the transmitter never changes the server. (Requests to nodes of namespace 0 are
//!   answered by the library's core node manager and not counted; the gateway's tags are never
//!   there.)
//! - Stop and start again on the same port ([`OpcUaSim::stop`], [`OpcUaSim::start`]); the
//!   values survive.
//! - Optionally a Basic256Sha256 SignAndEncrypt endpoint beside the None endpoint, with the
//!   server's own pki directory; and ([`SimSecurity`], [`OpcUaSim::start_with`]) any other
//!   secured endpoints, and X.509 user certificates accepted as identities.
//! - Who read values of the simulated namespace, with which security policy, mode and user
//!   token ([`OpcUaSim::readers`]), so tests can prove that a session really used what they
//!   configured rather than some other endpoint the server also offers.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use opcua::crypto::SecurityPolicy;
use opcua::server::address_space::{AddressSpace, ObjectBuilder, VariableBuilder, add_namespaces};
use opcua::server::diagnostics::NamespaceMetadata;
use opcua::server::node_manager::memory::{
    InMemoryNodeManager, InMemoryNodeManagerBuilder, InMemoryNodeManagerImpl,
};
use opcua::server::node_manager::{
    AddNodeItem, AddReferenceItem, DeleteNodeItem, DeleteReferenceItem, HistoryNode,
    HistoryUpdateNode, MethodCall, ParsedReadValueId, RequestContext, ServerContext, WriteNode,
};
use opcua::server::{ANONYMOUS_USER_TOKEN_ID, ContinuationPoint, ServerBuilder, ServerHandle};
use opcua::sync::RwLock;
use opcua::types::{
    ByteString, DataTypeId, DataValue, DateTime, EUInformation, ExtensionObject, Guid,
    MessageSecurityMode, NodeId, ObjectId, ReadRawModifiedDetails, ReferenceTypeId, StatusCode,
    TimestampsToReturn, VariableTypeId, Variant,
};
use protocol::model::{Quality, UnixNanos, Value, ValueType};

pub const GUID_NODE: &str = "72962b91-fa75-4ae6-8d28-b404dc7daf63";
pub const OPAQUE_NODE: [u8; 3] = [1, 2, 3];
pub const EXTRA_NAMESPACE: &str = "urn:opcua-sim:extra";

/// What the simulated server holds.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The URI of the namespace of the variables.
    pub namespace_uri: String,
    /// Also offer a Basic256Sha256 SignAndEncrypt endpoint.
    pub secure: bool,
    /// The server's pki directory (its own certificate is created there).
    pub pki_dir: PathBuf,
    /// `Load.0` .. `Load.<n-1>`, Double, for load tests.
    pub load_variables: usize,
    /// A user name and password accepted besides anonymous access (on the secured endpoint:
    /// the None endpoint would carry the password in clear).
    pub user: Option<(String, String)>,
}

/// Security offered beyond [`SimConfig`] (which the benches and older tests build as a
/// struct literal, so new options live here rather than as new fields there).
#[derive(Debug, Clone, Default)]
pub struct SimSecurity {
    /// Secured endpoints offered besides the None endpoint (and besides the Basic256Sha256
    /// SignAndEncrypt one of [`SimConfig::secure`]). Each accepts anonymous sessions, the
    /// [`SimConfig::user`] and the [`SimSecurity::user_certificates`].
    pub endpoints: Vec<(SecurityPolicy, MessageSecurityMode)>,
    /// User certificates (`.der` or `.pem` files) whose holders may open sessions with an
    /// X.509 identity on the secured endpoints; any other user certificate is refused
    /// (BadIdentityTokenRejected). The n-th is the user token `sim-x509-<n>` in
    /// [`Reader::user_token`].
    pub user_certificates: Vec<PathBuf>,
}

/// The user token id of the n-th of [`SimSecurity::user_certificates`].
pub fn x509_token_id(n: usize) -> String {
    format!("sim-x509-{n}")
}

/// The user token id of [`SimConfig::user`].
pub const USER_TOKEN_ID: &str = "sim-user";

/// How a session that read values of the simulated namespace was secured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reader {
    pub security_policy_uri: String,
    pub security_mode: MessageSecurityMode,
    /// [`ANONYMOUS_USER_TOKEN_ID`] (`ANONYMOUS`), [`USER_TOKEN_ID`] or [`x509_token_id`].
    pub user_token: String,
}

/// Requests that would change the server, by service.
#[derive(Debug, Default)]
pub struct Mutations {
    pub write: AtomicU64,
    pub call: AtomicU64,
    pub add_nodes: AtomicU64,
    pub add_references: AtomicU64,
    pub delete_nodes: AtomicU64,
    pub delete_references: AtomicU64,
    pub history_update: AtomicU64,
}

impl Mutations {
    pub fn total(&self) -> u64 {
        [
            &self.write,
            &self.call,
            &self.add_nodes,
            &self.add_references,
            &self.delete_nodes,
            &self.delete_references,
            &self.history_update,
        ]
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .sum()
    }
}

/// One variable of the simulated namespace.
#[derive(Debug, Clone)]
struct Var {
    id: Identifier,
    ty: ValueType,
    value: DataValue,
    historized: bool,
    unit: Option<String>,
}

#[derive(Debug, Clone)]
enum Identifier {
    Numeric(u32),
    String(String),
    /// Parsed by async-opcua itself (not by the gateway's config parser), so a byte-order
    /// mistake in the gateway's GUID handling cannot cancel out against the same one here.
    Guid(Guid),
    Opaque(Vec<u8>),
}

impl Identifier {
    fn node(&self, ns: u16) -> NodeId {
        match self {
            Identifier::Numeric(n) => NodeId::new(ns, *n),
            Identifier::String(s) => NodeId::new(ns, s.as_str()),
            Identifier::Guid(g) => NodeId::new(ns, g.clone()),
            Identifier::Opaque(b) => NodeId::new(ns, ByteString::from(b.clone())),
        }
    }
}

/// What survives a stop and start.
#[derive(Default)]
struct State {
    vars: Vec<(String, Var)>,
    by_name: HashMap<String, usize>,
    /// Stored history by variable name, oldest first.
    history: HashMap<String, Vec<DataValue>>,
}

/// The simulated server. Dropping it stops it.
pub struct OpcUaSim {
    pub port: u16,
    config: SimConfig,
    security: SimSecurity,
    state: Arc<Mutex<State>>,
    mutations: Arc<Mutations>,
    readers: Arc<Mutex<Vec<Reader>>>,
    running: Option<Running>,
}

struct Running {
    handle: ServerHandle,
    manager: Arc<SimNodeManager>,
    task: tokio::task::JoinHandle<Result<(), String>>,
}

type SimNodeManager = InMemoryNodeManager<SimImpl>;

/// The name of the variable of type `t` (`Double`, `UInt16`...).
pub fn type_var(t: ValueType) -> String {
    format!("{t:?}")
}

pub const ALL_TYPES: [ValueType; 12] = [
    ValueType::Boolean,
    ValueType::Int16,
    ValueType::Int32,
    ValueType::Int64,
    ValueType::UInt16,
    ValueType::UInt32,
    ValueType::UInt64,
    ValueType::Float,
    ValueType::Double,
    ValueType::String,
    ValueType::DateTime,
    ValueType::ByteString,
];

/// A value of each type that is not its zero.
pub fn sample_value(t: ValueType) -> Value {
    match t {
        ValueType::Boolean => Value::Boolean(true),
        ValueType::Int16 => Value::Int16(-1234),
        ValueType::Int32 => Value::Int32(-123_456),
        ValueType::Int64 => Value::Int64(-1 << 40),
        ValueType::UInt16 => Value::UInt16(54_321),
        ValueType::UInt32 => Value::UInt32(3_000_000_000),
        ValueType::UInt64 => Value::UInt64(1 << 60),
        ValueType::Float => Value::Float(1.5),
        ValueType::Double => Value::Double(-2.25),
        ValueType::String => Value::String("Grüße".into()),
        ValueType::DateTime => Value::DateTime(1_700_000_000_123_456_700),
        ValueType::ByteString => Value::ByteString(vec![0, 1, 254, 255]),
    }
}

fn data_value(v: &Value, q: Quality, t: UnixNanos) -> DataValue {
    DataValue {
        value: Some(gateway_rx::opcua::convert::variant(v)),
        status: Some(StatusCode::from(q.0)),
        source_timestamp: Some(gateway_tx::opcua::convert::to_datetime(t)),
        server_timestamp: Some(DateTime::now()),
        ..Default::default()
    }
}

impl OpcUaSim {
    /// Builds the variables and starts serving on 127.0.0.1:`port` (0: a free port).
    pub async fn start_new(config: SimConfig, port: u16) -> anyhow::Result<OpcUaSim> {
        OpcUaSim::start_with(config, SimSecurity::default(), port).await
    }

    /// [`OpcUaSim::start_new`] with more security options.
    pub async fn start_with(
        config: SimConfig,
        security: SimSecurity,
        port: u16,
    ) -> anyhow::Result<OpcUaSim> {
        let mut state = State::default();
        let t0 = 1_700_000_000_000_000_000;
        let mut add = |name: &str, id: Identifier, v: Value, historized: bool| {
            let i = state.vars.len();
            state.by_name.insert(name.to_owned(), i);
            state.vars.push((
                name.to_owned(),
                Var {
                    id,
                    ty: v.value_type(),
                    value: data_value(&v, Quality::GOOD, t0),
                    historized,
                    unit: None,
                },
            ));
        };
        for t in ALL_TYPES {
            add(
                &type_var(t),
                Identifier::String(type_var(t)),
                sample_value(t),
                false,
            );
        }
        add(
            "NumericId",
            Identifier::Numeric(1001),
            Value::Double(10.5),
            false,
        );
        let guid = <Guid as std::str::FromStr>::from_str(GUID_NODE)
            .map_err(|e| anyhow::anyhow!("bad GUID constant: {e}"))?;
        add("GuidId", Identifier::Guid(guid), Value::Int32(42), false);
        add(
            "OpaqueId",
            Identifier::Opaque(OPAQUE_NODE.to_vec()),
            Value::String("opaque".into()),
            false,
        );
        add(
            "History.Flow",
            Identifier::String("History.Flow".into()),
            Value::Double(0.0),
            true,
        );
        add(
            "History.Count",
            Identifier::String("History.Count".into()),
            Value::UInt32(0),
            true,
        );
        for i in 0..config.load_variables {
            let name = format!("Load.{i}");
            add(
                &name,
                Identifier::String(name.clone()),
                Value::Double(0.0),
                false,
            );
        }
        if let Some(&i) = state.by_name.get("Double") {
            state.vars[i].1.unit = Some("rpm".into());
        }
        let mut sim = OpcUaSim {
            port,
            config,
            security,
            state: Arc::new(Mutex::new(state)),
            mutations: Arc::default(),
            readers: Arc::default(),
            running: None,
        };
        sim.start().await?;
        Ok(sim)
    }

    pub fn url(&self) -> String {
        format!("opc.tcp://127.0.0.1:{}/", self.port)
    }

    pub fn mutations(&self) -> &Mutations {
        &self.mutations
    }

    /// Every distinct (security policy, mode, user token) of the sessions that read values of
    /// the simulated namespace (Read, or a new monitored item's first value) since the start,
    /// in the order first seen.
    pub fn readers(&self) -> Vec<Reader> {
        self.readers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The server's own certificate (created in its pki directory on first start).
    pub fn certificate(&self) -> anyhow::Result<opcua::crypto::X509> {
        opcua::crypto::CertificateStore::new(&self.config.pki_dir)
            .read_own_cert()
            .map_err(|e| anyhow::anyhow!("the simulator's certificate: {e}"))
    }

    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    /// The namespace index of the variables on the running server.
    pub fn namespace_index(&self) -> Option<u16> {
        self.running
            .as_ref()
            .and_then(|r| r.handle.get_namespace_index(&self.config.namespace_uri))
    }

    /// The node id of variable `name` as config text with the namespace URI.
    pub fn node_text(&self, name: &str) -> Option<String> {
        let state = self.lock();
        let (_, v) = &state.vars[*state.by_name.get(name)?];
        Some(match &v.id {
            Identifier::Numeric(n) => format!("nsu={};i={n}", self.config.namespace_uri),
            Identifier::String(s) => format!("nsu={};s={s}", self.config.namespace_uri),
            Identifier::Guid(g) => format!("nsu={};g={g}", self.config.namespace_uri),
            Identifier::Opaque(b) => format!(
                "nsu={};b={}",
                self.config.namespace_uri,
                config::opcua::base64_encode(b)
            ),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets a variable's value, status and source timestamp (subscribers are notified).
    pub fn set(
        &self,
        name: &str,
        value: Value,
        quality: Quality,
        time: UnixNanos,
    ) -> anyhow::Result<()> {
        self.set_many([(name, value, quality, time)])
    }

    /// Sets several variables at once (one notification pass).
    pub fn set_many<'a>(
        &self,
        values: impl IntoIterator<Item = (&'a str, Value, Quality, UnixNanos)>,
    ) -> anyhow::Result<()> {
        let mut state = self.lock();
        let mut updates = Vec::new();
        for (name, value, quality, time) in values {
            let &i = state
                .by_name
                .get(name)
                .ok_or_else(|| anyhow::anyhow!("no variable {name}"))?;
            let dv = data_value(&value, quality, time);
            state.vars[i].1.value = dv.clone();
            updates.push((state.vars[i].1.id.clone(), dv));
        }
        drop(state);
        if let (Some(r), Some(ns)) = (&self.running, self.namespace_index()) {
            let nodes: Vec<(NodeId, DataValue)> = updates
                .into_iter()
                .map(|(id, dv)| (id.node(ns), dv))
                .collect();
            r.manager
                .set_values(
                    r.handle.subscriptions(),
                    nodes.iter().map(|(n, dv)| (n, None, dv.clone())),
                )
                .map_err(|e| anyhow::anyhow!("set_values: {e}"))?;
        }
        Ok(())
    }

    /// Stores `values` (oldest first) as the history of a historized variable.
    pub fn set_history(&self, name: &str, values: Vec<(Value, Quality, UnixNanos)>) {
        let dvs = values
            .iter()
            .map(|(v, q, t)| data_value(v, *q, *t))
            .collect();
        self.lock().history.insert(name.to_owned(), dvs);
    }

    /// Stops serving; connections are closed. Values and history are kept.
    pub async fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            r.handle.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(5), r.task).await;
        }
    }

    /// Serves again on the same port (after [`OpcUaSim::stop`]).
    pub async fn start(&mut self) -> anyhow::Result<()> {
        if self.running.is_some() {
            return Ok(());
        }
        let listener = bind_retry(self.port).await?;
        self.port = listener.local_addr()?.port();
        let port = self.port;
        let state = self.state.clone();
        let mutations = self.mutations.clone();
        let readers = self.readers.clone();
        let uri = self.config.namespace_uri.clone();
        let builder = InMemoryNodeManagerBuilder::new(
            move |context: ServerContext, address_space: &mut AddressSpace| {
                SimImpl::build(
                    context,
                    address_space,
                    &uri,
                    state.clone(),
                    mutations.clone(),
                    readers.clone(),
                )
            },
        );
        let tokens = [ANONYMOUS_USER_TOKEN_ID];
        // Passwords and certificates only on secured endpoints: on None a password would
        // cross in the clear, and an X.509 token has no server certificate to sign against.
        let mut secure_tokens = vec![ANONYMOUS_USER_TOKEN_ID.to_owned()];
        if self.config.user.is_some() {
            secure_tokens.push(USER_TOKEN_ID.to_owned());
        }
        for n in 0..self.security.user_certificates.len() {
            secure_tokens.push(x509_token_id(n));
        }
        let secure_tokens: Vec<&str> = secure_tokens.iter().map(String::as_str).collect();
        let mut server = ServerBuilder::new()
            // A plant server that publishes every 10 ms (async-opcua's default tick is 100 ms),
            // so that what the tests and benchmarks time is the gateway, not this server.
            .subscription_poll_interval_ms(10)
            .application_name("opcua-sim")
            .application_uri("urn:opcua-sim")
            .product_uri("urn:opcua-sim")
            .create_sample_keypair(true)
            .pki_dir(&self.config.pki_dir)
            .trust_client_certs(true)
            .host("127.0.0.1")
            .port(port)
            .discovery_urls(vec![self.url()])
            .add_endpoint(
                "none",
                (
                    "/",
                    SecurityPolicy::None,
                    MessageSecurityMode::None,
                    &tokens as &[&str],
                ),
            )
            .with_node_manager(builder);
        // Room for load tests with thousands of variables in one subscription.
        let limits = server.limits_mut();
        limits.max_array_length = 1_000_000;
        limits.max_message_size = 64 << 20;
        limits.max_chunk_count = 1024;
        // Values of any size a plant server may hold, for the tests of what the gateway refuses.
        limits.max_string_length = 32 << 20;
        limits.max_byte_string_length = 32 << 20;
        limits.subscriptions.max_monitored_items_per_sub = 1_000_000;
        limits.subscriptions.max_queued_notifications = 1000;
        limits.subscriptions.min_sampling_interval_ms = 10.0;
        limits.subscriptions.min_publishing_interval_ms = 10.0;
        if let Some((user, password)) = &self.config.user {
            server = server.add_user_token(
                USER_TOKEN_ID,
                opcua::server::ServerUserToken::user_pass(user.as_str(), password.as_str()),
            );
        }
        for (n, cert) in self.security.user_certificates.iter().enumerate() {
            // async-opcua reads the file when the server is built and, if it cannot, silently
            // accepts no certificate at all: a test would then see a refusal for the wrong
            // reason. Read it here first so that a bad path fails the start.
            opcua::crypto::CertificateStore::read_cert(cert)
                .map_err(|e| anyhow::anyhow!("user certificate {}: {e}", cert.display()))?;
            server = server.add_user_token(
                x509_token_id(n),
                opcua::server::ServerUserToken::x509(format!("sim-x509-user-{n}"), cert),
            );
        }
        let mut secured = self.security.endpoints.clone();
        if self.config.secure {
            secured.insert(
                0,
                (
                    SecurityPolicy::Basic256Sha256,
                    MessageSecurityMode::SignAndEncrypt,
                ),
            );
        }
        for (policy, mode) in secured {
            anyhow::ensure!(
                policy != SecurityPolicy::None && mode != MessageSecurityMode::None,
                "the simulator always offers the None endpoint; list only secured ones"
            );
            server = server.add_endpoint(
                format!("{}_{mode}", policy.to_str()),
                ("/", policy, mode, secure_tokens.as_slice()),
            );
        }
        let (server, handle) = server.build().map_err(|e| anyhow::anyhow!("{e}"))?;
        let manager = handle
            .node_managers()
            .get_of_type::<SimNodeManager>()
            .ok_or_else(|| anyhow::anyhow!("sim node manager missing"))?;
        let task = tokio::spawn(server.run_with(listener));
        // The node managers fill their address space when the server runs; values set before
        // that would find no node.
        let ns = handle
            .get_namespace_index(&self.config.namespace_uri)
            .ok_or_else(|| anyhow::anyhow!("namespace not registered"))?;
        let folder = NodeId::new(ns, "Plant");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while manager.address_space().read().find(&folder).is_none() {
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "the simulated namespace was not built"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.running = Some(Running {
            handle,
            manager,
            task,
        });
        Ok(())
    }
}

impl Drop for OpcUaSim {
    fn drop(&mut self) {
        if let Some(r) = &self.running {
            r.handle.cancel();
            r.task.abort();
        }
    }
}

/// Binds 127.0.0.1:`port`, retrying a little while a just-closed server still holds it.
async fn bind_retry(port: u16) -> anyhow::Result<tokio::net::TcpListener> {
    let mut last = None;
    for _ in 0..50 {
        match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(anyhow::anyhow!(
        "cannot bind 127.0.0.1:{port}: {}",
        last.map(|e| e.to_string()).unwrap_or_default()
    ))
}

struct SimImpl {
    namespaces: Vec<NamespaceMetadata>,
    ns: u16,
    state: Arc<Mutex<State>>,
    mutations: Arc<Mutations>,
    readers: Arc<Mutex<Vec<Reader>>>,
}

/// Where a HistoryRead continues: the index of the next value.
struct HistoryCursor {
    index: usize,
}

impl SimImpl {
    fn build(
        context: ServerContext,
        address_space: &mut AddressSpace,
        uri: &str,
        state: Arc<Mutex<State>>,
        mutations: Arc<Mutations>,
        readers: Arc<Mutex<Vec<Reader>>>,
    ) -> SimImpl {
        let idx = add_namespaces(&context, address_space, &[EXTRA_NAMESPACE, uri]);
        let namespaces = [EXTRA_NAMESPACE, uri]
            .iter()
            .zip(&idx)
            .map(|(u, i)| NamespaceMetadata {
                namespace_uri: (*u).to_owned(),
                namespace_index: *i,
                is_namespace_subset: Some(false),
                ..Default::default()
            })
            .collect();
        let ns = idx.get(1).copied().unwrap_or(2);
        SimImpl {
            namespaces,
            ns,
            state,
            mutations,
            readers,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn history_of(&self, node: &NodeId) -> Option<Vec<DataValue>> {
        let state = self.lock();
        let (name, _) = state
            .vars
            .iter()
            .find(|(_, v)| v.id.node(self.ns) == *node)?;
        Some(state.history.get(name).cloned().unwrap_or_default())
    }
}

#[async_trait]
impl InMemoryNodeManagerImpl for SimImpl {
    async fn init(&self, address_space: &mut AddressSpace, _context: ServerContext) {
        let folder = NodeId::new(self.ns, "Plant");
        ObjectBuilder::new(&folder, "Plant", "Plant")
            .is_folder()
            .organized_by(NodeId::from(ObjectId::ObjectsFolder))
            .insert(address_space);
        let vars: Vec<(String, Var)> = self.lock().vars.clone();
        for (name, v) in vars {
            let id = v.id.node(self.ns);
            let mut b = VariableBuilder::new(&id, name.as_str(), name.as_str())
                .data_type(gateway_rx::opcua::convert::data_type(v.ty))
                .value(v.value.value.clone().unwrap_or(Variant::Empty))
                .description(format!("simulated {name}"))
                .organized_by(folder.clone());
            if v.historized {
                b = b.historizing(true).history_readable();
            }
            b.insert(address_space);
            if let Some(node) = address_space.find_mut(&id)
                && let opcua::server::address_space::NodeType::Variable(var) = node
            {
                var.set_data_value(v.value.clone());
            }
            if let Some(unit) = v.unit {
                let eu_id = NodeId::new(self.ns, format!("{name}.EngineeringUnits"));
                let eu = EUInformation {
                    namespace_uri: "http://www.opcfoundation.org/UA/units/un/cefact".into(),
                    unit_id: 5_066_068,
                    display_name: unit.as_str().into(),
                    description: unit.as_str().into(),
                };
                VariableBuilder::new(&eu_id, "EngineeringUnits", "EngineeringUnits")
                    .data_type(DataTypeId::EUInformation)
                    .value(Variant::from(ExtensionObject::from_message(eu)))
                    .has_type_definition(VariableTypeId::PropertyType)
                    .reference(
                        id.clone(),
                        ReferenceTypeId::HasProperty,
                        opcua::server::address_space::ReferenceDirection::Inverse,
                    )
                    .insert(address_space);
            }
        }
    }

    fn name(&self) -> &str {
        "opcua-sim"
    }

    fn namespaces(&self) -> Vec<NamespaceMetadata> {
        self.namespaces.clone()
    }

    /// The library's own read, after noting how the reading session is secured. Monitored
    /// items read their first value through here too, so subscribers are seen as well.
    async fn read_values(
        &self,
        context: &RequestContext,
        address_space: &RwLock<AddressSpace>,
        nodes: &[&ParsedReadValueId],
        max_age: f64,
        timestamps_to_return: TimestampsToReturn,
    ) -> Vec<DataValue> {
        let reader = {
            let session = context.session().read();
            Reader {
                security_policy_uri: session.security_policy_uri().to_owned(),
                security_mode: session.message_security_mode(),
                user_token: context.user_token().0.clone(),
            }
        };
        let mut readers = self.readers.lock().unwrap_or_else(|e| e.into_inner());
        if !readers.contains(&reader) {
            readers.push(reader);
        }
        drop(readers);
        let address_space = address_space.read();
        nodes
            .iter()
            .map(|n| address_space.read(context, n, max_age, timestamps_to_return))
            .collect()
    }

    async fn history_read_raw_modified(
        &self,
        _context: &RequestContext,
        details: &ReadRawModifiedDetails,
        nodes: &mut [&mut &mut HistoryNode],
        _timestamps_to_return: TimestampsToReturn,
    ) -> Result<(), StatusCode> {
        let per_node = match details.num_values_per_node {
            0 => 10_000,
            n => n.min(10_000) as usize,
        };
        let start = details.start_time.checked_ticks();
        let end = if details.end_time.is_null() {
            i64::MAX
        } else {
            details.end_time.checked_ticks()
        };
        for node in nodes.iter_mut() {
            let Some(values) = self.history_of(node.node_id()) else {
                node.set_status(StatusCode::BadNodeIdUnknown);
                continue;
            };
            let in_window: Vec<&DataValue> = values
                .iter()
                .filter(|v| {
                    let t = v.source_timestamp.map(|t| t.checked_ticks()).unwrap_or(0);
                    t >= start && t <= end
                })
                .collect();
            let from = match node.continuation_point() {
                Some(cp) => match cp.get::<HistoryCursor>() {
                    Some(c) => c.index,
                    None => {
                        node.set_status(StatusCode::BadContinuationPointInvalid);
                        continue;
                    }
                },
                None => 0,
            };
            let page: Vec<DataValue> = in_window
                .iter()
                .skip(from)
                .take(per_node)
                .map(|v| (*v).clone())
                .collect();
            let next = from + page.len();
            node.set_result(opcua::types::HistoryData {
                data_values: Some(page),
            });
            node.set_status(StatusCode::Good);
            if next < in_window.len() {
                node.set_next_continuation_point(Some(ContinuationPoint::new(Box::new(
                    HistoryCursor { index: next },
                ))));
            }
        }
        Ok(())
    }

    async fn write(
        &self,
        _context: &RequestContext,
        _address_space: &RwLock<AddressSpace>,
        nodes_to_write: &mut [&mut WriteNode],
    ) -> Result<(), StatusCode> {
        self.mutations
            .write
            .fetch_add(nodes_to_write.len() as u64, Ordering::Relaxed);
        for n in nodes_to_write {
            n.set_status(StatusCode::BadNotWritable);
        }
        Ok(())
    }

    async fn call(
        &self,
        _context: &RequestContext,
        _address_space: &RwLock<AddressSpace>,
        methods_to_call: &mut [&mut &mut MethodCall],
    ) -> Result<(), StatusCode> {
        self.mutations
            .call
            .fetch_add(methods_to_call.len() as u64, Ordering::Relaxed);
        Err(StatusCode::BadServiceUnsupported)
    }

    async fn add_nodes(
        &self,
        _context: &RequestContext,
        _address_space: &RwLock<AddressSpace>,
        nodes_to_add: &mut [&mut AddNodeItem],
    ) -> Result<(), StatusCode> {
        self.mutations
            .add_nodes
            .fetch_add(nodes_to_add.len() as u64, Ordering::Relaxed);
        Err(StatusCode::BadServiceUnsupported)
    }

    async fn add_references(
        &self,
        _context: &RequestContext,
        _address_space: &RwLock<AddressSpace>,
        references_to_add: &mut [&mut AddReferenceItem],
    ) -> Result<(), StatusCode> {
        self.mutations
            .add_references
            .fetch_add(references_to_add.len() as u64, Ordering::Relaxed);
        Err(StatusCode::BadServiceUnsupported)
    }

    async fn delete_nodes(
        &self,
        _context: &RequestContext,
        _address_space: &RwLock<AddressSpace>,
        nodes_to_delete: &mut [&mut DeleteNodeItem],
    ) -> Result<(), StatusCode> {
        self.mutations
            .delete_nodes
            .fetch_add(nodes_to_delete.len() as u64, Ordering::Relaxed);
        Err(StatusCode::BadServiceUnsupported)
    }

    async fn delete_references(
        &self,
        _context: &RequestContext,
        _address_space: &RwLock<AddressSpace>,
        to_delete: &mut [&mut DeleteReferenceItem],
    ) -> Result<(), StatusCode> {
        self.mutations
            .delete_references
            .fetch_add(to_delete.len() as u64, Ordering::Relaxed);
        Err(StatusCode::BadServiceUnsupported)
    }

    async fn history_update(
        &self,
        _context: &RequestContext,
        nodes: &mut [&mut &mut HistoryUpdateNode],
    ) -> Result<(), StatusCode> {
        self.mutations
            .history_update
            .fetch_add(nodes.len() as u64, Ordering::Relaxed);
        Err(StatusCode::BadHistoryOperationUnsupported)
    }
}
