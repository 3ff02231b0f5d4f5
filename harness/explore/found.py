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
import os
from dataclasses import replace
from pathlib import Path

import yaml

from harness.core.paths import PROJECT
from harness.explore.driver import Step
from harness.kernel.spec import KernelSpec, TreeSpec

FOUND = PROJECT / "reports" / "found"
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
    # A tree built with patches: what diverged is the deliberate break.
    broken = spec if isinstance(spec, TreeSpec) and spec.patches is not None else None
    if directory is None:
        directory = MUTATION_FOUND if broken else FOUND
    ident = found_id(kernel, steps)
    directory.mkdir(parents=True, exist_ok=True)
    first = failure.splitlines()[0] if failure else "divergence"
    report: dict[str, object] = {
        "title": f"explorer: {first[:150]}",
        "reported": f"make explore KERNEL={kernel} SEED={seed} (shrunk to {len(steps)} steps)",
        "kernel": kernel,
        "reproducer": {"test": [f"{REPLAY_TEST}[{ident}]"], "timeout": 600},
        "bug": {"test_fails": True},
        "expect_verdicts": {"base": "reproduced"},
    }
    if broken is not None and broken.patches is not None:
        report["kernel"] = str(replace(broken, patches=None, upto=None))
        report["patches"] = os.path.relpath(broken.patches.resolve(), directory.resolve())
        report["expect_verdicts"] = {"base": "not reproduced", "patched": "reproduced"}
    found: dict[str, object] = {"seed": seed, "failure": failure}
    if generated:
        # The pool had generated images: the replay draws and builds them again.
        found["generated"] = {"seed": seed, "count": generated}
    if after_steps is not None:
        found["after_steps"] = after_steps
    if after_seconds is not None:
        found["after_seconds"] = round(after_seconds, 1)
    report["explore"] = {**found, "steps": steps}
    path = directory / f"{ident}.yaml"
    header = ("# Found by the stateful explorer; the steps below are the shortest sequence it\n"
              "# shrank the divergence to. `make repro REPORT=<this file>` replays them.\n")
    path.write_text(header + yaml.safe_dump(report, sort_keys=False, width=100))
    return path
