//! Counters declared once. A subsystem writes one [`counters!`](crate::counters) declaration
//! of its counters, each with its doc comment and how operators see it, and gets from it:
//!
//! - the struct of atomics it counts in, and its plain copy with the same field names;
//! - `snapshot()`, which copies the one into the other;
//! - a table of [`Counter`]s, from which [`metrics`] writes the Prometheus families (name,
//!   type, labels, and the HELP text: the first paragraph of the doc comment), [`json()`] the
//!   status JSON object, and [`rows`] the rows of the status page's counter table.
//!
//! Before, a counter was written six times (atomic field, snapshot field, the copy, the
//! Prometheus family, the JSON key, the page's row), in three files, and the two status
//! modules knew every subsystem's fields; a counter added in one place and forgotten in
//! another was a silent hole in what operators see.
//!
//! Why a `macro_rules!` macro building a table, rather than a derive or generated render code:
//! a derive needs a proc-macro crate (syn, quote) for what a declarative macro does in a page;
//! the table is plain data, so the three renderers are written and tested once here, and the
//! macro only assembles fields and descriptors. Why not a metrics registry crate: see
//! [`crate::prom`] (one process-wide recorder, while the tests run both daemons in one process).
//!
//! Counters that are not this crate's to declare (protocol's decoder and encoder stats, plain
//! structs in a crate that must not depend on this one) get a table of the same kind with
//! `counters! { const NAME: Type = Type::FIELDS; ... }`: their HELP texts come from protocol's
//! own doc comments through `FIELDS` unless the entry gives its own.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

pub use serde_json::Value as Json;
use serde_json::{Map, json};

use crate::prom::{Exposition, Num};

/// An atomic counter (or flag) and the plain value it is copied into.
pub trait Load {
    type Value: Copy;
    /// Relaxed: each counter is exact, a snapshot of several is not one instant.
    fn load(&self) -> Self::Value;
}

impl Load for AtomicU64 {
    type Value = u64;
    fn load(&self) -> u64 {
        AtomicU64::load(self, Ordering::Relaxed)
    }
}

impl Load for AtomicBool {
    type Value = bool;
    fn load(&self) -> bool {
        AtomicBool::load(self, Ordering::Relaxed)
    }
}

impl<const N: usize> Load for [AtomicU64; N] {
    type Value = [u64; N];
    fn load(&self) -> [u64; N] {
        std::array::from_fn(|i| self[i].load(Ordering::Relaxed))
    }
}

/// A Prometheus metric type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        }
    }
}

/// A Prometheus family. One counter's own (no label), or shared by several counters told apart
/// by one label (`outcome`, `stream`): declare it once with [`family!`](crate::family).
#[derive(Debug, Clone, Copy)]
pub struct Family {
    pub name: &'static str,
    pub kind: Kind,
    /// The doc comment's lines; HELP is its first paragraph.
    pub doc: &'static [&'static str],
    pub label: Option<&'static str>,
}

/// Where a counter goes in `/metrics`: its family, and its value of the family's label.
#[derive(Debug, Clone, Copy)]
pub struct Metric {
    pub family: Family,
    pub label: Option<&'static str>,
}

/// How to read a counter from a snapshot of type `S`.
pub enum Value<S: 'static> {
    One(fn(&S) -> Num),
    /// One value per label (an array field: per stream, per status code).
    Each(&'static [&'static str], fn(&S, usize) -> Num),
}

/// How a nonzero value is marked on the status page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    Plain,
    Warn,
    Bad,
}

/// A counter's row on the status page.
pub struct Row<S: 'static> {
    pub label: &'static str,
    pub tone: Tone,
    /// What the row shows instead of the value (several counters in one row).
    pub text: Option<fn(&S) -> Json>,
}

/// One counter of a snapshot type `S`, and every way it is shown.
pub struct Counter<S: 'static> {
    /// The field's name.
    pub name: &'static str,
    pub doc: &'static [&'static str],
    pub value: Value<S>,
    pub metric: Option<Metric>,
    /// Its key in the status JSON object, when it is in it.
    pub json: Option<&'static str>,
    pub row: Option<Row<S>>,
}

/// A snapshot type made by [`counters!`](crate::counters), and its renderings.
pub trait Counters: Sized + 'static {
    const COUNTERS: &'static [Counter<Self>];

    fn metrics(&self, e: &mut Exposition) {
        metrics(e, Self::COUNTERS, self);
    }

    fn json(&self) -> Map<String, Json> {
        json(Self::COUNTERS, self)
    }

    fn rows(&self) -> Vec<Json> {
        rows(Self::COUNTERS, self)
    }
}

/// HELP text: the doc comment's first paragraph on one line.
pub fn help(doc: &[&str]) -> String {
    let mut out = String::new();
    for line in doc.iter().map(|l| l.trim()) {
        if line.is_empty() {
            if out.is_empty() {
                continue;
            }
            break;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(line);
    }
    out
}

/// The doc lines of `name` in a plain stats struct's `FIELDS` table (protocol's), at compile
/// time: a name it does not have fails the build.
pub const fn doc_of<S>(
    fields: &'static [protocol::stats::Field<S>],
    name: &str,
) -> &'static [&'static str] {
    let mut i = 0;
    while i < fields.len() {
        if str_eq(fields[i].name, name) {
            return fields[i].doc;
        }
        i += 1;
    }
    panic!("no such field in the stats table");
}

const fn str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// Writes the families of `counters` read from `s`.
pub fn metrics<S>(e: &mut Exposition, counters: &[Counter<S>], s: &S) {
    write(e, "", counters, None, &[("", s)]);
}

/// Like [`metrics`], with `{prefix}_` before every name (a declaration both daemons share).
pub fn metrics_prefixed<S>(e: &mut Exposition, prefix: &str, counters: &[Counter<S>], s: &S) {
    write(e, &format!("{prefix}_"), counters, None, &[("", s)]);
}

/// Writes the families of `counters` for several instances of a subsystem, each sample
/// labelled `label="<instance>"`: each family once, with one sample per instance. Nothing
/// when there is no instance.
pub fn metrics_by<S>(e: &mut Exposition, counters: &[Counter<S>], label: &str, each: &[(&str, S)]) {
    let each: Vec<(&str, &S)> = each.iter().map(|(n, s)| (*n, s)).collect();
    write(e, "", counters, Some(label), &each);
}

fn write<S>(
    e: &mut Exposition,
    prefix: &str,
    counters: &[Counter<S>],
    instance_label: Option<&str>,
    each: &[(&str, &S)],
) {
    if each.is_empty() {
        return;
    }
    // Families in the order their first counter is declared; a family's samples together.
    let mut written: Vec<&str> = Vec::new();
    for (i, first) in counters.iter().enumerate() {
        let Some(m) = &first.metric else { continue };
        let family = m.family;
        if written.contains(&family.name) {
            continue;
        }
        written.push(family.name);
        let name = format!("{prefix}{}", family.name);
        e.family(&name, family.kind.as_str(), &help(family.doc));
        for (instance, s) in each {
            for c in &counters[i..] {
                let Some(m) = &c.metric else { continue };
                if m.family.name != family.name {
                    continue;
                }
                let mut labels: Vec<(&str, &str)> = Vec::with_capacity(2);
                if let Some(l) = instance_label {
                    labels.push((l, instance));
                }
                match &c.value {
                    Value::One(get) => {
                        if let (Some(k), Some(v)) = (family.label, m.label) {
                            labels.push((k, v));
                        }
                        e.sample(&name, &labels, get(s));
                    }
                    Value::Each(names, get) => {
                        let k = family.label.unwrap_or("label");
                        for (j, v) in names.iter().enumerate() {
                            let mut labels = labels.clone();
                            labels.push((k, v));
                            e.sample(&name, &labels, get(s, j));
                        }
                    }
                }
            }
        }
    }
}

fn to_json(n: Num) -> Json {
    match n {
        Num::Int(v) => json!(v),
        Num::Float(v) => json!(v),
    }
}

/// The status JSON object of the counters that have a key.
pub fn json<S>(counters: &[Counter<S>], s: &S) -> Map<String, Json> {
    let mut out = Map::new();
    for c in counters {
        let Some(key) = c.json else { continue };
        let v = match &c.value {
            Value::One(get) => to_json(get(s)),
            Value::Each(names, get) => Json::Object(
                names
                    .iter()
                    .enumerate()
                    .map(|(j, n)| ((*n).to_owned(), to_json(get(s, j))))
                    .collect(),
            ),
        };
        out.insert(key.to_owned(), v);
    }
    out
}

/// The status page's rows (`[label, value]`, the value with a tone when it is marked) of the
/// counters that have one, in declaration order.
pub fn rows<S>(counters: &[Counter<S>], s: &S) -> Vec<Json> {
    let mut out = Vec::new();
    for c in counters {
        let Some(row) = &c.row else { continue };
        let value = match &c.value {
            Value::One(get) => get(s),
            Value::Each(..) => continue,
        };
        let text = row.text.map_or_else(|| to_json(value), |f| f(s));
        let nonzero = match value {
            Num::Int(v) => v != 0,
            Num::Float(v) => v != 0.0,
        };
        let tone = match row.tone {
            Tone::Plain => {
                out.push(json!([row.label, text]));
                continue;
            }
            Tone::Warn if nonzero => "warn",
            Tone::Bad if nonzero => "bad",
            _ => "",
        };
        out.push(json!([row.label, { "text": text, "tone": tone }]));
    }
    out
}

/// Declares a Prometheus [`Family`] several counters share, its HELP the doc comment:
///
/// ```ignore
/// observe::family! {
///     /// Requests to the read-only Modbus mirror, by answer: served, or the exception.
///     pub const REQUESTS = counter "gateway_rx_modbus_requests_total" by "outcome";
/// }
/// ```
#[macro_export]
macro_rules! family {
    ($(#[doc = $doc:literal])* $v:vis const $c:ident = $kind:ident $name:literal by $label:literal;) => {
        $(#[doc = $doc])*
        $v const $c: $crate::metrics::Family = $crate::metrics::Family {
            name: $name,
            kind: $crate::family!(@kind $kind),
            doc: &[$($doc),*],
            label: Some($label),
        };
    };
    (@kind counter) => { $crate::metrics::Kind::Counter };
    (@kind gauge) => { $crate::metrics::Kind::Gauge };
}

/// Declares a subsystem's counters once (see the [module](crate::metrics) documentation).
///
/// ```
/// use std::sync::atomic::{AtomicBool, AtomicU64};
/// use observe::metrics::Counters;
///
/// observe::family! {
///     /// Requests to the mirror, by answer: served, or the exception.
///     pub const REQUESTS = counter "x_requests_total" by "outcome";
/// }
/// observe::family! {
///     /// Answers by status code.
///     pub const RESPONSES = counter "x_responses_total" by "code";
/// }
///
/// observe::counters! {
///     /// Counters of the mirror since it started.
///     #[derive(Debug, Default)]
///     pub struct MirrorCounters;
///     /// A copy of [`MirrorCounters`].
///     #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
///     pub struct MirrorCountersSnapshot;
///
///     /// Read requests answered.
///     reads_served => REQUESTS["served"], row "reads served";
///     /// Write requests refused (also counted as illegal_function).
///     writes_refused => counter("x_writes_refused_total"), json, row "writes refused" bad;
///     illegal_function => REQUESTS["illegal_function"];
///     /// Shown nowhere, kept for tests and logs.
///     accept_errors;
///     /// 1 while connected.
///     connected: AtomicBool => gauge("x_connected");
///     answers: [AtomicU64; 2] => RESPONSES[each &["200", "404"]];
///     /// The log's head.
///     head, json;
///     /// Sent once each.
///     sent, json "sent_total", row "sent" = |s| format!("{} of {}", s.sent, s.head);
///     /// Not sent yet: computed from the others, not a field.
///     let backlog = |s| s.head.saturating_sub(s.sent) => gauge("x_backlog"), row "waiting";
/// }
///
/// let c = MirrorCounters::default();
/// c.writes_refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
/// let s = c.snapshot();
/// assert_eq!(s.writes_refused, 1);
/// let mut e = observe::prom::Exposition::new();
/// s.metrics(&mut e);
/// assert!(e.finish().contains("# HELP x_writes_refused_total Write requests refused"));
/// assert_eq!(s.json()["sent_total"], 0);
/// ```
///
/// Each entry: its doc comment; the field (an `AtomicU64` unless a type is given) or a
/// computed `let`; then, each optional and in this order: `=> counter("name")`,
/// `=> gauge("name")`, `=> FAMILY["label value"]` or `=> FAMILY[each LABELS]` (an array field,
/// one sample per label); `, json` or `, json "key"`; `, row "label"` with `warn` or `bad` (the
/// tone of a nonzero value) or `= |s| text`. A single counter's HELP is its doc comment's first
/// paragraph; a shared family's is the family's.
///
/// With `const NAME: Type = Type::FIELDS;` instead of the two structs, it makes only the table,
/// for a plain struct defined elsewhere (protocol's stats); entries without a doc comment take
/// it from `FIELDS`.
#[macro_export]
macro_rules! counters {
    // Internal: a computed entry.
    (@entries $head:tt [$S:ty] $src:tt $fields:tt [$($table:tt)*]
        $(#[doc = $doc:literal])*
        let $name:ident = |$vs:ident| $ve:expr
        $(=> $mk:ident $marg:tt)?
        $(, json $($jkey:literal)?)?
        $(, row $rl:literal $($tone:ident)? $(= |$rs:ident| $rt:expr)?)?
        ; $($rest:tt)*
    ) => {
        $crate::counters!(@entries $head [$S] $src $fields
            [$($table)* $crate::metrics::Counter::<$S> {
                name: stringify!($name),
                doc: $crate::counters!(@doc [] $name [$($doc)*]),
                value: $crate::metrics::Value::One(|$vs: &$S| $crate::prom::Num::from($ve)),
                metric: $crate::counters!(@metric ($crate::counters!(@doc [] $name [$($doc)*])) $($mk $marg)?),
                json: $crate::counters!(@json $name $(json $($jkey)?)?),
                row: $crate::counters!(@row $S; $(row $rl $($tone)? $(= |$rs| $rt)?)?),
            },]
            $($rest)*);
    };
    // Internal: a field.
    (@entries $head:tt [$S:ty] $src:tt [$($fields:tt)*] [$($table:tt)*]
        $(#[doc = $doc:literal])*
        $name:ident $(: $ty:ty)?
        $(=> $mk:ident $marg:tt)?
        $(, json $($jkey:literal)?)?
        $(, row $rl:literal $($tone:ident)? $(= |$rs:ident| $rt:expr)?)?
        ; $($rest:tt)*
    ) => {
        $crate::counters!(@entries $head [$S] $src
            [$($fields)* { [$($doc)*] $name [$($ty)?] }]
            [$($table)* $crate::metrics::Counter::<$S> {
                name: stringify!($name),
                doc: $crate::counters!(@doc $src $name [$($doc)*]),
                value: $crate::counters!(@value $S, $name $(, $mk $marg)?),
                metric: $crate::counters!(@metric ($crate::counters!(@doc $src $name [$($doc)*])) $($mk $marg)?),
                json: $crate::counters!(@json $name $(json $($jkey)?)?),
                row: $crate::counters!(@row $S; $(row $rl $($tone)? $(= |$rs| $rt)?)?),
            },]
            $($rest)*);
    };
    // Internal: every entry read; the atomic struct, its copy, `snapshot()` and the table.
    (@entries [$(#[$am:meta])* $av:vis struct $A:ident; $(#[$sm:meta])* $sv:vis struct $Snap:ident;]
        [$S:ty] []
        [$({ [$($doc:literal)*] $name:ident [$($ty:ty)?] })*] [$($table:tt)*]
    ) => {
        $(#[$am])*
        $av struct $A {
            $($(#[doc = $doc])* pub $name: $crate::counters!(@atomic $($ty)?),)*
        }

        $(#[$sm])*
        $sv struct $Snap {
            $($(#[doc = $doc])* pub $name: <$crate::counters!(@atomic $($ty)?) as $crate::metrics::Load>::Value,)*
        }

        impl $A {
            /// A copy of every counter (each exact; together not one instant).
            pub fn snapshot(&self) -> $Snap {
                $Snap { $($name: $crate::metrics::Load::load(&self.$name),)* }
            }
        }

        impl $crate::metrics::Counters for $Snap {
            const COUNTERS: &'static [$crate::metrics::Counter<Self>] = &[$($table)*];
        }
    };
    // Internal: every entry read; the table of a struct defined elsewhere.
    (@entries [$(#[$cm:meta])* $cv:vis const $C:ident;] [$S:ty] [$src:expr] $fields:tt [$($table:tt)*]) => {
        $(#[$cm])*
        $cv const $C: &[$crate::metrics::Counter<$S>] = &[$($table)*];
    };
    (@atomic) => { ::std::sync::atomic::AtomicU64 };
    (@atomic $t:ty) => { $t };
    (@doc [] $name:ident [$($d:literal)*]) => { &[$($d),*] };
    (@doc [$src:expr] $name:ident []) => { $crate::metrics::doc_of($src, stringify!($name)) };
    (@doc [$src:expr] $name:ident [$($d:literal)+]) => { &[$($d),+] };
    (@value $S:ty, $name:ident, $fam:ident [each $labels:expr]) => {
        $crate::metrics::Value::Each($labels, |s: &$S, i: usize| {
            s.$name.get(i).copied().map_or($crate::prom::Num::Int(0), $crate::prom::Num::from)
        })
    };
    (@value $S:ty, $name:ident $(, $mk:ident $marg:tt)?) => {
        $crate::metrics::Value::One(|s: &$S| $crate::prom::Num::from(s.$name))
    };
    (@metric ($doc:expr)) => { None };
    (@metric ($doc:expr) counter ($n:literal)) => {
        Some($crate::metrics::Metric {
            family: $crate::metrics::Family { name: $n, kind: $crate::metrics::Kind::Counter, doc: $doc, label: None },
            label: None,
        })
    };
    (@metric ($doc:expr) gauge ($n:literal)) => {
        Some($crate::metrics::Metric {
            family: $crate::metrics::Family { name: $n, kind: $crate::metrics::Kind::Gauge, doc: $doc, label: None },
            label: None,
        })
    };
    (@metric ($doc:expr) $fam:ident [each $labels:expr]) => {
        Some($crate::metrics::Metric { family: $fam, label: None })
    };
    (@metric ($doc:expr) $fam:ident [$lv:literal]) => {
        Some($crate::metrics::Metric { family: $fam, label: Some($lv) })
    };
    (@json $name:ident) => { None };
    (@json $name:ident json) => { Some(stringify!($name)) };
    (@json $name:ident json $key:literal) => { Some($key) };
    (@row $S:ty;) => { None };
    (@row $S:ty; row $l:literal) => {
        Some($crate::metrics::Row { label: $l, tone: $crate::metrics::Tone::Plain, text: None })
    };
    (@row $S:ty; row $l:literal warn) => {
        Some($crate::metrics::Row { label: $l, tone: $crate::metrics::Tone::Warn, text: None })
    };
    (@row $S:ty; row $l:literal bad) => {
        Some($crate::metrics::Row { label: $l, tone: $crate::metrics::Tone::Bad, text: None })
    };
    (@row $S:ty; row $l:literal = |$s:ident| $e:expr) => {
        Some($crate::metrics::Row {
            label: $l,
            tone: $crate::metrics::Tone::Plain,
            text: Some(|$s: &$S| $crate::metrics::Json::from($e)),
        })
    };
    // A set of atomic counters.
    (
        $(#[$am:meta])* $av:vis struct $A:ident;
        $(#[$sm:meta])* $sv:vis struct $Snap:ident;
        $($body:tt)*
    ) => {
        $crate::counters!(@entries [$(#[$am])* $av struct $A; $(#[$sm])* $sv struct $Snap;]
            [$Snap] [] [] [] $($body)*);
    };
    // The table of a plain struct defined elsewhere.
    (
        $(#[$cm:meta])* $cv:vis const $C:ident: $S:ty = $src:expr;
        $($body:tt)*
    ) => {
        $crate::counters!(@entries [$(#[$cm])* $cv const $C;] [$S] [$src] [] [] $($body)*);
    };
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    use serde_json::json;

    use super::{Counters, metrics_by, metrics_prefixed};
    use crate::prom::Exposition;

    crate::family! {
        /// Things by outcome.
        const THINGS = counter "x_things_total" by "outcome";
    }
    crate::family! {
        /// Frames by stream.
        const FRAMES = counter "x_frames_total" by "stream";
    }

    crate::counters! {
        /// Test counters.
        #[derive(Debug, Default)]
        struct Test;
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        struct TestSnapshot;

        /// Things done.
        done => THINGS["done"], json, row "done";
        /// Errors: each one a bug.
        ///
        /// Not part of HELP.
        errors => counter("x_errors_total"), json "error_count", row "errors" bad;
        /// Things that failed.
        failed => THINGS["failed"], row "failed" warn;
        /// Whether it runs.
        up: AtomicBool => gauge("x_up");
        frames: [AtomicU64; 2] => FRAMES[each &["live", "history"]], json;
        /// Done and failed.
        let all = |s| s.done + s.failed => gauge("x_all"), json, row "all" = |s| format!("{} + {}", s.done, s.failed);
        hidden;
    }

    fn sample() -> TestSnapshot {
        let t = Test::default();
        t.done.store(3, Ordering::Relaxed);
        t.errors.store(0, Ordering::Relaxed);
        t.failed.store(2, Ordering::Relaxed);
        t.up.store(true, Ordering::Relaxed);
        t.frames[1].store(9, Ordering::Relaxed);
        t.hidden.store(5, Ordering::Relaxed);
        t.snapshot()
    }

    #[test]
    fn families_are_written_once_in_declaration_order_with_help_from_the_doc() {
        let mut e = Exposition::new();
        sample().metrics(&mut e);
        assert_eq!(
            e.finish(),
            "# HELP x_things_total Things by outcome.\n# TYPE x_things_total counter\n\
             x_things_total{outcome=\"done\"} 3\nx_things_total{outcome=\"failed\"} 2\n\
             # HELP x_errors_total Errors: each one a bug.\n# TYPE x_errors_total counter\n\
             x_errors_total 0\n\
             # HELP x_up Whether it runs.\n# TYPE x_up gauge\nx_up 1\n\
             # HELP x_frames_total Frames by stream.\n# TYPE x_frames_total counter\n\
             x_frames_total{stream=\"live\"} 0\nx_frames_total{stream=\"history\"} 9\n\
             # HELP x_all Done and failed.\n# TYPE x_all gauge\nx_all 5\n"
        );
    }

    #[test]
    fn instances_share_each_family_and_a_prefix_goes_before_every_name() {
        let mut e = Exposition::new();
        let mut b = sample();
        b.done = 7;
        metrics_by(
            &mut e,
            TestSnapshot::COUNTERS,
            "sink",
            &[("a", sample()), ("b", b)],
        );
        let text = e.finish();
        assert_eq!(text.matches("# TYPE x_things_total").count(), 1);
        assert!(text.contains(
            "x_things_total{sink=\"a\",outcome=\"done\"} 3\nx_things_total{sink=\"a\",outcome=\"failed\"} 2\n\
             x_things_total{sink=\"b\",outcome=\"done\"} 7\n"
        ));
        let mut e = Exposition::new();
        metrics_by(&mut e, TestSnapshot::COUNTERS, "sink", &[]);
        assert_eq!(e.finish(), "", "no instance, no family");

        let mut e = Exposition::new();
        metrics_prefixed(&mut e, "gw", TestSnapshot::COUNTERS, &sample());
        assert!(e.finish().contains("# TYPE gw_x_up gauge\ngw_x_up 1\n"));
    }

    #[test]
    fn json_and_rows() {
        let s = sample();
        assert_eq!(
            serde_json::Value::Object(s.json()),
            json!({ "done": 3, "error_count": 0, "frames": { "live": 0, "history": 9 }, "all": 5 })
        );
        assert_eq!(
            s.rows(),
            vec![
                json!(["done", 3]),
                json!(["errors", { "text": 0, "tone": "" }]),
                json!(["failed", { "text": 2, "tone": "warn" }]),
                json!(["all", "3 + 2"]),
            ]
        );
    }

    #[test]
    fn help_is_the_first_paragraph_on_one_line() {
        assert_eq!(super::help(&[" One", " two.", "", " Three."]), "One two.");
        assert_eq!(super::help(&["", " One."]), "One.");
    }
}
