//! The catalogue as OPC UA nodes: a folder per tag path segment under Objects, a variable per
//! tag, kept in step with the catalogue by a diff each time a new one is installed.
//!
//! Node ids are the tag names in the mirror's namespace (`ns=<mirror>;s=site/area/pump3/speed`),
//! so they survive catalogue changes and restarts. Folders are `s=site/area/` (the path with a
//! trailing '/'), and a tag's EngineeringUnits property is `s=<tag>#EngineeringUnits`: tag names
//! never end in '/' nor hold '#', so neither can meet a tag's id.

use std::collections::{BTreeSet, HashMap};

use opcua::nodes::{ObjectBuilder, VariableBuilder};
use opcua::server::address_space::{AccessLevel, AddressSpace};
use opcua::types::{
    DataTypeId, EUInformation, ExtensionObject, LocalizedText, NodeId, ObjectId, QualifiedName,
    UAString, VariableTypeId, Variant,
};
use protocol::catalogue::Catalogue;
use protocol::model::ValueType;
use protocol::tag_ref::TagRef;

use super::convert;

/// What a tag's node was built from: a change to any of it rebuilds the node.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Built {
    value_type: ValueType,
    unit: String,
    description: String,
}

/// The mirror's part of the address space, as last built.
#[derive(Debug, Default)]
pub struct Layout {
    tags: HashMap<String, Built>,
    folders: BTreeSet<String>,
    /// Node id of each catalogue index (`None`: the tag's name cannot be served).
    ids: Vec<Option<NodeId>>,
}

/// What one [`Layout::sync`] did.
#[derive(Debug, Default)]
pub struct SyncOutcome {
    pub added: usize,
    pub removed: Vec<NodeId>,
    pub rebuilt: usize,
    /// Tags whose name cannot be a path of nodes (an empty segment, a '#').
    pub skipped: usize,
}

/// Whether a name from the link can be laid out as folders and a variable.
fn servable(name: &str) -> bool {
    !name.is_empty() && !name.contains('#') && !name.split('/').any(str::is_empty)
}

pub fn tag_node_id(ns: u16, name: &str) -> NodeId {
    NodeId::new(ns, name)
}

fn folder_node_id(ns: u16, path: &str) -> NodeId {
    NodeId::new(ns, format!("{path}/"))
}

fn eu_node_id(ns: u16, name: &str) -> NodeId {
    NodeId::new(ns, format!("{name}#EngineeringUnits"))
}

/// Every folder path a tag name needs, shortest first (`a/b/c` → `a`, `a/b`).
fn folder_paths(name: &str) -> impl Iterator<Item = &str> {
    name.match_indices('/').map(move |(i, _)| &name[..i])
}

fn parent_id(ns: u16, name: &str) -> NodeId {
    match name.rfind('/') {
        Some(i) => folder_node_id(ns, &name[..i]),
        None => ObjectId::ObjectsFolder.into(),
    }
}

fn leaf(name: &str) -> &str {
    name.rsplit('/').next().unwrap_or(name)
}

impl Layout {
    /// The node id of a catalogue index, as of the last sync.
    pub fn node_id(&self, index: usize) -> Option<&NodeId> {
        self.ids.get(index)?.as_ref()
    }

    /// Every tag's node id, as of the last sync.
    pub fn node_ids(&self) -> impl Iterator<Item = &NodeId> {
        self.ids.iter().flatten()
    }

    /// Brings the address space in step with `catalogue`. `history`: variables are
    /// history-readable.
    pub fn sync(
        &mut self,
        space: &mut AddressSpace,
        ns: u16,
        catalogue: &Catalogue,
        history: bool,
    ) -> SyncOutcome {
        let mut out = SyncOutcome::default();
        let mut wanted: HashMap<&str, TagRef<'_>> = HashMap::with_capacity(catalogue.len());
        self.ids.clear();
        for tag in catalogue {
            if servable(tag.name) {
                // With a name given twice (the link is not trusted), the first tag is the one
                // served (`Catalogue::index_of`), so its type, unit and description are the
                // node's.
                wanted.entry(tag.name).or_insert(tag);
                self.ids.push(Some(tag_node_id(ns, tag.name)));
            } else {
                out.skipped += 1;
                self.ids.push(None);
            }
        }
        // Removed or changed tags go first, so a rebuilt node is inserted afresh.
        let stale: Vec<String> = self
            .tags
            .iter()
            .filter(|(name, built)| {
                wanted
                    .get(name.as_str())
                    .is_none_or(|t| built_of(*t) != **built)
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in stale {
            let id = tag_node_id(ns, &name);
            space.delete(&eu_node_id(ns, &name), true);
            space.delete(&id, true);
            self.tags.remove(&name);
            if wanted.contains_key(name.as_str()) {
                out.rebuilt += 1;
            } else {
                out.removed.push(id);
            }
        }
        // Folders no tag needs any more, deepest first.
        let needed: BTreeSet<String> = wanted
            .keys()
            .flat_map(|n| folder_paths(n))
            .map(str::to_owned)
            .collect();
        let unused: Vec<String> = self.folders.difference(&needed).cloned().collect();
        for path in unused.iter().rev() {
            let id = folder_node_id(ns, path);
            space.delete(&id, true);
            self.folders.remove(path);
            out.removed.push(id);
        }
        for path in &needed {
            if self.folders.insert(path.clone()) {
                ObjectBuilder::new(
                    &folder_node_id(ns, path),
                    QualifiedName::new(ns, leaf(path)),
                    leaf(path),
                )
                .is_folder()
                .organized_by(parent_id(ns, path))
                .insert(space);
            }
        }
        for tag in catalogue {
            if !servable(tag.name) || self.tags.contains_key(tag.name) {
                continue;
            }
            insert_variable(space, ns, tag, history);
            self.tags.insert(tag.name.to_owned(), built_of(tag));
            out.added += 1;
        }
        out.added -= out.rebuilt.min(out.added);
        out
    }
}

fn built_of(tag: TagRef<'_>) -> Built {
    Built {
        value_type: tag.value_type,
        unit: tag.unit.to_owned(),
        description: tag.description.to_owned(),
    }
}

fn insert_variable(space: &mut AddressSpace, ns: u16, tag: TagRef<'_>, history: bool) {
    let id = tag_node_id(ns, tag.name);
    let mut access = AccessLevel::CURRENT_READ;
    if history {
        access |= AccessLevel::HISTORY_READ;
    }
    let mut builder =
        VariableBuilder::new(&id, QualifiedName::new(ns, leaf(tag.name)), leaf(tag.name))
            .data_type(convert::data_type(tag.value_type))
            .value_rank(-1)
            .access_level(access)
            .user_access_level(access)
            .historizing(history)
            .has_type_definition(VariableTypeId::BaseDataVariableType)
            .organized_by(parent_id(ns, tag.name));
    if !tag.description.is_empty() {
        builder = builder.description(LocalizedText::new("", tag.description));
    }
    builder.insert(space);
    if !tag.unit.is_empty() {
        let eu = EUInformation {
            namespace_uri: UAString::null(),
            // -1: no UNECE code is known for a free-text unit.
            unit_id: -1,
            display_name: LocalizedText::new("", tag.unit),
            description: LocalizedText::new("", tag.unit),
        };
        VariableBuilder::new(
            &eu_node_id(ns, tag.name),
            QualifiedName::new(0, "EngineeringUnits"),
            "EngineeringUnits",
        )
        .data_type(DataTypeId::EUInformation)
        .value_rank(-1)
        .value(Variant::from(ExtensionObject::from_message(eu)))
        .access_level(AccessLevel::CURRENT_READ)
        .user_access_level(AccessLevel::CURRENT_READ)
        .has_type_definition(VariableTypeId::PropertyType)
        .property_of(id)
        .insert(space);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A name given twice: the node is built from the first tag, the one whose values are
    /// served, whatever an earlier catalogue held.
    #[test]
    fn a_name_given_twice_is_served_as_its_first_tag() {
        use opcua::server::address_space::NodeType;
        use protocol::model::{SourceAddress, TagInfo};

        let tag = |value_type| TagInfo {
            name: "line/a".into(),
            value_type,
            unit: String::new(),
            description: String::new(),
            source: SourceAddress::Other(String::new()),
        };
        let data_type = |space: &AddressSpace| match space.find(&tag_node_id(2, "line/a")) {
            Some(NodeType::Variable(v)) => v.data_type(),
            other => panic!("not a variable: {other:?}"),
        };
        let mut space = AddressSpace::new();
        space.add_namespace("urn:test:mirror", 2);
        let mut layout = Layout::default();
        let first = Catalogue::new(vec![tag(ValueType::Boolean)]);
        layout.sync(&mut space, 2, &first, false);
        assert_eq!(data_type(&space), NodeId::from(DataTypeId::Boolean));
        let twice = Catalogue::new(vec![tag(ValueType::Int16), tag(ValueType::Boolean)]);
        assert_eq!(twice.index_of("line/a"), Some(0));
        let out = layout.sync(&mut space, 2, &twice, false);
        assert_eq!(data_type(&space), NodeId::from(DataTypeId::Int16));
        assert_eq!((out.rebuilt, out.skipped), (1, 0));
    }

    #[test]
    fn names_and_paths() {
        assert!(servable("site/area/pump3/speed"));
        assert!(!servable("a//b"));
        assert!(!servable("/a"));
        assert!(!servable("a#b"));
        assert_eq!(folder_paths("a/b/c").collect::<Vec<_>>(), vec!["a", "a/b"]);
        assert_eq!(leaf("a/b/c"), "c");
        assert_eq!(leaf("c"), "c");
        assert_eq!(parent_id(2, "a/b/c"), NodeId::new(2, "a/b/"));
    }
}
