"""What a file reports about itself is the same through a sharing mount, and twins opened
for the first time at the same moment end up in one cache.

SEEK_DATA/SEEK_HOLE on a sharing mount go through the real inode's llseek; the data of the
shared inode must not change what they report. The first open of a file creates (or finds)
the shared inode; N processes doing it at once race there.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from conftest import BIG, SHARE, twin_of
from harness.erofs.images import BuiltImage
from harness.guest.mounts import Mounter
from harness.guest.probe import Probe, ReadResult

Images = Callable[[str], BuiltImage]


def _holes_read_as_zeros(pagecache: Probe, path: str, data: list[tuple[int, int]],
                         size: int) -> None:
    """Whatever SEEK_HOLE calls a hole must read as zeros: compare the file with a copy
    whose holes are zero-filled (the probe's seek_data read)."""
    plain, holes_zeroed = pagecache.read(path), pagecache.read(path, "seek_data")
    assert plain == holes_zeroed, (
        f"{path}: the ranges SEEK_DATA reports ({data} of {size} bytes) miss data: bytes "
        f"outside them are not zero")


@pytest.mark.requires_kernel("page_cache_share")
@pytest.mark.known_bug(
    "on 7.2 SEEK_HOLE through a sharing mount finds no hole in a sparse chunked file: the "
    "whole file is data, where the plain mount reports the file's holes "
    "(reports/seek-hole-sharing-no-holes.yaml; 7.3 agrees with the plain mount)",
    signature=r"SEEK_DATA/SEEK_HOLE through the sharing mount report \[\(0, \d+\)\], "
              r"the plain mount \[\(\d+, \d+\), ",
    releases="==7.2", params=["*-sparse-sizes-chunk64k"])
@pytest.mark.parametrize("image", ["sizes", "sizes-chunk64k"])
@pytest.mark.parametrize("path", ["sparse", BIG, "page-plus-1", "one-byte"])
def test_seek_data_and_hole_are_the_same_with_and_without_sharing(
        erofs_image: Images, source: str, image: str, path: str, mount: Mounter,
        pagecache: Probe) -> None:
    built = erofs_image(image)
    shared, plain = mount(built, SHARE, source), mount(built, "", source)
    got = pagecache.data_ranges(shared.path(path))
    want = pagecache.data_ranges(plain.path(path))
    assert got == want, (
        f"{image}:{path}: SEEK_DATA/SEEK_HOLE through the sharing mount report {got}, the "
        f"plain mount {want}")
    size = built.file(path)["size"]
    _holes_read_as_zeros(pagecache, shared.path(path), got, size)
    if image == "sizes-chunk64k" and path == "sparse":
        # Chunk-based images store holes as such: the layout is the file's own.
        holes = built.file(path)["holes"]
        expected, start = [], 0
        for offset, length in sorted(holes):
            if offset > start:
                expected.append((start, offset))
            start = offset + length
        if start < size:
            expected.append((start, size))
        assert got == expected, f"{image}:{path}: data ranges {got}, the file's own {expected}"


@pytest.mark.requires_kernel("page_cache_share")
@pytest.mark.parametrize("readers", [2, 8])
def test_simultaneous_first_opens_of_twins_build_one_cache(
        pair: tuple[BuiltImage, BuiltImage], source: str, readers: int, mount: Mounter,
        pagecache: Probe) -> None:
    a, b = pair
    mounts = [mount(a if i % 2 == 0 else b, SHARE, source) for i in range(readers)]
    # Nothing has looked these paths up yet: each child's open is the first lookup of its
    # inode in its mount, racing the others to create the shared inode.
    paths = [m.path(BIG if m.image is a else twin_of(a, b, BIG)) for m in mounts]
    results = pagecache.parallel_read(*paths)
    want = ReadResult(a.file(BIG)["size"], a.file(BIG)["sha256"])
    wrong = {p: r for p, r in zip(paths, results, strict=True) if r != want}
    assert not wrong, f"concurrent first reads gave wrong results: {wrong}"
    frames = pagecache.pfns(*paths)
    first = frames[paths[0]].pfns
    apart = [p for p in paths[1:] if frames[p].pfns != first]
    # Which cache each file reads from, by its first frame: one group is sharing; several
    # groups of many files would be several shared inodes for one fingerprint; groups of
    # one are files that never joined.
    groups: dict[int, list[int]] = {}
    for index, path in enumerate(paths):
        groups.setdefault(frames[path].pfns[0], []).append(index)
    assert all(first) and not apart, (
        f"{len(apart)} of {readers} files opened together are not in the first one's page "
        f"frames: {apart}; files by first frame (mount index): {groups}; map counts of the "
        f"first page: {[frames[p].counts[0] for p in paths]}")
