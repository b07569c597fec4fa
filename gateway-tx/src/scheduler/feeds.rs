//! The feeds the transmitter sends today, each with its share of a pass (see the table in the
//! module above).

use std::sync::Arc;
use std::time::{Duration, Instant};

use protocol::message::{Heartbeat, Message, Stream};
use protocol::model::UnixNanos;
use tracing::debug;

use super::{Feed, HealthFn, Outbox};
use crate::history::HistoryOutlet;

/// How often a slice of the rolling snapshot goes out. Small enough that the snapshot is
/// smooth, large enough that each slice fills datagrams.
pub(super) const SNAPSHOT_TICK: Duration = Duration::from_millis(100);

/// Catalogue chunks sent per pass (each fills about one datagram).
pub(super) const CATALOGUE_CHUNKS_PER_PASS: usize = 16;

/// History messages handed to the encoder per pass, at most.
pub(super) const HISTORY_PER_PASS: usize = 128;

/// The first gap between catalogue rounds, doubled after each round up to the configured
/// interval.
pub(super) const FIRST_CATALOGUE_GAP: Duration = Duration::from_secs(1);

/// What tells the receiver the link is alive, and what the transmitter counted.
pub struct HeartbeatFeed {
    interval: Duration,
    health: HealthFn,
    /// When the session started, for the uptime.
    started: Instant,
    next: Instant,
}

impl HeartbeatFeed {
    /// The first heartbeat is due at `now`.
    pub fn new(interval: Duration, health: HealthFn, now: Instant) -> HeartbeatFeed {
        HeartbeatFeed {
            interval,
            health,
            started: now,
            next: now,
        }
    }
}

impl Feed for HeartbeatFeed {
    fn name(&self) -> &'static str {
        "heartbeat"
    }

    fn poll(&mut self, now: Instant, unix: UnixNanos, out: &mut Outbox) {
        if now < self.next {
            return;
        }
        out.set_superseded(out.table().superseded());
        let heartbeat = Heartbeat {
            sent_at: unix,
            uptime_ms: u64::try_from(now.duration_since(self.started).as_millis())
                .unwrap_or(u64::MAX),
            catalogue: out.catalogue().hash(),
            tag_count: u32::try_from(out.catalogue().len()).unwrap_or(u32::MAX),
            config_hash: out.config_hash(),
            counters: out.counters().clone(),
            sources: (self.health)(),
        };
        out.push(&Message::Heartbeat(heartbeat), now);
        // A heartbeat must not wait for its datagram to fill: it is what tells the receiver
        // the link is alive. Its block stays open, though: closing it early would cut the
        // block's groups short and, with them, the burst of loss they survive.
        out.flush_payload(now);
        self.next = later(self.next, self.interval, now);
    }

    fn poll_timeout(&self) -> Option<Instant> {
        Some(self.next)
    }
}

/// The rolling snapshot: every current value once per period, a slice every
/// `SNAPSHOT_TICK`, so the period is covered evenly.
pub struct SnapshotFeed {
    period: Duration,
    next: Instant,
    /// The first tag of the next slice.
    cursor: usize,
}

impl SnapshotFeed {
    /// The first slice is due one tick after `now`.
    pub fn new(period: Duration, now: Instant) -> SnapshotFeed {
        SnapshotFeed {
            period,
            next: now + SNAPSHOT_TICK,
            cursor: 0,
        }
    }
}

impl Feed for SnapshotFeed {
    fn name(&self) -> &'static str {
        "snapshot"
    }

    fn poll(&mut self, now: Instant, _unix: UnixNanos, out: &mut Outbox) {
        if now < self.next {
            return;
        }
        self.next = later(self.next, SNAPSHOT_TICK, now);
        let table = out.table();
        let n = table.len();
        if n == 0 {
            return;
        }
        let ticks = (self.period.as_secs_f64() / SNAPSHOT_TICK.as_secs_f64()).max(1.0);
        let per_tick = ((n as f64 / ticks).ceil() as usize).max(1);
        let mut samples = Vec::with_capacity(per_tick);
        let mut remaining = per_tick;
        while remaining > 0 {
            let take = remaining.min(n - self.cursor);
            samples.extend(table.snapshot(self.cursor, take));
            remaining -= take;
            self.cursor = (self.cursor + take) % n;
        }
        out.push_samples(Message::Snapshot, samples, now);
    }

    fn poll_timeout(&self) -> Option<Instant> {
        Some(self.next)
    }

    fn reloaded(&mut self, _now: Instant, _out: &Outbox) {
        self.cursor = 0;
    }
}

/// Live changes: everything the tag table queued, each tag's latest reported value.
pub struct LiveFeed;

impl Feed for LiveFeed {
    fn name(&self) -> &'static str {
        "live"
    }

    fn poll(&mut self, now: Instant, _unix: UnixNanos, out: &mut Outbox) {
        // Everything queued now; the table bounds the queue at one entry per tag.
        let table = out.table();
        let changes = table.take_changes(table.len());
        if changes.is_empty() {
            return;
        }
        out.count_samples(changes.len());
        out.push_samples(Message::Live, changes, now);
    }
}

/// The catalogue: a round on start, then after gaps of `FIRST_CATALOGUE_GAP` doubling up to
/// the configured interval, so a receiver that missed the first round (or started just after)
/// is not left without a catalogue, and so without values, for a whole interval.
pub struct CatalogueFeed {
    interval: Duration,
    next: Instant,
    gap: Duration,
    /// Where the round in progress goes on: its chunks are built and sent a few per pass, so
    /// that a large catalogue never holds live values back for the whole time it takes to
    /// build or send.
    round: Option<usize>,
}

impl CatalogueFeed {
    /// The first round is due at `now`.
    pub fn new(interval: Duration, now: Instant) -> CatalogueFeed {
        CatalogueFeed {
            interval,
            next: now,
            gap: FIRST_CATALOGUE_GAP.min(interval),
            round: None,
        }
    }
}

impl Feed for CatalogueFeed {
    fn name(&self) -> &'static str {
        "catalogue"
    }

    /// Starts a round when due, unless one is still going out, then sends the round's next
    /// few chunks: the feeds before this one go first between passes, so a 100,000-tag
    /// catalogue (a few thousand datagrams) delays them by one pass, not by the whole round.
    fn poll(&mut self, now: Instant, _unix: UnixNanos, out: &mut Outbox) {
        if now >= self.next {
            if self.round.is_none() {
                self.round = Some(0);
                debug!(tags = out.catalogue().len(), "catalogue round started");
            }
            self.next = now + self.gap;
            self.gap = (self.gap * 2).min(self.interval);
        }
        for _ in 0..CATALOGUE_CHUNKS_PER_PASS {
            let Some(start) = self.round else {
                break;
            };
            let (chunk, next) = out.catalogue().chunk_at(start, out.body_budget());
            self.round = next;
            out.push(&Message::Catalogue(chunk), now);
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        Some(self.next)
    }

    fn backlogged(&self) -> bool {
        self.round.is_some()
    }

    /// The new catalogue goes at once and then on the start-up schedule; what is left of the
    /// old round describes tags that may be gone.
    fn reloaded(&mut self, now: Instant, _out: &Outbox) {
        self.next = now;
        self.gap = FIRST_CATALOGUE_GAP.min(self.interval);
        self.round = None;
    }
}

/// History messages the history thread prepared (it keeps re-sends within their share of the
/// link rate), a bounded number per pass so the other feeds keep their turn.
pub struct HistoryFeed {
    outlet: Arc<HistoryOutlet>,
}

impl HistoryFeed {
    pub fn new(outlet: Arc<HistoryOutlet>) -> HistoryFeed {
        HistoryFeed { outlet }
    }
}

impl Feed for HistoryFeed {
    fn name(&self) -> &'static str {
        "history"
    }

    fn poll(&mut self, now: Instant, _unix: UnixNanos, out: &mut Outbox) {
        for _ in 0..HISTORY_PER_PASS {
            let Some(body) = self.outlet.pop() else {
                break;
            };
            out.push_encoded(Stream::History, &body, now);
        }
    }

    /// A backfill or the carousel waits in the outlet.
    fn backlogged(&self) -> bool {
        !self.outlet.is_empty()
    }
}

/// The next deadline of a periodic job: on schedule when keeping up, from now when behind,
/// so a stall does not cause a burst of catch-up sends.
fn later(previous: Instant, period: Duration, now: Instant) -> Instant {
    let next = previous + period;
    if next <= now { now + period } else { next }
}
