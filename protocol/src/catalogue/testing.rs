//! Tags and catalogues shared by the catalogue's unit tests.

use super::Catalogue;
use crate::codec;
use crate::message::{CatalogueChunk, Message};
use crate::model::{
    ByteOrder, ModbusAddress, ModbusTable, ModbusType, SourceAddress, TagInfo, ValueType, WordOrder,
};

pub(crate) fn tag(i: usize) -> TagInfo {
    TagInfo {
        name: format!("site/area/line/pump{i}/speed"),
        value_type: if i % 2 == 1 {
            ValueType::UInt16
        } else {
            ValueType::Float
        },
        unit: "rpm".into(),
        description: "x".repeat(i % 37),
        source: if i % 3 < 1 {
            SourceAddress::OpcUa {
                endpoint: "opc.tcp://plc:4840".into(),
                node_id: format!("ns=2;i={i}"),
            }
        } else {
            SourceAddress::Modbus(ModbusAddress {
                device: "plc1".into(),
                unit_id: 1,
                table: ModbusTable::HoldingRegister,
                address: i as u16,
                kind: ModbusType::U16,
                count: 1,
                byte_order: ByteOrder::Big,
                word_order: WordOrder::Big,
                scale: 1.0,
                offset: 0.0,
            })
        },
    }
}

pub(crate) fn catalogue(n: usize) -> Catalogue {
    Catalogue::new((0..n).map(tag).collect())
}

pub(crate) fn encoded_len(chunk: &CatalogueChunk) -> usize {
    codec::encode(&Message::Catalogue(chunk.clone()))
        .map(|b| b.len())
        .unwrap()
}
