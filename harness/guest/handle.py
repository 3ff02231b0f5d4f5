"""A test's handle on the guest: commands, files, disks, and the clean-up that leaves the
guest as the test found it (mounts under its work directory undone, disks detached)."""

from __future__ import annotations

import shlex
from pathlib import Path

from harness.core.errors import GuestCommandError
from harness.guest.session import GuestSession
from harness.vm.machine import HotplugDisk
from harness.vm.sshclient import CommandResult

WORK_ROOT = "/run/harness"
SCRATCH_ROOT = "/scratch/own"


class Guest:
    def __init__(self, session: GuestSession, name: str = "test") -> None:
        self.session = session
        self.vm = session.vm
        self.workdir = f"{WORK_ROOT}/{name}"
        # Files of this test on the scratch disk (private copies of images): removed after it.
        self.scratch = f"{SCRATCH_ROOT}/{name}"
        self._disks: list[HotplugDisk] = []
        self.vm.run(f"rm -rf {self.workdir} && mkdir -p {self.workdir}", check=True)

    def run(self, command: str, *, timeout: float | None = None,
            stdin: bytes | None = None) -> CommandResult:
        """Run a command; the result carries the status, so tests can expect failures."""
        return self.vm.run(command, timeout=timeout, stdin=stdin)

    def check(self, command: str, *, timeout: float | None = None,
              stdin: bytes | None = None) -> str:
        """Run a command that must succeed and return its stdout."""
        return self.vm.run(command, timeout=timeout, stdin=stdin, check=True).stdout

    def write_file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        q = shlex.quote(path)
        self.vm.run(f"cat > {q} && chmod {mode:o} {q}", stdin=data, check=True)

    def attach_disk(self, path: Path, read_only: bool = True) -> str:
        disk = self.vm.attach_disk(path, read_only=read_only)
        self._disks.append(disk)
        return disk.device

    def mounts_under(self, prefix: str) -> list[str]:
        out = self.vm.run("cat /proc/mounts", check=True).stdout
        points = [line.split()[1] for line in out.splitlines() if len(line.split()) > 1]
        return [p for p in points if p == prefix or p.startswith(prefix + "/")]

    def cleanup(self) -> None:
        """Undo what the test set up; errors here are real failures (a mount that will not
        go away is a finding), so they are raised after everything was tried."""
        problems = []
        # A mapping held by a child keeps its mount busy and its pages resident.
        self.session.probe.end_holders()
        for point in sorted(self.mounts_under(self.workdir), key=len, reverse=True):
            result = self.vm.run(f"umount {shlex.quote(point)} || umount -l {shlex.quote(point)}")
            if not result.ok:
                problems.append(f"umount {point}: {result.stderr.strip()}")
        self.vm.run("for l in $(losetup -n -O NAME 2>/dev/null); do losetup -d $l; done")
        for disk in self._disks:
            try:
                self.vm.detach_disk(disk)
            except Exception as exc:  # keep going: every disk must be tried
                problems.append(f"detach {disk.device}: {exc!r}")
        self._disks.clear()
        self.vm.run(f"rm -rf {self.workdir} {self.scratch}")
        if problems:
            raise GuestCommandError("cleanup", 1, "", "; ".join(problems))
