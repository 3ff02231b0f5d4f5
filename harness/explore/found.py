"""A divergence the explorer found, written as a bug report that ``make repro`` replays.

The report's reproducer is the replay test of ``testcases/test_explore.py``, which runs the
shrunk steps (kept in the report under ``explore``) through the same driver and model.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import yaml

from harness.core.paths import PROJECT
from harness.explore.driver import Step

FOUND = PROJECT / "reports" / "found"
REPLAY_TEST = "testcases/test_explore.py::test_found_sequence_replays"


def found_id(kernel: str, steps: list[Step]) -> str:
    """Stable for one sequence on one kernel: finding it again overwrites the same file."""
    digest = hashlib.sha256(json.dumps([kernel, steps], sort_keys=True).encode()).hexdigest()
    return f"explore-{digest[:10]}"


def load_steps(path: Path) -> list[Step]:
    data = yaml.safe_load(path.read_text())
    return list(data["explore"]["steps"])


def write_found(kernel: str, seed: int, failure: str, steps: list[Step],
                directory: Path = FOUND) -> Path:
    """Write reports/found/<id>.yaml for this shrunk sequence; its path."""
    ident = found_id(kernel, steps)
    directory.mkdir(parents=True, exist_ok=True)
    first = failure.splitlines()[0] if failure else "divergence"
    report = {
        "title": f"explorer: {first[:150]}",
        "reported": f"make explore KERNEL={kernel} SEED={seed} (shrunk to {len(steps)} steps)",
        "kernel": kernel,
        "reproducer": {"test": [f"{REPLAY_TEST}[{ident}]"], "timeout": 600},
        "bug": {"test_fails": True},
        "expect_verdicts": {"base": "reproduced"},
        "explore": {"seed": seed, "failure": failure, "steps": steps},
    }
    path = directory / f"{ident}.yaml"
    header = ("# Found by the stateful explorer; the steps below are the shortest sequence it\n"
              "# shrank the divergence to. `make repro REPORT=<this file>` replays them.\n")
    path.write_text(header + yaml.safe_dump(report, sort_keys=False, width=100))
    return path
