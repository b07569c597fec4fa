//! Borrowed views of a catalogue entry: [`TagRef`] is a [`TagInfo`] whose strings point into
//! storage owned elsewhere.
//!
//! A receiver holding a million tags cannot afford a `TagInfo` each (136 bytes plus a heap
//! allocation per string), so the catalogue keeps every tag as its encoding and hands out these
//! views, decoded in place. A `TagInfo` gives the same view with [`TagRef::from`], so code that
//! reads tags (status pages, sinks) takes a `TagRef` whichever side it runs on.
//!
//! The views decode from the encoding of the owned types: fields and variants must stay in the
//! same order as in [`TagInfo`], [`SourceAddress`] and [`ModbusAddress`] (the tests check a
//! round trip for every variant).

use serde::Deserialize;

use crate::model::{
    ByteOrder, ModbusAddress, ModbusTable, ModbusType, SourceAddress, TagInfo, ValueType, WordOrder,
};

/// A catalogue entry, borrowed. See [`TagInfo`] for the fields.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
pub struct TagRef<'a> {
    pub name: &'a str,
    pub value_type: ValueType,
    pub unit: &'a str,
    pub description: &'a str,
    #[serde(borrow)]
    pub source: SourceRef<'a>,
}

/// Where a tag's values come from, borrowed. See [`SourceAddress`].
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
pub enum SourceRef<'a> {
    Modbus(#[serde(borrow)] ModbusRef<'a>),
    OpcUa { endpoint: &'a str, node_id: &'a str },
    Other(&'a str),
}

/// A Modbus address, borrowed. See [`ModbusAddress`].
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
pub struct ModbusRef<'a> {
    pub device: &'a str,
    pub unit_id: u8,
    pub table: ModbusTable,
    pub address: u16,
    pub kind: ModbusType,
    pub count: u16,
    pub byte_order: ByteOrder,
    pub word_order: WordOrder,
    pub scale: f64,
    pub offset: f64,
}

impl TagRef<'_> {
    pub fn to_info(&self) -> TagInfo {
        TagInfo {
            name: self.name.to_owned(),
            value_type: self.value_type,
            unit: self.unit.to_owned(),
            description: self.description.to_owned(),
            source: self.source.to_address(),
        }
    }
}

impl<'a> SourceRef<'a> {
    pub fn to_address(&self) -> SourceAddress {
        match *self {
            SourceRef::Modbus(m) => SourceAddress::Modbus(m.to_address()),
            SourceRef::OpcUa { endpoint, node_id } => SourceAddress::OpcUa {
                endpoint: endpoint.to_owned(),
                node_id: node_id.to_owned(),
            },
            SourceRef::Other(s) => SourceAddress::Other(s.to_owned()),
        }
    }

    pub fn modbus(&self) -> Option<ModbusRef<'a>> {
        match *self {
            SourceRef::Modbus(m) => Some(m),
            _ => None,
        }
    }
}

impl ModbusRef<'_> {
    pub fn to_address(&self) -> ModbusAddress {
        ModbusAddress {
            device: self.device.to_owned(),
            unit_id: self.unit_id,
            table: self.table,
            address: self.address,
            kind: self.kind,
            count: self.count,
            byte_order: self.byte_order,
            word_order: self.word_order,
            scale: self.scale,
            offset: self.offset,
        }
    }
}

impl<'a> From<&'a TagInfo> for TagRef<'a> {
    fn from(t: &'a TagInfo) -> TagRef<'a> {
        TagRef {
            name: &t.name,
            value_type: t.value_type,
            unit: &t.unit,
            description: &t.description,
            source: SourceRef::from(&t.source),
        }
    }
}

impl<'a> From<&'a SourceAddress> for SourceRef<'a> {
    fn from(s: &'a SourceAddress) -> SourceRef<'a> {
        match s {
            SourceAddress::Modbus(m) => SourceRef::Modbus(ModbusRef::from(m)),
            SourceAddress::OpcUa { endpoint, node_id } => SourceRef::OpcUa { endpoint, node_id },
            SourceAddress::Other(s) => SourceRef::Other(s),
        }
    }
}

impl<'a> From<&'a ModbusAddress> for ModbusRef<'a> {
    fn from(m: &'a ModbusAddress) -> ModbusRef<'a> {
        ModbusRef {
            device: &m.device,
            unit_id: m.unit_id,
            table: m.table,
            address: m.address,
            kind: m.kind,
            count: m.count,
            byte_order: m.byte_order,
            word_order: m.word_order,
            scale: m.scale,
            offset: m.offset,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec;

    fn tags() -> Vec<TagInfo> {
        let modbus = ModbusAddress {
            device: "plc1".into(),
            unit_id: 7,
            table: ModbusTable::InputRegister,
            address: 40_001,
            kind: ModbusType::F64,
            count: 4,
            byte_order: ByteOrder::Little,
            word_order: WordOrder::Little,
            scale: 0.25,
            offset: -3.5,
        };
        vec![
            TagInfo {
                name: "site/a/flow".into(),
                value_type: ValueType::Double,
                unit: "m3/h".into(),
                description: "inlet flow, ünïcödé".into(),
                source: SourceAddress::Modbus(modbus),
            },
            TagInfo {
                name: "site/a/state".into(),
                value_type: ValueType::String,
                unit: String::new(),
                description: String::new(),
                source: SourceAddress::OpcUa {
                    endpoint: "opc.tcp://plc:4840".into(),
                    node_id: "ns=2;s=State".into(),
                },
            },
            TagInfo {
                name: "x".repeat(300),
                value_type: ValueType::ByteString,
                unit: "u".into(),
                description: "d".repeat(200),
                source: SourceAddress::Other("synthetic:1".into()),
            },
        ]
    }

    #[test]
    fn views_decode_from_the_owned_encoding_for_every_variant() {
        for tag in tags() {
            let bytes = codec::encode(&tag).unwrap();
            let view: TagRef<'_> = codec::decode_borrowed(&bytes).unwrap();
            assert_eq!(view, TagRef::from(&tag));
            assert_eq!(view.to_info(), tag);
            assert_eq!(view.source.to_address(), tag.source);
        }
    }

    #[test]
    fn modbus_accessor() {
        let all = tags();
        let view = TagRef::from(&all[0]);
        assert_eq!(view.source.modbus().map(|m| m.address), Some(40_001));
        assert_eq!(TagRef::from(&all[1]).source.modbus(), None);
    }
}
