//! The status page: one HTML document with its CSS and script inline (no external assets),
//! rendered on the server from the status JSON so that it reads without JavaScript, then kept
//! current by the script, which fetches `/api/status` once a second and draws the charts as
//! SVG.
//!
//! The status JSON's presentation part, `view`, is the same for both daemons:
//!
//! ```json
//! { "health": { "status": "ok" | "unhealthy", "reasons": ["..."] },
//!   "view": {
//!     "title": "gateway-rx", "subtitle": "...",
//!     "facts":  [ { "label": "Link", "value": "up", "tone": "good" } ],
//!     "charts": [ { "title": "...", "unit": "/s", "series": [ { "key": "k", "label": "...", "color": "#1d8348" } ] } ],
//!     "tables": [ { "title": "...", "columns": ["..."], "rows": [[ "text", 12, { "text": "x", "tone": "bad" } ]],
//!                   "empty": "...", "wide": false } ] },
//!   "history": { "t": [unix ms], "series": { "k": [numbers] } },
//!   "tags": { "total": 3, "matched": 3, "rows": [ { "name", "value", "unit", "quality", "tone", "age_ms", "source", "description" } ] } }
//! ```
//!
//! Tones are `good`, `warn`, `bad` or `muted`; anything else is ignored.
//!
//! XSS: every string from the catalogue, the config, a device or a client is escaped here
//! ([`escape`]) and set with `textContent` by the script; the Content-Security-Policy allows
//! only this exact script and style (by hash), so even a missed escape could not run code.

use std::fmt::Write;

use serde_json::Value;

use crate::http::Query;

const CSS: &str = include_str!("assets/page.css");
const JS: &str = include_str!("assets/page.js");

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + s.len() / 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The page's Content-Security-Policy: nothing but its own inline script and style (by their
/// SHA-256), and fetches to its own origin.
pub fn content_security_policy() -> String {
    format!(
        "default-src 'none'; script-src 'sha256-{}'; style-src 'sha256-{}'; connect-src 'self'; \
         img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        sha256_base64(JS),
        sha256_base64(CSS)
    )
}

fn sha256_base64(s: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, s.as_bytes());
    base64(digest.as_ref())
}

fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(A[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

fn arr<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice)
}

fn tone_class(tone: &str) -> &'static str {
    match tone {
        "good" => "t-good",
        "warn" => "t-warn",
        "bad" => "t-bad",
        "muted" => "t-muted",
        _ => "",
    }
}

/// Text of a JSON scalar as the page shows it.
fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => other.to_string(),
    }
}

/// Formats an age in milliseconds like the script does.
pub fn age_text(ms: Option<f64>) -> String {
    match ms {
        Some(ms) if ms >= 0.0 => {
            let s = ms / 1000.0;
            if s < 10.0 {
                format!("{s:.1} s")
            } else if s < 120.0 {
                format!("{} s", s.round())
            } else if s < 7200.0 {
                format!("{} min", (s / 60.0).round())
            } else if s < 172_800.0 {
                format!("{} h", (s / 3600.0).round())
            } else {
                format!("{} d", (s / 86400.0).round())
            }
        }
        _ => "\u{2013}".into(),
    }
}

/// The whole page for a status (see the module doc), with `query`'s filter in the search box.
pub fn render(status: &Value, query: &Query) -> String {
    let view = status.get("view").unwrap_or(&Value::Null);
    let title = str_of(view, "title");
    let mut h = String::with_capacity(32 * 1024);
    let _ = write!(
        h,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} status</title><style>{CSS}</style></head><body>\n",
        escape(title)
    );

    let health = status.get("health").unwrap_or(&Value::Null);
    let ok = str_of(health, "status") == "ok";
    let reasons: Vec<String> = arr(health, "reasons").iter().map(scalar_text).collect();
    let health_text = if ok {
        "healthy".to_owned()
    } else {
        format!("unhealthy: {}", reasons.join("; "))
    };
    let _ = write!(
        h,
        "<header><h1>{}</h1><span class=\"sub\">{}</span>\
         <span id=\"health\" class=\"badge {}\">{}</span>\
         <span id=\"updated\">read-only status page</span></header>\n<main>\n",
        escape(title),
        escape(str_of(view, "subtitle")),
        if ok { "t-good" } else { "t-bad" },
        escape(&health_text)
    );

    h.push_str("<section id=\"facts\" class=\"facts\">");
    for f in arr(view, "facts") {
        let _ = write!(
            h,
            "<div class=\"fact {}\"><div class=\"label\">{}</div><div class=\"value\">{}</div></div>",
            tone_class(str_of(f, "tone")),
            escape(str_of(f, "label")),
            escape(&scalar_text(f.get("value").unwrap_or(&Value::Null)))
        );
    }
    h.push_str("</section>\n<section id=\"charts\" class=\"charts\">");
    for c in arr(view, "charts") {
        let _ = write!(
            h,
            "<figure class=\"card\"><figcaption><span>{}</span><span class=\"now\"></span>\
             </figcaption><div class=\"muted\">chart drawn by the page's script</div></figure>",
            escape(str_of(c, "title"))
        );
    }
    h.push_str("</section>\n<section id=\"tables\" class=\"tables\">");
    for t in arr(view, "tables") {
        render_table(&mut h, t);
    }
    h.push_str("</section>\n");
    render_tags(
        &mut h,
        status.get("tags").unwrap_or(&Value::Null),
        &query.tags,
    );
    h.push_str(
        "</main>\n<footer>Read-only: this page and its API only read (GET); nothing here \
         can change the gateway. Refreshed every second. \
         <a href=\"/metrics\">/metrics</a> · <a href=\"/health\">/health</a> · \
         <a href=\"/api/status\">/api/status</a></footer>\n",
    );
    let _ = write!(h, "<script>{JS}</script>\n</body></html>\n");
    h
}

fn render_cell(h: &mut String, c: &Value, extra_class: &str) {
    let (text, tone) = match c {
        Value::Object(_) => (
            scalar_text(c.get("text").unwrap_or(&Value::Null)),
            str_of(c, "tone"),
        ),
        other => (scalar_text(other), ""),
    };
    let mut class = String::from(extra_class);
    for extra in [tone_class(tone), if c.is_number() { "num" } else { "" }] {
        if !extra.is_empty() {
            if !class.is_empty() {
                class.push(' ');
            }
            class.push_str(extra);
        }
    }
    if class.is_empty() {
        let _ = write!(h, "<td>{}</td>", escape(&text));
    } else {
        let _ = write!(h, "<td class=\"{class}\">{}</td>", escape(&text));
    }
}

fn render_table(h: &mut String, t: &Value) {
    let wide = t.get("wide").and_then(Value::as_bool).unwrap_or(false);
    let _ = write!(
        h,
        "<div class=\"{}\"><h2>{}</h2>",
        if wide { "card wide" } else { "card" },
        escape(str_of(t, "title"))
    );
    let rows = arr(t, "rows");
    if rows.is_empty() {
        let empty = match str_of(t, "empty") {
            "" => "none",
            e => e,
        };
        let _ = write!(h, "<div class=\"muted\">{}</div></div>", escape(empty));
        return;
    }
    h.push_str("<table><thead><tr>");
    for c in arr(t, "columns") {
        let _ = write!(h, "<th>{}</th>", escape(&scalar_text(c)));
    }
    h.push_str("</tr></thead><tbody>");
    for r in rows {
        h.push_str("<tr>");
        for c in r.as_array().map_or(&[][..], Vec::as_slice) {
            render_cell(h, c, "");
        }
        h.push_str("</tr>");
    }
    h.push_str("</tbody></table></div>");
}

fn render_tags(h: &mut String, tags: &Value, filter: &str) {
    let total = tags.get("total").and_then(Value::as_u64).unwrap_or(0);
    let matched = tags.get("matched").and_then(Value::as_u64).unwrap_or(0);
    let rows = arr(tags, "rows");
    let mut count = if matched == total {
        format!("{total} tags")
    } else {
        format!("{matched} of {total} tags match")
    };
    if (rows.len() as u64) < matched {
        let _ = write!(count, ", first {} shown", rows.len());
    }
    let _ = write!(
        h,
        "<section class=\"card\"><div class=\"tagbar\"><h2>Tags <span id=\"tag-count\" \
         class=\"muted\">{}</span></h2><input id=\"filter\" type=\"search\" \
         placeholder=\"Search tags by name, unit or description\" autocomplete=\"off\" \
         value=\"{}\"></div><table><thead><tr><th>Tag</th><th>Value</th><th>Unit</th>\
         <th>Quality</th><th>Age</th><th>Source</th></tr></thead><tbody id=\"tag-rows\">",
        escape(&count),
        escape(filter)
    );
    for r in rows {
        let value = match r.get("value") {
            None | Some(Value::Null) => "(no value)".to_owned(),
            Some(v) => scalar_text(v),
        };
        let description = str_of(r, "description");
        if description.is_empty() {
            h.push_str("<tr><td class=\"mono\">");
        } else {
            let _ = write!(
                h,
                "<tr><td class=\"mono\" title=\"{}\">",
                escape(description)
            );
        }
        let _ = write!(
            h,
            "{}</td><td class=\"num mono\">{}</td><td>{}</td><td class=\"{}\">{}</td>\
             <td class=\"num\">{}</td><td class=\"mono\">{}</td></tr>",
            escape(str_of(r, "name")),
            escape(&value),
            escape(str_of(r, "unit")),
            tone_class(str_of(r, "tone")),
            escape(str_of(r, "quality")),
            escape(&age_text(r.get("age_ms").and_then(Value::as_f64))),
            escape(str_of(r, "source")),
        );
    }
    h.push_str("</tbody></table></section>\n");
}

/// The status page's fact about the link's authentication: a link without a key is shown as
/// the risk it is on every page load, not only in the start-up log.
pub fn auth_fact(authenticated: bool) -> serde_json::Value {
    if authenticated {
        serde_json::json!({ "label": "Authentication", "value": "AES-256-GCM, link key", "tone": "good" })
    } else {
        serde_json::json!({ "label": "Authentication",
            "value": "NONE (insecure_no_key = true): anything that reaches the receiver's link port can feed it",
            "tone": "bad" })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn base64_matches_the_rfc_vectors() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }

    #[test]
    fn everything_from_the_data_is_escaped() {
        let evil = "<script>alert('x')</script>\"&";
        let status = json!({
            "health": { "status": "unhealthy", "reasons": [evil] },
            "view": {
                "title": evil, "subtitle": evil,
                "facts": [ { "label": evil, "value": evil, "tone": "\"><script>" } ],
                "charts": [ { "title": evil, "series": [] } ],
                "tables": [ { "title": evil, "columns": [evil], "rows": [[evil, { "text": evil, "tone": evil }, 5]] } ]
            },
            "tags": { "total": 1, "matched": 1, "rows": [
                { "name": evil, "value": evil, "unit": evil, "quality": evil, "tone": evil,
                  "age_ms": 1500, "source": evil, "description": evil } ] }
        });
        let page = render(
            &status,
            &Query {
                tags: evil.into(),
                limit: 10,
            },
        );
        // The only script element is the page's own, and no data opened a tag or attribute.
        assert_eq!(page.matches("<script>").count(), 1);
        assert!(!page.contains("alert('x')"));
        assert!(page.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&quot;&amp;"));
        assert!(page.contains("1.5 s"));
        assert!(page.contains("<td class=\"num\">5</td>"));
    }

    #[test]
    fn csp_names_the_inline_script_and_style() {
        let csp = content_security_policy();
        assert!(csp.contains(&format!("'sha256-{}'", sha256_base64(JS))));
        assert!(!csp.contains("unsafe-inline"));
    }
}
