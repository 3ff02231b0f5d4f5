"""A series as ``b4 am`` writes it: the cover letter (its subject, Message-Id and the
``base-commit:`` trailer b4 adds) and the patches, in order (harness/kernel/patches.py
reads those)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from harness.core.errors import SpecError
from harness.kernel.patches import Patch, read_series

BASE_COMMIT = re.compile(r"^base-commit: *([0-9a-f]{7,40})\s*$", re.M)
MESSAGE_ID = re.compile(r"^Message-I[dD]: *<([^>]+)>", re.M)
COVER_SUBJECT = re.compile(r"^Subject: *(.*\[PATCH[^\]]* 0+/\d+\].*(?:\n[ \t].*)*)", re.M)


@dataclass(frozen=True)
class Series:
    path: Path
    subject: str  # the cover letter's, else the first patch's
    base_commit: str | None
    message_id: str | None
    patches: tuple[Patch, ...]

    @property
    def patchset_hash(self) -> str:
        """KCIDB's: sha256 over the newline-terminated sha256 of each patch, in order."""
        return hashlib.sha256("".join(f"{p.sha256}\n" for p in self.patches).encode()) \
            .hexdigest()


def read_mbox(path: Path) -> Series:
    """The series in ``path`` (an mbox, a patch, a folder of them or a series file)."""
    if not path.exists():
        raise SpecError(f"MBOX={path}: no such file or directory")
    patches = tuple(read_series(path))
    text = path.read_text(errors="replace") if path.is_file() else ""
    cover = COVER_SUBJECT.search(text)
    subject = re.sub(r"\s+", " ", cover.group(1)).strip() if cover else patches[0].subject
    base = BASE_COMMIT.findall(text)
    if len(set(base)) > 1:
        raise SpecError(f"{path}: the series names more than one base-commit "
                        f"({', '.join(sorted(set(base)))})")
    message = MESSAGE_ID.search(text)
    return Series(path, subject, base[0] if base else None,
                  message.group(1) if message else None, patches)


def touched_files(patch: Patch) -> list[str]:
    """The paths a patch changes, creates or deletes, as ``a/``/``b/`` name them."""
    out: list[str] = []
    old = None
    for line in patch.text.splitlines():
        if line.startswith("--- "):
            old = line[4:].split("\t")[0]
        elif line.startswith("+++ ") and old is not None:
            new = line[4:].split("\t")[0]
            name = new[2:] if new != "/dev/null" else old[2:]
            if name not in out:
                out.append(name)
            old = None
    return out
