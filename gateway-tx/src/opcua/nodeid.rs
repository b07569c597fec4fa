//! Configured node ids ([`config::opcua::NodeRef`]) into the server's NodeIds. A namespace given
//! by URI is looked up in the server's NamespaceArray, read again on every (re)connection,
//! because a server may give its namespaces other indexes after a restart.

use config::opcua::{Identifier, Namespace, NodeRef};
use opcua::types::{ByteString, Guid, NodeId, VariableId};

/// The NamespaceArray's node (ns=0;i=2255).
pub fn namespace_array_node() -> NodeId {
    VariableId::Server_NamespaceArray.into()
}

/// The NodeId `r` names on a server whose NamespaceArray is `namespaces`; `None` when its
/// namespace URI is not there.
pub fn resolve(r: &NodeRef, namespaces: &[String]) -> Option<NodeId> {
    let ns = match &r.namespace {
        Namespace::Index(i) => *i,
        Namespace::Uri(u) => u16::try_from(namespaces.iter().position(|n| n == u)?).ok()?,
    };
    Some(match &r.identifier {
        Identifier::Numeric(n) => NodeId::new(ns, *n),
        Identifier::String(s) => NodeId::new(ns, s.as_str()),
        Identifier::Guid(g) => NodeId::new(ns, Guid::from_bytes(swap_guid_fields(*g))),
        Identifier::Opaque(b) => NodeId::new(ns, ByteString::from(b.clone())),
    })
}

/// The config keeps a GUID's bytes in text order (RFC 4122: every field big-endian, as
/// written); async-opcua's `Guid::from_bytes`/`to_bytes` take the OPC UA binary layout, whose
/// first three fields are little-endian. Swapping those fields converts either way.
fn swap_guid_fields(mut g: [u8; 16]) -> [u8; 16] {
    g[0..4].reverse();
    g[4..6].reverse();
    g[6..8].reverse();
    g
}

/// The NodeId as config text with its namespace by URI when the server names it (`nsu=`),
/// else by index; for `browse`.
pub fn to_config_text(id: &NodeId, namespaces: &[String]) -> String {
    use opcua::types::Identifier as I;
    let identifier = match &id.identifier {
        I::Numeric(n) => Identifier::Numeric(*n),
        I::String(s) => Identifier::String(s.as_ref().to_owned()),
        I::Guid(g) => Identifier::Guid(swap_guid_fields(g.to_bytes())),
        I::ByteString(b) => Identifier::Opaque(b.value.clone().unwrap_or_default()),
    };
    let namespace = match namespaces.get(usize::from(id.namespace)) {
        Some(u) if id.namespace != 0 && !u.is_empty() => Namespace::Uri(u.clone()),
        _ => Namespace::Index(id.namespace),
    };
    NodeRef {
        namespace,
        identifier,
    }
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use config::opcua::parse_node;

    #[test]
    fn guid_text_means_what_async_opcua_parses() {
        let text = "72962b91-fa75-4ae6-8d28-b404dc7daf63";
        let r = parse_node(&format!("ns=1;g={text}")).expect("node");
        let id = resolve(&r, &[]).expect("resolved");
        let parsed: Guid = text.parse().expect("guid");
        assert_eq!(id, NodeId::new(1, parsed));
        assert_eq!(to_config_text(&id, &[]), format!("ns=1;g={text}"));
    }

    #[test]
    fn uri_resolves_to_the_servers_index() {
        let ns = vec![
            "http://opcfoundation.org/UA/".to_owned(),
            "urn:other".to_owned(),
            "urn:plant".to_owned(),
        ];
        let r = parse_node("nsu=urn:plant;s=Pump.Speed").expect("node");
        assert_eq!(resolve(&r, &ns), Some(NodeId::new(2, "Pump.Speed")));
        let r = parse_node("nsu=urn:missing;i=1").expect("node");
        assert_eq!(resolve(&r, &ns), None);
        let r = parse_node("ns=1;g=72962b91-fa75-4ae6-8d28-b404dc7daf63").expect("node");
        let id = resolve(&r, &ns).expect("guid");
        assert_eq!(
            to_config_text(&id, &ns),
            "nsu=urn:other;g=72962b91-fa75-4ae6-8d28-b404dc7daf63"
        );
        let r = parse_node("ns=2;b=AQID").expect("node");
        let id = resolve(&r, &ns).expect("opaque");
        assert_eq!(to_config_text(&id, &ns), "nsu=urn:plant;b=AQID");
        assert_eq!(to_config_text(&NodeId::new(0, 2258), &ns), "i=2258");
    }
}
