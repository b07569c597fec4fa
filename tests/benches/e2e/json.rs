//! The bench's JSON report, written by hand.

use std::fmt::Write as _;

/// A JSON object written by hand (the workspace has no JSON dependency to spare).
#[derive(Default)]
pub(crate) struct Obj(Vec<(String, String)>);

impl Obj {
    pub(crate) fn raw(&mut self, k: &str, v: String) {
        self.0.push((k.to_string(), v));
    }
    pub(crate) fn num(&mut self, k: &str, v: f64) {
        self.raw(
            k,
            if v.is_finite() {
                format!("{v}")
            } else {
                "null".into()
            },
        );
    }
    pub(crate) fn int(&mut self, k: &str, v: u64) {
        self.raw(k, v.to_string());
    }
    pub(crate) fn bool(&mut self, k: &str, v: bool) {
        self.raw(k, v.to_string());
    }
    pub(crate) fn str(&mut self, k: &str, v: &str) {
        self.raw(k, quote(v));
    }
    pub(crate) fn obj(&mut self, k: &str, v: Obj) {
        self.raw(k, v.render(1));
    }
    pub(crate) fn arr(&mut self, k: &str, v: Vec<Obj>) {
        let items: Vec<String> = v.iter().map(|o| o.render(2)).collect();
        self.raw(k, format!("[\n    {}\n  ]", items.join(",\n    ")));
    }
    pub(crate) fn render(&self, depth: usize) -> String {
        if depth >= 2 {
            let fields: Vec<String> = self
                .0
                .iter()
                .map(|(k, v)| format!("{}: {v}", quote(k)))
                .collect();
            return format!("{{{}}}", fields.join(", "));
        }
        let pad = "  ".repeat(depth + 1);
        let fields: Vec<String> = self
            .0
            .iter()
            .map(|(k, v)| format!("{pad}{}: {v}", quote(k)))
            .collect();
        format!("{{\n{}\n{}}}", fields.join(",\n"), "  ".repeat(depth))
    }
}

pub(crate) fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
