"""Everything the harness knows about one running guest, with one owner.

Whoever boots a VM (the plugin's VM pool, ``repro``, a benchmark) makes its GuestSession
next to it and drops both together. Tests, fixtures and hooks reach this state through the
session, never by attaching attributes to the VM.
"""

from __future__ import annotations

import hashlib
import shlex
from pathlib import Path

from harness.guest.agent import Agent
from harness.guest.disks import KeptDisks
from harness.guest.probe import Probe
from harness.vm.machine import VM

UPLOADS = "/scratch/images"


class GuestSession:
    def __init__(self, vm: VM) -> None:
        self.vm = vm
        self.agent = Agent(vm)  # the helpers, uploaded once; long-running ones stream JSON
        self.probe = Probe(vm, self.agent)  # one probe server per guest
        self.disks = KeptDisks(vm)  # read-only image disks between tests
        self._modules: set[str] = set()
        self._uploads: dict[Path, str] = {}  # host file -> its copy on the guest's scratch disk
        # The kernel log record the splat check has read up to (-1: none yet).
        self.kernel_log_seen = -1

    def need_modules(self, *names: str) -> None:
        """modprobe each module once per guest (built-in ones succeed at once)."""
        missing = [name for name in names if name not in self._modules]
        if missing:
            self.vm.run(" && ".join(f"modprobe {shlex.quote(n)}" for n in missing), check=True)
            self._modules.update(missing)

    def changed_uploads(self) -> list[str]:
        """Uploaded images whose copy in the guest no longer has the host file's bytes (an
        image or blob written through a mount): each as "host file -> guest file"."""
        changed = []
        for local, remote in self._uploads.items():
            want = hashlib.sha256(local.read_bytes()).hexdigest()
            if self.probe.file_state(remote).read.sha256 != want:
                changed.append(f"{local} -> {remote}")
        return changed

    def discard(self, *locals_: Path) -> None:
        """Remove the guest copies of these uploads (campaigns that make a new image per
        example would otherwise fill the scratch disk); a later upload copies them again."""
        remotes = [self._uploads.pop(local) for local in locals_ if local in self._uploads]
        if remotes:
            self.vm.run("rm -f " + " ".join(shlex.quote(r) for r in remotes), check=True)

    def upload(self, local: Path, name: str) -> str:
        """The guest path of ``local`` on the scratch disk, copied there once per guest."""
        if local not in self._uploads:
            remote = f"{UPLOADS}/{name}"
            self.vm.run(f"mkdir -p {UPLOADS}", check=True)
            self.vm.run(f"cat > {shlex.quote(remote)}", stdin=local.read_bytes(), check=True,
                        timeout=300)
            self._uploads[local] = remote
        return self._uploads[local]
