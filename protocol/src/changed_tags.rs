//! The tags whose value changed and has not been taken yet: each at most once, oldest change
//! first. Its reader takes a tag's index and then reads the tag's latest value, so a tag that
//! changes many times between two takes is listed once: the set holds at most one entry per
//! tag whatever the sample rate, and inserting costs a bit test.
//!
//! Both ends keep one: gateway-tx's tag table (changes waiting for the link) and gateway-rx's
//! state (changes waiting for the OPC UA mirror's subscriptions). An owner keeps it beside its
//! values and under the same lock, so that an index is never listed without its value; waking
//! the reader is the owner's too (a tokio `Notify`, after the lock is released), which keeps
//! this plain data, free of any runtime.
//!
//! Memory: one bit per index up to the highest inserted, and four bytes per waiting index.
//! Insert only indexes of the owner's catalogue or table, which bounds both.

use std::collections::VecDeque;

use crate::model::TagIndex;

#[derive(Debug, Clone, Default)]
pub struct ChangedTags {
    /// One bit per index: set while the index is in `order`.
    waiting: Vec<u64>,
    order: VecDeque<TagIndex>,
}

impl ChangedTags {
    pub fn new() -> ChangedTags {
        ChangedTags::default()
    }

    /// Lists `tag`, unless it is waiting already: then returns false (the reader will read its
    /// latest value anyway, so the earlier change is superseded).
    pub fn insert(&mut self, tag: TagIndex) -> bool {
        let Some((word, bit)) = position(tag) else {
            return false;
        };
        if self.waiting.len() <= word {
            self.waiting.resize(word + 1, 0);
        }
        if self.waiting[word] & bit != 0 {
            return false;
        }
        self.waiting[word] |= bit;
        self.order.push_back(tag);
        true
    }

    /// Takes the index that has waited longest; it can be listed again from then on.
    pub fn pop(&mut self) -> Option<TagIndex> {
        let tag = self.order.pop_front()?;
        if let Some((word, bit)) = position(tag)
            && let Some(w) = self.waiting.get_mut(word)
        {
            *w &= !bit;
        }
        Some(tag)
    }

    /// Indexes waiting.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Forgets every waiting index (they index a catalogue that is gone).
    pub fn clear(&mut self) {
        self.waiting.clear();
        self.order.clear();
    }
}

fn position(tag: TagIndex) -> Option<(usize, u64)> {
    let i = usize::try_from(tag).ok()?;
    Some((i / 64, 1u64 << (i % 64)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn take_all(set: &mut ChangedTags) -> Vec<TagIndex> {
        std::iter::from_fn(|| set.pop()).collect()
    }

    #[test]
    fn lists_each_tag_once_oldest_first() {
        let mut set = ChangedTags::new();
        assert!(set.insert(65));
        assert!(!set.insert(65));
        assert!(set.insert(2));
        assert!(!set.insert(65));
        assert!(set.insert(200));
        assert!(!set.insert(2));
        assert_eq!(set.len(), 3);
        assert_eq!(take_all(&mut set), vec![65, 2, 200]);
        assert!(set.is_empty());
    }

    #[test]
    fn a_taken_tag_can_be_listed_again() {
        let mut set = ChangedTags::new();
        set.insert(7);
        set.insert(8);
        assert_eq!(set.pop(), Some(7));
        assert!(set.insert(7), "7 was taken, so a new change lists it again");
        assert!(!set.insert(8), "8 still waits");
        assert_eq!(take_all(&mut set), vec![8, 7]);
        assert_eq!(set.pop(), None);
    }

    #[test]
    fn clear_forgets_everything() {
        let mut set = ChangedTags::new();
        set.insert(1);
        set.insert(1000);
        set.clear();
        assert!(set.is_empty());
        assert_eq!(set.pop(), None);
        assert!(set.insert(1000));
        assert_eq!(take_all(&mut set), vec![1000]);
    }
}
