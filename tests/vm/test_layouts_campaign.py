"""`make layouts` end to end through the command line: the campaign runner boots the default
kernel, draws a fixed seed's examples, checks them in the guest, and writes its JSON and HTML
with the verdict as the exit status; a kernel spec that names nothing is an error before
anything boots."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _layouts(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness", "layouts", "--accel=tcg",
                           "--seed=20261206", f"--out={tmp_path}", f"--found={tmp_path}",
                           *extra], cwd=ROOT, capture_output=True, text=True, timeout=900,
                          check=False)


def test_layouts_checks_examples_and_exits_with_its_verdict(tmp_path: Path) -> None:
    done = _layouts(tmp_path, "--examples=3", "--minutes=10")
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "layouts.json").read_text())
    assert results["campaign"] == "layouts" and results["seed"] == 20261206
    assert results["verdict"] == "clean" and results["examples"] == 3
    assert results["images"] >= 2 and results["mounts"] >= 6 * results["checked"]
    assert results["options"] and set(results["options_never_checked"]) <= set(results["options"])
    html = (tmp_path / "layouts.html").read_text()
    assert "Generated images: clean" in html and "--xattr-inode-digest" in html
    assert "layouts: seed 20261206" in done.stderr and "every image read back" in done.stderr


def test_a_kernel_spec_that_names_nothing_is_an_error_that_says_so(tmp_path: Path) -> None:
    done = _layouts(tmp_path, "--kernel=nonsense:1", "--minutes=1")
    assert done.returncode == 2, done.stderr[-2000:]
    assert "nonsense" in done.stderr and "Traceback" not in done.stderr
