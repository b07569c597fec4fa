//! Backfills served from the sources' own historians (an OPC UA server's HistoryRead), for
//! ranges the transmitter's buffer does not hold: older than its oldest segment, or for tags
//! the buffer never saw.
//!
//! Each source with historized tags registers here (by name, with its tags' names) and gets a
//! queue of [`HistorianRead`]s. The history thread splits a backfill request across the
//! registered sources and follows each part's [`HistorianProgress`] in the request's status
//! file. What a source reads goes into the history tap like any sample, so it is appended to
//! the buffer, sent on the history stream with new sequence numbers and covered by the carousel;
//! the receiver keeps each (tag, source time) once, so overlap with the buffer costs link
//! bytes, never a duplicate row.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use protocol::model::UnixNanos;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// One source's share of a backfill request.
#[derive(Debug)]
pub struct HistorianRead {
    pub request: String,
    /// Source-time range, inclusive.
    pub from: UnixNanos,
    pub to: UnixNanos,
    /// Positions in the source's tag list (as registered).
    pub tags: Vec<usize>,
    pub progress: Arc<HistorianProgress>,
}

impl Drop for HistorianRead {
    /// A read dropped unfinished (its source stopped or was replaced by a live reload) must
    /// not leave the request waiting for ever.
    fn drop(&mut self) {
        if !self.progress.state().is_final() {
            self.progress
                .fail("the source stopped before the read finished (shutdown or live reload); request it again");
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PartState {
    Queued,
    Running,
    Done,
    Failed,
}

impl PartState {
    pub fn is_final(self) -> bool {
        matches!(self, PartState::Done | PartState::Failed)
    }

    fn from_u8(v: u8) -> PartState {
        match v {
            0 => PartState::Queued,
            1 => PartState::Running,
            2 => PartState::Done,
            _ => PartState::Failed,
        }
    }
}

/// Progress of one [`HistorianRead`], written by the source, read by the history thread.
#[derive(Debug, Default)]
pub struct HistorianProgress {
    state: AtomicU8,
    values: AtomicU64,
    message: Mutex<String>,
}

impl HistorianProgress {
    pub fn state(&self) -> PartState {
        PartState::from_u8(self.state.load(Ordering::Acquire))
    }

    pub fn values(&self) -> u64 {
        self.values.load(Ordering::Relaxed)
    }

    pub fn message(&self) -> String {
        self.message
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn running(&self) {
        self.state.store(1, Ordering::Release);
    }

    /// Values read from the historian and handed to the history tap.
    pub fn add_values(&self, n: u64) {
        self.values.fetch_add(n, Ordering::Relaxed);
    }

    pub fn done(&self, message: impl Into<String>) {
        self.set_message(message.into());
        self.state.store(2, Ordering::Release);
    }

    pub fn fail(&self, message: impl Into<String>) {
        self.set_message(message.into());
        self.state.store(3, Ordering::Release);
    }

    fn set_message(&self, m: String) {
        *self.message.lock().unwrap_or_else(|e| e.into_inner()) = m;
    }
}

/// One part of a request as its status file shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistorianPart {
    /// The source's name (the `[[opcua]]` endpoint's `name`).
    pub source: String,
    pub tags: usize,
    pub from: UnixNanos,
    pub to: UnixNanos,
    pub state: PartState,
    /// Values read from the historian so far.
    pub values: u64,
    pub message: String,
}

struct Source {
    name: String,
    /// Historized tags' names, in the source's order.
    tags: Vec<String>,
    queue: mpsc::UnboundedSender<HistorianRead>,
}

/// The sources that can serve backfills from their historians.
#[derive(Default)]
pub struct Historians {
    sources: Mutex<Vec<Source>>,
}

impl std::fmt::Debug for Historians {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self.lock().iter().map(|s| s.name.clone()).collect();
        f.debug_struct("Historians")
            .field("sources", &names)
            .finish()
    }
}

impl Historians {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Source>> {
        self.sources.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers (or replaces, after a live reload) the source `name` serving `tags`; its
    /// reads arrive on the returned queue. Reads still queued for a replaced source are
    /// dropped, which fails them.
    pub fn register(
        &self,
        name: &str,
        tags: Vec<String>,
    ) -> mpsc::UnboundedReceiver<HistorianRead> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut sources = self.lock();
        sources.retain(|s| s.name != name);
        sources.push(Source {
            name: name.to_owned(),
            tags,
            queue: tx,
        });
        rx
    }

    /// Keeps only the sources named in `names` (a live reload removed the others).
    pub fn retain(&self, names: &[&str]) {
        self.lock().retain(|s| names.contains(&s.name.as_str()));
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Queues the historian reads of a request: `tags` (all historized tags when `None`) over
    /// `from..=to`, one part per source that serves any of them.
    pub fn dispatch(
        &self,
        request: &str,
        from: UnixNanos,
        to: UnixNanos,
        tags: Option<&HashSet<String>>,
    ) -> Vec<(HistorianPart, Arc<HistorianProgress>)> {
        let sources = self.lock();
        let mut parts = Vec::new();
        for s in sources.iter() {
            let chosen: Vec<usize> = s
                .tags
                .iter()
                .enumerate()
                .filter(|(_, n)| tags.is_none_or(|t| t.contains(n.as_str())))
                .map(|(i, _)| i)
                .collect();
            if chosen.is_empty() {
                continue;
            }
            let progress = Arc::new(HistorianProgress::default());
            let part = HistorianPart {
                source: s.name.clone(),
                tags: chosen.len(),
                from,
                to,
                state: PartState::Queued,
                values: 0,
                message: String::new(),
            };
            let read = HistorianRead {
                request: request.to_owned(),
                from,
                to,
                tags: chosen,
                progress: progress.clone(),
            };
            // A closed queue drops (and so fails) the read: the part reports it.
            let _ = s.queue.send(read);
            parts.push((part, progress));
        }
        parts
    }
}

/// Refreshes `part` from its progress.
pub fn refresh(part: &mut HistorianPart, progress: &HistorianProgress) {
    part.state = progress.state();
    part.values = progress.values();
    part.message = progress.message();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dispatch_splits_by_source_and_fails_reads_of_a_gone_source() {
        let h = Historians::default();
        let mut a = h.register("a", vec!["a/x".into(), "a/y".into()]);
        let b = h.register("b", vec!["b/z".into()]);
        let only: HashSet<String> = ["a/y".to_owned(), "m/q".to_owned()].into();
        let parts = h.dispatch("r1", 10, 20, Some(&only));
        assert_eq!(parts.len(), 1);
        assert_eq!((parts[0].0.source.as_str(), parts[0].0.tags), ("a", 1));
        let read = a.try_recv().expect("queued for a");
        assert_eq!((read.from, read.to, read.tags.clone()), (10, 20, vec![1]));
        read.progress.running();
        read.progress.add_values(5);
        read.progress.done("ok");
        drop(read);
        let mut p = parts[0].0.clone();
        refresh(&mut p, &parts[0].1);
        assert_eq!(
            (p.state, p.values, p.message.as_str()),
            (PartState::Done, 5, "ok")
        );

        // Every historized tag when no list; b's queue is gone: its part fails, not hangs.
        drop(b);
        let parts = h.dispatch("r2", 0, 1, None);
        assert_eq!(parts.len(), 2);
        let (_, pb) = parts.iter().find(|(p, _)| p.source == "b").unwrap();
        assert_eq!(pb.state(), PartState::Failed);
        assert!(
            pb.message().contains("request it again"),
            "{}",
            pb.message()
        );
        // A read dropped unfinished by its source fails too.
        let read = a.try_recv().unwrap();
        assert_eq!(read.tags, vec![0, 1]);
        let progress = read.progress.clone();
        drop(read);
        assert_eq!(progress.state(), PartState::Failed);
    }

    #[test]
    fn register_replaces_and_retain_removes() {
        let h = Historians::default();
        let _old = h.register("a", vec!["t1".into()]);
        let _new = h.register("a", vec!["t2".into()]);
        let parts = h.dispatch("r", 0, 1, None);
        assert_eq!(parts.len(), 1);
        h.retain(&[]);
        assert!(h.is_empty());
    }
}
