//! Walking a parsed TOML document by hand, so that every problem is reported with its span and
//! dotted key, and so that one pass collects all of them (serde stops at the first).

use std::ops::{Range, RangeInclusive};
use std::path::Path;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::error::{ConfigError, Diagnostic};

pub(crate) type Span = Range<usize>;

/// A value read from the file, with where it was.
#[derive(Debug, Clone)]
pub(crate) struct At<T> {
    pub val: T,
    pub span: Span,
    pub key: String,
}

/// Collects diagnostics and turns byte offsets into lines and columns.
pub(crate) struct Ctx<'s> {
    src: &'s str,
    file: &'s Path,
    line_starts: Vec<usize>,
    diags: Vec<Diagnostic>,
}

impl<'s> Ctx<'s> {
    pub fn new(src: &'s str, file: &'s Path) -> Self {
        let line_starts = std::iter::once(0)
            .chain(src.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Ctx {
            src,
            file,
            line_starts,
            diags: Vec::new(),
        }
    }

    pub fn file(&self) -> &'s Path {
        self.file
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.src.len());
        let line = self.line_starts.partition_point(|&s| s <= offset).max(1);
        let start = self.line_starts[line - 1];
        // A span may in theory end inside a multi-byte character; count bytes then.
        let column = match self.src.get(start..offset) {
            Some(s) => s.chars().count() + 1,
            None => offset - start + 1,
        };
        (line, column)
    }

    pub fn line(&self, offset: usize) -> usize {
        self.line_col(offset).0
    }

    pub fn error(&mut self, offset: usize, key: impl Into<String>, message: impl Into<String>) {
        let (line, column) = self.line_col(offset);
        self.diags.push(Diagnostic {
            file: self.file.to_path_buf(),
            line,
            column,
            key: key.into(),
            message: message.into(),
        });
    }

    /// The value if no problem was reported, else every problem in file order.
    pub fn finish<T>(mut self, value: Option<T>) -> Result<T, ConfigError> {
        if let (Some(v), true) = (value, self.diags.is_empty()) {
            return Ok(v);
        }
        if self.diags.is_empty() {
            // A walker returned nothing without saying why: a bug here, but the user still
            // deserves a located answer rather than a panic.
            self.error(
                0,
                "",
                "internal error: the config was rejected without a reason; please report this",
            );
        }
        // Stable, so that several problems at one place keep the order they were found in.
        self.diags.sort_by_key(|d| (d.line, d.column));
        self.diags.dedup();
        Err(ConfigError::Invalid {
            diagnostics: self.diags,
        })
    }

    /// Parses the TOML syntax; on failure reports the syntax errors and returns `None`.
    pub fn parse_document<'i>(&mut self, src: &'i str) -> Option<DeTable<'i>> {
        let (doc, errors) = DeTable::parse_recoverable(src);
        if errors.is_empty() {
            return Some(doc.into_inner());
        }
        let mut candidates = Vec::new();
        collect_key_starts(doc.get_ref(), "", &mut candidates);
        // Recovery after the first syntax error often invents follow-on errors that only
        // confuse; the first one is always real.
        if let Some(e) = errors.first() {
            let offset = e.span().map_or(0, |s| s.start);
            let key = self.key_at(&candidates, offset);
            let msg = e.message().trim_end();
            let hint = if msg.contains("duplicate key") {
                "each key may be set only once per table; for several devices or tags use \
                 [[modbus]] / [[modbus.tag]] (double brackets)"
                    .to_owned()
            } else if let Some(text) = self.unquoted_text_at(offset) {
                format!(
                    "if `{text}` is meant as text (an address, a name), put it in double \
                     quotes: \"{text}\""
                )
            } else {
                "see https://toml.io/en/v1.0.0 for the syntax".to_owned()
            };
            self.error(offset, key, format!("invalid TOML: {msg}; {hint}"));
        }
        None
    }

    /// The value on the line of `offset` when it looks like text the user forgot to quote,
    /// the commonest syntax error in a config (`destination = 192.0.2.1:5600`).
    fn unquoted_text_at(&self, offset: usize) -> Option<String> {
        let line = self.line(offset);
        let text = self.src[self.line_starts[line - 1]..].lines().next()?;
        let (_, value) = text.split_once('=')?;
        let value = value.split(" #").next()?.trim();
        let structured = value.starts_with(['"', '\'', '[', '{']);
        let literal = value.parse::<f64>().is_ok() || value == "true" || value == "false";
        (!value.is_empty() && !structured && !literal).then(|| value.to_owned())
    }

    /// Best guess at the dotted key a syntax error at `offset` belongs to.
    fn key_at(&self, candidates: &[KeyStart], offset: usize) -> String {
        let err_line = self.line(offset);
        let best = candidates
            .iter()
            .filter(|c| c.start <= offset)
            .max_by_key(|c| c.start);
        let mut table = String::new();
        if let Some(c) = best {
            if !c.is_key {
                table = c.path.clone();
            } else if self.line(c.start) == err_line {
                return c.path.clone();
            } else {
                table = c.parent.clone();
            }
        }
        // The recovered tree may lack the broken entry; read its key from the line itself.
        let line_text = self.src[self.line_starts[err_line - 1]..]
            .lines()
            .next()
            .unwrap_or("");
        if let Some((k, _)) = line_text.split_once('=') {
            let k = k.trim();
            if !k.is_empty()
                && k.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-.\"".contains(c))
            {
                return join(&table, &k.replace('"', ""));
            }
        }
        table
    }
}

struct KeyStart {
    start: usize,
    path: String,
    parent: String,
    /// A `key = value` line, rather than a `[table]` header.
    is_key: bool,
}

fn collect_key_starts(t: &DeTable<'_>, path: &str, out: &mut Vec<KeyStart>) {
    for (k, v) in t.iter() {
        let kp = join(path, k.get_ref());
        // A header (`[a]`, `[[a]]`) starts before its key; `a = ...` and dotted keys do not.
        let from_header = v.span().start < k.span().start;
        match v.get_ref() {
            DeValue::Array(items) if from_header => {
                for (i, item) in items.iter().enumerate() {
                    let ip = format!("{kp}[{i}]");
                    out.push(KeyStart {
                        start: item.span().start,
                        path: ip.clone(),
                        parent: path.to_owned(),
                        is_key: false,
                    });
                    if let DeValue::Table(sub) = item.get_ref() {
                        collect_key_starts(sub, &ip, out);
                    }
                }
            }
            other => {
                out.push(KeyStart {
                    start: if from_header {
                        v.span().start
                    } else {
                        k.span().start
                    },
                    path: kp.clone(),
                    parent: path.to_owned(),
                    is_key: !from_header,
                });
                if let DeValue::Table(sub) = other {
                    collect_key_starts(sub, &kp, out);
                }
            }
        }
    }
}

pub(crate) fn join(path: &str, key: &str) -> String {
    // Keys that are not bare TOML keys are quoted, as the user would have to write them.
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    let key = if bare {
        key.to_owned()
    } else {
        format!("{key:?}")
    };
    if path.is_empty() {
        key
    } else {
        format!("{path}.{key}")
    }
}

/// `modbus[1].tag` -> `modbus.tag`: how a table is named in a header.
fn header_name(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    let mut depth = 0;
    for c in key.chars() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

/// Whether a key must be present.
#[derive(Clone, Copy)]
pub(crate) enum Req {
    Optional,
    /// Required; the text says what a valid value looks like.
    Required(&'static str),
}

/// A table of the document (or an absent optional one, which reads as empty).
#[derive(Clone)]
pub(crate) struct Tbl<'a, 'i> {
    /// Dotted key path of the table; empty for the document itself.
    pub path: String,
    /// How the user writes the table, for messages: `[link]`, `[[modbus]]`.
    pub label: String,
    pub span: Span,
    map: Option<&'a DeTable<'i>>,
}

impl<'a, 'i> Tbl<'a, 'i> {
    pub fn root(doc: &'a DeTable<'i>) -> Self {
        Tbl {
            path: String::new(),
            label: "the top level".to_owned(),
            span: 0..0,
            map: Some(doc),
        }
    }

    /// An absent table: every key reads as missing, errors point at `span`.
    pub fn empty(path: String, label: String, span: Span) -> Self {
        Tbl {
            path,
            label,
            span,
            map: None,
        }
    }

    pub fn key(&self, k: &str) -> String {
        join(&self.path, k)
    }

    fn get(&self, k: &str) -> Option<&'a Spanned<DeValue<'i>>> {
        self.map?.get(k)
    }

    pub fn has(&self, k: &str) -> bool {
        self.get(k).is_some()
    }

    /// Where a key's value is, or else where the table is: for problems that involve a default.
    pub fn offset_of(&self, k: &str) -> usize {
        self.get(k).map_or(self.span.start, |v| v.span().start)
    }

    /// Reports every key not in `allowed`.
    pub fn check_keys(&self, ctx: &mut Ctx<'_>, allowed: &[&str]) {
        let Some(map) = self.map else { return };
        for (k, _) in map.iter() {
            let name = k.get_ref().as_ref();
            if allowed.contains(&name) {
                continue;
            }
            let suggestion = did_you_mean(name, allowed)
                .map(|s| format!(" (did you mean `{s}`?)"))
                .unwrap_or_default();
            let valid = allowed
                .iter()
                .map(|a| format!("`{a}`"))
                .collect::<Vec<_>>()
                .join(", ");
            ctx.error(
                k.span().start,
                self.key(name),
                format!(
                    "unknown key `{name}`{suggestion}; valid keys in {} are: {valid}",
                    self.label
                ),
            );
        }
    }

    /// The value under `k`, reporting it if it is required and missing.
    fn value(
        &self,
        ctx: &mut Ctx<'_>,
        k: &str,
        req: Req,
    ) -> Option<(String, &'a Spanned<DeValue<'i>>)> {
        match (self.get(k), req) {
            (Some(v), _) => Some((self.key(k), v)),
            (None, Req::Optional) => None,
            (None, Req::Required(hint)) => {
                ctx.error(
                    self.span.start,
                    self.key(k),
                    format!("missing required key `{k}` in {}; {hint}", self.label),
                );
                None
            }
        }
    }

    /// A sub-table `[path.k]`; `None` when absent (reported if required) or not a table.
    pub fn table(&self, ctx: &mut Ctx<'_>, k: &str, req: Req) -> Option<Tbl<'a, 'i>> {
        let (key, v) = self.value(ctx, k, req)?;
        match v.get_ref() {
            DeValue::Table(t) => Some(Tbl {
                label: format!("[{}]", header_name(&key)),
                path: key,
                span: v.span(),
                map: Some(t),
            }),
            other => {
                ctx.error(
                    v.span().start,
                    &key,
                    format!(
                        "expected a table, found {}; write it as a [{}] section",
                        describe(other),
                        header_name(&key)
                    ),
                );
                None
            }
        }
    }

    /// The tables of `[[path.k]]`; empty when absent or malformed (reported).
    pub fn array_of_tables(&self, ctx: &mut Ctx<'_>, k: &str) -> Vec<Tbl<'a, 'i>> {
        let Some((key, v)) = self.value(ctx, k, Req::Optional) else {
            return Vec::new();
        };
        let header = header_name(&key);
        let DeValue::Array(items) = v.get_ref() else {
            let found = describe(v.get_ref());
            ctx.error(
                v.span().start,
                &key,
                format!(
                    "expected an array of tables, found {found}; write each entry as a \
                     [[{header}]] section (double brackets)"
                ),
            );
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let ip = format!("{key}[{i}]");
            match item.get_ref() {
                DeValue::Table(t) => out.push(Tbl {
                    path: ip,
                    label: format!("[[{header}]]"),
                    span: item.span(),
                    map: Some(t),
                }),
                other => ctx.error(
                    item.span().start,
                    ip,
                    format!(
                        "expected a table, found {}; write each entry as a [[{header}]] section",
                        describe(other)
                    ),
                ),
            }
        }
        out
    }

    /// The entries of an inline table of integers, e.g. `unit_map = { plc1 = 5 }`.
    pub fn int_map(
        &self,
        ctx: &mut Ctx<'_>,
        k: &str,
        range: RangeInclusive<i64>,
    ) -> Option<Vec<(At<String>, At<i64>)>> {
        let (key, v) = self.value(ctx, k, Req::Optional)?;
        let DeValue::Table(t) = v.get_ref() else {
            let found = describe(v.get_ref());
            ctx.error(
                v.span().start,
                &key,
                format!("expected a table, found {found}; write it like {k} = {{ plc1 = 5 }}"),
            );
            return None;
        };
        let mut out = Vec::new();
        for (name, val) in t.iter() {
            let ek = join(&key, name.get_ref());
            if let Some(n) = int_value(ctx, &ek, val, &range, "") {
                out.push((
                    At {
                        val: name.get_ref().to_string(),
                        span: name.span(),
                        key: ek.clone(),
                    },
                    At {
                        val: n,
                        span: val.span(),
                        key: ek,
                    },
                ));
            }
        }
        Some(out)
    }

    /// An array of strings (a lone string reads as an array of one); each item keeps its own
    /// span and key (`k[i]`), so a message can point at the one that is wrong.
    pub fn strings(&self, ctx: &mut Ctx<'_>, k: &str, req: Req) -> Option<Vec<At<String>>> {
        let (key, v) = self.value(ctx, k, req)?;
        match v.get_ref() {
            DeValue::String(s) => Some(vec![At {
                val: s.to_string(),
                span: v.span(),
                key,
            }]),
            DeValue::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                let mut ok = true;
                for (i, item) in items.iter().enumerate() {
                    let ik = format!("{key}[{i}]");
                    match item.get_ref() {
                        DeValue::String(s) => out.push(At {
                            val: s.to_string(),
                            span: item.span(),
                            key: ik,
                        }),
                        other => {
                            ok = false;
                            ctx.error(
                                item.span().start,
                                ik,
                                format!(
                                    "found {} where a string is needed; write each item in \
                                     double quotes, like [\"a\", \"b\"]",
                                    describe(other)
                                ),
                            );
                        }
                    }
                }
                ok.then_some(out)
            }
            other => {
                let found = describe(other);
                ctx.error(
                    v.span().start,
                    key,
                    format!(
                        "found {found} where an array of strings is needed; write it like \
                         [\"a\", \"b\"]"
                    ),
                );
                None
            }
        }
    }

    pub fn string(&self, ctx: &mut Ctx<'_>, k: &str, req: Req) -> Option<At<String>> {
        let (key, v) = self.value(ctx, k, req)?;
        match v.get_ref() {
            DeValue::String(s) => Some(At {
                val: s.to_string(),
                span: v.span(),
                key,
            }),
            other => {
                let found = describe(other);
                ctx.error(
                    v.span().start,
                    key,
                    format!(
                        "found {found} where a string is needed; put the value in double quotes"
                    ),
                );
                None
            }
        }
    }

    /// An integer in `range`; `unit` (e.g. "ms") is shown with the range.
    pub fn int(
        &self,
        ctx: &mut Ctx<'_>,
        k: &str,
        req: Req,
        range: RangeInclusive<i64>,
        unit: &str,
    ) -> Option<At<i64>> {
        let (key, v) = self.value(ctx, k, req)?;
        let n = int_value(ctx, &key, v, &range, unit)?;
        Some(At {
            val: n,
            span: v.span(),
            key,
        })
    }

    /// A number (an integer is accepted where a float is expected).
    pub fn float(&self, ctx: &mut Ctx<'_>, k: &str, req: Req) -> Option<At<f64>> {
        let (key, v) = self.value(ctx, k, req)?;
        let n = match v.get_ref() {
            DeValue::Float(f) => f.as_str().parse::<f64>().ok(),
            DeValue::Integer(i) => i128::from_str_radix(i.as_str(), i.radix())
                .ok()
                .map(|n| n as f64),
            other => {
                let found = describe(other);
                let hint = unquoted_hint(other);
                ctx.error(
                    v.span().start,
                    key,
                    format!(
                        "found {found} where a number is needed; write a number such as 1.5{hint}"
                    ),
                );
                return None;
            }
        };
        let Some(n) = n else {
            ctx.error(
                v.span().start,
                key,
                "this number cannot be read; write a decimal number such as 1.5",
            );
            return None;
        };
        Some(At {
            val: n,
            span: v.span(),
            key,
        })
    }

    /// `true` or `false`.
    pub fn boolean(&self, ctx: &mut Ctx<'_>, k: &str, req: Req) -> Option<At<bool>> {
        let (key, v) = self.value(ctx, k, req)?;
        match v.get_ref() {
            DeValue::Boolean(b) => Some(At {
                val: *b,
                span: v.span(),
                key,
            }),
            other => {
                let found = describe(other);
                let hint = match other {
                    DeValue::String(s) if matches!(s.trim(), "true" | "false") => {
                        format!(" (write {} without quotes)", s.trim())
                    }
                    _ => String::new(),
                };
                ctx.error(
                    v.span().start,
                    key,
                    format!("found {found} where true or false is needed{hint}"),
                );
                None
            }
        }
    }

    /// One of a fixed set of strings.
    pub fn choice<T: Copy>(
        &self,
        ctx: &mut Ctx<'_>,
        k: &str,
        req: Req,
        choices: &[(&str, T)],
    ) -> Option<At<T>> {
        self.choice_with_aliases(ctx, k, req, choices, &[])
    }

    /// One of a fixed set of strings; `aliases` maps names used elsewhere (PLC tools, other
    /// gateways) to ours, for the suggestion only: one spelling is accepted.
    pub fn choice_with_aliases<T: Copy>(
        &self,
        ctx: &mut Ctx<'_>,
        k: &str,
        req: Req,
        choices: &[(&str, T)],
        aliases: &[(&str, &str)],
    ) -> Option<At<T>> {
        let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
        let valid = names
            .iter()
            .map(|n| format!("\"{n}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let (key, v) = self.value(ctx, k, req)?;
        let DeValue::String(s) = v.get_ref() else {
            let found = describe(v.get_ref());
            ctx.error(
                v.span().start,
                key,
                format!("found {found} where a string is needed; valid values are {valid}"),
            );
            return None;
        };
        if let Some((_, t)) = choices.iter().find(|(n, _)| *n == s.as_ref()) {
            return Some(At {
                val: *t,
                span: v.span(),
                key,
            });
        }
        let lower = s.to_ascii_lowercase();
        let suggestion = aliases
            .iter()
            .find(|(alias, _)| *alias == lower)
            .map(|(_, ours)| *ours)
            .or_else(|| did_you_mean(&lower, &names))
            .map(|n| format!(" (did you mean \"{n}\"?)"))
            .unwrap_or_default();
        ctx.error(
            v.span().start,
            key,
            format!("unknown value \"{s}\"{suggestion}; valid values are {valid}"),
        );
        None
    }
}

fn int_value(
    ctx: &mut Ctx<'_>,
    key: &str,
    v: &Spanned<DeValue<'_>>,
    range: &RangeInclusive<i64>,
    unit: &str,
) -> Option<i64> {
    let unit = if unit.is_empty() {
        String::new()
    } else {
        format!(" ({unit})")
    };
    let expected = format!(
        "expected an integer from {} to {}{unit}",
        range.start(),
        range.end()
    );
    let n = match v.get_ref() {
        DeValue::Integer(i) => i128::from_str_radix(i.as_str(), i.radix()).ok(),
        DeValue::Float(f) => {
            ctx.error(
                v.span().start,
                key,
                format!("found the float {f} where an integer is needed; {expected}"),
            );
            return None;
        }
        other => {
            let found = describe(other);
            let hint = unquoted_hint(other);
            ctx.error(
                v.span().start,
                key,
                format!("found {found} where an integer is needed; {expected}{hint}"),
            );
            return None;
        }
    };
    match n {
        Some(n) if n >= i128::from(*range.start()) && n <= i128::from(*range.end()) => {
            i64::try_from(n).ok()
        }
        Some(n) => {
            ctx.error(
                v.span().start,
                key,
                format!("{n} is out of range; {expected}"),
            );
            None
        }
        None => {
            ctx.error(
                v.span().start,
                key,
                format!("integer too large; {expected}"),
            );
            None
        }
    }
}

/// `a string "x"`, `an integer 5`...: what the user wrote, for "found ..." messages.
pub(crate) fn describe(v: &DeValue<'_>) -> String {
    match v {
        DeValue::String(s) => format!("a string \"{s}\""),
        DeValue::Integer(i) => format!("the integer {i}"),
        DeValue::Float(f) => format!("the float {f}"),
        DeValue::Boolean(b) => format!("the boolean {b}"),
        DeValue::Datetime(d) => format!("the datetime {d}"),
        DeValue::Array(_) => "an array".to_owned(),
        DeValue::Table(_) => "a table".to_owned(),
    }
}

/// For `mtu = "1500"`: the fix is to drop the quotes.
fn unquoted_hint(v: &DeValue<'_>) -> String {
    match v {
        DeValue::String(s) if s.trim().parse::<f64>().is_ok() => {
            format!(" (write {} without quotes)", s.trim())
        }
        _ => String::new(),
    }
}

/// The closest of `candidates` to a misspelt `word`, if one is close enough to be a typo.
pub(crate) fn did_you_mean<'c>(word: &str, candidates: &[&'c str]) -> Option<&'c str> {
    candidates
        .iter()
        .map(|c| (edit_distance(word, c), *c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 4) && *d < c.len())
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        assert_eq!(did_you_mean("mtuu", &["mtu", "bind"]), Some("mtu"));
        assert_eq!(
            did_you_mean("destinaton", &["destination", "bind"]),
            Some("destination")
        );
        assert_eq!(did_you_mean("zzzz", &["mtu", "bind"]), None);
    }

    #[test]
    fn line_and_column() {
        let src = "a = 1\nbé = 2\n";
        let ctx = Ctx::new(src, Path::new("x.toml"));
        assert_eq!(ctx.line_col(0), (1, 1));
        assert_eq!(ctx.line_col(6), (2, 1));
        assert_eq!(ctx.line_col(9), (2, 3));
        assert_eq!(ctx.line_col(src.len()), (3, 1));
    }
}
