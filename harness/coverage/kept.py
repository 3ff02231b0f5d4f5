"""The coverage runs ``make review`` keeps: a base kernel's run of the suite (or of a
selection of it) on the gcov and fault-injection build, its per-test-file map and its
results, in the cache by kernel, selection and suite. Built once per base: ``make review``
fills it when it misses, and ``make coverage`` of the whole suite on such a build fills it
too, so that a review on that base starts from the map instead of running the suite again.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from harness.core import cache
from harness.core.paths import PROJECT
from harness.kernel.spec import TreeSpec
from harness.results.coverage import BY_TEST_FILE


def suite_digest() -> str:
    """What the suite and the harness that runs it are now: a kept map of an older suite or
    harness (which decides what is counted, and how) is not reused."""
    files = sorted(p for top in ("testcases", "harness") for p in (PROJECT / top).rglob("*"))
    return cache.content_key(["suite", *(f"{p.relative_to(PROJECT)}:{p.stat().st_size}:"
                                         f"{p.stat().st_mtime_ns}" for p in files
                                         if p.is_file() and "__pycache__" not in p.parts)])


def kept_dir(spec: TreeSpec, vmlinuz: Path, pytest_args: list[str]) -> Path:
    """Where the run of ``pytest_args`` on the kernel ``spec`` built as ``vmlinuz`` is kept
    (the spec as it prints, so that two spellings of one kernel find one run)."""
    key = cache.content_key(["review-base", str(spec), str(vmlinuz),
                             str(vmlinuz.stat().st_mtime_ns), *pytest_args, suite_digest()])
    return cache.cache_root() / "review" / key


# What a review reads from a kept run; a directory without all of it is not a kept run.
KEPT_FILES = (f"report/{BY_TEST_FILE}", "report/coverage.json", "status")


def is_kept(kept: Path) -> bool:
    return all((kept / name).is_file() for name in KEPT_FILES) and any(
        (kept / "artifacts").glob("report-*/results.json"))


def keep(run_dir: Path, kept: Path, status: int) -> Path:
    """Copy a coverage run's report and results (``<run_dir>/report``, ``artifacts/report-*/
    results.json``) to ``kept``, whole or not at all (a copy beside it, renamed into place);
    the counters and logs stay behind. ``status``: pytest's exit status, kept with it."""
    tmp = kept.with_name(f"{kept.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "report").mkdir(parents=True)
    # What a review reads, not the HTML and the per-set tracefiles (hundreds of MB).
    for name in (BY_TEST_FILE, "coverage.json", "summary.json", "table.txt"):
        if (run_dir / "report" / name).is_file():
            shutil.copy(run_dir / "report" / name, tmp / "report" / name)
    for results in (run_dir / "artifacts").glob("report-*/results.json"):
        (tmp / "artifacts" / results.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(results, tmp / "artifacts" / results.parent.name / "results.json")
    (tmp / "status").write_text(f"{status}\n")
    old = kept.with_name(f"{kept.name}.old-{os.getpid()}")
    if kept.exists():
        kept.rename(old)
    tmp.rename(kept)
    shutil.rmtree(old, ignore_errors=True)
    return kept


def worth_keeping(status: int) -> bool:
    """pytest ran every test to an outcome (0: all passed, 1: some failed): a run stopped
    early (2: interrupted, 3: internal error, 4: usage error) is a partial map."""
    return status in (0, 1)


def is_review_base(spec: TreeSpec) -> bool:
    """A build ``make review`` measures its bases on: gcov counters and fault injection, no
    patches (a base is the tree as it is) and no other options."""
    return (spec.coverage and spec.faults and not spec.debug and spec.patches is None
            and spec.upto is None and not spec.fragments and spec.config is None)
