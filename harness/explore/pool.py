"""The images the explorer mounts, and the files of each it looks at.

Twins (the same contents under other names, owners and paths), other contents of the same
sizes, an image without fingerprints, compressed twins, a same-size forgery and a resized
forgery: every relation between two files that the kernel must get right. Only a few files
per image, so that every step can check every file of every mount in one round trip.
"""

from __future__ import annotations

from harness.core import cache
from harness.erofs.images import BuiltImage
from harness.explore.model import PoolFile, PoolImage

POOL_FILES: dict[str, tuple[str, ...]] = {
    "sizes": ("four-mib", "dir/sixty-four-k", "page"),
    "renamed": ("h", "y/f", "x/d"),
    "sizes-nofp": ("four-mib", "page"),
    "strangers": ("four-mib", "page"),
    "sizes-lz4": ("four-mib",),
    "renamed-lz4hc": ("h",),
    "forged-page": ("page",),
    "renamed-resized-forgery": ("x/c",),
}
# What an image needs from the kernel beyond EROFS page cache sharing.
NEEDS = {"sizes-lz4": "lz4", "renamed-lz4hc": "lz4"}


def _claim(seed: int, size: int) -> str:
    """The content key a fingerprint of (seed, size) stands for (as FileSpec.content)."""
    return cache.content_key(["content", str(seed), str(size), repr(())])


def pool_image(built: BuiltImage) -> PoolImage:
    spec = built.spec
    forged = {path: _claim(seed, size) for path, seed, size in spec.forged}
    files = []
    for path in POOL_FILES[spec.name]:
        entry = built.file(path)
        fingerprint = None
        if entry["fingerprinted"]:
            fingerprint = forged.get(path, str(entry["content"]))
        files.append(PoolFile(path, int(entry["size"]), str(entry["sha256"]), fingerprint,
                              "compressed" if spec.compressor else "plain"))
    return PoolImage(spec.name, tuple(files))


def pool_names(features: dict[str, bool]) -> list[str]:
    """The pool's images this kernel can read."""
    return [name for name in POOL_FILES if features.get(NEEDS.get(name, "erofs"), False)]
