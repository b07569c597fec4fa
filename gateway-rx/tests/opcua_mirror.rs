//! The OPC UA mirror against async-opcua's own client: address space, values and qualities,
//! subscriptions, catalogue changes, refusals, HistoryRead and a secured endpoint.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use config::opcua_server::{Endpoint, OpcUaServer, SecurityMode, SecurityPolicy, User};
use config::sinks::Secret;
use gateway_rx::opcua::OpcUaMirror;
use gateway_rx::state::State;
use opcua::client::{
    ClientBuilder, DataChangeCallback, HistoryReadAction, HistoryUpdateAction, IdentityToken,
    Session,
};
use opcua::types::{
    AddNodesItem, AttributeId, BrowseDescription, BrowseDirection, ByteString, CallMethodRequest,
    DataChangeFilter, DataChangeTrigger, DataTypeId, DataValue, DateTime, EUInformation,
    ExpandedNodeId, ExtensionObject, HistoryData, HistoryReadValueId, MessageSecurityMode,
    MonitoredItemCreateRequest, MonitoringMode, MonitoringParameters, NodeClass, NodeId, ObjectId,
    QualifiedName, ReadRawModifiedDetails, ReadValueId, ReferenceTypeId, StatusCode,
    TimestampsToReturn, UAString, Variant, WriteValue,
};
use opcua::types::{PerformUpdateType, UpdateDataDetails};
use protocol::catalogue::Catalogue;
use protocol::message::Stream;
use protocol::model::{Quality, Sample, SourceAddress, TagInfo, UnixNanos, Value, ValueType};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::timeout;

const NS_URI: &str = "urn:gateway:mirror:test";
/// A source time with nanoseconds that DateTime's 100 ns ticks cannot hold alone.
const T0: UnixNanos = 1_700_000_000_123_456_789;
const RECEIVED: UnixNanos = 1_700_000_001_000_000_000;

fn tag(name: &str, value_type: ValueType, unit: &str, description: &str) -> TagInfo {
    TagInfo {
        name: name.into(),
        value_type,
        unit: unit.into(),
        description: description.into(),
        source: SourceAddress::OpcUa {
            endpoint: "opc.tcp://plant:4840".into(),
            node_id: format!("ns=2;s={name}"),
        },
    }
}

/// Every value type, with the value it gets and the OPC UA DataType it must be served as.
fn typed() -> Vec<(&'static str, Value, DataTypeId, Variant)> {
    vec![
        (
            "types/boolean",
            Value::Boolean(true),
            DataTypeId::Boolean,
            Variant::Boolean(true),
        ),
        (
            "types/int16",
            Value::Int16(-2),
            DataTypeId::Int16,
            Variant::Int16(-2),
        ),
        (
            "types/int32",
            Value::Int32(-70_000),
            DataTypeId::Int32,
            Variant::Int32(-70_000),
        ),
        (
            "types/int64",
            Value::Int64(-5_000_000_000),
            DataTypeId::Int64,
            Variant::Int64(-5_000_000_000),
        ),
        (
            "types/uint16",
            Value::UInt16(65_535),
            DataTypeId::UInt16,
            Variant::UInt16(65_535),
        ),
        (
            "types/uint32",
            Value::UInt32(4_000_000_000),
            DataTypeId::UInt32,
            Variant::UInt32(4_000_000_000),
        ),
        (
            "types/uint64",
            Value::UInt64(u64::MAX),
            DataTypeId::UInt64,
            Variant::UInt64(u64::MAX),
        ),
        (
            "types/float",
            Value::Float(1.5),
            DataTypeId::Float,
            Variant::Float(1.5),
        ),
        (
            "types/double",
            Value::Double(-2.25),
            DataTypeId::Double,
            Variant::Double(-2.25),
        ),
        (
            "types/string",
            Value::String("héllo".into()),
            DataTypeId::String,
            Variant::String(UAString::from("héllo")),
        ),
        (
            "types/datetime",
            Value::DateTime(1_600_000_000_000_000_000),
            DataTypeId::DateTime,
            Variant::DateTime(Box::new(DateTime::from((2020, 9, 13, 12, 26, 40)))),
        ),
        (
            "types/bytestring",
            Value::ByteString(vec![0, 1, 255]),
            DataTypeId::ByteString,
            Variant::ByteString(ByteString::from(vec![0u8, 1, 255])),
        ),
    ]
}

fn catalogue() -> Catalogue {
    let mut tags = vec![
        tag(
            "site/area/pump3/speed",
            ValueType::Double,
            "rpm",
            "Pump 3 shaft speed",
        ),
        tag("site/area/pump3/state", ValueType::UInt16, "", ""),
        tag("site/bad", ValueType::Int32, "", ""),
    ];
    for (name, value, _, _) in typed() {
        tags.push(tag(name, value.value_type(), "", ""));
    }
    Catalogue::new(tags)
}

fn sample(cat: &Catalogue, name: &str, value: Value, quality: Quality, time: UnixNanos) -> Sample {
    Sample {
        tag: cat.index_of(name).expect("tag in catalogue"),
        value,
        quality,
        time,
    }
}

/// A state with the catalogue, the link up, and every tag but `site/area/pump3/state` valued.
fn filled_state() -> (Arc<State>, Catalogue) {
    let state = Arc::new(State::new());
    let cat = catalogue();
    state.apply_catalogue(cat.clone());
    state.new_session(1);
    let mut samples = vec![
        sample(
            &cat,
            "site/area/pump3/speed",
            Value::Double(1480.5),
            Quality::GOOD,
            T0,
        ),
        sample(
            &cat,
            "site/bad",
            Value::Int32(7),
            Quality::BAD_DEVICE_FAILURE,
            T0,
        ),
    ];
    for (i, (name, value, _, _)) in typed().into_iter().enumerate() {
        // A Good sub-code (GoodLocalOverride) must come through as it is.
        let q = if i == 0 {
            Quality(0x0096_0000)
        } else {
            Quality::GOOD
        };
        samples.push(sample(&cat, name, value, q, T0 + i as i64));
    }
    let out = state.apply_samples(cat.hash(), &samples, RECEIVED, Stream::Live);
    assert_eq!(out.applied, samples.len() as u64);
    (state, cat)
}

fn server_config(dir: &Path) -> OpcUaServer {
    OpcUaServer {
        bind: "127.0.0.1:0".parse().unwrap(),
        namespace_uri: NS_URI.into(),
        application_name: "gateway-rx test mirror".into(),
        application_uri: "urn:gateway:rx:test".into(),
        pki_dir: dir.join("server-pki"),
        insecure_trust_any_client_certificate: true,
        endpoints: vec![Endpoint {
            policy: SecurityPolicy::None,
            mode: SecurityMode::None,
        }],
        anonymous: true,
        users: vec![],
        max_sessions: 10,
        max_subscriptions_per_session: 10,
        max_monitored_items_per_subscription: 1000,
        max_history_continuation_points: 2,
    }
}

async fn connect(
    mirror: &OpcUaMirror,
    dir: &Path,
    policy: opcua::crypto::SecurityPolicy,
    mode: MessageSecurityMode,
    identity: IdentityToken,
) -> Result<Arc<Session>, StatusCode> {
    let mut client = ClientBuilder::new()
        .application_name("gateway-rx test client")
        .application_uri("urn:gateway:rx:test-client")
        .pki_dir(dir.join("client-pki"))
        .create_sample_keypair(true)
        .trust_server_certs(true)
        .session_retry_limit(0)
        .client()
        .expect("client config");
    let (session, event_loop) = client
        .connect_to_matching_endpoint(
            (mirror.endpoint_url.as_str(), policy.to_str(), mode),
            identity,
        )
        .await
        .map_err(|e| e.status())?;
    let event_loop = event_loop.spawn();
    // A refused session ends the event loop; waiting for the connection alone would not end.
    tokio::select! {
        connected = session.wait_for_connection() => {
            if connected { Ok(session) } else { Err(StatusCode::BadNotConnected) }
        }
        ended = event_loop => Err(ended.unwrap_or(StatusCode::BadInternalError)),
        _ = tokio::time::sleep(Duration::from_secs(10)) => Err(StatusCode::BadTimeout),
    }
}

async fn anonymous(mirror: &OpcUaMirror, dir: &Path) -> Arc<Session> {
    connect(
        mirror,
        dir,
        opcua::crypto::SecurityPolicy::None,
        MessageSecurityMode::None,
        IdentityToken::Anonymous,
    )
    .await
    .expect("anonymous session on the None endpoint")
}

async fn ns(session: &Session) -> u16 {
    session
        .get_namespace_index(NS_URI)
        .await
        .expect("the mirror's namespace is in the server's namespace array")
}

fn id(ns: u16, s: &str) -> NodeId {
    NodeId::new(ns, s)
}

async fn browse_names(
    session: &Session,
    node: NodeId,
    refs: ReferenceTypeId,
) -> Vec<(String, NodeId, NodeClass)> {
    let result = session
        .browse(
            &[BrowseDescription {
                node_id: node,
                browse_direction: BrowseDirection::Forward,
                reference_type_id: refs.into(),
                include_subtypes: true,
                node_class_mask: 0,
                result_mask: 0x3f,
            }],
            1000,
            None,
        )
        .await
        .expect("browse");
    assert_eq!(result[0].status_code, StatusCode::Good);
    result[0]
        .references
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|r| {
            (
                r.browse_name.name.to_string(),
                r.node_id.node_id,
                r.node_class,
            )
        })
        .collect()
}

async fn read(session: &Session, node: &NodeId, attribute: AttributeId) -> DataValue {
    session
        .read(
            &[ReadValueId {
                node_id: node.clone(),
                attribute_id: attribute as u32,
                ..Default::default()
            }],
            TimestampsToReturn::Both,
            0.0,
        )
        .await
        .expect("read")
        .remove(0)
}

fn child<'a>(
    list: &'a [(String, NodeId, NodeClass)],
    name: &str,
) -> &'a (String, NodeId, NodeClass) {
    list.iter()
        .find(|(n, _, _)| n == name)
        .unwrap_or_else(|| panic!("{name} not in {list:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn address_space_values_and_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let (state, cat) = filled_state();
    let mirror = OpcUaMirror::start(&server_config(dir.path()), state.clone(), None)
        .await
        .expect("mirror starts");
    assert_ne!(mirror.addr.port(), 0, "the real port is reported");
    let session = anonymous(&mirror, dir.path()).await;
    let ns = ns(&session).await;

    // Browse: Objects → site → area → pump3 → speed, and the types folder.
    let mut objects = Vec::new();
    for _ in 0..100 {
        objects = browse_names(
            &session,
            ObjectId::ObjectsFolder.into(),
            ReferenceTypeId::Organizes,
        )
        .await;
        if objects.iter().any(|(n, _, _)| n == "site") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let site = child(&objects, "site");
    assert_eq!(
        (site.1.clone(), site.2),
        (id(ns, "site/"), NodeClass::Object)
    );
    child(&objects, "types");
    let site_children = browse_names(&session, id(ns, "site/"), ReferenceTypeId::Organizes).await;
    child(&site_children, "area");
    assert_eq!(child(&site_children, "bad").2, NodeClass::Variable);
    let area = browse_names(&session, id(ns, "site/area/"), ReferenceTypeId::Organizes).await;
    child(&area, "pump3");
    let pump3 = browse_names(
        &session,
        id(ns, "site/area/pump3/"),
        ReferenceTypeId::Organizes,
    )
    .await;
    let speed = child(&pump3, "speed");
    assert_eq!(
        (speed.1.clone(), speed.2),
        (id(ns, "site/area/pump3/speed"), NodeClass::Variable)
    );
    child(&pump3, "state");

    // Every value type: DataType attribute, Variant, status, timestamps to the nanosecond.
    for (i, (name, _, data_type, variant)) in typed().into_iter().enumerate() {
        let node = id(ns, name);
        let dt = read(&session, &node, AttributeId::DataType).await;
        assert_eq!(
            dt.value,
            Some(Variant::NodeId(Box::new(data_type.into()))),
            "{name}"
        );
        let v = read(&session, &node, AttributeId::Value).await;
        assert_eq!(v.value, Some(variant), "{name}");
        let expected_status = if i == 0 { 0x0096_0000 } else { 0 };
        assert_eq!(v.status.map(|s| s.bits()), Some(expected_status), "{name}");
        let t = T0 + i as i64;
        let source = v.source_timestamp.expect("source timestamp");
        let unix = (source.ticks() - 116_444_736_000_000_000) * 100
            + i64::from(v.source_picoseconds.unwrap_or(0) / 100);
        assert_eq!(unix, t, "{name}: source time to the nanosecond");
        let server = v.server_timestamp.expect("server timestamp");
        assert_eq!(
            (server.ticks() - 116_444_736_000_000_000) * 100,
            RECEIVED,
            "{name}"
        );
    }

    // Description and EngineeringUnits.
    let speed_id = id(ns, "site/area/pump3/speed");
    let desc = read(&session, &speed_id, AttributeId::Description).await;
    let Some(Variant::LocalizedText(desc)) = desc.value else {
        panic!("Description: {desc:?}");
    };
    assert_eq!(desc.text.as_ref(), "Pump 3 shaft speed");
    let access = read(&session, &speed_id, AttributeId::AccessLevel).await;
    assert_eq!(
        access.value,
        Some(Variant::Byte(1)),
        "CurrentRead only without a store"
    );
    let props = browse_names(&session, speed_id.clone(), ReferenceTypeId::HasProperty).await;
    let eu = child(&props, "EngineeringUnits");
    let eu = read(&session, &eu.1, AttributeId::Value).await;
    let Some(Variant::ExtensionObject(eo)) = eu.value else {
        panic!("EngineeringUnits is not an ExtensionObject: {eu:?}");
    };
    let eu: &EUInformation = eo.inner_as().expect("EUInformation");
    assert_eq!(eu.display_name.text.as_ref(), "rpm");
    let props = browse_names(&session, id(ns, "site/bad"), ReferenceTypeId::HasProperty).await;
    assert!(
        props.iter().all(|(n, _, _)| n != "EngineeringUnits"),
        "no unit, no property"
    );

    // Never received; Bad from the plant.
    let never = read(
        &session,
        &id(ns, "site/area/pump3/state"),
        AttributeId::Value,
    )
    .await;
    assert_eq!(
        (never.value, never.status),
        (None, Some(StatusCode::BadWaitingForInitialData))
    );
    let bad = read(&session, &id(ns, "site/bad"), AttributeId::Value).await;
    assert_eq!(bad.status, Some(StatusCode::BadDeviceFailure));
    assert_eq!(bad.value, Some(Variant::Int32(7)));

    // Write refused, value unchanged.
    let results = session
        .write(&[WriteValue {
            node_id: speed_id.clone(),
            attribute_id: AttributeId::Value as u32,
            index_range: Default::default(),
            value: DataValue::new_now(1.0f64),
        }])
        .await
        .expect("write answered");
    assert_eq!(results, vec![StatusCode::BadNotWritable]);
    let after = read(&session, &speed_id, AttributeId::Value).await;
    assert_eq!(after.value, Some(Variant::Double(1480.5)));

    // Call refused.
    let call = session
        .call_one(CallMethodRequest {
            object_id: id(ns, "site/area/pump3/"),
            method_id: speed_id.clone(),
            input_arguments: None,
        })
        .await
        .expect("call answered");
    assert!(
        matches!(
            call.status_code,
            StatusCode::BadMethodInvalid
                | StatusCode::BadNotExecutable
                | StatusCode::BadServiceUnsupported
        ),
        "call: {}",
        call.status_code
    );

    // AddNodes refused.
    let added = session
        .add_nodes(&[AddNodesItem {
            parent_node_id: ExpandedNodeId::from(id(ns, "site/")),
            reference_type_id: ReferenceTypeId::Organizes.into(),
            requested_new_node_id: ExpandedNodeId::from(id(ns, "site/new")),
            browse_name: QualifiedName::new(ns, "new"),
            node_class: NodeClass::Variable,
            node_attributes: ExtensionObject::null(),
            type_definition: ExpandedNodeId::null(),
        }])
        .await;
    match added {
        Ok(r) => assert!(r[0].status_code.is_bad(), "add nodes: {}", r[0].status_code),
        Err(e) => assert!(e.status().is_bad(), "{e}"),
    }

    // Catalogue change: a tag appears, one disappears, one changes type, no restart.
    let mut tags: Vec<TagInfo> = cat.tags().iter().filter(|t| t.name != "site/bad").collect();
    tags.push(tag(
        "site/area/pump4/flow",
        ValueType::Float,
        "m3/h",
        "Pump 4 flow",
    ));
    for t in &mut tags {
        if t.name == "types/int16" {
            t.value_type = ValueType::Int64;
        }
    }
    let new = Catalogue::new(tags);
    state.apply_catalogue(new.clone());
    state.apply_samples(
        new.hash(),
        &[sample(
            &new,
            "site/area/pump4/flow",
            Value::Float(3.5),
            Quality::GOOD,
            T0,
        )],
        RECEIVED,
        Stream::Live,
    );
    let flow = id(ns, "site/area/pump4/flow");
    let mut appeared = false;
    for _ in 0..200 {
        let area = browse_names(&session, id(ns, "site/area/"), ReferenceTypeId::Organizes).await;
        if area.iter().any(|(n, _, _)| n == "pump4") {
            appeared = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(appeared, "pump4 folder appears after the catalogue change");
    assert_eq!(
        read(&session, &flow, AttributeId::Value).await.value,
        Some(Variant::Float(3.5))
    );
    let gone = read(&session, &id(ns, "site/bad"), AttributeId::Value).await;
    assert_eq!(gone.status, Some(StatusCode::BadNodeIdUnknown));
    let gone = read(&session, &id(ns, "site/bad"), AttributeId::DisplayName).await;
    assert_eq!(gone.status, Some(StatusCode::BadNodeIdUnknown));
    let site_children = browse_names(&session, id(ns, "site/"), ReferenceTypeId::Organizes).await;
    assert!(site_children.iter().all(|(n, _, _)| n != "bad"));
    let retyped = read(&session, &id(ns, "types/int16"), AttributeId::DataType).await;
    assert_eq!(
        retyped.value,
        Some(Variant::NodeId(Box::new(DataTypeId::Int64.into())))
    );
    let retyped = read(&session, &id(ns, "types/int16"), AttributeId::Value).await;
    assert_eq!(
        retyped.status,
        Some(StatusCode::BadWaitingForInitialData),
        "a retyped tag starts without a value"
    );

    let c = &mirror.monitor.counters;
    assert_eq!(
        c.writes_refused.load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert!(mirror.monitor.sessions() >= 1);
    let _ = session.disconnect().await;
}

type Changes = UnboundedReceiver<DataValue>;

async fn next_change(rx: &mut Changes, what: &str) -> DataValue {
    timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap_or_else(|_| panic!("no data change: {what}"))
        .expect("subscription open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_gets_samples_and_link_quality() {
    let dir = tempfile::tempdir().unwrap();
    let (state, cat) = filled_state();
    let mirror = OpcUaMirror::start(&server_config(dir.path()), state.clone(), None)
        .await
        .expect("mirror starts");
    let session = anonymous(&mirror, dir.path()).await;
    let ns = ns(&session).await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let sub = session
        .create_subscription(
            Duration::from_millis(50),
            100,
            20,
            0,
            0,
            true,
            DataChangeCallback::new(move |v, _| {
                let _ = tx.send(v);
            }),
        )
        .await
        .expect("subscription");
    let speed = id(ns, "site/area/pump3/speed");
    let created = session
        .create_monitored_items(
            sub,
            TimestampsToReturn::Both,
            vec![MonitoredItemCreateRequest {
                item_to_monitor: ReadValueId {
                    node_id: speed.clone(),
                    attribute_id: AttributeId::Value as u32,
                    ..Default::default()
                },
                monitoring_mode: MonitoringMode::Reporting,
                // async-opcua reports a change of status alone only with a DataChangeFilter
                // (without one it compares values only, where Part 4 says StatusValue); a
                // sampling interval of 0 keeps the plant's source timestamps as they are.
                requested_parameters: MonitoringParameters {
                    sampling_interval: 0.0,
                    queue_size: 10,
                    discard_oldest: true,
                    filter: ExtensionObject::from_message(DataChangeFilter {
                        trigger: DataChangeTrigger::StatusValue,
                        deadband_type: 0,
                        deadband_value: 0.0,
                    }),
                    ..Default::default()
                },
            }],
        )
        .await
        .expect("monitored item");
    assert_eq!(created[0].result.status_code, StatusCode::Good);
    let first = next_change(&mut rx, "initial value").await;
    assert_eq!(first.value, Some(Variant::Double(1480.5)));

    let index = cat.index_of("site/area/pump3/speed").unwrap();
    for (k, v) in [1490.0, 1500.25].into_iter().enumerate() {
        let t = T0 + 1_000_000_000 * (k as i64 + 1);
        state.apply_samples(
            cat.hash(),
            &[Sample {
                tag: index,
                value: Value::Double(v),
                quality: Quality::GOOD,
                time: t,
            }],
            RECEIVED + 1,
            Stream::Live,
        );
        let got = next_change(&mut rx, "new sample").await;
        assert_eq!(got.value, Some(Variant::Double(v)));
        assert_eq!(got.status, Some(StatusCode::Good));
    }

    state.mark_link_down(RECEIVED + 2);
    let down = next_change(&mut rx, "link down").await;
    assert_eq!(
        down.status.map(|s| s.bits()),
        Some(0x408F_0000),
        "UncertainNoCommunicationLastUsableValue"
    );
    assert_eq!(
        down.value,
        Some(Variant::Double(1500.25)),
        "the last value is kept"
    );

    // The link comes back with a new session: Uncertain until the tag is received again.
    state.new_session(2);
    state.apply_samples(
        cat.hash(),
        &[Sample {
            tag: index,
            value: Value::Double(1510.0),
            quality: Quality::GOOD,
            time: T0 + 9,
        }],
        RECEIVED + 3,
        Stream::Snapshot,
    );
    let mut back = next_change(&mut rx, "link up").await;
    while back.value != Some(Variant::Double(1510.0)) {
        back = next_change(&mut rx, "the new session's value").await;
    }
    assert_eq!(back.status, Some(StatusCode::Good));
    assert!(mirror.monitor.subscriptions() >= 1);

    // A tag removed from the catalogue: its monitored item hears BadNodeIdUnknown.
    let without: Vec<TagInfo> = cat
        .tags()
        .iter()
        .filter(|t| t.name != "site/area/pump3/speed")
        .collect();
    state.apply_catalogue(Catalogue::new(without));
    let mut gone = next_change(&mut rx, "tag removed").await;
    while gone.status != Some(StatusCode::BadNodeIdUnknown) {
        gone = next_change(&mut rx, "BadNodeIdUnknown").await;
    }
    assert_eq!(gone.value, None);
    let _ = session.disconnect().await;
}

fn fill_store(path: &Path, name: &str, n: i64) {
    let conn = gateway_rx::store::db::open_rw(path).expect("store");
    let tag = gateway_rx::store::db::tag_id(&conn, name, ValueType::Double).unwrap();
    for i in 0..n {
        let q = if i == 3 {
            Quality::UNCERTAIN
        } else {
            Quality::GOOD
        };
        gateway_rx::store::db::insert_sample(
            &conn,
            tag,
            T0 + i * 1_000_000_000,
            &Value::Double(i as f64),
            q,
        )
        .unwrap();
    }
}

fn history_values(r: &opcua::types::HistoryReadResult) -> Vec<(f64, u32, i64)> {
    let data: &HistoryData = r.history_data.inner_as().expect("HistoryData");
    data.data_values
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|v| {
            let Some(Variant::Double(x)) = v.value else {
                panic!("{v:?}")
            };
            let t = v.source_timestamp.expect("source time");
            (
                x,
                v.status.map_or(0, |s| s.bits()),
                (t.ticks() - 116_444_736_000_000_000) * 100,
            )
        })
        .collect()
}

fn raw(start: UnixNanos, end: Option<UnixNanos>, n: u32, modified: bool) -> HistoryReadAction {
    HistoryReadAction::ReadRawModifiedDetails(ReadRawModifiedDetails {
        is_read_modified: modified,
        start_time: gateway_rx::opcua::convert::date_time(start).0,
        end_time: end.map_or(DateTime::null(), |e| {
            gateway_rx::opcua::convert::date_time(e).0
        }),
        num_values_per_node: n,
        return_bounds: false,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_read_pages_through_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("history.sqlite");
    fill_store(&store, "site/area/pump3/speed", 25);
    let (state, _) = filled_state();
    let mirror = OpcUaMirror::start(&server_config(dir.path()), state, Some(store))
        .await
        .expect("mirror starts");
    let session = anonymous(&mirror, dir.path()).await;
    let ns = ns(&session).await;
    let speed = id(ns, "site/area/pump3/speed");
    let access = read(&session, &speed, AttributeId::AccessLevel).await;
    assert_eq!(
        access.value,
        Some(Variant::Byte(1 | 4)),
        "CurrentRead | HistoryRead"
    );
    let node = |cp: ByteString| HistoryReadValueId {
        node_id: speed.clone(),
        index_range: Default::default(),
        data_encoding: QualifiedName::null(),
        continuation_point: cp,
    };
    // Forward, [start, end): 25 values stored, end excludes the last; pages of 10.
    let end = T0 + 24 * 1_000_000_000;
    let mut cp = ByteString::null();
    let mut got = Vec::new();
    let mut pages = 0;
    loop {
        let r = session
            .history_read(
                raw(T0, Some(end), 10, false),
                TimestampsToReturn::Both,
                false,
                &[node(cp.clone())],
            )
            .await
            .expect("history read")
            .remove(0);
        assert_eq!(r.status_code, StatusCode::Good);
        let page = history_values(&r);
        assert!(page.len() <= 10);
        got.extend(page);
        pages += 1;
        if r.continuation_point.is_null_or_empty() {
            break;
        }
        cp = r.continuation_point;
    }
    assert_eq!(pages, 3);
    let expected: Vec<(f64, u32, i64)> = (0..24)
        .map(|i| {
            (
                i as f64,
                if i == 3 { 0x4000_0000 } else { 0 },
                T0 + i * 1_000_000_000,
            )
        })
        .collect();
    // DateTime holds 100 ns ticks; T0's last two digits come in the picoseconds, dropped here.
    let truncate = |v: Vec<(f64, u32, i64)>| -> Vec<(f64, u32, i64)> {
        v.into_iter()
            .map(|(x, q, t)| (x, q, t.div_euclid(100) * 100))
            .collect()
    };
    assert_eq!(truncate(got), truncate(expected));

    // Reverse: start later than end, (end, start], newest first.
    let r = session
        .history_read(
            raw(
                T0 + 24 * 1_000_000_000,
                Some(T0 + 19 * 1_000_000_000),
                0,
                false,
            ),
            TimestampsToReturn::Both,
            false,
            &[node(ByteString::null())],
        )
        .await
        .unwrap()
        .remove(0);
    let values: Vec<f64> = history_values(&r).into_iter().map(|v| v.0).collect();
    assert_eq!(values, vec![24.0, 23.0, 22.0, 21.0, 20.0]);
    assert!(r.continuation_point.is_null_or_empty());

    // Release: the point is gone afterwards.
    let r = session
        .history_read(
            raw(T0, None, 5, false),
            TimestampsToReturn::Both,
            false,
            &[node(ByteString::null())],
        )
        .await
        .unwrap()
        .remove(0);
    assert_eq!(history_values(&r).len(), 5);
    let cp = r.continuation_point;
    assert!(!cp.is_null_or_empty());
    let released = session
        .history_read(
            raw(T0, None, 5, false),
            TimestampsToReturn::Both,
            true,
            &[node(cp.clone())],
        )
        .await
        .unwrap()
        .remove(0);
    assert_eq!(released.status_code, StatusCode::Good);
    let again = session
        .history_read(
            raw(T0, None, 5, false),
            TimestampsToReturn::Both,
            false,
            &[node(cp)],
        )
        .await
        .unwrap()
        .remove(0);
    assert_eq!(again.status_code, StatusCode::BadContinuationPointInvalid);

    // At most max_history_continuation_points (2) open per session.
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let r = session
            .history_read(
                raw(T0, None, 1, false),
                TimestampsToReturn::Both,
                false,
                &[node(ByteString::null())],
            )
            .await
            .unwrap()
            .remove(0);
        statuses.push(r.status_code);
    }
    assert_eq!(
        statuses,
        vec![
            StatusCode::Good,
            StatusCode::Good,
            StatusCode::BadNoContinuationPoints
        ]
    );

    // HistoryUpdate is refused and the store keeps what it had.
    let updated = session
        .history_update(&[HistoryUpdateAction::UpdateDataDetails(UpdateDataDetails {
            node_id: speed.clone(),
            perform_insert_replace: PerformUpdateType::Replace,
            update_values: Some(vec![DataValue {
                value: Some(Variant::Double(-1.0)),
                source_timestamp: Some(gateway_rx::opcua::convert::date_time(T0).0),
                ..DataValue::null()
            }]),
        })])
        .await
        .expect("history update answered");
    assert!(
        matches!(
            updated[0].status_code,
            StatusCode::BadUserAccessDenied | StatusCode::BadHistoryOperationUnsupported
        ),
        "history update: {}",
        updated[0].status_code
    );
    let r = session
        .history_read(
            raw(T0, Some(T0 + 1), 0, false),
            TimestampsToReturn::Both,
            false,
            &[node(ByteString::null())],
        )
        .await
        .unwrap()
        .remove(0);
    assert_eq!(
        history_values(&r).first().map(|v| v.0),
        Some(0.0),
        "unchanged"
    );

    // Modified values are not kept; a tag with nothing stored answers Good with no values.
    let r = session
        .history_read(
            raw(T0, Some(end), 0, true),
            TimestampsToReturn::Both,
            false,
            &[node(ByteString::null())],
        )
        .await
        .unwrap()
        .remove(0);
    assert_eq!(r.status_code, StatusCode::BadHistoryOperationUnsupported);
    let r = session
        .history_read(
            raw(T0, Some(end), 0, false),
            TimestampsToReturn::Both,
            false,
            &[HistoryReadValueId {
                node_id: id(ns, "types/double"),
                ..node(ByteString::null())
            }],
        )
        .await
        .unwrap()
        .remove(0);
    assert_eq!(r.status_code, StatusCode::Good);
    assert!(history_values(&r).is_empty());
    let _ = session.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secured_endpoint_with_user_name() {
    let dir = tempfile::tempdir().unwrap();
    let (state, _) = filled_state();
    let mut config = server_config(dir.path());
    config.endpoints = vec![Endpoint {
        policy: SecurityPolicy::Basic256Sha256,
        mode: SecurityMode::SignAndEncrypt,
    }];
    config.anonymous = false;
    config.users = vec![User {
        name: "historian".into(),
        password: Secret::new("s3cret-enough"),
        password_file: dir.path().join("unused"),
    }];
    let mirror = OpcUaMirror::start(&config, state, None)
        .await
        .expect("mirror starts");
    let secure = (
        opcua::crypto::SecurityPolicy::Basic256Sha256,
        MessageSecurityMode::SignAndEncrypt,
    );
    let session = connect(
        &mirror,
        dir.path(),
        secure.0,
        secure.1,
        IdentityToken::UserName("historian".into(), "s3cret-enough".into()),
    )
    .await
    .expect("the right password opens a session");
    let ns = ns(&session).await;
    let v = read(
        &session,
        &id(ns, "site/area/pump3/speed"),
        AttributeId::Value,
    )
    .await;
    assert_eq!(v.value, Some(Variant::Double(1480.5)));
    let _ = session.disconnect().await;

    let wrong = connect(
        &mirror,
        dir.path(),
        secure.0,
        secure.1,
        IdentityToken::UserName("historian".into(), "wrong".into()),
    )
    .await;
    assert_eq!(
        wrong.err(),
        Some(StatusCode::BadIdentityTokenRejected),
        "a wrong password is refused"
    );
    let anon = connect(
        &mirror,
        dir.path(),
        secure.0,
        secure.1,
        IdentityToken::Anonymous,
    )
    .await;
    assert_eq!(
        anon.err(),
        Some(StatusCode::BadSecurityPolicyRejected),
        "the endpoint offers no anonymous token policy when anonymous is off"
    );
    let none = connect(
        &mirror,
        dir.path(),
        opcua::crypto::SecurityPolicy::None,
        MessageSecurityMode::None,
        IdentityToken::UserName("historian".into(), "s3cret-enough".into()),
    )
    .await;
    assert_eq!(
        none.err(),
        Some(StatusCode::BadTcpEndpointUrlInvalid),
        "no None endpoint is offered"
    );

    // Without insecure_trust_any_client_certificate, an unknown client certificate is refused
    // and lands in rejected/; moved to trusted/, it is accepted.
    drop(mirror);
    let (state, _) = filled_state();
    config.insecure_trust_any_client_certificate = false;
    config.pki_dir = dir.path().join("strict-pki");
    let mirror = OpcUaMirror::start(&config, state, None)
        .await
        .expect("mirror starts");
    let user = || IdentityToken::UserName("historian".into(), "s3cret-enough".into());
    let refused = connect(&mirror, dir.path(), secure.0, secure.1, user()).await;
    assert!(
        refused.is_err(),
        "an untrusted client certificate is refused"
    );
    let rejected: Vec<_> = std::fs::read_dir(config.pki_dir.join("rejected"))
        .expect("rejected/ exists")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    let trusted = config.pki_dir.join("trusted");
    std::fs::create_dir_all(&trusted).unwrap();
    let name = rejected[0].file_name().expect("file name");
    std::fs::rename(&rejected[0], trusted.join(name)).unwrap();
    let session = connect(&mirror, dir.path(), secure.0, secure.1, user())
        .await
        .expect("a trusted client certificate is accepted");
    let _ = session.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_runs_the_mirror_from_its_config() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[link]\ninsecure_no_key = true\nbind = \"127.0.0.1:5600\"\n\n[opcua_server]\nbind = \"127.0.0.1:0\"\n\
         namespace_uri = \"{NS_URI}\"\n\n[store]\npath = \"store/history.sqlite\"\n"
    );
    let mut config = config::rx::RxConfig::parse(&text, &dir.path().join("rx.toml"))
        .unwrap_or_else(|e| panic!("{e}"));
    // The link's own port does not matter here; the config refuses 0 for it.
    config.link.bind = "127.0.0.1:0".parse().unwrap();
    let receiver = gateway_rx::Receiver::start(config)
        .await
        .expect("receiver starts");
    let addr = receiver.opcua_addr.expect("the mirror runs");
    assert_ne!(addr.port(), 0);
    let url = receiver.opcua_endpoint.clone().expect("endpoint URL");
    assert_eq!(url, format!("opc.tcp://127.0.0.1:{}/", addr.port()));
    assert!(
        dir.path().join("store/opcua-pki/own/cert.der").is_file(),
        "the server certificate is created beside the store on first start"
    );

    let cat = catalogue();
    receiver.state.apply_catalogue(cat.clone());
    receiver.state.new_session(3);
    receiver.state.apply_samples(
        cat.hash(),
        &[sample(
            &cat,
            "site/area/pump3/speed",
            Value::Double(12.5),
            Quality::GOOD,
            T0,
        )],
        RECEIVED,
        Stream::Live,
    );
    let mut client = ClientBuilder::new()
        .application_name("gateway-rx test client")
        .application_uri("urn:gateway:rx:test-client")
        .pki_dir(dir.path().join("client-pki"))
        .create_sample_keypair(true)
        .trust_server_certs(true)
        .session_retry_limit(0)
        .client()
        .expect("client config");
    let (session, event_loop) = client
        .connect_to_matching_endpoint(
            (
                url.as_str(),
                opcua::crypto::SecurityPolicy::None.to_str(),
                MessageSecurityMode::None,
            ),
            IdentityToken::Anonymous,
        )
        .await
        .expect("the default None endpoint");
    event_loop.spawn();
    assert!(
        timeout(Duration::from_secs(10), session.wait_for_connection())
            .await
            .unwrap_or(false)
    );
    let ns = ns(&session).await;
    let speed = id(ns, "site/area/pump3/speed");
    let mut v = read(&session, &speed, AttributeId::Value).await;
    for _ in 0..100 {
        if v.value.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        v = read(&session, &speed, AttributeId::Value).await;
    }
    assert_eq!(v.value, Some(Variant::Double(12.5)));
    let access = read(&session, &speed, AttributeId::AccessLevel).await;
    assert_eq!(
        access.value,
        Some(Variant::Byte(1 | 4)),
        "the store is on: HistoryRead"
    );
    let refused = session
        .write(&[WriteValue {
            node_id: speed.clone(),
            attribute_id: AttributeId::Value as u32,
            index_range: Default::default(),
            value: DataValue::new_now(0.0f64),
        }])
        .await
        .expect("write answered");
    assert_eq!(refused, vec![StatusCode::BadNotWritable]);

    let mut e = observe::prom::Exposition::new();
    receiver.status.metrics(&mut e);
    let text = e.finish();
    let metric = |series: &str| observe::prom::find(&text, series);
    assert_eq!(metric("gateway_rx_opcua_sessions"), Some(1.0), "{text}");
    assert_eq!(
        metric("gateway_rx_opcua_operations_total{kind=\"write_refused\"}"),
        Some(1.0)
    );
    assert!(metric("gateway_rx_opcua_operations_total{kind=\"read\"}").unwrap_or(0.0) >= 1.0);
    let _ = session.disconnect().await;
}

/// Data changes per second reaching one subscriber that monitors 10,000 tags, all changing
/// every 50 ms (200,000 changes/s offered). A figure, not a check:
/// `cargo test -p gateway-rx --test opcua_mirror -- --ignored --nocapture throughput`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn throughput_10k_tags() {
    const TAGS: usize = 10_000;
    let dir = tempfile::tempdir().unwrap();
    let state = Arc::new(State::new());
    let cat = Catalogue::new(
        (0..TAGS)
            .map(|i| tag(&format!("load/t{i:05}"), ValueType::Double, "", ""))
            .collect(),
    );
    state.apply_catalogue(cat.clone());
    state.new_session(1);
    let batch = |k: i64| -> Vec<Sample> {
        (0..TAGS)
            .map(|i| Sample {
                tag: i as u32,
                value: Value::Double(k as f64 + i as f64 / 1e5),
                quality: Quality::GOOD,
                time: T0 + k * 1_000_000,
            })
            .collect()
    };
    state.apply_samples(cat.hash(), &batch(0), RECEIVED, Stream::Live);
    let mut config = server_config(dir.path());
    config.max_monitored_items_per_subscription = TAGS;
    let mirror = OpcUaMirror::start(&config, state.clone(), None)
        .await
        .unwrap();
    let session = anonymous(&mirror, dir.path()).await;
    let ns = ns(&session).await;
    let count = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let seen = count.clone();
    let last = Arc::new(std::sync::Mutex::new(std::collections::HashMap::<
        NodeId,
        f64,
    >::new()));
    let last_in = last.clone();
    let sub = session
        .create_subscription(
            Duration::from_millis(50),
            100,
            20,
            0,
            0,
            true,
            DataChangeCallback::new(move |v, item| {
                seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if let Some(Variant::Double(x)) = v.value {
                    let mut last = last_in.lock().unwrap();
                    last.insert(item.item_to_monitor().node_id.clone(), x);
                }
            }),
        )
        .await
        .unwrap();
    for chunk in (0..TAGS).collect::<Vec<_>>().chunks(1000) {
        let items = chunk
            .iter()
            .map(|i| MonitoredItemCreateRequest {
                item_to_monitor: ReadValueId {
                    node_id: id(ns, &format!("load/t{i:05}")),
                    attribute_id: AttributeId::Value as u32,
                    ..Default::default()
                },
                monitoring_mode: MonitoringMode::Reporting,
                requested_parameters: MonitoringParameters {
                    sampling_interval: 0.0,
                    queue_size: 1,
                    discard_oldest: true,
                    ..Default::default()
                },
            })
            .collect();
        let r = session
            .create_monitored_items(sub, TimestampsToReturn::Both, items)
            .await
            .unwrap();
        assert!(r.iter().all(|r| r.result.status_code == StatusCode::Good));
    }
    // Initial values first.
    let start = std::time::Instant::now();
    while count.load(std::sync::atomic::Ordering::Relaxed) < TAGS as u64 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "initial values: {} of {TAGS}",
            count.load(std::sync::atomic::Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let feeder = {
        let state = state.clone();
        let cat = cat.clone();
        std::thread::spawn(move || {
            let begin = std::time::Instant::now();
            let mut k = 1;
            while begin.elapsed() < Duration::from_secs(5) {
                state.apply_samples(cat.hash(), &batch(k), RECEIVED + k, Stream::Live);
                k += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            k - 1
        })
    };
    let before = count.load(std::sync::atomic::Ordering::Relaxed);
    let t = std::time::Instant::now();
    let batches = tokio::task::spawn_blocking(move || feeder.join().unwrap())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = count.load(std::sync::atomic::Ordering::Relaxed) - before;
    let secs = t.elapsed().as_secs_f64();
    let offered = batches as u64 * TAGS as u64;
    println!(
        "10k tags: {offered} changes offered in {secs:.1} s ({:.0}/s), {got} data changes \
         received ({:.0}/s, {:.0} % of offered; latest value wins between feed drains)",
        offered as f64 / secs,
        got as f64 / secs,
        100.0 * got as f64 / offered as f64
    );
    // Whatever was coalesced on the way, every subscriber ends with each tag's latest value.
    let final_k = batches;
    let mut stale = 0;
    for _ in 0..100 {
        stale = {
            let last = last.lock().unwrap();
            (0..TAGS)
                .filter(|&i| {
                    last.get(&id(ns, &format!("load/t{i:05}")))
                        != Some(&(final_k as f64 + i as f64 / 1e5))
                })
                .count()
        };
        if stale == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        stale, 0,
        "tags whose latest value never reached the subscriber"
    );
    let _ = session.disconnect().await;
}
