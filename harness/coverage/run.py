"""``make coverage``: the suite, or a selection of it, on a ``tree:`` kernel built with gcov
counters for fs/erofs; then the merged report (harness/results/coverage.py).

The kernel spec gains the ``coverage`` option when it lacks it, so ``KERNEL=tree:<dir>`` and
``KERNEL=tree:,patches=<mbox>`` work as they are; a Debian or ``path:`` kernel has no gcov
notes and is refused. The run's test outcomes do not stop the report: a failing test still
executed code. The exit status is pytest's when it failed, else 0.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from harness.core.errors import SpecError
from harness.core.paths import PROJECT
from harness.coverage.kept import is_review_base, keep, kept_dir, worth_keeping
from harness.guest.coverage import COUNTERS_DIR
from harness.kernel.spec import TreeSpec, parse_kernel_spec
from harness.pipeline import kernel_for
from harness.results.coverage import write_coverage_report

DEFAULT = "tree:,coverage"


def coverage_spec(text: str | None) -> TreeSpec:
    """The kernel spec to measure: ``text`` with the coverage option, or the default."""
    spec = parse_kernel_spec(text or DEFAULT)
    if not isinstance(spec, TreeSpec):
        raise SpecError(f"make coverage: kernel {text!r} is not a tree: kernel, so it has no "
                        f"gcov build; use KERNEL=tree:[<dir>][,patches=...] (the coverage "
                        f"option is added)")
    return spec if spec.coverage else replace(spec, coverage=True)


def run_coverage(kernel_text: str | None, accel: str, *, jobs: int, out: Path,
                 pytest_args: list[str], paths: tuple[str, ...] = ("testcases",)) -> int:
    """The suite (``paths``, narrowed by ``pytest_args``) on the coverage build of a tree,
    then the report of what it executed; pytest's exit status."""
    spec = coverage_spec(kernel_text)
    print(f"coverage: kernel {spec}; pytest {' '.join(pytest_args) or '(the whole suite)'}",
          file=sys.stderr, flush=True)
    kernel = kernel_for(str(spec))  # builds it, with progress, before any worker asks
    artifacts = out / "artifacts"
    shutil.rmtree(artifacts / COUNTERS_DIR, ignore_errors=True)
    argv = [str(PROJECT / "scripts" / "pytest-nonempty"), sys.executable, "-m", "pytest",
            *paths, f"--kernel={spec}", f"--accel={accel}", f"--artifacts={artifacts}",
            "-p", "no:cacheprovider", *(["-n", str(jobs)] if jobs > 1 else []), *pytest_args]
    status = subprocess.run(argv, cwd=PROJECT, check=False,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"}).returncode
    write_coverage_report(kernel, artifacts / COUNTERS_DIR, out / "report")
    print((out / "report" / "table.txt").read_text(), end="")
    if (paths == ("testcases",) and not pytest_args and is_review_base(spec)
            and worth_keeping(status) and not os.environ.get("PYTEST_ADDOPTS")):
        # The whole suite on the build make review measures bases on: its map, kept.
        kept = keep(out, kept_dir(spec, kernel.vmlinuz, pytest_args), status)
        print(f"coverage: kept for make review on this base ({kept})", file=sys.stderr)
    print(f"coverage: report {out / 'report' / 'index.html'}; pytest exit {status}",
          file=sys.stderr)
    return status
