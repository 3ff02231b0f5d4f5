"""Where a file's data lies (FS_IOC_FIEMAP), as filefrag, bootloader installers and backup
tools that read blocks directly ask it: the addresses are on the device the filesystem is
mounted from, and an extent the device does not hold as plain bytes says so.

The rules are Documentation/filesystems/fiemap.rst's: ``fe_physical`` is the offset "from
the beginning of the disk"; an extent that "does not consist of plain filesystem blocks but
is encoded (e.g. encrypted or compressed)" is flagged FIEMAP_EXTENT_ENCODED, since reading
it from the device "will have undefined results"; offsets and lengths are block-aligned
unless FIEMAP_EXTENT_NOT_ALIGNED is set.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from conftest import FSOFFSET, SHARE
from harness.erofs.images import BuiltImage
from harness.erofs.layout import COMPRESSED_LAYOUTS, image_layout
from harness.erofs.tools import ErofsUtils
from harness.guest.mounts import Mounter
from harness.guest.probe import Extent, Probe

Images = Callable[[str], BuiltImage]

# fsoffset= arrived with "erofs: add 'fsoffset' mount option" (c36ec00d7f67, Linux 6.16).
COMPRESSED_FIEMAP_IGNORES_FSOFFSET = dict(
    reason="FIEMAP of a compressed file gives the pcluster's address in the image, not on the "
           "device: z_erofs_iomap_begin_report() never adds fsoffset= (reports/"
           "fiemap-compressed-fsoffset.yaml)",
    signature=r"addresses that did not move with the image: \{'(four-mib|sparse|dir/)",
    releases=">=6.16", unless_patched="erofs: give FIEMAP device addresses for compressed",
    params=["*-sizes-lz4*"])
# FIEMAP of compressed files went to iomap in 5.15 ("erofs: add fiemap support with iomap").
COMPRESSED_EXTENTS_NOT_ENCODED = dict(
    reason="FIEMAP reports a compressed file's pclusters as plain extents: no "
           "FIEMAP_EXTENT_ENCODED (iomap_fiemap() has no way to say it), and unaligned "
           "offsets and lengths without FIEMAP_EXTENT_NOT_ALIGNED (reports/"
           "fiemap-compressed-not-encoded.yaml)",
    signature=r"compressed extents read as plain blocks: \d+ of \d+ not flagged ENCODED",
    releases=">=5.15", params=["*-sizes-lz4*"])


def _extents(got: list[Extent] | str, where: str) -> list[Extent]:
    assert not isinstance(got, str), f"FIEMAP of {where}: {got}"
    return got


@pytest.mark.requires_kernel("erofs", ">=6.16")
@pytest.mark.known_bug(**COMPRESSED_FIEMAP_IGNORES_FSOFFSET)
@pytest.mark.parametrize("name", ["sizes", "sizes-lz4", "sizes-lz4hc-packed"])
@pytest.mark.parametrize("options", ["", SHARE], ids=["plain", "sharing"])
def test_fiemap_addresses_move_with_the_image_offset(
        erofs_image: Images, offset_image: Images, source: str, name: str, options: str,
        mount: Mounter, pagecache: Probe) -> None:
    """The same image mounted from offset 0 and from 64 KiB into its file or device
    (fsoffset=): every extent lies 64 KiB further on the second (an extent without an
    address, given as 0, stays 0)."""
    if options and not pagecache.vm.kernel.features["page_cache_share"]:
        pytest.skip(f"kernel {pagecache.vm.kernel.release} lacks page_cache_share")
    bare, moved = erofs_image(name), offset_image(name)
    mb = mount(bare, options, source)
    mo = mount(moved, ",".join(o for o in (options, f"fsoffset={FSOFFSET}") if o), source)
    files = [f["path"] for f in bare.files() if f["size"] > 0]
    maps = pagecache.fiemap([*(mb.path(p) for p in files), *(mo.path(p) for p in files)])
    wrong = {}
    for path in files:
        at_zero = _extents(maps[mb.path(path)], f"{path} of the bare image")
        want = [(e.logical, e.physical + FSOFFSET if e.physical else 0, e.length, e.flags)
                for e in at_zero]
        got = [(e.logical, e.physical, e.length, e.flags)
               for e in _extents(maps[mo.path(path)], f"{path} at fsoffset={FSOFFSET}")]
        if got != want:
            wrong[path] = (f"at 0: {[(e[0], e[1] - FSOFFSET if e[1] else 0) for e in want][:3]}"
                           f"; at {FSOFFSET}: {[(e[0], e[1]) for e in got][:3]}")
    assert at_zero_had_extents(maps, [mb.path(p) for p in files])
    assert not wrong, (f"FIEMAP through fsoffset={FSOFFSET} gives addresses that did not move "
                       f"with the image: {wrong}")


def at_zero_had_extents(maps: dict[str, list[Extent] | str], paths: list[str]) -> bool:
    """The check compares something: the bare image's files have extents at all."""
    return any(isinstance(maps[p], list) and maps[p] for p in paths)


@pytest.mark.requires_kernel("erofs")
@pytest.mark.known_bug(**COMPRESSED_EXTENTS_NOT_ENCODED)
@pytest.mark.parametrize("name", ["sizes", "sizes-bs1k", "sizes-chunk64k", "sizes-lz4",
                                  "sizes-lz4hc-packed"])
def test_fiemap_flags_what_the_device_does_not_hold_as_plain_blocks(
        erofs_image: Images, erofs_tools: ErofsUtils, source: str, name: str,
        mount: Mounter, pagecache: Probe) -> None:
    """Every extent of a compressed file (dump.erofs says which files are) is flagged
    ENCODED; every extent is block-aligned or flagged NOT_ALIGNED; tail-packed data is
    flagged DATA_INLINE and NOT_ALIGNED together."""
    image = erofs_image(name)
    layout = image_layout(image, erofs_tools.dump)
    compressed = {n.path for n in layout.nodes if n.kind == "file"
                  and n.layout in COMPRESSED_LAYOUTS}
    m = mount(image, "", source)
    files = [f["path"] for f in image.files() if f["size"] > 0]
    maps = pagecache.fiemap([m.path(p) for p in files])
    plain_read, unaligned, inline_aligned, judged = [], [], [], 0
    for path in files:
        for e in _extents(maps[m.path(path)], path):
            if e.flags & Extent.UNKNOWN:
                continue
            judged += 1
            shown = f"{path} {e.logical}+{e.length}@{e.physical}/{e.flags:#x}"
            if path in compressed and not e.flags & Extent.ENCODED:
                plain_read.append(shown)
            if not e.flags & Extent.NOT_ALIGNED and any(
                    v % layout.block_size for v in (e.logical, e.physical, e.length)):
                unaligned.append(shown)
            if e.flags & Extent.DATA_INLINE and not e.flags & Extent.NOT_ALIGNED:
                inline_aligned.append(shown)
    assert judged, f"no file of {name} has an extent"
    in_compressed = sum(1 for p in files if p in compressed
                        for _ in _extents(maps[m.path(p)], p))
    assert not plain_read, (f"compressed extents read as plain blocks: {len(plain_read)} of "
                            f"{in_compressed} not flagged ENCODED: {plain_read[:4]}")
    assert not unaligned, (f"{len(unaligned)} extents not aligned to the "
                           f"{layout.block_size}-byte block and not flagged NOT_ALIGNED: "
                           f"{unaligned[:4]}")
    assert not inline_aligned, f"DATA_INLINE without NOT_ALIGNED: {inline_aligned[:4]}"
