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
from harness.vm.sshclient import GuestSSH


class _ClosingChannel:
    def exec_command(self, command: str) -> None:
        raise paramiko.SSHException("Channel closed.")


class _Transport:
    def open_session(self, timeout: float) -> _ClosingChannel:
        return _ClosingChannel()


def test_a_channel_the_guest_closes_at_once_is_a_lost_connection() -> None:
    ssh = GuestSSH.__new__(GuestSSH)
    ssh._transport = lambda: _Transport()  # type: ignore[method-assign]
    with pytest.raises(ConnectionError, match="refused a channel"):
        ssh.open_stream("exec python3 probe.py --serve", 5.0)


class _Agent:
    def path(self, name: str) -> str:
        return f"/run/helpers/{name}"


class _VM:
    def __init__(self) -> None:
        self.broken = False
        self.waits = WaitLedger()
        self.ssh: Any = self

    def open_stream(self, command: str, timeout: float) -> None:
        raise ConnectionError("the guest refused a channel")

    def mark_broken(self) -> None:
        self.broken = True


def test_a_probe_that_cannot_start_marks_the_guest_broken() -> None:
    vm = _VM()
    probe = Probe(vm, _Agent())  # type: ignore[arg-type]
    with pytest.raises(HarnessError, match="lost the guest probe during"):
        probe.kernel_log_since(0)
    assert vm.broken
