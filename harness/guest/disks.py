"""Read-only image disks kept attached from one test to the next.

Hot-plugging a virtio disk and unplugging it again costs about half a second under TCG
(QEMU's device_add, the guest's PCI probe, ACPI eject), and a third of the suite mounts from
a disk. A read-only disk of an image file is the same device for every test that mounts that
file, so after a test its disks come back here instead of being unplugged, and the next test
that asks for the same file (same path, size, mtime and inode) takes one.

What keeps this from carrying state from one test to the next: a disk comes back only when
the guest could open it exclusively (O_EXCL), which fails while any superblock still holds
it (a lazily unmounted filesystem that a mapping keeps alive, say); such a disk is unplugged
as before. A test that mounts one file twice gets two disks, as before: a disk is taken by
one mount at a time. The page cache of a kept disk is dropped with the others at the start
of every test. At most ``keep`` idle disks are kept, the least recently used unplugged first.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

from harness.vm.machine import VM, HotplugDisk

KEEP = 12  # idle disks kept per guest; the pc machine's PCI bus has about 25 free slots

FileId = tuple[str, int, int, int]  # resolved path, size, mtime_ns, inode


def file_id(path: Path) -> FileId:
    resolved = path.resolve()
    st = os.stat(resolved)
    return str(resolved), st.st_size, st.st_mtime_ns, st.st_ino


class KeptDisks:
    """The idle read-only disks of one guest, by the identity of their image file."""

    def __init__(self, vm: VM, keep: int = KEEP) -> None:
        self.vm = vm
        self.keep = keep
        self._idle: OrderedDict[FileId, list[HotplugDisk]] = OrderedDict()
        self._ids: dict[str, FileId] = {}  # guest device -> the file it was attached for

    def take(self, path: Path) -> HotplugDisk:
        """An idle disk of ``path``, or a newly attached one."""
        key = file_id(path)
        idle = self._idle.get(key)
        if idle:
            disk = idle.pop()
            if not idle:
                del self._idle[key]
            return disk
        disk = self.vm.attach_disk(path, read_only=True)
        self._ids[disk.device] = key
        return disk

    def give_back(self, disks: list[HotplugDisk], busy: set[str]) -> list[str]:
        """Disks a test is done with: the ``busy`` ones (still held by a superblock) are
        unplugged, the others kept, beyond ``keep`` the oldest unplugged. Problems."""
        problems = []
        for disk in disks:
            if disk.device in busy:
                problems += self._detach(disk)
                continue
            key = self._ids[disk.device]
            self._idle.setdefault(key, []).append(disk)
            self._idle.move_to_end(key)
        while sum(map(len, self._idle.values())) > self.keep:
            key, idle = next(iter(self._idle.items()))
            problems += self._detach(idle.pop(0))
            if not idle:
                del self._idle[key]
        return problems

    def _detach(self, disk: HotplugDisk) -> list[str]:
        self._ids.pop(disk.device, None)
        try:
            self.vm.detach_disk(disk)
        except Exception as exc:  # keep going: every disk must be tried
            return [f"detach {disk.device}: {exc!r}"]
        return []
