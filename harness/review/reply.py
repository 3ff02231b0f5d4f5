"""The review's outputs: a plain-text reply a maintainer can send as it is (reply.txt), the
same as JSON (review.json) and HTML (review.html), and KCIDB JSON (kcidb.json, KernelCI's
schema, validated with kcidb-io) for a nightly to submit. The exit status is the verdict's."""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import kcidb_io

from harness.core.errors import HarnessError
from harness.core.paths import PROJECT, TEMPLATES
from harness.review.base import Base
from harness.review.checks import PatchCheck
from harness.review.lines import Changed
from harness.review.select import NEIGHBOURS, Selection
from harness.review.series import Series
from harness.review.verdict import TOLERANCE, Status, Verdict

ORIGIN = "erofs_harness"  # KCIDB origin: lowercase letters, digits and _
KCIDB_STATUS = {"passed": "PASS", "failed": "FAIL", "error": "ERROR", "skipped": "SKIP",
                # A known kernel bug that showed: the tested code is faulty.
                "xfailed": "FAIL", "xpassed": "PASS"}


@dataclass
class Review:
    series: Series
    base: Base
    checks: list[PatchCheck]
    command: str
    changed: list[Changed] = field(default_factory=list)
    selection: Selection = field(default_factory=Selection)
    verdict: Verdict = field(default_factory=lambda: Verdict(Status.NO_VERDICT))
    results: dict[str, Any] = field(default_factory=dict)  # each side's run config
    patched_cases: list[dict[str, Any]] = field(default_factory=list)
    base_run: str = ""  # where the base side's results came from, when not from this review


def _ranges(lines: list[int]) -> str:
    spans: list[str] = []
    for n in lines:
        if spans and spans[-1].split("-")[-1] == str(n - 1):
            spans[-1] = f"{spans[-1].split('-')[0]}-{n}"
        else:
            spans.append(str(n))
    return ", ".join(spans)


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _harness_version() -> str:
    proc = subprocess.run(["git", "-C", str(PROJECT), "describe", "--always", "--dirty"],
                          capture_output=True, text=True, check=False)
    return proc.stdout.strip() or "unknown"


def reply_text(r: Review) -> str:
    v = r.verdict
    patched = r.results.get("patched", {})
    kernel = patched.get("kernel") or "?"
    lines = [
        "Hi,", "",
        f"erofs-harness tested \"{r.series.subject}\" ({len(r.series.patches)} patch"
        f"{'es' if len(r.series.patches) != 1 else ''}) for EROFS page cache sharing.", "",
        f"Base: {r.base.described}" + (f" (its results: {r.base_run})" if r.base_run
                                         else "") + ".",
        *(f"Not honoured: {why}." for why in r.base.not_honoured),
        f"Kernels: tinyconfig with the harness's fragments (base, erofs) plus gcov for "
        f"fs/erofs and fault injection, booted under QEMU{f' ({kernel})' if kernel else ''}.",
        "", "Per patch:"]
    for c in r.checks:
        state = ("does not apply" if not c.applies else "applies, " + (
            "builds" if c.builds else "does NOT build" if c.builds is False else "not built"))
        totals = ("checkpatch --strict: " + (
            ", ".join(_count(n, word) for n, word in zip(
                c.checkpatch_totals, ("error", "warning", "check"), strict=True))
            if not c.checkpatch_ran else
            f"not run ({c.checkpatch_ran})"))
        lines.append(f"  [{c.index}/{len(r.series.patches)}] {c.subject}")
        lines.append(f"      {state}; {totals}")
        if c.rejected:
            lines += [f"      {row}" for row in c.rejected.splitlines()[:20]]
        if c.build_error:
            lines += [f"      {row}" for row in c.build_error.splitlines()[-10:]]
        for block in c.checkpatch:
            lines += [f"      {row}" for row in block.splitlines()[:6]]
    lines.append("")
    if v.status is Status.NO_VERDICT:
        lines += [f"No verdict: {v.why_no_verdict}.", ""]
    else:
        s = r.selection
        lines.append(f"Tests: {len(s.files)} test files, {len(r.patched_cases)} cases on "
                     f"each side, chosen by the base's coverage: those that execute a "
                     f"changed line or one of the {NEIGHBOURS} around it, and the core "
                     f"({', '.join(f for f in s.files if f not in s.why) or 'none extra'}).")
        for test_file, where in sorted(s.why.items()):
            lines.append(f"  {test_file}: {', '.join(where[:6])}"
                         + (f" and {len(where) - 6} more" if len(where) > 6 else ""))
        lines += ["", "Result: " + ("REGRESSIONS" if v.status is Status.REGRESSIONS
                                    else "no regressions"), ""]
        sections = [
            ("Fixed (failing, or a known bug, on the base; passing with the series)",
             [f"{n} (was {was})" for n, was in v.fixed]),
            ("Known-bug marks that no longer apply (the bug no longer shows)", v.marks_stale),
            ("Broken (passing on the base; failing with the series)",
             [f"{n} ({now})" for n, now in v.broken]),
            ("New kernel splats", [f"{n}: {splat}" for n, splat in v.new_splats]),
            (f"Measurements that moved beyond {TOLERANCE:.0%}",
             [f"{n} {k}: {a:g} -> {b:g}" for n, k, a, b in v.moved]),
            ("Other outcome changes", [f"{n}: {a} -> {b}" for n, a, b in v.other_changes])]
        for title, rows in sections:
            lines.append(f"{title}: {len(rows) or 'none'}")
            lines += [f"  {row}" for row in rows[:40]]
        done, total = v.added_counts
        lines += ["", f"Coverage of the lines the series adds or rewrites: {done} of {total} "
                      f"code lines executed."]
        for path, entry in sorted(v.added_lines.items()):
            if entry["not_executed"]:
                lines.append(f"  not executed in {path}: {_ranges(entry['not_executed'])}")
        unexecuted = sum(len(x) for x in s.unexecuted.values())
        lines.append(f"These {unexecuted} changed lines of the base are run by no test"
                     + (":" if unexecuted else "."))
        lines += [f"  {path}: {_ranges(n)}" for path, n in sorted(s.unexecuted.items())]
        if s.unmeasured:
            lines.append(f"Changed files without coverage counters (outside fs/erofs): "
                         f"{', '.join(s.unmeasured)}")
    lines += ["", "Reproduce with the erofs-harness (results, HTML and KCIDB JSON beside):",
              f"  {r.command}", "", "-- ", f"erofs-harness {_harness_version()}"]
    return "\n".join(lines) + "\n"


def kcidb(r: Review) -> dict[str, Any]:
    """KCIDB v5 JSON: the checkout (base and patchset), a build per prefix of the series, and
    the selected tests of the patched run on the last."""
    hashed = r.series.patchset_hash
    checkout_id = f"{ORIGIN}:{hashed[:32]}"
    checkout: dict[str, Any] = {"id": checkout_id, "origin": ORIGIN,
                                "patchset_hash": hashed,
                                "valid": all(c.applies for c in r.checks),
                                "comment": r.series.subject}
    if r.base.ref and re.fullmatch(r"[0-9a-f]{40}", r.base.ref):
        checkout["git_commit_hash"] = r.base.ref
    if r.series.message_id:
        checkout["message_id"] = r.series.message_id
    builds = []
    for c in r.checks:
        build: dict[str, Any] = {"id": f"{checkout_id}-upto{c.index}", "checkout_id": checkout_id,
                                 "origin": ORIGIN, "architecture": "x86_64",
                                 "config_name": "tinyconfig+harness",
                                 "comment": f"the series up to [{c.index}] {c.subject}"}
        if c.builds is not None:
            build["status"] = "PASS" if c.builds else "FAIL"
        elif not c.applies:
            build["status"] = "ERROR"
        builds.append(build)
    tests = []
    last = builds[-1]["id"] if builds else None
    for case in r.patched_cases if last else []:
        path = ".".join(re.sub(r"[^A-Za-z0-9_-]+", "_", part).strip("_") or "_"
                        for part in case["nodeid"].replace(".py", "").split("::"))
        tests.append({"id": f"{last}:{case['nodeid']}", "build_id": last, "origin": ORIGIN,
                      "path": f"{ORIGIN}.{path}",
                      "status": KCIDB_STATUS.get(case["outcome"], "MISS"),
                      "comment": case["nodeid"][:1000]})
    data = {"version": {"major": kcidb_io.schema.LATEST.major,
                        "minor": kcidb_io.schema.LATEST.minor},
            "checkouts": [checkout], "builds": builds, "tests": tests}
    try:
        kcidb_io.schema.LATEST.validate(data)
    except Exception as exc:  # jsonschema's ValidationError: ours to fix, said plainly
        raise HarnessError(f"the KCIDB JSON of this review is not valid KCIDB "
                           f"{kcidb_io.schema.LATEST.major}.{kcidb_io.schema.LATEST.minor}: "
                           f"{str(exc).splitlines()[0]}") from exc
    return data


def as_json(r: Review) -> dict[str, Any]:
    v = r.verdict
    return {"series": {"subject": r.series.subject, "path": str(r.series.path),
                       "base_commit": r.series.base_commit,
                       "message_id": r.series.message_id,
                       "patches": [p.subject for p in r.series.patches]},
            "base": asdict(r.base) | {"tree": str(r.base.tree)},
            "patches": [asdict(c) for c in r.checks],
            "changed": [asdict(c) for c in r.changed],
            "selection": asdict(r.selection),
            "verdict": {**asdict(v), "status": v.status.name.lower()},
            "runs": r.results, "base_run": r.base_run, "command": r.command}


def write_outputs(r: Review, out: Path) -> int:
    """reply.txt, review.json, review.html and kcidb.json in ``out``; the exit status."""
    text = reply_text(r)
    (out / "reply.txt").write_text(text)
    (out / "review.json").write_text(json.dumps(as_json(r), indent=1) + "\n")
    (out / "kcidb.json").write_text(json.dumps(kcidb(r), indent=1) + "\n")
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)),
                             undefined=jinja2.StrictUndefined, autoescape=True)
    (out / "review.html").write_text(env.get_template("review.html.j2").render(
        subject=r.series.subject, reply=text, status=r.verdict.status.name.lower()))
    print(text)
    print(f"review: reply in {out / 'reply.txt'}; JSON, HTML and KCIDB beside it")
    return int(r.verdict.status)
