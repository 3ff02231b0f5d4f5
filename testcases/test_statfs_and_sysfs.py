"""What a mount says about itself through a sharing mount: statfs, and its own knobs under
/sys/fs/erofs/.

Sharing changes where a file's pages live, not which filesystem the file is on. statfs of a
path or of an open file in a sharing mount must describe that mount's own image, not the
image of a twin whose reader brought the pages in, and not the kernel's internal mount the
shared inodes live on. Each mount of a domain keeps its own knobs: EROFS's own drop_caches
drops that mount's compressed cache, never the file pages its twins read.
"""

from __future__ import annotations

import errno
from collections.abc import Callable

import pytest

from conftest import BIG, SHARE, read_then_mincore, twin_of
from harness.erofs.images import BuiltImage
from harness.erofs.superblock import MAGIC, read_superblock
from harness.guest.mounts import Mounter
from harness.guest.probe import Probe, ReadResult

pytestmark = pytest.mark.requires_kernel("page_cache_share")
Images = Callable[[str], BuiltImage]
ALL_ONES = (1 << 64) - 1
EROFS_NAME_LEN = 255
# fs/erofs/sysfs.c and internal.h: sync_decompress takes 0 (auto), 1 (force on), 2 (force
# off), and starts at 0; dir_ra_bytes starts at EROFS_DIR_RA_BYTES; drop_caches takes 1, 2 or 3.
DIR_RA_BYTES = "16384"
# The last value sync_decompress is left at, 2 (force off), is one the kernel never sets by
# itself: the other mount's knob cannot come to hold it by chance.
WRITES = [("sync_decompress", "1"), ("sync_decompress", "3"), ("sync_decompress", "abc"),
          ("sync_decompress", "2"), ("dir_ra_bytes", "0"), ("drop_caches", "0"),
          ("drop_caches", "4"), ("drop_caches", "x"), ("drop_caches", "3")]
# (errno, text read back afterwards); None: not readable, not checked.
WANT = [(0, "1"), (errno.EINVAL, "1"), (errno.EINVAL, "1"), (0, "2"), (0, "0"),
        (errno.EINVAL, None), (errno.EINVAL, None), (errno.EINVAL, None), (0, None)]


def _expected_statfs(image: BuiltImage) -> dict[str, int]:
    """What erofs_statfs reports of ``image``, from its superblock's bytes."""
    sb = read_superblock(image.path)
    # statfs counts every device's blocks (total_blocks); this reads only the primary's.
    assert not sb.extra_devices, f"{image.path}: an image with extra devices; not handled here"
    uuid = sb.uuid
    # uuid_to_fsid(): the uuid's two little-endian halves xor-ed; glibc's f_fsid is the
    # two words in one number, low word first.
    fsid = int.from_bytes(uuid[:8], "little") ^ int.from_bytes(uuid[8:], "little")
    assert any(uuid), f"{image.path}: mkfs wrote a null uuid; the fsid check needs one"
    return {"bsize": 1 << sb.blkszbits, "frsize": 1 << sb.blkszbits, "blocks": sb.blocks,
            "bfree": 0, "bavail": 0, "files": ALL_ONES, "ffree": ALL_ONES - sb.inos,
            "namemax": EROFS_NAME_LEN, "fsid": fsid}


def test_statfs_through_a_sharing_mount_describes_that_mounts_own_image(
        pair: tuple[BuiltImage, BuiltImage], source: str, mount: Mounter,
        pagecache: Probe) -> None:
    a, b = pair
    ma, mb = mount(a, SHARE, source), mount(b, SHARE, source)
    # b's reader brings the shared pages in; a's file is then served from them.
    read_then_mincore(pagecache, mb.path(twin_of(a, b, BIG)), ma.path(BIG))
    looked = ((ma, a, BIG), (mb, b, twin_of(a, b, BIG)))
    with pagecache.batch() as batch:
        answers = [batch.statfs(m.path(rel)) for m, _, rel in looked]
    for (m, image, rel), answer in zip(looked, answers, strict=True):
        want = _expected_statfs(image)
        got = answer.value
        assert got.magic == MAGIC, (
            f"statfs of {m.path(rel)} gives magic {got.magic:#x}, not EROFS's {MAGIC:#x}")
        by_path = {k: got.by_path[k] for k in want}
        by_fd = {k: got.by_fd[k] for k in want}
        assert by_path == want, (
            f"statfs of {m.path(rel)} in {image.spec.name}: {by_path}; its superblock says "
            f"{want}")
        assert by_fd == want, (
            f"fstatfs of {m.path(rel)} opened through the sharing mount: {by_fd}; its "
            f"image's superblock says {want}")


def test_each_sharing_mount_keeps_its_own_sysfs_knobs_and_drops_only_its_own_cache(
        erofs_image: Images, source: str, mount: Mounter, pagecache: Probe) -> None:
    a, b = erofs_image("sizes-lz4"), erofs_image("renamed-lz4")
    if not pagecache.vm.kernel.features.get("lz4"):
        pytest.skip("kernel lacks the lz4 decompressor")
    ma, mb = mount(a, SHARE, source), mount(b, SHARE, source)
    twin = mb.path(twin_of(a, b, BIG))
    before = read_then_mincore(pagecache, ma.path(BIG), twin)
    assert before.resident == before.pages, f"the twins do not share to begin with: {before}"
    # b's knobs before a's are written (a batch runs in order): what they must still hold
    # afterwards.
    with pagecache.batch() as batch:
        before_b, written_a = batch.sysfs_knobs(mb.target), batch.sysfs_knobs(ma.target, WRITES)
    knobs_b, knobs_a = before_b.value, written_a.value
    for knobs in (knobs_a, knobs_b):
        # 0 (auto) at mount; the kernel turns it to 1 itself once a read of compressed data
        # completes in atomic context (z_erofs_decompress_kickoff), as a virtio disk's does.
        assert knobs.values.get("sync_decompress") in ("0", "1"), knobs
        assert knobs.values.get("dir_ra_bytes") == DIR_RA_BYTES, knobs
    for write, (want_errno, want_after) in zip(knobs_a.writes, WANT, strict=True):
        assert write.errno == want_errno, (
            f"writing {write.value!r} to {knobs_a.directory}/{write.name} gave errno "
            f"{write.errno}, want {want_errno}")
        assert want_after is None or write.after == want_after, (
            f"after writing {write.value!r} to {write.name} it reads {write.after!r}, want "
            f"{want_after!r}")
    # a's knobs moved; b's did not.
    again = pagecache.sysfs_knobs(mb.target)
    assert again.values["dir_ra_bytes"] == DIR_RA_BYTES and (
        again.values["sync_decompress"] == knobs_b.values["sync_decompress"]), (
        f"writes to {knobs_a.directory} changed {again.directory}: {knobs_b.values} became "
        f"{again.values}")
    # drop_caches=3 through a's knob dropped a's compressed pages and pclusters only: the
    # shared file pages stay, and a's file reads right from them and from disk again.
    after = pagecache.residency(twin)
    assert after.resident == after.pages, (
        f"EROFS's own drop_caches on {knobs_a.directory} evicted the twin's shared file "
        f"pages: {after}")
    pagecache.fadvise_dontneed(ma.path(BIG))
    want = ReadResult(a.file(BIG)["size"], a.file(BIG)["sha256"])
    assert pagecache.read(ma.path(BIG)) == want
    assert pagecache.read(twin) == want
