"""`make races` end to end through the command line: the campaign runner boots the default
kernel, runs the cells of the pairs asked for on every target, and writes its JSON and pair
table with the verdict as the exit status; a pair that names no operation is an error that
says which, before anything boots."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _races(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness", "races", "--accel=tcg",
                           "--seed=20261206", f"--out={tmp_path}", f"--found={tmp_path}",
                           *extra], cwd=ROOT, capture_output=True, text=True, timeout=900,
                          check=False)


def test_races_runs_a_pair_on_every_target_and_exits_with_its_verdict(tmp_path: Path) -> None:
    done = _races(tmp_path, "--pairs=readlink+getxattr", "--seconds=1")
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "races.json").read_text())
    assert results["campaign"] == "races" and results["seed"] == 20261206
    assert results["verdict"] == "clean" and results["cells_run"] == 4
    pair = results["pairs"]["readlink+getxattr"]
    assert pair["cells"] == 4 and pair["overlaps"] > 0 and pair["verdicts"] == {"clean": 4}
    assert {c["target"] for c in results["cells"]} == {"one-mount", "two-mounts", "twins",
                                                      "two-domains"}
    table = (tmp_path / "races.md").read_text()
    assert "| readlink+getxattr | 4 |" in table
    assert "races: seed 20261206" in done.stderr and "every cell clean" in done.stderr


def test_a_pair_that_names_no_operation_is_an_error_that_says_so(tmp_path: Path) -> None:
    done = _races(tmp_path, "--pairs=read+shred")
    assert done.returncode == 2, done.stderr[-2000:]
    assert "read+shred" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "races.json").exists()
