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
    host_has_rdrand,
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


def test_tcg_runs_two_vcpus_on_one_thread_unless_asked_for_one_each() -> None:
    def accel(machine: Machine) -> str:
        args = machine.args()
        return args[args.index("-accel") + 1]
    assert accel(Machine("tcg", 512, 2)) == "tcg,thread=single"
    assert not Machine("tcg", 512, 2).late_cpus
    multi = Machine("tcg", 512, 2, "multi")
    assert accel(multi) == "tcg,thread=multi" and multi.late_cpus
    # One vCPU has nothing to run at once; KVM's vCPUs always do, and boot together.
    assert not Machine("tcg", 512, 1, "multi").late_cpus
    assert accel(Machine("kvm", 512, 2, "multi")) == "kvm"
    assert not Machine("kvm", 512, 2, "multi").late_cpus


def test_tcg_guest_gets_rdrand_and_no_virtio_rng() -> None:
    argv = _argv("tcg")
    assert argv[argv.index("-cpu") + 1] == "qemu64,+rdrand"
    assert "virtio-rng-pci" not in argv


def test_kvm_guest_on_a_host_without_rdrand_gets_a_virtio_rng(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("harness.vm.qemu_cmd.host_has_rdrand", lambda: False)
    assert "virtio-rng-pci" in _argv("kvm")
    monkeypatch.setattr("harness.vm.qemu_cmd.host_has_rdrand", lambda: True)
    assert "virtio-rng-pci" not in _argv("kvm")


def test_host_rdrand_is_read_from_the_cpu_flags(tmp_path: Path) -> None:
    has, lacks = tmp_path / "has", tmp_path / "lacks"
    has.write_text("processor\t: 0\nflags\t\t: fpu sse2 rdrand rdseed\n")
    lacks.write_text("processor\t: 0\nflags\t\t: fpu sse2 rdseed\nbugs\t\t: rdrand\n")
    assert host_has_rdrand(has)
    assert not host_has_rdrand(lacks)
    assert not host_has_rdrand(tmp_path / "missing")


def test_missing_qemu_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(ToolMissing, match=r"qemu-system-x86_64 is not installed.*qemu-system-x86"):
        qemu_binary()
