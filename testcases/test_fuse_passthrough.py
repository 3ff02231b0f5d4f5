"""An EROFS file served through FUSE passthrough (a daemon that hands the kernel the open
EROFS file as the backing file of a FUSE file, as container and backup daemons do), mapped
and then closed everywhere: the mapping must keep the EROFS mount busy, so that the mount
cannot go while a mapping still reads through one of its inodes."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from conftest import BIG, SHARE
from harness.erofs.images import BuiltImage
from harness.guest.handle import Guest
from harness.guest.mounts import Mounter
from harness.guest.probe import Probe

Images = Callable[[str], BuiltImage]

PASSTHROUGH_UNPINNED_MOUNT = dict(
    reason="the shared file keeps the real inode but not its mount, and a file FUSE "
           "passthrough opened has the FUSE file's user path: the mapping pins no EROFS "
           "mount, umount succeeds and the superblock goes with a busy inode, kernel BUG "
           "(reports/ishare-passthrough-unmount-busy-inode.yaml)",
    signature=r"Busy inodes after unmount of \S+ \(erofs\)",
    releases=">=7.0", unless_patched="keep the real file's mount alive with a shared file",
    params=["*-sharing-*"])


@pytest.mark.requires_kernel("erofs", ">=6.9", reason="FUSE passthrough is new in 6.9")
@pytest.mark.known_bug(**PASSTHROUGH_UNPINNED_MOUNT)
@pytest.mark.parametrize("name", ["sizes", "sizes-lz4"])
@pytest.mark.parametrize("options", ["", SHARE], ids=["plain", "sharing"])
def test_a_passthrough_mapping_keeps_its_erofs_mount_busy(
        erofs_image: Images, source: str, name: str, options: str, guest: Guest,
        mount: Mounter, pagecache: Probe) -> None:
    if options and not pagecache.vm.kernel.features["page_cache_share"]:
        pytest.skip(f"kernel {pagecache.vm.kernel.release} lacks page_cache_share")
    if pagecache.vm.kernel.option("FUSE_PASSTHROUGH") != "y":
        pytest.skip(f"kernel {pagecache.vm.kernel.release} lacks CONFIG_FUSE_PASSTHROUGH")
    image = erofs_image(name)
    m = mount(image, options, source)
    got = pagecache.fuse_passthrough_unmount(m.path(BIG), m.target, guest.workdir)
    assert any(line.startswith("released") for line in got.daemon), (
        f"the daemon never saw the FUSE file released (it said {got.daemon}): the scenario "
        f"did not run as written")
    assert got.umount == "EBUSY" and got.still_mounted, (
        f"umount of the EROFS mount under a live FUSE passthrough mapping of its file: "
        f"{got.umount}, {'still' if got.still_mounted else 'no longer'} in the mount table "
        f"(EBUSY expected: the mapping reads through an inode of that mount)")
    assert got.after == got.before, "the mapping reads other bytes after the umount"
