//! Fuzzes the OPC UA mirror's conversions (`opcua::convert`) and the catalogue's layout as
//! nodes (`opcua::address_space::Layout`), for any tag names, types and values the link could
//! carry. Built with the fuzz crate's `opcua` feature only (async-opcua is a long build).
//!
//! Input: up to three catalogues, `[tag count]` then per tag `[name][value type][unit]
//! [description]`, each synced in turn into one address space as the mirror does on a
//! catalogue change; then records `[value type][value][quality][time i64][ticks i64]
//! [timestamps to return]` until the input ends.
//!
//! Checked after each sync: a tag has a node id exactly when its name can be a path of nodes
//! (not empty, no empty segment, no '#'), and that id is `s=<name>` in the mirror's namespace;
//! the node is a variable browsed as the name's last segment, with the DataType of the first
//! tag of that name, organised by the folder of its path (or Objects), with an EngineeringUnits
//! property exactly when it has a unit; every folder of the path exists; the nodes of tags and
//! folders no catalogue tag needs any more are gone; the skipped count is the unservable tags.
//! For values: the Variant holds the same value and its DataType is the tag type's; a status is
//! the raw code; a time survives to the nanosecond through DateTime and picoseconds; any
//! DateTime (as a client may send in HistoryRead) converts without overflow, and back; a
//! DataValue carries exactly the timestamps asked for.
#![no_main]

use std::collections::{BTreeSet, HashMap};

use gateway_rx::opcua::address_space::Layout;
use gateway_rx::opcua::convert;
use gateway_rx_fuzz::{Input, VALUE_TYPES};
use libfuzzer_sys::fuzz_target;
use opcua::server::address_space::{AddressSpace, NodeBase, NodeType};
use opcua::types::{
    DateTime, NodeId, ObjectId, ReferenceTypeId, StatusCode, TimestampsToReturn, Variant,
};
use protocol::catalogue::Catalogue;
use protocol::model::{SourceAddress, TagInfo, Value};

const NS: u16 = 2;
/// Segments names are built from: ordinary, empty, with '#', non-ASCII, and one that looks
/// like a folder id.
const SEGMENTS: [&str; 8] = ["a", "b", "", "x#y", "é", "pump3", "a/", "#"];

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let mut space = AddressSpace::new();
    space.add_namespace("urn:fuzz:mirror", NS);
    let mut layout = Layout::default();
    let mut before: Vec<TagInfo> = Vec::new();
    for _ in 0..input.u8() % 4 {
        let tags: Vec<TagInfo> = (0..input.u8() % 12).map(|_| tag(&mut input)).collect();
        let history = input.u8() & 1 != 0;
        let catalogue = Catalogue::new(tags.clone());
        let out = layout.sync(&mut space, NS, &catalogue, history);
        check_layout(&space, &layout, &tags, &before, out.skipped);
        before = tags;
    }
    while !input.is_empty() {
        check_value(&mut input);
    }
});

fn tag(input: &mut Input<'_>) -> TagInfo {
    let name = match input.u8() % 3 {
        0 => input.text(24),
        _ => (0..input.u8() % 4 + 1)
            .map(|_| input.pick(&SEGMENTS))
            .collect::<Vec<_>>()
            .join("/"),
    };
    TagInfo {
        name,
        value_type: input.pick(&VALUE_TYPES),
        unit: input.text(6),
        description: input.text(12),
        source: SourceAddress::Other(String::new()),
    }
}

fn servable(name: &str) -> bool {
    !name.is_empty() && !name.contains('#') && name.split('/').all(|s| !s.is_empty())
}

fn check_layout(
    space: &AddressSpace,
    layout: &Layout,
    tags: &[TagInfo],
    before: &[TagInfo],
    skipped: usize,
) {
    assert_eq!(skipped, tags.iter().filter(|t| !servable(&t.name)).count());
    let mut first: HashMap<&str, &TagInfo> = HashMap::new();
    let mut folders = BTreeSet::new();
    for (i, t) in tags.iter().enumerate() {
        let id = layout.node_id(i);
        if !servable(&t.name) {
            assert_eq!(id, None, "{:?}", t.name);
            continue;
        }
        assert_eq!(id, Some(&NodeId::new(NS, t.name.as_str())), "{:?}", t.name);
        first.entry(t.name.as_str()).or_insert(t);
        for (at, _) in t.name.match_indices('/') {
            folders.insert(&t.name[..at]);
        }
    }
    for (name, t) in &first {
        let id = NodeId::new(NS, *name);
        let Some(NodeType::Variable(v)) = space.find(&id) else {
            panic!("no variable for {name:?}");
        };
        let leaf = name.rsplit('/').next().unwrap_or(name);
        assert_eq!(v.browse_name().name.as_ref(), leaf, "{name:?}");
        assert_eq!(
            v.data_type(),
            NodeId::from(convert::data_type(t.value_type)),
            "{name:?}"
        );
        let parent = match name.rfind('/') {
            Some(i) => NodeId::new(NS, format!("{}/", &name[..i])),
            None => ObjectId::ObjectsFolder.into(),
        };
        assert!(
            space.has_reference(&parent, &id, ReferenceTypeId::Organizes),
            "{name:?} is not organised by {parent}"
        );
        let eu = NodeId::new(NS, format!("{name}#EngineeringUnits"));
        assert_eq!(space.find(&eu).is_some(), !t.unit.is_empty(), "{name:?}");
    }
    for path in &folders {
        let id = NodeId::new(NS, format!("{path}/"));
        assert!(
            matches!(space.find(&id), Some(NodeType::Object(_))),
            "no folder {path:?}"
        );
    }
    for old in before {
        if servable(&old.name) && !first.contains_key(old.name.as_str()) {
            assert!(
                space.find(&NodeId::new(NS, old.name.as_str())).is_none(),
                "{:?} is still there",
                old.name
            );
        }
        for (at, _) in old.name.match_indices('/') {
            let path = &old.name[..at];
            if servable(&old.name) && !folders.contains(path) {
                let id = NodeId::new(NS, format!("{path}/"));
                assert!(space.find(&id).is_none(), "folder {path:?} is still there");
            }
        }
    }
}

fn check_value(input: &mut Input<'_>) {
    let value_type = input.pick(&VALUE_TYPES);
    let value = input.value(value_type);
    let quality = input.quality();
    let time = input.u64() as i64;
    let ticks = input.u64() as i64;
    let which = input.pick(&[
        TimestampsToReturn::Source,
        TimestampsToReturn::Server,
        TimestampsToReturn::Both,
        TimestampsToReturn::Neither,
        TimestampsToReturn::Invalid,
    ]);

    let variant = convert::variant(&value);
    assert_eq!(
        variant.data_type(),
        Some(NodeId::from(convert::data_type(value_type)).into()),
        "{value:?}"
    );
    assert!(same(&variant, &value), "{value:?} as {variant:?}");
    assert_eq!(convert::status(quality), StatusCode::from(quality.0));
    assert_eq!(convert::status(quality).bits(), quality.0);

    let (dt, ps) = convert::date_time(time);
    assert!(ps < 10_000 && ps % 100 == 0, "{ps}");
    let back = convert::unix_nanos(&dt).expect("not the null time");
    // In the first 100 ns of the range the DateTime's whole ticks are below it: saturated.
    let exact = i128::from(back) + i128::from(ps / 100);
    if back == i64::MIN {
        assert!(exact - i128::from(time) < 100, "{time} -> {dt:?}, {ps}");
    } else {
        assert_eq!(exact, i128::from(time), "{time} -> {dt:?}, {ps}");
    }

    // A client's DateTime.
    let client = DateTime::from(ticks);
    if let Some(n) = convert::unix_nanos(&client)
        && n != i64::MAX
        && n != i64::MIN
    {
        assert_eq!(
            convert::date_time(n).0.checked_ticks(),
            client.checked_ticks(),
            "{ticks} -> {n}"
        );
    }

    let dv = convert::data_value(
        Some(variant),
        convert::status(quality),
        Some(time),
        Some(time.wrapping_add(ticks)),
        which,
    );
    let (source, server) = match which {
        TimestampsToReturn::Source => (true, false),
        TimestampsToReturn::Server => (false, true),
        TimestampsToReturn::Neither => (false, false),
        _ => (true, true),
    };
    assert_eq!(dv.source_timestamp.is_some(), source);
    assert_eq!(dv.server_timestamp.is_some(), server);
    assert!(source || dv.source_picoseconds.is_none());
    assert!(server || dv.server_picoseconds.is_none());
    assert_ne!(dv.source_picoseconds, Some(0));
    assert_ne!(dv.server_picoseconds, Some(0));
    assert_eq!(dv.status, Some(convert::status(quality)));
}

fn same(variant: &Variant, value: &Value) -> bool {
    match (variant, value) {
        (Variant::Boolean(a), Value::Boolean(b)) => a == b,
        (Variant::Int16(a), Value::Int16(b)) => a == b,
        (Variant::Int32(a), Value::Int32(b)) => a == b,
        (Variant::Int64(a), Value::Int64(b)) => a == b,
        (Variant::UInt16(a), Value::UInt16(b)) => a == b,
        (Variant::UInt32(a), Value::UInt32(b)) => a == b,
        (Variant::UInt64(a), Value::UInt64(b)) => a == b,
        (Variant::Float(a), Value::Float(b)) => a.to_bits() == b.to_bits(),
        (Variant::Double(a), Value::Double(b)) => a.to_bits() == b.to_bits(),
        (Variant::String(a), Value::String(b)) => a.as_ref() == b.as_str(),
        (Variant::DateTime(a), Value::DateTime(t)) => **a == convert::date_time(*t).0,
        (Variant::ByteString(a), Value::ByteString(b)) => a.as_ref() == b.as_slice(),
        _ => false,
    }
}
