"""A divergence the explorer found, written as a bug report that ``make repro`` replays.

The report's reproducer is the replay test of ``testcases/test_explore.py``, which runs the
shrunk steps (kept in the report under ``explore``) through the same driver and model.

On a kernel built with patches (``tree:,patches=``: a deliberate break of fs/erofs), a find
is the break's signature, not a bug of the kernel: it goes to reports/mutations/explore/,
names the patches, and expects the unchanged tree to agree with the model. The replay test
runs those too, so every break the explorer caught stays a regression test.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import yaml

from harness.campaign.found import deliberate_break, found_report, save_found
from harness.campaign.runner import FOUND
from harness.core.paths import PROJECT
from harness.explore.driver import Step
from harness.kernel.spec import KernelSpec

MUTATION_FOUND = PROJECT / "reports" / "mutations" / "explore"
FOUND_DIRS = (FOUND, MUTATION_FOUND)
REPLAY_TEST = "testcases/test_explore.py::test_found_sequence_replays"


def found_id(kernel: str, steps: list[Step]) -> str:
    """Stable for one sequence on one kernel: finding it again overwrites the same file."""
    digest = hashlib.sha256(json.dumps([kernel, steps], sort_keys=True).encode()).hexdigest()
    return f"explore-{digest[:10]}"


def load_generated(path: Path) -> tuple[int, int] | None:
    """(seed, count) of the generated images a report's pool had, if any."""
    data = yaml.safe_load(path.read_text())["explore"].get("generated")
    return (int(data["seed"]), int(data["count"])) if data else None


def load_steps(path: Path) -> list[Step]:
    data = yaml.safe_load(path.read_text())
    return list(data["explore"]["steps"])


def found_reports() -> list[Path]:
    """Every report the explorer wrote, kernel bugs and caught breaks alike."""
    return sorted(path for directory in FOUND_DIRS for path in directory.glob("explore-*.yaml"))


def write_found(spec: KernelSpec, seed: int, failure: str, steps: list[Step],
                directory: Path | None = None, *, after_steps: int | None = None,
                after_seconds: float | None = None, generated: int | None = None) -> Path:
    """Write the report for this shrunk sequence (reports/found/<id>.yaml, or
    reports/mutations/explore/ for a patched tree); its path. ``after_*``: how long the
    exploration ran before it diverged."""
    kernel = str(spec)
    if directory is None:
        # A tree built with patches: what diverged is the deliberate break.
        directory = MUTATION_FOUND if deliberate_break(spec) else FOUND
    ident = found_id(kernel, steps)
    first = failure.splitlines()[0] if failure else "divergence"
    report = found_report(spec, f"explorer: {first[:150]}",
                          f"make explore KERNEL={kernel} SEED={seed} (shrunk to {len(steps)} "
                          f"steps)", f"{REPLAY_TEST}[{ident}]", 600, directory)
    found: dict[str, object] = {"seed": seed, "failure": failure}
    if generated:
        # The pool had generated images: the replay draws and builds them again.
        found["generated"] = {"seed": seed, "count": generated}
    if after_steps is not None:
        found["after_steps"] = after_steps
    if after_seconds is not None:
        found["after_seconds"] = round(after_seconds, 1)
    report["explore"] = {**found, "steps": steps}
    return save_found(directory, ident,
                      "# Found by the stateful explorer; the steps below are the shortest "
                      "sequence it\n# shrank the divergence to. `make repro REPORT=<this "
                      "file>` replays them.\n", report)
