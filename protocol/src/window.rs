//! A sliding bitset over a `u64` counter: which of the last `size` values were seen. Used for
//! duplicate detection over datagram sequence numbers (counting what never arrived as it
//! slides out) and for remembering which FEC groups are finished.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// Newer than anything seen so far.
    Ahead,
    /// Inside the window and marked.
    Set,
    /// Inside the window and not marked.
    Unset,
    /// Too old: `size` or more behind the newest value.
    Below,
}

#[derive(Debug, Clone)]
pub struct SlidingBits {
    size: u64,
    bits: Vec<u64>,
    /// Newest value the window has been advanced to.
    high: Option<u64>,
    /// First value ever advanced to; older values never count as missing.
    base: u64,
}

impl SlidingBits {
    /// A window of `size` values, rounded up to a multiple of 64 (at least 64).
    pub fn new(size: usize) -> SlidingBits {
        let words = size.max(1).div_ceil(64);
        SlidingBits {
            size: words as u64 * 64,
            bits: vec![0; words],
            high: None,
            base: 0,
        }
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn high(&self) -> Option<u64> {
        self.high
    }

    pub fn get(&self, x: u64) -> Position {
        match self.high {
            None => Position::Ahead,
            Some(h) if x > h => Position::Ahead,
            Some(h) if h - x >= self.size => Position::Below,
            Some(_) if self.bit(x) => Position::Set,
            Some(_) => Position::Unset,
        }
    }

    /// Marks `x`, advancing the window first if `x` is ahead. Values below the window are
    /// ignored. Returns how many unmarked values (not older than the first value seen) slid
    /// out of the window.
    pub fn set(&mut self, x: u64) -> u64 {
        let missing = self.advance(x);
        if self.get(x) != Position::Below {
            let (w, b) = self.slot(x);
            self.bits[w] |= 1 << b;
        }
        missing
    }

    /// Makes `x` the newest value if it is ahead; returns how many unmarked values slid out.
    pub fn advance(&mut self, x: u64) -> u64 {
        let Some(h) = self.high else {
            self.high = Some(x);
            self.base = x;
            return 0;
        };
        if x <= h {
            return 0;
        }
        let mut missing = 0;
        if x - h >= self.size {
            // Every value of the old window leaves it, and so does every value between the old
            // window and the new one.
            let lo = h.saturating_sub(self.size - 1).max(self.base);
            for v in lo..=h {
                if !self.bit(v) {
                    missing += 1;
                }
            }
            missing += (x - self.size + 1).saturating_sub(h + 1);
            self.bits.fill(0);
        } else {
            for v in h + 1..=x {
                let (w, b) = self.slot(v);
                if let Some(old) = v.checked_sub(self.size)
                    && old >= self.base
                    && self.bits[w] & (1 << b) == 0
                {
                    missing += 1;
                }
                self.bits[w] &= !(1 << b);
            }
        }
        self.high = Some(x);
        missing
    }

    fn slot(&self, x: u64) -> (usize, u32) {
        let i = x % self.size;
        ((i / 64) as usize, (i % 64) as u32)
    }

    fn bit(&self, x: u64) -> bool {
        let (w, b) = self.slot(x);
        self.bits[w] & (1 << b) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_and_age() {
        let mut w = SlidingBits::new(64);
        assert_eq!(w.get(10), Position::Ahead);
        assert_eq!(w.set(10), 0);
        assert_eq!(w.get(10), Position::Set);
        assert_eq!(
            w.get(9),
            Position::Unset,
            "reordered before the first is fine"
        );
        assert_eq!(w.set(9), 0);
        assert_eq!(w.get(9), Position::Set);
        assert_eq!(w.set(73), 0, "10..=73 still fits in 64");
        assert_eq!(w.get(9), Position::Below);
        assert_eq!(w.get(10), Position::Set);
        assert_eq!(w.get(11), Position::Unset);
    }

    #[test]
    fn counts_missing_exactly_as_values_leave() {
        let mut w = SlidingBits::new(64);
        let mut missing = 0;
        // Every third value never arrives.
        for v in (0..1000u64).filter(|v| v % 3 != 0) {
            missing += w.set(v);
        }
        // The newest is 998, so 0..=934 have left the window; 0 came before the first value
        // seen (1), so it is not counted.
        assert_eq!(missing, (1..=934).filter(|v| v % 3 == 0).count() as u64);
        // A jump far ahead flushes the rest, and the skipped values count too.
        missing += w.set(5000);
        assert_eq!(
            missing,
            (1..5000 - 63).filter(|v| *v >= 999 || v % 3 == 0).count() as u64
        );
    }

    #[test]
    fn starting_late_does_not_count_what_came_before() {
        let mut w = SlidingBits::new(64);
        assert_eq!(w.set(1_000_000), 0);
        // 1_000_001..=1_000_036 slid out unseen; the new window is 1_000_037..=1_000_100.
        assert_eq!(w.set(1_000_100), 36);
        let mut w = SlidingBits::new(64);
        w.set(1_000_000);
        assert_eq!(w.set(1_000_050), 0);
    }

    #[test]
    fn rounds_up() {
        assert_eq!(SlidingBits::new(100).size(), 128);
        assert_eq!(SlidingBits::new(0).size(), 64);
    }
}
