"""Choosing the accelerator: KVM where it really works, TCG otherwise.

``/dev/kvm`` can be present and open while KVM is unusable (seen on CI machines: no vmx flag, the
guest dies with ``KVM internal error``), so "auto" boots the kernel under test with KVM for
a few seconds and reads what it prints. The verdict is cached per host boot and QEMU
binary, so the probe runs once.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from harness.core import cache, procs
from harness.core.deadline import Deadline, poll
from harness.core.errors import HarnessError, SpecError
from harness.vm.qemu_cmd import DirectKernelBoot, Machine, QemuCommand, qemu_binary

log = logging.getLogger(__name__)

ACCELS = ("auto", "kvm", "tcg")
PROBE_SECONDS = 20.0
BOOTED = ("Linux version", "Run /init", "Kernel panic", "VFS: ")
BROKEN = ("KVM internal error", "failed to initialize kvm", "Could not access KVM",
          "emulation failure")


@dataclass(frozen=True)
class AccelChoice:
    name: str  # "kvm" | "tcg"
    reason: str


def kvm_device_usable(path: str = "/dev/kvm") -> tuple[bool, str]:
    if not os.path.exists(path):
        return False, f"{path} does not exist"
    if not os.access(path, os.R_OK | os.W_OK):
        return False, f"{path} is not readable and writable by this user"
    return True, f"{path} opens"


def probe_kvm(vmlinuz: Path, qemu: str | None = None) -> tuple[bool, str]:
    """Boot ``vmlinuz`` under KVM without an initrd; it works if the kernel starts printing."""
    qemu = qemu or qemu_binary()
    argv = QemuCommand(qemu, Machine("kvm", 256, 1),
                       DirectKernelBoot(vmlinuz, None, "console=ttyS0 panic=-1")).argv()
    with tempfile.TemporaryDirectory(prefix="kvm-probe.") as tmp:
        out_path = Path(tmp) / "out"
        with out_path.open("wb") as out:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, preexec_fn=procs.die_with_parent)
        procs.register(proc.pid, "qemu kvm probe")
        try:
            def verdict() -> tuple[bool, str] | None:
                text = out_path.read_text(errors="replace")
                for needle in BROKEN:
                    if needle in text:
                        return False, f"a KVM test boot failed with {needle!r}"
                for needle in BOOTED:
                    if needle in text:
                        return True, "a KVM test boot reached the kernel"
                if proc.poll() is not None:
                    last = text.strip().splitlines()[-1:] or ["no output"]
                    return False, f"a KVM test boot exited with {proc.returncode}: {last[0]}"
                return None
            result = poll(verdict, Deadline(PROBE_SECONDS), most=0.2)
            return result or (False, f"a KVM test boot printed nothing in {PROBE_SECONDS:.0f} s")
        finally:
            proc.kill()
            proc.wait()
            procs.unregister(proc.pid)


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown-boot"


def choose_accel(requested: str, vmlinuz: Path) -> AccelChoice:
    """Resolve ``auto|kvm|tcg``; asking for KVM where it does not work is an error."""
    if requested not in ACCELS:
        raise SpecError(f"--accel {requested!r} is not one of {', '.join(ACCELS)}")
    if requested == "tcg":
        return AccelChoice("tcg", "TCG requested")
    ok, why = kvm_device_usable()
    if ok:
        qemu = qemu_binary()
        qemu_id = cache.content_key([qemu, str(os.stat(qemu).st_mtime_ns)])
        stamp = cache.cache_root() / "accel" / f"{_boot_id()}-{qemu_id}.json"
        if stamp.is_file():
            ok, why = json.loads(stamp.read_text())
        else:
            print("harness: probing whether KVM works on this host", file=sys.stderr, flush=True)
            ok, why = probe_kvm(vmlinuz, qemu)
            stamp.parent.mkdir(parents=True, exist_ok=True)
            stamp.write_text(json.dumps([ok, why]))
    if ok:
        return AccelChoice("kvm", why)
    if requested == "kvm":
        raise HarnessError(f"KVM was requested (--accel=kvm / ACCEL=kvm) but is unusable on "
                           f"this host: {why}. Use --accel=tcg (or ACCEL=tcg), or auto to "
                           f"fall back to TCG by itself.")
    log.info("KVM unusable (%s): using TCG", why)
    return AccelChoice("tcg", f"KVM unusable: {why}")
