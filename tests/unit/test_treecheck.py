"""The guest side of make layouts' oracle (harness/guest/helpers/treecheck.py), run here on a
tree written on the host: a tree read back as written gives no difference, and a changed
byte, mode, owner, xattr, link target, name or missing file each gives one."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

from harness.layouts.trees import Node, Segment, Tree, expectations, write_tree

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the tree writer sets owners (root)")

TREE = Tree((Node("", "dir"), Node("d", "dir", mode=0o750),
             Node("d/f", "file", (Segment("random", 6000, 1), Segment("hole", 3000)),
                  mode=0o640, uid=3, xattrs=(("user.k", b"value"),)),
             Node("e", "file", ()), Node("h", "hardlink", target="d/f"),
             Node("l", "symlink", target="d/f")))
METHODS = ["read", "pread", "mmap_shared", "splice", "seek_data"]


@pytest.fixture
def treecheck(guest_import: Callable[[str], ModuleType]) -> ModuleType:
    return guest_import("treecheck")


def _check(treecheck: ModuleType, root: Path) -> list[str]:
    entries = expectations(TREE, {"d/f": [(4095, 2), (8000, 5000)]})
    answer = treecheck.tree_check(str(root), entries, METHODS)
    # d/f and its hard link h, each with both ranges; e is empty
    assert answer["counts"]["files"] == 3 and answer["counts"]["ranges"] == 4
    return list(answer["differences"])


def test_a_tree_read_back_as_written_has_no_differences(treecheck: ModuleType,
                                                        tmp_path: Path) -> None:
    write_tree(TREE, tmp_path)
    assert _check(treecheck, tmp_path) == []


@pytest.mark.parametrize(("change", "expect"), [
    (lambda r: (r / "d/f").open("r+b").write(b"x"), "d/f: read: 9000 bytes"),
    (lambda r: os.chmod(r / "d/f", 0o600), "d/f: mode 600, want 640"),
    (lambda r: os.chown(r / "d", 1, 0), "d: uid 1, want 0"),
    (lambda r: os.setxattr(r / "d/f", "user.k", b"other"), "d/f: xattrs differ"),
    (lambda r: (os.unlink(r / "l"), os.symlink("elsewhere", r / "l")), "l: readlink"),
    (lambda r: (r / "d/extra").write_bytes(b""), "d: readdir: 2 names, want 1"),
    (lambda r: os.unlink(r / "e"), "e: lstat: No such file"),
])
def test_every_difference_is_named(treecheck: ModuleType, tmp_path: Path, change: object,
                                   expect: str) -> None:
    write_tree(TREE, tmp_path)
    change(tmp_path)  # type: ignore[operator]
    found = _check(treecheck, tmp_path) if "lstat" not in expect else \
        treecheck.tree_check(str(tmp_path), expectations(TREE, {}), METHODS)["differences"]
    assert any(expect in line for line in found), found
