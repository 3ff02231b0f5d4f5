"""Bug reports as they are posted, end to end: a mail with the reporter's images attached
and a shell script (make repro MBOX=) gives the verdict the project's YAML report of the
same finding gives, and writes the report it derived beside the verdicts; a C reproducer
is compiled on the host and run in the guest."""

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=900,
                          check=False)


def test_a_mailed_report_gives_the_verdict_of_the_yaml_report_of_its_finding() -> None:
    mailed = _run(["make", "-s", "--no-print-directory", "repro",
                   "MBOX=reports/mail/forged-fingerprint.mbox", "ACCEL=tcg"])
    out = mailed.stdout + mailed.stderr
    assert mailed.returncode == 0, out
    assert "base: REPRODUCED" in mailed.stdout, out
    # What the reporter's script printed, and the images it was given, judged on the host.
    assert "BUG: forged/page reads" in mailed.stdout, out
    assert "image genuine.erofs.gz: 8192 bytes, features:" in mailed.stderr, out
    derived = ROOT / "artifacts" / "repro-forged-fingerprint" / "forged-fingerprint.yaml"
    assert derived.exists() and "exit_code: nonzero" in derived.read_text()
    yaml_report = _run(["scripts/repro", "reports/forged-fingerprint-wrong-bytes.yaml",
                        "--accel=tcg"])
    assert yaml_report.returncode == 1, yaml_report.stdout + yaml_report.stderr
    assert "base: REPRODUCED" in yaml_report.stdout


def test_a_c_reproducer_is_compiled_on_the_host_and_run_in_the_guest() -> None:
    # The report's own kernels are trees (base and fixed); the distribution kernel carries
    # the bug too, and needs no build here.
    ran = _run(["scripts/repro", "reports/ishare-odirect-fcntl-c.yaml", "--kernel=debian:7.3",
                "--accel=tcg"])
    out = ran.stdout + ran.stderr
    assert ran.returncode == 1, out
    assert "given: REPRODUCED" in ran.stdout, out
    assert "compiled odirect-by-fcntl.c (static)" in ran.stderr, out
    assert "BUG: O_DIRECT is answered differently at open and by fcntl" in ran.stdout, out
