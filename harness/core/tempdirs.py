"""Removing a temporary tree the harness made, and saying so when it cannot."""

import logging
import shutil
from pathlib import Path

log = logging.getLogger("harness")


def remove_tree(path: Path) -> None:
    """Remove ``path`` and all it holds; a missing path is already removed.

    ``shutil.rmtree(ignore_errors=True)`` swallows what kept a folder: if it still stands,
    a warning names it and what is left in it instead of leaving it unseen.
    """
    shutil.rmtree(path, ignore_errors=True)
    if not path.exists():
        return
    try:
        left = sorted(str(p.relative_to(path)) for p in path.rglob("*"))
    except OSError as exc:
        left = [f"<cannot list: {exc}>"]
    log.warning("could not remove %s; it still holds %s", path, left or "nothing")
