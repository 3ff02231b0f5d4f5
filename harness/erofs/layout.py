"""Where each structure of a built EROFS image lies, as byte ranges of the image file, and
which files a change to each range can affect. Hostile-image tests damage these ranges.

The map comes from ``dump.erofs`` (each path's nid, inode and xattr sizes, and its extents
with their physical offsets), so nothing here re-implements the on-disk format beyond the
superblock fields and the fixed inode slot size:

- ``head``: the 1024 bytes before the superblock, which EROFS never reads;
- ``superblock``: the 128-byte superblock;
- ``prefixes``: the long xattr name prefixes (the fingerprint's name among them);
- per path: ``inode`` (the inode core), ``xattrs`` (its inline xattrs, the fingerprint
  among them), ``zindex`` (a compressed file's map header and indexes after them);
- per extent: ``dir`` blocks, ``data`` of a plain file (inline tails included),
  ``zdata`` (compressed clusters).

When the superblock carries a checksum (the ``sb_csum`` feature), it covers the rest of its
block: a change there that is not re-signed must make the mount fail.
"""

from __future__ import annotations

import re
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from harness.core.errors import HarnessError
from harness.erofs.images import BuiltImage
from harness.erofs.superblock import (
    BLKSZBITS_AT,
    COMPAT_AT,
    COMPAT_SB_CHKSUM,
    META_BLKADDR_AT,
    SUPERBLOCK_OFFSET,
    checksummed_range,
)

SUPERBLOCK_SIZE = 128
INODE_SLOT = 32  # nids count 32-byte slots from the metadata start
PREFIX_COUNT_AT, PREFIX_START_AT = 91, 92  # u8 xattr_prefix_count, le32 xattr_prefix_start
Z_MAP_HEADER = 8  # struct z_erofs_map_header
COMPRESSED_LAYOUTS = {1, 3}  # EROFS_INODE_COMPRESSED_FULL, _COMPACT
ALL = "*"  # in Region.paths: every file of the image


@dataclass(frozen=True)
class Region:
    kind: str
    name: str  # e.g. "xattrs:wide/entry-150" or "dir:wide#1" (its second extent)
    start: int
    end: int
    paths: frozenset[str]  # files whose bytes, names or lookup a change here can affect

    def overlaps(self, start: int, end: int) -> bool:
        return self.start < end and start < self.end


@dataclass(frozen=True)
class Node:
    path: str  # "" for the root
    kind: str  # "dir", "file", "symlink"
    nid: int
    layout: int
    inode_size: int
    xattr_size: int
    extents: tuple[tuple[int, int], ...]  # physical [start, end)


@dataclass(frozen=True)
class ImageLayout:
    size: int
    block_size: int
    checksummed: tuple[int, int] | None  # the superblock checksum's range, if it has one
    regions: tuple[Region, ...]
    nodes: tuple[Node, ...]
    files: frozenset[str]  # regular files

    def of_kind(self, kind: str) -> list[Region]:
        return [r for r in self.regions if r.kind == kind]

    def region(self, name: str) -> Region:
        for region in self.regions:
            if region.name == name:
                return region
        raise KeyError(f"no region {name!r} in this image")

    def affected(self, start: int, end: int) -> frozenset[str]:
        """Files a change of bytes [start, end) can affect."""
        out: set[str] = set()
        for region in self.regions:
            if region.overlaps(start, end):
                out |= self.files if ALL in region.paths else region.paths
        return frozenset(out)

    def signed(self, start: int, end: int) -> bool:
        """Whether [start, end) lies (partly) under the superblock checksum."""
        return self.checksummed is not None and start < self.checksummed[1] and \
            self.checksummed[0] < end


_NID = re.compile(r"NID:\s*(\d+)\s+Links:\s*\d+\s+Layout:\s*(\d+)")
_SIZES = re.compile(r"Inode size:\s*(\d+)\s+Xattr size:\s*(\d+)")
_KIND = re.compile(r"^Size:\s*\d+\s+On-disk size:\s*\d+\s+(.+)$", re.M)
_EXTENT = re.compile(r"^\s*\d+:\s*\d+\.\.\s*\d+\s*\|\s*\d+\s*:\s*(\d+)\.\.\s*(\d+)\s*\|", re.M)


def _node(image: Path, path: str, dump: Path) -> Node:
    proc = subprocess.run([str(dump), f"--path=/{path}", "-e", str(image)],
                          capture_output=True, text=True, check=False)
    nid, sizes, kind = _NID.search(proc.stdout), _SIZES.search(proc.stdout), \
        _KIND.search(proc.stdout)
    if proc.returncode != 0 or not nid or not sizes or not kind:
        raise HarnessError(f"dump.erofs cannot describe /{path} in {image}: "
                           f"{(proc.stderr or proc.stdout).strip()[-400:]}")
    kind_text = kind.group(1)
    node_kind = "dir" if "directory" in kind_text else \
        "symlink" if "symlink" in kind_text else "file"
    extents = tuple((int(a), int(b)) for a, b in _EXTENT.findall(proc.stdout) if int(b) > int(a))
    return Node(path, node_kind, int(nid.group(1)), int(nid.group(2)), int(sizes.group(1)),
                int(sizes.group(2)), extents)


def _under(path: str, files: frozenset[str]) -> frozenset[str]:
    """The files a directory's damage can reach: everything below it."""
    if not path:
        return frozenset({ALL})
    return frozenset(f for f in files if f.startswith(path + "/"))


def _prefix_table(data: bytes) -> tuple[int, int] | None:
    count = data[SUPERBLOCK_OFFSET + PREFIX_COUNT_AT]
    start = struct.unpack_from("<I", data, SUPERBLOCK_OFFSET + PREFIX_START_AT)[0] << 2
    if not count or start >= len(data):
        return None
    pos = start
    for _ in range(count):  # each: le16 length, then that many bytes, padded to 4
        (length,) = struct.unpack_from("<H", data, pos)
        pos += (2 + length + 3) & ~3
    return start, pos


def image_layout(image: BuiltImage, dump: Path) -> ImageLayout:
    data = image.path.read_bytes()
    blksz = 1 << data[SUPERBLOCK_OFFSET + BLKSZBITS_AT]
    meta = struct.unpack_from("<I", data, SUPERBLOCK_OFFSET + META_BLKADDR_AT)[0] * blksz
    compat = struct.unpack_from("<I", data, SUPERBLOCK_OFFSET + COMPAT_AT)[0]
    checksummed = checksummed_range(blksz) if compat & COMPAT_SB_CHKSUM else None
    specs = {f.path: f for f in image.spec.files}
    files = frozenset(p for p, f in specs.items() if f.regular and f.hardlink is None)
    dirs = {""} | {str(parent) for p in specs for parent in PurePosixPath(p).parents
                   if str(parent) != "."}
    paths = sorted(dirs) + sorted(p for p, f in specs.items() if f.hardlink is None)
    nodes = [_node(image.path, p, dump) for p in paths]
    starts = sorted({meta + n.nid * INODE_SLOT for n in nodes} | {len(data)})

    regions = [Region("head", "head", 0, SUPERBLOCK_OFFSET, frozenset()),
               Region("superblock", "superblock", SUPERBLOCK_OFFSET,
                      SUPERBLOCK_OFFSET + SUPERBLOCK_SIZE, frozenset({ALL}))]
    table = _prefix_table(data)
    if table:
        # A broken prefix renames xattrs (the fingerprint included): bytes stay right.
        regions.append(Region("prefixes", "prefixes", *table, frozenset()))
    for node in nodes:
        reach = _under(node.path, files) | ({node.path} if node.kind == "file" else set())
        label = node.path or "/"
        at = meta + node.nid * INODE_SLOT
        regions.append(Region("inode", f"inode:{label}", at, at + node.inode_size, reach))
        xattrs_end = at + node.inode_size + node.xattr_size
        if node.xattr_size:
            # The fingerprint is read from here; a broken one may unshare, never misread.
            regions.append(Region("xattrs", f"xattrs:{label}", at + node.inode_size,
                                  xattrs_end, frozenset()))
        compressed = node.layout in COMPRESSED_LAYOUTS
        if compressed:
            following = next(s for s in starts if s > at)
            end = min(following, xattrs_end + Z_MAP_HEADER + 64)
            regions.append(Region("zindex", f"zindex:{label}", xattrs_end, end, reach))
        kind = "dir" if node.kind == "dir" else "zdata" if compressed else "data"
        # A symlink's target is its data: only its own lookup can go wrong.
        ext_reach = reach if node.kind != "symlink" else frozenset()
        for i, (start, end) in enumerate(node.extents):
            regions.append(Region(kind, f"{kind}:{label}#{i}", start, end, ext_reach))
    return ImageLayout(len(data), blksz, checksummed, tuple(regions), tuple(nodes), files)
