#!/usr/bin/env python3
"""Interoperability of our Modbus side with pymodbus, a third-party Modbus stack.

    pymodbus TCP server (the PLC)  <- gateway-tx polls it (read functions only)
          gateway-tx  ==UDP on 127.0.0.1==>  gateway-rx
    gateway-rx's read-only Modbus mirror  <- pymodbus TCP client reads it, tries to write

Runs the released daemons (target/release/gateway-tx, gateway-rx) as subprocesses with
temporary configs, and checks:
  * every tag's registers / bits on the mirror equal the pymodbus server's, word for word
    (u16, i16, u32/i32/f32/f64/u64/i64 in big and little word order, little byte order, a
    scaled tag, a string, coils, discrete inputs), including a tag behind a gap that the
    pymodbus server refuses with exception 02 (the poller's merged read must fall back);
  * a value changed in the pymodbus server reaches the mirror;
  * write_register, write_registers, write_coil and write_coils on the mirror answer
    exception 01 (Illegal Function) and change nothing;
  * a register no tag covers answers 02, a unit id with no tags answers 0A;
  * gateway-tx sent the pymodbus server read functions only (01-04) and not one write;
  * both daemons stop on SIGTERM.
Both daemons are always killed at the end. Exits non-zero on any failure.

Usage: pymodbus_interop.py [--bin-dir target/release] [--deadline 20]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import Failures, die_with_parent, free_port, on_sigterm  # noqa: E402

import pymodbus
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.pdu import ExceptionResponse
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

UNIT = 1
DT = AsyncModbusTcpClient.DATATYPE
WRITE_FUNCTIONS = {5, 6, 15, 16, 22, 23}
READ_FUNCTIONS = {1, 2, 3, 4}


# --- The PLC's contents: what the tags are and how their registers look --------------------------


def swap_bytes(words: list[int]) -> list[int]:
    return [((w & 0xFF) << 8) | (w >> 8) for w in words]


@dataclass
class Tag:
    name: str
    table: str  # holding | input | coil | discrete
    address: int
    type: str  # the gateway's type name
    value: object  # engineering value as the PLC holds it (raw for scaled tags)
    word_order: str = "big"
    byte_order: str = "big"
    length: int | None = None  # registers, strings only
    scale: float | None = None
    offset: float | None = None

    def words(self) -> list[int]:
        """The registers the PLC holds for this tag, built with pymodbus's own converter."""
        dt = {
            "u16": DT.UINT16, "i16": DT.INT16, "u32": DT.UINT32, "i32": DT.INT32,
            "u64": DT.UINT64, "i64": DT.INT64, "f32": DT.FLOAT32, "f64": DT.FLOAT64,
            "string": DT.STRING,
        }[self.type]
        regs = AsyncModbusTcpClient.convert_to_registers(self.value, dt, word_order=self.word_order)
        if self.type == "string":
            assert self.length is not None and len(regs) <= self.length
            regs = regs + [0] * (self.length - len(regs))
        if self.byte_order == "little":
            regs = swap_bytes(regs)
        return regs

    @property
    def count(self) -> int:
        return 1 if self.table in ("coil", "discrete") else len(self.words())

    def toml(self) -> str:
        lines = [
            "[[modbus.tag]]",
            f'name = "{self.name}"',
            f'table = "{self.table}"',
            f"address = {self.address}",
            f'type = "{self.type}"',
        ]
        if self.length is not None:
            lines.append(f"length = {self.length}")
        if self.table in ("holding", "input") and self.type != "string" and self.count > 1:
            lines.append(f'word_order = "{self.word_order}"')
        if self.table in ("holding", "input"):
            lines.append(f'byte_order = "{self.byte_order}"')
        if self.scale is not None:
            lines.append(f"scale = {self.scale!r}")
        if self.offset is not None:
            lines.append(f"offset = {self.offset!r}")
        return "\n".join(lines) + "\n"


def f32(x: float) -> float:
    """x rounded to the nearest f32, so the PLC's value is exactly representable."""
    return struct.unpack(">f", struct.pack(">f", x))[0]


TAGS: list[Tag] = [
    Tag("interop/hr/u16", "holding", 0, "u16", 51234),
    Tag("interop/hr/i16", "holding", 1, "i16", -12345),
    Tag("interop/hr/u32_big", "holding", 2, "u32", 3_000_000_123),
    Tag("interop/hr/u32_little", "holding", 4, "u32", 0x12345678, word_order="little"),
    Tag("interop/hr/i32_big", "holding", 6, "i32", -2_000_000_001),
    Tag("interop/hr/f32_big", "holding", 8, "f32", f32(3.1415927)),
    Tag("interop/hr/f32_little", "holding", 10, "f32", f32(-1234.5), word_order="little"),
    Tag("interop/hr/f64_big", "holding", 12, "f64", 12345.678901234567),
    Tag("interop/hr/f64_little", "holding", 16, "f64", -0.1, word_order="little"),
    Tag("interop/hr/u64_big", "holding", 20, "u64", 0x0123456789ABCDEF),
    Tag("interop/hr/string", "holding", 24, "string", "PUMP-3 Nord", length=8),
    Tag("interop/hr/u16_byteswap", "holding", 32, "u16", 0x1234, byte_order="little"),
    Tag("interop/hr/f32_dcba", "holding", 33, "f32", f32(-0.000123), word_order="little",
        byte_order="little"),
    Tag("interop/hr/u16_scaled", "holding", 35, "u16", 1234, scale=0.1, offset=-20.0),
    # 36..39 are not defined in the PLC (it answers 02): the poller bridges small gaps in
    # one read, so this tag tests its fall-back to one read per tag.
    Tag("interop/hr/i32_island", "holding", 40, "i32", -7, word_order="little"),
    Tag("interop/ir/u16", "input", 0, "u16", 7),
    Tag("interop/ir/f32", "input", 1, "f32", f32(21.5)),
    Tag("interop/ir/i64", "input", 3, "i64", -9_000_000_000_000_000_001),
    Tag("interop/ir/u32_little", "input", 7, "u32", 0xDEADBEEF, word_order="little"),
]
COILS = [True, False, True, True, False, False, True, False, True, True]  # coils 0..9
DISCRETE_BASE = 100
DISCRETES = [False, True, True, False, True]  # discrete inputs 100..104
TAGS += [Tag(f"interop/coil/{i}", "coil", i, "bool", v) for i, v in enumerate(COILS)]
TAGS += [
    Tag(f"interop/di/{DISCRETE_BASE + i}", "discrete", DISCRETE_BASE + i, "bool", v)
    for i, v in enumerate(DISCRETES)
]
UNDEFINED_HOLDING = 36  # a register no tag covers (and the PLC does not define)

FC_READ = {"coil": 1, "discrete": 2, "holding": 3, "input": 4}


def plc_device() -> SimDevice:
    def reg_block(table: str) -> list[SimData]:
        return [
            SimData(t.address, values=t.words(), datatype=DataType.REGISTERS)
            for t in TAGS
            if t.table == table
        ]

    return SimDevice(
        id=UNIT,
        simdata=(
            [SimData(0, values=list(COILS), datatype=DataType.BITS)],
            [SimData(DISCRETE_BASE, values=list(DISCRETES), datatype=DataType.BITS)],
            reg_block("holding"),
            reg_block("input"),
        ),
    )


# --- Counting what reaches the PLC ---------------------------------------------------------------


@dataclass
class PlcCounters:
    by_function: collections.Counter = field(default_factory=collections.Counter)
    writes: int = 0

    def trace_pdu(self, sending: bool, pdu):
        if not sending:
            fc = pdu.function_code
            self.by_function[fc] += 1
            self.writes += fc in WRITE_FUNCTIONS
        return pdu


# --- Helpers -------------------------------------------------------------------------------------


async def read(client: AsyncModbusTcpClient, table: str, address: int, count: int,
               unit: int = UNIT):
    fn = {
        "coil": client.read_coils,
        "discrete": client.read_discrete_inputs,
        "holding": client.read_holding_registers,
        "input": client.read_input_registers,
    }[table]
    rr = await fn(address, count=count, device_id=unit)
    if rr.isError():
        return ("exception", getattr(rr, "exception_code", None))
    if table in ("coil", "discrete"):
        return list(rr.bits[:count])
    return list(rr.registers)


async def connect(host: str, port: int, deadline: float) -> AsyncModbusTcpClient:
    while True:
        client = AsyncModbusTcpClient(host, port=port, timeout=2, retries=0,
                                      reconnect_delay=0)
        if await client.connect():
            return client
        client.close()
        if time.monotonic() > deadline:
            raise RuntimeError(f"could not connect to {host}:{port}")
        await asyncio.sleep(0.1)


async def snapshot(client: AsyncModbusTcpClient) -> dict[str, object]:
    """Every tag's registers (or bit) as one client sees them, each tag read on its own."""
    out: dict[str, object] = {}
    for t in TAGS:
        try:
            got = await read(client, t.table, t.address, t.count)
        except Exception as e:  # noqa: BLE001 - a timeout or a dropped connection
            got = ("error", repr(e))
        out[t.name] = got[0] if isinstance(got, list) and t.table in ("coil", "discrete") else got
    return out


async def wait_equal(plc: AsyncModbusTcpClient, mirror: AsyncModbusTcpClient,
                     deadline: float) -> tuple[dict, dict]:
    while True:
        want = await snapshot(plc)
        got = await snapshot(mirror)
        if want == got or time.monotonic() > deadline:
            return want, got
        await asyncio.sleep(0.2)


def diff(want: dict, got: dict) -> str:
    return "; ".join(
        f"{k}: PLC {want[k]} mirror {got.get(k)}" for k in want if want[k] != got.get(k)
    )


def engineering_mismatches(http_port: int) -> list[str]:
    """Tags whose value as gateway-rx holds it (its /api/status) differs from the value the
    PLC's registers mean to pymodbus: our decoding of pymodbus's encoding, type by type."""
    url = f"http://127.0.0.1:{http_port}/api/status?limit=1000"
    with urllib.request.urlopen(url, timeout=5) as r:  # noqa: S310 - loopback, our own daemon
        rows = {row["name"]: row for row in json.load(r)["tags"]["rows"]}
    bad = []
    for t in TAGS:
        row = rows.get(t.name)
        if row is None or row["value"] is None or row["quality"] != "Good":
            bad.append(f"{t.name}: {row}")
            continue
        text = row["value"]
        if t.type == "bool":
            ok = text == ("true" if t.value else "false")
        elif t.type == "string":
            ok = json.loads(text) == t.value
        elif t.scale is not None or t.offset is not None:
            want = t.value * (t.scale or 1.0) + (t.offset or 0.0)
            ok = abs(float(text) - want) <= 1e-9 * max(1.0, abs(want))
        elif t.type == "f32":
            ok = f32(float(text)) == t.value
        elif t.type == "f64":
            ok = float(text) == t.value
        else:
            ok = int(text) == t.value
        if not ok:
            bad.append(f"{t.name}: PLC {t.value!r} gateway {text}")
    return bad


# --- The run -------------------------------------------------------------------------------------


async def run(bin_dir: Path, deadline_s: float, work: Path, fails: Failures) -> None:
    plc_port = free_port(socket.SOCK_STREAM)
    link_port = free_port(socket.SOCK_DGRAM)
    mirror_port = free_port(socket.SOCK_STREAM)
    http_port = free_port(socket.SOCK_STREAM)

    counters = PlcCounters()
    server = ModbusTcpServer(plc_device(), address=("127.0.0.1", plc_port),
                             trace_pdu=counters.trace_pdu)
    await server.serve_forever(background=True)
    print(f"pymodbus {pymodbus.__version__} server (PLC) on 127.0.0.1:{plc_port}, "
          f"mirror on 127.0.0.1:{mirror_port}, link on udp 127.0.0.1:{link_port}")

    tx_toml = work / "gateway-tx.toml"
    rx_toml = work / "gateway-rx.toml"
    # Authenticated as a site runs it: a key made by `gateway-tx keygen`, shared by both.
    subprocess.run([str(bin_dir / "gateway-tx"), "keygen", str(work / "link.key")],
                   check=True, stdout=subprocess.DEVNULL)
    tx_toml.write_text(
        f'[link]\ndestination = "127.0.0.1:{link_port}"\nheartbeat_ms = 200\n'
        'key_file = "link.key"\nstate_file = "tx-link.state"\n'
        "snapshot_period_s = 2\n\n"
        f'[[modbus]]\nname = "plc1"\nhost = "127.0.0.1"\nport = {plc_port}\n'
        f"unit_id = {UNIT}\npoll_interval_ms = 100\ntimeout_ms = 1000\n\n"
        + "\n".join(t.toml() for t in TAGS)
    )
    rx_toml.write_text(
        f'[link]\nbind = "127.0.0.1:{link_port}"\n'
        'key_file = "link.key"\nstate_file = "rx-link.state"\n\n'
        f'[modbus_server]\nbind = "127.0.0.1:{mirror_port}"\non_bad_quality = "exception"\n\n'
        "[status]\nlog_interval_s = 3600\n\n[store]\nenabled = false\n\n"
        f'[http]\nbind = "127.0.0.1:{http_port}"\n'
    )

    procs: list[tuple[str, subprocess.Popen]] = []
    logs = {}
    try:
        for name, cfg in (("gateway-rx", rx_toml), ("gateway-tx", tx_toml)):
            log = open(work / f"{name}.log", "wb")  # noqa: SIM115 - closed below
            logs[name] = log
            procs.append((name, subprocess.Popen(
                [str(bin_dir / name), "run", "--config", str(cfg)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,  # noqa: PLW1509 - no threads started yet
            )))

        deadline = time.monotonic() + deadline_s
        plc = await connect("127.0.0.1", plc_port, deadline)
        mirror = await connect("127.0.0.1", mirror_port, deadline)

        # 1. Every tag, word for word.
        started = time.monotonic()
        want, got = await wait_equal(plc, mirror, deadline)
        expected = {
            t.name: (t.value if t.table in ("coil", "discrete") else t.words()) for t in TAGS
        }
        fails.check(want == expected, "pymodbus server holds the intended registers",
                    diff(expected, want))
        fails.check(want == got,
                    f"mirror equals the PLC for all {len(TAGS)} tags "
                    f"(after {time.monotonic() - started:.1f} s)",
                    diff(want, got))
        bad = engineering_mismatches(http_port)
        fails.check(not bad, "gateway-rx's values equal pymodbus's meaning of the registers "
                             "(type, word and byte order, scaling)", "; ".join(bad))

        # Whole ranges in one read each (several tags per request, as a SCADA would read).
        for table, start, count in (("holding", 0, 36), ("input", 0, 9), ("coil", 0, 10),
                                    ("discrete", DISCRETE_BASE, len(DISCRETES))):
            a = await read(plc, table, start, count)
            b = await read(mirror, table, start, count)
            fails.check(a == b, f"one read of {table} {start}..{start + count - 1} equal",
                        f"PLC {a} mirror {b}")

        # 2. A change at the PLC reaches the mirror.
        changed = {
            "interop/hr/u32_big": 4_000_000_001,
            "interop/ir/f32": f32(-42.25),
            "interop/hr/string": "PUMP-4",
            "interop/coil/3": False,
            f"interop/di/{DISCRETE_BASE + 1}": False,
        }
        for t in TAGS:
            if t.name in changed:
                t.value = changed[t.name]
                bits = t.table in ("coil", "discrete")
                await server.async_setValues(UNIT, FC_READ[t.table], t.address,
                                             [t.value] if bits else t.words())
        started = time.monotonic()
        want, got = await wait_equal(plc, mirror, time.monotonic() + deadline_s)
        fails.check(
            want["interop/hr/u32_big"] == [0xEE6B, 0x2801] and want["interop/coil/3"] is False,
            "the PLC's values were changed", str(want))
        fails.check(want == got, f"changes reached the mirror "
                                 f"(after {time.monotonic() - started:.1f} s)", diff(want, got))
        bad = engineering_mismatches(http_port)
        fails.check(not bad, "changed values decoded right", "; ".join(bad))

        # 3. Writes to the mirror: exception 01, nothing changes.
        attempts = (
            ("write_register(0)", lambda: mirror.write_register(0, 1, device_id=UNIT)),
            ("write_registers(2, 2 words)",
             lambda: mirror.write_registers(2, [1, 2], device_id=UNIT)),
            ("write_coil(0)", lambda: mirror.write_coil(0, False, device_id=UNIT)),
            ("write_coils(0, 2 bits)",
             lambda: mirror.write_coils(0, [False, True], device_id=UNIT)),
        )
        for what, call in attempts:
            rr = await call()
            code = rr.exception_code if isinstance(rr, ExceptionResponse) else None
            fails.check(code == 1, f"mirror answers {what} with exception 01",
                        f"answer {rr}")
        got = await snapshot(mirror)
        fails.check(got == want, "mirror unchanged after the write attempts", diff(want, got))

        # 4. Other documented exceptions.
        r = await read(mirror, "holding", UNDEFINED_HOLDING, 1)
        fails.check(r == ("exception", 2), f"register {UNDEFINED_HOLDING} (no tag) -> 02",
                    str(r))
        r = await read(mirror, "holding", 0, 1, unit=UNIT + 1)
        fails.check(r == ("exception", 0x0A), "unit id with no tags -> 0A", str(r))

        # 5. What gateway-tx sent the PLC.
        fns = dict(sorted(counters.by_function.items()))
        fails.check(counters.writes == 0 and set(fns) <= READ_FUNCTIONS,
                    f"PLC received read functions only, zero writes (requests by function code, "
                    f"gateway-tx and this script's reads: {fns})",
                    f"writes {counters.writes}, functions {fns}")

        plc.close()
        mirror.close()

        # 6. Both daemons stop on SIGTERM.
        for name, p in procs:
            fails.check(p.poll() is None, f"{name} still running before SIGTERM",
                        f"exited with {p.returncode}")
            p.send_signal(signal.SIGTERM)
        for name, p in procs:
            try:
                rc = p.wait(timeout=10)
                fails.check(rc == 0, f"{name} exits 0 on SIGTERM", f"exit status {rc}")
            except subprocess.TimeoutExpired:
                fails.check(False, f"{name} exits on SIGTERM", "still running after 10 s")
    finally:
        for _, p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
        for log in logs.values():
            log.close()
        await server.shutdown()
        if fails.items or os.environ.get("INTEROP_SHOW_LOGS"):
            for name in logs:
                text = (work / f"{name}.log").read_text(errors="replace").splitlines()
                print(f"--- last lines of {name}'s log")
                print("\n".join(text[-25:]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin-dir", type=Path,
                    default=Path(__file__).resolve().parents[2] / "target" / "release")
    ap.add_argument("--deadline", type=float, default=20.0,
                    help="seconds for values to reach the mirror")
    args = ap.parse_args()
    for name in ("gateway-tx", "gateway-rx"):
        if not os.access(args.bin_dir / name, os.X_OK):
            print(f"missing {args.bin_dir / name}: cargo build --release -p {name}")
            return 2
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    signal.signal(signal.SIGTERM, on_sigterm)

    fails = Failures()
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="gateway-interop-") as tmp:
        try:
            asyncio.run(run(args.bin_dir, args.deadline, Path(tmp), fails))
        except (Exception, KeyboardInterrupt) as e:  # noqa: BLE001 - reported as a failure
            fails.items.append(f"aborted: {e!r}")
            print(f"  FAIL  aborted: {e!r}")
    took = time.monotonic() - t0
    if fails.items:
        print(f"pymodbus interop: FAILED ({len(fails.items)} of "
              f"{len(fails.items) + len(fails.passed)} checks) in {took:.1f} s")
        return 1
    print(f"pymodbus interop: passed ({len(fails.passed)} checks) in {took:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
