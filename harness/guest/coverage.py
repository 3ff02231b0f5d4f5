"""gcov counters out of a coverage kernel's guest (``tree:,coverage``): the ``.gcda`` files
of fs/erofs, read from debugfs before the VM stops. Each VM of a run saves its own sets
(``<dir>/<test file>@<vm name>-<n>.tar.gz``): when it goes on to another test file, when it
stops, and before each test marked as a known kernel bug, which may crash it; each set is
what the tests of the file it names executed since the save before (``boot``: before any
test), which is how ``make review`` knows which test files run which lines. ``make
coverage`` merges them (harness/results/coverage.py). A VM that dies otherwise takes the
counters since its last save with it.
"""

from __future__ import annotations

import base64
import binascii
import io
import logging
import shlex
import tarfile
from pathlib import Path

from harness.kernel.kbuild import COVERAGE_DIR as PART
from harness.vm.machine import VM, VMState

log = logging.getLogger(__name__)

GCOV_ROOT = "/sys/kernel/debug/gcov"
COUNTERS_DIR = "gcov"  # under a run's artifacts directory
# debugfs reports every counter file as 0 bytes long, so tar or cp would copy nothing: read
# them in Python and send one gzip'd tar back, base64 on stdout.
_DUMP = r"""
import base64, io, os, sys, tarfile
root, part = sys.argv[1], sys.argv[2]
buf = io.BytesIO()
with tarfile.open(fileobj=buf, mode="w:gz") as tar:
    for top, _, names in os.walk(root):
        if not top.endswith("/" + part):
            continue
        for name in sorted(names):
            if name.endswith(".gcda"):
                with open(os.path.join(top, name), "rb") as fh:
                    data = fh.read()
                info = tarfile.TarInfo(part + "/" + name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
if len(sys.argv) > 3:  # counted once: the next save starts from zero
    with open(os.path.join(root, "reset"), "w") as fh:
        fh.write("1")
sys.stdout.write(base64.b64encode(buf.getvalue()).decode())
"""


def has_counters(vm: VM) -> bool:
    return vm.kernel.option("GCOV_KERNEL") == "y"


def save_counters(vm: VM, into: Path, *, reset: bool = False, label: str = "boot") -> int:
    """Write the guest's fs/erofs counters to ``<into>/<label>@<vm name>-<n>.tar.gz``; the
    number of counter files (0 on a kernel without gcov, or a guest that no longer answers).
    ``reset``: zero the guest's counters once read, so that a later save of the same guest
    (before a test that may crash it, and at its end) counts nothing twice."""
    if not has_counters(vm) or vm.state not in (VMState.RUNNING, VMState.BROKEN):
        return 0
    # A guest a test broke (a splat: the reader killed, the kernel going on) still holds
    # everything counted since the last save; it is read before the guest is replaced.
    broken = vm.state is VMState.BROKEN
    if broken and not vm.responsive():
        return 0
    command = f"python3 -c {shlex.quote(_DUMP)} {GCOV_ROOT} {PART}" + (" reset" if reset else "")
    # A broken guest that hangs in the dump is not waited for as long as a healthy one.
    result = vm.run(command, timeout=30 if broken else 120, forensic=broken)
    if not result.ok:
        log.warning("%s: no coverage counters: %s", vm.name, result.stderr.strip()[-300:])
        return 0
    try:
        blob = base64.b64decode(result.stdout.strip(), validate=True)
        with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
            count = sum(1 for member in tar.getmembers() if member.isfile())
    except (binascii.Error, tarfile.TarError, EOFError) as exc:
        log.warning("%s: unreadable coverage counters: %s", vm.name, exc)
        return 0
    into.mkdir(parents=True, exist_ok=True)
    taken = len(list(into.glob(f"*@{vm.name}-*.tar.gz")))
    (into / f"{label}@{vm.name}-{taken}.tar.gz").write_bytes(blob)
    return count


def label_of(counters: Path) -> str:
    """The test file a set of counters was saved for (``boot``: before any test)."""
    name = counters.name.removesuffix(".tar.gz")
    return name.split("@", 1)[0] if "@" in name else "boot"
