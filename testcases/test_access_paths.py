"""Every way of reading a file, on every mount source: the bytes are right, and with sharing
on, what one mount read is resident through the other."""

from __future__ import annotations

import errno
from collections import Counter
from collections.abc import Callable

import pytest

from conftest import BIG, SHARE, read_and_look, twin_of
from harness.erofs.images import BuiltImage
from harness.guest.mounts import Mounter
from harness.guest.probe import Probe, ReadResult
from harness.kernel.kernel import Kernel

METHODS = ["read", "pread", "readv", "mmap_shared", "mmap_private", "sendfile", "splice",
           "fadvise_willneed", "readahead", "seek_data",
           pytest.param("io_uring", marks=pytest.mark.requires_kernel("io_uring"))]
PATHS = [BIG, "sparse", "page-plus-1"]
SPLICE_PRIVATE_72 = dict(
    reason="on 7.2 splice and sendfile fill the file's private page cache, not the shared "
           "one (reports/splice-bypasses-shared-cache.yaml; most likely no splice_read for "
           "shared files before 7.3's erofs_ishare_splice_read)",
    releases="==7.2")


@pytest.mark.requires_kernel("page_cache_share")
@pytest.mark.known_bug(
    **SPLICE_PRIVATE_72, params=["*-splice-*", "*-sendfile-*"],
    signature=r"whole through (splice|sendfile) left 0/\d+ pages resident in its own cache")
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("method", METHODS)
def test_access_path_reads_right_bytes_into_the_shared_cache(
        pair: tuple[BuiltImage, BuiltImage], source: str, method: str, path: str,
        mount: Mounter, pagecache: Probe) -> None:
    a, b = pair
    ma, mb = mount(a, SHARE, source), mount(b, SHARE, source)
    read, mine, [other] = read_and_look(pagecache, ma.path(path),
                                        mb.path(twin_of(a, b, path)), method=method)
    assert read.sha256 == a.file(path)["sha256"], f"{method} read wrong bytes of {path}"
    assert other.resident == other.pages, (
        f"after {method}: {mine} through the reader's mount, {other} through the other")


@pytest.mark.parametrize("sharing", [True, False], ids=["sharing", "plain"])
def test_a_zero_length_read_answers_nothing_and_brings_no_page_in(
        pair: tuple[BuiltImage, BuiltImage], source: str, sharing: bool, mount: Mounter,
        pagecache: Probe, kernel: Kernel) -> None:
    """read(2), pread(2) and preadv(2) asking for 0 bytes answer 0 and read nothing: the
    shared file's read_iter returns before it clones the call onto the shared file, and a
    plain file's never starts a read."""
    if sharing and not kernel.features.get("page_cache_share"):
        pytest.skip(f"kernel {kernel.release} has no EROFS page cache sharing")
    a, _ = pair
    path = mount(a, SHARE if sharing else "", source).path(BIG)
    pagecache.drop_caches()
    cold = pagecache.residency(path)
    assert cold.resident == 0, f"{cold} of {path} resident after drop_caches"
    got = pagecache.read(path, "zero_length")
    after = pagecache.residency(path)
    assert got.bytes == 0, f"zero-length reads of {path} said they read {got.bytes} bytes"
    assert after.resident == 0, f"zero-length reads of a cold file left {after} resident"


@pytest.mark.requires_kernel("page_cache_share")
@pytest.mark.known_bug(
    **SPLICE_PRIVATE_72, params=["*-splice", "*-sendfile"],
    signature=r"(splice|sendfile) left 0/\d+ pages resident in the shared cache")
@pytest.mark.parametrize("method", METHODS)
def test_access_path_charges_the_reader_for_the_pages_it_brings_in(
        pair: tuple[BuiltImage, BuiltImage], source: str, method: str, mount: Mounter,
        pagecache: Probe) -> None:
    """Whatever the way in, the pages a cold read brings into the shared cache are charged
    to the reader's memory cgroup, frame by frame (/proc/kpagecgroup): not to nobody (the
    root), and not to another cgroup, such as that of a worker reading on the reader's
    behalf. A total from memory.stat could not say so: a file-backed mount may also charge
    the reader for its image file's pages."""
    a, _ = pair
    ma = mount(a, SHARE, source)
    path, group = ma.path(BIG), f"charge-{source}-{method}"
    pagecache.drop_caches()
    # Pages the read did not bring in cannot be the reader's: the file starts cold. (Once,
    # in a whole suite, all 1024 pages were charged to the root cgroup after a readahead(2)
    # read from a virtio disk; this says whether they were there before the read.)
    cold = pagecache.residency(path)
    assert cold.resident == 0, (
        f"{cold} of {path} resident after drop_caches, before the read on a fresh mount")
    try:
        got = pagecache.cgroup_read(group, path, method)
        resident = pagecache.residency(path)
        # Mapping the file to read its frames faults in what is not resident, charged to
        # the probe's cgroup: only as many pages as were resident can be the reader's.
        frames = pagecache.pfns(path)[path]
    finally:
        pagecache.remove_cgroups(group)
    assert got.read is not None and got.read.sha256 == a.file(BIG)["sha256"], (
        f"{method} read wrong bytes: {got}")
    assert frames.memcgs, "no /proc/kpagecgroup: the kernel lacks memory cgroups"
    assert resident.resident == resident.pages, (
        f"{method} left {resident.resident}/{resident.pages} pages resident in the shared "
        f"cache")
    others = Counter(m for m in frames.memcgs if m != got.inode)
    # What tells the explanations of a rare all-root charge apart (README, Open questions):
    # huge frames (khugepaged collapsed the pages while the probe mapped them, charging the
    # new folio to the probe's root cgroup), the group's own charge (about 4 MiB of "file":
    # the reader was charged, and the frames looked at are not its folios), and new frames
    # (the cache was dropped and refaulted in between).
    assert not others, (
        f"{method}: {sum(others.values())} of the {resident.pages} pages it brought into the "
        f"shared cache are charged to other cgroups than the reader's ({got.inode}): "
        f"{dict(others)} (cgroup inode numbers); huge frames {sum(frames.huge)}; the "
        f"reader's group: memory.stat file {got.file} bytes, memory.current {got.current}")


@pytest.mark.requires_kernel("page_cache_share")
@pytest.mark.known_bug(
    "a hint on a shared file reads ahead only the 128 KiB default of the ishare pseudo "
    "filesystem's bdi, not the device's io_pages (reports/ishare-readahead-window.yaml)",
    signature=r"brought in 32 pages through a sharing mount and \d+ through a plain",
    releases=">=7.2", params=["loop-*", "block-*"])
@pytest.mark.parametrize("advice", ["willneed", "readahead"])
def test_read_hint_through_a_sharing_mount_reads_ahead_as_a_plain_one(
        pair: tuple[BuiltImage, BuiltImage], source: str, advice: str, mount: Mounter,
        pagecache: Probe, measure: Callable[..., None]) -> None:
    """POSIX_FADV_WILLNEED or readahead(2), and no read at all. The pages a hint brings in
    through a sharing mount are the shared ones (the twin sees them), and as many as the
    same hint brings in through a plain mount of the same image: sharing must not change
    how far the kernel reads ahead."""
    a, b = pair
    ma, mb = mount(a, SHARE, source), mount(b, SHARE, source)
    plain = mount(a, "", source)
    pa, pb = ma.path(BIG), mb.path(twin_of(a, b, BIG))
    with pagecache.batch() as batch:
        cold = [batch.residency(p) for p in (pa, pb, plain.path(BIG))]
        batch.hint(pa, advice)
        mine, other = batch.residency(pa), batch.residency(pb)
        batch.hint(plain.path(BIG), advice)
        alone = batch.residency(plain.path(BIG))
    assert [c.value.resident for c in cold] == [0, 0, 0], f"not cold: {[c.value for c in cold]}"
    measure(hint_pages_sharing=mine.value.resident, hint_pages_plain=alone.value.resident)
    assert alone.value.resident > 0, f"{advice} through a plain mount brought in nothing"
    assert other.value.resident == mine.value.resident > 0, (
        f"{advice} through a: a shows {mine.value}, its twin through b {other.value}")
    assert mine.value.resident == alone.value.resident, (
        f"{advice} of a 4 MiB file brought in {mine.value.resident} pages through a sharing "
        f"mount and {alone.value.resident} through a plain mount of the same image")


@pytest.mark.requires_kernel("erofs")
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("method", METHODS)
def test_access_path_reads_right_bytes_without_sharing(
        pair: tuple[BuiltImage, BuiltImage], source: str, method: str, path: str,
        mount: Mounter, pagecache: Probe) -> None:
    a, _ = pair
    ma = mount(a, "", source)
    read = pagecache.read(ma.path(path), method)
    assert read == ReadResult(a.file(path)["size"], a.file(path)["sha256"]), (
        f"{method} through a plain {source} mount")


@pytest.mark.requires_kernel("page_cache_share")
def test_o_direct_open_is_refused_on_sharing_mounts(pair: tuple[BuiltImage, BuiltImage],
                                                    source: str, mount: Mounter,
                                                    pagecache: Probe) -> None:
    """Measured on 7.3: O_DIRECT is EINVAL on every inode_share mount."""
    ma = mount(pair[0], SHARE, source)
    answer = pagecache.try_read(ma.path(BIG), "odirect")
    assert answer.errno == errno.EINVAL, (
        f"O_DIRECT on an inode_share mount gave {answer.error or answer.value}")


@pytest.mark.requires_kernel("erofs")
def test_o_direct_without_sharing(pair: tuple[BuiltImage, BuiltImage], source: str,
                                  mount: Mounter, pagecache: Probe) -> None:
    """Block-backed mounts read O_DIRECT; file-backed ones refuse it (EINVAL)."""
    a = pair[0]
    ma = mount(a, "", source)
    answer = pagecache.try_read(ma.path(BIG), "odirect")
    if source == "file":
        assert answer.errno == errno.EINVAL, (
            f"O_DIRECT on a file-backed mount gave {answer.error or answer.value}")
    else:
        assert not answer.failed, f"O_DIRECT on a {source} mount: {answer.error}"
        assert answer.value.sha256 == a.file(BIG)["sha256"], answer.value
        resident = pagecache.residency(ma.path(BIG))
        assert resident.resident == 0, f"O_DIRECT went through the page cache: {resident}"


@pytest.mark.requires_kernel("erofs")
@pytest.mark.parametrize("options", ["", SHARE], ids=["plain", "sharing"])
def test_copy_file_range_to_another_filesystem_is_exdev(pair: tuple[BuiltImage, BuiltImage],
                                                        source: str, options: str,
                                                        mount: Mounter,
                                                        pagecache: Probe) -> None:
    """This is the VFS's own check (copy_file_range across superblocks without a
    ->copy_file_range of the filesystem's is EXDEV): it runs no EROFS code, and is kept as a
    statement of what users meet, not as a test of EROFS."""
    if options and not pagecache.vm.kernel.features["page_cache_share"]:
        pytest.skip(f"kernel {pagecache.vm.kernel.release} lacks page_cache_share")
    ma = mount(pair[0], options, source)
    answer = pagecache.try_read(ma.path(BIG), "copy_file_range")
    assert answer.errno == errno.EXDEV, (
        f"copy_file_range EROFS -> ext4 gave {answer.error or answer.value}")
