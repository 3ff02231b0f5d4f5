"""FIEMAP judged against the image: where the kernel says a file's data lies, and whether it
lies there.

Reads exercise ``erofs_map_blocks()`` only as far as the bytes come out right; FIEMAP is the
one call that shows the addresses themselves (``erofs_iomap_begin()``: the device offset,
the tail-packed inline data's place in its metadata block; ``z_erofs_iomap_begin_report()``:
the pclusters of compressed files, through the map's own FIEMAP mode). Tools act on them:
filefrag, bootloader installers, backup and copy tools that read blocks directly. So, for
every regular file:

- the extents come in order, never overlap, have a length, start inside the file, and
  only the last is flagged last;
- every byte of the file that is not zero lies in an extent (holes may be left out, data
  may not), compressed files too;
- an uncompressed file's extent (plain, tail-packed, chunk-based) holds the file's bytes at
  the address given, on the image or on its one extra device (``--blobdev``, ``--tar=i``),
  unless flagged as having no address (UNKNOWN, ENCODED);
- a compressed file's extents start inside a device (their bytes are the compressed ones).

What the kernel reports that readers cannot act on, and this module lets pass, is said where
it is let pass.
"""

from __future__ import annotations

from harness.guest.probe import Extent
from harness.layouts.build import Built

UNCOMPRESSED = (0, 2, 4)  # EROFS_INODE_FLAT_PLAIN, _FLAT_INLINE, _CHUNK_BASED


def file_bytes(built: Built, rel: str) -> bytes:
    node = built.tree.node(rel)
    if node.kind == "hardlink":
        node = built.tree.node(node.target)
    return node.data()


def device_bytes(built: Built) -> list[bytes]:
    """The image, then its extra device if it has one: what a FIEMAP address points into."""
    assert built.image is not None
    return [path.read_bytes() for path in (built.image.path, built.image.blob) if path]


def extent_problems(built: Built, rel: str, got: list[Extent] | str,
                    devices: list[bytes]) -> list[str]:
    """What is wrong with the extents FIEMAP gave for ``rel``, as problem lines
    ``<rel>: fiemap: ...`` (empty: nothing)."""
    if isinstance(got, str):
        return [f"{rel}: fiemap: {got}"]
    facts = built.files.get(rel)
    data = file_bytes(built, rel)
    size = len(data)
    problems: list[str] = []

    def say(text: str) -> None:
        problems.append(f"{rel}: fiemap: {text} (extents: {_shown(got)})")

    end = 0
    for index, extent in enumerate(got):
        last = index == len(got) - 1
        if extent.length <= 0:
            say(f"extent {index} has length {extent.length}")
        if extent.logical < end:
            say(f"extent {index} at {extent.logical} overlaps the one before, which ends at "
                f"{end}")
        if extent.logical >= size:
            say(f"extent {index} starts at {extent.logical}, past the end of the file "
                f"({size} bytes)")
        if bool(extent.flags & Extent.LAST) != last:
            say(f"extent {index} of {len(got)} is {'not ' if last else ''}flagged last")
        end = max(end, extent.end)
    unmapped = _unmapped_data(data, got)
    if unmapped is not None:
        say(f"bytes {unmapped[0]}..{unmapped[1] - 1} hold data, and no extent maps them")
    if problems or facts is None:
        return problems
    biggest = max(len(d) for d in devices)
    for index, extent in enumerate(got):
        if extent.flags & (Extent.UNKNOWN | Extent.ENCODED):
            continue
        if facts.layout not in UNCOMPRESSED:
            # Compressed: the address is the pcluster's (its bytes are compressed); a
            # fragment (-Efragments) has none and is given as 0, which stays unjudged.
            if extent.physical >= biggest:
                say(f"extent {index} lies at byte {extent.physical}, past the end of every "
                    f"device ({biggest} bytes at most)")
            continue
        if extent.flags & Extent.DATA_INLINE and extent.physical == 0:
            # Tail-packed data inside the metabox (mkfs.erofs -m) has no device address:
            # iomap gives IOMAP_NULL_ADDR as 0, without FIEMAP_EXTENT_UNKNOWN.
            continue
        length = max(0, min(extent.end, size) - extent.logical)
        want = data[extent.logical:extent.logical + length]
        if not any(d[extent.physical:extent.physical + length] == want for d in devices):
            say(f"extent {index} ({extent.logical}..{extent.logical + length - 1}) is said to "
                f"lie at byte {extent.physical}, which holds other bytes on every device")
    return problems


def _unmapped_data(data: bytes, extents: list[Extent]) -> tuple[int, int] | None:
    """The first gap between extents that holds a byte other than zero: [first, last + 1)
    of its bytes that are not zero, or None."""
    covered = sorted((e.logical, e.end) for e in extents)
    start = 0
    for begin, finish in [*covered, (len(data), len(data))]:
        gap = data[start:min(begin, len(data))]
        if gap.strip(b"\0"):
            first = len(gap) - len(gap.lstrip(b"\0"))
            return start + first, start + len(gap.rstrip(b"\0"))
        start = max(start, finish)
    return None


def _shown(extents: list[Extent], most: int = 4) -> str:
    shown = ", ".join(f"{e.logical}+{e.length}@{e.physical}/{e.flags:#x}"
                      for e in extents[:most])
    return shown + (f", ... ({len(extents)} in all)" if len(extents) > most else "") \
        if extents else "none"
