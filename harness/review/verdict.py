"""What a series changed, from the base and patched runs of one selection: outcomes that
changed (fixed, broken, known-bug marks that no longer apply), new kernel splats,
measurements that moved beyond their noise, and how much of what the series adds ran."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from harness.results.compare import Diff, diff_results

FIXED_FROM = {"failed", "error", "xfailed"}
BROKEN_TO = {"failed", "error"}
TOLERANCE = 0.10  # a measurement that moved by less is noise


class Status(IntEnum):
    """The review's answer, which is also its exit status."""
    NO_REGRESSIONS = 0
    REGRESSIONS = 1
    NO_VERDICT = 2


@dataclass
class Verdict:
    status: Status
    fixed: list[tuple[str, str]] = field(default_factory=list)  # nodeid, base outcome
    broken: list[tuple[str, str]] = field(default_factory=list)  # nodeid, patched outcome
    # A known bug expected on the base that the patched kernel no longer shows (a strict
    # known_bug mark fails the pass as XPASS(strict)): fixed, and the mark wants narrowing.
    marks_stale: list[str] = field(default_factory=list)
    new_splats: list[tuple[str, str]] = field(default_factory=list)
    moved: list[tuple[str, str, float, float]] = field(default_factory=list)
    other_changes: list[tuple[str, str, str]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # selected, run on one side only
    added_lines: dict[str, dict[str, list[int]]] = field(default_factory=dict)
    why_no_verdict: str = ""

    @property
    def added_counts(self) -> tuple[int, int]:
        """(added code lines executed, added code lines) over all files."""
        return (sum(len(f["executed"]) for f in self.added_lines.values()),
                sum(len(f["executed"]) + len(f["not_executed"])
                    for f in self.added_lines.values()))


def in_selection(results: dict[str, Any], files: list[str]) -> dict[str, Any]:
    """The results of the selected test files only (a base run covers the whole suite)."""
    keep = [c for c in results.get("cases", [])
            if c["nodeid"].split("::", 1)[0].rsplit("/", 1)[-1] in files]
    return {**results, "cases": keep}


def judge(base: dict[str, Any], patched: dict[str, Any], files: list[str],
          added: dict[str, dict[str, list[int]]]) -> Verdict:
    """``base`` and ``patched``: results.json of the two runs; ``added``: per patched file,
    the added code lines the patched run executed and those it did not."""
    a, b = in_selection(base, files), in_selection(patched, files)
    if not b["cases"]:
        return Verdict(Status.NO_VERDICT, added_lines=added,
                       why_no_verdict="the patched run ran none of the selected tests")
    diff: Diff = diff_results("base", a, "patched", b, TOLERANCE)
    verdict = Verdict(Status.NO_REGRESSIONS, new_splats=diff.new_splats, moved=diff.moved,
                      missing=diff.only_a + diff.only_b, added_lines=added)
    reasons = {c["nodeid"]: str(c.get("reason", "")) for c in b["cases"]}
    for nodeid, was, now in diff.changed:
        if was in FIXED_FROM and now == "passed":
            verdict.fixed.append((nodeid, was))
        elif was == "xfailed" and (now == "xpassed" or "[XPASS(strict)]" in reasons[nodeid]):
            verdict.marks_stale.append(nodeid)
        elif was == "passed" and now in BROKEN_TO:
            verdict.broken.append((nodeid, now))
        else:
            verdict.other_changes.append((nodeid, was, now))
    if verdict.broken or verdict.new_splats:
        verdict.status = Status.REGRESSIONS
    return verdict
