"""Guest helpers (harness/guest/helpers/*.py) uploaded once per guest and run with their JSON
lines streamed back: the one way a campaign talks to a long-running program in the guest.

The helpers folder goes up whole (a helper imports the probe's functions), into one
directory, the first time any helper is asked for.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from harness.vm.machine import VM

HELPERS_DIR = Path(__file__).parent / "helpers"
GUEST_HELPERS = "/run/harness-helpers"


class Agent:
    def __init__(self, vm: VM) -> None:
        self.vm = vm
        self._installed = False

    def install(self) -> str:
        """Upload the helpers (once per guest); the guest directory they are in."""
        if not self._installed:
            self.vm.run(f"mkdir -p {GUEST_HELPERS}", check=True)
            for source in sorted(HELPERS_DIR.glob("*.py")):
                self.vm.run(f"cat > {GUEST_HELPERS}/{source.name}",
                            stdin=source.read_bytes(), check=True)
            self._installed = True
        return GUEST_HELPERS

    def path(self, helper: Path | str) -> str:
        """The guest path of a helper (``stress.py`` or its host path)."""
        return f"{self.install()}/{Path(helper).name}"

    def stream(self, helper: Path | str, args: list[str], timeout: float
               ) -> Iterator[dict[str, Any]]:
        """Run ``helper`` with ``args`` and yield each JSON line it prints, as it prints it.
        A helper that runs longer than ``timeout`` without a line raises TimeoutError."""
        assert self.vm.ssh is not None
        command = " ".join(["exec", "python3", shlex.quote(self.path(helper)),
                            *map(shlex.quote, args)])
        channel = self.vm.ssh.open_stream(command, timeout)
        try:
            for raw in channel.makefile("rb"):
                yield json.loads(raw)
        finally:
            channel.close()
