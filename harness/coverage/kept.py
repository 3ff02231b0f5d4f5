"""The coverage runs ``make review`` keeps: a base kernel's run of the suite (or of a
selection of it) on the gcov and fault-injection build, its per-test-file map and its
results, in the cache by kernel, selection and suite. Built once per base: ``make review``
fills it when it misses, and ``make coverage`` of the whole suite on such a build fills it
too, so that a review on that base starts from the map instead of running the suite again.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from harness.core import cache
from harness.core.paths import PROJECT
from harness.kernel.spec import TreeSpec
from harness.results.coverage import BY_TEST_FILE


def suite_digest() -> str:
    """What the suite's files are now: a kept map of an older suite is not reused."""
    files = sorted((PROJECT / "testcases").rglob("*"))
    return cache.content_key(["suite", *(f"{p.relative_to(PROJECT)}:{p.stat().st_size}:"
                                         f"{p.stat().st_mtime_ns}" for p in files
                                         if p.is_file() and "__pycache__" not in p.parts)])


def kept_dir(spec: TreeSpec, vmlinuz: Path, pytest_args: list[str]) -> Path:
    """Where the run of ``pytest_args`` on the kernel ``spec`` built as ``vmlinuz`` is kept
    (the spec as it prints, so that two spellings of one kernel find one run)."""
    key = cache.content_key(["review-base", str(spec), str(vmlinuz),
                             str(vmlinuz.stat().st_mtime_ns), *pytest_args, suite_digest()])
    return cache.cache_root() / "review" / key


def is_kept(kept: Path) -> bool:
    return (kept / "report" / BY_TEST_FILE).is_file()


def keep(run_dir: Path, kept: Path) -> Path:
    """Copy a coverage run's report and results (``<run_dir>/report``, ``artifacts/report-*/
    results.json``) to ``kept``; the counters and logs stay behind."""
    shutil.rmtree(kept, ignore_errors=True)
    kept.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(run_dir / "report", kept / "report")
    for results in (run_dir / "artifacts").glob("report-*/results.json"):
        (kept / "artifacts" / results.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(results, kept / "artifacts" / results.parent.name / "results.json")
    return kept


def is_review_base(spec: TreeSpec) -> bool:
    """A build ``make review`` measures its bases on: gcov counters and fault injection, no
    patches (a base is the tree as it is) and no other options."""
    return (spec.coverage and spec.faults and not spec.debug and spec.patches is None
            and spec.upto is None and not spec.fragments and spec.config is None)
