"""`make exec CMD=...` runs the whole command in the guest, never a part of it on the host."""

import subprocess
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_make_exec_runs_every_part_of_cmd_in_the_guest(tmp_path: Path) -> None:
    marker = Path("/tmp") / f"harness-host-must-not-see-{uuid.uuid4().hex}"
    cmd = f"echo one; touch {marker}; echo \"two $(cat /proc/sys/kernel/hostname)\"; exit 7"
    proc = subprocess.run(["make", "-s", "--no-print-directory", "exec", f"CMD={cmd}",
                           "ACCEL=tcg"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0, "the guest command's exit status 7 must fail make"
    assert proc.stdout.splitlines()[-2:] == ["one", "two guest"], proc.stdout + proc.stderr
    assert not marker.exists(), f"part of CMD ran on the host: {marker} exists"
