"""``make compare A=<results> B=<results>``: what changed between two runs.

A results path is a matrix output (``cells/*/summary.json``), one cell's directory, or an
artifacts directory with ``report-*/results.json`` from ``make run``. Cells are paired by
name; two sides of one cell each (two kernels, two nights) are paired with each other, which
makes the comparison a differential report of kernel behaviour. Listed: outcome changes
(passed -> failed first), tests present on one side only, new kernel splats, and
measurements that moved by more than the tolerance.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.core.errors import SpecError

WORSE = {("passed", "failed"), ("passed", "error"), ("xfailed", "xpassed"),
         ("skipped", "failed"), ("passed", "xpassed"), ("xfailed", "failed")}
SPLAT_KIND = re.compile(r"kernel (\w+) report: (.*)")


def load_side(path: Path) -> dict[str, dict[str, Any]]:
    """cell name -> results.json content."""
    if not path.exists():
        raise SpecError(f"{path}: no such results directory")
    summaries = sorted(path.glob("cells/*/summary.json")) or sorted(path.glob("summary.json"))
    if summaries:
        out = {}
        for item in summaries:
            data = json.loads(item.read_text())
            if data.get("results"):
                out[data["cell"]["name"]] = data["results"]
        return out
    reports = sorted(path.glob("**/report-*/results.json")) or sorted(path.glob("results.json"))
    if not reports:
        raise SpecError(f"{path}: no cells/*/summary.json, summary.json or "
                        f"report-*/results.json under it: not a results directory")
    return {p.parent.name: json.loads(p.read_text()) for p in reports}


@dataclass
class Diff:
    a: str
    b: str
    a_config: dict[str, Any]
    b_config: dict[str, Any]
    changed: list[tuple[str, str, str]] = field(default_factory=list)  # nodeid, was, now
    only_a: list[str] = field(default_factory=list)
    only_b: list[str] = field(default_factory=list)
    new_splats: list[tuple[str, str]] = field(default_factory=list)
    moved: list[tuple[str, str, float, float]] = field(default_factory=list)

    @property
    def regressions(self) -> list[tuple[str, str, str]]:
        return [c for c in self.changed if (c[1], c[2]) in WORSE]


def _splats(case: dict[str, Any]) -> set[str]:
    return {f"{m.group(1)}: {m.group(2)[:120]}"
            for m in SPLAT_KIND.finditer(case.get("reason", ""))}


def diff_results(a_name: str, a: dict[str, Any], b_name: str, b: dict[str, Any],
                 tolerance: float) -> Diff:
    diff = Diff(a_name, b_name, a.get("config", {}), b.get("config", {}))
    ca = {c["nodeid"]: c for c in a.get("cases", [])}
    cb = {c["nodeid"]: c for c in b.get("cases", [])}
    diff.only_a = sorted(set(ca) - set(cb))
    diff.only_b = sorted(set(cb) - set(ca))
    for nodeid in sorted(set(ca) & set(cb)):
        was, now = ca[nodeid], cb[nodeid]
        if was["outcome"] != now["outcome"]:
            diff.changed.append((nodeid, was["outcome"], now["outcome"]))
        for splat in sorted(_splats(now) - _splats(was)):
            diff.new_splats.append((nodeid, splat))
        for key, old in was.get("measurements", {}).items():
            new = now.get("measurements", {}).get(key)
            if isinstance(old, (int, float)) and isinstance(new, (int, float)):
                base = max(abs(old), 1e-9)
                if abs(new - old) / base > tolerance:
                    diff.moved.append((nodeid, key, float(old), float(new)))
    for nodeid in diff.only_b:
        for splat in sorted(_splats(cb[nodeid])):
            diff.new_splats.append((nodeid, splat))
    diff.changed.sort(key=lambda c: ((c[1], c[2]) not in WORSE, c[0]))
    return diff


def pair_sides(a: dict[str, dict[str, Any]],
               b: dict[str, dict[str, Any]]) -> list[tuple[str, str]]:
    common = sorted(set(a) & set(b))
    if common:
        return [(n, n) for n in common]
    if len(a) == 1 and len(b) == 1:
        return [(next(iter(a)), next(iter(b)))]
    raise SpecError(f"no cells in common between the two sides (A: {', '.join(sorted(a))}; "
                    f"B: {', '.join(sorted(b))}); point A and B at single cells to compare "
                    f"two different ones")


def render(diff: Diff, limit: int = 60) -> str:
    def cfg(c: dict[str, Any]) -> str:
        return f"{c.get('kernel', '?')} ({c.get('kernel_spec', '?')}, mkfs {c.get('mkfs', '?')})"

    lines = [f"== {diff.a} -> {diff.b}", f"   A: {cfg(diff.a_config)}",
             f"   B: {cfg(diff.b_config)}"]
    sections = [
        (f"outcomes changed ({len(diff.regressions)} worse)",
         [f"{was:>8} -> {now:<8} {n}" for n, was, now in diff.changed]),
        ("new kernel splats", [f"{n}: {s}" for n, s in diff.new_splats]),
        ("measurements beyond tolerance",
         [f"{n} {k}: {old:g} -> {new:g} ({(new - old) / max(abs(old), 1e-9):+.0%})"
          for n, k, old, new in diff.moved]),
        ("only in A", diff.only_a), ("only in B", diff.only_b)]
    for title, rows in sections:
        lines.append(f"   {title}: {len(rows)}")
        lines += [f"     {row}" for row in rows[:limit]]
        if len(rows) > limit:
            lines.append(f"     ... and {len(rows) - limit} more")
    return "\n".join(lines)


def compare(a_path: Path, b_path: Path, tolerance: float = 0.10) -> int:
    """Print the differences; exit 1 when B has regressions or new splats, else 0."""
    a, b = load_side(a_path), load_side(b_path)
    worse = 0
    for name_a, name_b in pair_sides(a, b):
        diff = diff_results(name_a, a[name_a], name_b, b[name_b], tolerance)
        print(render(diff))
        worse += len(diff.regressions) + len(diff.new_splats)
    print(f"compare: {worse} regression(s) or new splat(s) from A to B "
          f"(measurement tolerance {tolerance:.0%})")
    return 1 if worse else 0
