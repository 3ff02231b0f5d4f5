"""What the suite's tests share: mount sources, option strings, and the pairs of files that
hold the same content in the `sizes` and `renamed` images."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from harness.imagespec import BuiltImage
from harness.mounts import SOURCES

SHARE = "inode_share,domain_id=d1"
OTHER_DOMAIN = "inode_share,domain_id=d2"
# Files of the `sizes` tree worth checking one by one (every size class, sparse, owned).
SIZES_FILES = ["one-byte", "page-minus-1", "page", "page-plus-1", "dir/sixty-four-k",
               "dir/deeper/one-mib", "four-mib", "sparse", "owned"]
BIG = "four-mib"


def twin_of(a: BuiltImage, b: BuiltImage, path: str) -> str:
    """The path in image b holding the same content as ``path`` in image a."""
    content = a.file(path)["content"]
    for entry in b.files():
        if entry["content"] == content:
            return str(entry["path"])
    raise LookupError(f"{b.spec.name} has no file with the content of {a.spec.name}:{path}")


@pytest.fixture(params=SOURCES)
def source(request: pytest.FixtureRequest) -> str:
    """Every test that takes it runs on a loop device, a file-backed mount and a virtio disk."""
    return str(request.param)


@pytest.fixture
def pair(erofs_image: Callable[[str], BuiltImage]) -> tuple[BuiltImage, BuiltImage]:
    """Two different images with the same file contents under other names and owners."""
    return erofs_image("sizes"), erofs_image("renamed")
