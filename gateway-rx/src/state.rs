//! The receiver's current-value table, shared (behind an `Arc`) by the link task, which
//! writes it, and the sinks (Modbus mirror, and later OPC UA and MQTT), which read it.
//!
//! # Rules for current values
//!
//! - **Catalogue.** Samples name the catalogue version they index into. Samples naming a
//!   catalogue other than the current one are ignored and counted
//!   (`samples_unknown_catalogue`): the transmitter sends its catalogue on start and
//!   periodically, and its rolling snapshot re-sends every value, so after a catalogue change
//!   every tag is refreshed within one snapshot period without the receiver having to hold
//!   samples it cannot interpret yet.
//! - **Catalogue change.** When a new catalogue arrives, a tag keeps its value if its name,
//!   value type and source address are all unchanged (it is re-indexed by name); every other
//!   tag starts without a value, and removed tags are dropped.
//! - **Rejected samples.** A sample whose tag index is outside the catalogue, or whose value
//!   type differs from the catalogue's type for that tag, is rejected and counted.
//! - **Ordering.** The live stream is delivered in order, so a live sample always replaces the
//!   stored one (even if the source clock stepped backwards). A sample from any other stream
//!   (the snapshot) replaces it only if its source time is not older than the stored one's, so
//!   a snapshot interleaved with live values never rolls a newer live value back; at the same
//!   source time it applies, so a quality change at the same time is kept. A stored value from
//!   before the current session or outage is always replaced.
//! - **Link down.** When no heartbeat arrived for the heartbeat timeout, every value keeps its
//!   last value, but its quality *as served* becomes Uncertain (no communication, last usable
//!   value). The stored quality is not rewritten. A value whose stored quality is Bad is still
//!   served as Bad: a value the source itself marked unusable does not become usable because
//!   the link is down.
//! - **New session** (the transmitter restarted). Values stay until the new session refreshes
//!   them (its snapshot re-sends every value), but each is served as Uncertain, exactly as
//!   during an outage, until a sample from the new session arrives for it. The same holds
//!   after an outage of the same session: a value last received before the link went down is
//!   served as Uncertain until it is received again, since changes during the outage may have
//!   been lost.
//! - **Never received.** A tag with no value yet has none to serve; each sink says so in its
//!   own protocol (the Modbus mirror answers exception 04).
//!
//! Memory: one entry per catalogue tag (the catalogue itself is capped by the assembler), and
//! the Modbus mirror's register index (bounded, see [`crate::modbus_server::index`]). The index
//! is built with each catalogue and installed with it, so that its tag indexes always index
//! the values of the same view.
//!
//! Change feed: a sink that pushes values (the OPC UA mirror's subscriptions) calls
//! [`State::enable_change_feed`], then waits on [`State::changed`] and drains
//! [`State::take_changes`]. The feed is a set of tag indexes (a [`ChangedTags`]), plus two
//! flags: every tag (the link went down or up, a new session: served qualities changed) and
//! catalogue (a new catalogue replaced the indexes). A tag changed many times between two
//! drains is listed once and the drain reads its latest value, so the feed holds at most one
//! entry per tag whatever the sample rate, and costs a bit test per applied sample. Until a
//! sink enables it, nothing is recorded.
//!
//! Locking: one `RwLock`. Writers hold it for a batch of samples or to swap in a catalogue
//! (the Modbus index for a new catalogue is built before the lock is taken); readers hold it
//! for one request. Nothing awaits while holding it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use protocol::catalogue::Catalogue;
use protocol::changed_tags::ChangedTags;
use protocol::message::{CatalogueHash, Heartbeat, Stream};
use protocol::model::{Quality, Sample, TagIndex, UnixNanos, Value};
use protocol::tag_ref::TagRef;

use crate::modbus_server::index::RegisterIndex;

/// A transmitter session id, chosen at random when the transmitter starts.
pub type SessionId = u64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// No heartbeat yet, or none for the heartbeat timeout.
    Down,
    Up {
        session: SessionId,
    },
}

/// A tag's current value as a sink should serve it.
#[derive(Debug, Clone, PartialEq)]
pub struct ServedValue<'a> {
    pub value: &'a Value,
    /// The quality to serve: the stored quality, or Uncertain when the link is down or the value
    /// predates the current session or outage (see the module doc).
    pub quality: Quality,
    /// The quality the source reported.
    pub stored_quality: Quality,
    pub source_time: UnixNanos,
    pub received_at: UnixNanos,
    pub stream: Stream,
}

/// What one call to [`State::apply_samples`] did, for the caller's logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApplyOutcome {
    pub applied: u64,
    /// Older than the stored value (snapshot after a newer live value).
    pub stale: u64,
    pub unknown_catalogue: u64,
    pub bad_index: u64,
    pub type_mismatch: u64,
}

observe::family! {
    /// Samples received, by outcome: applied, or why they were ignored.
    pub const SAMPLES = counter "gateway_rx_samples_total" by "outcome";
}

observe::counters! {
    /// Monotonic counters since start.
    #[derive(Debug, Default)]
    pub struct Counters;
    /// A plain copy of [`Counters`].
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
    pub struct CountersSnapshot;

    samples_applied => SAMPLES["applied"];
    /// Older than the stored value (snapshot after a newer live value).
    samples_stale => SAMPLES["stale"];
    samples_unknown_catalogue => SAMPLES["unknown_catalogue"];
    samples_bad_index => SAMPLES["bad_index"];
    samples_type_mismatch => SAMPLES["type_mismatch"];
    /// Catalogue versions installed.
    catalogues_applied => counter("gateway_rx_catalogues_applied_total");
    /// Catalogue chunks refused: inconsistent with their version, or beyond the assembler's
    /// bounds (tags, bytes).
    catalogue_chunks_rejected => counter("gateway_rx_catalogue_chunks_rejected_total");
    /// Heartbeats received.
    heartbeats => counter("gateway_rx_heartbeats_total");
    /// Transmitter sessions started (the first one included).
    sessions;
    /// Times the link went down (no heartbeat for the heartbeat timeout).
    link_downs => counter("gateway_rx_link_downs_total"), json, row "link downs";
    /// Catalogue tags beyond the Modbus register index's caps, not mirrored over Modbus
    /// (summed over the catalogues applied).
    modbus_tags_not_indexed;
}

fn add(counter: &AtomicU64, n: u64) {
    if n > 0 {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

#[derive(Debug, Clone)]
struct Entry {
    value: Value,
    quality: Quality,
    time: UnixNanos,
    received_at: UnixNanos,
    stream: Stream,
    /// The state's epoch when this value was received; see `Inner::epoch`.
    epoch: u64,
}

/// What changed since the change feed was last drained.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// A new catalogue was installed: indexes from before it mean nothing now.
    pub catalogue: bool,
    /// Every tag's served quality may have changed (link down or up, new session).
    pub all: bool,
    /// Tags that received a value, each once, in the order first changed.
    pub tags: Vec<TagIndex>,
}

/// The change feed's record (see the module doc).
#[derive(Debug, Default)]
struct ChangeSet {
    enabled: bool,
    tags: ChangedTags,
    all: bool,
    catalogue: bool,
}

impl ChangeSet {
    fn mark(&mut self, tag: TagIndex) {
        if self.enabled {
            self.tags.insert(tag);
        }
    }

    /// Whether something was recorded (the caller then wakes the feed's reader).
    fn mark_all(&mut self) -> bool {
        self.all = true;
        self.enabled
    }

    fn new_catalogue(&mut self) -> bool {
        self.tags.clear();
        self.catalogue = true;
        self.all = true;
        self.enabled
    }
}

#[derive(Debug)]
struct Inner {
    catalogue: Option<Arc<Catalogue>>,
    /// Indexed like the catalogue's tags.
    values: Vec<Option<Entry>>,
    /// The Modbus mirror's, for this catalogue.
    modbus: RegisterIndex,
    link: LinkState,
    /// The last session seen, kept while the link is down so that a heartbeat of the same
    /// session is not mistaken for a restart.
    session: Option<SessionId>,
    /// Bumped when the link goes down and when a new session starts: a value received in an
    /// earlier epoch is served as Uncertain.
    epoch: u64,
    last_heartbeat: Option<Heartbeat>,
    last_heartbeat_at: Option<UnixNanos>,
    link_down_since: Option<UnixNanos>,
    changes: ChangeSet,
}

impl Inner {
    fn served_quality(&self, entry: &Entry) -> Quality {
        let stale = matches!(self.link, LinkState::Down) || entry.epoch != self.epoch;
        if stale && !entry.quality.is_bad() {
            Quality::UNCERTAIN_NO_COMMUNICATION_LAST_USABLE_VALUE
        } else {
            entry.quality
        }
    }

    /// Returns whether the change feed recorded something.
    fn start_session(&mut self, session: SessionId, counters: &Counters) -> bool {
        let mut changed = false;
        if self.session != Some(session) {
            self.session = Some(session);
            self.epoch += 1;
            add(&counters.sessions, 1);
            changed = true;
        }
        // Values received while the link was down were served Uncertain; now they are not.
        changed |= matches!(self.link, LinkState::Down);
        self.link = LinkState::Up { session };
        self.link_down_since = None;
        changed && self.changes.mark_all()
    }
}

/// The shared current-value table. See the module documentation for its rules.
#[derive(Debug)]
pub struct State {
    inner: RwLock<Inner>,
    counters: Counters,
    /// Woken when the change feed recorded something.
    changed: tokio::sync::Notify,
}

impl Default for State {
    fn default() -> Self {
        Self::new()
    }
}

/// A consistent read-only view of the state, held for the duration of one request.
pub struct StateView<'a> {
    inner: RwLockReadGuard<'a, Inner>,
}

impl StateView<'_> {
    pub fn catalogue(&self) -> Option<&Catalogue> {
        self.inner.catalogue.as_deref()
    }

    pub fn tag(&self, index: TagIndex) -> Option<TagRef<'_>> {
        self.catalogue()?.get(index)
    }

    /// The tag's value as it should be served; `None` if it never received one.
    pub fn value(&self, index: TagIndex) -> Option<ServedValue<'_>> {
        let entry = self
            .inner
            .values
            .get(usize::try_from(index).ok()?)?
            .as_ref()?;
        Some(ServedValue {
            value: &entry.value,
            quality: self.inner.served_quality(entry),
            stored_quality: entry.quality,
            source_time: entry.time,
            received_at: entry.received_at,
            stream: entry.stream,
        })
    }

    /// The Modbus mirror's register index of this view's catalogue.
    pub fn modbus_index(&self) -> &RegisterIndex {
        &self.inner.modbus
    }
}

impl State {
    pub fn new() -> State {
        State {
            inner: RwLock::new(Inner {
                catalogue: None,
                values: Vec::new(),
                modbus: RegisterIndex::default(),
                link: LinkState::Down,
                session: None,
                epoch: 0,
                last_heartbeat: None,
                last_heartbeat_at: None,
                link_down_since: None,
                changes: ChangeSet::default(),
            }),
            counters: Counters::default(),
            changed: tokio::sync::Notify::new(),
        }
    }

    /// Starts recording changes for [`take_changes`](Self::take_changes). The first drain
    /// reports every tag.
    pub fn enable_change_feed(&self) {
        let mut inner = self.write();
        inner.changes.enabled = true;
        inner.changes.mark_all();
        inner.changes.catalogue = true;
        drop(inner);
        self.changed.notify_one();
    }

    /// Resolves once something was recorded since the last [`take_changes`](Self::take_changes)
    /// (at once if it already was). One reader only.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    /// What changed since the last call. `buffer` is reused for the tag list (pass the
    /// previous result's `tags` to avoid allocating).
    pub fn take_changes(&self, mut buffer: Vec<TagIndex>) -> Changes {
        buffer.clear();
        let mut inner = self.write();
        let c = &mut inner.changes;
        buffer.extend(std::iter::from_fn(|| c.tags.pop()));
        Changes {
            catalogue: std::mem::take(&mut c.catalogue),
            all: std::mem::take(&mut c.all),
            tags: buffer,
        }
    }

    // A panic while the lock is held (there is no code path for one) would poison it; the data
    // is still consistent at every statement boundary, so carry on rather than fail every sink.
    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        match self.inner.read() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        match self.inner.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// A consistent view for reading several values at once. Do not hold it across an await.
    pub fn view(&self) -> StateView<'_> {
        StateView { inner: self.read() }
    }

    pub fn counters(&self) -> CountersSnapshot {
        self.counters.snapshot()
    }

    pub fn catalogue(&self) -> Option<Arc<Catalogue>> {
        self.read().catalogue.clone()
    }

    pub fn catalogue_hash(&self) -> Option<CatalogueHash> {
        self.read().catalogue.as_ref().map(|c| c.hash())
    }

    pub fn tag_count(&self) -> usize {
        self.read().catalogue.as_ref().map_or(0, |c| c.len())
    }

    pub fn link_state(&self) -> LinkState {
        self.read().link
    }

    pub fn link_is_down(&self) -> bool {
        matches!(self.read().link, LinkState::Down)
    }

    pub fn last_heartbeat(&self) -> Option<(UnixNanos, Heartbeat)> {
        let inner = self.read();
        Some((inner.last_heartbeat_at?, inner.last_heartbeat.clone()?))
    }

    pub fn link_down_since(&self) -> Option<UnixNanos> {
        self.read().link_down_since
    }

    /// Installs a new catalogue (see the module doc for which values survive). Returns false
    /// when it is the catalogue already installed, which changes nothing.
    pub fn apply_catalogue(&self, catalogue: Catalogue) -> bool {
        if self.catalogue_hash() == Some(catalogue.hash()) {
            return false;
        }
        let modbus = RegisterIndex::build(&catalogue);
        let not_indexed = modbus.not_indexed();
        let catalogue = Arc::new(catalogue);
        let mut values: Vec<Option<Entry>> = vec![None; catalogue.len()];

        let mut inner = self.write();
        if let Some(old) = inner.catalogue.take() {
            let mut old_values = std::mem::take(&mut inner.values);
            for (slot, tag) in values.iter_mut().zip(catalogue.iter()) {
                let Some(old_index) = old.index_of(tag.name) else {
                    continue;
                };
                let same = old.get(old_index).is_some_and(|old_tag| {
                    old_tag.value_type == tag.value_type && old_tag.source == tag.source
                });
                if same {
                    *slot = usize::try_from(old_index)
                        .ok()
                        .and_then(|i| old_values.get_mut(i))
                        .and_then(Option::take);
                }
            }
        }
        inner.catalogue = Some(catalogue);
        inner.values = values;
        inner.modbus = modbus;
        let wake = inner.changes.new_catalogue();
        drop(inner);
        if wake {
            self.changed.notify_one();
        }

        add(&self.counters.catalogues_applied, 1);
        add(&self.counters.modbus_tags_not_indexed, not_indexed);
        true
    }

    /// Applies a batch of samples received on `stream` (see the module doc for the rules).
    pub fn apply_samples(
        &self,
        catalogue: CatalogueHash,
        samples: &[Sample],
        received_at: UnixNanos,
        stream: Stream,
    ) -> ApplyOutcome {
        let mut out = ApplyOutcome::default();
        {
            let mut guard = self.write();
            let inner = &mut *guard;
            let current = inner.catalogue.as_ref().filter(|c| c.hash() == catalogue);
            match current {
                None => out.unknown_catalogue = samples.len() as u64,
                Some(cat) => {
                    for sample in samples {
                        let Some(value_type) = cat.value_type(sample.tag) else {
                            out.bad_index += 1;
                            continue;
                        };
                        if value_type != sample.value.value_type() {
                            out.type_mismatch += 1;
                            continue;
                        }
                        let Some(slot) = usize::try_from(sample.tag)
                            .ok()
                            .and_then(|i| inner.values.get_mut(i))
                        else {
                            out.bad_index += 1;
                            continue;
                        };
                        if let Some(old) = slot.as_ref() {
                            let older = sample.time < old.time;
                            if stream != Stream::Live && older && old.epoch == inner.epoch {
                                out.stale += 1;
                                continue;
                            }
                        }
                        *slot = Some(Entry {
                            value: sample.value.clone(),
                            quality: sample.quality,
                            time: sample.time,
                            received_at,
                            stream,
                            epoch: inner.epoch,
                        });
                        inner.changes.mark(sample.tag);
                        out.applied += 1;
                    }
                }
            }
        }
        if out.applied > 0 {
            self.changed.notify_one();
        }
        let c = &self.counters;
        add(&c.samples_applied, out.applied);
        add(&c.samples_stale, out.stale);
        add(&c.samples_unknown_catalogue, out.unknown_catalogue);
        add(&c.samples_bad_index, out.bad_index);
        add(&c.samples_type_mismatch, out.type_mismatch);
        out
    }

    /// A new transmitter session started: the link is up, and every value is served as
    /// Uncertain until the new session sends it again. A call with the current session only
    /// marks the link up.
    pub fn new_session(&self, session: SessionId) {
        let wake = self.write().start_session(session, &self.counters);
        if wake {
            self.changed.notify_one();
        }
    }

    /// Records a heartbeat of the session last announced by [`new_session`](Self::new_session)
    /// and brings the link up. Before any session is known the link stays down.
    pub fn apply_heartbeat(&self, heartbeat: Heartbeat, now: UnixNanos) {
        let mut inner = self.write();
        let mut wake = false;
        if let Some(session) = inner.session {
            wake = inner.start_session(session, &self.counters);
        }
        inner.last_heartbeat = Some(heartbeat);
        inner.last_heartbeat_at = Some(now);
        drop(inner);
        if wake {
            self.changed.notify_one();
        }
        add(&self.counters.heartbeats, 1);
    }

    /// A catalogue chunk the assembler refused.
    pub fn note_catalogue_chunk_rejected(&self) {
        add(&self.counters.catalogue_chunks_rejected, 1);
    }

    /// The link is down (no heartbeat for the heartbeat timeout): every value is served as
    /// Uncertain until it is received again.
    pub fn mark_link_down(&self, now: UnixNanos) {
        let mut inner = self.write();
        if matches!(inner.link, LinkState::Down) {
            return;
        }
        inner.link = LinkState::Down;
        inner.epoch += 1;
        inner.link_down_since = Some(now);
        let wake = inner.changes.mark_all();
        drop(inner);
        if wake {
            self.changed.notify_one();
        }
        add(&self.counters.link_downs, 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::model::{
        ByteOrder, ModbusAddress, ModbusTable, ModbusType, SourceAddress, TagInfo, ValueType,
        WordOrder,
    };

    fn modbus(device: &str, table: ModbusTable, address: u16, kind: ModbusType) -> SourceAddress {
        SourceAddress::Modbus(ModbusAddress {
            device: device.into(),
            unit_id: 1,
            table,
            address,
            kind,
            count: 3,
            byte_order: ByteOrder::Big,
            word_order: WordOrder::Big,
            scale: 1.0,
            offset: 0.0,
        })
    }

    fn tag(name: &str, value_type: ValueType, source: SourceAddress) -> TagInfo {
        TagInfo {
            name: name.into(),
            value_type,
            unit: String::new(),
            description: String::new(),
            source,
        }
    }

    fn catalogue() -> Catalogue {
        Catalogue::new(vec![
            tag(
                "a",
                ValueType::UInt16,
                modbus("plc", ModbusTable::HoldingRegister, 10, ModbusType::U16),
            ),
            tag(
                "b",
                ValueType::Float,
                modbus("plc", ModbusTable::HoldingRegister, 11, ModbusType::F32),
            ),
            tag("c", ValueType::Boolean, SourceAddress::Other("x".into())),
        ])
    }

    fn sample(tag: TagIndex, value: Value, time: UnixNanos) -> Sample {
        Sample {
            tag,
            value,
            quality: Quality::GOOD,
            time,
        }
    }

    fn up_state() -> (State, CatalogueHash) {
        let state = State::new();
        let cat = catalogue();
        let hash = cat.hash();
        assert!(state.apply_catalogue(cat));
        state.new_session(7);
        (state, hash)
    }

    fn served(state: &State, tag: TagIndex) -> Option<(Value, Quality, UnixNanos)> {
        let view = state.view();
        view.value(tag)
            .map(|v| (v.value.clone(), v.quality, v.source_time))
    }

    #[test]
    fn applies_and_rejects() {
        let (state, hash) = up_state();
        let out = state.apply_samples(
            hash,
            &[
                sample(0, Value::UInt16(5), 10),
                sample(1, Value::UInt16(5), 10),
                sample(9, Value::UInt16(5), 10),
                sample(2, Value::Boolean(true), 10),
            ],
            100,
            Stream::Live,
        );
        assert_eq!(
            out,
            ApplyOutcome {
                applied: 2,
                type_mismatch: 1,
                bad_index: 1,
                ..Default::default()
            }
        );
        let out = state.apply_samples(
            hash ^ 1,
            &[sample(0, Value::UInt16(6), 11)],
            100,
            Stream::Live,
        );
        assert_eq!(out.unknown_catalogue, 1);
        assert_eq!(
            served(&state, 0),
            Some((Value::UInt16(5), Quality::GOOD, 10))
        );
        assert_eq!(served(&state, 1), None);
        let c = state.counters();
        assert_eq!(c.samples_applied, 2);
        assert_eq!(c.samples_unknown_catalogue, 1);
        assert_eq!(c.samples_bad_index, 1);
        assert_eq!(c.samples_type_mismatch, 1);
        let view = state.view();
        let v = view.value(0).unwrap();
        assert_eq!(v.received_at, 100);
        assert_eq!(v.stream, Stream::Live);
    }

    #[test]
    fn samples_before_any_catalogue_are_counted() {
        let state = State::new();
        let out = state.apply_samples(1, &[sample(0, Value::UInt16(1), 1)], 1, Stream::Snapshot);
        assert_eq!(out.unknown_catalogue, 1);
    }

    #[test]
    fn old_snapshot_does_not_overwrite_newer_live() {
        let (state, hash) = up_state();
        state.apply_samples(hash, &[sample(0, Value::UInt16(2), 20)], 1, Stream::Live);
        let out = state.apply_samples(
            hash,
            &[sample(0, Value::UInt16(1), 10)],
            2,
            Stream::Snapshot,
        );
        assert_eq!(out.stale, 1);
        assert_eq!(served(&state, 0).unwrap().0, Value::UInt16(2));
        // Same time, quality change: applies.
        let mut bad = sample(0, Value::UInt16(2), 20);
        bad.quality = Quality::BAD_COMMUNICATION_ERROR;
        state.apply_samples(hash, &[bad], 3, Stream::Snapshot);
        assert_eq!(
            served(&state, 0).unwrap().1,
            Quality::BAD_COMMUNICATION_ERROR
        );
        // Newer snapshot applies.
        state.apply_samples(
            hash,
            &[sample(0, Value::UInt16(3), 30)],
            4,
            Stream::Snapshot,
        );
        assert_eq!(served(&state, 0).unwrap().0, Value::UInt16(3));
        // Live always applies, even with a clock that stepped back.
        state.apply_samples(hash, &[sample(0, Value::UInt16(4), 5)], 5, Stream::Live);
        assert_eq!(
            served(&state, 0).unwrap(),
            (Value::UInt16(4), Quality::GOOD, 5)
        );
    }

    #[test]
    fn link_down_serves_uncertain_without_rewriting() {
        let (state, hash) = up_state();
        let mut bad = sample(1, Value::Float(1.5), 10);
        bad.quality = Quality::BAD_DEVICE_FAILURE;
        state.apply_samples(
            hash,
            &[sample(0, Value::UInt16(2), 10), bad],
            1,
            Stream::Live,
        );
        state.mark_link_down(50);
        assert!(state.link_is_down());
        assert_eq!(state.link_down_since(), Some(50));
        let un = Quality::UNCERTAIN_NO_COMMUNICATION_LAST_USABLE_VALUE;
        assert_eq!(served(&state, 0), Some((Value::UInt16(2), un, 10)));
        assert_eq!(served(&state, 1).unwrap().1, Quality::BAD_DEVICE_FAILURE);
        assert_eq!(state.view().value(0).unwrap().stored_quality, Quality::GOOD);

        // Link back with the same session: still Uncertain until received again.
        state.apply_heartbeat(heartbeat(hash), 60);
        assert_eq!(state.link_state(), LinkState::Up { session: 7 });
        assert_eq!(served(&state, 0).unwrap().1, un);
        // An older snapshot value still replaces a value from before the outage.
        state.apply_samples(
            hash,
            &[sample(0, Value::UInt16(1), 5)],
            61,
            Stream::Snapshot,
        );
        assert_eq!(
            served(&state, 0),
            Some((Value::UInt16(1), Quality::GOOD, 5))
        );
        assert_eq!(state.counters().link_downs, 1);
    }

    fn heartbeat(hash: CatalogueHash) -> Heartbeat {
        Heartbeat {
            sent_at: 1,
            uptime_ms: 2,
            catalogue: hash,
            tag_count: 3,
            config_hash: 4,
            counters: Default::default(),
            sources: vec![],
        }
    }

    #[test]
    fn new_session_serves_uncertain_until_refreshed() {
        let (state, hash) = up_state();
        state.apply_samples(
            hash,
            &[
                sample(0, Value::UInt16(2), 10),
                sample(1, Value::Float(2.0), 10),
            ],
            1,
            Stream::Live,
        );
        state.new_session(8);
        assert_eq!(state.link_state(), LinkState::Up { session: 8 });
        let un = Quality::UNCERTAIN_NO_COMMUNICATION_LAST_USABLE_VALUE;
        assert_eq!(served(&state, 0).unwrap().1, un);
        state.apply_samples(hash, &[sample(0, Value::UInt16(3), 1)], 2, Stream::Snapshot);
        assert_eq!(
            served(&state, 0).unwrap(),
            (Value::UInt16(3), Quality::GOOD, 1)
        );
        assert_eq!(served(&state, 1).unwrap(), (Value::Float(2.0), un, 10));
        // The same session again changes nothing.
        state.new_session(8);
        assert_eq!(served(&state, 0).unwrap().1, Quality::GOOD);
        assert_eq!(state.counters().sessions, 2);
    }

    #[test]
    fn heartbeats_drive_the_link() {
        // The calls the link task makes: the decoder's new session, each heartbeat, and
        // `mark_link_down` when none came for the heartbeat timeout.
        let state = State::new();
        assert!(state.link_is_down());
        state.apply_heartbeat(heartbeat(1), 10);
        assert!(state.link_is_down(), "no session known yet");
        state.new_session(5);
        state.apply_heartbeat(heartbeat(1), 12);
        assert_eq!(state.link_state(), LinkState::Up { session: 5 });
        assert_eq!(
            state.last_heartbeat().map(|(t, h)| (t, h.catalogue)),
            Some((12, 1))
        );
        state.mark_link_down(21);
        assert!(state.link_is_down());
        state.mark_link_down(100);
        assert_eq!(
            state.link_down_since(),
            Some(21),
            "down once, since the first"
        );
        assert_eq!(state.counters().link_downs, 1);
        // A heartbeat of the same session brings the link back, without a new session.
        state.apply_heartbeat(heartbeat(1), 110);
        assert_eq!(state.link_state(), LinkState::Up { session: 5 });
        assert_eq!(state.link_down_since(), None);
        state.new_session(6);
        state.apply_heartbeat(heartbeat(1), 120);
        assert_eq!(state.link_state(), LinkState::Up { session: 6 });
        assert_eq!(state.counters().heartbeats, 4);
        assert_eq!(state.counters().sessions, 2);
    }

    #[test]
    fn catalogue_change_keeps_unchanged_tags_by_name() {
        let (state, hash) = up_state();
        state.apply_samples(
            hash,
            &[
                sample(0, Value::UInt16(2), 10),
                sample(1, Value::Float(2.0), 10),
            ],
            1,
            Stream::Live,
        );
        state.apply_samples(
            hash,
            &[sample(2, Value::Boolean(true), 10)],
            1,
            Stream::Live,
        );
        // New order; "a" unchanged, "b" moved to another register, "c" removed, "d" new.
        let new = Catalogue::new(vec![
            tag("d", ValueType::Int16, SourceAddress::Other("y".into())),
            tag(
                "b",
                ValueType::Float,
                modbus("plc", ModbusTable::HoldingRegister, 20, ModbusType::F32),
            ),
            tag(
                "a",
                ValueType::UInt16,
                modbus("plc", ModbusTable::HoldingRegister, 10, ModbusType::U16),
            ),
        ]);
        let new_hash = new.hash();
        assert!(state.apply_catalogue(new.clone()));
        assert!(!state.apply_catalogue(new));
        assert_eq!(state.catalogue_hash(), Some(new_hash));
        assert_eq!(state.tag_count(), 3);
        assert_eq!(served(&state, 0), None);
        assert_eq!(served(&state, 1), None);
        assert_eq!(
            served(&state, 2),
            Some((Value::UInt16(2), Quality::GOOD, 10))
        );
        // Samples of the old catalogue are now unknown.
        let out = state.apply_samples(hash, &[sample(0, Value::UInt16(9), 11)], 2, Stream::Live);
        assert_eq!(out.unknown_catalogue, 1);
        assert_eq!(state.counters().catalogues_applied, 2);
    }

    #[test]
    fn change_feed_lists_each_changed_tag_once() {
        let (state, hash) = up_state();
        // Off until enabled: nothing recorded.
        state.apply_samples(hash, &[sample(0, Value::UInt16(1), 1)], 1, Stream::Live);
        state.enable_change_feed();
        let first = state.take_changes(Vec::new());
        assert!(first.all && first.catalogue && first.tags.is_empty());
        for t in 2..100 {
            state.apply_samples(
                hash,
                &[
                    sample(1, Value::Float(t as f32), t),
                    sample(0, Value::UInt16(2), t),
                ],
                t,
                Stream::Live,
            );
        }
        let c = state.take_changes(first.tags);
        assert_eq!(
            c,
            Changes {
                catalogue: false,
                all: false,
                tags: vec![1, 0]
            }
        );
        assert_eq!(state.take_changes(c.tags), Changes::default());
        // Rejected samples record nothing; a tag drained can be recorded again.
        state.apply_samples(hash, &[sample(9, Value::UInt16(1), 200)], 200, Stream::Live);
        state.apply_samples(hash, &[sample(0, Value::UInt16(3), 201)], 201, Stream::Live);
        assert_eq!(state.take_changes(Vec::new()).tags, vec![0]);
        // Link down and back up: every tag's served quality.
        state.mark_link_down(300);
        assert!(state.take_changes(Vec::new()).all);
        state.apply_heartbeat(heartbeat(hash), 301);
        assert!(state.take_changes(Vec::new()).all);
        state.apply_heartbeat(heartbeat(hash), 302);
        assert_eq!(state.take_changes(Vec::new()), Changes::default());
        // A new catalogue drops the indexes recorded against the old one.
        state.apply_samples(hash, &[sample(0, Value::UInt16(4), 400)], 400, Stream::Live);
        state.apply_catalogue(Catalogue::new(vec![tag(
            "z",
            ValueType::Boolean,
            SourceAddress::Other("z".into()),
        )]));
        assert_eq!(
            state.take_changes(Vec::new()),
            Changes {
                catalogue: true,
                all: true,
                tags: vec![]
            }
        );
    }

    #[tokio::test]
    async fn change_feed_wakes_its_reader() {
        let (state, hash) = up_state();
        let state = Arc::new(state);
        state.enable_change_feed();
        state.changed().await;
        state.take_changes(Vec::new());
        let reader = {
            let state = state.clone();
            tokio::spawn(async move {
                state.changed().await;
                state.take_changes(Vec::new())
            })
        };
        tokio::task::yield_now().await;
        state.apply_samples(hash, &[sample(1, Value::Float(1.0), 1)], 1, Stream::Live);
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), reader)
            .await
            .expect("woken")
            .expect("task");
        assert_eq!(got.tags, vec![1]);
    }
}
