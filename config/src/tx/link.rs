//! `[link]` and `[link.fec]`: where datagrams go, how fast, how protected against loss.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use super::limits::*;
use crate::walk::{Ctx, Req, Tbl};
use crate::{common, keyfile};

#[derive(Debug, Clone, PartialEq)]
pub struct TxLink {
    /// Where the receiver listens (across the diode).
    pub destination: SocketAddr,
    /// Local address to send from; `0.0.0.0:0` by default.
    pub bind: SocketAddr,
    /// Link MTU in bytes (IP packet size); datagrams are sized to fit it.
    pub mtu: u16,
    /// Configured link rate in bits per second; the pacer never exceeds it.
    pub rate_bps: u64,
    pub fec: FecShape,
    /// Pre-shared key (32 bytes) read from the key file, when one is configured.
    pub key: Option<[u8; 32]>,
    pub key_file: Option<PathBuf>,
    /// `insecure_no_key = true`: no key, by the operator's explicit choice (warned about at
    /// every start and on the status page).
    pub insecure_no_key: bool,
    /// Where the link state survives restarts: the transmitter's session epoch.
    pub state_file: PathBuf,
    pub heartbeat_interval: Duration,
    /// The full catalogue is re-sent this often (and on start and change).
    pub catalogue_interval: Duration,
    /// Every current value is re-sent once per this period, spread evenly over it.
    pub snapshot_period: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FecShape {
    pub data_shards: u16,
    pub repair_shards: u16,
    /// Number of FEC groups interleaved, against bursts of loss.
    pub interleave: u16,
    /// A data datagram that is not full after this long is sent anyway.
    pub flush: Duration,
    /// A block of groups that is not full after this long is closed and its repair shards
    /// sent; at least `flush`.
    pub block_span: Duration,
}

const LINK_KEYS: &[&str] = &[
    "destination",
    "bind",
    "mtu",
    "rate_mbit",
    "key_file",
    "insecure_no_key",
    "state_file",
    "heartbeat_ms",
    "catalogue_interval_s",
    "snapshot_period_s",
    "fec",
];
const FEC_KEYS: &[&str] = &[
    "data_shards",
    "repair_shards",
    "interleave",
    "flush_ms",
    "block_ms",
];

pub(super) fn parse_link(ctx: &mut Ctx<'_>, t: &Tbl<'_, '_>) -> Option<TxLink> {
    t.check_keys(ctx, LINK_KEYS);
    let destination = t
        .string(
            ctx,
            "destination",
            Req::Required(
                "give the receiver's address across the diode, like destination = \"192.0.2.10:5600\"",
            ),
        )
        .and_then(|a| common::socket_addr(ctx, &a))
        .and_then(|a| {
            if a.val.ip().is_unspecified() || a.val.port() == 0 {
                ctx.error(
                    a.span.start,
                    &a.key,
                    format!(
                        "{} cannot be sent to; give the receiver's real address and port, like \"192.0.2.10:5600\"",
                        a.val
                    ),
                );
                return None;
            }
            Some(a)
        });
    let bind = t
        .string(ctx, "bind", Req::Optional)
        .map(|a| common::socket_addr(ctx, &a));
    let bind = match (bind, &destination) {
        (Some(Some(b)), Some(d)) if b.val.is_ipv4() != d.val.is_ipv4() => {
            ctx.error(
                b.span.start,
                &b.key,
                format!(
                    "{} and destination {} are of different IP versions; bind an address of \
                     the destination's version, e.g. \"{}\"",
                    b.val,
                    d.val,
                    unspecified_like(d.val.ip())
                ),
            );
            None
        }
        (Some(b), _) => b.map(|b| b.val),
        // The socket must be of the destination's family to reach it.
        (None, Some(d)) => Some(SocketAddr::new(unspecified_like(d.val.ip()), 0)),
        (None, None) => None,
    };

    let mtu = t
        .int(
            ctx,
            "mtu",
            Req::Optional,
            i64::from(MTU_MIN)..=i64::from(u16::MAX),
            "bytes, the link's IP packet size",
        )
        .map(|a| a.val as u16);
    let mtu = match (&destination, t.has("mtu")) {
        (Some(d), _) if d.val.is_ipv6() && mtu.unwrap_or(MTU_DEFAULT) < MTU_MIN_IPV6 => {
            ctx.error(
                t.offset_of("mtu"),
                t.key("mtu"),
                format!(
                    "{} is below the IPv6 minimum MTU; the destination is IPv6, so use an \
                     integer from {MTU_MIN_IPV6} to 65535",
                    mtu.unwrap_or(MTU_DEFAULT)
                ),
            );
            None
        }
        (_, true) => mtu,
        (_, false) => Some(MTU_DEFAULT),
    };

    let rate_bps = match t.float(ctx, "rate_mbit", Req::Optional) {
        None if t.has("rate_mbit") => None,
        None => Some((RATE_MBIT_DEFAULT * 1e6) as u64),
        Some(r) => {
            let min_mbit = f64::from(mtu.unwrap_or(MTU_DEFAULT)) * 8.0 / 1e6;
            if !r.val.is_finite() || r.val <= 0.0 || r.val > RATE_MBIT_MAX {
                ctx.error(
                    r.span.start,
                    &r.key,
                    format!(
                        "{} is not a usable rate; expected a number of Mbit/s greater than 0 \
                         and at most {RATE_MBIT_MAX}",
                        r.val
                    ),
                );
                None
            } else if r.val < min_mbit {
                ctx.error(
                    r.span.start,
                    &r.key,
                    format!(
                        "{} Mbit/s cannot carry even one {}-byte datagram per second; use at \
                         least {min_mbit} Mbit/s",
                        r.val,
                        mtu.unwrap_or(MTU_DEFAULT)
                    ),
                );
                None
            } else {
                Some((r.val * 1e6).round() as u64)
            }
        }
    };

    let auth = keyfile::link_auth(ctx, t);
    let state_file = keyfile::state_file(ctx, t, TX_STATE_FILE_DEFAULT);

    let heartbeat = common::duration_ms(ctx, t, "heartbeat_ms", 100..=60_000, HEARTBEAT_MS_DEFAULT);
    let catalogue = common::duration_s(
        ctx,
        t,
        "catalogue_interval_s",
        1..=86_400,
        CATALOGUE_INTERVAL_S_DEFAULT,
    );
    let snapshot = common::duration_s(
        ctx,
        t,
        "snapshot_period_s",
        1..=86_400,
        SNAPSHOT_PERIOD_S_DEFAULT,
    );

    let fec_table = t
        .table(ctx, "fec", Req::Optional)
        .unwrap_or_else(|| Tbl::empty(t.key("fec"), format!("[{}]", t.key("fec")), t.span.clone()));
    let fec = parse_fec(ctx, &fec_table, t, mtu);

    let auth = auth?;
    let (key_file, key) = match auth.key {
        Some((path, key)) => (Some(path), Some(key)),
        None => (None, None),
    };
    Some(TxLink {
        destination: destination?.val,
        bind: bind?,
        mtu: mtu?,
        rate_bps: rate_bps?,
        fec: fec?,
        key,
        key_file,
        insecure_no_key: auth.insecure_no_key,
        state_file: state_file?,
        heartbeat_interval: heartbeat?,
        catalogue_interval: catalogue?,
        snapshot_period: snapshot?,
    })
}

fn unspecified_like(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

fn parse_fec(
    ctx: &mut Ctx<'_>,
    t: &Tbl<'_, '_>,
    link: &Tbl<'_, '_>,
    mtu: Option<u16>,
) -> Option<FecShape> {
    t.check_keys(ctx, FEC_KEYS);
    let max = i64::from(GROUP_SHARDS_MAX);
    let data = common::int_or(
        ctx,
        t,
        "data_shards",
        1..=max,
        "datagrams per FEC group",
        DATA_SHARDS_DEFAULT.into(),
    );
    let repair = common::int_or(
        ctx,
        t,
        "repair_shards",
        0..=max - 1,
        "0 turns FEC off",
        REPAIR_SHARDS_DEFAULT.into(),
    );
    let interleave = common::int_or(
        ctx,
        t,
        "interleave",
        1..=i64::from(INTERLEAVE_MAX),
        "FEC groups sent interleaved",
        INTERLEAVE_DEFAULT.into(),
    );
    let flush = common::duration_ms(
        ctx,
        t,
        "flush_ms",
        1..=BLOCK_MS_MAX as i64,
        FLUSH_MS_DEFAULT,
    );
    let block = common::duration_ms(
        ctx,
        t,
        "block_ms",
        1..=BLOCK_MS_MAX as i64,
        BLOCK_MS_DEFAULT,
    );
    let (data, repair, interleave) = (data? as u16, repair? as u16, interleave? as u16);
    let (flush, block_span) = (flush?, block?);
    if block_span < flush {
        let at = if t.has("block_ms") {
            "block_ms"
        } else {
            "flush_ms"
        };
        ctx.error(
            t.offset_of(at),
            t.key(at),
            format!(
                "block_ms ({} ms) is shorter than flush_ms ({} ms): a block must stay open at \
                 least as long as a data datagram waits to fill; make block_ms at least {}",
                block_span.as_millis(),
                flush.as_millis(),
                flush.as_millis()
            ),
        );
        return None;
    }
    if data + repair > GROUP_SHARDS_MAX {
        let at = if t.has("repair_shards") {
            "repair_shards"
        } else {
            "data_shards"
        };
        ctx.error(
            t.offset_of(at),
            t.key(at),
            format!(
                "data_shards + repair_shards = {data} + {repair} = {} is more than one FEC \
                 group can hold; their sum must be at most {GROUP_SHARDS_MAX}",
                data + repair
            ),
        );
        return None;
    }
    if let Some(mtu) = mtu {
        // Blame a value the user wrote; with an all-default [link.fec] that is the mtu.
        let blame = |keys: &[&str]| {
            keys.iter().find(|k| t.has(k)).map_or_else(
                || (link.offset_of("mtu"), link.key("mtu")),
                |k| (t.offset_of(k), t.key(k)),
            )
        };
        let shard = (usize::from(mtu) - IP_UDP_OVERHEAD - DATAGRAM_OVERHEAD) as u64 & !1;
        let shards = u64::from(data + repair);
        let group = shards * shard;
        if group > GROUP_BYTES_MAX {
            let (offset, key) = blame(&["data_shards", "repair_shards"]);
            ctx.error(
                offset,
                key,
                format!(
                    "one FEC group of {data} + {repair} shards of {shard} bytes (mtu {mtu}) \
                     is {group} bytes, more than the {GROUP_BYTES_MAX} a receiver buffers per \
                     group; with this mtu, data_shards + repair_shards can be at most {}",
                    GROUP_BYTES_MAX / shard
                ),
            );
            return None;
        }
        let block = group * u64::from(interleave);
        if block > BLOCK_BYTES_MAX {
            let (offset, key) = blame(&["interleave", "data_shards", "repair_shards"]);
            ctx.error(
                offset,
                key,
                format!(
                    "an interleaved block of {interleave} groups × ({data} + {repair}) shards × \
                     {shard} bytes is {block} bytes, more than the {BLOCK_BYTES_MAX} each side \
                     buffers; with these shards and mtu, interleave can be at most {}",
                    BLOCK_BYTES_MAX / group
                ),
            );
            return None;
        }
    }
    Some(FecShape {
        data_shards: data,
        repair_shards: repair,
        interleave,
        flush,
        block_span,
    })
}
