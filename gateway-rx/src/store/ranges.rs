//! The set of history sequence numbers received from one transmitter log, as disjoint ranges,
//! each with the source times of its first and last sample (so a hole between two ranges has a
//! time range).

use std::collections::BTreeMap;

use protocol::model::UnixNanos;

/// `[start, end)` with the source times at both ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub start: u64,
    pub end: u64,
    pub t_first: UnixNanos,
    pub t_last: UnixNanos,
}

/// What an insertion changed, for persisting it: ranges removed (by start) and the range that
/// now covers the insertion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub removed: Vec<u64>,
    pub merged: Range,
}

#[derive(Debug, Clone, Default)]
pub struct RangeSet {
    /// start → range.
    map: BTreeMap<u64, Range>,
}

impl RangeSet {
    pub fn new() -> RangeSet {
        RangeSet::default()
    }

    pub fn from_ranges(ranges: impl IntoIterator<Item = Range>) -> RangeSet {
        let mut set = RangeSet::new();
        for r in ranges {
            set.insert(r);
        }
        set
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Range> {
        self.map.values()
    }

    pub fn first(&self) -> Option<&Range> {
        self.map.values().next()
    }

    /// Adds `r` (non-empty), merging with overlapping and adjacent ranges.
    pub fn insert(&mut self, r: Range) -> Change {
        let mut merged = r;
        let mut removed = Vec::new();
        // A range starting at or before r.start that reaches it.
        if let Some((&s, &prev)) = self.map.range(..=r.start).next_back()
            && prev.end >= r.start
        {
            merged.start = prev.start;
            merged.t_first = prev.t_first;
            if prev.end > merged.end {
                merged.end = prev.end;
                merged.t_last = prev.t_last;
            }
            removed.push(s);
        }
        // Ranges starting within (r.start, merged.end].
        let after: Vec<u64> = self
            .map
            .range(r.start.saturating_add(1)..)
            .take_while(|(s, _)| **s <= merged.end)
            .map(|(s, _)| *s)
            .collect();
        for s in after {
            if let Some(next) = self.map.get(&s).copied() {
                if next.end > merged.end {
                    merged.end = next.end;
                    merged.t_last = next.t_last;
                }
                removed.push(s);
            }
        }
        for s in &removed {
            self.map.remove(s);
        }
        self.map.insert(merged.start, merged);
        removed.retain(|s| *s != merged.start);
        Change { removed, merged }
    }

    /// Whether every number in `[start, end)` is in the set.
    pub fn covers(&self, start: u64, end: u64) -> bool {
        if start >= end {
            return true;
        }
        matches!(self.map.range(..=start).next_back(), Some((_, r)) if r.end >= end)
    }

    /// How many numbers of `[start, end)` are in the set.
    pub fn count_within(&self, start: u64, end: u64) -> u64 {
        let mut n = 0;
        let first = self
            .map
            .range(..=start)
            .next_back()
            .map_or(start, |(s, _)| *s);
        for r in self.map.range(first..end).map(|(_, r)| r) {
            let a = r.start.max(start);
            let b = r.end.min(end);
            n += b.saturating_sub(a);
        }
        n
    }

    /// The holes in `[start, end)`: `(start, end, source time before, source time after)`.
    pub fn holes(
        &self,
        start: u64,
        end: u64,
    ) -> Vec<(u64, u64, Option<UnixNanos>, Option<UnixNanos>)> {
        let mut out = Vec::new();
        if start >= end {
            return out;
        }
        let mut at = start;
        let mut before = None;
        if let Some((_, r)) = self.map.range(..=start).next_back() {
            before = Some(r.t_last);
            at = at.max(r.end);
        }
        for r in self.map.range(start.saturating_add(1)..end).map(|(_, r)| r) {
            if r.start > at {
                out.push((at, r.start, before, Some(r.t_first)));
            }
            at = at.max(r.end);
            before = Some(r.t_last);
        }
        if at < end {
            let after = self.map.range(end..).next().map(|(_, r)| r.t_first);
            out.push((at, end, before, after));
        }
        out
    }

    /// Removes the lowest range (to bound the set); returns it.
    pub fn pop_first(&mut self) -> Option<Range> {
        self.map.pop_first().map(|(_, r)| r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(start: u64, end: u64) -> Range {
        Range {
            start,
            end,
            t_first: start as i64 * 10,
            t_last: (end as i64 - 1) * 10,
        }
    }

    #[test]
    fn merges_overlapping_and_adjacent() {
        let mut s = RangeSet::new();
        s.insert(r(10, 20));
        s.insert(r(30, 40));
        assert_eq!(s.len(), 2);
        assert_eq!(
            s.holes(0, 50),
            vec![
                (0, 10, None, Some(100)),
                (20, 30, Some(190), Some(300)),
                (40, 50, Some(390), None)
            ]
        );
        let c = s.insert(r(20, 30));
        assert_eq!(c.merged, r(10, 40));
        assert_eq!(c.removed, vec![30]);
        assert_eq!(s.len(), 1);
        s.insert(r(5, 12));
        s.insert(r(38, 45));
        assert_eq!(s.iter().copied().collect::<Vec<_>>(), vec![r(5, 45)]);
        s.insert(r(20, 25));
        assert_eq!(s.len(), 1, "inside an existing range");
        assert!(s.covers(5, 45) && !s.covers(4, 6) && !s.covers(44, 46));
    }

    #[test]
    fn counts_and_holes() {
        let s = RangeSet::from_ranges([r(0, 10), r(20, 30), r(40, 50)]);
        assert_eq!(s.count_within(0, 50), 30);
        assert_eq!(s.count_within(5, 25), 10);
        assert_eq!(s.count_within(10, 20), 0);
        assert_eq!(
            s.holes(5, 45),
            vec![
                (10, 20, Some(90), Some(200)),
                (30, 40, Some(290), Some(400))
            ]
        );
        assert_eq!(s.holes(12, 18), vec![(12, 18, Some(90), Some(200))]);
        assert!(s.holes(21, 29).is_empty());
    }

    #[test]
    fn matches_a_naive_set() {
        let mut x: u64 = 12345;
        let mut set = RangeSet::new();
        let mut naive = vec![false; 600];
        for _ in 0..400 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let a = (x >> 33) % 500;
            let n = (x >> 20) % 40 + 1;
            set.insert(r(a, a + n));
            for i in a..a + n {
                naive[i as usize] = true;
            }
            let ranges: Vec<Range> = set.iter().copied().collect();
            for w in ranges.windows(2) {
                assert!(w[0].end < w[1].start, "disjoint and not adjacent");
            }
            let b = (x >> 40) % 550;
            let e = b + (x >> 50) % 50;
            let want = naive[b as usize..e as usize].iter().filter(|v| **v).count() as u64;
            assert_eq!(set.count_within(b, e), want);
            let hole_total: u64 = set.holes(b, e).iter().map(|h| h.1 - h.0).sum();
            assert_eq!(hole_total, (e - b) - want);
        }
    }
}
