"""The combined report of a matrix run: a grid of cells x tests, the sharing measurements
of each cell as bars, and links to the console logs of failures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jinja2

from harness.core.names import safe_name
from harness.core.paths import TEMPLATES


def load_cells(root: Path) -> list[dict[str, Any]]:
    """Every cell summary under ``root`` (a matrix output, or CI artifacts unpacked there)."""
    return [json.loads(p.read_text()) for p in sorted(root.glob("**/summary.json"))]


def _grid(cells: list[dict[str, Any]]) -> tuple[list[str], dict[str, dict[str, dict[str, str]]]]:
    tests: dict[str, dict[str, dict[str, str]]] = {}
    for cell in cells:
        name = cell["cell"]["name"]
        unexpected = {u["nodeid"] for u in cell.get("unexpected", [])}
        for case in (cell.get("results") or {}).get("cases", []):
            log = f"cells/{name}/artifacts/{safe_name(case['nodeid'])}/console.log"
            tests.setdefault(case["nodeid"], {})[name] = {
                "outcome": case["outcome"], "unexpected": str(case["nodeid"] in unexpected),
                "log": log if case["outcome"] in ("failed", "error") else "",
                "reason": case.get("reason", "")}
    return sorted(tests), tests


def _bars(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Savings per cell (the mean over its measuring tests), scaled for SVG bars."""
    rows = []
    for cell in cells:
        savings = (cell.get("results") or {}).get("savings", [])
        by_what: dict[str, list[float]] = {}
        for row in savings:
            by_what.setdefault(f"{row['what']}, N={row['readers']}", []).append(row["saving"])
        for what, values in sorted(by_what.items()):
            mean = sum(values) / len(values)
            rows.append({"cell": cell["cell"]["name"], "what": what, "saving": mean,
                         "width": max(0.0, mean) * 400})
    return rows


def campaign_line(cell: dict[str, Any]) -> str:
    """What a campaign cell did, in one line: its seed, how much it ran, what it found."""
    c = cell.get("campaign") or {}
    name = cell["cell"].get("campaign", "")
    if name == "explore":
        done = f"{c.get('steps', 0)} steps, {c.get('sequences', 0)} sequences"
    elif name == "fuzz":
        done = f"{c.get('trials', 0)} trials, {c.get('mounts_refused', 0)} mounts refused"
    else:
        done = (f"{c.get('reads', 0)} reads, {c.get('bytes', 0) / 2**20:.0f} MiB verified, "
                f"{len(c.get('splats', []))} kernel reports")
    found = cell.get("found") or []
    return f"seed {c.get('seed', '?')}: {done}" + (f"; found {', '.join(found)}" if found
                                                   else "")


def write_matrix_report(root: Path, title: str = "matrix") -> Path:
    cells = load_cells(root)
    names, grid = _grid(cells)
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)),
                             undefined=jinja2.StrictUndefined, autoescape=True)
    env.globals["campaign_line"] = campaign_line
    # run.json: the wall time of a local `make matrix` (CI jobs have none: they run apart).
    run = json.loads((root / "run.json").read_text()) if (root / "run.json").is_file() else {}
    html = env.get_template("matrix.html.j2").render(
        title=title, cells=cells, tests=names, grid=grid, bars=_bars(cells), run=run)
    index = root / "index.html"
    index.write_text(html)
    (root / "matrix.json").write_text(json.dumps(
        {"run": run,
         "cells": [{k: c[k] for k in ("cell", "exit", "seconds", "ok", "unexpected")}
                   for c in cells]}, indent=1))
    return index
