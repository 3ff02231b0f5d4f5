"""What `make races` puts side by side: the operations (the explorer's vocabulary), the
targets two operations can act on, and the table of cells (a pair on a target) a run goes
through.

A pair is unordered: its two sides are alike (each a process of its own on a CPU of its
own, each on a mount of its own kind), so (A, B) and (B, A) are one experiment; for the
targets with two images the sides take the two images in turn from cell to cell.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from itertools import combinations_with_replacement
from typing import Any

from harness.core.errors import HarnessError

# name -> what one iteration does (the set-up that re-establishes what it needs is untimed)
OPS: dict[str, str] = {
    "mount": "mount the side's mount (unmounted first)",
    "umount": "unmount it (mounted and its data file looked up first)",
    "umount_lazy": "unmount it with MNT_DETACH (mounted and its data file looked up first)",
    "remount": "remount it with a changed option (acl, noacl), sharing and domain kept",
    "open": "open the data file (closed after)",
    "close_last": "close the side's only descriptor of the data file",
    "read": "read the data file whole, comparing every byte (read, pread backwards, mmap, "
            "sendfile, splice in turn)",
    "mmap_fault": "fault every page of a private mapping, comparing a byte of each",
    "willneed": "posix_fadvise(WILLNEED) over the data file",
    "dontneed": "posix_fadvise(DONTNEED) over the data file",
    "readahead": "readahead(2) over the data file",
    "collapse": "MADV_COLLAPSE over a touched shared mapping of the data file",
    "drop_caches": "write 3 to /proc/sys/vm/drop_caches",
    "reclaim": "write to memory.reclaim of the cgroup the sides run in",
    "lookup_cold": "stat a name never looked up on this mount since the last dentry drop",
    "stat": "stat the data file",
    "readdir": "list the directory of 400 names",
    "readlink": "read the symlink",
    "getxattr": "read a user xattr of the data file",
}
LIFECYCLE = frozenset({"mount", "umount", "umount_lazy", "remount"})
GLOBAL = frozenset({"drop_caches", "reclaim"})  # act on no mount
# Calls that read the whole data file: two of them side by side make a few dozen calls in
# SECONDS (a cold 8 MiB read behind dm-delay takes a quarter of a second or more), so
# such a pair runs LONG_FACTOR times as long to reach as many overlaps as the others.
LONG = frozenset({"read", "mmap_fault", "collapse"})
LONG_FACTOR = 3

# target -> (how many mounts, what the model says about sharing between the two files)
TARGETS: dict[str, tuple[str, str]] = {
    "one-mount": ("the same file through one mount", "same"),
    "two-mounts": ("the same file through two mounts of one image, one domain", "share"),
    "twins": ("twin files in two images of one domain", "share"),
    "two-domains": ("twin files in two images of two domains", "private"),
}
WIDENERS: dict[str, str] = {
    "dm_delay": "a dm-delay target under every block source: each I/O held for milliseconds",
    "large": "the data operations act on an 8 MiB file (else 256 KiB)",
    "cold": "the data file's cache emptied (DONTNEED) before each data operation",
    "pressure": "both sides in a cgroup that loses 2 MiB to memory.reclaim every 50 ms",
}
LAYOUTS = ("plain", "lz4")  # the image pair a cell uses: uncompressed, or lz4


@dataclass(frozen=True)
class Pair:
    a: str
    b: str

    @property
    def name(self) -> str:
        return f"{self.a}+{self.b}"


@dataclass(frozen=True)
class Cell:
    """A pair on a target: what the guest helper runs for ``seconds``."""
    pair: Pair
    target: str
    layout: str
    sources: tuple[str, str]  # of the target's mounts: "block" or "file"
    swapped: bool  # side a takes the second image (targets with two images)
    seconds: float
    wideners: tuple[str, ...] = field(default=tuple(WIDENERS))

    @property
    def id(self) -> str:
        return f"{self.pair.name}@{self.target}"


def parse_pairs(text: str | None) -> list[Pair]:
    """Every pair of operations, or those ``text`` names: comma-separated ``a+b``, or one
    operation alone for all of its pairs."""
    every = [Pair(a, b) for a, b in combinations_with_replacement(OPS, 2)]
    if not text:
        return every
    chosen: list[Pair] = []
    for word in filter(None, (w.strip() for w in text.split(","))):
        names = word.split("+")
        unknown = [n for n in names if n not in OPS]
        if unknown or len(names) > 2:
            raise HarnessError(f"PAIRS: {word!r} is not an operation or a pair a+b of them "
                               f"(unknown {', '.join(unknown) or 'third part'}); "
                               f"operations: {', '.join(OPS)}")
        for pair in every:
            if (len(names) == 1 and names[0] in (pair.a, pair.b)) or \
                    sorted(names) == sorted((pair.a, pair.b)):
                if pair not in chosen:
                    chosen.append(pair)
    return chosen


def parse_choice(text: str | None, known: dict[str, str], what: str) -> tuple[str, ...]:
    """Comma-separated names out of ``known`` (all when empty; "none" for none)."""
    if not text:
        return tuple(known)
    if text == "none":
        return ()
    names = tuple(filter(None, (w.strip() for w in text.split(","))))
    unknown = [n for n in names if n not in known]
    if unknown:
        raise HarnessError(f"{what}: unknown {', '.join(unknown)}; choose from "
                           f"{', '.join(known)} (or none)")
    return names


def targets_for(pair: Pair, targets: tuple[str, ...]) -> list[str]:
    """The targets worth running ``pair`` on: two operations on no mount need one; two
    mount lifecycle operations on one mount would only fight over the mount point."""
    if pair.a in GLOBAL and pair.b in GLOBAL:
        return [t for t in targets][:1]
    if pair.a in LIFECYCLE and pair.b in LIFECYCLE:
        return [t for t in targets if t != "one-mount"]
    return list(targets)


def plan(pairs: list[Pair], targets: tuple[str, ...], seconds: float, seed: int,
         wideners: tuple[str, ...]) -> list[Cell]:
    """The cells of a run, in pair order; the layout, the sources and which side takes
    which image are drawn from ``seed``, so a cell is replayed exactly from its report."""
    rng = random.Random(seed)
    cells = []
    for pair in pairs:
        for target in targets_for(pair, targets):
            # The first mount is a block device, so the dm-delay widener always has one to
            # sit under; the second is either.
            long = pair.a in LONG and pair.b in LONG
            cells.append(Cell(pair, target, rng.choice(LAYOUTS),
                              ("block", rng.choice(("block", "file"))),
                              rng.random() < 0.5, seconds * (LONG_FACTOR if long else 1),
                              wideners))
    return cells


def cell_config(cell: Cell, images: dict[str, str]) -> dict[str, Any]:
    """The guest helper's description of ``cell``: its mounts (image, source, options) and
    which mount each side works in. ``images`` maps "first"/"second" to the guest image
    names of the cell's layout."""
    first, second = ("second", "first") if cell.swapped else ("first", "second")
    share_d1, share_d2 = "inode_share,domain_id=d1", "inode_share,domain_id=d2"
    mounts: dict[str, dict[str, Any]] = {
        "m1": {"image": images[first], "tree": first, "source": cell.sources[0],
               "options": share_d1}}
    if cell.target == "two-mounts":
        mounts["m2"] = {"image": images[first], "tree": first, "source": cell.sources[1],
                        "options": share_d1}
    elif cell.target in ("twins", "two-domains"):
        mounts["m2"] = {"image": images[second], "tree": second, "source": cell.sources[1],
                        "options": share_d1 if cell.target == "twins" else share_d2}
    side_b = "m1" if cell.target == "one-mount" else "m2"
    model = TARGETS[cell.target][1]
    if model == "share" and cell.layout == "plain" and cell.sources[0] != cell.sources[1]:
        # Uncompressed files are read through one set of address space operations on a
        # block device and another file-backed; the kernel shares only within one set.
        model = "private"
    return {"id": cell.id, "a": cell.pair.a, "b": cell.pair.b, "ab": [cell.pair.a, cell.pair.b],
            "target": cell.target, "model": model, "mounts": mounts,
            "side_mount": {"a": "m1", "b": side_b}, "seconds": cell.seconds,
            "wideners": list(cell.wideners), "layout": cell.layout}
