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
        self._disks: list[HotplugDisk] = []  # writable: unplugged after the test
        self._kept: list[HotplugDisk] = []  # read-only: back to the session's kept disks
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
        """A virtio disk of ``path`` for this test; a read-only one may have served an
        earlier test (harness/guest/disks.py says why that carries no state)."""
        if read_only:
            kept = self.session.disks.take(path)
            self._kept.append(kept)
            return kept.device
        disk = self.vm.attach_disk(path, read_only=False)
        self._disks.append(disk)
        return disk.device

    def cleanup(self) -> None:
        """Undo what the test set up; errors here are real failures (a mount that will not
        go away is a finding), so they are raised after everything was tried. The guest
        side is one probe call: under TCG each program started costs tens of ms."""
        # Holders first: a mapping held by a child keeps its mount busy and pages resident.
        problems, busy = self.session.probe.cleanup(self.workdir, [self.workdir, self.scratch],
                                                    [d.device for d in self._kept])
        for disk in self._disks:
            try:
                self.vm.detach_disk(disk)
            except Exception as exc:  # keep going: every disk must be tried
                problems.append(f"detach {disk.device}: {exc!r}")
        self._disks.clear()
        problems += self.session.disks.give_back(self._kept, busy)
        self._kept.clear()
        if problems:
            raise GuestCommandError("cleanup", 1, "", "; ".join(problems))
