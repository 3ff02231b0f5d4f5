"""The small vocabulary that modules at every level share: the ways an image reaches a
mount, and how a test id becomes a file name."""

from __future__ import annotations

import re

# Where an EROFS image comes from in the guest: a loop device over the image file, the
# image file itself (a file-backed mount: mount(2) gets the path), or a hot-plugged virtio
# disk.
SOURCES = ("loop", "file", "block")


def safe_name(nodeid: str) -> str:
    """A test id (or any label) as a file name: no slashes, brackets or spaces."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid).strip("_")[:150] or "test"
