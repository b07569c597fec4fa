#!/usr/bin/env python3
"""Interoperability of our OPC UA source and mirror with asyncua, a third-party OPC UA stack.

    asyncua server (the plant)  <- gateway-tx subscribes / reads history (never writes)
          gateway-tx  ==UDP on 127.0.0.1==>  gateway-rx
    gateway-rx's read-only OPC UA mirror  <- asyncua client reads, subscribes, reads history,
                                             tries to write, call and add nodes

Runs the released daemons (target/release/gateway-tx, gateway-rx) as subprocesses with
temporary configs, and checks:
  * every variable of the plant (all twelve value types; string, numeric, GUID and opaque
    NodeIds; the plant's namespace named by URI and registered at an index a naive config
    would get wrong) reads on the mirror with the same value, the same Variant type, the
    same DataType attribute, the same source timestamp and the same StatusCode, including a
    value the plant marks Uncertain;
  * the mirror's folders follow the tag path, and engineering units and descriptions arrive;
  * a change at the plant reaches an asyncua subscription on the mirror;
  * history the plant's historian held before gateway-tx started (read by gateway-tx with
    HistoryRead and continuation points, since the plant answers 20 values a page) is
    served by the mirror's HistoryRead, paged with continuation points;
  * older history, outside gateway-tx's start-up window, arrives after an operator's
    `gateway-tx backfill --source auto` (the transmitter's buffer never held it, so it is
    read from the plant's historian) and is then served by the mirror's HistoryRead;
  * Write on the mirror fails (BadNotWritable or BadUserAccessDenied) and changes nothing;
    Call and AddNodes fail;
  * the plant server received no Write, Call, AddNodes, DeleteNodes, AddReferences,
    DeleteReferences or HistoryUpdate request at all (gateway-tx is read-only);
  * both daemons stop on SIGTERM.
Both daemons are always killed at the end. Exits non-zero on any failure.

Usage: asyncua_interop.py [--bin-dir target/release] [--deadline 30]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import logging
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import Failures, die_with_parent, free_port, on_sigterm  # noqa: E402

import asyncua
from asyncua import Client, Server, ua
from asyncua.server.history import HistoryDict
from asyncua.server.uaprocessor import UaProcessor

PLANT_NS = "urn:interop:plant"
MIRROR_NS = "urn:interop:mirror"
#: Requests a read-only client must never send.
CHANGING_SERVICES = {
    "WriteRequest", "CallRequest", "AddNodesRequest", "DeleteNodesRequest",
    "AddReferencesRequest", "DeleteReferencesRequest", "HistoryUpdateRequest",
}
HISTORY_VALUES = 50
# Two days old: outside the start-up window, only a backfill brings them.
OLD_VALUES = 40
OLD_AGE = timedelta(days=2)
PLANT_PAGE = 20  # values per HistoryRead page the plant answers


def t(us: int) -> datetime:
    """A source timestamp with microsecond resolution (OPC UA keeps 100 ns; Python µs)."""
    return datetime(2026, 3, 4, 5, 6, 7, tzinfo=timezone.utc) + timedelta(microseconds=us)


@dataclass
class Var:
    name: str  # the gateway's tag name, also the browse path on the mirror
    node: str  # the plant's identifier text after nsu=...; (s=, i=, g=, b=)
    vtype: ua.VariantType
    gw_type: str  # the gateway's type name
    value: object
    status: int = 0
    time: datetime = t(0)
    unit: str = ""
    description: str = ""

    def plant_node_id(self, ns: int) -> ua.NodeId:
        kind, ident = self.node.split("=", 1)
        if kind == "s":
            return ua.NodeId(ident, ns, ua.NodeIdType.String)
        if kind == "i":
            return ua.NodeId(int(ident), ns, ua.NodeIdType.Numeric)
        if kind == "g":
            return ua.NodeId(uuid.UUID(ident), ns, ua.NodeIdType.Guid)
        return ua.NodeId(bytes.fromhex(ident), ns, ua.NodeIdType.ByteString)

    def node_text(self) -> str:
        kind, ident = self.node.split("=", 1)
        if kind == "b":
            import base64
            ident = base64.b64encode(bytes.fromhex(ident)).decode()
        return f"nsu={PLANT_NS};{kind}={ident}"

    def toml(self) -> str:
        lines = ["[[opcua.tag]]", f'name = "{self.name}"', f'node = "{self.node_text()}"',
                 f'type = "{self.gw_type}"', "sampling_interval_ms = 50"]
        if self.unit:
            lines.append(f'unit = "{self.unit}"')
        if self.description:
            lines.append(f'description = "{self.description}"')
        return "\n".join(lines) + "\n"


VARS: list[Var] = [
    Var("interop/bool", "s=Bool", ua.VariantType.Boolean, "bool", True, time=t(1)),
    Var("interop/int16", "s=Int16", ua.VariantType.Int16, "i16", -12345, time=t(2)),
    Var("interop/int32", "i=5001", ua.VariantType.Int32, "i32", -2_000_000_001, time=t(3)),
    Var("interop/int64", "s=Int64", ua.VariantType.Int64, "i64", -(2**62) - 7, time=t(4)),
    Var("interop/uint16", "s=UInt16", ua.VariantType.UInt16, "u16", 65000, time=t(5)),
    Var("interop/uint32", "g=72962b91-fa75-4ae6-8d28-b404dc7daf63", ua.VariantType.UInt32,
        "u32", 4_000_000_001, time=t(6)),
    Var("interop/uint64", "s=UInt64", ua.VariantType.UInt64, "u64", 2**63 + 11, time=t(7)),
    Var("interop/float", "s=Float", ua.VariantType.Float, "f32", -1234.5, time=t(8),
        unit="bar", description="Header pressure"),
    Var("interop/line1/double", "s=Line1.Flow", ua.VariantType.Double, "f64",
        12345.678901234567, time=t(9), unit="m3/h", description="Line 1 flow"),
    Var("interop/string", "b=00fe10", ua.VariantType.String, "string", "Pumpe Nord ✓",
        time=t(10)),
    Var("interop/datetime", "s=DateTime", ua.VariantType.DateTime, "datetime",
        datetime(2025, 12, 31, 23, 59, 58, 123456, tzinfo=timezone.utc), time=t(11)),
    Var("interop/bytestring", "s=Bytes", ua.VariantType.ByteString, "bytestring",
        b"\x00\x01\xfe\xff", time=t(12)),
    Var("interop/uncertain", "s=Uncertain", ua.VariantType.Double, "f64", 7.25,
        status=0x40900000, time=t(13)),  # UncertainLastUsableValue
]
HISTORIZED = Var("interop/line1/flow_history", "s=Line1.FlowHistory", ua.VariantType.Double,
                 "f64", 0.0, time=t(0))


# Every request the plant server receives, by service name. asyncua's processor dispatches
# on the request's type id; wrapping that one method sees every service call of every client.
REQUESTS: collections.Counter[str] = collections.Counter()
_original_process = UaProcessor._process_message


async def _counting_process(self, typeid, requesthdr, seqhdr, body):
    name = ua.ObjectIdNames.get(typeid.Identifier, str(typeid)) if typeid.NamespaceIndex == 0 \
        else str(typeid)
    REQUESTS[name.removesuffix("_Encoding_DefaultBinary")] += 1
    return await _original_process(self, typeid, requesthdr, seqhdr, body)


UaProcessor._process_message = _counting_process


async def start_plant(port: int) -> tuple[Server, int, dict[str, ua.NodeId]]:
    server = Server()
    # Pages of PLANT_PAGE values, so gateway-tx must follow continuation points.
    server.iserver.history_manager.set_storage(HistoryDict(max_history_data_response_size=PLANT_PAGE))
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{port}/plant/")
    server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    # A namespace registered before the plant's: its index is 3, not the 2 a config written
    # for a server with one namespace of its own would use.
    await server.register_namespace("urn:interop:unrelated")
    ns = await server.register_namespace(PLANT_NS)
    folder = await server.nodes.objects.add_folder(ua.NodeId("Plant", ns), "Plant")
    # The historized variable's current value is the newest point of its history: gateway-tx
    # sends it both live and from its HistoryRead, and the store must keep it once.
    now = datetime.now(timezone.utc).replace(microsecond=0)
    history = [ua.DataValue(ua.Variant(float(i) * 1.5, ua.VariantType.Double),
                            SourceTimestamp=now - timedelta(seconds=HISTORY_VALUES - i))
               for i in range(HISTORY_VALUES)]
    HISTORIZED.value = history[-1].Value.Value
    HISTORIZED.time = history[-1].SourceTimestamp
    nodes = {}
    for v in VARS + [HISTORIZED]:
        node = await folder.add_variable(v.plant_node_id(ns), v.name.rsplit("/", 1)[1],
                                         ua.Variant(v.value, v.vtype))
        await node.write_value(ua.DataValue(ua.Variant(v.value, v.vtype),
                                            StatusCode=ua.StatusCode(v.status),
                                            SourceTimestamp=v.time))
        nodes[v.name] = node.nodeid
    hist = server.get_node(nodes[HISTORIZED.name])
    await server.iserver.history_manager.storage.new_historized_node(hist.nodeid, None)
    old = [ua.DataValue(ua.Variant(-float(i), ua.VariantType.Double),
                        SourceTimestamp=now - OLD_AGE + timedelta(minutes=i))
           for i in range(OLD_VALUES)]
    for dv in old + history:
        await server.iserver.history_manager.storage.save_node_value(hist.nodeid, dv)
    await hist.write_attribute(ua.AttributeIds.Historizing, ua.DataValue(True))
    await hist.write_attribute(ua.AttributeIds.AccessLevel, ua.DataValue(
        ua.Variant(ua.AccessLevel.CurrentRead.mask | ua.AccessLevel.HistoryRead.mask,
                   ua.VariantType.Byte)))
    await server.start()
    return server, ns, nodes


async def connect(url: str, deadline: float) -> Client:
    last = None
    while time.monotonic() < deadline:
        client = Client(url, timeout=5)
        try:
            await client.connect()
            return client
        except Exception as e:  # noqa: BLE001 - retried until the deadline
            last = e
            await asyncio.sleep(0.3)
    raise RuntimeError(f"could not connect to {url}: {last!r}")


async def wait_values(client: Client, nodes: dict[str, ua.NodeId], deadline: float
                      ) -> dict[str, ua.DataValue]:
    """Reads every mirror node until all have a value from the plant (not the server's
    waiting-for-data placeholder), or the deadline passes."""
    got: dict[str, ua.DataValue] = {}
    while True:
        dvs = await client.read_attributes([client.get_node(n) for n in nodes.values()],
                                           ua.AttributeIds.Value)
        got = dict(zip(nodes, dvs))
        if all(dv.StatusCode.value in (0, 0x40900000) and dv.SourceTimestamp is not None
               for dv in got.values()) or time.monotonic() > deadline:
            return got
        await asyncio.sleep(0.2)


def same(a: object, b: object) -> bool:
    return a == b or (isinstance(a, float) and isinstance(b, float) and abs(a - b) == 0.0)


async def run(bin_dir: Path, deadline_s: float, work: Path, fails: Failures) -> None:
    plant_port = free_port(socket.SOCK_STREAM)
    link_port = free_port(socket.SOCK_DGRAM)
    mirror_port = free_port(socket.SOCK_STREAM)
    plant, plant_ns, plant_nodes = await start_plant(plant_port)
    print(f"asyncua {asyncua.__version__} server (plant) on 127.0.0.1:{plant_port}, "
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
        f'[history]\ndir = "{work / "tx-history"}"\n\n'
        f'[[opcua]]\nname = "plant"\nurl = "opc.tcp://127.0.0.1:{plant_port}/plant/"\n'
        f'pki_dir = "{work / "tx-pki"}"\npublishing_interval_ms = 50\n'
        "history_window_s = 3600\nhistory_values_per_request = 1000\n\n"
        + "\n".join(v.toml() for v in VARS)
        + "\n" + HISTORIZED.toml() + "historize = true\n"
    )
    rx_toml.write_text(
        f'[link]\nbind = "127.0.0.1:{link_port}"\n'
        'key_file = "link.key"\nstate_file = "rx-link.state"\n\n'
        f'[opcua_server]\nbind = "127.0.0.1:{mirror_port}"\nnamespace_uri = "{MIRROR_NS}"\n'
        f'pki_dir = "{work / "rx-pki"}"\n\n'
        "[status]\nlog_interval_s = 3600\n\n"
        f'[store]\npath = "{work / "history.sqlite"}"\ngap_log = "{work / "gaps.jsonl"}"\n'
    )

    procs: list[tuple[str, subprocess.Popen]] = []
    try:
        for name, cfg in (("gateway-rx", rx_toml), ("gateway-tx", tx_toml)):
            log = open(work / f"{name}.log", "wb")  # noqa: SIM115 - the child owns it
            procs.append((name, subprocess.Popen(
                [str(bin_dir / name), "run", "--config", str(cfg)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,  # noqa: PLW1509 - no threads started yet
            )))

        deadline = time.monotonic() + deadline_s
        mirror = await connect(f"opc.tcp://127.0.0.1:{mirror_port}/", deadline)
        ns = await mirror.get_namespace_index(MIRROR_NS)
        mnodes = {v.name: ua.NodeId(v.name, ns, ua.NodeIdType.String) for v in VARS}

        # 1. Every variable: value, Variant type, DataType, source timestamp, StatusCode.
        started = time.monotonic()
        got = await wait_values(mirror, mnodes, deadline)
        print(f"  (values on the mirror after {time.monotonic() - started:.1f} s)")
        for v in VARS:
            dv = got[v.name]
            value = dv.Value.Value if dv.Value is not None else None
            vt = dv.Value.VariantType if dv.Value is not None else None
            fails.check(
                same(value, v.value) and vt == v.vtype and dv.SourceTimestamp == v.time
                and dv.StatusCode.value == v.status,
                f"{v.name}: {v.vtype.name} {v.value!r} status 0x{v.status:08X} at {v.time}",
                f"mirror has {vt} {value!r} status 0x{dv.StatusCode.value:08X} "
                f"at {dv.SourceTimestamp}")
        for v in VARS:
            dt = await mirror.get_node(mnodes[v.name]).read_data_type()
            fails.check(dt == ua.NodeId(v.vtype.value), f"{v.name}: DataType {v.vtype.name}",
                        f"mirror says {dt}")

        # 2. Folders from the tag path; units and descriptions.
        node = await mirror.nodes.objects.get_child([f"{ns}:interop", f"{ns}:line1",
                                                     f"{ns}:double"])
        fails.check(node.nodeid == mnodes["interop/line1/double"],
                    "browse path Objects/interop/line1/double finds the tag", str(node.nodeid))
        desc = await node.read_description()
        fails.check(desc.Text == "Line 1 flow", "description arrives", repr(desc))
        try:
            eu = await (await node.get_child("0:EngineeringUnits")).read_value()
            fails.check(eu.DisplayName.Text == "m3/h", "EngineeringUnits arrive", repr(eu))
        except ua.UaError as e:
            fails.check(False, "EngineeringUnits arrive", repr(e))

        # 3. A change at the plant reaches a subscription on the mirror.
        changes: asyncio.Queue = asyncio.Queue()

        class Handler:
            def datachange_notification(self, node, val, data):
                changes.put_nowait(data.monitored_item.Value)

        sub = await mirror.create_subscription(50, Handler())
        await sub.subscribe_data_change(mirror.get_node(mnodes["interop/line1/double"]))
        first = await asyncio.wait_for(changes.get(), 5)  # the initial value
        new_time = datetime.now(timezone.utc).replace(microsecond=123456)
        await plant.get_node(plant_nodes["interop/line1/double"]).write_value(
            ua.DataValue(ua.Variant(-0.5, ua.VariantType.Double), SourceTimestamp=new_time))
        seen = None
        try:
            while True:
                dv = await asyncio.wait_for(changes.get(), 5)
                if dv.Value.Value == -0.5:
                    seen = dv
                    break
        except TimeoutError:
            pass
        fails.check(first.Value.Value == 12345.678901234567 and seen is not None
                    and seen.SourceTimestamp == new_time,
                    "subscription on the mirror sees the plant's change with its timestamp",
                    f"first {first.Value}, change {seen}")
        await sub.delete()

        # 4. History from the plant's historian, paged on both sides.
        hnode = mirror.get_node(ua.NodeId(HISTORIZED.name, ns, ua.NodeIdType.String))
        details = ua.ReadRawModifiedDetails(IsReadModified=False,
                                            StartTime=t(0) - timedelta(days=365),
                                            EndTime=datetime.now(timezone.utc)
                                            + timedelta(days=1),
                                            NumValuesPerNode=7, ReturnBounds=False)
        values: list[float] = []
        pages = 0
        cp = None
        hist_deadline = time.monotonic() + deadline_s
        while True:
            res = await hnode.history_read(details, cp)
            pages += 1
            if res.StatusCode.is_bad():
                fails.check(False, "HistoryRead on the mirror", str(res.StatusCode))
                break
            values += [dv.Value.Value for dv in res.HistoryData.DataValues]
            cp = res.ContinuationPoint
            if cp is None:
                if len(values) >= HISTORY_VALUES or time.monotonic() > hist_deadline:
                    break
                values, pages = [], 0  # not all there yet: the store is still filling
                await asyncio.sleep(0.5)
        want = [float(i) * 1.5 for i in range(HISTORY_VALUES)]
        fails.check(values == want and pages >= HISTORY_VALUES // 7,
                    f"mirror HistoryRead returns the plant's {HISTORY_VALUES} historical "
                    f"values in order, each once (the newest came live too), {pages} pages of 7",
                    f"got {len(values)} values in {pages} pages: {values[:10]}...")
        plant_reads = REQUESTS["HistoryReadRequest"]
        fails.check(plant_reads >= HISTORY_VALUES // PLANT_PAGE,
                    "gateway-tx followed the plant's continuation points",
                    f"{plant_reads} HistoryRead requests at the plant")

        # 4b. Older history only the plant's historian holds: an operator's backfill.
        now = datetime.now(timezone.utc)
        start, end = now - OLD_AGE - timedelta(hours=1), now - OLD_AGE + timedelta(hours=1)
        fmt = "%Y-%m-%dT%H:%M:%SZ"
        before = REQUESTS["HistoryReadRequest"]
        # Not subprocess.run: the plant serves from this event loop and must keep answering.
        bf = await asyncio.create_subprocess_exec(
            str(bin_dir / "gateway-tx"), "backfill", "--config", str(tx_toml),
            "--from", start.strftime(fmt), "--to", end.strftime(fmt),
            "--tag", HISTORIZED.name, "--wait", str(int(deadline_s)),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        raw, _ = await asyncio.wait_for(bf.communicate(), deadline_s + 10)
        out = raw.decode(errors="replace")
        fails.check(bf.returncode == 0 and f"{OLD_VALUES} values read" in out,
                    "gateway-tx backfill --source auto reads what its buffer never held from "
                    "the plant's historian", out.strip())
        fails.check(REQUESTS["HistoryReadRequest"] > before,
                    "the backfill asked the plant with HistoryRead",
                    f"{REQUESTS['HistoryReadRequest'] - before} new requests")
        old_details = ua.ReadRawModifiedDetails(IsReadModified=False, StartTime=start,
                                                EndTime=end, NumValuesPerNode=0,
                                                ReturnBounds=False)
        old_values: list[float] = []
        hist_deadline = time.monotonic() + deadline_s
        while time.monotonic() < hist_deadline:
            res = await hnode.history_read(old_details)
            old_values = [dv.Value.Value for dv in res.HistoryData.DataValues or []]
            if len(old_values) >= OLD_VALUES:
                break
            await asyncio.sleep(0.3)
        fails.check(old_values == [-float(i) for i in range(OLD_VALUES)],
                    f"the mirror serves the {OLD_VALUES} backfilled values in order, each once",
                    f"got {len(old_values)}: {old_values[:10]}")

        # 5. The mirror refuses Write, Call and AddNodes.
        target = mirror.get_node(mnodes["interop/int32"])
        try:
            await target.write_value(ua.DataValue(ua.Variant(1, ua.VariantType.Int32)))
            fails.check(False, "Write on the mirror refused", "the write succeeded")
        except ua.UaStatusCodeError as e:
            fails.check(e.code in (ua.StatusCodes.BadNotWritable,
                                   ua.StatusCodes.BadUserAccessDenied),
                        "Write on the mirror answers BadNotWritable / BadUserAccessDenied",
                        f"{e!r}")
        after = await target.read_value()
        fails.check(after == -2_000_000_001, "value unchanged after the write", repr(after))
        try:
            await mirror.nodes.objects.call_method(ua.NodeId(1, 0), 1)
            fails.check(False, "Call on the mirror refused", "the call succeeded")
        except ua.UaStatusCodeError as e:
            fails.check(True, f"Call on the mirror refused ({type(e).__name__})")
        try:
            await mirror.nodes.objects.add_folder(ua.NodeId("Injected", ns), "Injected")
            fails.check(False, "AddNodes on the mirror refused", "the node was added")
        except ua.UaStatusCodeError as e:
            fails.check(True, f"AddNodes on the mirror refused ({type(e).__name__})")
        await mirror.disconnect()

        # 6. What the gateway asked the plant.
        asked = dict(sorted(REQUESTS.items()))
        changing = {k: n for k, n in asked.items() if k in CHANGING_SERVICES}
        fails.check(not changing and asked.get("CreateMonitoredItemsRequest", 0) > 0,
                    f"the plant received no changing request (requests by service: {asked})",
                    f"changing requests {changing}")

        # 7. Both daemons stop on SIGTERM.
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
        await plant.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--bin-dir", type=Path, default=Path("target/release"))
    parser.add_argument("--deadline", type=float, default=30.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    signal.signal(signal.SIGTERM, on_sigterm)
    fails = Failures()
    with tempfile.TemporaryDirectory(prefix="asyncua-interop-") as tmp:
        work = Path(tmp)
        try:
            asyncio.run(run(args.bin_dir.resolve(), args.deadline, work, fails))
        except Exception as e:  # noqa: BLE001 - reported as a failure with the logs
            import traceback
            traceback.print_exc()
            fails.check(False, "run completed", repr(e))
        if fails.items:
            for name in ("gateway-tx", "gateway-rx"):
                log = work / f"{name}.log"
                if log.exists():
                    print(f"--- {name} log (last 40 lines) ---")
                    print("\n".join(log.read_text(errors="replace").splitlines()[-40:]))
    print(f"asyncua interop: {len(fails.passed)} checks passed, {len(fails.items)} failed")
    return 1 if fails.items else 0


if __name__ == "__main__":
    sys.exit(main())
