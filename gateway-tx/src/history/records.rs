//! Numbered samples kept in their batch encoding. The history thread encodes each sample once,
//! when the tap hands it over, and copies those bytes into the buffer's record and into the
//! batch that carries it; encoding was the thread's main cost at link rate.

use std::ops::Range;

use protocol::codec;
use protocol::model::Sample;

/// A history batch's fixed part at its largest: message tag, catalogue hash, four u64 varints
/// and the sample count.
pub(super) const BATCH_FIXED: usize = 1 + 10 + 4 * 10 + 5;

/// Don't move bytes to the front of the buffer for less than this.
const COMPACT_MIN: usize = 64 * 1024;

/// Numbered samples in their batch encoding, in the order pushed; taken from the front.
#[derive(Debug, Default)]
pub(super) struct EncodedRecords {
    bytes: Vec<u8>,
    /// Per record: its sequence number and where its encoding ends in `bytes`.
    ends: Vec<(u64, usize)>,
    /// The first record not yet taken.
    first: usize,
}

impl EncodedRecords {
    pub fn push(&mut self, seq: u64, sample: &Sample) {
        codec::encode_sample_into(sample, &mut self.bytes);
        self.ends.push((seq, self.bytes.len()));
    }

    pub fn len(&self) -> usize {
        self.ends.len() - self.first
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of the records' encodings.
    pub fn byte_len(&self) -> usize {
        self.bytes.len() - self.start(0)
    }

    /// How many of the oldest records it takes for their encodings to hold at least `bytes`
    /// (all of them when they hold less).
    pub fn oldest_holding(&self, bytes: usize) -> usize {
        if bytes == 0 {
            return 0;
        }
        let base = self.start(0);
        let live = &self.ends[self.first..];
        let short = live.partition_point(|&(_, end)| end - base < bytes);
        (short + 1).min(live.len())
    }

    /// The sequence number of record `i` (0 is the oldest not taken).
    pub fn seq(&self, i: usize) -> Option<u64> {
        self.ends.get(self.first + i).map(|&(seq, _)| seq)
    }

    /// Where record `i`'s encoding starts in `bytes`.
    fn start(&self, i: usize) -> usize {
        match (self.first + i).checked_sub(1) {
            Some(before) => self
                .ends
                .get(before)
                .map_or(self.bytes.len(), |&(_, end)| end),
            None => 0,
        }
    }

    /// The encodings of records `range`, back to back.
    pub fn bytes(&self, range: Range<usize>) -> &[u8] {
        let (start, end) = (self.start(range.start), self.start(range.end));
        self.bytes.get(start..end).unwrap_or_default()
    }

    /// Records `from` on: each one's sequence number and encoding.
    pub fn iter_from(&self, from: usize) -> impl Iterator<Item = (u64, &[u8])> {
        let mut start = self.start(from);
        self.ends
            .get(self.first + from..)
            .unwrap_or_default()
            .iter()
            .map(move |&(seq, end)| {
                let bytes = self.bytes.get(start..end).unwrap_or_default();
                start = end;
                (seq, bytes)
            })
    }

    /// Drops the `n` oldest records.
    pub fn take_front(&mut self, n: usize) {
        self.first = (self.first + n).min(self.ends.len());
        if self.first == self.ends.len() {
            self.bytes.clear();
            self.ends.clear();
            self.first = 0;
            return;
        }
        // Moves what is left to the front once the taken part is the larger half, so each
        // byte moves at most about once.
        let start = self.start(0);
        if start >= COMPACT_MIN && start * 2 >= self.bytes.len() {
            self.bytes.drain(..start);
            self.ends.drain(..self.first);
            for (_, end) in &mut self.ends {
                *end -= start;
            }
            self.first = 0;
        }
    }

    /// Splits the `n` oldest records into batches of consecutive sequence numbers whose
    /// encoding fits `budget` bytes (a record bigger than that goes alone): the index range of
    /// each.
    pub fn batches(&self, n: usize, budget: usize) -> Vec<Range<usize>> {
        let n = n.min(self.len());
        let mut out = Vec::new();
        let mut start = 0;
        let mut size = BATCH_FIXED;
        let mut prev_end = self.start(0);
        for (i, &(seq, end)) in self.ends[self.first..self.first + n].iter().enumerate() {
            let len = end - prev_end;
            prev_end = end;
            if i > start {
                let follows = self
                    .seq(start)
                    .is_some_and(|s| seq == s + (i - start) as u64);
                if !follows || size + len > budget {
                    out.push(start..i);
                    start = i;
                    size = BATCH_FIXED;
                }
            }
            size += len;
        }
        if start < n {
            out.push(start..n);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::model::{Quality, Value};

    fn sample(i: u64) -> Sample {
        Sample {
            tag: (i % 7) as u32,
            value: if i.is_multiple_of(5) {
                Value::String("x".repeat(i as usize % 40))
            } else {
                Value::Double(i as f64 * 0.5)
            },
            quality: Quality::GOOD,
            time: 1_700_000_000_000_000_000 + i as i64,
        }
    }

    fn encoded(i: u64) -> Vec<u8> {
        let mut b = Vec::new();
        codec::encode_sample_into(&sample(i), &mut b);
        b
    }

    #[test]
    fn records_keep_their_bytes_through_taking_and_compaction() {
        let mut r = EncodedRecords::default();
        let mut next_taken = 0u64;
        let mut next_pushed = 0u64;
        // Enough rounds for several compactions (COMPACT_MIN is 64 KiB).
        for round in 0..200u64 {
            for _ in 0..(round % 13) * 97 {
                r.push(next_pushed, &sample(next_pushed));
                next_pushed += 1;
            }
            let take = (r.len() * 2 / 3).max(usize::from(!r.is_empty()));
            let expected: Vec<u8> = (next_taken..next_taken + take as u64)
                .flat_map(encoded)
                .collect();
            assert_eq!(r.bytes(0..take), &expected[..], "round {round}");
            for (k, (seq, bytes)) in r.iter_from(0).enumerate() {
                assert_eq!(seq, next_taken + k as u64);
                assert_eq!(bytes, &encoded(seq)[..]);
            }
            r.take_front(take);
            next_taken += take as u64;
            assert_eq!(r.len() as u64, next_pushed - next_taken);
            assert_eq!(r.seq(0), (!r.is_empty()).then_some(next_taken));
            assert_eq!(r.byte_len(), r.bytes(0..r.len()).len());
            // The fewest oldest records holding at least so many bytes.
            for want in [0, 1, 100, r.byte_len() / 2, r.byte_len()] {
                let n = r.oldest_holding(want);
                let held = r.bytes(0..n).len();
                assert!(held >= want || n == r.len(), "{n} hold {held} < {want}");
                assert!(
                    n == 0 || r.bytes(0..n - 1).len() < want,
                    "{n} is not the fewest"
                );
            }
        }
        assert!(
            r.bytes.len() < 4 * COMPACT_MIN,
            "compacted: {}",
            r.bytes.len()
        );
    }

    #[test]
    fn batches_fit_the_budget_and_break_at_gaps() {
        let mut r = EncodedRecords::default();
        for seq in (0..300).chain(310..400) {
            r.push(seq, &sample(seq));
        }
        r.take_front(20);
        let budget = 400;
        let batches = r.batches(r.len(), budget);
        let mut next = 0;
        for b in &batches {
            assert_eq!(b.start, next, "batches cover every record once");
            next = b.end;
            let size = BATCH_FIXED + r.bytes(b.clone()).len();
            assert!(size <= budget || b.len() == 1, "{b:?} is {size} bytes");
            let seqs: Vec<u64> = (b.start..b.end).filter_map(|i| r.seq(i)).collect();
            assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
            // Full unless the next record would not fit or does not follow.
            if let Some(after) = r.seq(b.end) {
                let next_len = r.bytes(b.end..b.end + 1).len();
                assert!(after != seqs[seqs.len() - 1] + 1 || size + next_len > budget);
            }
        }
        assert_eq!(next, r.len());
        assert!(batches.iter().any(|b| r.seq(b.start) == Some(310)));
        // Only the first n.
        let some = r.batches(5, budget);
        assert_eq!(some.last().map(|b| b.end), Some(5));
        // A record alone bigger than the budget goes alone.
        let mut big = EncodedRecords::default();
        big.push(1, &sample(1));
        big.push(
            2,
            &Sample {
                value: Value::String("y".repeat(1000)),
                ..sample(2)
            },
        );
        big.push(3, &sample(3));
        assert_eq!(big.batches(3, budget), vec![0..1, 1..2, 2..3]);
    }
}
