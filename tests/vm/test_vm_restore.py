"""VMs started from a saved booted guest (harness/vm/snapshot.py), with real QEMU.

The first VM of a kind boots and is saved; the next one is restored from it. A restored VM
must be the kernel under test, with a scratch disk of its own (nothing the first VM wrote),
hot-plug that works, and nothing left behind when it stops.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from vmhelpers import hotplug_round_trip, qemu_processes

from harness.guestimage.build import GuestImage
from harness.guestimage.sshkeys import GuestKeys, guest_keys
from harness.kernel.kernel import Kernel
from harness.vm.machine import VM, VMConfig


@pytest.fixture
def keys() -> GuestKeys:
    """The keys the guest image trusts, taken before the cache moves."""
    return guest_keys()


@pytest.fixture
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keys: GuestKeys) -> Path:
    """Saved guests in a cache of this test's own, so the first VM always boots cold."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    return tmp_path


def test_second_vm_of_a_kind_is_restored_with_a_scratch_disk_of_its_own(
        kernel: Kernel, guest_image: GuestImage, private_cache: Path, keys: GuestKeys) -> None:
    config = VMConfig(accel="tcg", scratch_mb=64, boot_timeout=180)
    with VM(kernel, guest_image, config, name="first", ssh_keys=keys) as first:
        assert not first.restored, "the first VM of a kind in an empty cache was restored"
        first.run("echo first > /scratch/mark && sync", check=True)
    with VM(kernel, guest_image, config, name="second", ssh_keys=keys) as second:
        assert second.restored, "the second VM of the same kind booted cold"
        assert second.run("uname -r", check=True).stdout.strip() == kernel.release
        assert not second.run("test -e /scratch/mark").ok, (
            "the restored VM's scratch disk holds what the first VM wrote")
        hotplug_round_trip(second, private_cache, b"restored-hotplug")
    assert qemu_processes(str(private_cache)) == [], "a QEMU process outlived its VM"
    assert [p.name for p in private_cache.iterdir() if p.name.startswith("harness-")] == []


def test_cold_boot_option_boots_every_vm(kernel: Kernel, guest_image: GuestImage,
                                         private_cache: Path, keys: GuestKeys) -> None:
    config = VMConfig(accel="tcg", scratch_mb=64, boot_timeout=180, restore=False)
    for name in ("one", "two"):
        with VM(kernel, guest_image, config, name=name, ssh_keys=keys) as vm:
            assert not vm.restored
            assert vm.run("uname -r", check=True).stdout.strip() == kernel.release
    assert not (private_cache / "cache" / "booted-guests").exists(), (
        "a cold-boot VM saved its guest")
