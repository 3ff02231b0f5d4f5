"""A guest whose kernel killed the probe's sshd child (an oops in the probe's own process)
refuses the next channel: the harness must see a lost guest, mark the VM broken so the next
test gets a new one, and raise its own error, never a paramiko exception from the after-test
check (which once left a spoilt guest to the next test)."""

from __future__ import annotations

from typing import Any

import paramiko
import pytest

from harness.core.errors import HarnessError
from harness.core.waits import WaitLedger
from harness.guest.probe import Probe


class _Agent:
    def module_command(self, module: str, *args: str) -> str:
        return f"python3 -m {module} {' '.join(args)}"


class _VM:
    def __init__(self) -> None:
        self.broken = False
        self.waits = WaitLedger()
        self.ssh: Any = self

    def open_stream(self, command: str, timeout: float) -> None:
        raise paramiko.SSHException("Channel closed.")

    def mark_broken(self) -> None:
        self.broken = True


def test_a_probe_that_cannot_start_marks_the_guest_broken() -> None:
    vm = _VM()
    probe = Probe(vm, _Agent())  # type: ignore[arg-type]
    with pytest.raises(HarnessError, match="lost the guest probe during"):
        probe.kernel_log_since(0)
    assert vm.broken
