//! Fuzzes the operators' HTTP server with what a client sends: the bytes of one connection go
//! through hyper (with the server's limits) to the router (`http::serve_stream`, the same
//! per-connection code `http::serve` runs), serving a site whose status echoes the client's
//! query into every field the page shows.
//!
//! Input: `[mode][requests...]`. Mode bit 0: the site is unhealthy (`/health` answers 503);
//! bit 1: the rest is sent as it is (raw bytes) rather than as records that build requests
//! (method, path, query, version, headers and body chosen or given by the input).
//!
//! Checked: nothing panics or hangs; the site is called no more often than the GET and HEAD
//! requests the input holds; an answer from the router is 200, 404, 405 or 503, a 405 says
//! `Allow: GET, HEAD` and answers every method but those two (and anything else hyper answers
//! is one of its error codes); an answer to HEAD has no body; the query reaches the site
//! bounded; `/api/status` is the site's JSON; and the status page has exactly the `<`, `>`,
//! quotes of the page for the same query without them: whatever the query, it stays text.
#![no_main]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use observe::http::{self, Health, MAX_FILTER_CHARS, MAX_TAG_ROWS, Query, Site};
use observe::page;
use observe::prom::Exposition;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::runtime::Runtime;

const METHODS: [&str; 12] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE", "CONNECT", "get", "BREW",
    "",
];
const PATHS: [&str; 12] = [
    "/",
    "/index.html",
    "/metrics",
    "/health",
    "/api/status",
    "/nope",
    "//",
    "/metrics/",
    "*",
    "http://gw/api/status",
    "/%2e%2e/etc/passwd",
    "",
];
const VERSIONS: [&str; 4] = ["HTTP/1.1", "HTTP/1.0", "HTTP/2.0", ""];
const HEADERS: [&str; 6] = [
    "Host",
    "Connection",
    "Content-Length",
    "Transfer-Encoding",
    "Accept",
    "",
];
/// Characters that open an element or delimit an attribute: the data must never add one.
const MARKUP: [char; 4] = ['<', '>', '"', '\''];

thread_local! {
    static RUNTIME: Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
}

/// What the router asked of the site.
#[derive(Debug, Clone, PartialEq)]
enum Call {
    Metrics,
    Health,
    Status(Query),
}

/// A site whose status puts the client's filter everywhere the page shows text.
#[derive(Default)]
struct Echo {
    unhealthy: bool,
    /// In order.
    calls: Mutex<Vec<Call>>,
}

impl Echo {
    fn called(&self, call: Call) {
        self.calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(call);
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

fn status_json(q: &Query, unhealthy: bool) -> Value {
    let f = q.tags.as_str();
    json!({
        "health": health(unhealthy).to_json(),
        "view": {
            "title": "gw <i>", "subtitle": f,
            "facts": [{ "label": f, "value": f, "tone": f }],
            "charts": [{ "title": f, "unit": f, "series": [] }],
            "tables": [{ "title": f, "columns": [f], "rows": [[f, { "text": f, "tone": "bad" }]],
                         "empty": f, "wide": true }],
        },
        "tags": { "total": 2, "matched": 1, "rows": [{
            "name": f, "value": f, "unit": f, "quality": f, "tone": f, "age_ms": 1500,
            "source": f, "description": f,
        }]},
    })
}

fn health(unhealthy: bool) -> Health {
    Health {
        reasons: if unhealthy {
            vec!["link <b>down</b> & \"quoted\"".into()]
        } else {
            Vec::new()
        },
    }
}

impl Site for Echo {
    fn prefix(&self) -> &'static str {
        "gateway_fuzz"
    }

    fn metrics(&self, out: &mut Exposition) {
        self.called(Call::Metrics);
        out.counter("gateway_fuzz_things_total", "Things \\ seen\nso far.", 3u64);
        out.labelled(
            "gateway_fuzz_by_device",
            "gauge",
            "By device.",
            "device",
            [("plc\"1\"\n", 1.5f64), ("plc\\2", f64::NAN)],
        );
    }

    fn health(&self) -> Health {
        self.called(Call::Health);
        health(self.unhealthy)
    }

    fn status(&self, query: &Query) -> Value {
        assert!(query.tags.chars().count() <= MAX_FILTER_CHARS, "{query:?}");
        assert!(query.limit <= MAX_TAG_ROWS, "{query:?}");
        self.called(Call::Status(query.clone()));
        status_json(query, self.unhealthy)
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let stream = if mode & 2 != 0 {
        rest.to_vec()
    } else {
        requests(rest)
    };
    let site = Arc::new(Echo {
        unhealthy: mode & 1 != 0,
        ..Echo::default()
    });
    let answer = RUNTIME.with(|rt| rt.block_on(exchange(&stream, site.clone())));
    check(&stream, &answer, &site);
});

/// Reads length-prefixed pieces of the input.
struct Pieces<'a>(&'a [u8]);

impl<'a> Pieces<'a> {
    /// `[n][n bytes]`, n below `max`.
    fn take(&mut self, max: u8) -> &'a [u8] {
        let Some((&n, rest)) = self.0.split_first() else {
            return &[];
        };
        let (got, rest) = rest.split_at(usize::from(n % max.max(1)).min(rest.len()));
        self.0 = rest;
        got
    }

    /// One of `list` by a one-byte piece, or a piece of text.
    fn choose(&mut self, list: &[&str], max: u8, out: &mut Vec<u8>) {
        match self.take(max) {
            [i] if usize::from(*i) < list.len() => {
                out.extend_from_slice(list[usize::from(*i)].as_bytes())
            }
            text => out.extend_from_slice(text),
        }
    }
}

/// Records `[method][path][query][version][header count][headers][body]` as requests, each
/// part a choice from a list or text from the input.
fn requests(input: &[u8]) -> Vec<u8> {
    let mut p = Pieces(input);
    let mut out = Vec::new();
    for _ in 0..4 {
        if p.0.is_empty() {
            break;
        }
        p.choose(&METHODS, 12, &mut out);
        out.push(b' ');
        p.choose(&PATHS, 40, &mut out);
        let query = p.take(80);
        if !query.is_empty() {
            out.push(b'?');
            out.extend_from_slice(query);
        }
        out.push(b' ');
        p.choose(&VERSIONS, 12, &mut out);
        out.extend_from_slice(b"\r\n");
        let headers = p.take(2).first().copied().unwrap_or(0) % 6;
        for _ in 0..headers {
            p.choose(&HEADERS, 16, &mut out);
            out.extend_from_slice(b": ");
            out.extend_from_slice(p.take(24));
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(p.take(16));
    }
    out
}

/// Serves one connection carrying `stream`; returns everything the server wrote back.
async fn exchange(stream: &[u8], site: Arc<Echo>) -> Vec<u8> {
    let (client, server) = tokio::io::duplex(1 << 16);
    let serve = http::serve_stream(server, site);
    let (mut rx, mut tx) = tokio::io::split(client);
    let send = async move {
        // The server stops reading once it gives up on the connection.
        if tx.write_all(stream).await.is_ok() {
            let _ = tx.shutdown().await;
        }
    };
    let receive = async move {
        let mut answer = Vec::new();
        let _ = rx.read_to_end(&mut answer).await;
        answer
    };
    let all = async { tokio::join!(serve, send, receive).2 };
    tokio::time::timeout(Duration::from_secs(10), all)
        .await
        .expect("the server answers and closes within 10 s")
}

/// The requests `stream` holds as far as they can be read without bodies: their methods and
/// paths, and whether that was all of it.
fn parse_requests(mut stream: &[u8]) -> (Vec<(String, String)>, bool) {
    let mut out = Vec::new();
    while !stream.is_empty() {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        let Ok(httparse::Status::Complete(n)) = req.parse(stream) else {
            return (out, false);
        };
        let bodied = req.headers.iter().any(|h| {
            h.name.eq_ignore_ascii_case("content-length")
                || h.name.eq_ignore_ascii_case("transfer-encoding")
        });
        out.push((
            req.method.unwrap_or_default().to_owned(),
            req.path.unwrap_or_default().to_owned(),
        ));
        if bodied {
            return (out, false);
        }
        stream = &stream[n..];
    }
    (out, true)
}

fn check(stream: &[u8], answer: &[u8], site: &Echo) {
    let (requests, whole) = parse_requests(stream);
    let calls = site.calls();
    let get_or_head = requests
        .iter()
        .filter(|(m, _)| m == "GET" || m == "HEAD")
        .count();
    if whole {
        assert!(
            calls.len() <= get_or_head,
            "{calls:?} for {get_or_head} GET/HEAD requests: {requests:?}"
        );
    }

    // The first answer, if any.
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    let Ok(httparse::Status::Complete(head_len)) = resp.parse(answer) else {
        assert!(
            answer.is_empty(),
            "not an HTTP answer: {:?}",
            String::from_utf8_lossy(answer)
        );
        return;
    };
    let code = resp.code.unwrap_or(0);
    let header = |name: &str| {
        resp.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    let routed = header("x-frame-options") == Some(b"DENY".as_slice());
    if !routed {
        assert!(
            matches!(code, 400 | 408 | 413 | 414 | 431 | 500 | 501 | 505),
            "hyper answered {code}"
        );
        return;
    }
    assert!(
        matches!(code, 200 | 404 | 405 | 503),
        "the router answered {code}"
    );
    assert_eq!(header("cache-control"), Some(b"no-store".as_slice()));
    assert_eq!(
        header("x-content-type-options"),
        Some(b"nosniff".as_slice())
    );
    if code == 405 {
        assert_eq!(header("allow"), Some(b"GET, HEAD".as_slice()));
    }
    let Some((method, path)) = requests.first() else {
        return;
    };
    let read_only = method == "GET" || method == "HEAD";
    assert_eq!(code == 405, !read_only, "{method} {path} answered {code}");
    let length: usize = header("content-length")
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.parse().ok())
        .expect("a content length");
    let body = &answer[head_len..];
    if method == "HEAD" {
        if whole && requests.len() == 1 {
            assert!(body.is_empty(), "a body for HEAD: {} bytes", body.len());
        }
        return;
    }
    let Some(body) = body.get(..length) else {
        panic!("answer cut short: {} of {length} bytes", body.len());
    };
    // An answer of 200 called the site, and was the first to.
    if code != 200 {
        return;
    }
    let content_type = header("content-type").unwrap_or_default();
    let query = match calls.first() {
        Some(Call::Status(query)) => query.clone(),
        Some(Call::Health) => {
            let got: Value = serde_json::from_slice(body).expect("the health is JSON");
            assert_eq!(got, health(site.unhealthy).to_json());
            return;
        }
        Some(Call::Metrics) => {
            let text = std::str::from_utf8(body).expect("the metrics are UTF-8");
            assert!(text.contains("gateway_fuzz_http_responses_total"), "{text}");
            return;
        }
        None => panic!("200 without asking the site"),
    };
    let expected = status_json(&query, site.unhealthy);
    if content_type == b"application/json" {
        let got: Value = serde_json::from_slice(body).expect("the status is JSON");
        assert_eq!(got, expected);
    } else if content_type.starts_with(b"text/html") {
        let page = std::str::from_utf8(body).expect("the page is UTF-8");
        // The same page for the same query without its markup characters.
        let neutral = Query {
            tags: query
                .tags
                .chars()
                .map(|c| {
                    if MARKUP.contains(&c) || c == '&' {
                        'x'
                    } else {
                        c
                    }
                })
                .collect(),
            ..query.clone()
        };
        let harmless = page::render(&status_json(&neutral, site.unhealthy), &neutral);
        for m in MARKUP {
            assert_eq!(
                page.matches(m).count(),
                harmless.matches(m).count(),
                "{m:?} from the query {:?}",
                query.tags
            );
        }
        assert!(header("content-security-policy").is_some());
    }
}
