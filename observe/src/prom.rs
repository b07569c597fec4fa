//! The Prometheus text exposition format (version 0.0.4), written directly.
//!
//! Why not the `metrics` crate with `metrics-exporter-prometheus`: every value the daemons
//! expose already lives in a counter snapshot they keep anyway (decoder and encoder stats,
//! state counters, device health), so the exporter would only be fed copies at scrape time.
//! It also installs one process-wide recorder, while the tests and the demo run both daemons
//! in one process, each with its own numbers. Writing the format is a hundred lines and no
//! dependency.

use std::fmt::Write;

/// The content type of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A sample value: integers stay exact (a `u64` counter above 2^53 is not rounded).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Num {
    Int(u64),
    Float(f64),
}

impl From<u64> for Num {
    fn from(v: u64) -> Num {
        Num::Int(v)
    }
}

impl From<usize> for Num {
    fn from(v: usize) -> Num {
        Num::Int(v as u64)
    }
}

impl From<u32> for Num {
    fn from(v: u32) -> Num {
        Num::Int(u64::from(v))
    }
}

impl From<bool> for Num {
    fn from(v: bool) -> Num {
        Num::Int(u64::from(v))
    }
}

impl From<f64> for Num {
    fn from(v: f64) -> Num {
        Num::Float(v)
    }
}

/// Builds one exposition. Each metric family is written with its `# HELP` and `# TYPE` lines
/// followed by its samples, so families are never split.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

impl Exposition {
    pub fn new() -> Exposition {
        Exposition::default()
    }

    /// Starts a family. `kind` is `counter` or `gauge`.
    pub fn family(&mut self, name: &str, kind: &str, help: &str) -> &mut Self {
        let _ = writeln!(self.out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
        self
    }

    /// One sample of the family just started.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Into<Num>) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape_label(v));
            }
            self.out.push('}');
        }
        self.out.push(' ');
        match value.into() {
            Num::Int(v) => {
                let _ = write!(self.out, "{v}");
            }
            Num::Float(v) if v.is_nan() => self.out.push_str("NaN"),
            Num::Float(v) if v == f64::INFINITY => self.out.push_str("+Inf"),
            Num::Float(v) if v == f64::NEG_INFINITY => self.out.push_str("-Inf"),
            Num::Float(v) => {
                let _ = write!(self.out, "{v}");
            }
        }
        self.out.push('\n');
    }

    /// A counter without labels.
    pub fn counter(&mut self, name: &str, help: &str, value: impl Into<Num>) {
        self.family(name, "counter", help).sample(name, &[], value);
    }

    /// A gauge without labels.
    pub fn gauge(&mut self, name: &str, help: &str, value: impl Into<Num>) {
        self.family(name, "gauge", help).sample(name, &[], value);
    }

    /// A family with one label, one sample per `(label value, value)`.
    pub fn labelled<V: Into<Num>>(
        &mut self,
        name: &str,
        kind: &str,
        help: &str,
        label: &str,
        samples: impl IntoIterator<Item = (impl AsRef<str>, V)>,
    ) {
        self.family(name, kind, help);
        for (l, v) in samples {
            self.sample(name, &[(label, l.as_ref())], v);
        }
    }

    pub fn finish(self) -> String {
        self.out
    }
}

/// Label values escape backslash, double quote and line feed.
pub fn escape_label(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

/// The value of one sample in an exposition, for tests: `name{labels}` exactly as written
/// (labels in the order the daemon writes them), or `name` alone.
pub fn find(exposition: &str, series: &str) -> Option<f64> {
    exposition.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?;
        let value = rest.strip_prefix(' ')?;
        match value {
            "NaN" => Some(f64::NAN),
            "+Inf" => Some(f64::INFINITY),
            "-Inf" => Some(f64::NEG_INFINITY),
            v => v.parse().ok(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_samples_and_escaping() {
        let mut e = Exposition::new();
        e.counter("x_total", "Things.\nMore", 18_446_744_073_709_551_615u64);
        e.labelled(
            "y",
            "gauge",
            "Y",
            "device",
            [("a\"b\\c\nd", 1.5), ("plc", f64::NAN)],
        );
        let text = e.finish();
        assert_eq!(
            text,
            "# HELP x_total Things.\\nMore\n# TYPE x_total counter\nx_total 18446744073709551615\n\
             # HELP y Y\n# TYPE y gauge\ny{device=\"a\\\"b\\\\c\\nd\"} 1.5\ny{device=\"plc\"} NaN\n"
        );
        assert_eq!(find(&text, "x_total"), Some(18_446_744_073_709_551_615.0));
        assert_eq!(
            find(&text, "y{device=\"plc\"}").map(f64::is_nan),
            Some(true)
        );
        assert_eq!(
            find(&text, "y"),
            None,
            "a prefix of a series is not the series"
        );
    }
}
