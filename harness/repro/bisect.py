"""``make bisect``: ``git bisect run`` with build + boot + repro at every step.

The bisection state lives in a shared clone of the user's tree kept in the cache, started
with ``--no-checkout`` (git only moves BISECT_HEAD), so the user's checkout and its bisect
state are never touched. Each step runs ``python -m harness repro --bisect`` on
``tree:<tree>,ref=<BISECT_HEAD>``: the tree work copy (patches.prepared_tree) checks that
revision out in place, so each step is an incremental build in one build directory. repro
exits 0 (good: not reproduced), 1 (bad: reproduced) or 125 (skip: the revision did not build
or boot). Every step's output goes to the log.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from harness.core import cache
from harness.core.errors import HarnessError, SpecError
from harness.core.paths import PROJECT
from harness.kernel.patches import git_head, is_git_tree


def _git(tree: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "-C", str(tree), *args], capture_output=True, text=True,
                          check=check)


def bisect(tree: Path, good: str, bad: str, report: Path, accel: str = "auto",
           log: Path | None = None) -> str:
    """Run the bisection; return the first bad commit (and print it with the log's path)."""
    tree = tree.expanduser().resolve()
    if not is_git_tree(tree):
        raise SpecError(f"KERNEL_TREE={tree}: bisect needs a git checkout")
    good_sha, bad_sha = git_head(tree, good), git_head(tree, bad)
    if not report.is_file():
        raise SpecError(f"REPORT={report}: no such file")
    from harness.erofs.images import load_catalog
    from harness.repro.spec import load_report
    load_report(report, set(load_catalog(PROJECT / "testcases" / "images.yaml").images))
    clone = cache.cache_root() / "bisect" / cache.content_key(["bisect", str(tree)]) / "tree"
    if not (clone / ".git").exists():
        clone.parent.mkdir(parents=True, exist_ok=True)
        print(f"harness: cloning {tree} (shared objects) for the bisection", file=sys.stderr,
              flush=True)
        subprocess.run(["git", "clone", "--quiet", "--shared", "--no-checkout", str(tree),
                        str(clone)], check=True)
    _git(clone, "fetch", "--quiet", str(tree), bad_sha, good_sha)
    _git(clone, "bisect", "reset", check=False)
    log = log or PROJECT / "artifacts" / f"bisect-{report.stem}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    step = ["sh", "-c", f'exec "$0" -m harness repro --bisect --accel={accel} '
            f'--kernel="tree:{tree},ref=$(git -C {clone} rev-parse BISECT_HEAD)" '
            f'{report.resolve()}', sys.executable]
    print(f"harness: bisecting {good_sha[:12]}..{bad_sha[:12]} in {clone}; every step is "
          f"logged to {log}", file=sys.stderr, flush=True)
    with log.open("w") as fh:
        fh.write(f"# bisect {good} ({good_sha}) .. {bad} ({bad_sha}) with {report}\n")
        fh.flush()
        _git(clone, "bisect", "start", "--no-checkout", bad_sha, good_sha)
        try:
            proc = subprocess.Popen(["git", "-C", str(clone), "bisect", "run", *step],
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True, cwd=PROJECT)
            assert proc.stdout is not None
            output = []
            for line in proc.stdout:
                fh.write(line)
                fh.flush()
                output.append(line)
                if line.startswith(("running", "Bisecting:", "repro: ")) or \
                        "is the first bad commit" in line:
                    print(f"bisect: {line.rstrip()}", file=sys.stderr, flush=True)
            status = proc.wait()
            fh.write(_git(clone, "bisect", "log", check=False).stdout)
        finally:
            _git(clone, "bisect", "reset", check=False)
    text = "".join(output)
    match = re.search(r"^([0-9a-f]{40}) is the first bad commit", text, re.M)
    if status != 0 or not match:
        raise HarnessError(f"git bisect run did not find a first bad commit (exit {status}); "
                           f"see {log}. Last lines:\n" + "".join(output[-15:]))
    subject = _git(tree, "log", "-1", "--format=%s", match.group(1)).stdout.strip()
    print(f"first bad commit: {match.group(1)} {subject}")
    return match.group(1)
