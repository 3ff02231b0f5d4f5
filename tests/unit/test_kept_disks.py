"""Read-only disks kept between tests: reused for the same file only, never while a
superblock holds them, one mount per disk, at most ``keep`` idle."""

from __future__ import annotations

import os
from pathlib import Path
from typing import cast

from harness.guest.disks import KeptDisks
from harness.vm.machine import VM, Disk, HotplugDisk


class _FakeVM:
    """attach_disk/detach_disk at the seam: devices named in order, unplugs recorded."""

    def __init__(self) -> None:
        self.attached = 0
        self.detached: list[str] = []

    def attach_disk(self, path: Path, read_only: bool = True) -> HotplugDisk:
        self.attached += 1
        return HotplugDisk(Disk(f"hp{self.attached}", path, f"s{self.attached}", read_only),
                           f"/dev/vd{chr(ord('a') + self.attached)}")

    def detach_disk(self, disk: HotplugDisk) -> None:
        self.detached.append(disk.device)


def _pool(keep: int = 12) -> tuple[KeptDisks, _FakeVM]:
    vm = _FakeVM()
    return KeptDisks(cast(VM, vm), keep), vm


def test_the_same_file_is_served_by_the_disk_a_test_gave_back(tmp_path: Path) -> None:
    image = tmp_path / "a.erofs"
    image.write_bytes(b"x" * 4096)
    pool, vm = _pool()
    first = pool.take(image)
    assert pool.give_back([first], busy=set()) == []
    assert pool.take(image) is first and vm.attached == 1 and vm.detached == []


def test_a_changed_file_gets_a_new_disk(tmp_path: Path) -> None:
    image = tmp_path / "a.erofs"
    image.write_bytes(b"x" * 4096)
    pool, vm = _pool()
    pool.give_back([pool.take(image)], busy=set())
    st = image.stat()
    os.utime(image, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert pool.take(image).device != "/dev/vdb" and vm.attached == 2


def test_one_disk_per_mount_within_a_test(tmp_path: Path) -> None:
    image = tmp_path / "a.erofs"
    image.write_bytes(b"x")
    pool, vm = _pool()
    a, b = pool.take(image), pool.take(image)
    assert a.device != b.device and vm.attached == 2


def test_a_disk_a_superblock_still_holds_is_unplugged(tmp_path: Path) -> None:
    image = tmp_path / "a.erofs"
    image.write_bytes(b"x")
    pool, vm = _pool()
    disk = pool.take(image)
    pool.give_back([disk], busy={disk.device})
    assert vm.detached == [disk.device]
    assert pool.take(image).device != disk.device and vm.attached == 2


def test_beyond_keep_the_least_recently_used_are_unplugged(tmp_path: Path) -> None:
    images = []
    for i in range(4):
        images.append(tmp_path / f"{i}.erofs")
        images[-1].write_bytes(bytes([i]))
    pool, vm = _pool(keep=2)
    disks = [pool.take(p) for p in images]
    pool.give_back(disks, busy=set())
    assert vm.detached == [disks[0].device, disks[1].device]
    assert pool.take(images[3]) is disks[3]
