#!/usr/bin/env python3
"""Writes the seed corpus of the modbus_reply fuzz target (corpus/modbus_reply/).

Each seed is a device (tags) and the byte stream a PLC answers on the connection: well-formed
Modbus TCP replies to the reads the poller's planner makes for those tags (transaction ids
counted from 0 as tokio-modbus does), plus exceptions, short replies and junk. Input layout:
see fuzz_targets/modbus_reply.rs. Run from anywhere: python3 gateway-tx/fuzz/make_corpus.py
"""

import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "corpus", "modbus_reply")

# Indexes used by the target.
KIND = dict(bool=0, u16=1, i16=2, u32=3, i32=4, u64=5, i64=6, f32=7, f64=8, string=9)
WIDTH = dict(bool=1, u16=1, i16=1, u32=2, i32=2, u64=4, i64=4, f32=2, f64=4)
TABLE = dict(coil=0, discrete=1, holding=2, input=3)
FUNCTION = {0: 1, 1: 2, 2: 3, 3: 4}
UNIT = 1


def tag(kind, table, delta, byte_little=False, word_little=False, scale=0, length=1):
    b0 = KIND[kind] | (byte_little << 4) | (word_little << 5) | (scale << 6)
    return bytes([b0, delta, (length - 1) % 125, TABLE[table]])


def plan(base, tags):
    """The planner's requests, as (table, start, count): sort, then merge greedily."""
    slots = []
    addr = base
    for t in tags:
        addr = (addr + t[1]) & 0xFFFF
        table = t[3] & 3
        kind = t[0] & 0x0F
        if table < 2:
            width = 1
        elif kind == KIND["string"]:
            width = t[2] % 125 + 1
        elif kind == KIND["bool"]:
            width = 1
        else:
            width = WIDTH[[k for k, v in KIND.items() if v == kind][0]]
        limit = 2000 if table < 2 else 125
        if addr + width > 0x10000:
            continue
        slots.append((table, addr, width))
    slots.sort()
    reqs = []
    for table, a, w in slots:
        if reqs:
            t0, start, count = reqs[-1]
            gap_ok = max(0, a - (start + count)) <= (128 if table < 2 else 8)
            merged = max(a + w, start + count) - start
            if t0 == table and gap_ok and merged <= (2000 if table < 2 else 125):
                reqs[-1] = (t0, start, merged)
                continue
        reqs.append((table, a, w))
    return reqs


def adu(tid, pdu):
    return struct.pack(">HHHB", tid, 0, len(pdu) + 1, UNIT) + pdu


def good_reply(tid, table, count, fill):
    if table < 2:
        nbytes = (count + 7) // 8
        data = bytes((fill * 37 + i * 11) & 0xFF for i in range(nbytes))
    else:
        nbytes = 2 * count
        data = b"".join(struct.pack(">H", (fill * 4099 + i * 257) & 0xFFFF) for i in range(count))
    return adu(tid, bytes([FUNCTION[table], nbytes]) + data)


def exception(tid, table, code):
    return adu(tid, bytes([FUNCTION[table] | 0x80, code]))


def seed(name, mode, base, tags, stream_of):
    reqs = plan(base, tags)
    head = bytes([mode, len(tags) - 1]) + struct.pack(">H", base) + b"".join(tags)
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(head + stream_of(reqs))


def all_good(reqs):
    return b"".join(good_reply(i, t, c, i + 1) for i, (t, s, c) in enumerate(reqs))


def main():
    os.makedirs(OUT, exist_ok=True)
    whole, fixed, bytewise = 0x0E, 0x0F, 0x00  # chunk sizes: all, all + header fix, 1 byte
    holding = [
        tag("f32", "holding", 0),
        tag("u16", "holding", 2),
        tag("i16", "holding", 1, byte_little=True),
        tag("u32", "holding", 1, word_little=True),
        tag("i32", "holding", 2, byte_little=True, word_little=True, scale=1),
        tag("u64", "holding", 2, word_little=True),
        tag("i64", "holding", 4, scale=2),
        tag("f64", "holding", 4, byte_little=True),
        tag("string", "holding", 4, length=4),
    ]
    seed("holding-every-type", whole, 100, holding, all_good)
    seed("holding-every-type-bytewise", bytewise, 100, holding, all_good)
    inputs = [
        tag("u16", "input", 0, scale=1),
        tag("i16", "input", 1, scale=2),
        tag("f32", "input", 1, byte_little=True, word_little=True, scale=3),
        tag("string", "input", 2, byte_little=True, length=8),
        tag("f64", "input", 20, word_little=True),
    ]
    seed("input-scaled-gap", whole, 0, inputs, all_good)
    bits = [tag("bool", "coil", 0), tag("bool", "coil", 3), tag("bool", "coil", 6)]
    bits += [tag("bool", "discrete", 0), tag("bool", "discrete", 200)]
    seed("coils-and-discretes", fixed, 9, bits, all_good)
    mixed = [tag("u16", "holding", 0), tag("bool", "coil", 1), tag("f32", "input", 1)]
    mixed += [tag("string", "holding", 40, length=125)]
    seed("every-table", whole, 65000, mixed, all_good)
    # Merged read refused with 02: the poller splits it and reads each tag alone.
    split = [tag("u16", "holding", 0), tag("u32", "holding", 5), tag("f32", "holding", 5)]

    def refused_then_parts(reqs):
        t, s, c = reqs[0]
        out = exception(0, t, 2)
        for i, w in enumerate([1, 2, 2]):
            out += good_reply(i + 1, t, w, i)
        return out

    seed("merged-read-refused", whole, 10, split, refused_then_parts)
    seed(
        "exceptions",
        whole,
        10,
        [tag("u16", "holding", 0), tag("bool", "coil", 0), tag("u16", "input", 0)],
        lambda reqs: exception(0, 0, 1) + exception(1, 2, 4) + exception(2, 3, 0x0B),
    )
    seed(
        "short-and-long-replies",
        fixed,
        0,
        [tag("u32", "holding", 0), tag("bool", "coil", 0), tag("u64", "input", 0)],
        lambda reqs: good_reply(0, 0, 8, 1)[:-1]
        + good_reply(1, 2, 3, 2)
        + good_reply(2, 3, 2, 3),
    )
    seed(
        "wrong-function-and-transaction",
        whole,
        0,
        [tag("u16", "holding", 0), tag("u16", "input", 0)],
        lambda reqs: good_reply(0, 3, 1, 1) + good_reply(7, 3, 1, 1),
    )
    seed(
        "end-of-address-space",
        fixed,
        65530,
        [tag("u64", "holding", 0), tag("u64", "holding", 4), tag("bool", "coil", 5)],
        all_good,
    )
    seed(
        "junk",
        whole,
        0,
        [tag("u16", "holding", 0)],
        lambda reqs: bytes(range(256)),
    )


if __name__ == "__main__":
    main()
