"""The host side of the guest page cache probe (harness/guest/helpers/pcprobe.py).

One Python start in the guest per batch of operations: under TCG a start costs a few
hundred milliseconds, so callers group what they measure.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.core.errors import HarnessError
from harness.vm.machine import VM

PROBE_SOURCE = Path(__file__).parent / "helpers" / "pcprobe.py"
GUEST_PROBE = "/run/harness-pcprobe.py"


class ProbeError(HarnessError):
    """An operation of the probe failed; carries errno."""

    def __init__(self, op: dict[str, Any], result: dict[str, Any]) -> None:
        self.op = op
        self.errno = int(result.get("errno", 0))
        super().__init__(f"guest probe {op['op']} failed: {result.get('error')} (op: {op})")


@dataclass(frozen=True)
class Residency:
    pages: int
    resident: int

    def __str__(self) -> str:
        return f"{self.resident}/{self.pages} pages resident"


class _Server:
    """The probe running as a server in the guest, one per VM (kept on the VM object)."""

    def __init__(self, vm: VM) -> None:
        assert vm.ssh is not None
        vm.run(f"cat > {GUEST_PROBE}", stdin=PROBE_SOURCE.read_bytes(), check=True)
        self.channel = vm.ssh.open_stream(f"exec python3 {GUEST_PROBE} --serve", TIMEOUT)
        self.reader = self.channel.makefile("rb")

    def ask(self, ops: list[dict[str, Any]]) -> list[dict[str, Any]]:
        self.channel.sendall(json.dumps(ops).encode() + b"\n")
        line = self.reader.readline()
        if not line:
            err = b""
            while self.channel.recv_stderr_ready():
                err += self.channel.recv_stderr(65536)
            raise HarnessError(f"the guest probe ended: {err.decode(errors='replace')[-2000:]}")
        answers: list[dict[str, Any]] = json.loads(line)
        return answers


TIMEOUT = 300.0


class Probe:
    def __init__(self, vm: VM) -> None:
        self.vm = vm

    def _server(self) -> _Server:
        server = getattr(self.vm, "probe_server", None)
        if server is None or server.channel.closed:
            server = _Server(self.vm)
            self.vm.probe_server = server  # type: ignore[attr-defined]
        return server

    def batch(self, ops: list[dict[str, Any]], *, strict: bool = True) -> list[dict[str, Any]]:
        try:
            answers = self._server().ask(ops)
        except (OSError, EOFError, TimeoutError) as exc:
            self.vm.probe_server = None  # type: ignore[attr-defined]
            self.vm.mark_broken()
            raise HarnessError(f"lost the guest probe during {[o['op'] for o in ops]}: "
                               f"{exc!r}") from exc
        if strict:
            for op, answer in zip(ops, answers, strict=True):
                if "error" in answer:
                    raise ProbeError(op, answer)
        return answers

    def one(self, op: dict[str, Any], *, strict: bool = True) -> dict[str, Any]:
        return self.batch([op], strict=strict)[0]

    # Conveniences over single operations.
    def read(self, path: str, method: str = "read") -> dict[str, Any]:
        return self.one({"op": "read", "path": path, "method": method})

    def residency(self, path: str) -> Residency:
        answer = self.one({"op": "mincore", "path": path})
        return Residency(answer["pages"], answer["resident"])

    def pfns(self, *paths: str) -> dict[str, dict[str, list[int]]]:
        return self.one({"op": "pfns", "paths": list(paths)})

    def meminfo(self) -> dict[str, int]:
        return self.one({"op": "meminfo"})

    def drop_caches(self) -> None:
        self.one({"op": "drop_caches"})

    def cgroup_read(self, cgroup: str, path: str, method: str = "read") -> dict[str, Any]:
        return self.one({"op": "cgroup_read", "cgroup": cgroup, "path": path,
                         "method": method})
