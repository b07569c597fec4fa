//! The Modbus mirror's register index: for each (source device, unit id, table), which tags
//! cover which register (or bit), so that a read is answered without scanning the catalogue.
//!
//! It is built from a catalogue, off any lock, and the state installs it together with that
//! catalogue (see `crate::state`): the tag indexes it holds always index the values of the
//! same view.
//!
//! Memory: at most [`MAX_MODBUS_INDEX_ENTRIES`] (register → tag) entries, with at most
//! [`MAX_TAGS_PER_REGISTER`] tags per register; tags beyond either cap are not mirrored over
//! Modbus and are counted (`modbus_tags_not_indexed`).

use std::collections::HashMap;

use protocol::catalogue::Catalogue;
use protocol::model::{ModbusTable, TagIndex};
use protocol::tag_ref::SourceRef;

/// Upper bound on (register → tag) entries in the Modbus index, whatever the catalogue says.
pub const MAX_MODBUS_INDEX_ENTRIES: usize = 16 * 1024 * 1024;
/// Overlapping tags (e.g. a 32-bit value and its low word as a second tag) are allowed; a
/// register keeps at most this many of them, the lowest tag indexes first.
pub const MAX_TAGS_PER_REGISTER: usize = 4;

/// The Modbus key a tag is mirrored under: the source device and unit id, and the table.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModbusKey {
    pub device: String,
    pub unit_id: u8,
    pub table: ModbusTable,
}

/// A tag covering a register: its catalogue index and the register's offset within the tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegisterRef {
    pub tag: TagIndex,
    pub offset: u16,
}

/// (register address → tags covering it) for one [`ModbusKey`].
type RegisterMap = HashMap<u16, Vec<RegisterRef>>;

/// The register index of one catalogue (see the module doc).
#[derive(Debug, Default)]
pub struct RegisterIndex {
    keys: HashMap<ModbusKey, RegisterMap>,
    not_indexed: u64,
}

impl RegisterIndex {
    pub fn build(catalogue: &Catalogue) -> RegisterIndex {
        let mut index = RegisterIndex::default();
        let mut entries = 0usize;
        for (i, tag) in catalogue.iter().enumerate() {
            let (Ok(tag_index), SourceRef::Modbus(addr)) = (TagIndex::try_from(i), tag.source)
            else {
                continue;
            };
            let span = protocol::registers::register_count(addr);
            if entries.saturating_add(usize::from(span)) > MAX_MODBUS_INDEX_ENTRIES {
                index.not_indexed += 1;
                continue;
            }
            let map = index
                .keys
                .entry(ModbusKey {
                    device: addr.device.to_owned(),
                    unit_id: addr.unit_id,
                    table: addr.table,
                })
                .or_default();
            let mut crowded = false;
            for offset in 0..span {
                // A tag running past the end of the address space covers only what exists.
                let Some(register) = addr.address.checked_add(offset) else {
                    break;
                };
                let refs = map.entry(register).or_default();
                if refs.len() >= MAX_TAGS_PER_REGISTER {
                    crowded = true;
                    continue;
                }
                refs.push(RegisterRef {
                    tag: tag_index,
                    offset,
                });
                entries += 1;
            }
            if crowded {
                index.not_indexed += 1;
            }
        }
        index
    }

    /// Catalogue tags beyond the caps, not mirrored.
    pub fn not_indexed(&self) -> u64 {
        self.not_indexed
    }

    /// The tags covering a register, lowest tag index first.
    pub fn tags_at(&self, key: &ModbusKey, address: u16) -> &[RegisterRef] {
        self.keys
            .get(key)
            .and_then(|m| m.get(&address))
            .map_or(&[], Vec::as_slice)
    }

    /// Every (device, unit id, table) that has Modbus tags, sorted.
    pub fn keys(&self) -> Vec<&ModbusKey> {
        let mut keys: Vec<&ModbusKey> = self.keys.keys().collect();
        keys.sort();
        keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::State;
    use protocol::model::{
        ByteOrder, ModbusAddress, ModbusType, SourceAddress, TagInfo, ValueType, WordOrder,
    };

    fn modbus(device: &str, table: ModbusTable, address: u16, kind: ModbusType) -> SourceAddress {
        SourceAddress::Modbus(ModbusAddress {
            device: device.into(),
            unit_id: 1,
            table,
            address,
            kind,
            count: 3,
            byte_order: ByteOrder::Big,
            word_order: WordOrder::Big,
            scale: 1.0,
            offset: 0.0,
        })
    }

    fn tag(name: &str, value_type: ValueType, source: SourceAddress) -> TagInfo {
        TagInfo {
            name: name.into(),
            value_type,
            unit: String::new(),
            description: String::new(),
            source,
        }
    }

    #[test]
    fn maps_registers_to_tags() {
        let state = State::new();
        state.apply_catalogue(Catalogue::new(vec![
            tag(
                "a",
                ValueType::UInt16,
                modbus("plc", ModbusTable::HoldingRegister, 10, ModbusType::U16),
            ),
            tag(
                "b",
                ValueType::Float,
                modbus("plc", ModbusTable::HoldingRegister, 11, ModbusType::F32),
            ),
            tag("c", ValueType::Boolean, SourceAddress::Other("x".into())),
        ]));
        let view = state.view();
        let index = view.modbus_index();
        let key = ModbusKey {
            device: "plc".into(),
            unit_id: 1,
            table: ModbusTable::HoldingRegister,
        };
        assert_eq!(index.tags_at(&key, 9), &[]);
        assert_eq!(
            index.tags_at(&key, 10),
            &[RegisterRef { tag: 0, offset: 0 }]
        );
        assert_eq!(
            index.tags_at(&key, 11),
            &[RegisterRef { tag: 1, offset: 0 }]
        );
        // F32 spans two registers whatever `count` says.
        assert_eq!(
            index.tags_at(&key, 12),
            &[RegisterRef { tag: 1, offset: 1 }]
        );
        assert_eq!(index.tags_at(&key, 13), &[]);
        let other = ModbusKey {
            table: ModbusTable::InputRegister,
            ..key.clone()
        };
        assert_eq!(index.tags_at(&other, 10), &[]);
        assert_eq!(index.keys(), vec![&key]);
    }

    #[test]
    fn is_bounded_and_clamped() {
        let mut tags: Vec<TagInfo> = (0..10)
            .map(|i| {
                tag(
                    &format!("t{i}"),
                    ValueType::UInt64,
                    modbus("plc", ModbusTable::InputRegister, 100, ModbusType::U64),
                )
            })
            .collect();
        tags.push(tag(
            "edge",
            ValueType::UInt64,
            modbus(
                "plc",
                ModbusTable::InputRegister,
                u16::MAX - 1,
                ModbusType::U64,
            ),
        ));
        let state = State::new();
        state.apply_catalogue(Catalogue::new(tags));
        let key = ModbusKey {
            device: "plc".into(),
            unit_id: 1,
            table: ModbusTable::InputRegister,
        };
        let view = state.view();
        let refs = view.modbus_index().tags_at(&key, 101);
        assert_eq!(refs.len(), MAX_TAGS_PER_REGISTER);
        assert_eq!(refs[0], RegisterRef { tag: 0, offset: 1 });
        assert_eq!(
            view.modbus_index().tags_at(&key, u16::MAX),
            &[RegisterRef { tag: 10, offset: 1 }]
        );
        drop(view);
        assert_eq!(state.counters().modbus_tags_not_indexed, 6);
    }
}
