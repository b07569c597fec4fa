//! What every spooled sink repeats, in one place: reading its spool ahead in batches, moving
//! the cursor once the destination acknowledged, and reconnecting with backoff while counting
//! and sparsely logging the failures. A sink is then only its destination's part: how to
//! connect, what a batch looks like there, and what counts as acknowledged.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::spool::{Pos, SpoolReader, Spooled};
use super::{Backoff, SinkStats};

/// The spool as a sink reads it: items read ahead of the cursor, handed out in spool order.
#[derive(Default)]
pub struct Ahead {
    items: VecDeque<Spooled>,
}

impl Ahead {
    /// Starts again from the cursor: what was read ahead but not acknowledged is read again
    /// (a connection failed, a batch was refused).
    pub fn restart(&mut self, reader: &mut SpoolReader) {
        self.items.clear();
        reader.rewind();
    }

    /// The next item, reading `chunk` more from the spool when none is read ahead.
    pub fn pop(&mut self, reader: &mut SpoolReader, chunk: usize) -> Option<Spooled> {
        if self.items.is_empty() {
            self.items.extend(reader.read(chunk));
        }
        self.items.pop_front()
    }

    /// Gives back an item `pop` returned, to be the next one again.
    pub fn unpop(&mut self, item: Spooled) {
        self.items.push_front(item);
    }

    /// Up to `max` items, topping up from the spool first.
    pub fn take(&mut self, reader: &mut SpoolReader, max: usize) -> Vec<Spooled> {
        if self.items.len() < max {
            self.items.extend(reader.read(max - self.items.len()));
        }
        let n = self.items.len().min(max);
        self.items.drain(..n).collect()
    }
}

/// The destination acknowledged `n` samples ending at `end`: the cursor moves past them and
/// they count as delivered. Never called before the acknowledgement: a crash before it
/// re-delivers them.
pub fn acknowledged(reader: &mut SpoolReader, stats: &SinkStats, end: Pos, n: u64) {
    reader.commit(end);
    stats.delivered.fetch_add(n, Ordering::Relaxed);
}

/// A sink's attempts at its destination: the backoff between them, the counters of
/// connections and failures, and the failures logged at powers of two so that a long outage
/// does not flood the log.
pub struct Attempts {
    stats: Arc<SinkStats>,
    backoff: Backoff,
    failed_in_a_row: u64,
}

impl Attempts {
    pub fn new(stats: Arc<SinkStats>) -> Attempts {
        Attempts {
            stats,
            backoff: Backoff::new(),
            failed_in_a_row: 0,
        }
    }

    pub fn stats(&self) -> &Arc<SinkStats> {
        &self.stats
    }

    /// Connected (and ready): the backoff starts over.
    pub fn connected(&mut self) {
        self.up();
        self.progressed();
    }

    /// Connected, the backoff kept until [`progressed`](Self::progressed): for a sink whose
    /// connection may come up while its deliveries still fail.
    pub fn up(&mut self) {
        self.stats.connected.store(true, Ordering::Relaxed);
        self.stats.connects.fetch_add(1, Ordering::Relaxed);
    }

    /// The destination took something: the backoff starts over.
    pub fn progressed(&mut self) {
        self.backoff.reset();
        self.failed_in_a_row = 0;
    }

    /// A connection that was up ended (or a delivery failed on it).
    pub fn lost(&mut self) {
        self.stats.connected.store(false, Ordering::Relaxed);
        self.stats.failures.fetch_add(1, Ordering::Relaxed);
    }

    /// An attempt failed before the sink was up. Returns the attempts failed in a row when
    /// this one should be logged (the first, second, fourth, ...), `None` otherwise.
    pub fn failed(&mut self) -> Option<u64> {
        self.stats.connected.store(false, Ordering::Relaxed);
        self.stats.failures.fetch_add(1, Ordering::Relaxed);
        self.failed_in_a_row += 1;
        self.failed_in_a_row
            .is_power_of_two()
            .then_some(self.failed_in_a_row)
    }

    /// Waits before the next attempt.
    pub async fn pause(&mut self) {
        tokio::time::sleep(self.backoff.next_delay()).await;
    }

    /// Waits before the next attempt, at most `max`.
    pub async fn pause_at_most(&mut self, max: std::time::Duration) {
        tokio::time::sleep(self.backoff.next_delay().min(max)).await;
    }
}
