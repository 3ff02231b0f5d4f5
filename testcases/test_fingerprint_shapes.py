"""Where the fingerprint lives on disk. The kernel finds the fingerprint xattr through the
superblock's ishare_xattr_prefix_id: the index of its long xattr name prefix. Images from
overlay or composefs tooling carry other long prefixes, and mkfs numbers them in option
order, so the fingerprint's prefix need not be the first. A kernel that took the first
prefix would read `trusted.overlay.origin` as the fingerprint: `a` and `b` below carry equal
values of it, have one size and other bytes, so they would share one cache and one would
serve the other's bytes."""

from __future__ import annotations

import pytest
import xxhash

from conftest import PARTIAL_META_PAGE_BUG, SHARE, read_and_look
from harness.erofs.images import BuiltImage
from harness.erofs.superblock import read_superblock
from harness.guest.mounts import Mount, Mounter
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


# ---- fingerprints the files carry themselves (images fp-shapes, fp-oversized) -----------
# Every pair below has one size and other bytes: a kernel that took the two fingerprints of
# a pair for one would put both files in one cache, and one would serve the other's bytes.
FP_NAME = "user.harness.fp"
DOMAIN = "d1"  # SHARE's domain: the shared-inode hash covers it
DISTINCT = {
    "equal-hash": ("collide-a", "collide-b"),  # xxh32 of domain and value is equal
    "prefix": ("prefix-short", "prefix-long"),  # one value is the start of the other
    "nul": ("nul-one", "nul-two"),  # equal up to a NUL byte: a string compare stops there
}


def _effective_fingerprints(pagecache: Probe, image: BuiltImage, target: str) -> None:
    """What the kernel reads as each file's fingerprint (getxattr of the fingerprint's name,
    the lookup the kernel makes) is the value the tree gave it: mkfs's own digest is gone."""
    walk = pagecache.walk(target, data=False)
    for spec in image.spec.files:
        want = dict(spec.xattrs)[FP_NAME].encode().hex()
        got = walk.entries[spec.path].xattrs.get(FP_NAME)
        assert got == want, (f"{image.spec.name}:{spec.path} is not shaped as the test "
                             f"needs: its fingerprint reads {got!r}, not {want!r}")


@pytest.fixture
def own_fingerprints(erofs_image, source: str, mount: Mounter,
                     pagecache: Probe) -> tuple[Mount, Mount]:
    shapes, twin = erofs_image("fp-shapes"), erofs_image("fp-shapes-twin")
    ms, mt = mount(shapes, SHARE, source), mount(twin, SHARE, source)
    _effective_fingerprints(pagecache, shapes, ms.target)
    return ms, mt


@pytest.mark.parametrize("path", [p for pair in DISTINCT.values() for p in pair])
def test_a_fingerprint_the_file_carries_shares_with_its_twin(own_fingerprints, path: str,
                                                            pagecache: Probe) -> None:
    """The control for the refusals below: these values are fingerprints the kernel uses,
    so a file is shared with its twin in another image."""
    ms, mt = own_fingerprints
    read, _, [twin] = read_and_look(pagecache, ms.path(path), mt.path(path))
    assert read.sha256 == ms.image.file(path)["sha256"]
    assert twin.resident == twin.pages > 0, (
        f"{path} carries the fingerprint {path!r} in both images, yet its twin is not "
        f"shared: {twin}")


@pytest.mark.parametrize("shape", DISTINCT)
def test_distinct_fingerprints_never_share(own_fingerprints, shape: str,
                                           pagecache: Probe) -> None:
    ms, _ = own_fingerprints
    first, second = DISTINCT[shape]
    values = [dict(f.xattrs)[FP_NAME].encode() for f in ms.image.spec.files
              if f.path in (first, second)]
    if shape == "equal-hash":
        hashes = {xxhash.xxh32_intdigest(DOMAIN.encode() + b"\0" + v, 0) for v in values}
        assert len(hashes) == 1, f"the pair's values no longer collide in {DOMAIN}: {hashes}"
    read, _, [other] = read_and_look(pagecache, ms.path(first), ms.path(second))
    assert read.sha256 == ms.image.file(first)["sha256"]
    assert other.resident == 0, (
        f"reading {first} made {second} resident: two files whose fingerprints differ "
        f"({values[0]!r} and {values[1]!r}: {shape}) share one cache: {other}")
    again = pagecache.read(ms.path(second))
    assert again.sha256 == ms.image.file(second)["sha256"], (
        f"{second} served {again.sha256[:12]}, not its own bytes: the bytes of {first}? "
        f"({read.sha256[:12]})")


def test_an_empty_fingerprint_is_no_fingerprint(own_fingerprints, pagecache: Probe) -> None:
    """empty-a and empty-b carry one value, the empty one: were it a fingerprint, they
    would share one cache (same size, other bytes), and so would empty-a and its twin."""
    ms, mt = own_fingerprints
    read, _, [other, twin] = read_and_look(pagecache, ms.path("empty-a"), ms.path("empty-b"),
                                           mt.path("empty-a"))
    assert read.sha256 == ms.image.file("empty-a")["sha256"]
    assert other.resident == 0 and twin.resident == 0, (
        f"an empty fingerprint was taken for one: empty-b {other}, empty-a's twin {twin}")
    again = pagecache.read(ms.path("empty-b"))
    assert again.sha256 == ms.image.file("empty-b")["sha256"]


@pytest.mark.known_bug(**PARTIAL_META_PAGE_BUG, params=["file"])  # big-b's inode is there
def test_a_fingerprint_longer_than_a_block_is_no_fingerprint(erofs_image, source: str,
                                                             mount: Mounter,
                                                             pagecache: Probe) -> None:
    """big-a and big-b carry one 2000-byte value in an image of 1 KiB blocks."""
    big, twin = erofs_image("fp-oversized"), erofs_image("fp-oversized-twin")
    mb, mt = mount(big, SHARE, source), mount(twin, SHARE, source)
    _effective_fingerprints(pagecache, big, mb.target)
    read, _, [other, other_twin] = read_and_look(pagecache, mb.path("big-a"),
                                                 mb.path("big-b"), mt.path("big-a"))
    assert read.sha256 == big.file("big-a")["sha256"]
    assert other.resident == 0 and other_twin.resident == 0, (
        f"a 2000-byte fingerprint in 1 KiB blocks was taken for one: big-b {other}, "
        f"big-a's twin {other_twin}")
    again = pagecache.read(mb.path("big-b"))
    assert again.sha256 == big.file("big-b")["sha256"]
