#!/usr/bin/env python3
"""Writes the seed corpus of the http_request fuzz target (corpus/http_request/).

Each seed is a connection's requests: every route with GET and HEAD, every other method, a
query full of markup and out-of-range values, an unhealthy site, and raw streams (pipelined
requests with and without bodies, chunked bodies, an HTTP/2 preface, a head over the size
limit). Input layout: see fuzz_targets/http_request.rs. Run from anywhere:
python3 observe/fuzz/make_corpus.py
"""

import os

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "corpus", "http_request")

METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE", "CONNECT", "get",
           "BREW", ""]
PATHS = ["/", "/index.html", "/metrics", "/health", "/api/status", "/nope", "//", "/metrics/",
         "*", "http://gw/api/status", "/%2e%2e/etc/passwd", ""]
VERSIONS = ["HTTP/1.1", "HTTP/1.0", "HTTP/2.0", ""]
HEADERS = ["Host", "Connection", "Content-Length", "Transfer-Encoding", "Accept", ""]
HEALTHY, UNHEALTHY, RAW = 0, 1, 2


def piece(b, limit):
    assert len(b) < limit
    return bytes([len(b)]) + b


def choose(items, item, limit):
    """A one-byte piece naming a list entry, or the text itself."""
    if item in items:
        return bytes([1, items.index(item)])
    return piece(item.encode(), limit)


def request(method, path, query="", version="HTTP/1.1", headers=(), body=b""):
    out = choose(METHODS, method, 12) + choose(PATHS, path, 40) + piece(query.encode(), 80)
    out += choose(VERSIONS, version, 12) + bytes([1, len(headers)])
    for name, value in headers:
        out += choose(HEADERS, name, 16) + piece(value.encode(), 24)
    return out + piece(body, 16)


def seed(name, mode, data):
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(bytes([mode]) + data)


def main():
    os.makedirs(OUT, exist_ok=True)
    seed("get-every-route", HEALTHY,
         request("GET", "/", headers=[("Host", "gw")]) + request("GET", "/metrics")
         + request("HEAD", "/health") + request("GET", "/api/status", "tags=pump&limit=3"))
    seed("other-methods", HEALTHY,
         request("POST", "/", headers=[("Content-Length", "0")]) + request("PUT", "/metrics")
         + request("DELETE", "/api/status") + request("OPTIONS", "*"))
    seed("markup-in-the-query", HEALTHY,
         request("GET", "/", "tags=%3Cscript%3Ex%3C/script%3E%22%27&limit=99999"))
    seed("markup-in-the-status", HEALTHY,
         request("GET", "/api/status", "tags=%3Cb%3E+%26+'&limit=-1&tags=2"))
    seed("unhealthy", UNHEALTHY,
         request("GET", "/health") + request("HEAD", "/index.html", version="HTTP/1.0")
         + request("GET", "/nope"))
    seed("pipelined-with-bodies", RAW,
         b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
         b"POST /metrics HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"
         b"PUT /health HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
         b"GET /health HTTP/1.0\r\n\r\n")
    seed("http2-preface", RAW, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    seed("garbage", RAW, b"\x00\x01GET\r\n\r\n\xff / HTTP/1.1\r\n\r\n")
    seed("head-over-the-limit", RAW,
         b"GET /metrics HTTP/1.1\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n")


if __name__ == "__main__":
    main()
