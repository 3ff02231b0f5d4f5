"""File-backed mounts and their mounter, as measured facts per kernel (points raised on the
list about file-backed mounts): whose credentials read the image file, and whose page cache
holds the metadata EROFS reads from it."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from conftest import PARTIAL_META_PAGE_BUG, SHARE
from harness.erofs.images import BuiltImage
from harness.erofs.layout import image_layout
from harness.erofs.tools import ErofsUtils
from harness.guest.handle import Guest
from harness.guest.mounts import Mounter
from harness.guest.probe import Probe

NOBODY = 65534


@pytest.mark.parametrize("options", ["", pytest.param(SHARE, marks=pytest.mark.requires_kernel(
    "page_cache_share"))], ids=["plain", "sharing"])
def test_reads_use_the_mounters_credentials_not_the_readers(
        erofs_image: Callable[[str], BuiltImage], options: str, guest: Guest, mount: Mounter,
        pagecache: Probe) -> None:
    """The image file is root's and mode 0600: nobody cannot open it, yet nobody reads the
    files inside through root's mount, because EROFS reads its backing file with the
    mounter's credentials (the file was opened at mount time). Taking every permission
    away from the image after the mount changes nothing either."""
    image = erofs_image("sizes")
    m = mount(image, options, "file", private=True)
    assert m.backing is not None
    guest.check(f"chown 0:0 {m.backing} && chmod 0600 {m.backing}")
    direct = pagecache.read_as(m.backing, NOBODY)
    assert direct.errno == 13, f"nobody opened the 0600 image itself: {direct.error or 'ok'}"
    for stage in ("image 0600", "image 0000 after the mount"):
        pagecache.drop_caches()
        for meta in image.files():
            if meta["path"] == "owned":  # mode 0600 inside the image: nobody may not
                continue
            got = pagecache.read_as(m.path(meta["path"]), NOBODY)
            assert not got.failed, (
                f"{stage}: nobody could not read {meta['path']} through root's mount: "
                f"{got.error} (errno {got.errno})")
            assert got.value.sha256 == meta["sha256"], f"{stage}: {meta['path']} wrong bytes"
        guest.check(f"chmod 0000 {m.backing}")


def test_file_backed_metadata_is_cached_in_the_image_files_page_cache(
        erofs_image: Callable[[str], BuiltImage], erofs_tools: ErofsUtils,
        measure: Callable[..., None],
        guest: Guest, mount: Mounter, pagecache: Probe) -> None:
    """A metadata-only walk (lstat, listdir, xattrs of every entry; no file data) of a
    file-backed mount, from cold caches. Measured on 7.3.4: EROFS reads its metadata
    through the image file's own page cache, so every block holding an inode, inline
    xattrs or a directory is resident in the image file afterwards, and nothing is read
    into a cache of EROFS's own. A kernel that moves metadata to an EROFS-owned cache (as
    argued for on the list) fails here, and says how much moved."""
    image = erofs_image("hostile")
    assert erofs_tools.dump is not None
    layout = image_layout(image, erofs_tools.dump)
    blocks = {b for r in layout.regions if r.kind in ("inode", "xattrs", "dir")
              for b in range(r.start // layout.block_size, (r.end - 1) // layout.block_size + 1)}
    m = mount(image, "", "file", private=True)
    assert m.backing is not None
    pagecache.drop_caches()
    cold = pagecache.residency(m.backing)
    before = pagecache.meminfo()
    walk = pagecache.walk(m.target, data=False)
    after = pagecache.meminfo()
    warm = pagecache.residency(m.backing)
    assert walk.complete and len(walk.entries) >= len(layout.files), "the walk did not finish"
    grown_kib = after["Cached"] - before["Cached"]
    image_kib = (warm.resident - cold.resident) * 4
    measure(metadata_blocks=len(blocks), image_pages_after_walk=warm.resident,
            cached_growth_kib=grown_kib, image_cache_growth_kib=image_kib)
    print(f"{len(blocks)} metadata blocks; image file {cold} -> {warm}; Cached grew "
          f"{grown_kib} KiB, the image file's cache {image_kib} KiB")
    assert cold.resident == 0, f"the image file was resident before the walk: {cold}"
    assert warm.resident >= len(blocks), (
        f"after the walk the image file has {warm} pages resident, fewer than the "
        f"{len(blocks)} blocks of metadata the walk needs: EROFS cached them elsewhere")


@pytest.mark.requires_kernel("fanotify", reason="fanotify on the image file")
@pytest.mark.parametrize("options", ["", pytest.param(SHARE, marks=pytest.mark.requires_kernel(
    "page_cache_share"))], ids=["plain", "sharing"])
def test_fanotify_on_the_image_file(erofs_image: Callable[[str], BuiltImage], options: str,
                                    measure: Callable[..., None], guest: Guest,
                                    mount: Mounter, pagecache: Probe) -> None:
    """A listener on the image file behind a file-backed mount, from cold caches each time.
    Measured on 7.3.4:

    - EROFS reads file data (and directory blocks) through the VFS (vfs_iocb_iter_read):
      the listener sees FAN_ACCESS for them, but next to nothing of a metadata walk
      (inodes come from the image file's page cache directly: the point made on the list);
    - a listener that starts after the mount gets no FAN_ACCESS_PERM at all (the kernel
      decides at open time whether a file carries permission events, and the image was
      opened at mount time), so it cannot veto EROFS's reads;
    - a listener that was there before the mount gets them, and a veto reaches the mount's
      reader as an error, never as bytes: EIO on 7.3.4, the listener's EPERM itself on
      7.2.13 (recorded as fanotify_early_denied_errno).
    """
    image = erofs_image("sizes")
    m = mount(image, options, "file", private=True)
    assert m.backing is not None
    seen = pagecache.fanotify_watch(m.backing, m.target, m.path("four-mib"))
    late_deny = pagecache.fanotify_watch(m.backing, m.target, m.path("dir/sixty-four-k"),
                                         deny=True)
    mount.umount(m)
    early_root = f"{guest.workdir}/early"
    early = pagecache.fanotify_watch(m.backing, early_root, f"{early_root}/dir/sixty-four-k",
                                     deny=True, mount_options=options)
    measure(fanotify_metadata_events=seen.metadata.access,
            fanotify_data_events=seen.data.access,
            fanotify_late_perm_events=seen.data.access_perm + late_deny.data.access_perm,
            fanotify_early_perm_events=early.data.access_perm,
            fanotify_early_denied_errno=early.data.result.errno)
    print(f"late listener: metadata {seen.metadata}; data {seen.data}; denied {late_deny.data}"
          f"\nearly listener, denying: metadata {early.metadata}; data {early.data}")
    want = image.file("four-mib")["sha256"]
    assert seen.data.result.read is not None and seen.data.result.read.sha256 == want
    assert seen.data.access > 0, f"no FAN_ACCESS for the data reads of the image: {seen.data}"
    assert seen.metadata.access < seen.data.access, (
        f"the metadata walk showed as many events as a 4 MiB read ({seen.metadata}): "
        f"metadata reads now go through the VFS")
    assert seen.permission_events, "the kernel offers no FAN_ACCESS_PERM"
    assert seen.data.access_perm == late_deny.data.access_perm == 0, (
        f"a listener that started after the mount got permission events: {late_deny.data}")
    assert late_deny.data.result.read is not None, late_deny.data
    assert early.data.access_perm > 0, f"no FAN_ACCESS_PERM for a listener there first: {early}"
    assert early.data.result.read is None and early.data.result.errno in (1, 5), (
        f"a denied read of the image gave the mount's reader {early.data.result}, not an "
        f"error (EIO or EPERM)")


@pytest.mark.known_bug(**PARTIAL_META_PAGE_BUG, params=["file-*"])
@pytest.mark.parametrize("options", ["", pytest.param(SHARE, marks=pytest.mark.requires_kernel(
    "page_cache_share"))], ids=["plain", "sharing"])
def test_an_image_that_ends_inside_a_page_reads_whole(
        erofs_image: Callable[[str], BuiltImage], erofs_tools: ErofsUtils, source: str,
        options: str, mount: Mounter, pagecache: Probe) -> None:
    """With 1 KiB blocks an image need not end on a page boundary, and mkfs put the inode of
    `second` in the image's last page, which the image ends inside. Every file, and its
    2000-byte xattr, must read right through every source: a loop or virtio device reads
    past its end as zeroes, a file-backed mount must not fail the short read."""
    image = erofs_image("partial-page-bs1k")
    assert erofs_tools.dump is not None
    size = image.path.stat().st_size
    last_page = size - size % 4096
    inode = next(r for r in image_layout(image, erofs_tools.dump).regions
                 if r.name == "inode:second")
    assert size % 4096 and inode.start >= last_page, (
        f"{image.spec.name} is not shaped as the test needs: {size} bytes, the inode of "
        f"second at {inode.start} (the last page starts at {last_page})")
    m = mount(image, options, source)
    walk = pagecache.walk(m.target)
    for spec in image.spec.files:
        entry = walk.entries.get(spec.path)
        assert entry is not None and entry.error is None, (
            f"{spec.path} (inode at byte {inode.start} for second) cannot be looked up: "
            f"{entry.error if entry else 'missing from the listing'}")
        want = image.file(spec.path)["sha256"]
        for how, look in (("read", entry.read), ("mmap", entry.mapped)):
            assert look is not None and look.read is not None and look.read.sha256 == want, (
                f"{spec.path} ({how}) gave {look}, not {want[:12]}")
        value = dict(spec.xattrs)["user.harness.big"].encode().hex()
        assert entry.xattrs.get("user.harness.big") == value, (
            f"{spec.path}: getxattr(user.harness.big) gave "
            f"{entry.xattrs.get('user.harness.big', 'nothing')[:60]!r}")
