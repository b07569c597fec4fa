//! Sparkplug B (`[mqtt] format = "sparkplug_b"`): gateway-rx as a Sparkplug edge node.
//!
//! # Topics, devices, metrics
//!
//! Topics are `spBv1.0/<group_id>/<type>/<edge_node_id>[/<device>]`. Each source of the
//! transmitter (a Modbus device or an OPC UA endpoint, by its name in the transmitter's
//! config, as the catalogue names it for every tag and the heartbeat for its health) is a
//! Sparkplug device; a character a topic level cannot hold ('/', '+', '#', a control
//! character, a Unicode noncharacter) becomes `_` in its id. Each tag is a metric of its
//! source's device, named by its full tag name; its alias is a 64-bit FNV-1a hash of the name,
//! so that it is the same across restarts and catalogue versions (a data message journaled
//! before a restart still resolves after it). Two names of one birth with the same hash keep
//! no alias: their data carries the name.
//!
//! Births carry every metric's name, alias, datatype, the current value (or `is_null`) with
//! its source time, and properties: `Quality` (below), `engUnit` and `description` when the
//! catalogue has them (it carries an engineering unit and a description per tag, both often
//! empty). Data messages carry metrics by alias only, each with its source time (milliseconds,
//! as Sparkplug has them) and its `Quality`.
//!
//! # Quality
//!
//! The catalogue's quality is an OPC UA status code; its severity becomes the `Quality`
//! property (Int32) Sparkplug hosts read, the OPC DA convention: Good (severity 00) 192,
//! Uncertain (01) 64, Bad (10 and 11) 0. A code other than plain Good also goes out whole as
//! the `StatusCode` property (UInt32), so nothing of it is lost.
//!
//! # Datatypes
//!
//! Boolean → Boolean, Int16/Int32/Int64 → the same, UInt16/UInt32/UInt64 → the same, Float,
//! Double, String, DateTime (milliseconds since 1970; the nanoseconds below are cut), ByteString
//! → Bytes. Signed values go in `int_value`/`long_value` as two's complement, sign-extended to
//! the field's width, as the specification and Eclipse Tahu do.
//!
//! # Sequence numbers
//!
//! `bdSeq` (0 to 255) counts MQTT sessions: each connection attempt takes the next one, puts it
//! in the NDEATH registered as the will at CONNECT and in the NBIRTH that follows; it is kept in
//! [`BD_SEQ_FILE`] in the spool directory, so a restarted gateway-rx goes on from it. `seq`
//! (0 to 255, wrapping) numbers every message of the node after NBIRTH (which is 0) in the
//! order they are sent; a rebirth starts it again at 0.

use std::collections::HashMap;
use std::path::Path;

use prost::Message as _;
use protocol::catalogue::Catalogue;
use protocol::model::{Quality, UnixNanos, Value, ValueType};
use protocol::tag_ref::{SourceRef, TagRef};

use crate::sinks::spool::SpoolSample;
use crate::state::StateView;

/// The messages' protobuf types, by hand from `sparkplug/sparkplug_b.proto` (the
/// specification's, kept beside this file with its license): prost's derive over the fields this
/// node sends or reads, with the .proto's field numbers. Fields left out (metadata, datasets,
/// templates, extensions) are skipped when decoding, as protobuf does with unknown fields.
pub mod pb {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Payload {
        #[prost(uint64, optional, tag = "1")]
        pub timestamp: Option<u64>,
        #[prost(message, repeated, tag = "2")]
        pub metrics: Vec<Metric>,
        #[prost(uint64, optional, tag = "3")]
        pub seq: Option<u64>,
        #[prost(string, optional, tag = "4")]
        pub uuid: Option<String>,
        #[prost(bytes = "vec", optional, tag = "5")]
        pub body: Option<Vec<u8>>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Metric {
        #[prost(string, optional, tag = "1")]
        pub name: Option<String>,
        #[prost(uint64, optional, tag = "2")]
        pub alias: Option<u64>,
        #[prost(uint64, optional, tag = "3")]
        pub timestamp: Option<u64>,
        #[prost(uint32, optional, tag = "4")]
        pub datatype: Option<u32>,
        #[prost(bool, optional, tag = "5")]
        pub is_historical: Option<bool>,
        #[prost(bool, optional, tag = "6")]
        pub is_transient: Option<bool>,
        #[prost(bool, optional, tag = "7")]
        pub is_null: Option<bool>,
        #[prost(message, optional, tag = "9")]
        pub properties: Option<PropertySet>,
        #[prost(oneof = "metric::Value", tags = "10, 11, 12, 13, 14, 15, 16")]
        pub value: Option<metric::Value>,
    }

    pub mod metric {
        #[derive(Clone, PartialEq, prost::Oneof)]
        pub enum Value {
            #[prost(uint32, tag = "10")]
            IntValue(u32),
            #[prost(uint64, tag = "11")]
            LongValue(u64),
            #[prost(float, tag = "12")]
            FloatValue(f32),
            #[prost(double, tag = "13")]
            DoubleValue(f64),
            #[prost(bool, tag = "14")]
            BooleanValue(bool),
            #[prost(string, tag = "15")]
            StringValue(String),
            #[prost(bytes = "vec", tag = "16")]
            BytesValue(Vec<u8>),
        }
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PropertySet {
        #[prost(string, repeated, tag = "1")]
        pub keys: Vec<String>,
        #[prost(message, repeated, tag = "2")]
        pub values: Vec<PropertyValue>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PropertyValue {
        #[prost(uint32, optional, tag = "1")]
        pub r#type: Option<u32>,
        #[prost(bool, optional, tag = "2")]
        pub is_null: Option<bool>,
        #[prost(oneof = "property_value::Value", tags = "3, 4, 5, 6, 7, 8")]
        pub value: Option<property_value::Value>,
    }

    pub mod property_value {
        #[derive(Clone, PartialEq, prost::Oneof)]
        pub enum Value {
            #[prost(uint32, tag = "3")]
            IntValue(u32),
            #[prost(uint64, tag = "4")]
            LongValue(u64),
            #[prost(float, tag = "5")]
            FloatValue(f32),
            #[prost(double, tag = "6")]
            DoubleValue(f64),
            #[prost(bool, tag = "7")]
            BooleanValue(bool),
            #[prost(string, tag = "8")]
            StringValue(String),
        }
    }
}

pub const NAMESPACE: &str = "spBv1.0";
/// The node metric a host writes `true` to (NCMD) to ask for a rebirth.
pub const REBIRTH: &str = "Node Control/Rebirth";
pub const BD_SEQ: &str = "bdSeq";
/// Where the last `bdSeq` is kept, in the sink's spool directory.
pub const BD_SEQ_FILE: &str = "sparkplug.bdseq";

/// Sparkplug datatype numbers (the .proto's comment lists them).
pub mod datatype {
    pub const INT16: u32 = 2;
    pub const INT32: u32 = 3;
    pub const INT64: u32 = 4;
    pub const UINT16: u32 = 6;
    pub const UINT32: u32 = 7;
    pub const UINT64: u32 = 8;
    pub const FLOAT: u32 = 9;
    pub const DOUBLE: u32 = 10;
    pub const BOOLEAN: u32 = 11;
    pub const STRING: u32 = 12;
    pub const DATETIME: u32 = 13;
    pub const BYTES: u32 = 17;
}

pub fn datatype(t: ValueType) -> u32 {
    use datatype as d;
    match t {
        ValueType::Boolean => d::BOOLEAN,
        ValueType::Int16 => d::INT16,
        ValueType::Int32 => d::INT32,
        ValueType::Int64 => d::INT64,
        ValueType::UInt16 => d::UINT16,
        ValueType::UInt32 => d::UINT32,
        ValueType::UInt64 => d::UINT64,
        ValueType::Float => d::FLOAT,
        ValueType::Double => d::DOUBLE,
        ValueType::String => d::STRING,
        ValueType::DateTime => d::DATETIME,
        ValueType::ByteString => d::BYTES,
    }
}

/// Milliseconds since 1970 (Sparkplug's times); before 1970: 0.
pub fn millis(t: UnixNanos) -> u64 {
    u64::try_from(t.div_euclid(1_000_000)).unwrap_or(0)
}

fn metric_value(v: &Value) -> pb::metric::Value {
    use pb::metric::Value as M;
    match v {
        Value::Boolean(b) => M::BooleanValue(*b),
        Value::Int16(x) => M::IntValue(i32::from(*x) as u32),
        Value::Int32(x) => M::IntValue(*x as u32),
        Value::Int64(x) => M::LongValue(*x as u64),
        Value::UInt16(x) => M::IntValue(u32::from(*x)),
        Value::UInt32(x) => M::IntValue(*x),
        Value::UInt64(x) => M::LongValue(*x),
        Value::Float(x) => M::FloatValue(*x),
        Value::Double(x) => M::DoubleValue(*x),
        Value::String(s) => M::StringValue(s.clone()),
        Value::DateTime(t) => M::LongValue(millis(*t)),
        Value::ByteString(b) => M::BytesValue(b.clone()),
    }
}

/// The `Quality` property of an OPC UA status code (see the module doc).
pub fn quality(q: Quality) -> i32 {
    match q.0 >> 30 {
        0 => 192,
        1 => 64,
        _ => 0,
    }
}

fn properties(q: Quality, unit: &str, description: &str) -> pb::PropertySet {
    use pb::property_value::Value as P;
    let mut set = pb::PropertySet::default();
    let mut add = |key: &str, r#type: u32, value: P| {
        set.keys.push(key.to_owned());
        set.values.push(pb::PropertyValue {
            r#type: Some(r#type),
            is_null: None,
            value: Some(value),
        });
    };
    add("Quality", datatype::INT32, P::IntValue(quality(q) as u32));
    if q != Quality::GOOD {
        add("StatusCode", datatype::UINT32, P::IntValue(q.0));
    }
    if !unit.is_empty() {
        add("engUnit", datatype::STRING, P::StringValue(unit.to_owned()));
    }
    if !description.is_empty() {
        add(
            "description",
            datatype::STRING,
            P::StringValue(description.to_owned()),
        );
    }
    set
}

/// A metric's alias: FNV-1a over its name (stable; see the module doc).
pub fn alias(name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// A source name as a Sparkplug device id (one topic level).
pub fn device_id(source: &str) -> String {
    if source.is_empty() {
        return "_".to_owned();
    }
    source
        .chars()
        .map(|c| {
            if c == '/' || config::sinks::topic_refuses(c) {
                '_'
            } else {
                c
            }
        })
        .collect()
}

fn source_name<'a>(tag: &TagRef<'a>) -> &'a str {
    match tag.source {
        SourceRef::Modbus(m) => m.device,
        SourceRef::OpcUa { endpoint, .. } => endpoint,
        SourceRef::Other(s) => s,
    }
}

/// The node's message types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    NBirth,
    NDeath,
    NData,
    NCmd,
    DBirth,
    DDeath,
    DData,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::NBirth => "NBIRTH",
            Kind::NDeath => "NDEATH",
            Kind::NData => "NDATA",
            Kind::NCmd => "NCMD",
            Kind::DBirth => "DBIRTH",
            Kind::DDeath => "DDEATH",
            Kind::DData => "DDATA",
        }
    }
}

/// The node's group and edge node ids: its topics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ids {
    pub group: String,
    pub node: String,
}

impl Ids {
    pub fn node_topic(&self, kind: Kind) -> String {
        format!("{NAMESPACE}/{}/{}/{}", self.group, kind.name(), self.node)
    }

    pub fn device_topic(&self, kind: Kind, device: &str) -> String {
        format!(
            "{NAMESPACE}/{}/{}/{}/{device}",
            self.group,
            kind.name(),
            self.node
        )
    }
}

/// `seq`: 0 to 255, then 0 again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Seq(u8);

impl Seq {
    /// The number for the next message.
    pub fn advance(&mut self) -> u64 {
        let n = self.0;
        self.0 = self.0.wrapping_add(1);
        u64::from(n)
    }

    /// After an NBIRTH (which is 0).
    pub fn reset(&mut self) {
        self.0 = 1;
    }
}

/// Appends `seq` to an encoded payload. Protobuf takes fields in any order, so a data message
/// is journaled without its `seq` and numbered when it is sent (see the module doc of `mqtt.rs`).
pub fn stamp(payload: &mut Vec<u8>, seq: u64) {
    prost::encoding::uint64::encode(3, &seq, payload);
}

fn metric_bd_seq(bd_seq: u8) -> pb::Metric {
    pb::Metric {
        name: Some(BD_SEQ.to_owned()),
        datatype: Some(datatype::INT64),
        value: Some(pb::metric::Value::LongValue(u64::from(bd_seq))),
        ..Default::default()
    }
}

/// The NBIRTH: `bdSeq` and the rebirth control, seq 0.
pub fn nbirth(bd_seq: u8, now: UnixNanos) -> Vec<u8> {
    pb::Payload {
        timestamp: Some(millis(now)),
        metrics: vec![
            metric_bd_seq(bd_seq),
            pb::Metric {
                name: Some(REBIRTH.to_owned()),
                datatype: Some(datatype::BOOLEAN),
                value: Some(pb::metric::Value::BooleanValue(false)),
                ..Default::default()
            },
        ],
        seq: Some(0),
        ..Default::default()
    }
    .encode_to_vec()
}

/// The NDEATH (the will): `bdSeq` only, no seq.
pub fn ndeath(bd_seq: u8, now: UnixNanos) -> Vec<u8> {
    pb::Payload {
        timestamp: Some(millis(now)),
        metrics: vec![metric_bd_seq(bd_seq)],
        ..Default::default()
    }
    .encode_to_vec()
}

/// A DDEATH: no metrics.
pub fn ddeath(seq: u64, now: UnixNanos) -> Vec<u8> {
    pb::Payload {
        timestamp: Some(millis(now)),
        seq: Some(seq),
        ..Default::default()
    }
    .encode_to_vec()
}

/// Whether an NCMD asks for a rebirth.
pub fn is_rebirth(payload: &[u8]) -> bool {
    let Ok(p) = pb::Payload::decode(payload) else {
        return false;
    };
    p.metrics.iter().any(|m| {
        m.name.as_deref() == Some(REBIRTH)
            && matches!(m.value, Some(pb::metric::Value::BooleanValue(true)))
    })
}

/// What a birth announced: the devices and each tag's device and alias, for the data messages
/// that follow. Bounded by the catalogue (one entry per tag).
#[derive(Debug, Default)]
pub struct Birth {
    pub catalogue: Option<protocol::message::CatalogueHash>,
    /// Device ids, and the source name each stands for.
    pub devices: Vec<(String, String)>,
    tags: HashMap<Box<str>, (u32, Option<u64>)>,
}

/// A DBIRTH to send: the device's id and its metrics (encoded once its seq is known).
pub struct DeviceBirth {
    pub device: String,
    metrics: Vec<pb::Metric>,
}

impl DeviceBirth {
    pub fn encode(self, seq: u64, now: UnixNanos) -> Vec<u8> {
        pb::Payload {
            timestamp: Some(millis(now)),
            metrics: self.metrics,
            seq: Some(seq),
            ..Default::default()
        }
        .encode_to_vec()
    }
}

impl Birth {
    /// The devices of `catalogue` with their metrics and current values.
    pub fn new(view: &StateView<'_>, now: UnixNanos) -> (Birth, Vec<DeviceBirth>) {
        let mut birth = Birth::default();
        let Some(cat) = view.catalogue() else {
            return (birth, Vec::new());
        };
        birth.catalogue = Some(cat.hash());
        let mut by_source: HashMap<&str, usize> = HashMap::new();
        let mut out: Vec<DeviceBirth> = Vec::new();
        let mut seen: HashMap<u64, usize> = HashMap::new();
        for (i, tag) in cat.iter().enumerate() {
            let source = source_name(&tag);
            let d = *by_source.entry(source).or_insert_with(|| {
                birth.devices.push((device_id(source), source.to_owned()));
                out.push(DeviceBirth {
                    device: device_id(source),
                    metrics: Vec::new(),
                });
                out.len() - 1
            });
            let a = alias(tag.name);
            *seen.entry(a).or_default() += 1;
            let mut m = pb::Metric {
                name: Some(tag.name.to_owned()),
                alias: Some(a),
                datatype: Some(datatype(tag.value_type)),
                ..Default::default()
            };
            match view.value(i as u32) {
                Some(v) => {
                    m.timestamp = Some(millis(v.source_time));
                    m.value = Some(metric_value(v.value));
                    m.properties = Some(properties(v.quality, tag.unit, tag.description));
                }
                None => {
                    m.timestamp = Some(millis(now));
                    m.is_null = Some(true);
                    let mut p = properties(Quality::GOOD, tag.unit, tag.description);
                    // No value yet: nothing to vouch for.
                    if let Some(v) = p.values.first_mut() {
                        v.value = Some(pb::property_value::Value::IntValue(64));
                    }
                    m.properties = Some(p);
                }
            }
            out[d].metrics.push(m);
            birth.tags.insert(tag.name.into(), (d as u32, Some(a)));
        }
        // A hash shared by two names cannot tell them apart: those go by name.
        for db in &mut out {
            for m in &mut db.metrics {
                if m.alias
                    .is_some_and(|a| seen.get(&a).copied().unwrap_or(0) > 1)
                {
                    m.alias = None;
                    if let Some(t) = m.name.as_deref().and_then(|n| birth.tags.get_mut(n)) {
                        t.1 = None;
                    }
                }
            }
        }
        (birth, out)
    }

    pub fn is_for(&self, cat: Option<&Catalogue>) -> bool {
        self.catalogue == cat.map(|c| c.hash())
    }

    /// The data message of one sample, without its seq: DDATA of its device by alias, or, for a
    /// tag the birth did not announce (the catalogue moved on since it was stored), NDATA by
    /// name. `historical`: it is not the tag's newest value (a late sample).
    pub fn data(
        &self,
        ids: &Ids,
        s: &SpoolSample,
        now: UnixNanos,
        historical: bool,
    ) -> (String, Vec<u8>) {
        let (tag, value, q, time) = (&*s.tag, &s.value, s.quality, s.time);
        let mut m = pb::Metric {
            timestamp: Some(millis(time)),
            datatype: Some(datatype(value.value_type())),
            value: Some(metric_value(value)),
            properties: Some(properties(q, "", "")),
            is_historical: historical.then_some(true),
            ..Default::default()
        };
        let topic = match self.tags.get(tag) {
            Some(&(d, alias)) => {
                match alias {
                    Some(a) => m.alias = Some(a),
                    None => m.name = Some(tag.to_owned()),
                }
                let device = self.devices.get(d as usize).map_or("_", |x| x.0.as_str());
                ids.device_topic(Kind::DData, device)
            }
            None => {
                m.name = Some(tag.to_owned());
                ids.node_topic(Kind::NData)
            }
        };
        let p = pb::Payload {
            timestamp: Some(millis(now)),
            metrics: vec![m],
            ..Default::default()
        };
        (topic, p.encode_to_vec())
    }
}

/// The next `bdSeq`, kept in `dir`: the one after the last used (0 when none was kept or the
/// file is unreadable, which a host takes as any other new session).
pub fn next_bd_seq(dir: &Path) -> u8 {
    let path = dir.join(BD_SEQ_FILE);
    let next = std::fs::read_to_string(&path)
        .ok()
        .and_then(|s| s.trim().parse::<u8>().ok())
        .map_or(0, |b| b.wrapping_add(1));
    if let Err(e) = std::fs::write(&path, format!("{next}\n")) {
        tracing::warn!(path = %path.display(), error = %e, "cannot keep the Sparkplug bdSeq; a restart may use this one again");
    }
    next
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(tag: &str, value: Value, quality: Quality, time: UnixNanos) -> SpoolSample {
        SpoolSample {
            tag: tag.into(),
            value,
            quality,
            time,
            received: time,
        }
    }

    fn decode(b: &[u8]) -> pb::Payload {
        pb::Payload::decode(b).expect("decodes")
    }

    #[test]
    fn seq_wraps_after_255() {
        let mut s = Seq::default();
        let got: Vec<u64> = (0..258).map(|_| s.advance()).collect();
        assert_eq!(got[..3], [0, 1, 2]);
        assert_eq!(got[255..], [255, 0, 1]);
        s.reset();
        assert_eq!(s.advance(), 1, "NBIRTH is 0, what follows 1");
    }

    #[test]
    fn stamped_seq_decodes() {
        let ids = Ids {
            group: "g".into(),
            node: "n".into(),
        };
        let b = Birth::default();
        let s = sample("x/y", Value::Int32(-5), Quality::GOOD, 1_500_000_000);
        let (topic, mut p) = b.data(&ids, &s, 2_000_000_000, false);
        assert_eq!(topic, "spBv1.0/g/NDATA/n");
        assert_eq!(decode(&p).seq, None);
        stamp(&mut p, 200);
        let d = decode(&p);
        assert_eq!(d.seq, Some(200));
        assert_eq!(d.timestamp, Some(2000));
        let m = &d.metrics[0];
        assert_eq!(m.name.as_deref(), Some("x/y"));
        assert_eq!(m.timestamp, Some(1500));
        assert_eq!(m.value, Some(pb::metric::Value::IntValue(-5i32 as u32)));
    }

    #[test]
    fn births_and_deaths_carry_bd_seq() {
        let b = decode(&nbirth(7, 5_000_000));
        assert_eq!(b.seq, Some(0));
        assert_eq!(b.timestamp, Some(5));
        assert_eq!(b.metrics[0].name.as_deref(), Some(BD_SEQ));
        assert_eq!(b.metrics[0].value, Some(pb::metric::Value::LongValue(7)));
        assert_eq!(b.metrics[1].name.as_deref(), Some(REBIRTH));
        let d = decode(&ndeath(7, 0));
        assert_eq!(d.seq, None, "NDEATH has no seq");
        assert_eq!(d.metrics[0].value, Some(pb::metric::Value::LongValue(7)));
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(next_bd_seq(dir.path()), 0);
        assert_eq!(next_bd_seq(dir.path()), 1);
        std::fs::write(dir.path().join(BD_SEQ_FILE), "255\n").unwrap();
        assert_eq!(next_bd_seq(dir.path()), 0, "bdSeq wraps after 255");
    }

    #[test]
    fn rebirth_commands() {
        let cmd = |name: &str, v: bool| {
            pb::Payload {
                metrics: vec![pb::Metric {
                    name: Some(name.to_owned()),
                    datatype: Some(datatype::BOOLEAN),
                    value: Some(pb::metric::Value::BooleanValue(v)),
                    ..Default::default()
                }],
                ..Default::default()
            }
            .encode_to_vec()
        };
        assert!(is_rebirth(&cmd(REBIRTH, true)));
        assert!(!is_rebirth(&cmd(REBIRTH, false)));
        assert!(!is_rebirth(&cmd("Node Control/Reboot", true)));
        assert!(!is_rebirth(b"\xff\xff not protobuf"));
    }

    #[test]
    fn every_value_type_round_trips() {
        use pb::metric::Value as M;
        let cases = [
            (
                Value::Boolean(true),
                datatype::BOOLEAN,
                M::BooleanValue(true),
            ),
            (Value::Int16(-2), datatype::INT16, M::IntValue(0xffff_fffe)),
            (
                Value::Int32(i32::MIN),
                datatype::INT32,
                M::IntValue(0x8000_0000),
            ),
            (Value::Int64(-1), datatype::INT64, M::LongValue(u64::MAX)),
            (Value::UInt16(65535), datatype::UINT16, M::IntValue(65535)),
            (
                Value::UInt32(u32::MAX),
                datatype::UINT32,
                M::IntValue(u32::MAX),
            ),
            (
                Value::UInt64(u64::MAX),
                datatype::UINT64,
                M::LongValue(u64::MAX),
            ),
            (Value::Float(1.5), datatype::FLOAT, M::FloatValue(1.5)),
            (
                Value::Double(-2.25),
                datatype::DOUBLE,
                M::DoubleValue(-2.25),
            ),
            (
                Value::String("é".into()),
                datatype::STRING,
                M::StringValue("é".into()),
            ),
            (
                Value::DateTime(1_700_000_000_123_456_789),
                datatype::DATETIME,
                M::LongValue(1_700_000_000_123),
            ),
            (
                Value::ByteString(vec![0, 255]),
                datatype::BYTES,
                M::BytesValue(vec![0, 255]),
            ),
        ];
        let ids = Ids {
            group: "g".into(),
            node: "n".into(),
        };
        for (v, dt, want) in cases {
            let s = sample("t", v.clone(), Quality(0x8005_0000), 0);
            let (_, p) = Birth::default().data(&ids, &s, 0, true);
            let m = &decode(&p).metrics[0];
            assert_eq!(
                (m.datatype, m.value.as_ref()),
                (Some(dt), Some(&want)),
                "{v:?}"
            );
            assert_eq!(m.is_historical, Some(true));
            let props = m.properties.as_ref().unwrap();
            assert_eq!(props.keys, ["Quality", "StatusCode"]);
            assert_eq!(
                props.values[0].value,
                Some(pb::property_value::Value::IntValue(0))
            );
            assert_eq!(
                props.values[1].value,
                Some(pb::property_value::Value::IntValue(0x8005_0000))
            );
        }
    }

    #[test]
    fn quality_mapping() {
        assert_eq!(quality(Quality::GOOD), 192);
        assert_eq!(quality(Quality(0x4000_0000)), 64);
        assert_eq!(quality(Quality(0x8005_0000)), 0);
        assert_eq!(quality(Quality(0xC000_0000)), 0);
    }

    #[test]
    fn ids_and_aliases() {
        assert_eq!(device_id("plc/1+#"), "plc_1__");
        assert_eq!(device_id(""), "_");
        assert_eq!(alias("a"), alias("a"));
        assert_ne!(alias("a"), alias("b"));
        let ids = Ids {
            group: "g".into(),
            node: "n".into(),
        };
        assert_eq!(
            ids.device_topic(Kind::DBirth, "plc1"),
            "spBv1.0/g/DBIRTH/n/plc1"
        );
        assert_eq!(ids.node_topic(Kind::NDeath), "spBv1.0/g/NDEATH/n");
    }
}
