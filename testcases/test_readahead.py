"""How far a read reads ahead is the block device's to say: `read_ahead_kb` under
/sys/block/<dev>/queue ("maximum number of kilobytes to read-ahead for filesystems on this
block device", Documentation/ABI/stable/sysfs-block). A file takes its readahead size from
its backing device when it is opened. Through a sharing mount the reads go through the
shared inode's file, whose backing device is the ishare pseudo filesystem's, so the
setting of the device the image is on must still be the one that counts.

Loop and virtio sources only: a file-backed mount has no block device of its own.
"""

from __future__ import annotations

import pytest

from conftest import BIG, SHARE
from harness.erofs.images import BuiltImage
from harness.guest.mounts import Mounter
from harness.guest.probe import Probe


@pytest.mark.requires_kernel("erofs")
@pytest.mark.known_bug(
    "a sharing mount reads ahead as far as the ishare pseudo filesystem's backing device "
    "says (its own read_ahead_kb under /sys/class/bdi, 128 KiB, one setting for every "
    "sharing mount): erofs_ishare_file_open() opens the shared inode's file, whose f_ra "
    "is set from inode_to_bdi() of the shared inode, and fadvise NORMAL or SEQUENTIAL on "
    "it sizes it from there again, so the read_ahead_kb of the device the image is on is "
    "ignored (reports/ishare-readahead-ignores-device.yaml; found by reading fs/erofs "
    "beside mm/readahead.c, 7.2.13 and 7.3.4)",
    signature=r"with read_ahead_kb 0 on \S+(?: and fadvise \w+)?, one read of the first "
              r"page of \S+ left (?:[2-9]\d*|1\d+)/\d+ pages resident",
    releases=">=7.2", params=["*-sharing-*"],
    unless_patched="read ahead as the real inode's device says")
@pytest.mark.parametrize("advice", [None, "normal", "sequential"],
                         ids=["opened", "fadvise-normal", "fadvise-sequential"])
@pytest.mark.parametrize("options", ["", SHARE], ids=["plain", "sharing"])
@pytest.mark.parametrize("source", ["loop", "block"])
def test_a_read_reads_ahead_as_far_as_the_devices_read_ahead_kb(
        pair: tuple[BuiltImage, BuiltImage], source: str, options: str, advice: str | None,
        mount: Mounter, pagecache: Probe) -> None:
    """With the device's readahead off (read_ahead_kb 0) a read of one page from cold
    brings in that page alone, through a sharing mount as through a plain one: as the file
    was opened, and after fadvise NORMAL or SEQUENTIAL (which size the readahead anew from
    the file's backing device)."""
    mounted = mount(pair[0], options, source)
    path = mounted.path(BIG)
    got = pagecache.first_page_readahead(path, mounted.device, 0, advice)
    assert got.before.resident == 0, f"{path} is not cold after fadvise DONTNEED: {got.before}"
    advised = f" and fadvise {advice}" if advice else ""
    assert got.after.resident == 1, (
        f"with read_ahead_kb 0 on {mounted.device}{advised}, one read of the first page of "
        f"{path} left {got.after}")
