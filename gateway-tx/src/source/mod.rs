//! Sources: where tag values come from. Each protocol is one [`Kind`] (Modbus TCP devices,
//! OPC UA endpoints), registered in [`KINDS`]; it builds its [`Source`]s from the config, and
//! a source knows its tags, how it starts reading them into the tag table, and what the
//! status shows of it. Everything else is done here once, for every kind:
//!
//! - **Tags.** The catalogue lists the kinds in [`KINDS`] order, each kind's sources in file
//!   order, each source's tags in its own order, so tag indexes are stable for an unchanged
//!   config. A source's tags are one contiguous range of the tag table; [`Sources::build`] is
//!   the one place that computes it, and a source is started on it ([`On::first`]).
//! - **Start.** [`Sources::start`] starts every source's tasks; they write what they read
//!   with `TagTable::apply`. With `[history]` a source also gets the history hooks ([`History`]):
//!   the tap its start-up history read writes to, and the registry where a source with a
//!   historian (OPC UA) offers to serve operator backfills.
//! - **Health.** One [`Health`] per source, written by its tasks, read by the heartbeat
//!   ([`Sources::health`]) and the status page (each kind's [`View`]).
//! - **Live reload.** The new config's sources are built (and the reload refused if that
//!   fails) before anything stops; a source of the same kind and name takes over the old one's
//!   health, so its counters go on and its start-up history read is not repeated. The old
//!   sources' tasks are stopped before the new ones start on the new table.
//! - **Stop.** A source's tasks are aborted ([`Running`]); what they hold is closed when it is
//!   dropped (an OPC UA session is closed on the server).
//!
//! # Adding a protocol
//!
//! A new kind of source touches: its config schema in the `config` crate (its tables parsed
//! into a field of `TxConfig`, its source and tag names checked unique with the other kinds');
//! its module in gateway-tx (`src/<protocol>/`, with a [`Source`] implementation and its
//! [`Kind`]), declared with one `pub mod` line in `lib.rs`; and one line in [`KINDS`]. Nothing
//! in the daemon, the tag table or the status changes. Its tags go on the wire with
//! `SourceAddress::Other` (text) unless `protocol` is taught its addresses.

pub mod health;

use std::cell::RefCell;
use std::sync::{Arc, RwLock};

use config::tx::TxConfig;
use observe::prom::Exposition;
use protocol::message::SourceHealth;
use protocol::model::{TagIndex, TagInfo};
use serde_json::Value as Json;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::task::JoinHandle;

pub use health::Health;

use crate::history::historian::HistorianRead;
use crate::history::{HistoryTap, SourceHooks};
use crate::tags::TagTable;

/// Every kind of source, in catalogue order. A new protocol is one line here.
pub static KINDS: &[&Kind] = &[&crate::modbus::source::KIND, &crate::opcua::source::KIND];

/// One protocol: how its sources are built and how the status shows them.
pub struct Kind {
    /// Tells kinds apart: a live reload carries a source's health only to the source of the
    /// same kind and name.
    pub name: &'static str,
    /// Its sources in `config`, in file order. Refuses a config it cannot serve (OPC UA
    /// endpoints in a build without OPC UA) rather than silently not reading them.
    pub build: fn(&TxConfig) -> Built,
    pub view: View,
}

/// A kind's sources, as built from the config.
pub type Built = anyhow::Result<Vec<Box<dyn Source>>>;

/// How the status shows one kind's sources.
pub struct View {
    /// Key of the status JSON's array of the sources' objects ([`Source::status`]).
    pub key: &'static str,
    /// The status page's table of them: one row per source ([`Source::row`]).
    pub title: &'static str,
    pub columns: &'static [&'static str],
    /// What the table says without sources.
    pub empty: &'static str,
    /// The health reason when every source of the kind is down: "all {n} " then this.
    pub all_down: &'static str,
    /// The label of the page's fact "up of n", for a kind that has one.
    pub up_fact: Option<&'static str>,
    /// Writes the kind's metric families, one sample per source (each family written even
    /// without sources).
    pub metrics: fn(&mut Exposition, &[&Placed]),
}

/// One configured source of tag values.
pub trait Source: Send + Sync {
    /// Unique among all sources (the config checks it): the source in the heartbeat, the
    /// status, logs and metrics.
    fn name(&self) -> &str;

    /// Its tags in its order: their catalogue entries and the deadband the tag table applies.
    fn tags(&self) -> Vec<Tag>;

    /// Starts the tasks that read the source into `on.table` until they are aborted.
    fn start(&self, on: &On<'_>) -> Vec<JoinHandle<()>>;

    /// Its object in the status JSON, under its kind's [`View::key`].
    fn status(&self, health: &Health) -> Json;

    /// Its row in its kind's table on the status page, one cell per [`View::columns`].
    fn row(&self, health: &Health) -> Json;
}

/// A tag as its source declares it.
pub struct Tag {
    pub info: TagInfo,
    /// Changes within it are not reported (0: every change).
    pub deadband: f64,
}

/// What a source is started on.
pub struct On<'a> {
    pub table: &'a Arc<TagTable>,
    /// Its tags are `first..first + tags().len()` of the table, in its order.
    pub first: TagIndex,
    pub health: &'a Arc<Health>,
    /// With `[history]`.
    pub history: Option<&'a History<'a>>,
}

/// The history stream's hooks for starting sources (`[history]` configured).
pub struct History<'a> {
    hooks: &'a SourceHooks,
    /// The sources that offered their historian in this start.
    serving: RefCell<Vec<String>>,
}

impl History<'_> {
    /// Where samples read from a source's own history go: into the history stream (not the
    /// tag table, whose values are current).
    pub fn tap(&self) -> Arc<HistoryTap> {
        self.hooks.tap.clone()
    }

    /// Offers `source`'s historian for operator backfills of `tags` (names, in the order the
    /// reads number them); the reads arrive on the returned queue.
    pub fn serve_backfills(
        &self,
        source: &str,
        tags: Vec<String>,
    ) -> UnboundedReceiver<HistorianRead> {
        self.serving.borrow_mut().push(source.to_owned());
        self.hooks.historians.register(source, tags)
    }
}

/// A source placed on its range of the tag table, with its health.
pub struct Placed {
    kind: &'static Kind,
    source: Box<dyn Source>,
    /// Its tags are `first..first + len` of the table.
    first: TagIndex,
    pub len: usize,
    pub health: Arc<Health>,
}

impl Placed {
    pub fn name(&self) -> &str {
        self.source.name()
    }

    pub fn status(&self) -> Json {
        self.source.status(&self.health)
    }

    pub fn row(&self) -> Json {
        self.source.row(&self.health)
    }
}

/// The configured sources, each placed on its range of the tag table.
pub struct Sources {
    placed: Vec<Placed>,
}

impl Sources {
    /// Builds every kind's sources from `config`, and the tag table they read into (see the
    /// module doc for its order). A source that was in `previous` (same kind and name) takes
    /// over its health.
    pub fn build(
        config: &TxConfig,
        previous: Option<&Sources>,
    ) -> anyhow::Result<(Sources, TagTable)> {
        let mut placed = Vec::new();
        let mut infos = Vec::new();
        let mut deadbands = Vec::new();
        for &kind in KINDS {
            for source in (kind.build)(config)? {
                let first = infos.len();
                for tag in source.tags() {
                    infos.push(tag.info);
                    deadbands.push(tag.deadband);
                }
                let len = infos.len() - first;
                // The range's end fits a TagIndex, so every index in it does.
                TagIndex::try_from(infos.len())?;
                let first = TagIndex::try_from(first)?;
                let health = previous
                    .and_then(|p| p.find(kind, source.name()))
                    .map(|p| p.health.clone())
                    .unwrap_or_default();
                placed.push(Placed {
                    kind,
                    source,
                    first,
                    len,
                    health,
                });
            }
        }
        Ok((Sources { placed }, TagTable::new(infos, deadbands)))
    }

    fn find(&self, kind: &Kind, name: &str) -> Option<&Placed> {
        self.placed
            .iter()
            .find(|p| p.kind.name == kind.name && p.name() == name)
    }

    /// The source named `name`.
    pub fn get(&self, name: &str) -> Option<&Placed> {
        self.placed.iter().find(|p| p.name() == name)
    }

    /// Every source, in catalogue order.
    pub fn iter(&self) -> impl Iterator<Item = &Placed> {
        self.placed.iter()
    }

    /// The sources of `kind`, in catalogue order.
    pub fn of(&self, kind: &Kind) -> Vec<&Placed> {
        self.placed
            .iter()
            .filter(|p| p.kind.name == kind.name)
            .collect()
    }

    /// Every source's health as the heartbeat reports it.
    pub fn health(&self) -> Vec<SourceHealth> {
        self.placed
            .iter()
            .map(|p| p.health.snapshot(p.name()))
            .collect()
    }

    /// Starts every source on `table` (built with them by [`Sources::build`]). With
    /// `history`, the sources whose historian serves backfills are registered, and those no
    /// longer in the config are removed from the registry.
    pub fn start(&self, table: &Arc<TagTable>, history: Option<&SourceHooks>) -> Running {
        let history = history.map(|hooks| History {
            hooks,
            serving: RefCell::default(),
        });
        let mut tasks = Vec::new();
        for p in &self.placed {
            tasks.extend(p.source.start(&On {
                table,
                first: p.first,
                health: &p.health,
                history: history.as_ref(),
            }));
        }
        if let Some(h) = history {
            let serving = h.serving.into_inner();
            let names: Vec<&str> = serving.iter().map(String::as_str).collect();
            h.hooks.historians.retain(&names);
        }
        Running(tasks)
    }
}

/// The tasks of started sources. Dropping it stops them too.
pub struct Running(Vec<JoinHandle<()>>);

impl Running {
    /// Aborts every task (each stops at its next await; what it holds closes on drop).
    pub fn stop(&mut self) {
        for task in self.0.drain(..) {
            task.abort();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The sources now running, as the heartbeat and the status read them; a live reload
/// replaces them.
#[derive(Clone)]
pub struct Current(Arc<RwLock<Arc<Sources>>>);

impl Current {
    pub fn new(sources: Arc<Sources>) -> Current {
        Current(Arc::new(RwLock::new(sources)))
    }

    pub fn get(&self) -> Arc<Sources> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set(&self, sources: Arc<Sources>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = sources;
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// Devices `(name, tags)` in this order, each tag a u16 holding register.
    fn config(devices: &[(&str, usize)]) -> TxConfig {
        let mut s = String::from("[link]\ninsecure_no_key = true\ndestination = \"127.0.0.1:9\"\n");
        for (name, tags) in devices {
            s.push_str(&format!(
                "[[modbus]]\nname = \"{name}\"\nhost = \"127.0.0.1\"\n"
            ));
            for i in 0..*tags {
                s.push_str(&format!(
                    "[[modbus.tag]]\nname = \"{name}/t{i}\"\ntable = \"holding\"\naddress = {i}\ntype = \"u16\"\n"
                ));
            }
        }
        TxConfig::parse(&s, Path::new("test.toml")).expect("test config")
    }

    #[test]
    fn each_source_gets_its_range_in_catalogue_order_and_keeps_its_health_by_name() {
        let (sources, table) = Sources::build(&config(&[("a", 2), ("b", 3)]), None).unwrap();
        let ranges: Vec<(&str, TagIndex, usize)> =
            sources.iter().map(|p| (p.name(), p.first, p.len)).collect();
        assert_eq!(ranges, [("a", 0, 2), ("b", 2, 3)]);
        let names: Vec<&str> = table.infos().iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["a/t0", "a/t1", "b/t0", "b/t1", "b/t2"]);

        // A reload that drops `a` and adds `c`: `b` moves to the front with its health.
        let (again, _) = Sources::build(&config(&[("b", 3), ("c", 1)]), Some(&sources)).unwrap();
        let b = |s: &Sources| s.get("b").expect("b").health.clone();
        assert!(Arc::ptr_eq(&b(&sources), &b(&again)));
        assert_eq!(again.get("b").map(|p| p.first), Some(0));
        let fresh = again.get("c").expect("c");
        assert!(
            !sources
                .iter()
                .any(|p| Arc::ptr_eq(&p.health, &fresh.health))
        );
    }
}
