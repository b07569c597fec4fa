//! Systematic Reed-Solomon erasure coding over groups of shards (reed-solomon-simd, GF(2^16)).
//!
//! A group is `k` data shards and `m` repair shards, all `shard_bytes` long (even, as the
//! library requires). Data shards are sent as they are; any `k` of the `k + m` shards restore
//! the data shards that are missing.

use reed_solomon_simd::rate::{DefaultRateDecoder, RateDecoder};
use reed_solomon_simd::{ReedSolomonDecoder, ReedSolomonEncoder};

#[cfg(any(fuzzing, test))]
mod memo;

/// The decoder's engine: the library's own, except in fuzz builds (see `fec/memo.rs`).
#[cfg(not(fuzzing))]
type DecodeEngine = reed_solomon_simd::engine::DefaultEngine;
#[cfg(fuzzing)]
type DecodeEngine = memo::MemoEngine;

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

/// Random loss rate that a group closed early by the flush timer is sized for: the highest loss
/// at which the defaults promise full delivery. The default full group (64 + 16) meets
/// [`DESIGN_RESIDUAL`] at exactly this rate, so short groups get the protection full ones have.
pub const DESIGN_LOSS: f64 = 0.05;
/// Largest chance, at [`DESIGN_LOSS`], that a short group loses more shards than it has repair
/// shards; a full 64 + 16 group is at 3.7e-7. The flush timer closes at most one block every
/// `flush` (200 a second at 5 ms), so a link losing 5 % around the clock loses at most one short
/// group in about 1.4 hours, which the rolling snapshot heals; at 1 % loss the same shapes are
/// at 1e-10 or less.
pub const DESIGN_RESIDUAL: f64 = 1e-6;

/// Chance that a group of `k` data and `r` repair shards cannot be repaired when each shard is
/// lost independently with probability `p`: more than `r` of its `k + r` shards lost, the
/// binomial tail P(X ≥ r + 1), X ~ Bin(k + r, p). Summed term by term in log space, so it neither
/// overflows nor loses the small tail to cancellation.
pub fn residual_loss(k: u16, r: u16, p: f64) -> f64 {
    let n = u32::from(k) + u32::from(r);
    let first = u32::from(r) + 1;
    if k == 0 || p <= 0.0 {
        return 0.0;
    }
    if p >= 1.0 {
        return 1.0;
    }
    let (ln_p, ln_q) = (p.ln(), (-p).ln_1p());
    // ln C(n, first)
    let mut ln_c = 0.0;
    for i in 1..=first {
        ln_c += f64::from(n - first + i).ln() - f64::from(i).ln();
    }
    let mut sum = 0.0;
    let mut j = first;
    loop {
        let term = (ln_c + f64::from(j) * ln_p + f64::from(n - j) * ln_q).exp();
        sum += term;
        // Past the mode the terms fall faster than geometrically: stop once they no longer
        // change the sum.
        if j == n || (f64::from(j) > f64::from(n) * p && term < sum * 1e-17) {
            break;
        }
        ln_c += f64::from(n - j).ln() - f64::from(j + 1).ln();
        j += 1;
    }
    sum.min(1.0)
}

/// Fewest repair shards (at most `cap`) that keep a group of `k_actual` data shards within
/// [`DESIGN_RESIDUAL`] at [`DESIGN_LOSS`]; `cap` if even that many do not.
pub fn design_repair(k_actual: u16, cap: u16) -> u16 {
    (0..=cap)
        .find(|&r| residual_loss(k_actual, r, DESIGN_LOSS) <= DESIGN_RESIDUAL)
        .unwrap_or(cap)
}

/// Repair shards for a group closed with `k_actual` of its nominal `k` data shards:
///
/// - a full group (`k_actual ≥ k`) has the configured `m`;
/// - a short one has `max(ceil(m × k_actual / k), design_repair(k_actual))`, capped at `m`: at
///   least the configured share of the link, and at least what it takes to survive
///   [`DESIGN_LOSS`] random loss within [`DESIGN_RESIDUAL`]. A group of a few shards needs
///   proportionally far more repair than a full one for the same residual loss (one data shard
///   needs 4 repair shards, ten need 7), which the proportional share alone does not give.
///
/// `m = 0` means no FEC: no repair shards. [`RepairSizes`] caches this per `k_actual`.
pub fn repair_count(k_actual: u16, k: u16, m: u16) -> u16 {
    if m == 0 || k_actual == 0 {
        return 0;
    }
    if k_actual >= k {
        return m;
    }
    let share = (u32::from(m) * u32::from(k_actual)).div_ceil(u32::from(k));
    // share <= m because k_actual < k, so the conversion cannot fail.
    let share = u16::try_from(share).unwrap_or(m);
    share.max(design_repair(k_actual, m)).clamp(1, m)
}

/// [`repair_count`] for one configured shape, computed once per `k_actual` and then looked up:
/// no work and no allocation per group after the first of each size.
#[derive(Debug, Clone)]
pub struct RepairSizes {
    k: u16,
    m: u16,
    /// `repair_count(k_actual) + 1` at index `k_actual`; 0 until computed.
    cache: Vec<u16>,
}

impl RepairSizes {
    pub fn new(k: u16, m: u16) -> RepairSizes {
        RepairSizes {
            k,
            m,
            cache: vec![0; usize::from(k)],
        }
    }

    pub fn get(&mut self, k_actual: u16) -> u16 {
        let Some(slot) = self.cache.get_mut(usize::from(k_actual)) else {
            return repair_count(k_actual, self.k, self.m);
        };
        if *slot == 0 {
            // At most m <= 4095, so m + 1 fits.
            *slot = repair_count(k_actual, self.k, self.m).saturating_add(1);
        }
        *slot - 1
    }
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
    /// What `ReedSolomonDecoder` wraps, with the engine chosen above.
    rs: Option<DefaultRateDecoder<DecodeEngine>>,
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
            slot => slot.insert(DefaultRateDecoder::new(
                k,
                m,
                shard_bytes,
                DecodeEngine::default(),
                None,
            )?),
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
    fn residual_loss_is_the_binomial_tail() {
        // One data and one repair shard: lost only if both are, p².
        assert!((residual_loss(1, 1, 0.05) - 0.0025).abs() < 1e-15);
        // No repair: lost if any of k is, 1 - q^k.
        let want = 1.0 - 0.95f64.powi(10);
        assert!((residual_loss(10, 0, 0.05) - want).abs() < 1e-12);
        // k = 2, r = 1: P(X >= 2), X ~ Bin(3, p) = 3p²q + p³.
        let p: f64 = 0.05;
        let want = 3.0 * p * p * (1.0 - p) + p * p * p;
        assert!((residual_loss(2, 1, p) - want).abs() < 1e-15);
        // The default full group at the design loss meets the target, one shard fewer does not.
        assert!(residual_loss(64, 16, DESIGN_LOSS) <= DESIGN_RESIDUAL);
        assert!(residual_loss(64, 15, DESIGN_LOSS) > DESIGN_RESIDUAL);
        // Large groups neither overflow nor underflow.
        let big = residual_loss(4000, 96, DESIGN_LOSS);
        assert!(big > 0.99 && big <= 1.0, "{big}");
        let tiny = residual_loss(100, 60, 0.01);
        assert!((0.0..1e-40).contains(&tiny), "{tiny}");
        assert_eq!(residual_loss(5, 3, 0.0), 0.0);
        assert_eq!(residual_loss(5, 3, 1.0), 1.0);
    }

    #[test]
    fn design_repair_is_the_smallest_that_meets_the_target() {
        // Computed independently (exact binomial sums): k' -> R(k').
        for (k, r) in [
            (1, 4),
            (2, 5),
            (3, 5),
            (4, 6),
            (7, 7),
            (10, 7),
            (11, 8),
            (16, 9),
            (32, 11),
            (48, 14),
            (63, 16),
            (64, 16),
        ] {
            assert_eq!(design_repair(k, 100), r, "k' = {k}");
            assert!(residual_loss(k, r, DESIGN_LOSS) <= DESIGN_RESIDUAL);
            assert!(residual_loss(k, r - 1, DESIGN_LOSS) > DESIGN_RESIDUAL);
        }
        assert_eq!(design_repair(10, 3), 3, "capped");
    }

    #[test]
    fn repair_count_for_short_groups() {
        // Full groups keep m.
        assert_eq!(repair_count(64, 64, 16), 16);
        assert_eq!(repair_count(1, 1, 4), 4);
        // Short groups: the design count where it is more than the proportional share...
        assert_eq!(repair_count(1, 64, 16), 4);
        assert_eq!(repair_count(2, 64, 16), 5);
        assert_eq!(repair_count(10, 64, 16), 7);
        assert_eq!(repair_count(32, 64, 16), 11);
        assert_eq!(repair_count(63, 64, 16), 16);
        // ... the proportional share where that is more ...
        assert_eq!(repair_count(50, 100, 50), 25);
        // ... and never more than m.
        assert_eq!(repair_count(3, 4, 1), 1);
        assert_eq!(repair_count(2, 4, 4), 4);
        assert_eq!(repair_count(10, 64, 5), 5);
        // No FEC.
        assert_eq!(repair_count(5, 10, 0), 0);
        assert_eq!(repair_count(0, 10, 4), 0);
    }

    #[test]
    fn repair_sizes_cache_matches_repair_count() {
        let mut sizes = RepairSizes::new(64, 16);
        for _ in 0..2 {
            for k in 0..=70 {
                assert_eq!(sizes.get(k), repair_count(k, 64, 16), "k' = {k}");
            }
        }
        let mut none = RepairSizes::new(8, 0);
        assert_eq!(none.get(3), 0);
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
