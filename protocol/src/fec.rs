//! Systematic Reed-Solomon erasure coding over groups of shards (reed-solomon-simd, GF(2^16)).
//!
//! A group is `k` data shards and `m` repair shards, all `shard_bytes` long (even, as the
//! library requires). Data shards are sent as they are; any `k` of the `k + m` shards restore
//! the data shards that are missing.

use reed_solomon_simd::{ReedSolomonDecoder, ReedSolomonEncoder};

/// Most shards (data + repair) one group may have. Far above any useful shape; it bounds what
/// a receiver must be prepared to buffer and decode for one group.
pub const MAX_GROUP_SHARDS: usize = 4096;
/// Most bytes one group may occupy, `(k + m) × shard_bytes`, for the same reason.
pub const MAX_GROUP_BYTES: usize = 32 << 20;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Reed-Solomon: {0}")]
pub struct FecError(String);

impl From<reed_solomon_simd::Error> for FecError {
    fn from(e: reed_solomon_simd::Error) -> Self {
        FecError(e.to_string())
    }
}

/// Whether the library can code `k` data with `m` repair shards, within our own limits.
pub fn shape_supported(k: usize, m: usize) -> bool {
    k >= 1
        && k + m <= MAX_GROUP_SHARDS
        && (m == 0 || ReedSolomonEncoder::supports(k, m) && ReedSolomonDecoder::supports(k, m))
}

/// Repair shards for a group that the flush timer closed with `k_actual` of its nominal
/// `k` data shards: the same ratio, rounded up, and at least one, so that a short group keeps
/// the configured protection against random loss and costs the same share of the link.
pub fn repair_count(k_actual: u16, k: u16, m: u16) -> u16 {
    if m == 0 || k_actual == 0 {
        return 0;
    }
    if k_actual >= k {
        return m;
    }
    let scaled = (u32::from(m) * u32::from(k_actual)).div_ceil(u32::from(k));
    // scaled <= m because k_actual < k, so the conversion cannot fail.
    u16::try_from(scaled).unwrap_or(m).clamp(1, m)
}

/// Shard size for contents of at most `max_content` bytes: rounded up to even.
pub fn shard_size(max_content: usize) -> usize {
    max_content.max(2).next_multiple_of(2)
}

/// Reuses one library encoder (and its work space) across groups.
#[derive(Default)]
pub struct GroupEncoder {
    rs: Option<ReedSolomonEncoder>,
}

impl GroupEncoder {
    /// Computes the `m` repair shards of `data` (each exactly `shard_bytes` long) and writes
    /// them one after another into `out`, replacing its contents.
    pub fn encode<'a>(
        &mut self,
        k: usize,
        m: usize,
        shard_bytes: usize,
        data: impl IntoIterator<Item = &'a [u8]>,
        out: &mut Vec<u8>,
    ) -> Result<(), FecError> {
        out.clear();
        let rs = match &mut self.rs {
            Some(rs) => {
                rs.reset(k, m, shard_bytes)?;
                rs
            }
            slot => slot.insert(ReedSolomonEncoder::new(k, m, shard_bytes)?),
        };
        for shard in data {
            rs.add_original_shard(shard)?;
        }
        let result = rs.encode()?;
        for shard in result.recovery_iter() {
            out.extend_from_slice(shard);
        }
        Ok(())
    }
}

/// Reuses one library decoder across groups.
#[derive(Default)]
pub struct GroupDecoder {
    rs: Option<ReedSolomonDecoder>,
}

impl GroupDecoder {
    /// Restores the missing data shards of a group. `data` holds `(index, shard)` with
    /// `index < k`; `repair` holds `(index - k, shard)`. Every shard must be `shard_bytes`
    /// long. `restored` is called with each restored data shard.
    pub fn decode<'a>(
        &mut self,
        k: usize,
        m: usize,
        shard_bytes: usize,
        data: impl IntoIterator<Item = (usize, &'a [u8])>,
        repair: impl IntoIterator<Item = (usize, &'a [u8])>,
        mut restored: impl FnMut(usize, &[u8]),
    ) -> Result<(), FecError> {
        let rs = match &mut self.rs {
            Some(rs) => {
                rs.reset(k, m, shard_bytes)?;
                rs
            }
            slot => slot.insert(ReedSolomonDecoder::new(k, m, shard_bytes)?),
        };
        for (i, shard) in data {
            rs.add_original_shard(i, shard)?;
        }
        for (i, shard) in repair {
            rs.add_recovery_shard(i, shard)?;
        }
        let result = rs.decode()?;
        for (i, shard) in result.restored_original_iter() {
            restored(i, shard);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repair_count_for_short_groups() {
        assert_eq!(repair_count(64, 64, 16), 16);
        assert_eq!(repair_count(32, 64, 16), 8);
        assert_eq!(repair_count(33, 64, 16), 9);
        assert_eq!(repair_count(1, 64, 16), 1);
        assert_eq!(repair_count(3, 4, 1), 1);
        assert_eq!(repair_count(5, 10, 0), 0);
        assert_eq!(repair_count(1, 1, 4), 4);
    }

    #[test]
    fn shapes() {
        assert!(shape_supported(64, 16));
        assert!(shape_supported(1, 0));
        assert!(shape_supported(1, 1));
        assert!(!shape_supported(0, 4));
        assert!(!shape_supported(4000, 100));
    }

    #[test]
    fn encode_then_restore_any_k_of_k_plus_m() {
        let (k, m, size) = (5usize, 3usize, 8usize);
        let data: Vec<Vec<u8>> = (0..k)
            .map(|i| (0..size).map(|j| (i * 31 + j * 7) as u8).collect())
            .collect();
        let mut enc = GroupEncoder::default();
        let mut repair = Vec::new();
        enc.encode(k, m, size, data.iter().map(Vec::as_slice), &mut repair)
            .unwrap();
        assert_eq!(repair.len(), m * size);
        let mut dec = GroupDecoder::default();
        // Lose data shards 0, 2 and 4; keep repair 0, 1 and 2.
        let kept = [1usize, 3];
        let mut got = Vec::new();
        dec.decode(
            k,
            m,
            size,
            kept.iter().map(|&i| (i, data[i].as_slice())),
            (0..m).map(|r| (r, &repair[r * size..(r + 1) * size])),
            |i, s| got.push((i, s.to_vec())),
        )
        .unwrap();
        got.sort();
        assert_eq!(
            got,
            vec![
                (0, data[0].clone()),
                (2, data[2].clone()),
                (4, data[4].clone())
            ]
        );
        // Too few shards is an error, not a panic.
        assert!(
            dec.decode(
                k,
                m,
                size,
                kept.iter().map(|&i| (i, data[i].as_slice())),
                [(0usize, &repair[..size])],
                |_, _| {},
            )
            .is_err()
        );
        // So is a wrong-sized shard.
        assert!(
            dec.decode(
                k,
                m,
                size,
                [(1usize, &data[1][..4])],
                (0..m).map(|r| (r, &repair[r * size..(r + 1) * size])),
                |_, _| {},
            )
            .is_err()
        );
    }
}
