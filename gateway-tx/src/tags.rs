//! The tag table: the catalogue built from the config, the current value of every tag, and the
//! queue of changes waiting for the link.
//!
//! Queue policy (bounded by construction): the change queue holds each tag at most once and
//! always sends the tag's latest value, so a slow link can never make it grow past the tag
//! count; a value replaced before it was sent is counted as superseded, never silently lost
//! (the snapshot and the next change carry the newer value).

use std::sync::Mutex;

use protocol::changed_tags::ChangedTags;
use protocol::model::{Quality, Sample, TagIndex, TagInfo, UnixNanos, Value, ValueType};
use tokio::sync::Notify;

pub struct TagTable {
    infos: Vec<TagInfo>,
    deadbands: Vec<f64>,
    inner: Mutex<Inner>,
    changed: Notify,
    /// Where reported samples go for the history stream, once `[history]` is set up.
    history: std::sync::OnceLock<std::sync::Arc<crate::history::HistoryTap>>,
}

struct Inner {
    current: Vec<Option<Sample>>,
    reported: Vec<Option<(Value, Quality)>>,
    /// The change feed to the link: the receiver's state keeps the same kind of set.
    changes: ChangedTags,
    superseded: u64,
    /// Values refused for their size (each also seen as the tag's quality).
    refused_too_large: u64,
}

/// Tags by quality of their current value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QualityCounts {
    pub good: u64,
    pub uncertain: u64,
    pub bad: u64,
    /// Tags that never had a value.
    pub no_value: u64,
}

/// One update as a source produces it.
#[derive(Debug, Clone, PartialEq)]
pub struct Update {
    pub tag: TagIndex,
    /// `None` when the source could not produce a value (the quality says why); the table then
    /// keeps the last value (or the type's zero) with the new quality.
    pub value: Option<Value>,
    pub quality: Quality,
    pub time: UnixNanos,
}

impl TagTable {
    /// A table of `infos` (their order is the catalogue's: tag `i` is `infos[i]`), each
    /// with its deadband. The daemon's is built by `source::Sources::build`.
    pub fn new(infos: Vec<TagInfo>, deadbands: Vec<f64>) -> TagTable {
        let n = infos.len();
        TagTable {
            infos,
            deadbands,
            inner: Mutex::new(Inner {
                current: vec![None; n],
                reported: vec![None; n],
                changes: ChangedTags::new(),
                superseded: 0,
                refused_too_large: 0,
            }),
            changed: Notify::new(),
            history: std::sync::OnceLock::new(),
        }
    }

    /// Sends every reported sample (each change beyond the deadband, each quality change, each
    /// tag's first value) to the history stream too, in report order. Set once, before the
    /// sources start; false if it was set already.
    pub fn set_history(&self, tap: std::sync::Arc<crate::history::HistoryTap>) -> bool {
        self.history.set(tap).is_ok()
    }

    pub fn infos(&self) -> &[TagInfo] {
        &self.infos
    }

    pub fn len(&self) -> usize {
        self.infos.len()
    }

    pub fn is_empty(&self) -> bool {
        self.infos.is_empty()
    }

    /// Records updates from a source; changes beyond the deadband (or any change of quality)
    /// are queued for the link.
    pub fn apply(&self, updates: impl IntoIterator<Item = Update>) {
        let mut any = false;
        let history = self.history.get();
        let mut reported = Vec::new();
        {
            let mut inner = self.lock();
            for u in updates {
                let i = u.tag as usize;
                let Some(info) = self.infos.get(i) else {
                    continue;
                };
                // Whatever the source, a value beyond what the gateway carries is refused
                // here: it keeps the tag's last value with BadEncodingLimitsExceeded (see
                // `protocol::model::MAX_VALUE_BYTES`).
                let (value, quality) = match u.value {
                    Some(v) if v.byte_len() > protocol::model::MAX_VALUE_BYTES => {
                        inner.refused_too_large += 1;
                        (None, Quality::BAD_ENCODING_LIMITS_EXCEEDED)
                    }
                    v => (v, u.quality),
                };
                let value = match value {
                    Some(v) => v,
                    None => match &inner.current[i] {
                        Some(s) => s.value.clone(),
                        None => zero_of(info.value_type),
                    },
                };
                let report = match &inner.reported[i] {
                    None => true,
                    Some((old_v, old_q)) => {
                        *old_q != quality || exceeds_deadband(old_v, &value, self.deadbands[i])
                    }
                };
                let sample = Sample {
                    tag: u.tag,
                    value,
                    quality,
                    time: u.time,
                };
                if report {
                    inner.reported[i] = Some((sample.value.clone(), sample.quality));
                    if !inner.changes.insert(u.tag) {
                        inner.superseded += 1;
                    }
                    any = true;
                    if history.is_some() {
                        reported.push(sample.clone());
                    }
                }
                inner.current[i] = Some(sample);
            }
            // Still under the table's lock, so the history's order is the report order even
            // with several sources applying at once.
            if let Some(h) = history
                && !reported.is_empty()
            {
                h.push(reported);
            }
        }
        if any {
            self.changed.notify_one();
        }
    }

    /// Takes up to `max` queued changes, each with its tag's latest value.
    pub fn take_changes(&self, max: usize) -> Vec<Sample> {
        let mut inner = self.lock();
        let mut out = Vec::with_capacity(max.min(inner.changes.len()));
        while out.len() < max {
            let Some(tag) = inner.changes.pop() else {
                break;
            };
            let i = tag as usize;
            if let Some(s) = &inner.current[i] {
                // Send what was last reported, not a newer value still inside the deadband, so
                // the receiver sees exactly the reported sequence.
                let mut s = s.clone();
                if let Some((v, q)) = &inner.reported[i] {
                    s.value = v.clone();
                    s.quality = *q;
                }
                out.push(s);
            }
        }
        out
    }

    pub fn pending_changes(&self) -> usize {
        self.lock().changes.len()
    }

    /// Values refused because they were larger than `protocol::model::MAX_VALUE_BYTES`.
    pub fn refused_too_large(&self) -> u64 {
        self.lock().refused_too_large
    }

    pub fn superseded(&self) -> u64 {
        self.lock().superseded
    }

    /// Tags by the quality of their current value, for status and metrics.
    pub fn quality_counts(&self) -> QualityCounts {
        let inner = self.lock();
        let mut c = QualityCounts::default();
        for s in &inner.current {
            match s {
                None => c.no_value += 1,
                Some(s) if s.quality.is_good() => c.good += 1,
                Some(s) if s.quality.is_uncertain() => c.uncertain += 1,
                Some(_) => c.bad += 1,
            }
        }
        c
    }

    /// Current values of tags `start..start+count` that have one, for the rolling snapshot.
    pub fn snapshot(&self, start: usize, count: usize) -> Vec<Sample> {
        let inner = self.lock();
        let end = start.saturating_add(count).min(inner.current.len());
        inner
            .current
            .get(start..end)
            .unwrap_or_default()
            .iter()
            .flatten()
            .cloned()
            .collect()
    }

    /// The current value of one tag.
    pub fn current(&self, tag: TagIndex) -> Option<Sample> {
        self.lock().current.get(tag as usize).cloned().flatten()
    }

    /// After a live reload: copies from `old` the current value of every tag whose name, type
    /// and source are unchanged (matched by name, so tags may have moved). Copied values are
    /// not queued as changes: the receiver keeps them across the catalogue change, and the
    /// rolling snapshot carries them anyway. Returns how many tags kept their value.
    pub fn carry_over(&self, old: &TagTable) -> usize {
        let by_name: std::collections::HashMap<&str, usize> = old
            .infos
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.as_str(), i))
            .collect();
        let from = old.lock();
        let mut inner = self.lock();
        let mut kept = 0;
        for (i, info) in self.infos.iter().enumerate() {
            let Some(&j) = by_name.get(info.name.as_str()) else {
                continue;
            };
            let o = &old.infos[j];
            if o.value_type != info.value_type || o.source != info.source {
                continue;
            }
            inner.current[i] = from.current[j].clone().map(|mut s| {
                s.tag = i as TagIndex;
                s
            });
            inner.reported[i] = from.reported[j].clone();
            kept += usize::from(inner.current[i].is_some());
        }
        kept
    }

    /// Waits until a change is queued.
    pub async fn changed(&self) {
        self.changed.notified().await
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A poisoned lock means a panic elsewhere already; the data is still consistent
        // (every write above is a plain field store), so keep serving it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn exceeds_deadband(old: &Value, new: &Value, deadband: f64) -> bool {
    match (old.as_f64(), new.as_f64()) {
        (Some(a), Some(b)) if deadband > 0.0 => {
            // NaN on either side is a change of kind, always reported.
            (a - b).abs() > deadband || a.is_nan() != b.is_nan()
        }
        (Some(a), Some(b)) if a.is_nan() && b.is_nan() => false,
        _ => old != new,
    }
}

/// The value a tag shows before it ever had one.
pub fn zero_of(t: ValueType) -> Value {
    match t {
        ValueType::Boolean => Value::Boolean(false),
        ValueType::Int16 => Value::Int16(0),
        ValueType::Int32 => Value::Int32(0),
        ValueType::Int64 => Value::Int64(0),
        ValueType::UInt16 => Value::UInt16(0),
        ValueType::UInt32 => Value::UInt32(0),
        ValueType::UInt64 => Value::UInt64(0),
        ValueType::Float => Value::Float(0.0),
        ValueType::Double => Value::Double(0.0),
        ValueType::String => Value::String(String::new()),
        ValueType::DateTime => Value::DateTime(0),
        ValueType::ByteString => Value::ByteString(Vec::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::model::SourceAddress;

    fn table(deadband: f64) -> TagTable {
        let info = TagInfo {
            name: "a/b".into(),
            value_type: ValueType::Double,
            unit: String::new(),
            description: String::new(),
            source: SourceAddress::Other("test".into()),
        };
        TagTable::new(vec![info.clone(), info], vec![deadband, 0.0])
    }

    fn info(name: &str, value_type: ValueType) -> TagInfo {
        TagInfo {
            name: name.into(),
            value_type,
            unit: String::new(),
            description: String::new(),
            source: SourceAddress::Other(name.into()),
        }
    }

    #[test]
    fn carry_over_keeps_values_of_unchanged_tags_by_name_and_queues_nothing() {
        let old = TagTable::new(
            vec![info("x", ValueType::Double), info("y", ValueType::Double)],
            vec![0.0, 0.0],
        );
        old.apply((0..2).map(|tag| Update {
            tag,
            value: Some(Value::Double(f64::from(tag) + 1.0)),
            quality: Quality::GOOD,
            time: 7,
        }));
        // "new" is added before "y", which moves; "x" changes type.
        let new = TagTable::new(
            vec![
                info("new", ValueType::Double),
                info("y", ValueType::Double),
                info("x", ValueType::Int64),
            ],
            vec![0.0; 3],
        );
        assert_eq!(new.carry_over(&old), 1);
        assert_eq!(new.current(0), None);
        let y = new.current(1).expect("y keeps its value");
        assert_eq!((y.tag, y.value, y.time), (1, Value::Double(2.0), 7));
        assert_eq!(new.current(2), None, "a changed type starts afresh");
        assert_eq!(new.pending_changes(), 0);
        // The same value again is no change (the reported value came along).
        new.apply([Update {
            tag: 1,
            value: Some(Value::Double(2.0)),
            quality: Quality::GOOD,
            time: 8,
        }]);
        assert_eq!(new.pending_changes(), 0);
    }

    fn up(tag: TagIndex, v: f64, q: Quality, t: i64) -> Update {
        Update {
            tag,
            value: Some(Value::Double(v)),
            quality: q,
            time: t,
        }
    }

    #[test]
    fn deadband_suppresses_small_changes_but_not_quality_changes() {
        let t = table(1.0);
        t.apply([up(0, 10.0, Quality::GOOD, 1)]);
        assert_eq!(t.take_changes(10).len(), 1);
        t.apply([up(0, 10.5, Quality::GOOD, 2)]);
        assert!(
            t.take_changes(10).is_empty(),
            "0.5 is inside the deadband of 1"
        );
        assert_eq!(t.current(0).map(|s| s.value), Some(Value::Double(10.5)));
        t.apply([up(0, 11.6, Quality::GOOD, 3)]);
        let c = t.take_changes(10);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].value, Value::Double(11.6));
        t.apply([Update {
            tag: 0,
            value: None,
            quality: Quality::BAD_COMMUNICATION_ERROR,
            time: 4,
        }]);
        let c = t.take_changes(10);
        assert_eq!(c.len(), 1, "a quality change is always reported");
        assert_eq!(c[0].quality, Quality::BAD_COMMUNICATION_ERROR);
        assert_eq!(
            c[0].value,
            Value::Double(11.6),
            "a Bad update keeps the last value"
        );
    }

    #[test]
    fn queue_holds_each_tag_once_with_latest_value() {
        let t = table(0.0);
        for i in 0..100 {
            t.apply([up(1, f64::from(i), Quality::GOOD, i64::from(i))]);
        }
        assert_eq!(t.pending_changes(), 1);
        assert_eq!(t.superseded(), 99);
        let c = t.take_changes(10);
        assert_eq!(
            c,
            vec![Sample {
                tag: 1,
                value: Value::Double(99.0),
                quality: Quality::GOOD,
                time: 99
            }]
        );
    }

    #[test]
    fn unknown_tag_index_is_ignored() {
        let t = table(0.0);
        t.apply([up(7, 1.0, Quality::GOOD, 1)]);
        assert_eq!(t.pending_changes(), 0);
    }

    #[test]
    fn snapshot_returns_only_tags_with_values() {
        let t = table(0.0);
        t.apply([up(1, 2.0, Quality::GOOD, 1)]);
        let s = t.snapshot(0, 10);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].tag, 1);
        assert!(t.snapshot(5, 10).is_empty());
    }
}
