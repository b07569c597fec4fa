//! Receive state of one transmitter session: FEC groups in flight, the reorder buffer over
//! data datagrams, and per-stream message sequencing and reassembly.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use crate::auth::SessionKey;
use crate::codec;
use crate::encoder::MAX_MESSAGE_SIZE;
use crate::error::Reject;
use crate::fec::{self, GroupDecoder};
use crate::frame::{Fragment, FrameHeader, Frames};
use crate::message::{Message, Stream};
use crate::stats::DecoderStats;
use crate::window::{Position, SlidingBits};
use crate::wire::{DATA_PREFIX_LEN, Header, be_u16, be_u64};

/// Total bytes of shards and held data datagrams one session keeps at most.
pub const MAX_BUFFERED_BYTES: usize = 64 << 20;
/// Spare buffers kept for reuse; with [`POOL_BUF_MAX`] this bounds the pool to 16 MiB.
const POOL_MAX: usize = 1024;
/// Buffers larger than this (jumbo datagrams) are not kept for reuse.
const POOL_BUF_MAX: usize = 16 << 10;
/// Spare group records (with their shard lists' allocations) kept for reuse.
const SPARE_GROUPS: usize = 64;
/// Reordering the receiver allows for before it presumes a datagram lost, in datagrams: a
/// datagram not received once one sent this many places after it has arrived (and
/// [`REORDER_HOLD`] has passed since) is presumed lost *for deciding that a group cannot be
/// repaired*. Links that reorder at all (bonded ports, multi-queue NICs, our impairment relay)
/// move a datagram by a few places; 16 covers them with room to spare and is still only a few
/// milliseconds at plant rates (2,000 datagrams/s: 8 ms). A datagram that arrives after its
/// place was given up is counted `late` and dropped, never delivered out of order.
pub const REORDER_ALLOWANCE: u64 = 16;
/// The same allowance in time: at high rates 16 datagrams pass in microseconds, shorter than
/// the jitter of the receiving host; nothing is presumed lost before this has passed since the
/// datagram that proves a block ended arrived.
pub const REORDER_HOLD: Duration = Duration::from_millis(1);
/// Block ends waiting for [`REORDER_ALLOWANCE`] at most; more are dropped (their gaps then
/// wait for the group timeout). At most 16 wait on the count, and a millisecond holds a few
/// blocks even at a million datagrams a second.
const MAX_FENCES: usize = 64;

/// What the decoder reports to its caller.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A message, delivered once, in sequence order within its stream.
    Message {
        stream: Stream,
        seq: u64,
        message: Message,
    },
    /// The transmitter (re)started: state of the previous session, if any, has been flushed
    /// and dropped; sequence numbers start again.
    NewSession { previous: Option<u64>, session: u64 },
    /// Datagrams of a protocol version this decoder does not speak arrive (reported at most
    /// once a second per version).
    UnknownVersion { version: u8 },
    /// `count` messages of `stream` will never be delivered.
    MessagesLost { stream: Stream, count: u64 },
    /// `count` data datagrams were neither received nor repaired.
    DatagramsLost { count: u64 },
}

/// Decoder-wide state the session writes to.
#[derive(Default)]
pub(crate) struct Out {
    pub events: VecDeque<Event>,
    pub stats: DecoderStats,
    pub pool: Pool,
    pub rs: GroupDecoder,
}

#[derive(Default)]
pub(crate) struct Pool {
    free: Vec<Vec<u8>>,
    groups: Vec<Group>,
}

impl Pool {
    pub fn get(&mut self) -> Vec<u8> {
        let mut b = self.free.pop().unwrap_or_default();
        b.clear();
        b
    }

    pub fn put(&mut self, b: Vec<u8>) {
        if self.free.len() < POOL_MAX && b.capacity() <= POOL_BUF_MAX {
            self.free.push(b);
        }
    }

    fn group(&mut self) -> Group {
        self.groups.pop().unwrap_or_default()
    }

    /// Takes back a group record whose shard buffers have been returned already.
    fn put_group(&mut self, mut g: Group) {
        if self.groups.len() < SPARE_GROUPS {
            g.nominal = None;
            g.shape = None;
            g.data.clear();
            g.repair.clear();
            self.groups.push(g);
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Shape {
    k: u16,
    m: u16,
    shard_bytes: usize,
}

#[derive(Default)]
struct Group {
    /// `(k, m)` from data shard headers: the configured shape, an upper bound.
    nominal: Option<(u16, u16)>,
    /// The group's real shape, from its repair shards.
    shape: Option<Shape>,
    data: Vec<(u16, Vec<u8>)>,
    /// `(index - k, shard)`.
    repair: Vec<(u16, Vec<u8>)>,
}

struct Held {
    arrived: Instant,
    /// The data shard content: prefix and frames.
    content: Vec<u8>,
}

struct Partial {
    stream: Stream,
    seq: u64,
    body: Vec<u8>,
}

/// The newest repair shard that arrived in order, when no datagram sent after it had arrived.
#[derive(Debug, Clone, Copy)]
struct RepairMark {
    seq: u64,
    /// Highest group id of the datagrams received so far. They were all sent no later than
    /// this repair shard, so these groups all belong to its block or earlier ones.
    groups_upto: u64,
    /// A data datagram sent after it has arrived: the mark has made its fence, or there was no
    /// gap for one.
    used: bool,
}

/// The end of a block, proven by a data datagram sent after one of the block's repair shards
/// (a block sends all its data, then all its repair shards, and only then does the next block
/// start). Every datagram of that block and the ones before it was sent before `seq`; once
/// the receiver has moved [`REORDER_ALLOWANCE`] past `seq` and [`REORDER_HOLD`] has passed,
/// what has not arrived of them is presumed lost, so their groups that are still open cannot
/// be repaired, and their missing data datagrams are lost.
#[derive(Debug, Clone, Copy)]
struct Fence {
    /// Sequence number of the data datagram.
    seq: u64,
    /// Data datagrams before this `data_seq` belong to the closed blocks.
    cutoff: u64,
    /// Groups up to this id belong to the closed blocks; `None` without FEC.
    groups_upto: Option<u64>,
    arrived: Instant,
}

pub(crate) struct Session {
    pub id: u64,
    pub key: Option<SessionKey>,
    pub last_heard: Instant,
    window: u64,
    timeout: Duration,
    /// Datagram sequence numbers seen.
    pub seen: SlidingBits,
    /// Open groups.
    groups: BTreeMap<u64, Group>,
    /// Groups in order of creation, for timeouts; entries of finished groups are skipped.
    group_order: VecDeque<(Instant, u64)>,
    /// Groups finished (complete, repaired or abandoned); older ids are finished too.
    done: SlidingBits,
    /// Data datagrams received ahead of `next_data`, by `data_seq`.
    reorder: BTreeMap<u64, Held>,
    next_data: Option<u64>,
    expected: [Option<u64>; Stream::COUNT],
    partial: Option<Partial>,
    /// A message whose remaining fragments are skipped because it is already counted lost.
    discarding: Option<(Stream, u64)>,
    buffered: usize,
    /// Highest group id of any shard accepted.
    max_group: Option<u64>,
    mark: Option<RepairMark>,
    /// Block ends waiting to mature, in order of `seq`.
    fences: VecDeque<Fence>,
    /// The session an earlier run of the receiver was decoding: what it sent before was
    /// delivered then, or while the receiver was down, so nothing before the first data
    /// datagram is counted.
    resumed: bool,
}

impl Session {
    pub fn new(
        id: u64,
        key: Option<SessionKey>,
        now: Instant,
        window: u32,
        timeout: Duration,
        resumed: bool,
    ) -> Session {
        let w = window as usize;
        Session {
            id,
            key,
            last_heard: now,
            window: u64::from(window),
            timeout,
            seen: SlidingBits::new(w),
            groups: BTreeMap::new(),
            group_order: VecDeque::new(),
            done: SlidingBits::new(w),
            reorder: BTreeMap::new(),
            next_data: None,
            expected: [None; Stream::COUNT],
            partial: None,
            discarding: None,
            buffered: 0,
            max_group: None,
            mark: None,
            fences: VecDeque::new(),
            resumed,
        }
    }

    /// Checks the datagram sequence number before the (costlier) authentication.
    pub fn check_seq(&self, seq: u64) -> Result<(), Reject> {
        match self.seen.get(seq) {
            Position::Set => Err(Reject::Duplicate),
            Position::Below => Err(Reject::OutOfWindow),
            Position::Ahead | Position::Unset => Ok(()),
        }
    }

    /// Handles an authenticated shard; `plain` is its decrypted payload.
    pub fn on_shard(
        &mut self,
        h: &Header,
        plain: &[u8],
        now: Instant,
        out: &mut Out,
    ) -> Result<(), Reject> {
        // Each datagram is at most one data datagram and one group, so these can never run
        // ahead of the datagram sequence; refusing them bounds what a bad header can do to
        // the loss counters.
        if h.group > h.seq {
            return Err(Reject::Malformed);
        }
        if h.is_repair() {
            self.on_repair(h, plain, now, out)?;
            let upto = self.note_group(h.group);
            if self.seen.high() == Some(h.seq) {
                self.mark = Some(RepairMark {
                    seq: h.seq,
                    groups_upto: upto,
                    used: false,
                });
            }
            return Ok(());
        }
        let (data_seq, len) = prefix(plain).ok_or(Reject::Malformed)?;
        if data_seq > h.seq || usize::from(len) + DATA_PREFIX_LEN != plain.len() {
            return Err(Reject::Malformed);
        }
        self.accept_data(data_seq, plain, now, out);
        if h.m > 0 {
            self.store_data(h, plain, now, out);
        }
        self.note_group(h.group);
        self.note_fence(h, data_seq, now);
        self.enforce_budget(out);
        Ok(())
    }

    /// Records that a shard of group `id` was accepted; returns the highest group id so far.
    fn note_group(&mut self, id: u64) -> u64 {
        let max = self.max_group.map_or(id, |g| g.max(id));
        self.max_group = Some(max);
        max
    }

    /// After data datagram `data_seq` (sequence `h.seq`) was taken: if it is the first one
    /// sent after the newest in-order repair shard and there is a gap before it, the gap may
    /// be decided once the reordering allowance has passed.
    fn note_fence(&mut self, h: &Header, data_seq: u64, now: Instant) {
        let Some(next) = self.next_data else {
            return;
        };
        let fence = if h.m == 0 {
            // Without FEC nothing restores a data datagram: the gap right before this one is
            // lost once every datagram sent before it is presumed lost.
            let after_gap =
                data_seq > next && !self.reorder.contains_key(&data_seq.saturating_sub(1));
            after_gap.then_some(Fence {
                seq: h.seq,
                cutoff: data_seq,
                groups_upto: None,
                arrived: now,
            })
        } else {
            let Some(mark) = &mut self.mark else {
                return;
            };
            if mark.used || h.seq <= mark.seq {
                return;
            }
            mark.used = true;
            // The datagrams sent between the repair shard and this one are at most
            // `h.seq - mark.seq - 1` data datagrams of later blocks; data datagrams before
            // them were sent before the repair shard, in its block or earlier ones.
            let cutoff = data_seq.saturating_sub(h.seq - mark.seq - 1);
            (cutoff > next).then_some(Fence {
                seq: h.seq,
                cutoff,
                groups_upto: Some(mark.groups_upto),
                arrived: now,
            })
        };
        if let Some(f) = fence
            && self.fences.len() < MAX_FENCES
            && self.fences.back().is_none_or(|b| b.seq < f.seq)
        {
            self.fences.push_back(f);
        }
    }

    /// Whether the fence's blocks have had the reordering allowance, in datagrams.
    fn counted_out(&self, f: &Fence) -> bool {
        self.seen
            .high()
            .is_some_and(|high| f.seq.saturating_add(REORDER_ALLOWANCE) <= high)
    }

    /// Applies the fences whose reordering allowance has passed: their blocks' open groups
    /// cannot be repaired any more, and their missing data datagrams are lost.
    fn apply_fences(&mut self, now: Instant, out: &mut Out) {
        while let Some(&f) = self.fences.front() {
            let held = f.arrived.checked_add(REORDER_HOLD).is_none_or(|t| t > now);
            if held || !self.counted_out(&f) {
                break;
            }
            self.fences.pop_front();
            if let Some(upto) = f.groups_upto {
                while let Some((&id, _)) = self.groups.first_key_value() {
                    if id > upto {
                        break;
                    }
                    self.abandon_group(id, out);
                }
            }
            self.give_up_below(f.cutoff, out);
        }
    }

    /// Counts the data datagrams missing before `cutoff` lost and delivers what was held
    /// behind them.
    fn give_up_below(&mut self, cutoff: u64, out: &mut Out) {
        while let Some(next) = self.next_data
            && next < cutoff
        {
            let first = self.reorder.first_key_value().map(|(&k, _)| k);
            if first == Some(next) {
                // Delivers at least this one.
                self.drain(out);
                continue;
            }
            // Held data datagrams are always ahead of `next`; the filter only makes sure
            // this loop moves forward whatever happens.
            let to = first
                .filter(|&f| f > next)
                .map_or(cutoff, |f| f.min(cutoff));
            let lost = to - next;
            out.stats.data_datagrams_lost = out.stats.data_datagrams_lost.saturating_add(lost);
            out.events.push_back(Event::DatagramsLost { count: lost });
            self.drop_partial(out);
            self.next_data = Some(to);
            self.drain(out);
        }
    }

    fn on_repair(
        &mut self,
        h: &Header,
        plain: &[u8],
        now: Instant,
        out: &mut Out,
    ) -> Result<(), Reject> {
        let shard_bytes = plain.len();
        let total = usize::from(h.k) + usize::from(h.m);
        if shard_bytes < DATA_PREFIX_LEN
            || !shard_bytes.is_multiple_of(2)
            || total * shard_bytes > fec::MAX_GROUP_BYTES
        {
            return Err(Reject::Malformed);
        }
        let shape = Shape {
            k: h.k,
            m: h.m,
            shard_bytes,
        };
        if !self.open_group(h.group, now, out) {
            return Ok(());
        }
        let Some(g) = self.groups.get_mut(&h.group) else {
            return Ok(());
        };
        match g.shape {
            Some(s) if s != shape => return Err(Reject::Malformed),
            Some(_) => {}
            None => {
                let fits = g
                    .data
                    .iter()
                    .all(|(i, b)| *i < h.k && b.len() <= shard_bytes)
                    && g.nominal.is_none_or(|(k, m)| h.k <= k && h.m <= m);
                if !fits {
                    out.stats.fec_failures += 1;
                    self.finish_group(h.group, out);
                    return Ok(());
                }
                g.shape = Some(shape);
            }
        }
        let mut buf = out.pool.get();
        buf.extend_from_slice(plain);
        self.buffered += buf.len();
        g.repair.push((h.index - h.k, buf));
        self.progress(h.group, now, out);
        self.enforce_budget(out);
        Ok(())
    }

    fn store_data(&mut self, h: &Header, content: &[u8], now: Instant, out: &mut Out) {
        if !self.open_group(h.group, now, out) {
            return;
        }
        let Some(g) = self.groups.get_mut(&h.group) else {
            return;
        };
        let consistent = g.nominal.is_none_or(|n| n == (h.k, h.m))
            && g.shape
                .is_none_or(|s| h.index < s.k && content.len() <= s.shard_bytes);
        if !consistent {
            out.stats.fec_failures += 1;
            self.finish_group(h.group, out);
            return;
        }
        g.nominal = Some((h.k, h.m));
        let mut buf = out.pool.get();
        buf.extend_from_slice(content);
        self.buffered += buf.len();
        g.data.push((h.index, buf));
        self.progress(h.group, now, out);
    }

    /// Makes sure group `id` exists unless it is finished; false if it is.
    fn open_group(&mut self, id: u64, now: Instant, out: &mut Out) -> bool {
        match self.done.get(id) {
            Position::Set | Position::Below => return false,
            Position::Ahead | Position::Unset => {}
        }
        if self.groups.contains_key(&id) {
            return true;
        }
        self.done.advance(id);
        // Open groups the window has left behind can no longer be finished properly.
        while let Some((&old, _)) = self.groups.first_key_value() {
            if self.done.get(old) != Position::Below && self.groups.len() < self.window as usize {
                break;
            }
            self.abandon_group(old, out);
        }
        self.groups.insert(id, out.pool.group());
        self.group_order.push_back((now, id));
        true
    }

    /// Finishes group `id` if it is complete, or repairs it if it has enough shards.
    fn progress(&mut self, id: u64, now: Instant, out: &mut Out) {
        let Some(g) = self.groups.get(&id) else {
            return;
        };
        let k = match (g.shape, g.nominal) {
            (Some(s), _) => s.k,
            (None, Some((k, _))) => k,
            (None, None) => return,
        };
        if g.data.len() >= usize::from(k) {
            self.finish_group(id, out);
        } else if g.shape.is_some() && g.data.len() + g.repair.len() >= usize::from(k) {
            self.repair_group(id, now, out);
        }
    }

    fn repair_group(&mut self, id: u64, now: Instant, out: &mut Out) {
        let Some(g) = self.groups.get_mut(&id) else {
            return;
        };
        let Some(shape) = g.shape else {
            return;
        };
        let size = shape.shard_bytes;
        for (_, b) in &mut g.data {
            // Checked on arrival: no stored data shard is longer than the shard size.
            self.buffered += size.saturating_sub(b.len());
            b.resize(size, 0);
        }
        let mut restored: Vec<Vec<u8>> = Vec::new();
        let Out { rs, pool, .. } = &mut *out;
        let result = rs.decode(
            usize::from(shape.k),
            usize::from(shape.m),
            size,
            g.data.iter().map(|(i, b)| (usize::from(*i), b.as_slice())),
            g.repair
                .iter()
                .map(|(i, b)| (usize::from(*i), b.as_slice())),
            |_, shard| {
                let mut b = pool.get();
                b.extend_from_slice(shard);
                restored.push(b);
            },
        );
        self.finish_group(id, out);
        if result.is_err() {
            out.stats.fec_failures += 1;
            out.stats.groups_lost += 1;
        }
        if !restored.is_empty() {
            out.stats.groups_repaired += 1;
        }
        // A data datagram is sent before the repair shards that rebuild it, and `data_seq`
        // counts data datagrams only, so a genuine rebuilt `data_seq` is below the highest
        // `seq` seen. Received data datagrams are held to `data_seq <= seq` on arrival; this
        // is the same bound for rebuilt ones, which a crafted repair shard could otherwise set
        // to anything (up to u64::MAX, overflowing the delivery counter).
        let highest_seq = self.seen.high().unwrap_or(0);
        for b in restored {
            match prefix(&b) {
                Some((data_seq, len))
                    if usize::from(len) + DATA_PREFIX_LEN <= b.len() && data_seq <= highest_seq =>
                {
                    out.stats.datagrams_repaired += 1;
                    self.accept_data(data_seq, &b[..usize::from(len) + DATA_PREFIX_LEN], now, out);
                }
                _ => out.stats.fec_failures += 1,
            }
            out.pool.put(b);
        }
    }

    /// Marks group `id` finished and frees its buffers.
    fn finish_group(&mut self, id: u64, out: &mut Out) {
        self.done.set(id);
        if let Some(mut g) = self.groups.remove(&id) {
            for (_, b) in g.data.drain(..).chain(g.repair.drain(..)) {
                self.buffered -= b.len();
                out.pool.put(b);
            }
            out.pool.put_group(g);
        }
    }

    /// Gives up on an open group; counts it lost if data shards are known to be missing.
    fn abandon_group(&mut self, id: u64, out: &mut Out) {
        if let Some(g) = self.groups.get(&id)
            && g.shape.is_some_and(|s| g.data.len() < usize::from(s.k))
        {
            out.stats.groups_lost += 1;
        }
        self.finish_group(id, out);
    }

    /// Takes data datagram `data_seq` (received or repaired): delivers it if it is the next
    /// one, holds it if it is ahead, drops it if its place has been given up.
    fn accept_data(&mut self, data_seq: u64, content: &[u8], now: Instant, out: &mut Out) {
        let next = match self.next_data {
            Some(n) => n,
            None => {
                // Near the start of the session: count from 0, so early losses are counted.
                // Far into it (the receiver started late), or in a session resumed after a
                // restart of the receiver: start here, and learn each stream's sequence from
                // its first message.
                let start = if data_seq < self.window && !self.resumed {
                    0
                } else {
                    data_seq
                };
                if start == 0 {
                    self.expected = [Some(0); Stream::COUNT];
                }
                self.next_data = Some(start);
                start
            }
        };
        if data_seq < next {
            out.stats.late += 1;
            return;
        }
        if data_seq == next {
            self.next_data = next.checked_add(1);
            self.deliver(content, out);
            self.drain(out);
            return;
        }
        if self.reorder.contains_key(&data_seq) {
            return;
        }
        let mut buf = out.pool.get();
        buf.extend_from_slice(content);
        self.buffered += buf.len();
        self.reorder.insert(
            data_seq,
            Held {
                arrived: now,
                content: buf,
            },
        );
        while let (Some((&last, _)), Some(next)) = (self.reorder.last_key_value(), self.next_data) {
            if last - next < self.window {
                break;
            }
            self.skip_gap(out);
        }
    }

    /// Delivers held data datagrams that are next in line.
    fn drain(&mut self, out: &mut Out) {
        while let Some(next) = self.next_data {
            let Some(entry) = self.reorder.first_entry() else {
                break;
            };
            if *entry.key() != next {
                break;
            }
            let held = entry.remove();
            self.buffered -= held.content.len();
            self.next_data = next.checked_add(1);
            self.deliver(&held.content, out);
            out.pool.put(held.content);
        }
    }

    /// Gives up the data datagrams missing before the first held one.
    fn skip_gap(&mut self, out: &mut Out) {
        let Some((&first, _)) = self.reorder.first_key_value() else {
            return;
        };
        let next = self.next_data.unwrap_or(first);
        if first > next {
            let lost = first - next;
            out.stats.data_datagrams_lost = out.stats.data_datagrams_lost.saturating_add(lost);
            out.events.push_back(Event::DatagramsLost { count: lost });
            self.drop_partial(out);
        }
        self.next_data = Some(first);
        self.drain(out);
    }

    /// The give-ups a datagram's arrival can prove: blocks that ended and had their reordering
    /// allowance (in datagrams *and* time, so a receiver that reads its socket late still sees
    /// every datagram sent before the fence first).
    pub fn on_arrival(&mut self, now: Instant, out: &mut Out) {
        self.apply_fences(now, out);
        self.forget_closed_groups();
    }

    /// Groups the timers still track, complete ones not yet forgotten included.
    #[cfg(test)]
    pub(crate) fn tracked_groups(&self) -> usize {
        self.group_order.len()
    }

    /// Drops the front entries of `group_order` whose groups are complete or given up. The
    /// timer pass does it too, but it runs only when the socket reads empty: under a steady
    /// flood it may not run for a long time, and `poll_timeout` would scan every group done
    /// since (measured: 5.5 % of a bulk receiver's link thread).
    fn forget_closed_groups(&mut self) {
        while let Some(&(_, id)) = self.group_order.front() {
            if self.groups.contains_key(&id) {
                break;
            }
            self.group_order.pop_front();
        }
    }

    /// All give-ups: those of [`Session::on_arrival`], groups open longer than the group
    /// timeout, and gaps in front of data datagrams held that long. The caller must have
    /// handed over every datagram that arrived before `now` (see `Decoder::handle_timeout`).
    pub fn service(&mut self, now: Instant, out: &mut Out) {
        self.apply_fences(now, out);
        while let Some(&(t, id)) = self.group_order.front() {
            if !self.groups.contains_key(&id) {
                self.group_order.pop_front();
                continue;
            }
            if t.checked_add(self.timeout).is_none_or(|d| d > now) {
                break;
            }
            self.group_order.pop_front();
            self.abandon_group(id, out);
        }
        while let Some((_, held)) = self.reorder.first_key_value() {
            if held
                .arrived
                .checked_add(self.timeout)
                .is_none_or(|d| d > now)
            {
                break;
            }
            self.skip_gap(out);
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let group = self
            .group_order
            .iter()
            .find(|(_, id)| self.groups.contains_key(id))
            .and_then(|(t, _)| t.checked_add(self.timeout));
        let gap = self
            .reorder
            .first_key_value()
            .and_then(|(_, h)| h.arrived.checked_add(self.timeout));
        // Fences mature in order, so only the first can be next; one still short of the
        // allowance in datagrams waits for datagrams, not for time.
        let fence = self
            .fences
            .front()
            .filter(|f| self.counted_out(f))
            .and_then(|f| f.arrived.checked_add(REORDER_HOLD));
        [group, gap, fence].into_iter().flatten().min()
    }

    /// Keeps buffered bytes within [`MAX_BUFFERED_BYTES`], giving up the oldest first.
    fn enforce_budget(&mut self, out: &mut Out) {
        while self.buffered > MAX_BUFFERED_BYTES {
            if let Some((&id, _)) = self.groups.first_key_value() {
                self.abandon_group(id, out);
            } else if !self.reorder.is_empty() {
                self.skip_gap(out);
            } else {
                break;
            }
        }
    }

    /// Ends the session: everything that can still be delivered is, the rest is counted.
    pub fn finish(&mut self, out: &mut Out) {
        self.fences.clear();
        self.mark = None;
        while let Some((&id, _)) = self.groups.first_key_value() {
            self.abandon_group(id, out);
        }
        while !self.reorder.is_empty() {
            self.skip_gap(out);
        }
        self.drop_partial(out);
    }

    fn deliver(&mut self, content: &[u8], out: &mut Out) {
        let frames = content.get(DATA_PREFIX_LEN..).unwrap_or_default();
        for (i, frame) in Frames::new(frames).enumerate() {
            match frame {
                Ok((h, body)) => self.on_frame(&h, body, i == 0, out),
                Err(_) => {
                    out.stats.frame_errors += 1;
                    self.drop_partial(out);
                }
            }
        }
    }

    fn on_frame(&mut self, h: &FrameHeader, body: &[u8], first_in_payload: bool, out: &mut Out) {
        if let Some(p) = &self.partial {
            // Fragments travel in consecutive data datagrams, so a message in progress can
            // only continue with the first frame of the next payload.
            let continues = first_in_payload
                && matches!(h.fragment, Fragment::Middle | Fragment::Last)
                && p.stream == h.stream
                && p.seq == h.seq;
            if !continues {
                self.drop_partial(out);
            }
        }
        match h.fragment {
            Fragment::Whole => {
                self.discarding = None;
                if self.sequence(h.stream, h.seq, out) {
                    self.decode(h.stream, h.seq, body, out);
                }
            }
            Fragment::First => {
                self.discarding = None;
                if self.sequence(h.stream, h.seq, out) {
                    self.partial = Some(Partial {
                        stream: h.stream,
                        seq: h.seq,
                        body: body.to_vec(),
                    });
                }
            }
            Fragment::Middle | Fragment::Last => {
                if let Some(p) = &mut self.partial {
                    if p.body.len() + body.len() > MAX_MESSAGE_SIZE {
                        self.drop_partial(out);
                        return;
                    }
                    p.body.extend_from_slice(body);
                    if h.fragment == Fragment::Last
                        && let Some(p) = self.partial.take()
                    {
                        self.decode(p.stream, p.seq, &p.body, out);
                    }
                    return;
                }
                if self.discarding == Some((h.stream, h.seq)) {
                    if h.fragment == Fragment::Last {
                        self.discarding = None;
                    }
                    return;
                }
                // The start of this message was lost (or came before this receiver joined).
                let joining = self.expected[h.stream as usize].is_none();
                if self.sequence(h.stream, h.seq, out) && !joining {
                    self.lose(h.stream, 1, out);
                }
                self.discarding = (h.fragment == Fragment::Middle).then_some((h.stream, h.seq));
            }
        }
    }

    /// Advances the stream's expected sequence past `seq`, counting the messages skipped.
    /// False if `seq` is behind, which a correct sender never produces.
    fn sequence(&mut self, stream: Stream, seq: u64, out: &mut Out) -> bool {
        let e = &mut self.expected[stream as usize];
        match *e {
            Some(x) if seq < x => {
                out.stats.frame_errors += 1;
                false
            }
            Some(x) => {
                *e = Some(seq.saturating_add(1));
                if seq > x {
                    self.lose(stream, seq - x, out);
                }
                true
            }
            None => {
                *e = Some(seq.saturating_add(1));
                true
            }
        }
    }

    fn lose(&mut self, stream: Stream, count: u64, out: &mut Out) {
        // Counts from sequence numbers a sender chooses: saturate rather than overflow.
        let lost = &mut out.stats.messages_lost[stream as usize];
        *lost = lost.saturating_add(count);
        out.events.push_back(Event::MessagesLost { stream, count });
    }

    fn drop_partial(&mut self, out: &mut Out) {
        if let Some(p) = self.partial.take() {
            self.lose(p.stream, 1, out);
            self.discarding = Some((p.stream, p.seq));
        }
    }

    fn decode(&mut self, stream: Stream, seq: u64, body: &[u8], out: &mut Out) {
        match codec::decode_message(body) {
            Ok(message) if message.stream() == stream => {
                out.stats.messages_delivered[stream as usize] += 1;
                out.events.push_back(Event::Message {
                    stream,
                    seq,
                    message,
                });
            }
            _ => {
                out.stats.decode_errors += 1;
                self.lose(stream, 1, out);
            }
        }
    }
}

/// `(data_seq, len)` of a data shard.
fn prefix(content: &[u8]) -> Option<(u64, u16)> {
    Some((be_u64(content, 0)?, be_u16(content, 8)?))
}
