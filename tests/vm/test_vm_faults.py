"""The VM against faults, with real QEMU and the kernel under test.

Each fault gives a clear error and leaves no QEMU process or temporary directory behind.
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path

import paramiko
import pytest
from vmhelpers import harness_leftovers, hotplug_round_trip, qemu_processes

from harness.core.errors import GuestDied, HarnessError, VMError
from harness.guestimage.build import GuestImage
from harness.guestimage.sshkeys import GuestKeys
from harness.kernel.kernel import Kernel
from harness.vm.accel import choose_accel, kvm_device_usable, probe_kvm
from harness.vm.machine import VM, VMConfig, VMState

TCG = VMConfig(accel="tcg", scratch_mb=0, boot_timeout=60)


def _no_leftovers(tmp: Path) -> None:
    assert qemu_processes(str(tmp)) == [], "a QEMU process outlived its VM"
    assert harness_leftovers(tmp) == {}


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def test_hotplugged_disk_appears_with_its_bytes_and_goes_away(vm: VM, tmp_path: Path) -> None:
    hotplug_round_trip(vm, tmp_path, b"harness-hotplug-check")


def test_kernel_that_panics_at_boot_reports_the_panic_and_console(kernel: Kernel,
                                                                  guest_image: GuestImage,
                                                                  private_tmp: Path) -> None:
    vm = VM(kernel, guest_image, replace(TCG, append="rdinit=/does-not-exist"), name="panic")
    with pytest.raises(VMError) as info:
        vm.start()
    message = str(info.value)
    assert "the guest failed to boot: Kernel panic - not syncing" in message
    assert "Last console lines:" in message
    _no_leftovers(private_tmp)


@pytest.mark.parametrize("form", ["bzImage", "vmlinux"])
def test_vmlinuz_that_does_not_boot_says_so(kernel: Kernel, guest_image: GuestImage,
                                            private_tmp: Path, form: str) -> None:
    """Cut short, a bzImage starts and dies (or hangs) unpacking itself; an uncompressed
    vmlinux booted at its PVH entry is refused by QEMU's ELF loader before anything runs."""
    whole = kernel.bzimage or kernel.vmlinuz if form == "bzImage" else kernel.vmlinuz
    if (form == "vmlinux") != whole.read_bytes()[:4].startswith(b"\x7fELF"):
        pytest.skip(f"the default kernel boots no {form}")
    broken = private_tmp / f"truncated-{form}"
    broken.write_bytes(whole.read_bytes()[: 3 << 20])
    vm = VM(replace(kernel, vmlinuz=broken, bzimage=None), guest_image,
            replace(TCG, boot_timeout=15), name="truncated")
    with pytest.raises(VMError) as info:
        vm.start()
    message = str(info.value)
    if form == "vmlinux":
        assert "the guest failed to boot: qemu-system-x86_64: Error while loading elf " \
               "kernel" in message, message
    else:
        assert "QEMU ended before the guest was ready" in message or \
            "not ready after 15 s" in message, message
    assert "printed nothing" in message or "Last console lines" in message
    _no_leftovers(private_tmp)


def test_ssh_that_refuses_our_key_fails_at_once(kernel: Kernel, guest_image: GuestImage,
                                                private_tmp: Path) -> None:
    stranger = paramiko.ECDSAKey.generate(bits=256)
    key_file = private_tmp / "stranger"
    stranger.write_private_key_file(str(key_file))
    from harness.guestimage.sshkeys import guest_keys
    real = guest_keys()
    keys = GuestKeys(key_file, "", real.host_key, real.host_public)
    vm = VM(kernel, guest_image, replace(TCG, boot_timeout=40), name="nossh", ssh_keys=keys)
    with pytest.raises(VMError, match=r"sshd on 127\.0\.0\.1:[0-9]+ refused the harness"):
        vm.start()
    assert vm.state == VMState.STOPPED
    _no_leftovers(private_tmp)


def test_kvm_requested_where_unusable_is_a_clear_error(kernel: Kernel) -> None:
    usable, _ = kvm_device_usable()
    if usable:
        usable, _ = probe_kvm(kernel.vmlinuz)
    if usable:
        assert choose_accel("kvm", kernel.vmlinuz).name == "kvm"
    else:
        with pytest.raises(HarnessError, match=r"KVM was requested .* but is unusable"):
            choose_accel("kvm", kernel.vmlinuz)
        assert choose_accel("auto", kernel.vmlinuz).name == "tcg"


def test_dead_guest_is_detected_and_marked_broken(kernel: Kernel, guest_image: GuestImage,
                                                  private_tmp: Path) -> None:
    with VM(kernel, guest_image, TCG, name="dies") as vm:
        with pytest.raises(GuestDied):
            vm.run("echo c > /proc/sysrq-trigger", timeout=30)  # the guest panics
        assert not vm.responsive(timeout=10)
        with pytest.raises(HarnessError):
            vm.run("true", timeout=10)
        assert vm.state == VMState.BROKEN
    _no_leftovers(private_tmp)


def test_nothing_of_a_stopped_vm_remains(kernel: Kernel, guest_image: GuestImage,
                                         private_tmp: Path) -> None:
    with VM(kernel, guest_image, TCG, name="clean") as vm:
        assert vm.run("uname -r", check=True).stdout.strip() == kernel.release
        workdir = vm.workdir
    assert workdir is not None and not workdir.exists()
    _no_leftovers(private_tmp)
