"""Removing a temporary tree the harness made, and saying so when it cannot."""

import logging
import shutil
import time
from pathlib import Path

log = logging.getLogger("harness")


def remove_tree(path: Path, attempts: int = 5) -> None:
    """Remove ``path`` and all it holds; a missing path is already removed.

    ``shutil.rmtree`` lists a folder, removes what it listed and then the folder: an entry
    made in between (a thread or a child still finishing as the VM goes) leaves the folder
    behind with the error swallowed. So the removal is tried again, and if the folder still
    stands, a warning names it and what is left in it instead of leaving it unseen.
    """
    for attempt in range(attempts):
        shutil.rmtree(path, ignore_errors=True)
        if not path.exists():
            return
        time.sleep(0.05 * (attempt + 1))
    try:
        left = sorted(str(p.relative_to(path)) for p in path.rglob("*"))
    except OSError as exc:
        left = [f"<cannot list: {exc}>"]
    log.warning("could not remove %s; it still holds %s", path, left or "nothing")
