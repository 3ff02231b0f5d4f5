"""The VM: one QEMU process with its console, QMP and SSH, as a context manager.

It promises: ``__exit__`` always shuts down (QMP ``quit`` with a deadline, then kill,
cleanup in ``finally``), a failed start raises a VMError carrying the command, the exit
status and the last console lines, and a small state enum guards calls.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import re
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType

from qemu.qmp import QMPError
from qemu.qmp.legacy import QEMUMonitorProtocol

from harness.core.deadline import Deadline, poll
from harness.core.errors import (
    BootTimeout,
    GuestCommandError,
    GuestDied,
    HarnessError,
    StateError,
    ToolMissing,
    VMError,
)
from harness.core.tempdirs import remove_tree
from harness.core.waits import WaitLedger
from harness.guestimage.build import READY_MARKER, SCRATCH_SERIAL, GuestImage
from harness.guestimage.sshkeys import GuestKeys, guest_keys
from harness.kernel.kernel import Kernel, parse_config
from harness.vm import snapshot
from harness.vm.accel import AccelChoice, choose_accel
from harness.vm.console import Console
from harness.vm.qemu_cmd import (
    DirectKernelBoot,
    Disk,
    Machine,
    QemuCommand,
    QmpSocket,
    UserNetwork,
    qemu_binary,
)
from harness.vm.splats import find_splats
from harness.vm.sshclient import CommandResult, CommandTimeout, GuestSSH, SSHRefused

log = logging.getLogger(__name__)


class VMState(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    BROKEN = "broken"  # a splat, a dead guest or a hung command: replace it
    STOPPED = "stopped"


@dataclass(frozen=True)
class VMConfig:
    memory_mb: int = 1024
    cpus: int = 2
    accel: str = "auto"
    # "single": one host thread runs the vCPUs in turn; "multi": one host thread each, so
    # two vCPUs really run at once (qemu_cmd.Machine and _online_cpus say the price).
    tcg_threads: str = "single"
    scratch_mb: int = 2048
    boot_timeout: float = 180.0  # TCG on a loaded 2-core machine; KVM takes seconds
    command_timeout: float = 120.0
    append: str = ""
    keep: bool = False  # --vm-keep: leave the work directory (console log, disks) behind
    # Start from the saved booted guest of this kind when there is one (vm/snapshot.py);
    # --vm-cold-boot turns it off, and every VM boots.
    restore: bool = True


# The one set of VM defaults: the command line's and pytest's options read them from here.
VM_DEFAULTS = VMConfig()
COLD_BOOT_HELP = ("boot every VM cold, instead of starting VMs from the guest saved after "
                  "the first boot of the same kernel, image and machine")
ACCELS = ("auto", "kvm", "tcg")
TCG_THREADS = ("single", "multi")
# Multi-threaded TCG boots on one CPU and brings the others up once the guest answers, so
# that the boot's own static-key flips (sched_clock's "Marking stable") are patched with
# no second vCPU running through the patched code (qemu_cmd.Machine.args says why; how
# often that still fails is not measured beyond a few boots).
MTTCG_BOOT_APPEND = "maxcpus=1"

# The kernel command line: panic=-1 with -no-reboot makes a panic end QEMU instead of
# hanging; loglevel=5 keeps warnings and splats on the console without the boot chatter
# that slows a TCG serial port.
BASE_APPEND = "console=ttyS0 panic=-1 loglevel=5 oops=panic_on_oops=0 " \
              "rdinit=/init printk.devkmsg=on"


def boot_append(kernel: Kernel) -> str:
    """The command line for ``kernel``: BASE_APPEND plus acpi=noirq where it is safe.

    The pc machine's PCI interrupt routing (_PRT) is an AML loop over 128 entries that
    ACPICA interprets for every PCI device, at boot and at every disk hot-plug. On a
    KASAN+lockdep kernel under TCG each run ends at ACPICA's 30 s loop timeout
    (AE_AML_LOOP_TIMEOUT): a debug guest spent 90 s of its boot and 35 s of every hot-plug
    there. acpi=noirq skips that AML, but it also skips the MADT's I/O APIC: the kernel
    then finds its CPUs and I/O APIC in the MP table (X86_MPPARSE) or runs on one CPU
    with the 8259 PIC, and virtio devices keep an interrupt only through MSI-X (PCI_MSI).
    So a kernel gets it when it has both, and everything stays as it was (two CPUs, every
    hot-plugged disk interrupting); a KASAN kernel without PCI_MSI gets it anyway, since
    it cannot boot through the AML at all. Debian's kernels have no X86_MPPARSE and keep
    ACPI's routing (about 0.1 s per device for them); so does a kernel whose config is
    unknown.
    """
    words = [BASE_APPEND]
    if (kernel.has("X86_MPPARSE") and kernel.has("PCI_MSI")) or \
            (kernel.has("KASAN") and not kernel.has("PCI_MSI")):
        words.append("acpi=noirq")
    if kernel.has("DEBUG_KMEMLEAK"):
        # SLUB's per-CPU sheaves (7.x) keep a pointer to every object they hand out in a
        # slot above their count until a later free overwrites it, and kmemleak scans the
        # sheaves: a fresh leak looks referenced and is never reported (a deliberate leak
        # on the debug tree went unseen). A debug flag on every cache turns sheaves off;
        # U (the owner tracking of /sys/kernel/slab/*/alloc_calls) is the cheapest one.
        words.append("slab_debug=U")
    return " ".join(words)


BOOT_FAILURE = [r"Kernel panic - not syncing[^\n]*", r"KVM internal error[^\n]*",
                r"qemu-system-x86_64: [^\n]*", r"Unable to handle kernel[^\n]*"]


@dataclass
class HotplugDisk:
    disk: Disk
    device: str  # /dev/vdX in the guest


@dataclass
class VM:
    kernel: Kernel
    image: GuestImage
    config: VMConfig = field(default_factory=VMConfig)
    artifacts: Path | None = None  # where the console log is kept
    name: str = "vm"
    ssh_keys: GuestKeys | None = None  # None: the cache's keys, which the image trusts
    # Where this VM's waits are counted; the plugin's pool hands every VM it boots one
    # ledger, so a case that replaces a broken VM still adds up.
    waits: WaitLedger = field(default_factory=WaitLedger)

    def __post_init__(self) -> None:
        self.state = VMState.NEW
        self.accel: AccelChoice | None = None
        self.console: Console | None = None
        self.qmp: QEMUMonitorProtocol | None = None
        self.ssh: GuestSSH | None = None
        self.ssh_port = 0
        self.argv: list[str] = []
        self.workdir: Path | None = None
        self.boot_seconds = 0.0
        self.restored = False  # started from the saved guest of its kind (vm/snapshot.py)
        self.saved_guest: Path | None = None  # that saved guest, restored from or made
        self._disks: dict[str, HotplugDisk] = {}
        self._disk_seq = 0
        self._stack = contextlib.ExitStack()

    # ---- lifecycle ----------------------------------------------------------------------

    def __enter__(self) -> VM:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def _require(self, *states: VMState) -> None:
        if self.state not in states:
            raise StateError(f"{self.name}: this call needs the VM "
                             f"{' or '.join(s.value for s in states)}, but it is "
                             f"{self.state.value}")

    @property
    def console_log(self) -> Path:
        assert self.workdir is not None
        return (self.artifacts or self.workdir) / f"{self.name}-console.log"

    def start(self) -> None:
        self._require(VMState.NEW)
        started = time.monotonic()
        try:
            with self.waits.waiting("boot"):
                try:
                    self._start(restore=self.config.restore)
                except snapshot.RestoreFailed as exc:
                    said = self._tail(1).strip()
                    log.warning("%s: %s%s; booting it cold", self.name, exc,
                                f" (QEMU: {said})" if said else "")
                    self._reset()
                    self._start(restore=False)
        except BaseException:
            # KeyboardInterrupt included: nothing of a half-started VM may stay behind.
            self.stop()
            raise
        self.boot_seconds = time.monotonic() - started

    def _reset(self) -> None:
        """Back to NEW after a restore QEMU refused: its process and files are gone."""
        self.stop()
        self.__post_init__()

    def _start(self, restore: bool) -> None:
        """Start QEMU and wait for SSH. ``restore``: from the saved guest of this kind if
        there is one. A cold boot saves the guest for the VMs after it (config.restore)."""
        qemu = qemu_binary()
        self.accel = choose_accel(self.config.accel, self.kernel.vmlinuz)
        self.workdir = Path(tempfile.mkdtemp(prefix=f"harness-{self.name}."))
        if not self.config.keep:
            self._stack.callback(remove_tree, self.workdir)
        if self.artifacts:
            self.artifacts.mkdir(parents=True, exist_ok=True)
        scratch = self.workdir / "scratch.ext4" if self.config.scratch_mb else None
        qmp_path = self.workdir / "qmp.sock"
        if len(str(qmp_path)) > 100:
            # AF_UNIX paths end at 108 bytes; a deep TMPDIR gets a short socket dir of its own.
            short = Path(tempfile.mkdtemp(prefix="hq.", dir="/tmp"))
            self._stack.callback(remove_tree, short)
            qmp_path = short / "qmp.sock"
        self.qmp = QEMUMonitorProtocol(str(qmp_path), server=True, nickname=self.name)
        machine = Machine(self.accel.name, self.config.memory_mb, self.config.cpus,
                          self.config.tcg_threads)
        append = " ".join(filter(None, [boot_append(self.kernel), self.config.append,
                                        MTTCG_BOOT_APPEND if machine.late_cpus else ""]))
        command = QemuCommand(qemu, machine,
                              DirectKernelBoot(self.kernel.vmlinuz, self.image.initrd_path,
                                               append),
                              qmp=QmpSocket(qmp_path), network=UserNetwork(),
                              disks=(Disk("scratch", scratch, SCRATCH_SERIAL,
                                          read_only=False),) if scratch else ())
        self.argv = command.argv()
        boots = [self.kernel.vmlinuz, *filter(None, [self.image.initrd_path])]
        key = snapshot.key_for(self.argv, self.workdir, qmp_path, boots)
        entry = snapshot.saved(key) if restore else None
        if scratch is not None:
            if entry is not None and (entry / snapshot.SCRATCH).is_file():
                snapshot.copy_sparse(entry / snapshot.SCRATCH, scratch)
            else:
                self._make_scratch(scratch)
        if entry is not None:
            self.argv += snapshot.incoming_args(entry)
        log.info("starting %s: %s", self.name, " ".join(self.argv))
        self.console = Console(self.argv, self.console_log)
        deadline = Deadline(self.config.boot_timeout)
        try:
            self.qmp.accept(timeout=min(30.0, deadline.remaining()))
        except (QMPError, TimeoutError, OSError, AssertionError) as exc:
            # AssertionError: qemu.qmp's accept() asserts the session runs once the
            # handshake is done, and a QEMU that exits right after it (a saved stream it
            # cannot load) can close the socket first; its reader then marks the session
            # disconnecting. Either way QEMU's last console line says why.
            self.console.wait_ended(2.0)
            if entry is not None:
                snapshot.forget(key)
                raise snapshot.RestoreFailed(f"QEMU did not connect to its QMP socket "
                                             f"({exc!r})") from exc
            raise self._launch_failure(
                f"QEMU did not connect to its QMP socket ({exc!r})") from exc
        self.state = VMState.RUNNING
        if entry is not None:
            console = self.console
            try:
                snapshot.wait_restored(self.qmp, deadline, lambda: console.ended)
                self._forward_ssh()
            except (snapshot.RestoreFailed, VMError) as exc:
                # QEMU gave up on the stream and is going: its last console line (read
                # by another thread) says why, and the warning quotes it.
                console.wait_ended(2.0)
                snapshot.forget(key)
                raise snapshot.RestoreFailed(str(exc).splitlines()[0]) from exc
            self.restored = True
            self.saved_guest = entry
        else:
            self._forward_ssh()  # before the wait: the client key loads while it boots
            self._wait_ready(deadline)
            if self.config.restore:  # for the VMs after this one
                self.saved_guest = snapshot.save(key, self.qmp, scratch)
        assert self.ssh is not None
        try:
            self.ssh.connect(deadline)
        except SSHRefused as exc:
            raise VMError(f"{self.name}: {exc}. The guest image trusts the keys in the cache "
                          f"(ssh/keys-v2); if they were replaced, the image is rebuilt on the "
                          f"next run.", command=self.argv, console_tail=self._tail()) from exc
        except TimeoutError as exc:
            if self.restored:
                # A saved guest that does not come back (a TCG restore has been seen to
                # oops in the scheduler on the first IPI, every time, for one saved
                # state) must not fail every later test of its kind: forget it and boot
                # cold, which says whether the kernel itself is at fault.
                snapshot.forget(key)
                said = [splat.first_line for splat in find_splats(self._tail(80))]
                raise snapshot.RestoreFailed(
                    f"the restored guest never answered SSH ({exc}); its console: "
                    f"{said[0] if said else 'no kernel report'}") from exc
            raise BootTimeout(f"{self.name}: the guest printed its ready marker but SSH on "
                              f"127.0.0.1:{self.ssh_port} never answered: {exc}",
                              command=self.argv, console_tail=self._tail()) from exc
        if machine.late_cpus:
            self._online_cpus()
        if not self.kernel.config:
            self._read_back_config()

    def _online_cpus(self) -> None:
        """Bring up the CPUs a multi-threaded TCG guest booted without (MTTCG_BOOT_APPEND);
        a restored guest was saved with one CPU, so this runs after every start."""
        assert self.ssh is not None
        script = ("for c in /sys/devices/system/cpu/cpu[1-9]*/online; do "
                  "[ \"$(cat $c)\" = 1 ] || echo 1 > $c || exit 1; done; nproc")
        result = self.ssh.run(script, 60)
        if not result.ok or result.stdout.strip() != str(self.config.cpus):
            raise VMError(f"{self.name}: --vm-tcg-threads=multi boots on one CPU and brings "
                          f"the other {self.config.cpus - 1} up once the guest answers, "
                          f"but they did not come up (nproc: {result.stdout.strip()!r}, "
                          f"{result.stderr.strip()!r})", command=self.argv,
                          console_tail=self._tail())

    def _read_back_config(self) -> None:
        """A kernel given without its .config: take it from /proc/config.gz if it has one.
        ``self.kernel`` becomes the kernel with that config (the Kernel the VM was given is
        not changed: whoever wants the config read back asks the VM)."""
        assert self.ssh is not None
        try:
            result = self.ssh.run("zcat /proc/config.gz 2>/dev/null || "
                                  "{ modprobe configs 2>/dev/null && zcat /proc/config.gz; }",
                                  30)
        except (OSError, ConnectionError, CommandTimeout) as exc:
            log.warning("%s: could not read the kernel config back: %s", self.name, exc)
            return
        if result.ok:
            self.kernel = replace(self.kernel, config=parse_config(result.stdout))
        else:
            log.warning("%s: kernel %s came without a config and has no /proc/config.gz; "
                        "feature checks will treat every option as unset", self.name,
                        self.kernel.release)

    def _make_scratch(self, path: Path) -> None:
        """A sparse ext4 image for files the guest mounts (made here, never mounted here)."""
        with path.open("wb") as fh:
            fh.truncate(self.config.scratch_mb << 20)
        try:
            subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "scratch", "-E",
                            "lazy_itable_init=1,lazy_journal_init=1", str(path)],
                           check=True, capture_output=True)
        except FileNotFoundError as exc:
            raise ToolMissing("mkfs.ext4 is not installed (Debian package e2fsprogs); run "
                              "`make deps`") from exc

    def _forward_ssh(self) -> None:
        """The SSH port QEMU forwards, and the client for it (which loads the client key:
        host time, spent before the guest answers rather than after)."""
        self.ssh_port = self._forwarded_port()
        self.ssh = GuestSSH(self.ssh_port, self.ssh_keys or guest_keys())

    def _forwarded_port(self) -> int:
        assert self.qmp is not None
        try:
            text = str(self.qmp.cmd("human-monitor-command",
                                    **{"command-line": "info usernet"}))
        except (QMPError, OSError) as exc:
            raise self._launch_failure(f"{self.name}: QEMU went away during start-up ({exc!r})"
                                       ) from exc
        match = re.search(r"HOST_FORWARD\]?\s+\d+\s+127\.0\.0\.1\s+(\d+)", text)
        if not match:
            raise self._launch_failure(f"cannot read the SSH forward port from QEMU's "
                                       f"'info usernet': {text!r}")
        return int(match.group(1))

    def _wait_ready(self, deadline: Deadline) -> None:
        assert self.console is not None
        found = self.console.wait_for([rf"{READY_MARKER}: ready", *BOOT_FAILURE], deadline)
        if found and found[0] == 0:
            return
        if found:
            # Let a panic finish printing its trace before taking the tail.
            time.sleep(0.5)
            raise self._launch_failure(f"{self.name}: the guest failed to boot: "
                                       f"{found[1].group(0).strip()}")
        hint = ("" if self._tail().strip() else
                "; the guest printed nothing on its console, so the kernel most likely never "
                f"started: check that {self.kernel.vmlinuz} is a complete bootable x86-64 "
                "bzImage, or a vmlinux with a PVH entry point")
        if self.console.ended:
            raise self._launch_failure(f"{self.name}: QEMU ended before the guest was "
                                       f"ready{hint}")
        raise BootTimeout(f"{self.name}: the guest was not ready after "
                          f"{self.config.boot_timeout:.0f} s (kernel {self.kernel.release}, "
                          f"accel {self.accel.name if self.accel else '?'}){hint}",
                          command=self.argv, console_tail=self._tail())

    def _launch_failure(self, message: str) -> VMError:
        status = self.console.exitstatus() if self.console else None
        if self.console is not None:
            # A panic or a QEMU error on the console says more than the symptom we saw.
            found = self.console.wait_for(BOOT_FAILURE, Deadline(0))
            if found and found[1].group(0).strip() not in message:
                message = (f"{self.name}: the guest failed to boot: "
                           f"{found[1].group(0).strip()} (seen as: {message})")
        return VMError(message, command=self.argv, console_tail=self._tail(), exitcode=status)

    def _tail(self, lines: int = 30) -> str:
        return self.console.tail(lines) if self.console else ""

    def stop(self, timeout: float = 10.0) -> None:
        """Quit QEMU (QMP quit, then kill) and remove everything the VM made. Idempotent."""
        if self.state == VMState.STOPPED:
            return
        try:
            if self.ssh:
                self.ssh.close()
            quit_sent = False
            if self.qmp and self.console and not self.console.ended:
                qmp = self.qmp
                qmp.settimeout(timeout)
                quit_sent = self._qmp_cleanup_call(lambda: qmp.cmd("quit"))
            if self.console:
                # A QEMU that was not told to quit (or closed its socket as it took the
                # quit) gets a moment to end on its own before it is killed.
                poll(lambda: True if not self.console or not self.console.alive() else None,
                     Deadline(timeout if quit_sent else 1.0))
        finally:
            try:
                if self.console:
                    with contextlib.suppress(Exception):
                        self.console.kill()
                if self.qmp:
                    self._qmp_cleanup_call(self.qmp.close)
            finally:
                self._stack.close()
                self.state = VMState.STOPPED

    def _qmp_cleanup_call(self, call: Callable[[], object]) -> bool:
        """A QMP call of the clean-up; whether it went through. A Ctrl-C (or SIGTERM) that
        landed while qemu.qmp ran its reader or writer task is stored in that task and
        raised again by every QMP call after it. That interrupt has already reached whoever
        runs this clean-up, so it is noted, not raised: raised here, it cut stop() short
        and left a VM's work folder behind (seen once in CI)."""
        try:
            call()
            return True
        except KeyboardInterrupt as exc:
            log.info("%s: a %s qemu.qmp held surfaced while the VM stopped", self.name,
                     type(exc).__name__)
        except Exception:  # a QMP gone or refusing: QEMU is killed all the same
            pass
        return False

    @property
    def pid(self) -> int | None:
        return self.console.pid if self.console else None

    # ---- commands -----------------------------------------------------------------------

    def run(self, command: str, *, timeout: float | None = None, check: bool = False,
            stdin: bytes | None = None, forensic: bool = False) -> CommandResult:
        """Run a shell command in the guest; a hung or dead guest marks the VM broken.

        ``forensic`` allows it on a VM already marked broken, to collect evidence (dmesg).
        """
        if forensic:
            self._require(VMState.RUNNING, VMState.BROKEN)
        else:
            self._require(VMState.RUNNING)
        assert self.ssh is not None
        limit = timeout or self.config.command_timeout
        try:
            with self.waits.waiting("guest"):
                result = self.ssh.run(command, limit, stdin)
        except CommandTimeout as exc:
            alive = self.responsive()
            self.state = VMState.BROKEN
            raise GuestDied(f"{self.name}: {exc}; the guest "
                            f"{'still answers' if alive else 'no longer answers'}",
                            command=self.argv, console_tail=self._tail()) from exc
        except (OSError, EOFError, ConnectionError, HarnessError) as exc:
            self.state = VMState.BROKEN
            raise GuestDied(f"{self.name}: lost the guest while running {command!r}: {exc}",
                            command=self.argv, console_tail=self._tail(),
                            exitcode=self.console.exitstatus() if self.console else None
                            ) from exc
        if check and not result.ok:
            raise GuestCommandError(command, result.status, result.stdout, result.stderr)
        return result

    def responsive(self, timeout: float = 10.0) -> bool:
        """Whether the guest answers a trivial command within ``timeout`` seconds."""
        if self.state not in (VMState.RUNNING, VMState.BROKEN) or self.ssh is None:
            return False
        if self.console is not None and self.console.ended:
            return False
        try:
            return self.ssh.run("true", timeout).ok
        except Exception:  # any failure here means "does not answer"
            return False

    def console_offset(self) -> int:
        return self.console.offset() if self.console else 0

    def mark_broken(self) -> None:
        if self.state == VMState.RUNNING:
            self.state = VMState.BROKEN

    # ---- block devices ------------------------------------------------------------------

    def attach_disk(self, path: Path, *, read_only: bool = True,
                    timeout: float = 60.0) -> HotplugDisk:
        """Hot-plug a raw image as a virtio disk; returns it with its guest device name."""
        with self.waits.waiting("hotplug"):
            return self._attach_disk(path, read_only, timeout)

    def _attach_disk(self, path: Path, read_only: bool, timeout: float) -> HotplugDisk:
        self._require(VMState.RUNNING)
        assert self.qmp is not None
        self._disk_seq += 1
        node = f"hp{self._disk_seq}"
        disk = Disk(node, path.resolve(), f"harness-{node}", read_only)
        self.qmp.cmd("blockdev-add", **disk.blockdev())
        try:
            self.qmp.cmd("device_add", **disk.device())
        except QMPError:
            self.qmp.cmd("blockdev-del", **{"node-name": node})
            raise
        script = (f"for d in /sys/block/vd*; do [ \"$(cat $d/serial 2>/dev/null)\" = "
                  f"\"{disk.serial}\" ] && echo ${{d##*/}}; done")
        deadline = Deadline(timeout)

        def found() -> str | None:
            out = self.run(script, timeout=max(5.0, deadline.remaining())).stdout.strip()
            return out or None
        name = poll(found, deadline, first=0.05)
        if name is None:
            raise HarnessError(f"{self.name}: hot-plugged {path} but no /dev/vd* with serial "
                               f"{disk.serial} appeared within {timeout:.0f} s")
        attached = HotplugDisk(disk, f"/dev/{name}")
        self._disks[node] = attached
        return attached

    def detach_disk(self, attached: HotplugDisk, timeout: float = 60.0) -> None:
        """Unplug a disk and wait until QEMU has released it."""
        with self.waits.waiting("hotplug"):
            self._detach_disk(attached, timeout)

    def _detach_disk(self, attached: HotplugDisk, timeout: float) -> None:
        self._require(VMState.RUNNING, VMState.BROKEN)
        assert self.qmp is not None
        node = attached.disk.node
        self.qmp.cmd("device_del", id=f"dev-{node}")
        deadline = Deadline(timeout)
        while not deadline.expired():
            try:
                event = self.qmp.pull_event(wait=min(1.0, max(0.01, deadline.remaining())))
            except TimeoutError:
                # qemu.qmp raises when no event came within `wait`: a slow guest (TCG under
                # load) takes longer than that to let go of the disk. Keep waiting.
                continue
            if event and event.get("event") == "DEVICE_DELETED" and \
                    event.get("data", {}).get("device") == f"dev-{node}":
                break
        else:
            raise HarnessError(f"{self.name}: the guest did not release {attached.device} "
                               f"({attached.disk.path}) within {timeout:.0f} s")
        self.qmp.cmd("blockdev-del", **{"node-name": node})
        self._disks.pop(node, None)

