"""What both interop scripts (interop/modbus, interop/opcua) need around the daemons they run:
killing them with the script, free ports, and the list of checks that passed and failed."""

from __future__ import annotations

import signal
import socket


def die_with_parent() -> None:
    """In the child before exec: SIGKILL when this script dies, even by SIGKILL (Linux)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def on_sigterm(_signum, _frame) -> None:
    raise KeyboardInterrupt  # unwinds through the finally that kills the daemons


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Failures:
    def __init__(self) -> None:
        self.items: list[str] = []
        self.passed: list[str] = []

    def check(self, ok: bool, what: str, detail: str = "") -> bool:
        if ok:
            self.passed.append(what)
            print(f"  ok    {what}")
        else:
            self.items.append(f"{what}: {detail}")
            print(f"  FAIL  {what}: {detail}")
        return ok
