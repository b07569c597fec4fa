//! `gateway-tx browse`: walks a server's address space with Browse and Read only, prints the
//! tree, and ready-to-paste `[[opcua.tag]]` entries for the variables found.

use std::fmt::Write as _;

use config::opcua::OpcUaEndpoint;
use opcua::client::Session;
use opcua::types::{
    AttributeId, BrowseDescription, BrowseDirection, BrowseResultMask, DataTypeId, EUInformation,
    NodeClass, NodeClassMask, NodeId, ObjectId, ReadValueId, ReferenceTypeId, TimestampsToReturn,
    Variant,
};
use protocol::model::ValueType;

use super::{client, endpoint, nodeid};

#[derive(Debug, thiserror::Error)]
pub enum BrowseError {
    #[error("{0}")]
    Client(#[from] client::ClientError),
    #[error("cannot connect to {url}: {why}")]
    Connect { url: String, why: String },
    #[error("{service} failed: {why}")]
    Service { service: &'static str, why: String },
    #[error("node {0} is not valid: {1}")]
    Node(String, String),
}

/// One variable found.
#[derive(Debug, Clone, PartialEq)]
pub struct FoundVariable {
    /// Browse names from the start node, joined by `/` and made a valid tag name.
    pub name: String,
    /// Node id as config text (`nsu=` when the server names the namespace).
    pub node: String,
    /// `None` when the DataType is not one a tag can have (arrays, structures...).
    pub value_type: Option<ValueType>,
    pub data_type: String,
    pub unit: String,
    pub description: String,
}

/// What `browse` found: the tree as text and the variables.
#[derive(Debug, Clone, Default)]
pub struct BrowseReport {
    pub tree: String,
    pub variables: Vec<FoundVariable>,
}

impl BrowseReport {
    /// `[[opcua.tag]]` entries for every variable of a supported type (others as comments).
    pub fn toml(&self) -> String {
        let mut out = String::new();
        for v in &self.variables {
            let Some(ty) = v.value_type else {
                let _ = writeln!(
                    out,
                    "# {} ({}): data type {} is not supported\n",
                    v.name, v.node, v.data_type
                );
                continue;
            };
            let _ = writeln!(out, "[[opcua.tag]]");
            let _ = writeln!(out, "name = {}", quote(&v.name));
            let _ = writeln!(out, "node = {}", quote(&v.node));
            let _ = writeln!(out, "type = \"{}\"", config::opcua::type_name(ty));
            if !v.unit.is_empty() {
                let _ = writeln!(out, "unit = {}", quote(&v.unit));
            }
            if !v.description.is_empty() {
                let _ = writeln!(out, "description = {}", quote(&v.description));
            }
            out.push('\n');
        }
        out
    }
}

/// A TOML basic string.
fn quote(s: &str) -> String {
    let mut q = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => q.push_str("\\\""),
            '\\' => q.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(q, "\\u{:04X}", c as u32);
            }
            c => q.push(c),
        }
    }
    q.push('"');
    q
}

/// Browses `ep`'s server from `start` (config node text; the Objects folder when `None`) down
/// to `depth` levels.
pub async fn browse(
    ep: &OpcUaEndpoint,
    start: Option<&str>,
    depth: usize,
) -> Result<BrowseReport, BrowseError> {
    let mut c = client::build(ep)?;
    let identity = client::identity(ep)?;
    let conn = endpoint::connect(&mut c, ep, identity)
        .await
        .map_err(|why| BrowseError::Connect {
            url: ep.url.clone(),
            why,
        })?;
    let session = conn.session.clone();
    let namespaces =
        endpoint::read_namespaces(&session)
            .await
            .map_err(|e| BrowseError::Service {
                service: "Read NamespaceArray",
                why: e.to_string(),
            })?;
    let start = match start {
        None => NodeId::from(ObjectId::ObjectsFolder),
        Some(text) => {
            let r = config::opcua::parse_node(text)
                .map_err(|why| BrowseError::Node(text.to_owned(), why))?;
            nodeid::resolve(&r, &namespaces).ok_or_else(|| {
                BrowseError::Node(
                    text.to_owned(),
                    "its namespace URI is not on the server".to_owned(),
                )
            })?
        }
    };
    let mut report = BrowseReport::default();
    let mut found: Vec<(String, NodeId)> = Vec::new();
    let mut stack: Vec<(NodeId, String, usize)> = vec![(start, String::new(), 0)];
    let mut seen = std::collections::HashSet::new();
    while let Some((node, path, level)) = stack.pop() {
        if level >= depth || !seen.insert(node.clone()) {
            continue;
        }
        let refs = children(&session, &node, ReferenceTypeId::HierarchicalReferences).await?;
        // Pushed in reverse so the tree prints in the server's order.
        for (name, id, class) in refs.into_iter().rev() {
            let child_path = if path.is_empty() {
                tag_segment(&name)
            } else {
                format!("{path}/{}", tag_segment(&name))
            };
            let _ = writeln!(
                report.tree,
                "{}{} ({:?}, {})",
                "  ".repeat(level),
                name,
                class,
                nodeid::to_config_text(&id, &namespaces)
            );
            if class == NodeClass::Variable {
                found.push((child_path.clone(), id.clone()));
            }
            stack.push((id, child_path, level + 1));
        }
    }
    // The tree was collected depth-first from a stack; keep it as printed.
    for (name, id) in found {
        let attrs = read_attrs(&session, &id).await?;
        let unit = unit_of(&session, &id).await.unwrap_or_default();
        report.variables.push(FoundVariable {
            name,
            node: nodeid::to_config_text(&id, &namespaces),
            value_type: attrs.0,
            data_type: attrs.1,
            unit,
            description: attrs.2,
        });
    }
    let _ = tokio::time::timeout(ep.timeout, session.disconnect()).await;
    Ok(report)
}

/// Browse names as tag path segments: characters a tag name cannot hold become `_`.
fn tag_segment(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() || s.chars().all(|c| c == '.') {
        "_".to_owned()
    } else {
        s
    }
}

async fn children(
    session: &Session,
    node: &NodeId,
    refs: ReferenceTypeId,
) -> Result<Vec<(String, NodeId, NodeClass)>, BrowseError> {
    let desc = BrowseDescription {
        node_id: node.clone(),
        browse_direction: BrowseDirection::Forward,
        reference_type_id: refs.into(),
        include_subtypes: true,
        node_class_mask: (NodeClassMask::OBJECT | NodeClassMask::VARIABLE).bits(),
        result_mask: BrowseResultMask::All as u32,
    };
    let service = |e: opcua::types::Error| BrowseError::Service {
        service: "Browse",
        why: e.to_string(),
    };
    let mut out = Vec::new();
    let mut results = session.browse(&[desc], 1000, None).await.map_err(service)?;
    while let Some(r) = results.into_iter().next() {
        for rd in r.references.unwrap_or_default() {
            if rd.node_id.server_index != 0 {
                continue;
            }
            out.push((
                rd.browse_name.name.as_ref().to_owned(),
                rd.node_id.node_id,
                rd.node_class,
            ));
        }
        if r.continuation_point.is_null() {
            break;
        }
        results = session
            .browse_next(false, &[r.continuation_point])
            .await
            .map_err(service)?;
    }
    Ok(out)
}

/// (tag type, DataType as text, description) of a variable.
async fn read_attrs(
    session: &Session,
    id: &NodeId,
) -> Result<(Option<ValueType>, String, String), BrowseError> {
    let read = |a: AttributeId| ReadValueId {
        node_id: id.clone(),
        attribute_id: a as u32,
        ..Default::default()
    };
    let values = session
        .read(
            &[
                read(AttributeId::DataType),
                read(AttributeId::ValueRank),
                read(AttributeId::Description),
            ],
            TimestampsToReturn::Neither,
            0.0,
        )
        .await
        .map_err(|e| BrowseError::Service {
            service: "Read",
            why: e.to_string(),
        })?;
    let mut v = values.into_iter().map(|dv| dv.value);
    let data_type = match v.next().flatten() {
        Some(Variant::NodeId(n)) => Some(*n),
        _ => None,
    };
    let scalar = matches!(v.next().flatten(), Some(Variant::Int32(-1)) | None);
    let description = match v.next().flatten() {
        Some(Variant::LocalizedText(t)) => t.text.as_ref().to_owned(),
        _ => String::new(),
    };
    let ty = data_type
        .as_ref()
        .filter(|_| scalar)
        .and_then(value_type_of);
    let shown = match &data_type {
        Some(d) if !scalar => format!("array of {d}"),
        Some(d) => d.to_string(),
        None => "unknown".to_owned(),
    };
    Ok((ty, shown, description))
}

/// The tag type for a standard DataType; SByte and Byte are read into 16-bit tags.
pub fn value_type_of(data_type: &NodeId) -> Option<ValueType> {
    if data_type.namespace != 0 {
        return None;
    }
    let opcua::types::Identifier::Numeric(n) = data_type.identifier else {
        return None;
    };
    let id = DataTypeId::try_from(n).ok()?;
    Some(match id {
        DataTypeId::Boolean => ValueType::Boolean,
        DataTypeId::SByte | DataTypeId::Int16 => ValueType::Int16,
        DataTypeId::Byte | DataTypeId::UInt16 => ValueType::UInt16,
        DataTypeId::Int32 => ValueType::Int32,
        DataTypeId::UInt32 => ValueType::UInt32,
        DataTypeId::Int64 => ValueType::Int64,
        DataTypeId::UInt64 => ValueType::UInt64,
        DataTypeId::Float => ValueType::Float,
        DataTypeId::Double => ValueType::Double,
        DataTypeId::String => ValueType::String,
        DataTypeId::DateTime | DataTypeId::UtcTime => ValueType::DateTime,
        DataTypeId::ByteString => ValueType::ByteString,
        _ => return None,
    })
}

/// The display name of the variable's EngineeringUnits property, when it has one.
async fn unit_of(session: &Session, id: &NodeId) -> Option<String> {
    let props = children(session, id, ReferenceTypeId::HasProperty)
        .await
        .ok()?;
    let (_, eu, _) = props
        .into_iter()
        .find(|(n, _, _)| n == "EngineeringUnits")?;
    let values = session
        .read(
            &[ReadValueId {
                node_id: eu,
                attribute_id: AttributeId::Value as u32,
                ..Default::default()
            }],
            TimestampsToReturn::Neither,
            0.0,
        )
        .await
        .ok()?;
    match values.into_iter().next()?.value? {
        Variant::ExtensionObject(o) => {
            let eu = o.into_inner_as::<EUInformation>()?;
            Some(eu.display_name.text.as_ref().to_owned())
        }
        _ => None,
    }
}
