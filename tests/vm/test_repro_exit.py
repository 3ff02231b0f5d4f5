"""The three outcomes of a repro reach scripts: scripts/repro exits with the verdict, and
make repro fails only when there is no verdict."""

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=900,
                          check=False)


def test_a_reproduced_bug_exits_1_from_the_script_and_0_from_make() -> None:
    report = "reports/inode-share-needs-domain-id.yaml"
    script = _run(["scripts/repro", report, "--accel=tcg"])
    assert script.returncode == 1, script.stdout + script.stderr
    assert "base: REPRODUCED" in script.stdout
    made = _run(["make", "-s", "--no-print-directory", "repro", f"REPORT={report}",
                 "ACCEL=tcg"])
    assert made.returncode == 0, made.stdout + made.stderr
    assert "make repro: REPRODUCED on the last kernel" in made.stdout


def test_a_broken_report_is_an_error_from_both(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("title: x\nkernel: debian:7.3\nreproducer: {commands: [\"true\"]}\n"
                   "bug: {nonsense: 1}\n")
    script = _run(["scripts/repro", str(bad), "--accel=tcg"])
    assert script.returncode == 2, script.stdout + script.stderr
    assert "nonsense" in script.stderr
    made = _run(["make", "-s", "--no-print-directory", "repro", f"REPORT={bad}", "ACCEL=tcg"])
    assert made.returncode == 2 and "no verdict" in made.stdout, made.stdout + made.stderr
