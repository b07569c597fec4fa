//! A bounded ring of samples: the charts' memory. At one sample a second, [`CAPACITY`] keeps
//! ten minutes, whatever the uptime.

use std::collections::VecDeque;

/// Ten minutes at one sample a second.
pub const CAPACITY: usize = 600;

#[derive(Debug, Clone)]
pub struct Ring<T> {
    cap: usize,
    items: VecDeque<T>,
}

impl<T> Ring<T> {
    pub fn new(cap: usize) -> Ring<T> {
        let cap = cap.max(1);
        Ring {
            cap,
            items: VecDeque::with_capacity(cap),
        }
    }

    /// Adds a sample, dropping the oldest when full.
    pub fn push(&mut self, item: T) {
        if self.items.len() == self.cap {
            self.items.pop_front();
        }
        self.items.push_back(item);
    }

    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &T> + ExactSizeIterator {
        self.items.iter()
    }

    pub fn last(&self) -> Option<&T> {
        self.items.back()
    }

    pub fn last_mut(&mut self) -> Option<&mut T> {
        self.items.back_mut()
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The newest sample and the one `back` samples before it, for rates over a window.
    pub fn window(&self, back: usize) -> Option<(&T, &T)> {
        let n = self.items.len();
        if n < 2 {
            return None;
        }
        let back = back.min(n - 1);
        Some((&self.items[n - 1 - back], &self.items[n - 1]))
    }
}

/// Per-second increase between two counter readings; a counter that went backwards (a
/// restart) counts from zero.
pub fn delta(before: u64, after: u64) -> u64 {
    if after >= before {
        after - before
    } else {
        after
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_is_bounded_and_windows() {
        let mut r = Ring::new(3);
        assert!(r.window(1).is_none());
        for i in 0..5 {
            r.push(i);
        }
        assert_eq!(r.iter().copied().collect::<Vec<_>>(), vec![2, 3, 4]);
        assert_eq!(r.window(10), Some((&2, &4)));
        assert_eq!(r.window(1), Some((&3, &4)));
        assert_eq!(delta(5, 3), 3);
    }
}
