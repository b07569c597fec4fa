#!/usr/bin/env python3
"""Writes the seed corpora of gateway-rx's fuzz targets (corpus/<target>/).

modbus_request: tags (every table, type, order, scaling, quality, a value of another type,
devices sharing a unit and one served under another unit) and the requests a client sends:
reads that succeed, reads refused for each reason, every write function, other functions,
frames the server refuses, as records or raw bytes, whole or in small pieces.
mqtt: topic prefixes and tag names with levels, wildcards, '$', control characters, and
values of every type at their edges.
opcua: catalogues whose names share folders, change type, unit and description between
syncs, or cannot be served, and values at their edges.
Input layouts: see fuzz_targets/*.rs and src/lib.rs. Run from anywhere:
python3 gateway-rx/fuzz/make_corpus.py
"""

import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))

VALUE_TYPES = ["Boolean", "Int16", "Int32", "Int64", "UInt16", "UInt32", "UInt64", "Float",
               "Double", "String", "DateTime", "ByteString"]
KINDS = ["bool", "u16", "i16", "u32", "i32", "u64", "i64", "f32", "f64", "string"]
TABLES = ["coil", "discrete", "holding", "input"]
DEVICES = ["plc1", "plc2", "plc3"]  # plc2 is served as unit 9
RAW_TYPE = dict(bool="Boolean", u16="UInt16", i16="Int16", u32="UInt32", i32="Int32",
                u64="UInt64", i64="Int64", f32="Float", f64="Double", string="String")


def value(t, v):
    """A value of type t in the layout `Input::value` reads."""
    if t == "Boolean":
        return bytes([1 if v else 0])
    if t in ("Int16", "UInt16"):
        return struct.pack(">H", v & 0xFFFF)
    if t in ("Int32", "UInt32"):
        return struct.pack(">I", v & 0xFFFFFFFF)
    if t in ("Int64", "UInt64", "DateTime"):
        return struct.pack(">Q", v & 0xFFFFFFFFFFFFFFFF)
    if t == "Float":
        return struct.pack(">f", v)
    if t == "Double":
        return struct.pack(">d", v)
    if t == "String":
        b = v.encode()
        assert len(b) < 40
        return bytes([len(b)]) + b
    if t == "ByteString":
        assert len(v) < 24
        return bytes([len(v)]) + bytes(v)
    raise ValueError(t)


QUALITY = dict(none=0, good=1, uncertain=2, bad=3)


def mtag(device, unit, table, kind, delta, v, quality="good", byte_little=False,
         word_little=False, scale=0, strlen=1, other=None):
    """One tag of the modbus_request target: 6 bytes, then its value."""
    if table in ("coil", "discrete"):
        kind = "bool"
    b0 = DEVICES.index(device) | (byte_little << 4) | (word_little << 5) | ((other is not None) << 6)
    b2 = TABLES.index(table) | (KINDS.index(kind) << 2)
    b4 = (strlen - 1) | (scale << 4)
    b5 = QUALITY[quality] | ((VALUE_TYPES.index(other) if other else 0) << 2)
    if other is not None:
        t = other
    elif kind in ("bool", "string"):
        t = RAW_TYPE[kind]
    elif scale:
        t = "Double"
    else:
        t = RAW_TYPE[kind]
    return bytes([b0, unit - 1, b2, delta, b4, b5]) + value(t, v)


def read(unit, function, address, quantity):
    return bytes([unit, 5, function]) + struct.pack(">HH", address, quantity)


def pdu(unit, body):
    return bytes([unit, len(body)]) + body


def mbap(tid, unit, body, protocol=0, length=None):
    n = len(body) + 1 if length is None else length
    return struct.pack(">HHHB", tid, protocol, n, unit) + body


def modbus_seed(name, mode, base, tags, requests):
    out = os.path.join(HERE, "corpus", "modbus_request")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, name), "wb") as f:
        f.write(bytes([mode, len(tags)]) + struct.pack(">H", base) + b"".join(tags)
                + b"".join(requests))


EXCEPTION, LAST_VALUE, ZERO = 0, 1, 2
RAW = 4


def chunked(n):
    """Mode bits 3-5: index into CHUNKS = [all, 1, 2, 3, 7, 12, 64, 260]."""
    return n << 3


def modbus():
    every_type = [
        mtag("plc1", 1, "holding", "u16", 0, 0x1234),
        mtag("plc1", 1, "holding", "i16", 1, -2, byte_little=True),
        mtag("plc1", 1, "holding", "u32", 1, 0x11223344, word_little=True),
        mtag("plc1", 1, "holding", "i32", 2, 0, scale=1),
        mtag("plc1", 1, "holding", "u64", 2, 2**63 + 5),
        mtag("plc1", 1, "holding", "i64", 4, 12.5, scale=2),
        mtag("plc1", 1, "holding", "f32", 4, 1.5, byte_little=True, word_little=True),
        mtag("plc1", 1, "holding", "f64", 2, -0.0),
        mtag("plc1", 1, "holding", "string", 4, "ABCDE", strlen=3),
    ]
    modbus_seed("holding-every-type", EXCEPTION, 100, every_type, [
        read(1, 3, 100, 23), read(1, 3, 101, 2), read(1, 3, 104, 1), read(1, 3, 120, 3),
        read(1, 3, 99, 2), read(1, 4, 100, 1), read(1, 3, 100, 0), read(1, 3, 100, 126),
        read(5, 3, 100, 1), read(1, 3, 0xFFFF, 2)])
    bits = [
        mtag("plc1", 2, "coil", "bool", 0, True),
        mtag("plc1", 2, "coil", "bool", 1, False),
        mtag("plc1", 2, "coil", "bool", 1, True),
        mtag("plc1", 2, "discrete", "bool", 0, True),
        mtag("plc2", 2, "coil", "bool", 0, True),
        mtag("plc2", 2, "holding", "u16", 0, 7),
    ]
    modbus_seed("bits-and-remapped-unit", EXCEPTION, 0, bits, [
        read(2, 1, 0, 3), read(2, 1, 0, 4), read(2, 2, 3, 1), read(9, 1, 3, 1),
        read(9, 3, 3, 1), read(2, 1, 0, 2000), read(2, 1, 0, 2001), read(3, 2, 0, 1)])
    qualities = [
        mtag("plc1", 1, "holding", "u16", 0, 1, quality="bad"),
        mtag("plc1", 1, "holding", "u16", 1, 2, quality="none"),
        mtag("plc1", 1, "holding", "u16", 1, 3, quality="uncertain"),
        mtag("plc1", 1, "holding", "u32", 1, "x", other="String"),
        mtag("plc1", 1, "holding", "i16", 2, 70000, other="Int32"),
        mtag("plc1", 1, "coil", "bool", 0, 5, other="UInt16"),
        mtag("plc1", 1, "holding", "string", 1, "far too long", strlen=2),
    ]
    qreads = [read(1, 3, i, 1) for i in range(8)] + [read(1, 3, 0, 8), read(1, 1, 0, 1)]
    for mode, name in [(EXCEPTION, "qualities-exception"), (LAST_VALUE, "qualities-last-value"),
                       (ZERO, "qualities-zero")]:
        modbus_seed(name, mode, 0, qualities, qreads)
    one = [mtag("plc1", 1, "holding", "u16", 0, 42)]
    modbus_seed("writes-and-other-functions", EXCEPTION, 10, one, [
        pdu(1, bytes([0x05, 0, 10, 0xFF, 0])),
        pdu(1, bytes([0x06, 0, 10, 0, 1])),
        pdu(1, bytes([0x0F, 0, 10, 0, 10, 2, 0xFF, 0x03])),
        pdu(1, bytes([0x10, 0, 10, 0, 2, 4, 0, 1, 0, 2])),
        pdu(1, bytes([0x16, 0, 10, 0, 0xFF, 0, 1])),
        pdu(1, bytes([0x17, 0, 10, 0, 1, 0, 10, 0, 1, 2, 0, 5])),
        pdu(1, bytes([0x11])),
        pdu(1, bytes([0x2B, 0x0E, 1, 0])),
        pdu(1, bytes([0x07])),
        pdu(1, bytes([0x41, 1, 2, 3])),
        read(1, 3, 10, 1)])
    modbus_seed("write-beyond-its-limits", EXCEPTION, 10, one, [
        read(1, 3, 10, 1), pdu(1, bytes([0x10, 0, 0, 0x80, 0, 0])), read(1, 3, 10, 1)])
    modbus_seed("malformed-read", EXCEPTION, 10, one, [
        read(1, 3, 10, 1), pdu(1, bytes([0x03, 0, 10, 0])), read(1, 3, 10, 1)])
    raw = (mbap(1, 1, bytes([3, 0, 10, 0, 1])) + mbap(2, 1, bytes([4, 0, 10, 0, 1]))
           + mbap(3, 1, bytes([0x81, 0, 0])) + mbap(4, 1, bytes([3, 0, 10, 0, 1]), protocol=1)
           + mbap(5, 1, b"", length=0) + mbap(6, 1, bytes([3, 0, 10]))[:9])
    modbus_seed("raw-frames", EXCEPTION | RAW, 10, one, [raw])
    modbus_seed("raw-frames-bytewise", EXCEPTION | RAW | chunked(1), 10, one,
                [mbap(7, 1, bytes([3, 0, 10, 0, 1])) * 3])
    modbus_seed("reads-in-pieces", LAST_VALUE | chunked(4), 100, every_type,
                [read(1, 3, 100, 4), read(1, 3, 104, 4), read(1, 3, 108, 4)])
    shared = [
        mtag("plc3", 1, "holding", "u16", 0, 0x3333),
        mtag("plc1", 1, "holding", "u32", 0, 0x11112222),
        mtag("plc1", 1, "holding", "u16", 1, 0x4444),
        mtag("plc1", 1, "holding", "u16", 1, 0x5555),
        mtag("plc1", 1, "holding", "u16", 0, 0x6666),
        mtag("plc1", 1, "holding", "u16", 0, 0x7777),
        mtag("plc1", 1, "holding", "u16", 0, 0x8888),
    ]
    modbus_seed("overlapping-tags-and-devices", ZERO, 50, shared,
                [read(1, 3, 50, 3), read(1, 3, 51, 1), read(1, 3, 52, 1)])
    modbus_seed("end-of-address-space", EXCEPTION, 65533, [
        mtag("plc1", 1, "holding", "u32", 0, 7),
        mtag("plc1", 1, "holding", "u64", 2, 9),
        mtag("plc1", 1, "input", "string", 0, "AB", strlen=8),
    ], [read(1, 3, 65533, 3), read(1, 3, 65535, 1), read(1, 3, 65535, 2), read(1, 4, 65535, 1)])


def text(s, limit):
    b = s.encode() if isinstance(s, str) else s
    assert len(b) < limit
    return bytes([len(b)]) + b


def quality(kind, code=0):
    """`Input::quality`: 0 Good, 1 Uncertain(no comm.), 2 BadNoCommunication, 3 BadDeviceFailure,
    4 any code."""
    return bytes([kind]) + (struct.pack(">I", code) if kind >= 4 else b"")


def typed(t, v):
    return bytes([VALUE_TYPES.index(t)]) + value(t, v)


def mqtt():
    out = os.path.join(HERE, "corpus", "mqtt")
    os.makedirs(out, exist_ok=True)
    times = struct.pack(">qq", 1_700_000_000_123_456_789, 1_700_000_000_500_000_000)
    edge_times = struct.pack(">qq", -2**63, 2**63 - 1)

    def record(name, t, v, q=quality(0), when=times):
        # Name kind byte 1: text; 0: pieces (not used here, the fuzzer finds it).
        return bytes([1]) + text(name, 64) + typed(t, v) + q + when

    seeds = {
        "every-type": text("gateway", 48) + b"".join([
            record("site/area/pump3/speed", "Double", 1480.5),
            record("site/area/pump3/on", "Boolean", True),
            record("a/i16", "Int16", -32768), record("a/i32", "Int32", -1),
            record("a/i64", "Int64", -2**63), record("a/u16", "UInt16", 65535),
            record("a/u32", "UInt32", 2**32 - 1), record("a/u64", "UInt64", 2**64 - 1),
            record("a/f32", "Float", 3.4028234663852886e38), record("a/text", "String", "é \"q\" \\"),
            record("a/when", "DateTime", -1), record("a/raw", "ByteString", [0, 0xde, 0xad, 0xff]),
        ]),
        "odd-floats-and-times": text("", 48) + b"".join([
            record("nan", "Double", float("nan")), record("inf", "Float", float("inf")),
            record("tiny", "Double", 5e-324), record("neg-zero", "Double", -0.0),
            record("edges", "UInt16", 1, quality(4, 0x80AB0000), edge_times),
        ]),
        "names-a-broker-refuses": text("plant/gw/", 48) + b"".join([
            record("a+b/#/c", "UInt16", 1), record("/a//b/", "UInt16", 2),
            record("$SYS/x", "UInt16", 3), record("x\0y", "UInt16", 4),
            record("line\nfeed/tab\there", "UInt16", 5), record("del\x7f", "UInt16", 6),
            record("\ufffe/\ufdd0", "UInt16", 7), record("", "UInt16", 8),
        ]),
        "refused-prefix": text("a/+/b", 48) + record("x", "UInt16", 1),
    }
    for name, data in seeds.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)


def otag(name, t, unit="", description=""):
    """A tag of the opcua target: name kind 0 (text), then type, unit, description."""
    return bytes([0]) + text(name, 24) + bytes([VALUE_TYPES.index(t)]) + text(unit, 6) + text(description, 12)


def catalogue(tags, history=0):
    return bytes([len(tags)]) + b"".join(tags) + bytes([history])


def ovalue(t, v, q=quality(0), when=1_700_000_000_123_456_789, ticks=0, which=2):
    return typed(t, v) + q + struct.pack(">qq", when, ticks) + bytes([which])


def opcua():
    out = os.path.join(HERE, "corpus", "opcua")
    os.makedirs(out, exist_ok=True)
    first = [otag("site/area/pump3/speed", "Double", "rpm", "Pump 3"),
             otag("site/area/pump3/on", "Boolean"),
             otag("site/area/flow", "Float", "m3/h"),
             otag("top", "String"),
             otag("bad//name", "UInt16"), otag("has#hash", "UInt16"), otag("", "UInt16")]
    second = [otag("site/area/pump3/speed", "Float", "rpm", "Pump 3"),
              otag("site/area/flow", "Float", "l/s", "inlet"),
              otag("site/other/x", "Int64"),
              otag("site/area/flow", "Double")]
    values = b"".join([
        ovalue("Double", 1.5), ovalue("Float", float("nan"), which=0),
        ovalue("DateTime", -2**63, when=2**63 - 1, ticks=2**63 - 1, which=1),
        ovalue("String", "é", quality(4, 0x408F0000), when=-1, ticks=-2**63, which=3),
        ovalue("ByteString", [1, 2, 3], which=4), ovalue("UInt64", 2**64 - 1, ticks=1),
    ])
    seeds = {
        "catalogue-then-change": bytes([3]) + catalogue(first, 1) + catalogue(second) + catalogue([]) + values,
        "values-only": bytes([0]) + values,
    }
    for name, data in seeds.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    modbus()
    mqtt()
    opcua()
