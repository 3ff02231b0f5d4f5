"""``make review MBOX=series.mbox [KERNEL_TREE=] [BASE=] [PYTEST_ARGS=]``: a patch series
judged as the kernel test robot would, for page cache sharing.

1. The series (series.py) and its base (base.py): the tree at base-commit, KERNEL_TREE as
   it is, or Debian's source.
2. Each patch (checks.py): applies, checkpatch --strict, the tree builds up to it.
3. The base's coverage per test file: the suite (or PYTEST_ARGS) on the base built with gcov
   counters for fs/erofs and fault injection, counters saved per test file (make coverage's
   run); kept in the cache by base kernel and selection, so a second series on the same
   base starts at step 4.
4. The selection (select.py): every test file that executed a changed line or a neighbour
   on the base, and the core; the changed lines no test executes.
5. The patched kernel (same options) runs the selection; its coverage says which of the
   added lines ran.
6. The verdict (verdict.py) and the reply, JSON, HTML and KCIDB (reply.py).

Exit status: 0 no regressions, 1 regressions, 2 no verdict.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any

from harness.core.errors import HarnessError
from harness.coverage.kept import is_kept, keep, kept_dir, worth_keeping
from harness.coverage.run import coverage_spec, run_coverage
from harness.pipeline import kernel_for
from harness.results.coverage import BY_TEST_FILE
from harness.review.base import Base, base_text, choose_base, patched_texts
from harness.review.checks import PatchCheck, check_patches
from harness.review.lines import Changed, changed_lines
from harness.review.reply import Review, write_outputs
from harness.review.select import Selection, select
from harness.review.series import Series, read_mbox, touched_files
from harness.review.verdict import Status, Verdict, judge

BUILD_OPTIONS = ",coverage,faults"  # both sides: gcov counters, and the fail-nth tests run


def say(text: str) -> None:
    print(f"review: {text}", file=sys.stderr, flush=True)


def _results(run_dir: Path) -> dict[str, Any]:
    found = sorted((run_dir / "artifacts").glob("report-*/results.json"))
    if not found:
        raise HarnessError(f"the run in {run_dir} wrote no results.json (did pytest start?)")
    data: dict[str, Any] = json.loads(found[-1].read_text())
    return data


def _code_lines(coverage_json: Path) -> dict[str, dict[int, int]]:
    """Per source file, every code line gcov knows with its count."""
    out: dict[str, dict[int, int]] = {}
    for entry in json.loads(coverage_json.read_text()).get("files", []):
        out[entry["file"]] = {ln["line_number"]: ln.get("count", 0)
                              for ln in entry.get("lines", [])
                              if not ln.get("gcovr/noncode", False)}
    return out


def base_coverage(base: Base, accel: str, jobs: int, pytest_args: list[str],
                  out: Path) -> tuple[Path, bool]:
    """The base's run on the coverage build, from the cache when this base kernel and
    selection of the suite ran before, or when the whole suite did (a narrower PYTEST_ARGS
    then selects from the whole suite's map, and its results are the base side): the
    directory with artifacts/ and report/, and whether it is the whole suite's run standing
    in for a narrower selection."""
    spec = coverage_spec(base.spec + BUILD_OPTIONS)
    kernel = kernel_for(str(spec))  # builds it first, with progress
    kept = kept_dir(spec, kernel.vmlinuz, pytest_args)
    if is_kept(kept):
        say(f"the base's coverage per test file comes from the cache ({kept})")
        return kept, False
    whole = kept_dir(spec, kernel.vmlinuz, [])
    if pytest_args and selects_only(pytest_args) and is_kept(whole):
        say(f"the base's coverage per test file and its results come from the whole suite's "
            f"run in the cache ({whole}); PYTEST_ARGS narrows the patched run")
        return whole, True
    say(f"the base's coverage per test file: {' '.join(pytest_args) or 'the whole suite'} "
        f"on {spec}")
    run_dir = out / "base"
    status = run_coverage(str(spec), accel, jobs=jobs, out=run_dir, pytest_args=pytest_args)
    if not (run_dir / "report" / BY_TEST_FILE).is_file():
        raise HarnessError(f"the base's coverage run (pytest exit {status}) left no "
                           f"{BY_TEST_FILE}")
    if not worth_keeping(status):
        raise HarnessError(f"the base's coverage run stopped early (pytest exit {status}): "
                           f"its map would miss tests")
    # run_coverage keeps a whole-suite run itself (make coverage does the same); a selection
    # is kept here.
    return (kept if is_kept(kept) else keep(run_dir, kept, status)), False


SELECTING = ("-k", "-m", "--deselect")  # each takes a value, as the next word or joined
JOINED = re.compile(r"-[km].+|--deselect=.+")


def selects_only(pytest_args: list[str]) -> bool:
    """Whether ``pytest_args`` only choose tests (-k, -m, --deselect): then the whole
    suite's run answers for the base side. Anything else (-x, --ignore-known-bugs, a VM
    option) makes the runs differ, and the base runs with the same arguments."""
    words = iter(pytest_args)
    for word in words:
        if word in SELECTING:
            if next(words, None) is None:
                return False
        elif not JOINED.fullmatch(word):
            return False
    return True


def cases_run(base: dict[str, Any], patched: dict[str, Any]) -> dict[str, Any]:
    """The base's results narrowed to the cases the patched run ran: the whole suite's run
    stands in for the base side of a selection narrowed by PYTEST_ARGS, which only pytest
    can evaluate."""
    ran = {c["nodeid"] for c in patched.get("cases", [])}
    return {**base, "cases": [c for c in base.get("cases", []) if c["nodeid"] in ran]}


def _changed(base: Base, series: Series) -> list[Changed]:
    paths = list(dict.fromkeys(p for patch in series.patches for p in touched_files(patch)))
    before = {path: base_text(base, path) for path in paths}
    after = patched_texts(before, list(series.patches))
    return [changed_lines(path, before[path], after[path]) for path in paths]


def _added_coverage(changed: list[Changed], code: dict[str, dict[int, int]]
                    ) -> dict[str, dict[str, list[int]]]:
    out = {}
    for c in changed:
        lines = code.get(c.path)
        if lines is None:
            continue
        added = [n for n in c.added if n in lines]
        out[c.path] = {"executed": [n for n in added if lines[n] > 0],
                       "not_executed": [n for n in added if lines[n] == 0]}
    return out


def run_review(mbox: Path, *, tree: Path | None, base_commit: str | None, accel: str,
               jobs: int, pytest_args: list[str], out: Path) -> int:
    series = read_mbox(mbox.resolve())
    mbox = series.path
    say(f"\"{series.subject}\": {len(series.patches)} patch(es)"
        + (f", base-commit {series.base_commit}" if series.base_commit else ""))
    base = choose_base(tree, base_commit or series.base_commit)
    say(f"base: {base.described}")
    out.mkdir(parents=True, exist_ok=True)
    checks: list[PatchCheck] = check_patches(base.spec, mbox, list(series.patches), base.tree)
    review = Review(series, base, checks, command=_command(mbox, tree, base_commit,
                                                           pytest_args))
    if not all(c.applies and c.builds for c in checks):
        review.verdict = Verdict(Status.NO_VERDICT, why_no_verdict=(
            "the series does not apply" if not all(c.applies for c in checks)
            else "a prefix of the series does not build"))
        return write_outputs(review, out)
    changed = _changed(base, series)
    kept, whole_suite = base_coverage(base, accel, jobs, pytest_args, out)
    by_test_file = json.loads((kept / "report" / BY_TEST_FILE).read_text())
    base_code = _code_lines(kept / "report" / "coverage.json")
    selection: Selection = select(changed, by_test_file,
                                  {path: set(lines) for path, lines in base_code.items()})
    review.changed, review.selection = changed, selection
    say(f"selected {len(selection.files)} test file(s): {', '.join(selection.files)}")
    patched_spec = f"{base.spec},patches={mbox}{BUILD_OPTIONS}"
    run_dir = out / "patched"
    shutil.rmtree(run_dir, ignore_errors=True)
    status = run_coverage(patched_spec, accel, jobs=jobs, out=run_dir,
                          pytest_args=pytest_args,
                          paths=tuple(f"testcases/{f}" for f in selection.files))
    if not worth_keeping(status):
        # A run stopped early has cases it never ran; set beside a base that ran them,
        # they would only read as missing, or (narrowed to what ran) not at all.
        review.verdict = Verdict(Status.NO_VERDICT, why_no_verdict=(
            f"the patched kernel's run stopped early (pytest exit {status})"))
        return write_outputs(review, out)
    base_results, patched_results = _results(kept), _results(run_dir)
    if whole_suite:
        base_results = cases_run(base_results, patched_results)
        review.base_run = f"the whole suite's coverage run of this base, kept in {kept}"
    added = _added_coverage(changed, _code_lines(run_dir / "report" / "coverage.json"))
    review.verdict = judge(base_results, patched_results, selection.files, added)
    review.results = {"base": base_results.get("config", {}),
                      "patched": patched_results.get("config", {})}
    review.patched_cases = [c for c in patched_results.get("cases", [])
                            if c["nodeid"].split("::", 1)[0].rsplit("/", 1)[-1]
                            in selection.files]
    return write_outputs(review, out)


def _command(mbox: Path, tree: Path | None, base_commit: str | None,
             pytest_args: list[str]) -> str:
    parts = [f"make review MBOX={mbox}"]
    if tree is not None:
        parts.append(f"KERNEL_TREE={tree}")
    if base_commit:
        parts.append(f"BASE={base_commit}")
    if pytest_args:
        parts.append(f'PYTEST_ARGS="{shlex.join(pytest_args)}"')
    return " ".join(parts)
