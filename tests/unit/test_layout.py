"""An image's structures as byte ranges (harness/erofs/layout.py), from dump.erofs output.
The seam is the dump.erofs executable: a script prints what the real one prints for each
path, so the parsing and what each region can reach are checked without mkfs."""

from __future__ import annotations

import struct
from pathlib import Path

from harness.erofs.images import BuiltImage, FileSpec, ImageSpec
from harness.erofs.layout import ALL, image_layout
from harness.erofs.superblock import COMPAT_AT, COMPAT_SB_CHKSUM, MAGIC, SUPERBLOCK_OFFSET

# path -> (kind text, nid, layout, inode size, xattr size, [(physical start, end)])
NODES = {
    "/": ("directory", 37, 2, 32, 0, [(1216, 1300)]),
    "/d": ("directory", 40, 2, 32, 0, [(8192, 12288), (1400, 1500)]),
    "/d/f": ("regular file", 200, 0, 32, 56, [(16384, 20480)]),
    "/z": ("regular file", 210, 3, 32, 56, [(20480, 24576)]),
    "/l": ("symlink file", 44, 2, 32, 0, [(1500, 1504)]),
}


def _dump_script(tmp_path: Path) -> Path:
    lines = ["#!/bin/sh", 'for a in "$@"; do case "$a" in --path=*) p="${a#--path=}";; esac; done',
             'case "$p" in']
    for path, (kind, nid, layout, isize, xsize, extents) in NODES.items():
        ext = "\\n".join(f"   {i}:        0..  100 |  100 :  {a}..  {b} |  {b - a}"
                         for i, (a, b) in enumerate(extents))
        lines.append(f'"{path}") printf "Path : {path}\\nSize: 100  On-disk size: 100  {kind}\\n'
                     f'NID: {nid}   Links: 1   Layout: {layout}   Compression ratio: 100%%\\n'
                     f'Inode size: {isize}   Xattr size: {xsize}\\n\\n Ext:   logical offset   |'
                     f'  length :     physical offset    |  length\\n{ext}\\n";;')
    lines += ['*) echo "no such path" >&2; exit 1;;', "esac"]
    script = tmp_path / "dump.erofs"
    script.write_text("\n".join(lines) + "\n")
    script.chmod(0o755)
    return script


def _image(tmp_path: Path) -> BuiltImage:
    data = bytearray(32768)
    struct.pack_into("<I", data, SUPERBLOCK_OFFSET, MAGIC)
    struct.pack_into("<I", data, SUPERBLOCK_OFFSET + COMPAT_AT, COMPAT_SB_CHKSUM)
    data[SUPERBLOCK_OFFSET + 12] = 12  # 4 KiB blocks
    path = tmp_path / "image.erofs"
    path.write_bytes(bytes(data))
    files = (FileSpec("d/f", size=100, seed=1), FileSpec("z", size=100, seed=2),
             FileSpec("l", symlink="z"))
    spec = ImageSpec(name="t", tree="t", files=files)
    return BuiltImage(spec, path, None, {"files": []}, "k")


def test_regions_come_from_dump_and_say_what_they_reach(tmp_path: Path) -> None:
    layout = image_layout(_image(tmp_path), _dump_script(tmp_path))
    assert layout.block_size == 4096 and layout.checksummed == (1024, 4096)
    assert layout.files == {"d/f", "z"}
    names = {r.name: r for r in layout.regions}
    assert (names["inode:d/f"].start, names["inode:d/f"].end) == (6400, 6432)
    assert (names["xattrs:d/f"].start, names["xattrs:d/f"].end) == (6432, 6488)
    assert names["xattrs:d/f"].paths == frozenset()  # a broken fingerprint never misreads
    assert names["dir:d#0"].paths == {"d/f"} and names["dir:d#1"].start == 1400
    assert names["data:d/f#0"].paths == {"d/f"}
    assert "zindex:z" in names and names["zdata:z#0"].kind == "zdata"
    assert names["data:l#0"].paths == frozenset()  # only the link's own target
    assert names["inode:/"].paths == {ALL}
    assert layout.affected(8192, 8200) == {"d/f"}
    assert layout.affected(0, 1024) == frozenset()
    assert layout.affected(1024, 1030) == {"d/f", "z"}
    assert layout.signed(1400, 1401) and not layout.signed(8192, 8193)
