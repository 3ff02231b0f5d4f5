"""Damage to EROFS images: a deterministic corpus over every structure of an image, and
seeded random damage for fuzzing. A damage is data (edits and a truncation), so a report can
carry it and replay it on the same image built again.

Each damage says what the kernel must do with it:

- ``refused``: the mount must fail (a change under the superblock checksum, not re-signed);
- ``intact``: nothing EROFS reads changed: the mount succeeds and every byte reads right;
- ``contained``: files the damage cannot reach (``ImageLayout.affected``) read right or fail
  with an errno; the reachable ones may read anything but must not crash the kernel.

``resign`` recomputes the superblock checksum after the edits, as the author of a hostile
image would: it lets the damage reach the metadata in the superblock's block.
"""

from __future__ import annotations

import hashlib
import random
import struct
from dataclasses import dataclass, field

from harness.erofs.layout import ImageLayout, Region
from harness.erofs.superblock import CHECKSUM_AT, COMPAT_AT, COMPAT_SB_CHKSUM, SUPERBLOCK_OFFSET
from harness.erofs.xattrs import superblock_checksum

UUID_AT = 48
# Superblock fields a hostile author may set (offset in the superblock, size in bytes).
SB_FIELDS = {"sb_extslots": (13, 1), "root_nid": (14, 2), "inos": (16, 8), "blocks": (36, 4),
             "meta_blkaddr": (40, 4), "xattr_blkaddr": (44, 4), "feature_incompat": (80, 4),
             "extra_devices": (86, 2), "dirblkbits": (90, 1), "xattr_prefix_count": (91, 1),
             "xattr_prefix_start": (92, 4), "packed_nid": (96, 8),
             "ishare_xattr_prefix_id": (105, 1)}


@dataclass(frozen=True)
class Damage:
    name: str
    edits: tuple[tuple[int, bytes], ...] = ()
    truncate: int | None = None
    resign: bool = False
    note: str = field(default="", compare=False)

    @property
    def ident(self) -> str:
        """Short, stable id (file names, upload keys)."""
        blob = repr((self.edits, self.truncate, self.resign)).encode()
        return hashlib.sha256(blob).hexdigest()[:10]

    def apply(self, data: bytes) -> bytes:
        out = bytearray(data)
        for offset, new in self.edits:
            if offset + len(new) <= len(out):
                out[offset:offset + len(new)] = new
        if self.truncate is not None:
            del out[self.truncate:]
        if self.resign and len(out) >= SUPERBLOCK_OFFSET + 128:
            compat = struct.unpack_from("<I", out, SUPERBLOCK_OFFSET + COMPAT_AT)[0]
            if compat & COMPAT_SB_CHKSUM:
                struct.pack_into("<I", out, SUPERBLOCK_OFFSET + CHECKSUM_AT,
                                 superblock_checksum(bytes(out)))
        return bytes(out)

    def changes(self, data: bytes) -> bool:
        """Whether it changes a byte EROFS could read (the re-signed checksum aside)."""
        if self.truncate is not None and self.truncate < len(data):
            return True
        return any(data[o:o + len(b)] != b for o, b in self.edits)

    def ranges(self, size: int) -> list[tuple[int, int]]:
        spans = [(o, o + len(b)) for o, b in self.edits]
        if self.truncate is not None:
            spans.append((self.truncate, size))
        return spans

    def expect(self, layout: ImageLayout) -> str:
        spans = self.ranges(layout.size)
        if not self.resign and any(layout.signed(a, b) for a, b in spans):
            return "refused"
        if self.truncate is not None and self.truncate <= SUPERBLOCK_OFFSET:
            return "refused"
        if all(b <= SUPERBLOCK_OFFSET for a, b in spans):
            return "intact"
        return "contained"

    def affected(self, layout: ImageLayout) -> frozenset[str]:
        out: frozenset[str] = frozenset()
        for a, b in self.ranges(layout.size):
            out |= layout.affected(a, b)
        return out

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "edits": [[o, b.hex()] for o, b in self.edits],
                "truncate": self.truncate, "resign": self.resign}

    @classmethod
    def from_dict(cls, raw: dict[str, object]) -> Damage:
        edits = raw.get("edits") or []
        assert isinstance(edits, list)
        truncate = raw.get("truncate")
        return cls(str(raw["name"]), tuple((int(o), bytes.fromhex(str(b))) for o, b in edits),
                   None if truncate is None else int(str(truncate)), bool(raw.get("resign")))


def _flip(data: bytes, at: int, bit: int = 0) -> tuple[int, bytes]:
    return at, bytes([data[at] ^ (1 << bit)])


def _zero(region: Region) -> tuple[int, bytes]:
    return region.start, bytes(region.end - region.start)


def _first_block(region: Region, block: int) -> Region:
    end = min(region.end, (region.start // block + 1) * block)
    return Region(region.kind, region.name, region.start, end, region.paths)


def _sb_field(name: str, value: int) -> Damage:
    offset, size = SB_FIELDS[name]
    return Damage(f"superblock:{name}={value:#x}",
                  ((SUPERBLOCK_OFFSET + offset, value.to_bytes(size, "little")),), resign=True)


def _region(layout: ImageLayout, kind: str, target: str) -> Region:
    """The first region of ``kind`` whose name holds ``target`` (``kind:path#extent``)."""
    for region in layout.of_kind(kind):
        if target in region.name.partition(":")[2] or region.name == kind:
            return region
    raise LookupError(f"the image has no {kind} region of {target!r}")


# Damage to one structure, by how: in its first block, or over the whole structure.
HOWS = ("bit-flip", "block-zeroed", "all-ones", "truncated-here")
# The superblock fields a hostile author sets (and re-signs), with the value set.
SB_VALUES = {"root_nid": 0x7fff, "meta_blkaddr": 0xffff, "xattr_prefix_start": 0x3fffffff,
             "xattr_prefix_count": 0xff, "blocks": 1, "feature_incompat": 0xffffffff,
             "sb_extslots": 0xff, "extra_devices": 0xffff, "dirblkbits": 20,
             "packed_nid": 38, "ishare_xattr_prefix_id": 1}
FIXED = ("head:overwritten", "superblock:bit-flip", "superblock:zeroed", "inode@/:bit-flip",
         "truncated:block0-end", "truncated:half", "xattrs@wide/entry-150:value-size-huge",
         "xattrs@wide/entry-150:shared-count-huge",
         *(f"superblock:{name}" for name in SB_VALUES))
# The corpus of each hostile image: every structure it has, each damaged every way.
CORPUS = {
    "hostile": (*FIXED,
                *(f"{kind}@{target}:{how}" for kind, target in (
                    ("inode", "wide/entry-150"), ("xattrs", "wide/entry-150"),
                    ("xattrs", "attrs/tagged"), ("prefixes", ""), ("dir", "wide#0"),
                    ("data", "data/plain#0"), ("data", "data/small#0"))
                  for how in HOWS if how != "truncated-here" or kind in ("dir", "data"))),
    "hostile-lz4": tuple(f"{kind}@{target}:{how}" for kind, target in (
        ("zdata", "data/plain#1"), ("zindex", "data/plain"), ("inode", "data/plain"))
        for how in HOWS if how != "truncated-here" or kind == "zdata"),
}


def recipe(layout: ImageLayout, data: bytes, name: str) -> Damage:
    """The damage a corpus name stands for, placed on this image's layout."""
    head, how = name.rsplit(":", 1)
    if name == "head:overwritten":  # mkfs leaves it zero: fill it with a pattern
        return Damage(name, ((0, b"\x5a" * SUPERBLOCK_OFFSET),))
    if name == "superblock:bit-flip":
        # A bit of the volume UUID, which nothing else checks: only the checksum can tell.
        return Damage(name, (_flip(data, SUPERBLOCK_OFFSET + UUID_AT, 3),))
    if name == "superblock:zeroed":
        return Damage(name, (_zero(layout.region("superblock")),))
    if head == "superblock":
        return _sb_field(how, SB_VALUES[how])
    if head == "truncated":
        return Damage(name, truncate=layout.block_size if how == "block0-end"
                      else layout.size // 2)
    kind, target = head.split("@", 1)
    region = _region(layout, kind, target)
    # Damage in the superblock's block is re-signed unless the point is the checksum.
    resign = layout.signed(region.start, region.end) and name != "inode@/:bit-flip"
    block = _first_block(region, layout.block_size)
    if how == "bit-flip":
        edit = _flip(data, (block.start + block.end) // 2, 5)
    elif how == "block-zeroed":
        edit = _zero(block)
    elif how == "all-ones":
        edit = (region.start, b"\xff" * (region.end - region.start))
    elif how == "truncated-here":
        return Damage(name, truncate=block.start)
    elif how == "value-size-huge":  # the first entry's value size, after the ibody header
        edit = (region.start + 12 + 2, struct.pack("<H", 0xffff))
    elif how == "shared-count-huge":
        edit = (region.start + 4, b"\xff")
    else:
        raise LookupError(f"no damage {how!r}")
    return Damage(name, (edit,), resign=resign)


def corpus(image: str, layout: ImageLayout, data: bytes) -> list[Damage]:
    return [recipe(layout, data, name) for name in CORPUS[image]]


FUZZ_KINDS = ("inode", "xattrs", "dir", "zindex", "prefixes", "superblock", "data", "zdata")


def random_damage(layout: ImageLayout, data: bytes, rng: random.Random) -> Damage:
    """One seeded random damage, mostly to metadata: a few bit flips, a zeroed or random
    run of bytes, or a truncation; re-signed most of the time so it gets past the
    checksum to the parsers. Never one that changes nothing (zeroes over zeroes), whose
    expectations would be wrong."""
    while True:
        damage = _random_damage(layout, data, rng)
        if damage.changes(data):
            return damage


def _random_damage(layout: ImageLayout, data: bytes, rng: random.Random) -> Damage:
    kinds = [k for k in FUZZ_KINDS if layout.of_kind(k)]
    kind = rng.choice(kinds)
    region = rng.choice(layout.of_kind(kind))
    span = region.end - region.start
    how = rng.choices(["flips", "zero", "random", "truncate"], [6, 2, 2, 1])[0]
    edits: list[tuple[int, bytes]] = []
    truncate = None
    if how == "flips":
        for _ in range(rng.randint(1, 4)):
            edits.append(_flip(data, region.start + rng.randrange(span), rng.randrange(8)))
    elif how in ("zero", "random"):
        start = region.start + rng.randrange(span)
        length = rng.randint(1, min(64, region.end - start))
        edits.append((start, bytes(length) if how == "zero" else rng.randbytes(length)))
    else:
        truncate = region.start + rng.randrange(span)
    resign = rng.random() < 0.8
    return Damage(f"fuzz:{region.name}:{how}", tuple(edits), truncate, resign)
