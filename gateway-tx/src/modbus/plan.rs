//! Turns a device's tags into as few Modbus read requests as the protocol allows.
//!
//! Per table, tags are sorted by address and merged greedily into one request while the merged
//! range stays within the protocol's per-request limit (125 registers for holding and input
//! registers, 2000 bits for coils and discrete inputs) and the hole between the request so far
//! and the next tag is at most the gap allowance. Overlapping tags (the same registers read as
//! two types) share a request.
//!
//! Why bridge gaps: each request is a full round trip to the PLC (often several milliseconds on
//! a plant network, and many PLCs serve one request at a time), while reading 8 unused registers
//! costs 16 bytes in the reply. Bridging small gaps is therefore nearly free and cuts the poll
//! time. The gap stays small because some devices answer "illegal data address" for any read
//! that touches an unmapped register; the poller splits such a request into one request per
//! tag when that happens (see [`split`]), so a bridged gap can cost one failed round trip, once.

use config::tx::{ModbusDevice, ModbusTag};
use protocol::model::{ModbusAddress, ModbusTable, TagIndex};
use protocol::registers;

/// Most registers one read may ask for (Modbus application protocol, function 03/04).
pub const MAX_REGISTERS: u16 = 125;
/// Most bits one read may ask for (function 01/02).
pub const MAX_BITS: u16 = 2000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanOptions {
    /// Largest register read; at most [`MAX_REGISTERS`]. Lower it for devices with a smaller
    /// limit.
    pub max_registers: u16,
    /// Largest bit read; at most [`MAX_BITS`].
    pub max_bits: u16,
    /// Unused registers that may be read to join two tags into one request.
    pub register_gap: u16,
    /// Unused bits that may be read to join two tags into one request. 128 bits are the same
    /// 16 reply bytes as 8 registers.
    pub bit_gap: u16,
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions {
            max_registers: MAX_REGISTERS,
            max_bits: MAX_BITS,
            register_gap: 8,
            bit_gap: 128,
        }
    }
}

/// One tag inside a read request.
#[derive(Debug, Clone, PartialEq)]
pub struct TagSlot {
    pub tag: TagIndex,
    /// Position of the tag's first register (or bit) in the request's reply.
    pub offset: u16,
    /// Registers (or bits) the tag occupies.
    pub width: u16,
    pub addr: ModbusAddress,
}

/// One Modbus read and the tags it serves.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadRequest {
    pub table: ModbusTable,
    pub start: u16,
    /// Registers or bits to read.
    pub count: u16,
    pub tags: Vec<TagSlot>,
}

/// A tag the poller can never read, with the reason; its quality stays BadConfigurationError.
#[derive(Debug, Clone, PartialEq)]
pub struct Unreadable {
    pub tag: TagIndex,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Plan {
    pub requests: Vec<ReadRequest>,
    pub unreadable: Vec<Unreadable>,
}

/// The address of a device's tag as the catalogue and the register codec see it.
pub fn tag_address(device: &ModbusDevice, tag: &ModbusTag) -> ModbusAddress {
    ModbusAddress {
        device: device.name.clone(),
        unit_id: device.unit_id,
        table: tag.table,
        address: tag.address,
        kind: tag.kind,
        count: tag.count,
        byte_order: tag.byte_order,
        word_order: tag.word_order,
        scale: tag.scale,
        offset: tag.offset,
    }
}

/// Plans the reads of `device`, whose tags have catalogue indexes `first_tag..` in file order.
pub fn plan(device: &ModbusDevice, first_tag: TagIndex, opts: &PlanOptions) -> Plan {
    let mut out = Plan::default();
    let mut slots: Vec<TagSlot> = Vec::with_capacity(device.tags.len());
    for (i, tag) in device.tags.iter().enumerate() {
        let index = first_tag.saturating_add(u32::try_from(i).unwrap_or(u32::MAX));
        let addr = tag_address(device, tag);
        let width = registers::register_count(&addr);
        let limit = limit(addr.table, opts);
        let end = u32::from(addr.address) + u32::from(width);
        let reason = if width == 0 {
            Some("occupies no registers".to_string())
        } else if width > limit {
            Some(format!("{width} registers exceed one read of {limit}"))
        } else if end > 0x1_0000 {
            Some(format!("ends at {end}, past the last Modbus address 65535"))
        } else {
            None
        };
        match reason {
            Some(reason) => out.unreadable.push(Unreadable { tag: index, reason }),
            None => slots.push(TagSlot {
                tag: index,
                offset: 0,
                width,
                addr,
            }),
        }
    }
    // Stable sort: equal addresses keep file order, so a plan is deterministic.
    slots.sort_by_key(|s| (s.addr.table, s.addr.address, s.width));

    let mut current: Option<ReadRequest> = None;
    for slot in slots {
        let table = slot.addr.table;
        let a = u32::from(slot.addr.address);
        let end = a + u32::from(slot.width);
        if let Some(req) = &mut current {
            let req_end = u32::from(req.start) + u32::from(req.count);
            let gap = a.saturating_sub(req_end);
            let merged = end.max(req_end) - u32::from(req.start);
            if req.table == table
                && gap <= u32::from(gap_allowance(table, opts))
                && merged <= u32::from(limit(table, opts))
            {
                // Both fit in u16: merged is at most the limit.
                req.count = merged as u16;
                let mut slot = slot;
                slot.offset = (a - u32::from(req.start)) as u16;
                req.tags.push(slot);
                continue;
            }
        }
        if let Some(done) = current.take() {
            out.requests.push(done);
        }
        current = Some(ReadRequest {
            table,
            start: slot.addr.address,
            count: slot.width,
            tags: vec![slot],
        });
    }
    out.requests.extend(current);
    out
}

/// One request per tag, reading exactly the tag's registers: the fallback when a device
/// refuses a merged read (illegal data address or value).
pub fn split(req: &ReadRequest) -> Vec<ReadRequest> {
    req.tags
        .iter()
        .map(|slot| ReadRequest {
            table: req.table,
            start: slot.addr.address,
            count: slot.width,
            tags: vec![TagSlot {
                offset: 0,
                ..slot.clone()
            }],
        })
        .collect()
}

fn limit(table: ModbusTable, opts: &PlanOptions) -> u16 {
    if table.is_bits() {
        opts.max_bits.clamp(1, MAX_BITS)
    } else {
        opts.max_registers.clamp(1, MAX_REGISTERS)
    }
}

fn gap_allowance(table: ModbusTable, opts: &PlanOptions) -> u16 {
    if table.is_bits() {
        opts.bit_gap
    } else {
        opts.register_gap
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::model::{ByteOrder, ModbusType, WordOrder};
    use std::time::Duration;

    fn tag(table: ModbusTable, address: u16, kind: ModbusType, count: u16) -> ModbusTag {
        ModbusTag {
            name: format!("t/{address}"),
            table,
            address,
            kind,
            count,
            byte_order: ByteOrder::Big,
            word_order: WordOrder::Big,
            scale: 1.0,
            offset: 0.0,
            deadband: 0.0,
            unit: String::new(),
            description: String::new(),
        }
    }

    fn hr(address: u16, kind: ModbusType) -> ModbusTag {
        let count = registers::type_width(kind).unwrap_or(1);
        tag(ModbusTable::HoldingRegister, address, kind, count)
    }

    fn device(tags: Vec<ModbusTag>) -> ModbusDevice {
        ModbusDevice {
            name: "plc".into(),
            host: "127.0.0.1".into(),
            port: 502,
            unit_id: 1,
            poll_interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            tags,
        }
    }

    fn ranges(p: &Plan) -> Vec<(ModbusTable, u16, u16)> {
        p.requests
            .iter()
            .map(|r| (r.table, r.start, r.count))
            .collect()
    }

    use ModbusTable::*;
    use ModbusType as T;

    #[test]
    fn adjacent_and_small_gaps_merge_large_gaps_split() {
        let d = device(vec![
            hr(10, T::U16),
            hr(11, T::F32),  // adjacent: 10..13
            hr(21, T::U16),  // gap of 8 after 13: bridged, 10..22
            hr(31, T::U32),  // gap of 9: new request
            hr(100, T::I16), // far away
        ]);
        let p = plan(&d, 5, &PlanOptions::default());
        assert_eq!(
            ranges(&p),
            [
                (HoldingRegister, 10, 12),
                (HoldingRegister, 31, 2),
                (HoldingRegister, 100, 1)
            ]
        );
        let first = &p.requests[0];
        let offsets: Vec<_> = first.tags.iter().map(|s| (s.tag, s.offset)).collect();
        assert_eq!(offsets, [(5, 0), (6, 1), (7, 11)]);
        assert_eq!(p.requests[1].tags[0].tag, 8);
        assert!(p.unreadable.is_empty());
    }

    #[test]
    fn register_requests_never_exceed_125() {
        // 200 consecutive u16 tags: 125 + 75.
        let d = device((0..200).map(|a| hr(a, T::U16)).collect());
        let p = plan(&d, 0, &PlanOptions::default());
        assert_eq!(
            ranges(&p),
            [(HoldingRegister, 0, 125), (HoldingRegister, 125, 75)]
        );
        // A 4-register value never straddles a request boundary.
        let d = device((0..40).map(|i| hr(i * 4, T::F64)).collect());
        let p = plan(&d, 0, &PlanOptions::default());
        for r in &p.requests {
            assert!(r.count <= 125);
            for s in &r.tags {
                assert!(s.offset + s.width <= r.count);
            }
        }
        assert_eq!(p.requests[0].count, 124);
    }

    #[test]
    fn bit_requests_never_exceed_2000() {
        let d = device(
            (0..2500)
                .map(|a| tag(Coil, a, T::Bool, 1))
                .chain([tag(DiscreteInput, 0, T::Bool, 1)])
                .collect(),
        );
        let p = plan(&d, 0, &PlanOptions::default());
        assert_eq!(
            ranges(&p),
            [(Coil, 0, 2000), (Coil, 2000, 500), (DiscreteInput, 0, 1)]
        );
        // Bit gaps are bridged up to 128.
        let d = device(vec![
            tag(Coil, 0, T::Bool, 1),
            tag(Coil, 129, T::Bool, 1),
            tag(Coil, 259, T::Bool, 1),
        ]);
        let p = plan(&d, 0, &PlanOptions::default());
        assert_eq!(ranges(&p), [(Coil, 0, 130), (Coil, 259, 1)]);
    }

    #[test]
    fn tables_never_merge_and_overlaps_share() {
        let d = device(vec![
            hr(0, T::U32),
            hr(1, T::U16), // inside the u32
            tag(InputRegister, 2, T::U16, 1),
        ]);
        let p = plan(&d, 0, &PlanOptions::default());
        assert_eq!(ranges(&p), [(HoldingRegister, 0, 2), (InputRegister, 2, 1)]);
        assert_eq!(p.requests[0].tags[1].offset, 1);
    }

    #[test]
    fn options_limit_and_gap() {
        let d = device((0..10).map(|a| hr(a * 2, T::U16)).collect());
        let opts = PlanOptions {
            max_registers: 5,
            register_gap: 0,
            ..PlanOptions::default()
        };
        let p = plan(&d, 0, &opts);
        assert_eq!(p.requests.len(), 10, "no gap allowed: every tag alone");
        let opts = PlanOptions {
            max_registers: 5,
            register_gap: 1,
            ..PlanOptions::default()
        };
        let p = plan(&d, 0, &opts);
        assert!(p.requests.iter().all(|r| r.count <= 5));
        assert_eq!(p.requests.len(), 4); // 0..5, 6..11, 12..17, 18..19
    }

    #[test]
    fn unreadable_tags_are_reported_not_planned() {
        let d = device(vec![
            tag(HoldingRegister, 0, T::String, 126),
            tag(HoldingRegister, 65535, T::U32, 2),
            tag(HoldingRegister, 10, T::String, 0),
            hr(65534, T::U16),
        ]);
        let p = plan(&d, 100, &PlanOptions::default());
        let bad: Vec<_> = p.unreadable.iter().map(|u| u.tag).collect();
        assert_eq!(bad, [100, 101, 102]);
        assert_eq!(ranges(&p), [(HoldingRegister, 65534, 1)]);
    }

    #[test]
    fn split_reads_each_tag_exactly() {
        let d = device(vec![hr(0, T::U16), hr(5, T::F32)]);
        let p = plan(&d, 0, &PlanOptions::default());
        assert_eq!(p.requests.len(), 1);
        let parts = split(&p.requests[0]);
        let r: Vec<_> = parts
            .iter()
            .map(|r| (r.start, r.count, r.tags[0].offset))
            .collect();
        assert_eq!(r, [(0, 1, 0), (5, 2, 0)]);
    }
}
