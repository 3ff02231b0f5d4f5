"""Where the fingerprint lives on disk. The kernel finds the fingerprint xattr through the
superblock's ishare_xattr_prefix_id: the index of its long xattr name prefix. Images from
overlay or composefs tooling carry other long prefixes, and mkfs numbers them in option
order, so the fingerprint's prefix need not be the first. A kernel that took the first
prefix would read `trusted.overlay.origin` as the fingerprint: `a` and `b` below carry equal
values of it, have one size and other bytes, so they would share one cache and one would
serve the other's bytes."""

from __future__ import annotations

import pytest

from conftest import SHARE, read_and_look
from harness.erofs.images import BuiltImage
from harness.erofs.superblock import read_superblock
from harness.guest.mounts import Mounter
from harness.guest.probe import Probe

pytestmark = pytest.mark.requires_kernel("page_cache_share")


@pytest.fixture
def later_prefix(erofs_image) -> tuple[BuiltImage, BuiltImage]:
    later, only = erofs_image("overlay-origin-fp"), erofs_image("overlay-origin-fp-only")
    sb = read_superblock(later.path)
    assert sb.has_fingerprints and (sb.xattr_prefix_count, sb.ishare_xattr_prefix_id) == (3, 2), (
        f"{later.spec.name} is not shaped as the test needs: {sb}")
    assert read_superblock(only.path).ishare_xattr_prefix_id == 0
    return later, only


@pytest.mark.parametrize("path", ["a", "b"])
def test_fingerprint_under_a_later_long_prefix_still_shares(later_prefix, source: str,
                                                           path: str, mount: Mounter,
                                                           pagecache: Probe) -> None:
    later, only = later_prefix
    ml, mo = mount(later, SHARE, source), mount(only, SHARE, source)
    read, _, [twin] = read_and_look(pagecache, ml.path(path), mo.path(path))
    assert read.sha256 == later.file(path)["sha256"]
    assert twin.resident == twin.pages > 0, (
        f"{path} has one fingerprint in both images (its prefix is number 2 of 3 in "
        f"{later.spec.name}, 0 in {only.spec.name}) yet is not shared: {twin}")


@pytest.mark.parametrize("first", ["a", "b"])
def test_equal_xattrs_under_the_first_prefix_are_no_fingerprint(later_prefix, source: str,
                                                                first: str, mount: Mounter,
                                                                pagecache: Probe) -> None:
    later, _ = later_prefix
    m = mount(later, SHARE, source)
    second = "b" if first == "a" else "a"
    read, _, [other] = read_and_look(pagecache, m.path(first), m.path(second))
    assert read.sha256 == later.file(first)["sha256"]
    assert other.resident == 0, (
        f"reading {first} made {second} resident: the kernel shared two files whose "
        f"fingerprints differ and whose trusted.overlay.origin (the first long prefix) is "
        f"equal: {other}")
    again = pagecache.read(m.path(second))
    assert again.sha256 == later.file(second)["sha256"], (
        f"{second} served {again.sha256[:12]}, not its own bytes "
        f"({later.file(second)['sha256'][:12]}; {first} is "
        f"{later.file(first)['sha256'][:12]})")
