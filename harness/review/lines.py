"""Which lines a series changes, on each side: the base's lines it replaces or deletes (and
the two around each insertion), which tests are selected by, since the base's coverage is
what is known before anything is built; and the patched tree's lines it adds or rewrites,
whose coverage the patched run measures."""

from __future__ import annotations

import difflib
from dataclasses import dataclass


@dataclass(frozen=True)
class Changed:
    path: str
    base: tuple[int, ...]  # 1-based lines of the base file
    added: tuple[int, ...]  # 1-based lines of the patched file


def changed_lines(path: str, base: str | None, patched: str | None) -> Changed:
    """The lines of ``path`` that differ between its base and patched text (None: absent)."""
    old = (base or "").splitlines()
    new = (patched or "").splitlines()
    before: set[int] = set()
    after: set[int] = set()
    matcher = difflib.SequenceMatcher(a=old, b=new, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        if tag in ("replace", "delete"):
            before.update(range(i1 + 1, i2 + 1))
        if tag == "insert":
            # Nothing of the base goes: the lines around the insertion stand for it.
            before.update(n for n in (i1, i1 + 1) if 1 <= n <= len(old))
        if tag in ("replace", "insert"):
            after.update(range(j1 + 1, j2 + 1))
    return Changed(path, tuple(sorted(before)), tuple(sorted(after)))
