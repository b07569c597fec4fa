#!/usr/bin/env python3
"""Interoperability of the Sparkplug B sink with pysparkplug, a third-party Sparkplug library.

    pymodbus TCP server (the PLC: one tag of every type Modbus carries)  <- gateway-tx polls it
          gateway-tx  ==UDP on 127.0.0.1==>  gateway-rx (store -> spool -> [mqtt] sparkplug_b)
    Mosquitto  <- this script, a Sparkplug host: paho for MQTT, pysparkplug's decoding

Runs the released daemons (target/release/gateway-tx, gateway-rx) with temporary configs,
through the Mosquitto of .ci/services (GATEWAY_TEST_MQTT) or, without one, a mosquitto of its
own on a free loopback port. The PLC's values go through three sets, then the script asks for a
rebirth (NCMD `Node Control/Rebirth`), stops the PLC and kills gateway-rx with SIGKILL. Every
message is decoded with pysparkplug as its host client does (a DDATA with the DBIRTH before it
resolving aliases). pysparkplug 0.6.1 refuses a negative Int16 or Int8 sent, as Eclipse Tahu
sends it, sign-extended to 32 bits in int_value (its open bug,
https://github.com/matteosox/pysparkplug/issues/26): only such a payload is read instead by a
raw decoder (pysparkplug's generated protobuf classes and the specification's rules), which
must agree with pysparkplug on every payload both read, and a NOTE says how many. It checks:
  * pysparkplug refuses nothing else, and the raw decoder reads what it refuses;
  * NBIRTH first, with bdSeq, seq 0 and `Node Control/Rebirth`;
  * a DBIRTH for the PLC with every tag's name, alias, datatype and a value the PLC held (each
    DBIRTH, the rebirth's too);
  * DDATA by alias only, each resolving to a DBIRTH name, with the datatype of its tag and a
    value the PLC held, and every value the PLC held in some DDATA;
  * seq one more than the message before (mod 256) from each NBIRTH's 0;
  * the rebirth answered with NBIRTH (the same bdSeq, seq 0) and DBIRTH;
  * a DDEATH when the PLC is gone; the NDEATH (the will) after SIGKILL with the NBIRTH's bdSeq.
With --capture DIR it writes the NBIRTH, the DBIRTH and the DDATA messages there, with what the
PLC sent, for interop/sparkplug/payload.js (sparkplug-payload). Exits non-zero on any failure.

Usage: host.py [--bin-dir target/release] [--capture DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import importlib.metadata
import json
import logging
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import Failures, die_with_parent, free_port, on_sigterm  # noqa: E402

import paho.mqtt.client as paho
import pysparkplug as spb
from pysparkplug._protobuf import sparkplug_b_pb2 as pb2
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

UNIT = 1
GROUP = "interop"
NODE = "gateway-rx"
DEVICE = "plc1"
REBIRTH = "Node Control/Rebirth"


def f32(x: float) -> float:
    return struct.unpack(">f", struct.pack(">f", x))[0]


@dataclass
class Tag:
    name: str
    address: int  # holding register (coil for bool)
    type: str  # the gateway's type name
    spb: spb.DataType
    values: list  # what the PLC holds, set after set
    length: int | None = None

    def words(self, value) -> list[int]:
        dt = {"u16": DT.UINT16, "i16": DT.INT16, "u32": DT.UINT32, "i32": DT.INT32,
              "u64": DT.UINT64, "i64": DT.INT64, "f32": DT.FLOAT32, "f64": DT.FLOAT64,
              "string": DT.STRING}[self.type]
        regs = AsyncModbusTcpClient.convert_to_registers(value, dt)
        if self.length is not None:
            regs = regs + [0] * (self.length - len(regs))
        return regs


DT = AsyncModbusTcpClient.DATATYPE
T = spb.DataType
# Extremes and negatives of every type: the sink puts signed values in the unsigned fields as
# two's complement, which is where decoders part ways.
TAGS = [
    Tag("interop/spb/u16", 0, "u16", T.UINT16, [51234, 0, 65535]),
    Tag("interop/spb/i16", 1, "i16", T.INT16, [12345, -12345, -1]),
    Tag("interop/spb/u32", 2, "u32", T.UINT32, [3_000_000_123, 0, 4_294_967_295]),
    Tag("interop/spb/i32", 4, "i32", T.INT32, [7, -2_000_000_001, -1]),
    Tag("interop/spb/u64", 6, "u64", T.UINT64, [42, 0xF123_4567_89AB_CDEF, 2**64 - 1]),
    Tag("interop/spb/i64", 10, "i64", T.INT64, [1, -9_000_000_000_000_000_001, -1]),
    Tag("interop/spb/f32", 14, "f32", T.FLOAT, [f32(21.5), f32(-1234.5), f32(3.1415927)]),
    Tag("interop/spb/f64", 16, "f64", T.DOUBLE, [12345.678901234567, -0.1, 1e300]),
    Tag("interop/spb/string", 20, "string", T.STRING, ["PUMP-3", "Nord", "x"], length=4),
    Tag("interop/spb/bool", 0, "bool", T.BOOLEAN, [True, False, True]),
]
SETS = 3


def tx_tags_toml() -> str:
    out = []
    for t in TAGS:
        table = "coil" if t.type == "bool" else "holding"
        out.append(f'[[modbus.tag]]\nname = "{t.name}"\ntable = "{table}"\n'
                   f'address = {t.address}\ntype = "{t.type}"\n'
                   + (f"length = {t.length}\n" if t.length else "") + "\n")
    return "".join(out)


async def set_values(plc: ModbusTcpServer, k: int) -> None:
    for t in TAGS:
        if t.type == "bool":
            await plc.async_setValues(UNIT, 1, t.address, [t.values[k]])
        else:
            await plc.async_setValues(UNIT, 3, t.address, t.words(t.values[k]))


class Recorder:
    """Every message on the group's topics, raw, in arrival order (paho's thread appends)."""

    def __init__(self, host: str, port: int) -> None:
        self.lock = threading.Lock()
        self.msgs: list[tuple[str, bytes]] = []
        self.client = paho.Client(client_id=f"interop-host-{os.getpid()}", clean_session=True)
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, *_: c.subscribe(f"spBv1.0/{GROUP}/#", qos=1)
        self.client.connect(host, port, keepalive=30)
        self.client.loop_start()

    def _on_message(self, _c, _u, m) -> None:
        with self.lock:
            self.msgs.append((m.topic, bytes(m.payload)))

    def snapshot(self) -> list[tuple[str, bytes]]:
        with self.lock:
            return list(self.msgs)

    def kinds(self) -> list[str]:
        return [t.split("/")[2] for t, _ in self.snapshot()]

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=0).wait_for_publish(5)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


async def wait_for(pred, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if pred():
            return True
        await asyncio.sleep(0.1)
    return pred()


@dataclass
class RawMetric:
    name: str | None
    alias: int | None
    datatype: spb.DataType
    value: object


@dataclass
class RawPayload:
    """A payload as the raw decoder reads it: the attributes the checks use of pysparkplug's."""

    seq: int | None
    metrics: tuple[RawMetric, ...]


class AliasTable:
    """A birth only the raw decoder could read, as pysparkplug's decode uses a birth: the names
    and datatypes of the aliases of the data after it."""

    def __init__(self, metrics) -> None:
        self.names = {m.alias: m.name for m in metrics if m.alias is not None}
        self.dtypes = {m.name: m.datatype for m in metrics}

    def get_name(self, alias: int) -> str:
        return self.names[alias]

    def get_dtype(self, name: str) -> spb.DataType:
        return self.dtypes[name]


def signed(v: int, bits: int) -> int:
    return v - (1 << bits) if v >> (bits - 1) else v


# The raw decoder, from the Sparkplug B specification: each datatype's protobuf field and how a
# value is read from it. Int8/16/32 go in uint32 int_value as the two's complement of the value
# sign-extended to 32 bits (as Eclipse Tahu writes them), Int64 in uint64 long_value.
SIGNED_32 = ("int_value", lambda v: signed(v, 32))
RAW_FIELDS = {
    T.INT8: SIGNED_32, T.INT16: SIGNED_32, T.INT32: SIGNED_32,
    T.UINT8: ("int_value", int), T.UINT16: ("int_value", int), T.UINT32: ("int_value", int),
    T.INT64: ("long_value", lambda v: signed(v, 64)), T.UINT64: ("long_value", int),
    T.DATETIME: ("long_value", int), T.FLOAT: ("float_value", float),
    T.DOUBLE: ("double_value", float), T.BOOLEAN: ("boolean_value", bool),
    T.STRING: ("string_value", str), T.TEXT: ("string_value", str),
}
RANGES = {T.INT8: (-(2**7), 2**7), T.INT16: (-(2**15), 2**15), T.UINT8: (0, 2**8),
          T.UINT16: (0, 2**16)}


def raw_decode(raw: bytes, birth) -> RawPayload:
    """The payload from pysparkplug's generated protobuf classes (sparkplug_b_pb2) and the rules
    above, not pysparkplug's decoding; the aliases resolved by the birth before it."""
    pb = pb2.Payload.FromString(raw)
    out = []
    for m in pb.metrics:
        alias = m.alias if m.HasField("alias") else None
        name = m.name if m.HasField("name") else birth.get_name(alias) if birth else None
        dt = T(m.datatype) if m.datatype or not birth else birth.get_dtype(name)
        field, read = RAW_FIELDS[dt]
        if m.is_null:
            value = None
        elif m.WhichOneof("value") != field:
            raise ValueError(f"{name}: {dt!r} in {m.WhichOneof('value')}, not {field}")
        else:
            value = read(getattr(m, field))
            lo, hi = RANGES.get(dt, (None, None))
            if lo is not None and not lo <= value < hi:
                raise ValueError(f"{name}: {value} out of {dt!r}")
        out.append(RawMetric(name, alias, dt, value))
    return RawPayload(pb.seq if pb.HasField("seq") else None, tuple(out))


@dataclass
class Decoded:
    topic: spb.Topic
    kind: str
    payload: object | None  # pysparkplug's payload, None when it refused the bytes
    error: str = ""
    raw: bytes = b""
    rawp: RawPayload | None = None  # the raw decoder's, when pysparkplug refused the bytes
    known: bool = False  # refused for a negative Int8/Int16 only (pysparkplug's known bug)

    @property
    def read(self):
        """pysparkplug's payload, else the raw decoder's (for pysparkplug's known bug only)."""
        return self.payload if self.payload is not None else (self.rawp if self.known else None)


def decode_all(msgs: list[tuple[str, bytes]]) -> list[Decoded]:
    """As pysparkplug's own Client does: a birth is kept per (group, node, device) and resolves
    the aliases and datatypes of the data after it. What pysparkplug refuses is read by the raw
    decoder, and counts as read only when the refusal is its known bug: an Int8 or Int16 that is
    negative, which it takes only at its own width (0xFFFF for -1) where the sink sign-extends
    to 32 bits as Eclipse Tahu does (https://github.com/matteosox/pysparkplug/issues/26)."""
    births: dict = {}
    out = []
    for topic_s, raw in msgs:
        topic = spb.Topic.from_str(topic_s)
        key = (topic.group_id, topic.edge_node_id, topic.device_id)
        kind = str(topic.message_type)
        birth = births.get(key)
        try:
            d = Decoded(topic, kind, topic.message_type.payload.decode(raw, birth=birth), "", raw)
        except Exception as e:  # noqa: BLE001 - what pysparkplug refuses is a finding
            d = Decoded(topic, kind, None, f"{type(e).__name__}: {e}", raw)
            try:
                d.rawp = raw_decode(raw, None if kind.endswith("BIRTH") else birth)
            except Exception as e2:  # noqa: BLE001
                d.error += f"; the raw decoder too: {type(e2).__name__}: {e2}"
            d.known = (isinstance(e, OverflowError) and d.rawp is not None
                       and re.fullmatch(r"Int(8|16) overflow with value \d+", str(e)) is not None
                       and any(m.datatype in (T.INT8, T.INT16) and isinstance(m.value, int)
                               and m.value < 0 for m in d.rawp.metrics))
        if kind == "NBIRTH" and d.read is not None:
            births = {k: v for k, v in births.items() if k[:2] != key[:2]}
        if kind in ("NBIRTH", "DBIRTH") and d.read is not None:
            births[key] = d.payload if d.payload is not None else AliasTable(d.rawp.metrics)
        out.append(d)
    return out


def same(t: Tag, got, want) -> bool:
    if t.type == "f32":
        return isinstance(got, float) and f32(got) == want
    return got == want and type(got) is type(want)


def check(fails: Failures, dec: list[Decoded], notes: list[str]) -> None:
    by_name = {t.name: t for t in TAGS}
    kinds = [d.kind for d in dec]
    fails.check(bool(dec) and kinds[0] == "NBIRTH", "NBIRTH is the node's first message",
                str(kinds[:5]))

    # What pysparkplug refused: its known bug only, read instead by the raw decoder, which has
    # to agree with pysparkplug on everything pysparkplug read.
    refused = [d for d in dec if d.payload is None]
    other = [f"{d.kind}: {d.error}" for d in refused if not d.known]
    fails.check(not other, f"pysparkplug read all {len(dec)} messages but {len(refused)} with a "
                "negative Int16/Int8 (its known bug), which the raw decoder read",
                "; ".join(other[:3]))
    if refused and not other:
        negs = sorted({m.value for d in refused for m in d.rawp.metrics
                       if m.datatype in (T.INT8, T.INT16) and isinstance(m.value, int)
                       and m.value < 0})
        by_kind = ", ".join(f"{kinds_n} {k}" for k, kinds_n in
                            Counter(d.kind for d in refused).items())
        notes.append(f"pysparkplug {importlib.metadata.version('pysparkplug')} refused "
                     f"{len(refused)} payloads ({by_kind}) because of negative Int16 values "
                     f"{negs} (sent sign-extended in int_value, as Eclipse Tahu does; its known "
                     "bug, matteosox/pysparkplug issue 26); those were checked with the raw "
                     "protobuf decoder")
    key = lambda p: [(m.name, m.alias, m.datatype, m.value) for m in p.metrics]  # noqa: E731
    both, disagree = 0, []
    for i, d in enumerate(dec):
        if d.payload is not None and d.kind in ("NBIRTH", "DBIRTH", "DDATA"):
            birth = None
            if d.kind == "DDATA":
                birth = next((AliasTable(e.read.metrics) for e in reversed(dec[:i])
                              if e.kind == "DBIRTH" and e.read is not None
                              and e.topic.device_id == d.topic.device_id), None)
            r = raw_decode(d.raw, birth)
            both += 1
            if key(r) != key(d.payload) or r.seq != d.payload.seq:
                disagree.append(f"{d.kind}: raw {key(r)} pysparkplug {key(d.payload)}")
    fails.check(both > 0 and not disagree,
                f"the raw decoder agrees with pysparkplug on all {both} payloads both read",
                "; ".join(disagree[:2]))

    nbirths = [d for d in dec if d.kind == "NBIRTH" and d.payload is not None]
    nb = nbirths[0].payload if nbirths else None
    names = {m.name: m for m in nb.metrics} if nb else {}
    bd = names.get("bdSeq")
    fails.check(bd is not None and bd.datatype == T.INT64 and isinstance(bd.value, int)
                and 0 <= bd.value <= 255 and nb.seq == 0,
                f"NBIRTH: bdSeq {bd.value if bd else None} (Int64), seq 0", str(nb))
    rb = names.get(REBIRTH)
    fails.check(rb is not None and rb.datatype == T.BOOLEAN and rb.value is False,
                f"NBIRTH: '{REBIRTH}' Boolean false", str(rb))

    dbirths = [d for d in dec if d.kind == "DBIRTH"]
    unread = [d.error for d in dbirths if d.read is None]
    by_py = sum(1 for d in dbirths if d.payload is not None)
    fails.check(len(dbirths) >= 2 and not unread,
                f"{len(dbirths)} DBIRTH (the rebirth's among them) read: {by_py} by "
                f"pysparkplug, {len(dbirths) - by_py} by the raw decoder",
                "; ".join(unread[:2]) or "fewer than two")
    read = [d for d in dbirths if d.read is not None]
    full = [d for d in read if {m.name for m in d.read.metrics} >= set(by_name)]
    fails.check(bool(full) and full[-1] is read[-1]
                and all(d.topic.device_id == DEVICE for d in dbirths),
                f"DBIRTH on device '{DEVICE}' names every tag (the last one too)",
                str([(d.topic.device_id, [m.name for m in d.read.metrics]) for d in read][-1:]))
    wrong = []
    for d in read:
        ms = {m.name: m for m in d.read.metrics}
        aliases = [m.alias for m in ms.values()]
        if len(set(aliases)) != len(aliases):
            wrong.append(f"aliases alike: {aliases}")
        for n, m in ms.items():
            t = by_name.get(n)
            if t is None or m.datatype != t.spb or not isinstance(m.alias, int):
                wrong.append(f"{n}: {m.datatype!r} alias {m.alias}")
            elif m.value is not None and not any(same(t, m.value, v) for v in t.values):
                wrong.append(f"{n}: {m.value!r} not among {t.values}")
    fails.check(bool(read) and not wrong, f"each of {len(read)} DBIRTH: every tag's datatype as "
                "configured, an alias each, no two alike, a value the PLC held (or null)",
                "; ".join(wrong[:4]))

    # Data, by alias.
    data = [d for d in dec if d.kind == "DDATA"]
    seen: dict[str, list] = {n: [] for n in by_name}
    wrong, no_alias, metrics = [], 0, 0
    for d in data:
        if d.read is None:
            wrong.append(f"unread DDATA: {d.error}")
            continue
        for m in d.read.metrics:
            metrics += 1
            t = by_name.get(m.name)
            if m.alias is None:
                no_alias += 1
            if t is None or m.datatype != t.spb:
                wrong.append(f"{m.name} {m.datatype!r}")
                continue
            seen[t.name].append(m.value)
            if not any(same(t, m.value, v) for v in t.values):
                wrong.append(f"{t.name}: {m.value!r} not among {t.values}")
    by_py = sum(1 for d in data if d.payload is not None)
    fails.check(bool(data) and no_alias == 0 and not any(w.startswith("unread") for w in wrong),
                f"{len(data)} DDATA ({by_py} read by pysparkplug, {len(data) - by_py} by the "
                f"raw decoder), all {metrics} metrics by alias resolving to a DBIRTH name",
                f"{no_alias} without alias; " + "; ".join(wrong[:2]))
    fails.check(not wrong, "DDATA: each value one the PLC held, with its tag's datatype",
                "; ".join(wrong[:4]))
    missing = [f"{t.name}: {v!r}" for t in TAGS for v in t.values
               if not any(same(t, g, v) for g in seen[t.name])]
    fails.check(not missing, f"every value the PLC held ({SETS} sets of {len(TAGS)} types) "
                "in a DDATA", "; ".join(missing[:4]))

    # seq: NBIRTH 0, then one more per message of the node (NDEATH has none).
    gaps, last = [], None
    for i, d in enumerate(dec):
        if d.kind in ("NDEATH", "NCMD", "DCMD", "STATE"):
            continue  # no seq, or the host's own
        s = d.read.seq if d.read is not None else pb2.Payload.FromString(d.raw).seq
        if d.kind == "NBIRTH":
            if s != 0:
                gaps.append(f"#{i} NBIRTH seq {s}")
        elif last is not None and s != (last + 1) % 256:
            gaps.append(f"#{i} {d.kind} seq {s} after {last}")
        last = s
    fails.check(not gaps, f"seq one more each message (mod 256), {len(dec)} messages",
                "; ".join(gaps[:4]))


async def run(bin_dir: Path, work: Path, capture: Path | None, fails: Failures,
              notes: list[str]) -> None:
    plc_port = free_port(socket.SOCK_STREAM)
    link_port = free_port(socket.SOCK_DGRAM)
    procs: list[tuple[str, subprocess.Popen]] = []
    logs = {}

    def start(name: str, argv: list[str]) -> subprocess.Popen:
        log = logs.get(name) or open(work / f"{name}.log", "ab")  # noqa: SIM115 - closed below
        logs[name] = log
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                             stderr=subprocess.STDOUT,
                             preexec_fn=die_with_parent)  # noqa: PLW1509 - no threads yet
        procs.append((name, p))
        return p

    broker = os.environ.get("GATEWAY_TEST_MQTT", "")
    if broker:
        host, port_s = broker.rsplit(":", 1)
        port = int(port_s)
    else:
        exe = (os.environ.get("GATEWAY_TEST_MOSQUITTO") or shutil.which("mosquitto")
               or ("/usr/sbin/mosquitto" if os.access("/usr/sbin/mosquitto", os.X_OK) else ""))
        if not exe:
            raise RuntimeError("no Mosquitto: GATEWAY_TEST_MQTT unset and no mosquitto binary "
                               "(source .ci/services)")
        host, port = "127.0.0.1", free_port(socket.SOCK_STREAM)
        (work / "mosquitto.conf").write_text(
            f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
        start("mosquitto", [exe, "-c", str(work / "mosquitto.conf")])
        time.sleep(0.5)
    print(f"  broker {host}:{port}")

    plc = ModbusTcpServer(
        SimDevice(id=UNIT, simdata=(
            [SimData(0, values=[False], datatype=DataType.BITS)],
            [SimData(0, values=[False], datatype=DataType.BITS)],
            [SimData(0, values=[0] * 24, datatype=DataType.REGISTERS)],
            [SimData(0, values=[0], datatype=DataType.REGISTERS)],
        )),
        address=("127.0.0.1", plc_port))
    await plc.serve_forever(background=True)
    await set_values(plc, 0)
    plc_up = True

    (work / "rx").mkdir()
    tx_toml = work / "gateway-tx.toml"
    rx_toml = work / "gateway-rx.toml"
    subprocess.run([str(bin_dir / "gateway-tx"), "keygen", str(work / "link.key")],
                   check=True, stdout=subprocess.DEVNULL)
    tx_toml.write_text(
        f'[link]\ndestination = "127.0.0.1:{link_port}"\nheartbeat_ms = 200\n'
        'key_file = "link.key"\nstate_file = "tx-link.state"\n\n'
        '[history]\ndir = "tx-history"\n\n'
        f'[[modbus]]\nname = "{DEVICE}"\nhost = "127.0.0.1"\nport = {plc_port}\n'
        f"unit_id = {UNIT}\npoll_interval_ms = 50\ntimeout_ms = 500\n\n" + tx_tags_toml())
    rx_toml.write_text(
        f'[link]\nbind = "127.0.0.1:{link_port}"\n'
        'key_file = "link.key"\nstate_file = "rx-link.state"\n\n'
        '[status]\nlog_interval_s = 3600\n\n[store]\npath = "rx/history.sqlite"\n\n'
        f'[mqtt]\nhost = "{host}"\nport = {port}\nclient_id = "interop-spb-{os.getpid()}"\n'
        f'qos = 1\nkeep_alive_s = 5\nformat = "sparkplug_b"\ngroup_id = "{GROUP}"\n'
        f'edge_node_id = "{NODE}"\n')

    rec = Recorder(host, port)
    try:
        await asyncio.sleep(0.3)
        rx = start("gateway-rx", [str(bin_dir / "gateway-rx"), "run", "--config", str(rx_toml)])
        start("gateway-tx", [str(bin_dir / "gateway-tx"), "run", "--config", str(tx_toml)])

        def dbirth_full() -> bool:
            for d in decode_all(rec.snapshot()):
                if d.kind == "DBIRTH" and d.read is not None and \
                        {m.name for m in d.read.metrics} >= {t.name for t in TAGS}:
                    return True
            return False

        fails.check(await wait_for(dbirth_full, 30), "NBIRTH and a DBIRTH with every tag",
                    f"none in 30 s: {rec.kinds()[:10]}")
        for k in range(1, SETS):
            await asyncio.sleep(1.0)
            await set_values(plc, k)

        def all_values() -> bool:
            n = sum(1 for k in rec.kinds() if k == "DDATA")
            return n >= SETS * len(TAGS)

        await wait_for(all_values, 20)
        await asyncio.sleep(1.0)

        # Rebirth on the host's request: NBIRTH (same bdSeq, seq 0) and DBIRTH again.
        before = len(rec.snapshot())
        cmd = spb.NCmd(timestamp=spb.get_current_timestamp(), metrics=(
            spb.Metric(timestamp=spb.get_current_timestamp(), name=REBIRTH,
                       datatype=T.BOOLEAN, value=True),))
        rec.publish(f"spBv1.0/{GROUP}/NCMD/{NODE}", cmd.encode(include_dtypes=True))
        ok = await wait_for(lambda: {"NBIRTH", "DBIRTH"} <= set(rec.kinds()[before:]), 10)
        after = decode_all(rec.snapshot())[before:]
        nb = [d.payload for d in after if d.kind == "NBIRTH" and d.payload is not None]
        first = next(d.payload for d in decode_all(rec.snapshot()) if d.kind == "NBIRTH")
        bd = lambda p: next(m.value for m in p.metrics if m.name == "bdSeq")  # noqa: E731
        fails.check(ok and nb and nb[0].seq == 0 and bd(nb[0]) == bd(first),
                    f"NCMD '{REBIRTH}' answered: NBIRTH (bdSeq {bd(first)}, seq 0) and DBIRTH",
                    f"after it: {[d.kind for d in after]}")

        # The PLC gone: its device dies.
        before = len(rec.snapshot())
        await plc.shutdown()
        plc_up = False
        ok = await wait_for(lambda: "DDEATH" in rec.kinds()[before:], 15)
        dd = [d for d in decode_all(rec.snapshot())[before:] if d.kind == "DDEATH"]
        fails.check(ok and dd[0].payload is not None and dd[0].topic.device_id == DEVICE,
                    f"PLC stopped: DDEATH for '{DEVICE}' decoded",
                    f"{[(d.kind, d.error) for d in dd]} {rec.kinds()[before:]}")

        # SIGKILL: the broker publishes the will.
        last_nb = [d.payload for d in decode_all(rec.snapshot())
                   if d.kind == "NBIRTH" and d.payload is not None][-1]
        rx.kill()
        rx.wait()
        ok = await wait_for(lambda: "NDEATH" in rec.kinds(), 20)
        nd = [d for d in decode_all(rec.snapshot()) if d.kind == "NDEATH"]
        got = nd[0].payload.bd_seq_metric.value if nd and nd[0].payload else None
        fails.check(ok and got == bd(last_nb),
                    f"gateway-rx killed (SIGKILL): NDEATH with the NBIRTH's bdSeq {bd(last_nb)}",
                    f"NDEATH bdSeq {got} {[d.error for d in nd]}")

        dec = decode_all(rec.snapshot())
        check(fails, dec, notes)

        if capture is not None:
            capture.mkdir(parents=True, exist_ok=True)
            out = {"group": GROUP, "node": NODE, "device": DEVICE, "messages": [],
                   "tags": [{"name": t.name, "type": t.type, "values": [
                       v if not isinstance(v, int) or isinstance(v, bool) else str(v)
                       for v in t.values]} for t in TAGS]}
            for d in dec:
                if d.kind in ("NBIRTH", "DBIRTH", "DDATA", "NDEATH"):
                    out["messages"].append({"kind": d.kind,
                                            "payload": base64.b64encode(d.raw).decode()})
            (capture / "capture.json").write_text(json.dumps(out, indent=1))
            print(f"  captured {len(out['messages'])} messages to {capture / 'capture.json'}")
    finally:
        rec.close()
        for _, p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for _, p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for log in logs.values():
            log.close()
        if plc_up:
            await plc.shutdown()
        if fails.items or os.environ.get("INTEROP_SHOW_LOGS"):
            for name in logs:
                text = (work / f"{name}.log").read_text(errors="replace").splitlines()
                print(f"--- last lines of {name}'s log")
                print("\n".join(text[-25:]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin-dir", type=Path,
                    default=Path(__file__).resolve().parents[2] / "target" / "release")
    ap.add_argument("--capture", type=Path, help="write the births and data here")
    args = ap.parse_args()
    for name in ("gateway-tx", "gateway-rx"):
        if not os.access(args.bin_dir / name, os.X_OK):
            print(f"missing {args.bin_dir / name}: cargo build --release -p {name}")
            return 2
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    signal.signal(signal.SIGTERM, on_sigterm)

    fails = Failures()
    notes: list[str] = []
    t0 = time.monotonic()
    print(f"pysparkplug {importlib.metadata.version('pysparkplug')} host, gateway-rx's [mqtt] "
          "sink as a Sparkplug B edge node")
    with tempfile.TemporaryDirectory(prefix="gateway-interop-spb-") as tmp:
        try:
            asyncio.run(run(args.bin_dir, Path(tmp), args.capture, fails, notes))
        except (Exception, KeyboardInterrupt) as e:  # noqa: BLE001 - reported as a failure
            fails.items.append(f"aborted: {e!r}")
            print(f"  FAIL  aborted: {e!r}")
    for n in dict.fromkeys(notes):
        print(f"  NOTE  {n}")
    took = time.monotonic() - t0
    if fails.items:
        print(f"pysparkplug interop: {len(fails.items)} of "
              f"{len(fails.items) + len(fails.passed)} checks FAILED ({took:.1f} s)")
        return 1
    print(f"pysparkplug interop: all {len(fails.passed)} checks passed ({took:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
