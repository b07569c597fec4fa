//! A Reed-Solomon engine for fuzz builds that remembers its erasure-locator evaluations.
//!
//! The library evaluates the erasure locator polynomial over the whole field (two Walsh-Hadamard
//! transforms of 2^16 elements) on every decode, whatever the group's size: about 150 µs
//! natively and far more under the fuzzer's comparison tracing, which made FEC repair nine
//! tenths of the decoder fuzz target's time. The evaluation depends only on which shards are
//! missing, and mutated inputs keep repairing the same few patterns, so a fuzz build looks the
//! result up instead of recomputing it. Everything else (shard checks, transforms,
//! multiplication, restoring) runs as in a normal build; normal builds use the library's
//! engine directly.

use std::cell::RefCell;
use std::collections::VecDeque;

use reed_solomon_simd::engine::{DefaultEngine, Engine, GF_ORDER, GfElement, ShardsRefMut};

/// Erasure patterns remembered (each 256 KiB: pattern and evaluation).
const ENTRIES: usize = 16;

type Evaluation = Box<[GfElement; GF_ORDER]>;

thread_local! {
    /// `(truncated_size, erasures in, evaluation out)`, most recently used first.
    static SEEN: RefCell<VecDeque<(usize, Evaluation, Evaluation)>> =
        const { RefCell::new(VecDeque::new()) };
}

#[derive(Default)]
pub struct MemoEngine(DefaultEngine);

impl Engine for MemoEngine {
    fn fft(
        &self,
        data: &mut ShardsRefMut,
        pos: usize,
        size: usize,
        truncated_size: usize,
        skew_delta: usize,
    ) {
        self.0.fft(data, pos, size, truncated_size, skew_delta);
    }

    fn ifft(
        &self,
        data: &mut ShardsRefMut,
        pos: usize,
        size: usize,
        truncated_size: usize,
        skew_delta: usize,
    ) {
        self.0.ifft(data, pos, size, truncated_size, skew_delta);
    }

    fn mul(&self, x: &mut [[u8; 64]], log_m: GfElement) {
        self.0.mul(x, log_m);
    }

    fn eval_poly(erasures: &mut [GfElement; GF_ORDER], truncated_size: usize) {
        SEEN.with_borrow_mut(|seen| {
            // Whole-array comparisons and copies: memcmp and memcpy, which the fuzzer's
            // instrumentation does not slow down.
            if let Some(i) = seen
                .iter()
                .position(|(t, input, _)| *t == truncated_size && input[..] == erasures[..])
            {
                let hit = seen.remove(i).unwrap_or_else(|| unreachable!());
                erasures.copy_from_slice(&hit.2[..]);
                seen.push_front(hit);
                return;
            }
            let (mut input, mut output) = match seen.len() {
                ENTRIES.. => seen
                    .pop_back()
                    .map(|(_, i, o)| (i, o))
                    .unwrap_or_else(|| unreachable!()),
                _ => (zeroed(), zeroed()),
            };
            input.copy_from_slice(&erasures[..]);
            DefaultEngine::eval_poly(erasures, truncated_size);
            output.copy_from_slice(&erasures[..]);
            seen.push_front((truncated_size, input, output));
        });
    }
}

fn zeroed() -> Evaluation {
    vec![0; GF_ORDER]
        .into_boxed_slice()
        .try_into()
        .unwrap_or_else(|_| unreachable!())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(memo: bool, pattern: &[usize], truncated_size: usize) -> Evaluation {
        let mut e = zeroed();
        for &i in pattern {
            e[i] = 1;
        }
        if memo {
            MemoEngine::eval_poly(&mut e, truncated_size);
        } else {
            DefaultEngine::eval_poly(&mut e, truncated_size);
        }
        e
    }

    #[test]
    fn remembered_evaluations_are_the_library_s() {
        let patterns: Vec<(Vec<usize>, usize)> = (0..ENTRIES + 4)
            .map(|n| ((0..n + 1).map(|i| i * 3).collect(), 128))
            .chain([(vec![0, 1], GF_ORDER), (vec![0, 1], 64)])
            .collect();
        // Twice round more patterns than are kept: misses, evictions and hits.
        for _ in 0..2 {
            for (p, t) in &patterns {
                assert!(eval(true, p, *t) == eval(false, p, *t), "{p:?} {t}");
            }
        }
        // The same pattern again at once: a hit.
        let (p, t) = &patterns[3];
        for _ in 0..3 {
            assert!(eval(true, p, *t) == eval(false, p, *t), "{p:?} {t}");
        }
        assert_eq!(SEEN.with_borrow(VecDeque::len), ENTRIES);
    }

    #[test]
    fn groups_repair_with_the_memo_engine() {
        use reed_solomon_simd::ReedSolomonEncoder;
        use reed_solomon_simd::rate::{DefaultRateDecoder, RateDecoder};

        let (k, m, size) = (5usize, 3usize, 64usize);
        let data: Vec<Vec<u8>> = (0..k)
            .map(|i| (0..size).map(|j| (i * 31 + j * 7) as u8).collect())
            .collect();
        let mut enc = ReedSolomonEncoder::new(k, m, size).unwrap();
        for d in &data {
            enc.add_original_shard(d).unwrap();
        }
        let repair: Vec<Vec<u8>> = enc
            .encode()
            .unwrap()
            .recovery_iter()
            .map(<[u8]>::to_vec)
            .collect();
        let mut dec = DefaultRateDecoder::new(k, m, size, MemoEngine::default(), None).unwrap();
        // Twice: the second decode of the same loss pattern takes the remembered evaluation.
        for _ in 0..2 {
            dec.reset(k, m, size).unwrap();
            for i in [1, 3] {
                dec.add_original_shard(i, &data[i]).unwrap();
            }
            for (i, r) in repair.iter().enumerate() {
                dec.add_recovery_shard(i, r).unwrap();
            }
            let result = dec.decode().unwrap();
            let mut got: Vec<(usize, Vec<u8>)> = result
                .restored_original_iter()
                .map(|(i, s)| (i, s.to_vec()))
                .collect();
            got.sort();
            let want: Vec<(usize, Vec<u8>)> = [0, 2, 4].map(|i| (i, data[i].clone())).into();
            assert_eq!(got, want);
        }
    }
}
