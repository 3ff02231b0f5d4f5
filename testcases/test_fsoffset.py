"""An image that starts inside its file or device (fsoffset=), with and without sharing."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from conftest import (
    BIG,
    FSOFFSET,
    PARTIAL_META_PAGE_BUG,
    SHARE,
    join_options,
    read_then_mincore,
    shown_options,
    twin_of,
    wrong_files,
)
from harness.erofs.images import BuiltImage
from harness.guest.mounts import Mounter
from harness.guest.probe import Probe

# fsoffset= arrived with "erofs: add 'fsoffset' mount option" (c36ec00d7f67, Linux 6.16).
pytestmark = pytest.mark.requires_kernel(">=6.16", reason="fsoffset= is new in 6.16")


@pytest.mark.requires_kernel("erofs")
def test_image_at_an_offset_reads_back_with_fsoffset(offset_sizes: BuiltImage, source: str,
                                                     mount: Mounter, pagecache: Probe) -> None:
    m = mount(offset_sizes, f"fsoffset={FSOFFSET}", source)
    wrong = wrong_files(pagecache, offset_sizes, m.target)
    assert not wrong, f"wrong bytes at fsoffset={FSOFFSET}: {wrong}"


@pytest.mark.requires_kernel("erofs")
def test_image_at_an_offset_does_not_mount_without_fsoffset(offset_sizes: BuiltImage,
                                                            source: str,
                                                            mount: Mounter) -> None:
    attempt = mount.attempt(offset_sizes, "", source)
    assert not attempt.result.ok, "an image 64 KiB into its file mounted without fsoffset="


@pytest.mark.requires_kernel("page_cache_share")
def test_image_at_an_offset_shares_with_its_twin(offset_sizes: BuiltImage, erofs_image,
                                                 source: str, mount: Mounter,
                                                 pagecache: Probe) -> None:
    twin = erofs_image("renamed")
    mo = mount(offset_sizes, f"{SHARE},fsoffset={FSOFFSET}", source)
    mt = mount(twin, SHARE, source)
    other = read_then_mincore(pagecache, mo.path(BIG), mt.path(twin_of(offset_sizes, twin, BIG)))
    assert other.resident == other.pages, other


@pytest.mark.requires_kernel("erofs")
@pytest.mark.parametrize("new", ["0", str(2 * FSOFFSET)], ids=["to-zero", "elsewhere"])
@pytest.mark.parametrize("options", ["", pytest.param(SHARE, marks=pytest.mark.requires_kernel(
    "page_cache_share"))], ids=["plain", "sharing"])
def test_a_remount_cannot_move_the_image_offset(offset_sizes: BuiltImage, source: str,
                                                options: str, new: str, mount: Mounter,
                                                pagecache: Probe) -> None:
    """Where the image starts in its file or device is fixed by the mount that found the
    superblock there. A remount asking for another fsoffset= may be refused or ignored,
    but /proc/mounts must go on showing the offset in use, and every file, read again from
    the device after the caches are dropped, must read its bytes."""
    m = mount(offset_sizes, join_options(options, f"fsoffset={FSOFFSET}"), source)
    assert pagecache.read(m.path(BIG)).sha256 == offset_sizes.file(BIG)["sha256"]
    answer = pagecache.remount(m.target, join_options(options, f"fsoffset={new}"))
    shown = shown_options(pagecache, m)
    assert f"fsoffset={FSOFFSET}" in shown, (
        f"after remount -o fsoffset={new} ({'accepted' if answer.ok else answer.errname}) "
        f"/proc/mounts shows {','.join(shown)}")
    pagecache.drop_caches()
    files = offset_sizes.files()
    with pagecache.batch() as batch:
        reads = [batch.read(m.path(f["path"]), may_fail=True) for f in files]
    wrong = {f["path"]: got.error or got.value for f, got in zip(files, reads, strict=True)
             if got.failed or got.value.sha256 != f["sha256"]}
    assert not wrong, (f"after remount -o fsoffset={new} "
                       f"({'accepted' if answer.ok else answer.errname}): {wrong}")


# fsoffset= arrived with "erofs: add 'fsoffset' mount option" (c36ec00d7f67, Linux 6.16).
SUPERBLOCK_READ_FROM_THE_WRONG_PAGE = dict(
    reason="erofs_read_superblock() maps the page holding the start of the filesystem and "
           "reads the superblock 1 KiB on: with fsoffset= 3 KiB into a page (valid for an "
           "image of 1 KiB blocks) the superblock is in the next page, and a block device "
           "mount fails (reports/fsoffset-superblock-wrong-page.yaml). Not strict: a block "
           "device whose page cache holds a large folio there mounts",
    signature=r"with -o (inode_share,domain_id=d1,)?fsoffset=\d+ failed: EINVAL \(errno 22\); "
              r"kernel said: erofs \(device [^)]+\): cannot find valid erofs superblock",
    releases=">=6.16", unless_patched="erofs: read the superblock from the page that holds it",
    params=["loop-*-3072", "loop-*-7168", "block-*-3072", "block-*-7168"], strict=False)

INLINE_TAIL_AT_THE_WRONG_PLACE = dict(
    reason="z_erofs_pcluster_begin() takes an inline compressed tail's offset in its page "
           "as m_pa % PAGE_SIZE, without the fsoffset= erofs_bread() added: on a block device "
           "with an offset that is not a multiple of the page size the decompressor reads "
           "the wrong bytes (reports/fsoffset-inline-tail.yaml)",
    signature=r"\[Errno 117\] Structure needs cleaning",
    releases=">=6.16",
    unless_patched="erofs: find an inline compressed tail where fsoffset= puts it",
    params=["loop-bs1k-lz4hc-packed-*", "block-bs1k-lz4hc-packed-*"])


@pytest.mark.requires_kernel("erofs")
@pytest.mark.known_bug(**SUPERBLOCK_READ_FROM_THE_WRONG_PAGE)
@pytest.mark.known_bug(**INLINE_TAIL_AT_THE_WRONG_PLACE)
# Before 7.3 a file-backed mount read metadata through the image file's own page cache with
# the offset added, as a block device's: both bugs show there too (7.2.13: every compressed
# case; the superblock in 4 of the 8 cases at 3 and 7 KiB of one run, the others mounted,
# their page cache holding a large folio there).
@pytest.mark.known_bug(**dict(SUPERBLOCK_READ_FROM_THE_WRONG_PAGE, releases=">=6.16,<7.3",
                              params=["file-*-3072", "file-*-7168"]))
@pytest.mark.known_bug(**dict(INLINE_TAIL_AT_THE_WRONG_PLACE, releases=">=6.16,<7.3",
                              params=["file-bs1k-lz4hc-packed-*"]))
# mkfs ends this image inside a page (1 KiB blocks), its packed tails last.
@pytest.mark.known_bug(**PARTIAL_META_PAGE_BUG, params=["file-bs1k-lz4hc-packed-*"])
@pytest.mark.parametrize("offset", [1024, 2048, 3072, 5120, 7168])
@pytest.mark.parametrize("options", ["", pytest.param(SHARE, marks=pytest.mark.requires_kernel(
    "page_cache_share"))], ids=["plain", "sharing"])
@pytest.mark.parametrize("image", ["bs1k", pytest.param("bs1k-lz4hc-packed", marks=(
    pytest.mark.requires_kernel("lz4"),))])
def test_an_image_of_small_blocks_mounts_at_any_offset_that_is_a_multiple_of_its_block_size(
        offset_image: Callable[..., BuiltImage], erofs_image: Callable[[str], BuiltImage],
        source: str, image: str, offset: int, options: str, mount: Mounter,
        pagecache: Probe) -> None:
    """fsoffset= must be a multiple of the image's block size, not of the page size: an
    image of 1 KiB blocks may start 3 KiB into its file or device. Its superblock then lies
    in the next page of the device from the one the offset falls in, and every structure
    read through a page of the device sits at another place in it than in the image (the
    compressed image's tails are packed inline beside their inodes)."""
    moved = offset_image(f"sizes-{image}", offset)
    m = mount(moved, join_options(options, f"fsoffset={offset}"), source)
    if options:
        # First, while nothing is cached: a's read fills the cache its twin looks at.
        twin = erofs_image(f"renamed-{image}")
        mt = mount(twin, SHARE, source)
        other = read_then_mincore(pagecache, m.path(BIG), mt.path(twin_of(moved, twin, BIG)))
        assert other.resident == other.pages, other
    wrong = wrong_files(pagecache, moved, m.target)
    assert not wrong, f"wrong bytes at fsoffset={offset}: {wrong}"
