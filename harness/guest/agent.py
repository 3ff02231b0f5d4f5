"""Guest helpers (harness/guest/helpers/*.py) uploaded once per guest and run with their JSON
lines streamed back: the one way a campaign talks to a long-running program in the guest.

The helpers folder goes up whole, as one zip unpacked in the guest (one round trip), the
first time any helper is asked for: the probe is a package (``pcprobe/``) and the other
helpers import it, so they must sit side by side.
"""

from __future__ import annotations

import io
import json
import shlex
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from harness.vm.machine import VM

HELPERS_DIR = Path(__file__).parent / "helpers"
GUEST_HELPERS = "/run/harness-helpers"


# Run by the guest's Python: the zip comes on stdin.
UNZIP = "import io, sys, zipfile; zipfile.ZipFile(io.BytesIO(sys.stdin.buffer.read())).extractall()"


def helpers_zip() -> bytes:
    """Every helper source, the probe's package included, as a zip of the helpers folder."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for source in sorted(HELPERS_DIR.rglob("*.py")):
            # A fixed date: zip cannot store one before 1980, which a checkout may have.
            entry = zipfile.ZipInfo(source.relative_to(HELPERS_DIR).as_posix(),
                                    (1980, 1, 1, 0, 0, 0))
            entry.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(entry, source.read_bytes())
    return buffer.getvalue()


class Agent:
    def __init__(self, vm: VM) -> None:
        self.vm = vm
        self._installed = False

    def install(self) -> str:
        """Upload the helpers (once per guest); the guest directory they are in."""
        if not self._installed:
            self.vm.run(f"mkdir -p {GUEST_HELPERS} && cd {GUEST_HELPERS} && python3 -c "
                        f"{shlex.quote(UNZIP)}", stdin=helpers_zip(), check=True)
            self._installed = True
        return GUEST_HELPERS

    def path(self, helper: Path | str) -> str:
        """The guest path of a helper (``stress.py`` or its host path)."""
        return f"{self.install()}/{Path(helper).name}"

    def module_command(self, module: str, *args: str) -> str:
        """The shell command that runs the helper package ``module`` (``python3 -m``, from
        the helpers' folder so that it imports them) with ``args``."""
        return " ".join(["cd", self.install(), "&&", "exec", "python3", "-m", module,
                         *map(shlex.quote, args)])

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
