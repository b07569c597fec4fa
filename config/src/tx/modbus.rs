//! `[[modbus]]` devices and their `[[modbus.tag]]`s: what is polled where, and how its
//! registers decode.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use protocol::model::{ByteOrder, ModbusTable, ModbusType, WordOrder};

use super::limits::*;
use crate::common;
/// Where a device or tag was, for messages that relate two of them.
use crate::opcua::Seen as Loc;
use crate::walk::{At, Ctx, Req, Tbl};

#[derive(Debug, Clone, PartialEq)]
pub struct ModbusDevice {
    pub name: String,
    pub host: String,
    pub port: u16,
    pub unit_id: u8,
    pub poll_interval: Duration,
    pub timeout: Duration,
    pub tags: Vec<ModbusTag>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModbusTag {
    pub name: String,
    pub table: ModbusTable,
    pub address: u16,
    pub kind: ModbusType,
    /// Registers (or bits) occupied; derived from the type, or the configured length for strings.
    pub count: u16,
    pub byte_order: ByteOrder,
    pub word_order: WordOrder,
    pub scale: f64,
    pub offset: f64,
    /// A new value is reported only when it differs from the last reported one by more than
    /// this (absolute, in engineering units). 0 reports every change.
    pub deadband: f64,
    pub unit: String,
    pub description: String,
}

const DEVICE_KEYS: &[&str] = &[
    "name",
    "host",
    "port",
    "unit_id",
    "poll_interval_ms",
    "timeout_ms",
    "tag",
];
const TAG_KEYS: &[&str] = &[
    "name",
    "table",
    "address",
    "type",
    "length",
    "byte_order",
    "word_order",
    "scale",
    "offset",
    "deadband",
    "unit",
    "description",
];

const TABLES: &[(&str, ModbusTable)] = &[
    ("coil", ModbusTable::Coil),
    ("discrete", ModbusTable::DiscreteInput),
    ("holding", ModbusTable::HoldingRegister),
    ("input", ModbusTable::InputRegister),
];
const TYPES: &[(&str, ModbusType)] = &[
    ("bool", ModbusType::Bool),
    ("u16", ModbusType::U16),
    ("i16", ModbusType::I16),
    ("u32", ModbusType::U32),
    ("i32", ModbusType::I32),
    ("u64", ModbusType::U64),
    ("i64", ModbusType::I64),
    ("f32", ModbusType::F32),
    ("f64", ModbusType::F64),
    ("string", ModbusType::String),
];
/// Names other tools use, for suggestions.
const TABLE_ALIASES: &[(&str, &str)] = &[
    ("coils", "coil"),
    ("discrete_input", "discrete"),
    ("discrete_inputs", "discrete"),
    ("di", "discrete"),
    ("holding_register", "holding"),
    ("holding_registers", "holding"),
    ("hr", "holding"),
    ("input_register", "input"),
    ("input_registers", "input"),
    ("ir", "input"),
];
const TYPE_ALIASES: &[(&str, &str)] = &[
    ("boolean", "bool"),
    ("bit", "bool"),
    ("word", "u16"),
    ("uint", "u16"),
    ("uint16", "u16"),
    ("int", "i16"),
    ("int16", "i16"),
    ("dword", "u32"),
    ("udint", "u32"),
    ("uint32", "u32"),
    ("dint", "i32"),
    ("int32", "i32"),
    ("uint64", "u64"),
    ("ulint", "u64"),
    ("lint", "i64"),
    ("int64", "i64"),
    ("float", "f32"),
    ("real", "f32"),
    ("float32", "f32"),
    ("double", "f64"),
    ("lreal", "f64"),
    ("float64", "f64"),
    ("str", "string"),
    ("text", "string"),
];
const BYTE_ORDERS: &[(&str, ByteOrder)] = &[("big", ByteOrder::Big), ("little", ByteOrder::Little)];
const WORD_ORDERS: &[(&str, WordOrder)] = &[("big", WordOrder::Big), ("little", WordOrder::Little)];

pub(super) fn parse_devices(
    ctx: &mut Ctx<'_>,
    root: &Tbl<'_, '_>,
    device_names: &mut HashMap<String, Loc>,
    tag_names: &mut HashMap<String, Loc>,
) -> Option<Vec<ModbusDevice>> {
    let mut devices = Vec::new();
    let mut ok = true;
    for d in root.array_of_tables(ctx, "modbus") {
        let name = d.string(
            ctx,
            "name",
            Req::Required("give the device a unique name, like name = \"plc1\""),
        );
        if let Some(n) = &name {
            if let Some(first) = device_names.get(&n.val) {
                ctx.error(
                    n.span.start,
                    &n.key,
                    format!(
                        "duplicate device name \"{}\", first used by {} at line {}; device \
                         names must be unique",
                        n.val, first.path, first.line
                    ),
                );
            } else {
                device_names.insert(
                    n.val.clone(),
                    Loc {
                        path: d.path.clone(),
                        line: ctx.line(n.span.start),
                    },
                );
            }
        }
        match parse_device(ctx, &d, name, tag_names) {
            Some(dev) => devices.push(dev),
            None => ok = false,
        }
    }
    ok.then_some(devices)
}

fn parse_device(
    ctx: &mut Ctx<'_>,
    t: &Tbl<'_, '_>,
    name: Option<At<String>>,
    tag_names: &mut HashMap<String, Loc>,
) -> Option<ModbusDevice> {
    t.check_keys(ctx, DEVICE_KEYS);
    let name = name.and_then(|n| common::check_name(ctx, n));
    let host = t
        .string(
            ctx,
            "host",
            Req::Required("give the device's IP address or host name, like host = \"192.0.2.20\""),
        )
        .and_then(|h| check_host(ctx, h));
    let port = common::int_or(ctx, t, "port", 1..=65535, "TCP port", PORT_DEFAULT.into());
    let unit_id = common::int_or(
        ctx,
        t,
        "unit_id",
        0..=255,
        "Modbus unit id; 255 or 0 for a device addressed by IP alone",
        UNIT_ID_DEFAULT.into(),
    );
    let poll = common::duration_ms(
        ctx,
        t,
        "poll_interval_ms",
        POLL_INTERVAL_MS_MIN as i64..=86_400_000,
        POLL_INTERVAL_MS_DEFAULT,
    );
    let timeout = common::duration_ms(
        ctx,
        t,
        "timeout_ms",
        1..=TIMEOUT_MS_MAX as i64,
        TIMEOUT_MS_DEFAULT,
    );

    let mut tags = Vec::new();
    let mut locs = Vec::new();
    let mut tags_ok = true;
    for tt in t.array_of_tables(ctx, "tag") {
        match parse_tag(ctx, &tt, tag_names) {
            Some((tag, loc)) => {
                tags.push(tag);
                locs.push(loc);
            }
            None => tags_ok = false,
        }
    }
    let overlaps_ok = check_overlaps(ctx, &tags, &locs);

    if !(tags_ok && overlaps_ok) {
        return None;
    }
    Some(ModbusDevice {
        name: name?.val,
        host: host?,
        port: port? as u16,
        unit_id: unit_id? as u8,
        poll_interval: poll?,
        timeout: timeout?,
        tags,
    })
}

/// An IP address or a DNS name; never `host:port`, a URL or blank.
fn check_host(ctx: &mut Ctx<'_>, h: At<String>) -> Option<String> {
    let s = h.val.as_str();
    if s.parse::<IpAddr>().is_ok() {
        return Some(h.val);
    }
    let hint = if s.parse::<SocketAddr>().is_ok()
        || s.rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        "; put the port in `port`, not in `host`"
    } else if s.contains("://") {
        "; give only the host, not a URL"
    } else {
        ""
    };
    let valid_name = !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if valid_name {
        return Some(h.val);
    }
    ctx.error(
        h.span.start,
        &h.key,
        format!(
            "\"{s}\" is not an IP address or host name{hint}; write e.g. host = \"192.0.2.20\" \
             or host = \"plc1.example.net\""
        ),
    );
    None
}

fn type_name(kind: ModbusType) -> &'static str {
    TYPES
        .iter()
        .find(|(_, k)| *k == kind)
        .map_or("?", |(n, _)| n)
}

fn table_name(table: ModbusTable) -> &'static str {
    match table {
        ModbusTable::Coil => "coil",
        ModbusTable::DiscreteInput => "discrete",
        ModbusTable::HoldingRegister => "holding",
        ModbusTable::InputRegister => "input",
    }
}

/// Where a tag sits, for overlap and duplicate messages.
struct TagLoc {
    path: String,
    address_at: usize,
    line: usize,
}

fn parse_tag(
    ctx: &mut Ctx<'_>,
    t: &Tbl<'_, '_>,
    tag_names: &mut HashMap<String, Loc>,
) -> Option<(ModbusTag, TagLoc)> {
    t.check_keys(ctx, TAG_KEYS);
    let name = t
        .string(
            ctx,
            "name",
            Req::Required(
                "give the tag a unique path-like name, like name = \"site/area/pump3/speed\"",
            ),
        )
        .and_then(|n| common::check_tag_name(ctx, n));
    if let Some(n) = &name {
        if let Some(first) = tag_names.get(&n.val) {
            ctx.error(
                n.span.start,
                &n.key,
                format!(
                    "duplicate tag name \"{}\", first used by {} at line {}; tag names must be \
                     unique across the whole file",
                    n.val, first.path, first.line
                ),
            );
        } else {
            tag_names.insert(
                n.val.clone(),
                Loc {
                    path: t.path.clone(),
                    line: ctx.line(n.span.start),
                },
            );
        }
    }
    let table = t.choice_with_aliases(
        ctx,
        "table",
        Req::Required("say which Modbus table the tag is read from: table = \"holding\", \"input\", \"coil\" or \"discrete\""),
        TABLES,
        TABLE_ALIASES,
    );
    let kind = t.choice_with_aliases(
        ctx,
        "type",
        Req::Required("say how to decode the tag, e.g. type = \"u16\"; valid types are bool, u16, i16, u32, i32, u64, i64, f32, f64, string"),
        TYPES,
        TYPE_ALIASES,
    );
    let address = t.int(
        ctx,
        "address",
        Req::Required("give the tag's 0-based Modbus address, like address = 100"),
        0..=65535,
        "0-based Modbus address",
    );
    let length = t.int(
        ctx,
        "length",
        Req::Optional,
        1..=i64::from(STRING_LENGTH_MAX),
        "registers",
    );
    let byte_order = t.choice(ctx, "byte_order", Req::Optional, BYTE_ORDERS);
    let word_order = t.choice(ctx, "word_order", Req::Optional, WORD_ORDERS);
    let scale = t.float(ctx, "scale", Req::Optional);
    let offset = t.float(ctx, "offset", Req::Optional);
    let deadband = t.float(ctx, "deadband", Req::Optional);
    let unit = t.string(ctx, "unit", Req::Optional);
    let description = t.string(ctx, "description", Req::Optional);

    // Checks that relate fields; each needs the fields it relates to be valid.
    let mut ok = true;
    if let (Some(table), Some(kind)) = (&table, &kind) {
        if table.val.is_bits() && kind.val != ModbusType::Bool {
            ctx.error(
                kind.span.start,
                &kind.key,
                format!(
                    "type \"{}\" needs registers, but table \"{}\" holds single bits; use \
                     type = \"bool\" there, or table = \"holding\" or \"input\" for \"{}\"",
                    type_name(kind.val),
                    table_name(table.val),
                    type_name(kind.val)
                ),
            );
            ok = false;
        } else if !table.val.is_bits() && kind.val == ModbusType::Bool {
            ctx.error(
                kind.span.start,
                &kind.key,
                format!(
                    "type \"bool\" needs a bit table, but table \"{}\" holds 16-bit registers; \
                     use table = \"coil\" or \"discrete\" for bool, or a numeric type such as \
                     \"u16\" here",
                    table_name(table.val)
                ),
            );
            ok = false;
        }
    }
    let count = match (&kind, &length) {
        (Some(k), None) if k.val == ModbusType::String => {
            if !t.has("length") {
                ctx.error(
                    k.span.start,
                    t.key("length"),
                    format!(
                        "a string tag needs `length`, its size in registers (two characters \
                         each); add e.g. length = 8 (1 to {STRING_LENGTH_MAX})"
                    ),
                );
            }
            None
        }
        (Some(k), Some(l)) if k.val != ModbusType::String => {
            ctx.error(
                l.span.start,
                &l.key,
                format!(
                    "`length` applies only to string tags; a \"{}\" tag occupies {} \
                     register(s) by its type, so remove `length`",
                    type_name(k.val),
                    fixed_count(k.val)
                ),
            );
            None
        }
        (Some(_), Some(l)) => Some(l.val as u16),
        (Some(k), None) => Some(fixed_count(k.val)),
        (None, _) => None,
    };
    if let (Some(a), Some(count), Some(k)) = (&address, count, &kind) {
        let end = a.val + i64::from(count) - 1;
        if end > 65535 {
            ctx.error(
                a.span.start,
                &a.key,
                format!(
                    "a \"{}\" tag at address {} occupies {}-{}, past the last Modbus address \
                     65535; the address can be at most {}",
                    type_name(k.val),
                    a.val,
                    a.val,
                    end,
                    65536 - i64::from(count)
                ),
            );
            ok = false;
        }
    }
    let no_arithmetic = kind
        .as_ref()
        .filter(|k| matches!(k.val, ModbusType::Bool | ModbusType::String));
    for (field, value) in [
        ("scale", &scale),
        ("offset", &offset),
        ("deadband", &deadband),
    ] {
        if let (Some(k), Some(v)) = (no_arithmetic, value) {
            ctx.error(
                v.span.start,
                &v.key,
                format!(
                    "`{field}` does not apply to \"{}\" tags; remove it (it applies to numeric types)",
                    type_name(k.val)
                ),
            );
            ok = false;
        }
    }
    let scale = match scale {
        Some(s) if !s.val.is_finite() || s.val == 0.0 => {
            ctx.error(
                s.span.start,
                &s.key,
                format!(
                    "scale {} is not usable; expected a finite number other than 0",
                    s.val
                ),
            );
            None
        }
        Some(s) => Some(s.val),
        None => (!t.has("scale")).then_some(1.0),
    };
    let offset = match offset {
        Some(o) if !o.val.is_finite() => {
            ctx.error(
                o.span.start,
                &o.key,
                format!("offset {} is not usable; expected a finite number", o.val),
            );
            None
        }
        Some(o) => Some(o.val),
        None => (!t.has("offset")).then_some(0.0),
    };
    let deadband = match deadband {
        Some(d) if !d.val.is_finite() || d.val < 0.0 => {
            ctx.error(
                d.span.start,
                &d.key,
                format!(
                    "deadband {} is not usable; expected a finite number >= 0 (in engineering \
                     units; 0 reports every change)",
                    d.val
                ),
            );
            None
        }
        Some(d) => Some(d.val),
        None => (!t.has("deadband")).then_some(0.0),
    };

    let unit = unit
        .map(|u| u.val)
        .or_else(|| (!t.has("unit")).then(String::new));
    let description = description
        .map(|d| d.val)
        .or_else(|| (!t.has("description")).then(String::new));
    let byte_order = byte_order
        .map(|b| b.val)
        .or_else(|| (!t.has("byte_order")).then_some(ByteOrder::Big));
    let word_order = word_order
        .map(|w| w.val)
        .or_else(|| (!t.has("word_order")).then_some(WordOrder::Big));

    let address = address?;
    let loc = TagLoc {
        path: t.path.clone(),
        address_at: address.span.start,
        line: ctx.line(address.span.start),
    };
    if !ok {
        return None;
    }
    Some((
        ModbusTag {
            name: name?.val,
            table: table?.val,
            address: address.val as u16,
            kind: kind?.val,
            count: count?,
            byte_order: byte_order?,
            word_order: word_order?,
            scale: scale?,
            offset: offset?,
            deadband: deadband?,
            unit: unit?,
            description: description?,
        },
        loc,
    ))
}

/// Registers (or bits) a fixed-size type occupies.
fn fixed_count(kind: ModbusType) -> u16 {
    match kind {
        ModbusType::Bool | ModbusType::U16 | ModbusType::I16 | ModbusType::String => 1,
        ModbusType::U32 | ModbusType::I32 | ModbusType::F32 => 2,
        ModbusType::U64 | ModbusType::I64 | ModbusType::F64 => 4,
    }
}

/// Reports every pair of tags of one device that read the same register or bit of one table.
fn check_overlaps(ctx: &mut Ctx<'_>, tags: &[ModbusTag], locs: &[TagLoc]) -> bool {
    let mut ranges: Vec<(ModbusTable, u32, u32, usize)> = tags
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let start = u32::from(t.address);
            (t.table, start, start + u32::from(t.count.max(1)) - 1, i)
        })
        .collect();
    ranges.sort_unstable();
    let mut ok = true;
    // Sweep by start address, keeping the tags whose range is still open.
    let mut open: Vec<(ModbusTable, u32, usize)> = Vec::new();
    for &(table, start, end, i) in &ranges {
        open.retain(|&(t, e, _)| t == table && e >= start);
        for &(_, _, j) in &open {
            // Point at whichever comes later in the file, naming the earlier one.
            let (later, earlier) = if locs[i].address_at > locs[j].address_at {
                (i, j)
            } else {
                (j, i)
            };
            let (a, b) = (&tags[later], &tags[earlier]);
            ctx.error(
                locs[later].address_at,
                format!("{}.address", locs[later].path),
                format!(
                    "tag \"{}\" ({} {}) overlaps tag \"{}\" ({} {}, {} at line {}); tags of \
                     one device must not share registers or bits of the same table",
                    a.name,
                    table_name(table),
                    range_text(a),
                    b.name,
                    table_name(table),
                    range_text(b),
                    locs[earlier].path,
                    locs[earlier].line
                ),
            );
            ok = false;
        }
        open.push((table, end, i));
    }
    ok
}

fn range_text(t: &ModbusTag) -> String {
    let end = u32::from(t.address) + u32::from(t.count.max(1)) - 1;
    if t.count <= 1 {
        format!("address {}", t.address)
    } else {
        format!("addresses {}-{end}", t.address)
    }
}
