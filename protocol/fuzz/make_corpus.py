#!/usr/bin/env python3
"""Writes the seed corpus of the catalogue fuzz target (corpus/catalogue/).

Each seed is two catalogue versions described tag by tag, then a sequence of operations:
chunks of the real version in order, shuffled, duplicated and lost, altered, interleaved with
the other version, made-up chunks, a whole catalogue as an encoded message body, and a
session reset. Input layout: see fuzz_targets/catalogue.rs and src/lib.rs (`tag_info`).
The decoder target's seeds are written by protocol/tests/fuzz_corpus.rs.
Run from anywhere: python3 protocol/fuzz/make_corpus.py
"""

import hashlib
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "corpus", "catalogue")

REAL, ALTERED, OTHER, MADE_UP, ENCODED, RESET = range(6)
VALUE_TYPES = ["Boolean", "Int16", "Int32", "Int64", "UInt16", "UInt32", "UInt64", "Float",
               "Double", "String", "DateTime", "ByteString"]


def text(s, limit):
    b = s.encode()
    assert len(b) < limit
    return bytes([len(b)]) + b


def opcua_tag(name, value_type, unit="", description=""):
    """A tag with an OPC UA source, in the layout `tag_info` reads."""
    return (bytes([0x01]) + text(name, 24) + text("opc.tcp://p", 12) + text(f"ns=2;s={name[:4]}", 12)
            + bytes([VALUE_TYPES.index(value_type)]) + text(unit, 6) + text(description, 12))


def modbus_tag(line, address, scale=1.0):
    """A tag named site/line<N>/tag with a Modbus source (holding register, u16)."""
    return (bytes([0x08]) + bytes([line]) + text("plc1", 8) + bytes([1, 2]) + struct.pack(">H", address)
            + bytes([1]) + struct.pack(">H", 1) + bytes([0, 0]) + struct.pack(">d", scale)
            + struct.pack(">d", 0.0) + bytes([VALUE_TYPES.index("UInt16")]) + text("", 6) + text("", 12))


def version(tags, chunk_byte):
    return bytes([len(tags), chunk_byte]) + b"".join(tags)


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def pstr(s):
    b = s.encode()
    return varint(len(b)) + b


def encoded_tag(name, value_type, endpoint, node_id):
    """postcard encoding of a TagInfo with an OPC UA source."""
    return (pstr(name) + varint(VALUE_TYPES.index(value_type)) + pstr("") + pstr("")
            + varint(1) + pstr(endpoint) + pstr(node_id))


def encoded_catalogue(tags):
    """Message::Catalogue carrying a whole catalogue in one chunk, its hash computed as the
    receiver does: SHA-256 of the encoded tag list, first 8 bytes big-endian."""
    body = varint(len(tags)) + b"".join(tags)
    h = int.from_bytes(hashlib.sha256(body).digest()[:8], "big")
    return varint(0) + varint(h) + varint(len(tags)) + varint(0) + body


def seed(name, head, ops):
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(head + b"".join(ops))


def main():
    os.makedirs(OUT, exist_ok=True)
    real = [modbus_tag(i % 8, 100 + i) for i in range(12)]
    real += [opcua_tag("site/area/flow", "Double", "m3/h", "inlet"),
             opcua_tag("site/area/ok", "Boolean")]
    other = [opcua_tag("site/area/flow", "Float", "l/s"), modbus_tag(3, 7)]
    head = bytes([1, 100]) + version(real, 10) + version(other, 4)

    seed("in-order", head, [bytes([REAL, i]) for i in range(16)])
    seed("shuffled-duplicated-lost", head,
         [bytes([REAL, i]) for i in [5, 1, 1, 9, 0, 3, 3, 7, 2, 8, 4]])
    seed("interleaved-versions", bytes([0, 100]) + version(real, 10) + version(other, 4),
         [bytes([REAL, i]) + bytes([OTHER, i]) for i in range(16)])
    seed("altered-then-real", head,
         [bytes([ALTERED, 0, 0, 3]), bytes([ALTERED, 1, 2, 1]), bytes([ALTERED, 2, 4, 0]),
          bytes([ALTERED, 3, 5, 1]) + modbus_tag(2, 9),
          bytes([ALTERED, 4, 1]) + struct.pack(">I", 0xFFFFFFFF),
          bytes([ALTERED, 5, 3]) + struct.pack(">I", 0xFFFFFFF0)]
         + [bytes([REAL, i]) for i in range(16)])
    seed("made-up-chunks", head,
         [bytes([MADE_UP, 0, 14, 3, 2]) + opcua_tag("x", "Int32") + modbus_tag(1, 1),
          bytes([MADE_UP, 2, 7, 0, 0, 0]),
          bytes([MADE_UP, 0, 0xFF]) + struct.pack(">I", 0xFFFFFFFF) + bytes([0, 1]) + opcua_tag("y", "String"),
          bytes([MADE_UP, 1, 2, 0xFF]) + struct.pack(">I", 0xFFFFFFFE) + bytes([1]) + opcua_tag("z", "UInt64")]
         + [bytes([REAL, i]) for i in range(16)])
    whole = encoded_catalogue([encoded_tag("a/b", "Double", "opc.tcp://p", "ns=2;i=1"),
                               encoded_tag("a/c", "String", "opc.tcp://p", "ns=2;i=2")])
    seed("encoded-message", bytes([2, 50]) + version(real[:3], 200) + version(other, 4),
         [bytes([ENCODED]) + struct.pack(">H", len(whole)) + whole,
          bytes([ENCODED]) + struct.pack(">H", 5) + bytes([0, 1, 2, 3, 4]),
          bytes([REAL, 0])])
    seed("reset-midway", head,
         [bytes([REAL, i]) for i in range(16)] + [bytes([RESET])]
         + [bytes([REAL, i]) for i in range(3)])
    seed("over-the-tag-limit", bytes([1, 5]) + version(real, 10) + version(other, 4),
         [bytes([REAL, i]) for i in range(4)] + [bytes([OTHER, 0]), bytes([OTHER, 1])])


if __name__ == "__main__":
    main()
