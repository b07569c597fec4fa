//! The datagram envelope and header, laid out by hand in fixed big-endian fields (see WIRE.md).
//!
//! ```text
//! [magic 4][version 1][flags 1][session 8][seq 8][group 8][index 2][k 2][m 2][payload_len 2]
//! [payload payload_len][tag 16, only when authenticated][crc32 4]
//! ```
//!
//! The envelope (magic and version at the front, CRC32 of everything before it in the last four
//! bytes) is the part every future version keeps, so a receiver can tell "another version" from
//! "corrupted" before it knows the rest of the layout.

use crate::error::Reject;

pub const MAGIC: [u8; 4] = *b"DDGW";
pub const VERSION: u8 = 1;

pub const HEADER_LEN: usize = 38;
pub const CRC_LEN: usize = 4;
pub const TAG_LEN: usize = 16;
/// `data_seq` (u64) and `len` (u16) at the front of every data shard.
pub const DATA_PREFIX_LEN: usize = 10;

pub const FLAG_AUTHENTICATED: u8 = 0x01;
pub const FLAG_REPAIR: u8 = 0x02;
const KNOWN_FLAGS: u8 = FLAG_AUTHENTICATED | FLAG_REPAIR;

/// The shortest input whose envelope can be checked at all: magic, version and CRC.
pub const MIN_ENVELOPE_LEN: usize = MAGIC.len() + 1 + CRC_LEN;
/// The largest UDP payload over IPv4 (65535 − 20 − 8).
pub const MAX_UDP_PAYLOAD: usize = 65_507;

const OFF_VERSION: usize = 4;
const OFF_FLAGS: usize = 5;
const OFF_SESSION: usize = 6;
const OFF_SEQ: usize = 14;
const OFF_GROUP: usize = 22;
const OFF_INDEX: usize = 30;
const OFF_K: usize = 32;
const OFF_M: usize = 34;
const OFF_LEN: usize = 36;

/// The fixed header of a version-1 datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Header {
    pub flags: u8,
    /// The transmitter's epoch (high 32 bits) and 32 random bits, chosen when it starts
    /// (`crate::epoch`).
    pub session: u64,
    /// Counts every datagram of the session, data and repair, from 0.
    pub seq: u64,
    /// FEC group, counted from 0 in the session.
    pub group: u64,
    /// Position in the group: data shards `0..k`, repair shards `k..k + m`.
    pub index: u16,
    /// Data shards of the group. On data shards this is the configured (nominal) count, an
    /// upper bound, because the group may still be closed early by the flush timer; repair
    /// shards carry the group's actual count.
    pub k: u16,
    /// Repair shards of the group; nominal on data shards, actual on repair shards.
    pub m: u16,
    /// Bytes of payload (plaintext and ciphertext have the same length).
    pub payload_len: u16,
}

impl Header {
    pub fn is_authenticated(&self) -> bool {
        self.flags & FLAG_AUTHENTICATED != 0
    }

    pub fn is_repair(&self) -> bool {
        self.flags & FLAG_REPAIR != 0
    }

    /// Total datagram length this header announces.
    pub fn datagram_len(&self) -> usize {
        datagram_len(usize::from(self.payload_len), self.is_authenticated())
    }

    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[..4].copy_from_slice(&MAGIC);
        b[OFF_VERSION] = VERSION;
        b[OFF_FLAGS] = self.flags;
        b[OFF_SESSION..OFF_SEQ].copy_from_slice(&self.session.to_be_bytes());
        b[OFF_SEQ..OFF_GROUP].copy_from_slice(&self.seq.to_be_bytes());
        b[OFF_GROUP..OFF_INDEX].copy_from_slice(&self.group.to_be_bytes());
        b[OFF_INDEX..OFF_K].copy_from_slice(&self.index.to_be_bytes());
        b[OFF_K..OFF_M].copy_from_slice(&self.k.to_be_bytes());
        b[OFF_M..OFF_LEN].copy_from_slice(&self.m.to_be_bytes());
        b[OFF_LEN..HEADER_LEN].copy_from_slice(&self.payload_len.to_be_bytes());
        b
    }

    /// Reads the header fields of a version-1 datagram. Only the layout is checked here;
    /// [`check`] does the whole validation.
    pub fn parse(b: &[u8]) -> Option<Header> {
        let h = b.get(..HEADER_LEN)?;
        Some(Header {
            flags: h[OFF_FLAGS],
            session: be_u64(h, OFF_SESSION)?,
            seq: be_u64(h, OFF_SEQ)?,
            group: be_u64(h, OFF_GROUP)?,
            index: be_u16(h, OFF_INDEX)?,
            k: be_u16(h, OFF_K)?,
            m: be_u16(h, OFF_M)?,
            payload_len: be_u16(h, OFF_LEN)?,
        })
    }

    /// Whether the shard fields describe a shard that can exist: data shards have
    /// `index < k`, repair shards `k <= index < k + m` with `m >= 1`, and a group never has
    /// more than [`crate::fec::MAX_GROUP_SHARDS`] shards.
    pub fn shape_is_valid(&self) -> bool {
        let (k, m, i) = (
            usize::from(self.k),
            usize::from(self.m),
            usize::from(self.index),
        );
        if k == 0 || k + m > crate::fec::MAX_GROUP_SHARDS {
            return false;
        }
        if self.is_repair() {
            m >= 1 && i >= k && i < k + m
        } else {
            i < k
        }
    }
}

/// Length of a datagram carrying `payload_len` bytes of payload.
pub const fn datagram_len(payload_len: usize, authenticated: bool) -> usize {
    HEADER_LEN + payload_len + if authenticated { TAG_LEN } else { 0 } + CRC_LEN
}

/// Bytes a datagram spends on header and trailer.
pub const fn overhead(authenticated: bool) -> usize {
    datagram_len(0, authenticated)
}

pub fn crc32(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

/// Validates everything about a datagram that needs no key and no decoder state: envelope,
/// CRC, version, header fields and length. Returns the header.
///
/// The order is deliberate: the magic first (cheapest, and it rejects stray traffic on the
/// port), then the CRC (so that a flipped bit in the version byte reads as corruption rather
/// than as a new protocol version), then the version, then the version-1 layout.
pub fn check(datagram: &[u8]) -> Result<Header, Reject> {
    if datagram.len() < MIN_ENVELOPE_LEN {
        return Err(Reject::BadLength);
    }
    if datagram[..4] != MAGIC {
        return Err(Reject::BadMagic);
    }
    let (body, trailer) = datagram.split_at(datagram.len() - CRC_LEN);
    if be_u32(trailer, 0) != Some(crc32(body)) {
        return Err(Reject::Crc);
    }
    let version = datagram[OFF_VERSION];
    if version != VERSION {
        return Err(Reject::BadVersion(version));
    }
    let header = Header::parse(datagram).ok_or(Reject::BadLength)?;
    if header.datagram_len() != datagram.len() {
        return Err(Reject::BadLength);
    }
    if header.flags & !KNOWN_FLAGS != 0 || !header.shape_is_valid() {
        return Err(Reject::Malformed);
    }
    Ok(header)
}

pub(crate) fn be_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

pub(crate) fn be_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

pub(crate) fn be_u64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Header {
        Header {
            flags: FLAG_REPAIR,
            session: 0x0102_0304_0506_0708,
            seq: 9,
            group: 2,
            index: 65,
            k: 64,
            m: 16,
            payload_len: 3,
        }
    }

    fn datagram(h: &Header) -> Vec<u8> {
        let mut d = h.to_bytes().to_vec();
        d.extend(std::iter::repeat_n(0xAB, usize::from(h.payload_len)));
        if h.is_authenticated() {
            d.extend([0u8; TAG_LEN]);
        }
        let crc = crc32(&d);
        d.extend(crc.to_be_bytes());
        d
    }

    #[test]
    fn header_round_trips() {
        let h = sample();
        assert_eq!(Header::parse(&h.to_bytes()), Some(h));
        assert_eq!(check(&datagram(&h)), Ok(h));
    }

    #[test]
    fn header_is_38_bytes_big_endian() {
        let b = sample().to_bytes();
        assert_eq!(&b[..4], b"DDGW");
        assert_eq!(b[4], 1);
        assert_eq!(b[5], 2);
        assert_eq!(&b[6..14], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(&b[30..32], &[0, 65]);
        assert_eq!(&b[36..38], &[0, 3]);
    }

    #[test]
    fn check_rejects_by_reason() {
        let h = sample();
        let good = datagram(&h);
        assert_eq!(check(&good[..5]), Err(Reject::BadLength));
        let mut d = good.clone();
        d[0] ^= 1;
        assert_eq!(check(&d), Err(Reject::BadMagic));
        let mut d = good.clone();
        d[40] ^= 1;
        assert_eq!(check(&d), Err(Reject::Crc));
        // A flipped version bit is corruption, not a new version.
        let mut d = good.clone();
        d[4] = 2;
        assert_eq!(check(&d), Err(Reject::Crc));
        // A real version-2 sender keeps the envelope, so the CRC holds.
        let mut d = good.clone();
        d[4] = 2;
        let n = d.len() - 4;
        let crc = crc32(&d[..n]);
        d[n..].copy_from_slice(&crc.to_be_bytes());
        assert_eq!(check(&d), Err(Reject::BadVersion(2)));
        // Length field disagreeing with the datagram.
        let mut bad = h;
        bad.payload_len = 4;
        let mut d = datagram(&h);
        d[..HEADER_LEN].copy_from_slice(&bad.to_bytes());
        let n = d.len() - 4;
        let crc = crc32(&d[..n]);
        d[n..].copy_from_slice(&crc.to_be_bytes());
        assert_eq!(check(&d), Err(Reject::BadLength));
    }

    #[test]
    fn shape_rules() {
        let mut h = sample();
        assert!(h.shape_is_valid());
        h.index = 63;
        assert!(!h.shape_is_valid(), "repair index below k");
        h.index = 80;
        assert!(!h.shape_is_valid(), "repair index past k + m");
        h.flags = 0;
        h.index = 63;
        assert!(h.shape_is_valid());
        h.index = 64;
        assert!(!h.shape_is_valid(), "data index at k");
        h.k = 0;
        h.index = 0;
        assert!(!h.shape_is_valid(), "empty group");
        let mut h = sample();
        h.flags = FLAG_REPAIR | 0x80;
        assert_eq!(check(&datagram(&h)), Err(Reject::Malformed));
    }
}
