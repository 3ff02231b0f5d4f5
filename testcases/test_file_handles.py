"""File handles through a sharing mount, as an NFS server, a fanotify listener that reports
file ids, and backup tools use them.

A handle names an EROFS file by its nid and generation (erofs_encode_fh). Opened again
after the dentries and inodes are gone (open_by_handle_at), it must find the same file and
read its bytes through the shared cache, as a path open does; a directory's handle must
find its path again through ".." (erofs_get_parent), or the server cannot hand it out.
"""

from __future__ import annotations

import errno
from collections.abc import Callable

import pytest

from conftest import BIG, SHARE, twin_of
from harness.erofs.images import BuiltImage
from harness.guest.mounts import Mounter
from harness.guest.probe import Probe, ReadResult

Images = Callable[[str], BuiltImage]
FILEID_INO64_GEN = 0x81  # include/linux/exportfs.h: a 64-bit inode number and generation
HANDLE_BYTES = 12  # the nid's two halves and the generation, three 32-bit words
FILES = [BIG, "dir/deeper/one-mib", "page-plus-1"]


@pytest.mark.requires_kernel("page_cache_share", "file_handles")
def test_a_file_opened_by_its_handle_reads_through_the_shared_cache(
        pair: tuple[BuiltImage, BuiltImage], source: str, mount: Mounter,
        pagecache: Probe) -> None:
    a, b = pair
    ma, mb = mount(a, SHARE, source), mount(b, SHARE, source)
    paths = [ma.path(f) for f in FILES]
    # Pages, dentries and inodes dropped: each handle builds its inode anew from the nid
    # (erofs_fh_to_dentry), so the open that follows is the inode's first.
    opened = pagecache.reopen_by_handle(ma.target, paths, drop_level=3)
    for rel, path in zip(FILES, paths, strict=True):
        got = opened[path]
        assert not got.error, f"{path}: open_by_handle_at failed: {got.error}"
        assert (got.short_errno, got.needed_bytes) == (errno.EOVERFLOW, HANDLE_BYTES), (
            f"{path}: asked with no room for the handle, the kernel answered errno "
            f"{got.short_errno} and a need of {got.needed_bytes} bytes, not EOVERFLOW and "
            f"{HANDLE_BYTES}")
        assert (got.handle_bytes, got.handle_type) == (HANDLE_BYTES, FILEID_INO64_GEN), got
        assert got.ino == got.ino_before, (
            f"{path}: the handle opened inode {got.ino}, the path names {got.ino_before}")
        want = ReadResult(a.file(rel)["size"], a.file(rel)["sha256"])
        assert got.read == want, f"{path}: read through its handle {got.read}, want {want}"
    # The bytes the handle's reads brought in are the twin's: one cache.
    twin = pagecache.residency(mb.path(twin_of(a, b, BIG)))
    assert twin.resident == twin.pages, (
        f"after the read through {ma.path(BIG)}'s handle, its twin in the other mount of "
        f"the domain has {twin.resident} of {twin.pages} pages resident: the handle's open "
        f"did not read through the shared cache")


@pytest.mark.requires_kernel("erofs", "file_handles")
@pytest.mark.parametrize("options", ["", SHARE], ids=["plain", "sharing"])
def test_a_directory_handle_finds_its_path_again_after_the_dentries_are_dropped(
        erofs_image: Images, source: str, options: str, mount: Mounter,
        pagecache: Probe) -> None:
    if options and not pagecache.vm.kernel.features["page_cache_share"]:
        pytest.skip(f"kernel {pagecache.vm.kernel.release} lacks page_cache_share")
    m = mount(erofs_image("sizes"), options, source)
    dirs = [m.path("dir/deeper"), m.path("dir")]
    # With the dentries gone the kernel rebuilds each directory's place in the tree from
    # its handle alone: ".." of deeper, then of dir, looked up on disk (erofs_get_parent),
    # each name found in its parent by inode number.
    opened = pagecache.reopen_by_handle(m.target, dirs, drop_level=2)
    for path in dirs:
        got = opened[path]
        assert not got.error, f"{path}: open_by_handle_at failed: {got.error}"
        assert got.ino == got.ino_before, (
            f"{path}: the handle opened inode {got.ino}, the path names {got.ino_before}")
        assert got.path == path, (
            f"the handle of directory {path} opened a directory the kernel names {got.path}")
