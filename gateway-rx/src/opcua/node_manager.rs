//! The mirror's node manager: async-opcua's in-memory node manager holds the folders and
//! variables (see `address_space`); this serves their values from the receiver's state, their
//! history from the store, and refuses everything that would change anything.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use async_trait::async_trait;
use opcua::server::ContinuationPoint;
use opcua::server::address_space::AddressSpace;
use opcua::server::diagnostics::NamespaceMetadata;
use opcua::server::node_manager::memory::{InMemoryNodeManager, InMemoryNodeManagerImpl};
use opcua::server::node_manager::{
    AddNodeItem, AddReferenceItem, DeleteNodeItem, DeleteReferenceItem, HistoryNode,
    HistoryUpdateNode, MethodCall, ParsedReadValueId, RequestContext, ServerContext, WriteNode,
};
use opcua::sync::RwLock;
use opcua::types::{
    AttributeId, DataValue, Identifier, NodeId, NumericRange, ReadRawModifiedDetails, StatusCode,
    TimestampsToReturn,
};
use tracing::warn;

use super::OpcUaCounters;
use super::convert;
use super::history::{self, Cursor, HistoryReader};
use crate::state::{State, StateView};

pub type MirrorNodeManager = InMemoryNodeManager<MirrorNodes>;

/// The part of the node manager this crate writes (see the module doc).
pub struct MirrorNodes {
    ns: u16,
    namespace_uri: String,
    state: Arc<State>,
    history: Option<Arc<HistoryReader>>,
    counters: Arc<OpcUaCounters>,
}

impl MirrorNodes {
    pub fn new(
        context: &ServerContext,
        space: &mut AddressSpace,
        namespace_uri: &str,
        state: Arc<State>,
        history: Option<Arc<HistoryReader>>,
        counters: Arc<OpcUaCounters>,
    ) -> MirrorNodes {
        let ns = opcua::server::address_space::add_namespaces(context, space, &[namespace_uri])[0];
        MirrorNodes {
            ns,
            namespace_uri: namespace_uri.to_owned(),
            state,
            history,
            counters,
        }
    }

    pub fn namespace_index(&self) -> u16 {
        self.ns
    }

    pub fn history_enabled(&self) -> bool {
        self.history.is_some()
    }

    /// The tag a node id names, if it is one of the mirror's variables.
    fn tag_name<'a>(&self, id: &'a NodeId) -> Option<&'a str> {
        match &id.identifier {
            // Folders end in '/', EngineeringUnits properties hold '#': neither is a tag.
            Identifier::String(s)
                if id.namespace == self.ns
                    && !s.as_ref().ends_with('/')
                    && !s.as_ref().contains('#') =>
            {
                Some(s.as_ref())
            }
            _ => None,
        }
    }
}

/// A tag's current value as served (see the module doc of `opcua` for the rules), or `None`
/// when `name` is not in the catalogue.
pub fn served_value(
    view: &StateView<'_>,
    name: &str,
    range: &NumericRange,
    which: TimestampsToReturn,
) -> Option<DataValue> {
    let index = view.catalogue()?.index_of(name)?;
    if !matches!(range, NumericRange::None) {
        return Some(convert::data_value(
            None,
            StatusCode::BadIndexRangeNoData,
            None,
            None,
            which,
        ));
    }
    Some(match view.value(index) {
        Some(v) => convert::data_value(
            Some(convert::variant(v.value)),
            convert::status(v.quality),
            Some(v.source_time),
            Some(v.received_at),
            which,
        ),
        None => convert::data_value(
            None,
            StatusCode::BadWaitingForInitialData,
            None,
            Some(crate::unix_now()),
            which,
        ),
    })
}

#[async_trait]
impl InMemoryNodeManagerImpl for MirrorNodes {
    async fn init(&self, _space: &mut AddressSpace, _context: ServerContext) {}

    fn name(&self) -> &str {
        "gateway-mirror"
    }

    fn namespaces(&self) -> Vec<NamespaceMetadata> {
        vec![NamespaceMetadata {
            is_namespace_subset: Some(false),
            namespace_uri: self.namespace_uri.clone(),
            namespace_index: self.ns,
            ..Default::default()
        }]
    }

    async fn read_values(
        &self,
        context: &RequestContext,
        space: &RwLock<AddressSpace>,
        nodes: &[&ParsedReadValueId],
        max_age: f64,
        which: TimestampsToReturn,
    ) -> Vec<DataValue> {
        self.counters
            .reads
            .fetch_add(nodes.len() as u64, Ordering::Relaxed);
        // The address space follows a new catalogue a moment after the state has it (the feed
        // task syncs it): a tag is served only once its node exists, so a value is never
        // readable at a node that Browse, DataType or a subscription would call unknown. Lock
        // order: address space, then state (as everywhere).
        let space = space.read();
        let mut out = Vec::with_capacity(nodes.len());
        {
            let view = self.state.view();
            for n in nodes {
                let served = self
                    .tag_name(&n.node_id)
                    .filter(|_| n.attribute_id == AttributeId::Value)
                    .filter(|_| space.node_exists(&n.node_id))
                    .and_then(|name| served_value(&view, name, &n.index_range, which));
                out.push(served);
            }
        }
        // Anything else (a folder, the EngineeringUnits property, a node not (yet) there): as
        // the address space holds it.
        out.into_iter()
            .zip(nodes)
            .map(|(v, n)| v.unwrap_or_else(|| space.read(context, n, max_age, which)))
            .collect()
    }

    async fn history_read_raw_modified(
        &self,
        _context: &RequestContext,
        details: &ReadRawModifiedDetails,
        nodes: &mut [&mut &mut HistoryNode],
        which: TimestampsToReturn,
    ) -> Result<(), StatusCode> {
        self.counters
            .history_reads
            .fetch_add(nodes.len() as u64, Ordering::Relaxed);
        let Some(reader) = &self.history else {
            return Err(StatusCode::BadHistoryOperationUnsupported);
        };
        if details.is_read_modified {
            return Err(StatusCode::BadHistoryOperationUnsupported);
        }
        for node in nodes.iter_mut() {
            let cursor = match node.continuation_point() {
                Some(cp) => match cp.get::<Cursor>() {
                    Some(c) => Ok(c.clone()),
                    None => Err(StatusCode::BadContinuationPointInvalid),
                },
                None => match self.tag_name(node.node_id()) {
                    Some(name) => history::first_cursor(
                        name,
                        &details.start_time,
                        &details.end_time,
                        details.num_values_per_node,
                    ),
                    None => Err(StatusCode::BadNodeIdUnknown),
                },
            };
            let cursor = match cursor {
                Ok(c) => c,
                Err(status) => {
                    node.set_status(status);
                    continue;
                }
            };
            let reader = reader.clone();
            let page = tokio::task::spawn_blocking(move || reader.read(&cursor)).await;
            match page {
                Ok(Ok((values, next))) => {
                    self.counters
                        .history_values
                        .fetch_add(values.len() as u64, Ordering::Relaxed);
                    node.set_result(history::history_data(values, which));
                    node.set_next_continuation_point(
                        next.map(|c| ContinuationPoint::new(Box::new(c))),
                    );
                    node.set_status(StatusCode::Good);
                }
                Ok(Err(e)) => {
                    warn!(error = %e, node = %node.node_id(), "history read from the store failed");
                    node.set_status(StatusCode::BadHistoryOperationInvalid);
                }
                Err(e) => {
                    warn!(error = %e, "history read task failed");
                    node.set_status(StatusCode::BadInternalError);
                }
            }
        }
        Ok(())
    }

    async fn history_update(
        &self,
        _context: &RequestContext,
        nodes: &mut [&mut &mut HistoryUpdateNode],
    ) -> Result<(), StatusCode> {
        self.counters
            .writes_refused
            .fetch_add(nodes.len() as u64, Ordering::Relaxed);
        for n in nodes.iter_mut() {
            n.set_status(StatusCode::BadHistoryOperationUnsupported);
        }
        Ok(())
    }

    async fn write(
        &self,
        _context: &RequestContext,
        space: &RwLock<AddressSpace>,
        nodes: &mut [&mut WriteNode],
    ) -> Result<(), StatusCode> {
        self.counters
            .writes_refused
            .fetch_add(nodes.len() as u64, Ordering::Relaxed);
        let space = space.read();
        for n in nodes.iter_mut() {
            // The mirror is read-only: it never changes a value the plant gave.
            if space.node_exists(&n.value().node_id) {
                n.set_status(StatusCode::BadNotWritable);
            } else {
                n.set_status(StatusCode::BadNodeIdUnknown);
            }
        }
        Ok(())
    }

    async fn call(
        &self,
        _context: &RequestContext,
        _space: &RwLock<AddressSpace>,
        calls: &mut [&mut &mut MethodCall],
    ) -> Result<(), StatusCode> {
        self.counters
            .calls_refused
            .fetch_add(calls.len() as u64, Ordering::Relaxed);
        // The mirror has no methods, so none can be run.
        for c in calls.iter_mut() {
            c.set_status(StatusCode::BadMethodInvalid);
        }
        Ok(())
    }

    async fn add_nodes(
        &self,
        _context: &RequestContext,
        _space: &RwLock<AddressSpace>,
        nodes: &mut [&mut AddNodeItem],
    ) -> Result<(), StatusCode> {
        self.counters
            .node_management_refused
            .fetch_add(nodes.len() as u64, Ordering::Relaxed);
        for n in nodes.iter_mut() {
            n.set_result(NodeId::null(), StatusCode::BadUserAccessDenied);
        }
        Ok(())
    }

    async fn add_references(
        &self,
        _context: &RequestContext,
        _space: &RwLock<AddressSpace>,
        refs: &mut [&mut AddReferenceItem],
    ) -> Result<(), StatusCode> {
        self.counters
            .node_management_refused
            .fetch_add(refs.len() as u64, Ordering::Relaxed);
        for r in refs.iter_mut() {
            r.set_source_result(StatusCode::BadUserAccessDenied);
            r.set_target_result(StatusCode::BadUserAccessDenied);
        }
        Ok(())
    }

    async fn delete_nodes(
        &self,
        _context: &RequestContext,
        _space: &RwLock<AddressSpace>,
        nodes: &mut [&mut DeleteNodeItem],
    ) -> Result<(), StatusCode> {
        self.counters
            .node_management_refused
            .fetch_add(nodes.len() as u64, Ordering::Relaxed);
        for n in nodes.iter_mut() {
            n.set_result(StatusCode::BadUserAccessDenied);
        }
        Ok(())
    }

    async fn delete_references(
        &self,
        _context: &RequestContext,
        _space: &RwLock<AddressSpace>,
        refs: &mut [&mut DeleteReferenceItem],
    ) -> Result<(), StatusCode> {
        self.counters
            .node_management_refused
            .fetch_add(refs.len() as u64, Ordering::Relaxed);
        for r in refs.iter_mut() {
            r.set_source_result(StatusCode::BadUserAccessDenied);
            r.set_target_result(StatusCode::BadUserAccessDenied);
        }
        Ok(())
    }
}
