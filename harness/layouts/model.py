"""Which page cache each file of each mount reads from: the sharing rule, for generated
examples, as the explorer's model states it (harness/explore/model.py):

- a file joins a shared cache only when its mount has sharing in effect (``inode_share``
  asked for and the image carries fingerprints: ``ishare_xattrs``), and it has a
  fingerprint (non-empty regular files of such an image);
- the shared cache is keyed by the domain and the fingerprint's value;
- the first file looked up makes the shared inode; a later one whose size or address space
  operations differ is refused and keeps a private cache. The operations follow the data
  layout and, for uncompressed data, the mount's backing: compressed files read through
  one set whatever the source, uncompressed ones through one for a file-backed mount and
  another for a block device (loop, virtio);
- everything else is private to its inode (hard links of one mount: one inode).

``caches`` turns mounts (in the order their files are first looked up) into a cache key
per (mount, path); two files read from the same cache exactly when their keys are equal.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FileSide:
    """One regular file as a mount presents it."""
    path: str
    nid: int
    size: int
    compressed: bool
    fingerprint: bytes | None  # None: no fingerprint (empty file, image without them)


@dataclass(frozen=True)
class MountSide:
    name: str
    backing: str  # "file" (file-backed) or "block" (loop, virtio)
    sharing: bool  # inode_share in effect
    domain: str
    files: tuple[FileSide, ...]  # in the order they are first looked up


def aops_class(mount: MountSide, file: FileSide) -> str:
    return "compressed" if file.compressed else f"plain-{mount.backing}"


def caches(mounts: list[MountSide]) -> dict[tuple[str, str], tuple[str, ...]]:
    """(mount name, path) -> cache key, following the lookup order of ``mounts``."""
    owners: dict[tuple[str, bytes], tuple[str, int]] = {}  # shared key -> (class, size)
    out: dict[tuple[str, str], tuple[str, ...]] = {}
    for mount in mounts:
        for file in mount.files:
            private = ("private", mount.name, str(file.nid))
            if not mount.sharing or file.fingerprint is None or file.size == 0:
                out[(mount.name, file.path)] = private
                continue
            shared = (mount.domain, file.fingerprint)
            cls = aops_class(mount, file)
            owner = owners.setdefault(shared, (cls, file.size))
            if owner == (cls, file.size):
                out[(mount.name, file.path)] = ("shared", mount.domain, file.fingerprint.hex())
            else:
                out[(mount.name, file.path)] = private
    return out


def resident_after_reading(reader: str, mounts: list[MountSide]) -> dict[tuple[str, str], bool]:
    """After every file of mount ``reader`` was read whole (and nothing else was), whether
    each file of every other mount is resident: exactly when it reads from a cache that one
    of the reader's files filled."""
    keys = caches(mounts)
    filled = {key for (mount, _), key in keys.items() if mount == reader}
    return {(mount, path): key in filled for (mount, path), key in keys.items()
            if mount != reader}
