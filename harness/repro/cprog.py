"""A C reproducer, as reporters and syzbot post them: compiled on the host, statically (the
guest image has no compiler and its libc need not match), then run in the guest.

A program that does not compile is the report's error, named by the compiler's first
error (file and line), never a traceback.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path

from harness.core.errors import SpecError, ToolMissing

# -pthread: syzbot's repro.c programs use threads; -D_GNU_SOURCE: and GNU extensions.
CFLAGS = ("-static", "-O1", "-pthread", "-D_GNU_SOURCE", "-w")
FIRST_ERROR = re.compile(r"^(?P<where>[^:\n]+:\d+(?::\d+)?): (?:fatal )?error: (?P<what>.*)$",
                         re.MULTILINE)


def compiler() -> str:
    for name in ("gcc", "cc"):
        found = shutil.which(name)
        if found:
            return found
    raise ToolMissing("a C reproducer needs gcc on the host (make deps installs it)")


def compile_static(source: Path, outdir: Path, origin: str) -> Path:
    """The static binary of ``source``, built once per content into ``outdir``."""
    try:
        text = source.read_bytes()
    except OSError as exc:
        raise SpecError(f"{origin}: {source}: {exc.strerror}") from exc
    cc = compiler()
    key = hashlib.sha256(text + "\0".join([cc, *CFLAGS]).encode()).hexdigest()[:12]
    binary = outdir / f"{source.stem}-{key}"
    if binary.exists():
        return binary
    outdir.mkdir(parents=True, exist_ok=True)
    partial = outdir / f"{binary.name}.part"
    # LC_ALL=C: plain quotes in the compiler's words, whatever the user's locale.
    try:
        proc = subprocess.run([cc, *CFLAGS, "-o", str(partial), str(source)],
                              capture_output=True, text=True, check=False, timeout=300,
                              env={**os.environ, "LC_ALL": "C"})
    except subprocess.TimeoutExpired as exc:
        partial.unlink(missing_ok=True)
        raise SpecError(f"{origin}: {source.name}: gcc did not finish in 300 s") from exc
    if proc.returncode != 0:
        partial.unlink(missing_ok=True)
        first = FIRST_ERROR.search(proc.stderr)
        said = (f"{first['where']}: {first['what']}" if first else
                (proc.stderr.strip().splitlines() or ["no message"])[-1])
        raise SpecError(f"{origin}: {source.name} does not compile (gcc "
                        f"{' '.join(CFLAGS)}): {said}")
    partial.rename(binary)
    return binary
