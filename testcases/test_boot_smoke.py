"""The guest the suite stands on: the kernel under test boots and can be driven."""

import pytest

from harness.guest.handle import Guest
from harness.kernel.kernel import Kernel
from harness.vm.machine import VM


@pytest.mark.fast
def test_guest_runs_the_kernel_under_test(vm: VM, kernel: Kernel) -> None:
    release = vm.run("uname -r", check=True).stdout.strip()
    assert release == kernel.release, f"guest runs {release}, expected {kernel.release}"


@pytest.mark.fast
def test_guest_has_the_tools_the_suite_uses(guest: Guest) -> None:
    for tool in ("python3 -c 'import ctypes, mmap, json'", "mount --version", "losetup --version",
                 "getfattr --version", "lsmod", "fincore --version"):
        result = guest.run(tool)
        assert result.ok, f"{tool!r} failed in the guest: {result.stderr.strip()}"


@pytest.mark.fast
@pytest.mark.requires_kernel("erofs")
def test_erofs_module_loads(guest: Guest) -> None:
    guest.check("modprobe erofs")
    assert "erofs" in guest.check("cat /proc/filesystems")
