"""Where a run's time goes: the seconds spent waiting on guests, by kind.

A case's wall time is its own work (pytest, fixtures, image builds, Python) plus the time it
waits for something else: commands and probe calls the guest answers, disks QEMU and the
guest plug in and out, boots. The VM adds its waits to a ledger; the plugin reads it before
and after each case, so the suite report can split each case's time between guest and
harness without guessing.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

# What the VM waits on: "guest" (commands over SSH and probe calls), "hotplug" (a disk
# added or removed through QMP until the guest has it), "boot" (QEMU start to SSH).
KINDS = ("guest", "hotplug", "boot")


class WaitLedger:
    """Seconds spent waiting, by kind. Nested waits count once, for the outermost kind: a
    hot-plug that runs a guest command to find its device is hot-plug time."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = dict.fromkeys(KINDS, 0.0)
        self._depth = 0

    @contextmanager
    def waiting(self, kind: str) -> Iterator[None]:
        if kind not in self.seconds:
            raise ValueError(f"unknown kind of wait {kind!r} (known: {', '.join(KINDS)})")
        self._depth += 1
        started = time.monotonic()
        try:
            yield
        finally:
            self._depth -= 1
            if self._depth == 0:
                self.seconds[kind] += time.monotonic() - started

    def snapshot(self) -> dict[str, float]:
        return dict(self.seconds)

    def since(self, before: dict[str, float]) -> dict[str, float]:
        """The waits added since ``before`` (a snapshot), by kind."""
        return {k: self.seconds[k] - before.get(k, 0.0) for k in self.seconds}
