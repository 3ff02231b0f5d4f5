"""The guest's RNG is seeded before sshd asks for it, with real QEMU and the kernel under test.

sshd blocks in getrandom() until the kernel's RNG is seeded, which takes seconds under TCG
with nothing to seed it from. The guest CPU has RDRAND (TCG emulates it), which the kernel
trusts at boot; a CPU without it (a KVM host that lacks it) gets a virtio RNG instead, whose
driver /init loads.
"""

from __future__ import annotations

import re

import pytest

from harness.guestimage.build import GuestImage
from harness.kernel.kernel import Kernel
from harness.vm.machine import VM, VMConfig
from harness.vm.qemu_cmd import Machine

COLD = VMConfig(accel="tcg", scratch_mb=0, boot_timeout=120, restore=False)


def _seeded_before_init(vm: VM) -> bool:
    """Whether the kernel log says the RNG was seeded before it ran /init."""
    log = vm.run("dmesg", check=True).stdout
    seeded = re.search(r"random: crng init done", log)
    init = re.search(r"Run /init as init process", log)
    assert init is not None, "the kernel log has no 'Run /init' line"
    return seeded is not None and seeded.start() < init.start()


def _virtio_rng_drivers(vm: VM) -> list[str]:
    """The drivers bound to the guest's virtio RNG devices (virtio device id 4)."""
    out = vm.run("for d in /sys/bus/virtio/devices/*; do "
                 "[ \"$(cat $d/device)\" = 0x0004 ] || continue; "
                 "if [ -e $d/driver ]; then basename $(readlink -f $d/driver); "
                 "else echo none; fi; done", check=True).stdout
    return out.split()


def test_guest_rng_is_seeded_from_rdrand_before_init(kernel: Kernel,
                                                     guest_image: GuestImage) -> None:
    with VM(kernel, guest_image, COLD, name="rdrand") as vm:
        flags = vm.run("grep -m1 '^flags' /proc/cpuinfo", check=True).stdout.split()
        assert "rdrand" in flags, "the guest CPU has no RDRAND"
        assert _virtio_rng_drivers(vm) == [], "a guest with RDRAND was given a virtio RNG"
        assert _seeded_before_init(vm), "the RNG was not seeded before /init ran"


def test_guest_without_rdrand_gets_a_virtio_rng_and_its_driver(
        kernel: Kernel, guest_image: GuestImage, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Machine, "has_rdrand", property(lambda self: False))
    with VM(kernel, guest_image, COLD, name="nordrand") as vm:
        flags = vm.run("grep -m1 '^flags' /proc/cpuinfo", check=True).stdout.split()
        assert "rdrand" not in flags, "the guest CPU has RDRAND although it was taken away"
        assert _virtio_rng_drivers(vm) == ["virtio_rng"], (
            "the guest without RDRAND has no virtio RNG with its driver bound")
