//! The operators' HTTP server: `/metrics`, `/health`, `/api/status` and the status page at `/`.
//!
//! Stack: hyper 1's HTTP/1 server driven directly with hyper-util's tokio glue. Four fixed
//! routes need no router or middleware, so axum (and tower, matchit...) would only add code to
//! audit; hyper is the HTTP implementation axum itself runs on.
//!
//! Read-only by construction: GET and HEAD are served, every other method answers 405 with
//! `Allow: GET, HEAD`, and no route changes anything. Request bodies are never read.
//!
//! Bounds: at most [`MAX_CONNECTIONS`] connections at once (one more is closed at once and
//! counted); the request head (line and headers) is at most [`MAX_HEAD_BYTES`] bytes and
//! [`MAX_HEADERS`] headers (else 431); a client has [`HEADER_READ_TIMEOUT`] to send a request
//! head, and a connection lives at most [`CONNECTION_LIFETIME`] whatever it does, so slow or
//! idle clients cannot hold the slots. The tag filter in the query is capped at
//! [`MAX_FILTER_CHARS`] characters and the tag rows per answer at [`MAX_TAG_ROWS`].
//!
//! This server listens on the management network only: the config refuses the link's own
//! address, and the README says never to bind it on the diode interface.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::metrics::{self, Counters};
use crate::page;
use crate::prom::{self, Exposition};

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 32;
/// Time for a client to send a request head.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection is closed after this long, even if busy; browsers reconnect.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
/// Largest request head (request line and headers).
pub const MAX_HEAD_BYTES: usize = 8192;
pub const MAX_HEADERS: usize = 32;
/// Longest tag filter taken from a query; longer ones are cut.
pub const MAX_FILTER_CHARS: usize = 200;
/// Tag rows in one status answer (the default is [`DEFAULT_TAG_ROWS`]).
pub const MAX_TAG_ROWS: usize = 5000;
pub const DEFAULT_TAG_ROWS: usize = 500;
/// Pause after a failed accept (e.g. out of file descriptors).
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// What a daemon serves. Everything is computed when asked, from the daemon's own snapshots.
pub trait Site: Send + Sync + 'static {
    /// `gateway_rx` or `gateway_tx`: the prefix of the server's own metrics.
    fn prefix(&self) -> &'static str;
    /// The Prometheus exposition (without the server's own metrics, which are appended).
    fn metrics(&self, out: &mut Exposition);
    fn health(&self) -> Health;
    /// The status as JSON: what `/api/status` answers and what the page shows. It has at least
    /// `health`, `view` (see [`page`]) and `tags`.
    fn status(&self, query: &Query) -> serde_json::Value;
}

/// The answer of `/health`: 200 when `reasons` is empty, else 503.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Health {
    /// Why the daemon is not healthy; empty when it is.
    pub reasons: Vec<String>,
}

impl Health {
    pub fn ok(&self) -> bool {
        self.reasons.is_empty()
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "status": if self.ok() { "ok" } else { "unhealthy" },
            "reasons": self.reasons,
        })
    }
}

/// What a client may ask of `/api/status` and `/`: `?tags=FILTER&limit=N`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// Case-insensitive substring of the tag name (or unit, or description); empty for all.
    pub tags: String,
    pub limit: usize,
}

impl Default for Query {
    fn default() -> Query {
        Query {
            tags: String::new(),
            limit: DEFAULT_TAG_ROWS,
        }
    }
}

impl Query {
    /// Parses a query string leniently: unknown keys are ignored, bad escapes kept as text,
    /// and every value is bounded.
    pub fn parse(query: Option<&str>) -> Query {
        let mut q = Query::default();
        for pair in query.unwrap_or("").split('&') {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "tags" => q.tags = percent_decode(v).chars().take(MAX_FILTER_CHARS).collect(),
                "limit" => {
                    if let Ok(n) = v.parse::<usize>() {
                        q.limit = n.min(MAX_TAG_ROWS);
                    }
                }
                _ => {}
            }
        }
        q
    }

    /// Whether a tag matches the filter. For many tags, make the [`TagFilter`] once.
    pub fn matches(&self, fields: &[&str]) -> bool {
        self.filter().matches(fields)
    }

    /// The filter, made once for a scan over every tag.
    pub fn filter(&self) -> TagFilter {
        TagFilter {
            needle: self.tags.to_lowercase(),
        }
    }
}

/// A case-insensitive substring filter. Matching allocates nothing for ASCII text, so a scan
/// over a million tags is a plain pass over their bytes.
#[derive(Debug, Clone)]
pub struct TagFilter {
    needle: String,
}

impl TagFilter {
    pub fn is_empty(&self) -> bool {
        self.needle.is_empty()
    }

    pub fn matches(&self, fields: &[&str]) -> bool {
        self.needle.is_empty() || fields.iter().any(|f| self.matches_one(f))
    }

    fn matches_one(&self, field: &str) -> bool {
        if field.is_ascii() {
            let (hay, needle) = (field.as_bytes(), self.needle.as_bytes());
            needle.len() <= hay.len()
                && hay
                    .windows(needle.len())
                    .any(|w| w.eq_ignore_ascii_case(needle))
        } else {
            field.to_lowercase().contains(&self.needle)
        }
    }
}

/// `%XX` and `+` decoding; invalid sequences and invalid UTF-8 are kept, lossily.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

crate::family! {
    /// Connections to the status HTTP server, by outcome (refused: over the connection limit).
    const CONNECTIONS = counter "http_connections_total" by "outcome";
}
crate::family! {
    /// Answers of the status HTTP server by status code (before this scrape's own).
    const RESPONSES = counter "http_responses_total" by "code";
}

crate::counters! {
    /// The server's own counters (their names take the site's prefix).
    #[derive(Debug, Default)]
    pub struct ServerCounters;
    /// A copy of [`ServerCounters`].
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
    pub struct ServerCountersSnapshot;

    connections_accepted => CONNECTIONS["accepted"];
    connections_refused => CONNECTIONS["refused"];
    /// Answers by status code: 200, 404, 405, 503.
    answers: [AtomicU64; 4] => RESPONSES[each &CODE_LABELS];
}

const CODES: [StatusCode; 4] = [
    StatusCode::OK,
    StatusCode::NOT_FOUND,
    StatusCode::METHOD_NOT_ALLOWED,
    StatusCode::SERVICE_UNAVAILABLE,
];
const CODE_LABELS: [&str; 4] = ["200", "404", "405", "503"];

#[test]
fn code_labels_are_the_codes() {
    assert_eq!(
        CODES.map(|c| c.as_str().to_owned()),
        CODE_LABELS.map(str::to_owned)
    );
}

struct Shared {
    site: Arc<dyn Site>,
    counters: ServerCounters,
    csp: HeaderValue,
}

impl Shared {
    fn new(site: Arc<dyn Site>) -> Arc<Shared> {
        Arc::new(Shared {
            site,
            counters: ServerCounters::default(),
            csp: HeaderValue::from_str(&page::content_security_policy())
                .unwrap_or_else(|_| HeaderValue::from_static("default-src 'none'")),
        })
    }
}

/// Serves `site` on `listener` until the task is dropped; dropping it closes every connection.
pub async fn serve(listener: TcpListener, site: Arc<dyn Site>) {
    let shared = Shared::new(site);
    info!(
        bind = ?listener.local_addr().ok(),
        max_connections = MAX_CONNECTIONS,
        "status HTTP server listening (read-only: metrics, health, status page)"
    );
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                warn!(error = %e, "status HTTP server could not accept a connection; retrying");
                tokio::time::sleep(ACCEPT_RETRY).await;
                continue;
            }
        };
        if connections.len() >= MAX_CONNECTIONS {
            shared
                .counters
                .connections_refused
                .fetch_add(1, Ordering::Relaxed);
            debug!(%peer, "status HTTP connection refused: too many connections");
            drop(stream);
            continue;
        }
        shared
            .counters
            .connections_accepted
            .fetch_add(1, Ordering::Relaxed);
        let shared = shared.clone();
        connections.spawn(async move {
            let _ = stream.set_nodelay(true);
            if let Err(e) = serve_connection(stream, shared).await {
                debug!(%peer, error = %e, "status HTTP connection ended");
            }
        });
    }
}

/// Serves one connection until the client closes it, it fails, or it reaches its lifetime.
async fn serve_connection<S>(stream: S, shared: Arc<Shared>) -> Result<(), hyper::Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req: Request<Incoming>| {
        let shared = shared.clone();
        // On a blocking thread: a status page over a million tags takes a while, and the
        // runtime's workers run the link, the mirrors and the sinks.
        let (method, uri) = (req.method().clone(), req.uri().clone());
        async move {
            let answered =
                tokio::task::spawn_blocking(move || respond(&shared, &method, &uri)).await;
            Ok::<_, Infallible>(answered.unwrap_or_else(|_| {
                text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the status could not be made\n".into(),
                )
            }))
        }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(2 * MAX_HEAD_BYTES)
        .max_header_size(MAX_HEAD_BYTES)
        .max_headers(MAX_HEADERS);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    // Past its lifetime the connection is dropped, which closes it.
    match tokio::time::timeout(CONNECTION_LIFETIME, conn).await {
        Ok(result) => result,
        Err(_) => Ok(()),
    }
}

/// One connection served as [`serve`] serves each (same limits, router and site), on any byte
/// stream: for the fuzz target of the request path.
#[cfg(feature = "fuzzing")]
pub async fn serve_stream<S>(stream: S, site: Arc<dyn Site>) -> Result<(), hyper::Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    serve_connection(stream, Shared::new(site)).await
}

fn respond(shared: &Shared, method: &Method, uri: &hyper::Uri) -> Response<Full<Bytes>> {
    let r = answer(shared, method, uri);
    if let Some(i) = CODES.iter().position(|c| *c == r.status()) {
        shared.counters.answers[i].fetch_add(1, Ordering::Relaxed);
    }
    r
}

fn answer(shared: &Shared, method: &Method, uri: &hyper::Uri) -> Response<Full<Bytes>> {
    let c = &shared.counters;
    if method != Method::GET && method != Method::HEAD {
        let mut r = text(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed: this server is read-only (GET, HEAD)\n".into(),
        );
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let site = &*shared.site;
    match uri.path() {
        "/metrics" => {
            let mut e = Exposition::new();
            site.metrics(&mut e);
            let counters = ServerCountersSnapshot::COUNTERS;
            metrics::metrics_prefixed(&mut e, site.prefix(), counters, &c.snapshot());
            with_type(StatusCode::OK, prom::CONTENT_TYPE, e.finish())
        }
        "/health" => {
            let h = site.health();
            let status = if h.ok() {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            json(status, &h.to_json())
        }
        "/api/status" => json(StatusCode::OK, &site.status(&Query::parse(uri.query()))),
        "/" | "/index.html" => {
            let query = Query::parse(uri.query());
            let body = page::render(&site.status(&query), &query);
            let mut r = with_type(StatusCode::OK, "text/html; charset=utf-8", body);
            r.headers_mut()
                .insert(header::CONTENT_SECURITY_POLICY, shared.csp.clone());
            r
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found; try /, /metrics, /health or /api/status\n".into(),
        ),
    }
}

fn json(status: StatusCode, value: &serde_json::Value) -> Response<Full<Bytes>> {
    let body = serde_json::to_string(value).unwrap_or_else(|_| "{}".into());
    with_type(status, "application/json", body)
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    with_type(status, "text/plain; charset=utf-8", body)
}

fn with_type(
    status: StatusCode,
    content_type: &'static str,
    body: String,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        HeaderName::from_static("cross-origin-resource-policy"),
        HeaderValue::from_static("same-origin"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A site whose status takes a second, as a page over a million tags may.
    struct Slow;

    impl Site for Slow {
        fn prefix(&self) -> &'static str {
            "test"
        }
        fn metrics(&self, _: &mut Exposition) {}
        fn health(&self) -> Health {
            Health::default()
        }
        fn status(&self, _: &Query) -> serde_json::Value {
            std::thread::sleep(std::time::Duration::from_secs(1));
            serde_json::json!({})
        }
    }

    async fn get(addr: std::net::SocketAddr, path: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        s.write_all(request.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    /// Answers were made on the runtime's worker: a slow status page held up everything else
    /// on it (in the daemons: the link, the mirrors, the sinks). They are made on a blocking
    /// thread now; here a one-thread runtime answers /health while a status page is made.
    #[tokio::test(flavor = "current_thread")]
    async fn a_slow_status_page_does_not_hold_up_the_runtime() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener, Arc::new(Slow)));
        let started = std::time::Instant::now();
        let page = tokio::spawn(get(addr, "/api/status"));
        // Time for the page's request to reach the server and be taken up.
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let health = get(addr, "/health").await;
        assert!(health.starts_with("HTTP/1.1 200"), "{health}");
        assert!(
            started.elapsed() < std::time::Duration::from_millis(700),
            "/health took {:?}",
            started.elapsed()
        );
        assert!(page.await.unwrap().starts_with("HTTP/1.1 200"));
    }

    #[test]
    fn the_tag_filter_ignores_case_without_allocating_for_ascii() {
        let f = Query::parse(Some("tags=PUMP%2Fsp")).filter();
        assert!(f.matches(&["line1/pump/speed"]));
        assert!(f.matches(&["x", "Line1/Pump/SPEED"]));
        assert!(!f.matches(&["line1/pump3/speed"]));
        assert!(
            Query::parse(Some("tags=%C3%A9tage"))
                .filter()
                .matches(&["ÉTAGE 3"])
        );
        assert!(Query::default().filter().matches(&[]));
    }

    #[test]
    fn query_is_decoded_and_bounded() {
        let q = Query::parse(Some("tags=pump%2Fspeed+x&limit=7&other=1"));
        assert_eq!(q.tags, "pump/speed x");
        assert_eq!(q.limit, 7);
        let q = Query::parse(Some("tags=%zz%e2%82&limit=99999999999999999999999"));
        assert_eq!(q.tags, "%zz\u{fffd}");
        assert_eq!(q.limit, DEFAULT_TAG_ROWS);
        let q = Query::parse(Some(&format!("tags={}&limit=1000000", "a".repeat(10_000))));
        assert_eq!(q.tags.len(), MAX_FILTER_CHARS);
        assert_eq!(q.limit, MAX_TAG_ROWS);
        assert_eq!(Query::parse(None), Query::default());
        assert!(Query::parse(Some("tags=PUMP")).matches(&["line1/pump1/speed"]));
    }
}
