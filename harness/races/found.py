"""A race finding as a report: ``reports/found/race-<id>.yaml`` (or, for a tree built with
patches, the deliberate break's: ``reports/mutations/races/``).

It carries the cell exactly (the pair, the target, the layout, the sources, which side took
which image, the window wideners, the seconds of each attempt) and what finding it took
(iterations, overlaps, minutes). ``make repro`` replays it through
``testcases/test_races.py::test_found_race_replays``, which runs the cell again until the
failure shows or the attempts run out.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import yaml

from harness.campaign.found import deliberate_break, found_report, save_found
from harness.campaign.runner import FOUND
from harness.core.errors import SpecError
from harness.core.paths import PROJECT
from harness.kernel.spec import KernelSpec
from harness.races.ops import LAYOUTS, OPS, TARGETS, WIDENERS, Cell, Pair

REPLAY_TEST = "testcases/test_races.py::test_found_race_replays"
MUTATION_FOUND = PROJECT / "reports" / "mutations" / "races"
FOUND_DIRS = (FOUND, MUTATION_FOUND)
# A replay runs its cell again and again until the failure shows or this many seconds have
# passed (at least one run): then it calls the race gone.
REPLAY_SECONDS = 60.0


def cell_dict(cell: Cell) -> dict[str, Any]:
    return {"pair": [cell.pair.a, cell.pair.b], "target": cell.target, "layout": cell.layout,
            "sources": list(cell.sources), "swapped": cell.swapped, "seconds": cell.seconds,
            "wideners": list(cell.wideners)}


def cell_from_dict(raw: dict[str, Any], origin: str) -> Cell:
    """The cell of a report; anything unknown is an error naming the report and the key."""
    def bad(key: str, value: object, known: object) -> SpecError:
        return SpecError(f"{origin}: race.{key}: {value!r} is not one of {known}")
    pair = raw["pair"]
    for name in pair:
        if name not in OPS:
            raise bad("pair", name, list(OPS))
    if raw["target"] not in TARGETS:
        raise bad("target", raw["target"], list(TARGETS))
    if raw["layout"] not in LAYOUTS:
        raise bad("layout", raw["layout"], list(LAYOUTS))
    for name in raw["wideners"]:
        if name not in WIDENERS:
            raise bad("wideners", name, list(WIDENERS))
    sources = tuple(str(s) for s in raw["sources"])
    if len(sources) != 2 or any(s not in ("block", "file") for s in sources):
        raise bad("sources", list(sources), "two of block, file")
    return Cell(Pair(str(pair[0]), str(pair[1])), str(raw["target"]), str(raw["layout"]),
                (sources[0], sources[1]), bool(raw["swapped"]), float(raw["seconds"]),
                tuple(str(w) for w in raw["wideners"]))


def found_id(kernel: str, cell: Cell, failure: str) -> str:
    first = failure.splitlines()[0] if failure else ""
    blob = json.dumps([kernel, cell_dict(cell), first], sort_keys=True)
    return f"race-{hashlib.sha256(blob.encode()).hexdigest()[:10]}"


def found_reports() -> list[Path]:
    return sorted(path for directory in FOUND_DIRS for path in directory.glob("race-*.yaml"))


def write_found(spec: KernelSpec, seed: int, cell: Cell, failure: str, directory: Path, *,
                cells_run: int, seconds: float, raw: dict[str, Any]) -> Path:
    kernel = str(spec)
    if deliberate_break(spec) is not None and directory.resolve() == FOUND.resolve():
        directory = MUTATION_FOUND
    ident = found_id(kernel, cell, failure)
    took = {"iterations": [raw.get("a_iterations"), raw.get("b_iterations")],
            "overlaps": raw.get("overlaps"), "cells_run": cells_run,
            "minutes": round(seconds / 60, 2)}
    lines = failure.splitlines()
    headline = (lines[1] if len(lines) > 1 else failure)[:140]
    report = found_report(spec, f"races: {cell.id}: {headline}",
                          f"make races KERNEL={kernel} SEED={seed} PAIRS={cell.pair.name} "
                          f"(cell {cells_run}, {seconds / 60:.1f} min into the run)",
                          f"{REPLAY_TEST}[{ident}]", 900, directory)
    report["race"] = {**cell_dict(cell), "took": took, "failure": failure}
    return save_found(directory, ident,
                      "# Found by `make races`: two operations side by side on mounts of one "
                      "domain, the windows\n# held open. `make repro REPORT=<this file>` "
                      "runs the cell again until the failure\n# shows or the attempts run "
                      "out.\n", report)


def load_found(path: Path) -> tuple[Cell, str]:
    try:
        raw = yaml.safe_load(path.read_text())["race"]
        return cell_from_dict(raw, str(path)), str(raw.get("failure", ""))
    except (KeyError, TypeError, ValueError, IndexError, yaml.YAMLError) as exc:
        raise SpecError(f"{path}: not a race report ({type(exc).__name__}: {exc})") from exc
