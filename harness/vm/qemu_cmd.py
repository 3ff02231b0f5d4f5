"""The QEMU command line, built from small typed pieces instead of one string soup."""

from __future__ import annotations

import functools
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from harness.core.errors import ToolMissing

QEMU = "qemu-system-x86_64"


def qemu_binary() -> str:
    path = shutil.which(QEMU)
    if path is None:
        raise ToolMissing(f"{QEMU} is not installed or not on PATH: install the Debian "
                          f"package qemu-system-x86 (`make deps` does it).")
    return path


@functools.cache
def host_has_rdrand(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether this machine's CPU has RDRAND, which ``-cpu host`` passes to a KVM guest."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return False
    return any(line.startswith("flags") and "rdrand" in line.split()
               for line in text.splitlines())


@dataclass(frozen=True)
class Machine:
    accel: str  # "kvm" | "tcg"
    memory_mb: int
    cpus: int
    tcg_threads: str = "single"  # "single" | "multi": one host thread for all vCPUs, or each

    @property
    def late_cpus(self) -> bool:
        """Whether the guest boots on one CPU and brings the others up later (multi-threaded
        TCG with more than one vCPU: see args())."""
        return self.accel == "tcg" and self.cpus > 1 and self.tcg_threads == "multi"

    @property
    def has_rdrand(self) -> bool:
        """Whether the guest's CPU has RDRAND: TCG emulates it, KVM has it when the host does.

        The kernel trusts RDRAND (random.trust_cpu, on by default) and seeds its RNG from it
        before /init runs, so sshd never waits in getrandom(); without it the guest needs a
        virtio RNG and its driver, a module load at every boot (0.07 s under TCG).
        """
        return self.accel == "tcg" or host_has_rdrand()

    def args(self) -> list[str]:
        # TCG's default CPU (qemu64) has no RDRAND; with it, the RNG is seeded at boot.
        cpu = ["-cpu", "host" if self.accel == "kvm" else
               "qemu64,+rdrand" if self.has_rdrand else "qemu64"]
        accel = self.accel
        if accel == "tcg" and self.cpus > 1:
            # Multi-threaded TCG loses races with the kernel's int3-based live patching of
            # static keys: about 1 boot in 10 died with "Oops: int3" in sched_clock_cpu
            # (Debian 6.12 and 7.3), where the boot marks sched_clock stable with both
            # vCPUs running. One TCG thread running the vCPUs in turn does not (0 of 15).
            # A multi-threaded guest boots on one CPU (late_cpus, vm/machine.py) so that
            # this flip has no second vCPU to race: 0 deaths in 4 boots, too few to call
            # it safe, so the single thread stays the default. The single thread never
            # opens a window of a few instructions on two vCPUs at once; only "multi"
            # does (make races).
            accel = f"tcg,thread={self.tcg_threads}"
        return ["-machine", "pc", "-accel", accel, *cpu, "-m", str(self.memory_mb),
                "-smp", str(self.cpus)]


@dataclass(frozen=True)
class DirectKernelBoot:
    kernel: Path
    initrd: Path | None
    append: str

    def args(self) -> list[str]:
        out = ["-kernel", str(self.kernel), "-append", self.append]
        return out + (["-initrd", str(self.initrd)] if self.initrd else [])


@dataclass(frozen=True)
class SerialOnStdio:
    """The guest's ttyS0 on QEMU's stdout; signal=off so a ^C there is just a byte."""

    def args(self) -> list[str]:
        return ["-chardev", "stdio,id=con0,signal=off,mux=off", "-serial", "chardev:con0"]


@dataclass(frozen=True)
class QmpSocket:
    path: Path

    def args(self) -> list[str]:
        return ["-chardev", f"socket,id=qmp0,path={self.path}", "-mon",
                "chardev=qmp0,mode=control"]


@dataclass(frozen=True)
class UserNetwork:
    """slirp with no route out (restrict=on); SSH forwarded from loopback only.

    Host port 0 lets QEMU pick a free port itself (read back with ``info usernet``), so
    there is no window in which another process can take a port we chose.
    """

    guest_port: int = 22

    def args(self) -> list[str]:
        return ["-netdev", f"user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:0-:{self.guest_port}",
                "-device", "virtio-net-pci,netdev=net0"]


@dataclass(frozen=True)
class Disk:
    node: str
    path: Path
    serial: str
    read_only: bool = True

    def blockdev(self) -> dict[str, object]:
        return {"driver": "raw", "node-name": self.node, "read-only": self.read_only,
                "file": {"driver": "file", "filename": str(self.path)}}

    def device(self) -> dict[str, object]:
        return {"driver": "virtio-blk-pci", "id": f"dev-{self.node}", "drive": self.node,
                "serial": self.serial}

    def args(self) -> list[str]:
        dev = self.device()
        return ["-blockdev", json.dumps(self.blockdev()), "-device",
                f"{dev['driver']},id={dev['id']},drive={self.node},serial={self.serial}"]


@dataclass(frozen=True)
class QemuCommand:
    binary: str
    machine: Machine
    boot: DirectKernelBoot
    qmp: QmpSocket | None = None
    network: UserNetwork | None = None
    disks: tuple[Disk, ...] = ()
    extra: tuple[str, ...] = field(default_factory=tuple)

    def argv(self) -> list[str]:
        out = [self.binary, "-nodefaults", "-no-user-config", "-display", "none",
               "-no-reboot", *self.machine.args(), *self.boot.args(), *SerialOnStdio().args()]
        if not self.machine.has_rdrand:
            # Entropy from the host: sshd waits for a seeded RNG before it answers, and a
            # guest CPU without RDRAND takes seconds to seed it alone under TCG.
            out += ["-device", "virtio-rng-pci"]
        if self.qmp:
            out += self.qmp.args()
        if self.network:
            out += self.network.args()
        for disk in self.disks:
            out += disk.args()
        return out + list(self.extra)
