"""The nightly matrix: one YAML file of axes, run locally N cells at a time or fanned out by
a CI engine (one job per cell, configuration generated from the same file).

Each suite cell is its own pytest session over ``testcases/`` (its own VM), writing into
``<out>/cells/<cell>/``: JUnit XML, the suite's results.json (kernel release and config
hash, guest image key, mkfs version, per-test outcome, duration and measurements), console
logs of failures, and ``summary.json`` with the cell's axes and how its outcomes compare
with the expectations. A campaign cell (explore, fuzz, stress) runs that command with a
time budget and a fresh seed; its JSON goes into ``summary.json`` and a find's report into
``<out>/cells/<cell>/found/``. ``<out>/index.html`` combines the cells.
"""

from __future__ import annotations

import fnmatch
import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from harness.campaign.registry import CAMPAIGNS, campaign
from harness.campaign.runner import results_path
from harness.core.errors import SpecError
from harness.core.paths import PROJECT
from harness.core.yamlconf import Located, check_keys, load_yaml, where
from harness.kernel.spec import parse_kernel_spec

OUTCOMES = {"passed", "failed", "skipped", "xfailed", "xpassed", "error"}
# The time-boxed commands a matrix can run as cells, and the JSON each one writes.


@dataclass(frozen=True)
class Cell:
    name: str
    kernel_name: str
    kernel: str
    accel: str
    selection: str
    markers: str
    keywords: str
    campaign: str = ""  # explore | fuzz | stress: a time-boxed run instead of pytest
    minutes: float = 0.0


@dataclass(frozen=True)
class Expectation:
    kernel: str
    accel: str
    selection: str
    tests: str
    outcomes: tuple[str, ...]
    where: str

    def matches(self, cell: Cell, nodeid: str) -> bool:
        return (fnmatch.fnmatchcase(cell.kernel_name, self.kernel)
                and fnmatch.fnmatchcase(cell.accel, self.accel)
                and fnmatch.fnmatchcase(cell.selection, self.selection)
                and (fnmatch.fnmatchcase(nodeid, self.tests)
                     or fnmatch.fnmatchcase(nodeid.split("::")[-1], self.tests)))


@dataclass(frozen=True)
class Matrix:
    path: Path
    cells: tuple[Cell, ...]
    expectations: tuple[Expectation, ...]

    def cell(self, name: str) -> Cell:
        for cell in self.cells:
            if cell.name == name:
                return cell
        raise SpecError(f"{self.path}: no cell {name!r} (cells: "
                        f"{', '.join(c.name for c in self.cells)})")

    def allowed(self, cell: Cell, nodeid: str) -> tuple[str, ...]:
        for exp in self.expectations:
            if exp.matches(cell, nodeid):
                return exp.outcomes
        return ("passed",)


def _mapping(data: Located, key: str, what: str) -> Any:
    value = data[key]
    if not isinstance(value, dict) or not value:
        raise SpecError(f"{where(data, key)}: {key} must be a non-empty mapping of {what}")
    return value


def load_matrix(path: Path) -> Matrix:
    data = load_yaml(path)
    check_keys(data, {"kernels", "accels", "selections", "expectations", "campaigns"},
               {"kernels", "selections"}, "the matrix")
    kernels = _mapping(data, "kernels", "name: kernel spec")
    for name, spec in kernels.items():
        try:
            parse_kernel_spec(str(spec))
        except SpecError as exc:
            raise SpecError(f"{where(kernels, name)}: kernels.{name}: {exc}") from exc
    accels = data.get("accels", ["tcg"])
    if not isinstance(accels, list) or not set(accels) <= {"tcg", "kvm", "auto"}:
        raise SpecError(f"{where(data, 'accels')}: accels is a list of tcg, kvm, auto")
    selections = _mapping(data, "selections", "name: {markers, keywords}")
    for name, sel in selections.items():
        check_keys(sel, {"markers", "keywords"}, set(), f"selection {name!r}")
    cells = tuple(
        Cell(f"{k}-{a}-{s}", k, str(spec), a, s, str(sel.get("markers", "")),
             str(sel.get("keywords", "")))
        for k, spec in kernels.items() for a in accels for s, sel in selections.items())
    cells += _campaign_cells(data, kernels, accels)
    names = [c.name for c in cells]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise SpecError(f"{path}: two cells named {', '.join(twice)}: rename a selection")
    expectations = []
    for item in data.get("expectations") or []:
        check_keys(item, {"kernel", "accel", "selection", "tests", "outcome"}, {"outcome"},
                   "an expectation")
        outcomes = item["outcome"] if isinstance(item["outcome"], list) else [item["outcome"]]
        bad = set(outcomes) - OUTCOMES
        if bad:
            raise SpecError(f"{where(item, 'outcome')}: unknown outcome(s) {sorted(bad)} "
                            f"(known: {', '.join(sorted(OUTCOMES))})")
        for key, known in (("kernel", kernels), ("selection", selections)):
            pattern = str(item.get(key, "*"))
            if not any(fnmatch.fnmatchcase(str(n), pattern) for n in known):
                raise SpecError(f"{where(item, key)}: {key} {pattern!r} matches none of "
                                f"{', '.join(map(str, known))}")
        expectations.append(Expectation(str(item.get("kernel", "*")),
                                        str(item.get("accel", "*")),
                                        str(item.get("selection", "*")),
                                        str(item.get("tests", "*")), tuple(outcomes),
                                        where(item, "outcome")))
    return Matrix(path, cells, tuple(expectations))


def _campaign_cells(data: Located, kernels: Any, accels: list[str]) -> tuple[Cell, ...]:
    """campaigns: {explore|fuzz|stress: {kernels: [names], minutes: N}}: one cell for each
    kernel named and accelerator, named <kernel>-<accel>-<campaign>."""
    campaigns = data.get("campaigns") or {}
    if not isinstance(campaigns, dict):
        raise SpecError(f"{where(data, 'campaigns')}: campaigns is a mapping of "
                        f"{', '.join(CAMPAIGNS)} to {{kernels: [names], minutes: N}}")
    cells = []
    for name, body in campaigns.items():
        if name not in CAMPAIGNS:
            raise SpecError(f"{where(campaigns, name)}: unknown campaign {name!r} (known: "
                            f"{', '.join(CAMPAIGNS)})")
        check_keys(body, {"kernels", "minutes"}, {"kernels", "minutes"}, f"campaign {name!r}")
        minutes = body["minutes"]
        if not isinstance(minutes, (int, float)) or isinstance(minutes, bool) or minutes <= 0:
            raise SpecError(f"{where(body, 'minutes')}: campaign {name!r}: minutes must be "
                            f"a positive number, not {minutes!r}")
        names = body["kernels"]
        if not isinstance(names, list) or not names:
            raise SpecError(f"{where(body, 'kernels')}: campaign {name!r}: kernels is a "
                            f"non-empty list of kernel names")
        for kernel in names:
            if kernel not in kernels:
                raise SpecError(f"{where(body, 'kernels')}: campaign {name!r}: no kernel "
                                f"{kernel!r} (kernels: {', '.join(map(str, kernels))})")
            cells += [Cell(f"{kernel}-{a}-{name}", str(kernel), str(kernels[kernel]), a, name,
                           "", "", campaign=name, minutes=float(minutes)) for a in accels]
    return tuple(cells)


# ---- running cells ------------------------------------------------------------------------

def cell_command(cell: Cell, out: Path) -> list[str]:
    if cell.campaign:
        # No --seed: each night draws its own, printed and kept in the campaign's JSON.
        argv = [sys.executable, "-m", "harness", cell.campaign, f"--kernel={cell.kernel}",
                f"--accel={cell.accel}", f"--minutes={cell.minutes:g}",
                f"--out={out / 'artifacts'}"]
        return argv + ([f"--found={out / 'found'}"] if campaign(cell.campaign).finds else [])
    argv = [str(PROJECT / "scripts" / "pytest-nonempty"), sys.executable, "-m",
            "pytest", "testcases", f"--kernel={cell.kernel}", f"--accel={cell.accel}",
            f"--artifacts={out / 'artifacts'}", f"--junitxml={out / 'junit.xml'}",
            "-p", "no:cacheprovider", "-q", "-rfE"]
    if cell.markers:
        argv += ["-m", cell.markers]
    if cell.keywords:
        argv += ["-k", cell.keywords]
    return argv


def log_name(cell: Cell) -> str:
    return f"{cell.campaign}.log" if cell.campaign else "pytest.log"


def _log_tail(out: Path, cell: Cell) -> list[str]:
    path = out / log_name(cell)
    return path.read_text(errors="replace").splitlines()[-20:] if path.is_file() else []


def run_cell(matrix: Matrix, cell: Cell, root: Path) -> dict[str, Any]:
    out = root / "cells" / cell.name
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with (out / log_name(cell)).open("w") as log:
        proc = subprocess.run(cell_command(cell, out), cwd=PROJECT, stdout=log,
                              stderr=subprocess.STDOUT, check=False,
                              env={**os.environ, "PYTHONUNBUFFERED": "1"})
    return summarize_cell(matrix, cell, out, proc.returncode, time.monotonic() - started)


def summarize_campaign(cell: Cell, out: Path, status: int, seconds: float) -> dict[str, Any]:
    """A campaign cell is as expected when its command found nothing (exit 0)."""
    path = results_path(cell.campaign, out / "artifacts")
    campaign = json.loads(path.read_text()) if path.is_file() else None
    found = sorted(str(p.relative_to(out)) for p in (out / "found").glob("*.yaml"))
    summary: dict[str, Any] = {"cell": asdict(cell), "exit": status,
                               "seconds": round(seconds, 1), "results": None,
                               "campaign": campaign, "found": found, "unexpected": [],
                               "ok": campaign is not None and status == 0}
    if not summary["ok"]:
        tail = _log_tail(out, cell)
        what = "found a problem" if campaign is not None and status == 1 else \
            "ended without a verdict"
        summary["error"] = f"{cell.campaign} {what} (exit {status}):\n" + "\n".join(tail)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def summarize_cell(matrix: Matrix, cell: Cell, out: Path, status: int,
                   seconds: float) -> dict[str, Any]:
    if cell.campaign:
        return summarize_campaign(cell, out, status, seconds)
    found = sorted((out / "artifacts").glob("report-*/results.json"))
    results = json.loads(found[-1].read_text()) if found else None
    unexpected = []
    for case in (results or {}).get("cases", []):
        allowed = matrix.allowed(cell, case["nodeid"])
        if case["outcome"] not in allowed:
            unexpected.append({"nodeid": case["nodeid"], "outcome": case["outcome"],
                               "allowed": list(allowed), "reason": case.get("reason", "")})
    # pytest's exit 0 and 1 are verdicts the expectations judge; 2 and up (interrupted,
    # internal error, usage error, nothing collected) mean the results are not the whole.
    whole = status in (0, 1)
    summary = {"cell": asdict(cell), "exit": status, "seconds": round(seconds, 1),
               "results": results, "unexpected": unexpected,
               "ok": results is not None and whole and not unexpected}
    if results is None or not whole:
        tail = _log_tail(out, cell)
        what = "produced no results" if results is None else "did not run to the end"
        summary["error"] = f"the cell {what} (pytest exit {status}):\n" + "\n".join(tail)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def cell_state(cell: Cell, summary: dict[str, Any]) -> str:
    """A cell's outcome in a few words, for the progress line."""
    if summary["ok"]:
        return "as expected"
    if cell.campaign:  # no suite results: its error says what it found, and where
        state = str(summary.get("error") or "failed").splitlines()[0].rstrip(":")
        found = summary.get("found") or []
        return state + (f", {', '.join(found)}" if found else "")
    if not summary["results"]:
        return "NO RESULTS"
    if summary["exit"] not in (0, 1):
        return f"pytest exit {summary['exit']}, {len(summary['unexpected'])} unexpected"
    return f"{len(summary['unexpected'])} unexpected"


# A cell's expected length when no earlier run of it is on record: a whole suite on a
# debug kernel (KASAN, lockdep) runs several times longer than on a Debian one.
GUESS_SUITE_SECONDS = 1800.0
GUESS_DEBUG_FACTOR = 4.0


def expected_seconds(cell: Cell, root: Path) -> float:
    """How long a cell should take: its last run in this results directory, else a guess
    (a campaign's time box, a suite's typical length)."""
    try:
        return float(json.loads((root / "cells" / cell.name / "summary.json")
                                .read_text())["seconds"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    if cell.campaign:
        return cell.minutes * 60
    return GUESS_SUITE_SECONDS * (GUESS_DEBUG_FACTOR if "debug" in cell.kernel else 1.0)


def longest_first(cells: list[Cell], root: Path) -> list[Cell]:
    """The order to start cells in: longest first, so that with N at a time the last cell
    to start is a short one and the wall time stays close to the longest cell's (a long
    cell started last would run alone at the end)."""
    return sorted(cells, key=lambda c: -expected_seconds(c, root))


_SAY = threading.Lock()


def say(line: str) -> None:
    """One progress line on stderr, whole: print() writes the text and its newline
    separately, so two cells starting together ran their lines into one."""
    with _SAY:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()


def run_matrix(path: Path, out: Path, jobs: int = 1, only: list[str] | None = None) -> int:
    matrix = load_matrix(path)
    cells = [matrix.cell(n) for n in only] if only else list(matrix.cells)
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    say(f"matrix: {len(cells)} cell(s) from {path}, {jobs} at a time, into {out}")

    def one(cell: Cell) -> dict[str, Any]:
        say(f"matrix: {cell.name}: started ({cell.kernel}, {cell.accel}, {cell.selection})")
        summary = run_cell(matrix, cell, out)
        counts = (summary["results"] or {}).get("counts", {})
        state = cell_state(cell, summary)
        say(f"matrix: {cell.name}: {state} "
            f"({', '.join(f'{n} {k}' for k, n in sorted(counts.items())) or 'nothing'}) "
            f"in {summary['seconds']:.0f} s")
        return summary

    order = longest_first(cells, out)
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        done = dict(zip([c.name for c in order], pool.map(one, order), strict=True))
    summaries = [done[c.name] for c in cells]  # the report keeps the matrix's order
    wall = time.monotonic() - started
    # The run as a whole: the wall time of all cells at this many jobs, for the report.
    (out / "run.json").write_text(json.dumps(
        {"matrix": str(path), "jobs": jobs, "wall_seconds": round(wall, 1),
         "cells": [s["cell"]["name"] for s in summaries]}, indent=1))
    from harness.results.matrix_report import write_matrix_report
    index = write_matrix_report(out, title=f"{path.name}")
    bad = [s["cell"]["name"] for s in summaries if not s["ok"]]
    print(f"matrix: {len(cells) - len(bad)}/{len(cells)} cells as expected in {wall / 60:.1f} "
          f"min; report {index}" + (f"; not as expected: {', '.join(bad)}" if bad else ""))
    return 1 if bad else 0
