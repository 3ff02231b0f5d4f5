"""Unplugging a disk waits for QEMU's DEVICE_DELETED however long the guest takes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.core.waits import WaitLedger
from harness.vm.machine import VM, Disk, HotplugDisk


class _SlowQMP:
    """qemu.qmp raises TimeoutError from pull_event(wait=s) when no event came in time."""

    def __init__(self, silent_polls: int) -> None:
        self.silent = silent_polls
        self.commands: list[str] = []

    def cmd(self, name: str, **args: Any) -> None:
        self.commands.append(name)

    def pull_event(self, wait: float) -> dict[str, Any] | None:
        if self.silent:
            self.silent -= 1
            raise TimeoutError
        return {"event": "DEVICE_DELETED", "data": {"device": "dev-hp1"}}


class _FakeVM:
    name = "vm"

    def __init__(self, qmp: _SlowQMP, attached: HotplugDisk) -> None:
        self.qmp = qmp
        self._disks = {"hp1": attached}
        self.waits = WaitLedger()

    def _detach_disk(self, attached: HotplugDisk, timeout: float) -> None:
        VM._detach_disk(self, attached, timeout)  # type: ignore[arg-type]

    def _require(self, *states: object) -> None:
        return None


def test_a_guest_slower_than_one_poll_still_releases_the_disk() -> None:
    attached = HotplugDisk(Disk("hp1", Path("/x.img"), "harness-hp1", True), "/dev/vdb")
    qmp = _SlowQMP(silent_polls=3)
    fake = _FakeVM(qmp, attached)
    VM.detach_disk(fake, attached, timeout=30.0)  # type: ignore[arg-type]
    assert qmp.commands == ["device_del", "blockdev-del"]
    assert fake._disks == {}
    # The wait for the guest is hot-plug time in the per-case split of the suite report.
    assert fake.waits.seconds["hotplug"] > 0 and fake.waits.seconds["guest"] == 0
