"""A booted guest, saved once and restored for every later VM of its kind.

A cold boot under TCG takes 4-5 s from QEMU's start to SSH (a KASAN kernel: about 25 s);
restoring a guest saved at the moment its /init printed the ready marker takes about 1 s.
So the first VM of a kind boots and is saved (QEMU's migration stream into a file, and the
scratch disk as it was at that moment); every later one starts QEMU with ``-incoming``
from the file and a copy of that disk.

"Of its kind" is the key: QEMU's command line with this VM's own paths taken out, the
QEMU binary's version, and the contents of the kernel and initramfs it boots. Anything
that changes the guest's start changes the key. Every restored VM shares one boot's
state (KASLR offsets, the RNG's state, the boot log); ``--vm-cold-boot`` boots every VM.

The saved guest is taken before sshd has answered anyone, so no stale connection lives on
in it; a restored guest starts sshd where the saved one would have.
"""

from __future__ import annotations

import functools
import logging
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from qemu.qmp import QMPError
from qemu.qmp.legacy import QEMUMonitorProtocol

from harness.core import cache
from harness.core.deadline import Deadline
from harness.core.errors import HarnessError

log = logging.getLogger(__name__)

KIND = "booted-guests"
MEMORY = "memory.bin"  # QEMU's migration stream
SCRATCH = "scratch.ext4"  # the scratch disk when the stream was taken
SAVE_TIMEOUT = 120.0
KEEP = 8  # saved guests kept; the oldest go first


class RestoreFailed(HarnessError):
    """QEMU did not take the saved guest (a stale or damaged file): boot cold instead."""


@functools.cache
def qemu_version(binary: str) -> str:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
    return out.stdout.strip()


def key_for(argv: list[str], workdir: Path, qmp_socket: Path, files: list[Path]) -> str:
    """The key of a cold boot's command line: per-VM paths (work directory, QMP socket)
    are taken out; ``files`` (kernel, initramfs) count by content key, not by path."""
    normalized = [arg.replace(str(qmp_socket), "<qmp>").replace(str(workdir), "<work>")
                  for arg in argv]
    contents = []
    for path in files:
        try:
            stat = path.stat()
            contents.append(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}")
        except OSError:
            contents.append(f"{path}:missing")
    return cache.content_key(["booted-guest-v1", qemu_version(argv[0]), *normalized,
                              *contents])


def saved(key: str) -> Path | None:
    """The saved guest for ``key``, if there is one."""
    entry = cache.cache_root() / KIND / key
    return entry if (entry / cache.MANIFEST).is_file() else None


def forget(key: str, why: str = "QEMU did not restore it") -> None:
    log.warning("removing the saved guest %s: %s", cache.cache_root() / KIND / key, why)
    cache.forget(KIND, key)


def copy_sparse(source: Path, target: Path) -> None:
    """A copy that keeps the holes: the scratch disk is 2 GiB with a few MiB written."""
    subprocess.run(["cp", "--sparse=always", "--reflink=auto", str(source), str(target)],
                   check=True, capture_output=True)


def _migrate(qmp: QEMUMonitorProtocol, target: Path) -> None:
    # The default bandwidth cap (32 MiB/s) would make a 1 GiB guest take seconds.
    qmp.cmd("migrate-set-parameters", **{"max-bandwidth": 8 << 30})
    qmp.cmd("migrate", uri=f"exec:cat > {shlex.quote(str(target))}")
    deadline = Deadline(SAVE_TIMEOUT)
    while True:
        status = qmp.cmd("query-migrate")
        state = status.get("status") if isinstance(status, dict) else None
        if state == "completed":
            return
        if state in ("failed", "cancelled") or deadline.expired():
            raise HarnessError(f"saving the booted guest into {target} did not complete: "
                               f"{status}")
        time.sleep(0.01)


def save(key: str, qmp: QEMUMonitorProtocol, scratch: Path | None) -> Path | None:
    """Save the running guest under ``key`` (unless another VM already did) and let it go
    on; the saved guest's entry, or None if saving failed. The guest is paused from the end
    of the stream until its scratch disk is copied, so both are the same instant."""
    def build(out: Path) -> dict[str, object]:
        started = time.monotonic()
        try:
            _migrate(qmp, out / MEMORY)
            if scratch is not None:
                copy_sparse(scratch, out / SCRATCH)
        except BaseException:
            # The failure (a Ctrl-C above all) goes on up: a "cont" that fails too, as it
            # does once qemu.qmp holds that Ctrl-C in its reader, must not replace it.
            try:
                qmp.cmd("cont")
            except Exception as exc:  # noted: a guest left paused shows later as a hang
                log.warning("the guest could not be resumed after a failed save: %s", exc)
            raise
        # After a completed migration QEMU leaves the source paused ("postmigrate");
        # cont takes its disks back and runs it on.
        qmp.cmd("cont")
        return {"saved_in_seconds": round(time.monotonic() - started, 2)}
    try:
        entry = cache.get_or_build(KIND, key, build, verify_files=False)
    except (HarnessError, QMPError, OSError, subprocess.CalledProcessError) as exc:
        # Saving only saves time: the guest runs on, and later VMs boot cold.
        log.warning("could not save the booted guest (%s); later VMs of its kind boot cold",
                    exc)
        return None
    prune()
    return entry


def seconds_to_save(entry: Path) -> float:
    """How long saving this guest paused its VM (recorded when it was saved)."""
    value = cache.read_meta(entry).get("saved_in_seconds", 0.0)
    return float(value) if isinstance(value, (int, float)) else 0.0


def prune(keep: int = KEEP) -> None:
    """Keep the ``keep`` newest saved guests: each rebuilt tree kernel makes a new kind,
    and each saved guest holds its memory (about 140 MiB for 1 GiB)."""
    base = cache.cache_root() / KIND
    entries = sorted((p for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")),
                     key=lambda p: p.stat().st_mtime, reverse=True)
    for old in entries[keep:]:
        shutil.rmtree(old, ignore_errors=True)
        (base / f"{old.name}.lock").unlink(missing_ok=True)


def incoming_args(entry: Path) -> list[str]:
    return ["-incoming", f"exec:cat {shlex.quote(str(entry / MEMORY))}"]


def wait_restored(qmp: QEMUMonitorProtocol, deadline: Deadline,
                  ended: Callable[[], bool]) -> None:
    """Until QEMU has read the saved guest and runs it; RestoreFailed if QEMU gives up
    (``ended()`` tells that the process is gone)."""
    while not deadline.expired():
        if ended():
            raise RestoreFailed("QEMU ended while it read the saved guest")
        try:
            status = qmp.cmd("query-status")
        except (QMPError, OSError, EOFError) as exc:  # QEMU going away mid-restore
            raise RestoreFailed(f"QEMU stopped answering while it read the saved guest: "
                                f"{exc!r}") from exc
        if isinstance(status, dict) and status.get("status") == "running":
            return
        if isinstance(status, dict) and status.get("status") in ("internal-error",
                                                                 "guest-panicked"):
            raise RestoreFailed(f"the restored guest is {status.get('status')}")
        time.sleep(0.01)
    raise RestoreFailed("QEMU did not finish reading the saved guest in time")
