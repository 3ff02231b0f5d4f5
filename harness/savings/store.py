"""One disk per pair with everything each configuration mounts, built on the host without
mounting anything: an ext4 filesystem image (``mkfs.ext4 -d``) holding

- ``trees/{old,new}``: the two root trees (the lower layers of plain overlayfs);
- ``erofs/{old,new}.erofs``: EROFS images of them with fingerprints (``mkfs.erofs
  --xattr-inode-digest``), uncompressed, mounted file-backed;
- ``cfs/{old,new}.cfs`` and ``objects/``: composefs metadata images and the one
  content-addressed object store both fill (``mkcomposefs --digest-store``).

ext4 is what container hosts keep images and layers on. The disk is attached read-only.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

from harness.core import cache
from harness.core.errors import HarnessError
from harness.erofs.tools import ErofsUtils
from harness.savings.composefs import Composefs
from harness.savings.pairs import SIDES, Tree

STORE = "store.ext4"


@dataclass(frozen=True)
class Store:
    pair: str
    path: Path


def _run(argv: list[str], what: str) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise HarnessError(f"{what} failed (exit {proc.returncode}): {' '.join(argv)}\n"
                           f"{proc.stderr.strip()[-800:]}")


def _size_of(root: Path) -> int:
    return sum(p.lstat().st_size for p in root.rglob("*"))


def build_store(trees: tuple[Tree, Tree], erofs: ErofsUtils, composefs: Composefs) -> Store:
    pair = trees[0].pair
    key = cache.content_key(["savings-store-v1", erofs.version, composefs.version,
                             *(str(t.root) for t in trees)])

    def build(out: Path) -> dict[str, object]:
        staging = out / "staging"
        for sub in ("trees", "erofs", "cfs", "objects"):
            (staging / sub).mkdir(parents=True)
        for side, tree in zip(SIDES, trees, strict=True):
            print(f"savings: {pair}/{side}: EROFS and composefs images", file=sys.stderr,
                  flush=True)
            # Hard links: the trees are in the cache, on this filesystem; no copy needed.
            _run(["cp", "-al", str(tree.root), str(staging / "trees" / side)], "cp -al")
            image_uuid = uuid.UUID(hex=cache.content_key([key, side]).ljust(32, "0")[:32])
            _run([str(erofs.mkfs), "--xattr-inode-digest", f"-U{image_uuid}",
                  str(staging / "erofs" / f"{side}.erofs"), str(tree.root)], "mkfs.erofs")
            composefs.make(tree.root, staging / "cfs" / f"{side}.cfs", staging / "objects")
        size_mb = _size_of(staging) * 13 // 10 // 2**20 + 128
        print(f"savings: {pair}: the store disk ({size_mb} MiB ext4)", file=sys.stderr,
              flush=True)
        _run(["mkfs.ext4", "-q", "-F", "-O", "^has_journal", "-i", "8192", "-L", "savings",
              "-d", str(staging), str(out / STORE), f"{size_mb}M"], "mkfs.ext4 -d")
        shutil.rmtree(staging)
        return {"pair": pair}

    # A disk image of a gigabyte or more: hashing it on every reuse costs more than it saves.
    entry = cache.get_or_build("savings-stores", key, build, verify_files=False)
    return Store(pair, entry / STORE)
