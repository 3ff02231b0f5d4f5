from pathlib import Path

import pytest

from harness.core.errors import ToolMissing
from harness.vm.qemu_cmd import (
    DirectKernelBoot,
    Disk,
    Machine,
    QemuCommand,
    QmpSocket,
    UserNetwork,
    qemu_binary,
)


def _argv(accel: str = "tcg") -> list[str]:
    return QemuCommand("qemu", Machine(accel, 512, 2),
                       DirectKernelBoot(Path("/k"), Path("/i"), "console=ttyS0"),
                       qmp=QmpSocket(Path("/s")), network=UserNetwork(),
                       disks=(Disk("scratch", Path("/d"), "ser", False),)).argv()


def test_guest_never_reboots_and_has_no_display() -> None:
    argv = _argv()
    assert "-no-reboot" in argv and argv[argv.index("-display") + 1] == "none"


def test_ssh_forward_listens_on_loopback_only() -> None:
    netdev = _argv()[_argv().index("-netdev") + 1]
    assert "hostfwd=tcp:127.0.0.1:0-:22" in netdev and "restrict=on" in netdev


def test_kvm_uses_host_cpu_and_tcg_does_not() -> None:
    assert "host" in _argv("kvm") and "host" not in _argv("tcg")


def test_missing_qemu_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(ToolMissing, match=r"qemu-system-x86_64 is not installed.*qemu-system-x86"):
        qemu_binary()
