"""``make review MSGID=<message-id>``: b4 (pinned in requirements.txt) fetches the series
from the list archive and writes it as an mbox, as a maintainer's ``b4 am`` would."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from harness.core.errors import HarnessError


def fetch_series(msgid: str, into: Path) -> Path:
    """The mbox b4 am made of the thread of ``msgid`` (the newest revision of the series),
    after its cover letter (b4 writes it apart, with the base-commit trailer)."""
    b4 = shutil.which("b4", path=str(Path(sys.executable).parent)) or shutil.which("b4")
    if b4 is None:
        raise HarnessError("b4 is not installed: make venv installs it (requirements.txt)")
    shutil.rmtree(into, ignore_errors=True)
    into.mkdir(parents=True)
    print(f"review: b4 am {msgid}", file=sys.stderr, flush=True)
    proc = subprocess.run([b4, "am", "-o", str(into), msgid.strip("<>")],
                          capture_output=True, text=True, check=False, timeout=600)
    found = sorted(into.glob("*.mbx"))
    if proc.returncode != 0 or not found:
        raise HarnessError(f"b4 am {msgid} fetched no series (exit {proc.returncode}): "
                           f"{(proc.stderr or proc.stdout).strip()[-600:]}")
    series = into / "series.mbox"
    series.write_text("".join(p.read_text(errors="replace")
                              for p in [*sorted(into.glob("*.cover")), found[0]]))
    return series
