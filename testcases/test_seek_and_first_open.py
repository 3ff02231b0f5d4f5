"""What a file reports about itself is the same through a sharing mount, and twins opened
for the first time at the same moment end up in one cache.

SEEK_DATA/SEEK_HOLE on a sharing mount go through the real inode's llseek; the data of the
shared inode must not change what they report. The first open of a file creates (or finds)
the shared inode; N processes doing it at once race there.
"""

from __future__ import annotations

import errno
from collections.abc import Callable

import pytest

from conftest import BIG, SHARE, errno_name, twin_of
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


@pytest.mark.requires_kernel("page_cache_share")
@pytest.mark.known_bug(
    "erofs_ishare_fops has no .setlease and no .unlocked_ioctl: through a sharing mount "
    "F_SETLEASE is EINVAL and FS_IOC_GETFSLABEL ENOTTY, where a plain mount succeeds "
    "(reports/ishare-file-calls.yaml; found by this test on 7.2.13 and 7.3.4)",
    signature=r"through the sharing mount F_SETLEASE gave EINVAL and FS_IOC_GETFSLABEL "
              r"ENOTTY; through the plain mount success and success",
    releases=">=7.2", unless_patched="keep ioctls and leases for files that share")
def test_sharing_mount_keeps_the_leases_and_ioctls_of_a_plain_one(
        pair: tuple[BuiltImage, BuiltImage], source: str, mount: Mounter,
        pagecache: Probe) -> None:
    """Sharing changes where a file's pages live, not which calls the file answers: a read
    lease (F_SETLEASE, what Samba's oplocks and the NFS server's delegations take) and the
    filesystem's own ioctl (FS_IOC_GETFSLABEL) answer through a sharing mount as they do
    for the twin through a plain mount of the same source."""
    a, b = pair
    plain = pagecache.file_calls(mount(a, "", source).path(BIG))
    shared_mount = mount(b, SHARE, source)
    shared = pagecache.file_calls(shared_mount.path(twin_of(a, b, BIG)))
    # The sharing mount's file must really be served by sharing for the verdict to mean
    # anything: O_DIRECT is refused there (a block-backed plain mount opens it; a
    # file-backed one refuses it too, so there this proves less).
    assert shared.odirect_errno == errno.EINVAL, (
        f"O_DIRECT through the sharing mount gave errno {shared.odirect_errno}, not EINVAL: "
        f"is the file shared at all?")
    assert (shared.lease_errno, shared.fslabel_errno) == (plain.lease_errno,
                                                          plain.fslabel_errno), (
        f"through the sharing mount F_SETLEASE gave {errno_name(shared.lease_errno)} and "
        f"FS_IOC_GETFSLABEL {errno_name(shared.fslabel_errno)}; through the plain mount "
        f"{errno_name(plain.lease_errno)} and {errno_name(plain.fslabel_errno)}")


@pytest.mark.requires_kernel("erofs")
@pytest.mark.known_bug(
    "erofs_getattr reports the block device's direct I/O alignment for a file whose "
    "sharing mount refuses O_DIRECT (reports/ishare-file-calls.yaml; found by this test on "
    "7.2.13 and 7.3.4)",
    signature=r"statx reports a direct I/O offset alignment of \d+, and open\(O_DIRECT\) "
              r"gave EINVAL",
    releases=">=7.2", params=["loop-sharing", "block-sharing"],
    unless_patched="report no direct I/O alignment for files that share")
@pytest.mark.parametrize("options", ["", SHARE], ids=["plain", "sharing"])
def test_statx_reports_direct_io_exactly_where_o_direct_opens(
        pair: tuple[BuiltImage, BuiltImage], source: str, options: str, mount: Mounter,
        pagecache: Probe) -> None:
    """statx(2): STATX_DIOALIGN's alignments are 0 when the file has no direct I/O. A
    program that asks statx before it opens with O_DIRECT (as databases and QEMU do) must
    get the answer open() then gives."""
    calls = pagecache.file_calls(mount(pair[0], options, source).path(BIG))
    if not calls.dioalign_reported:
        pytest.skip("this kernel's EROFS does not report STATX_DIOALIGN")
    assert (calls.dio_offset_align > 0) == (calls.odirect_errno == 0), (
        f"statx reports a direct I/O offset alignment of {calls.dio_offset_align}, and "
        f"open(O_DIRECT) gave {errno_name(calls.odirect_errno)}")


@pytest.mark.requires_kernel("erofs", "core_dumps")
@pytest.mark.known_bug(
    "a core dump's NT_FILE note names a mapping by the VMA file's f_path (file_path() in "
    "fill_files_note), which for a sharing mount is the shared inode's internal dentry, '/', "
    "where /proc/<pid>/maps gives file_user_path(), the path opened "
    "(reports/core-dump-names-shared-mappings.yaml; found by this test on 7.2.13 and 7.3.4)",
    signature=r"the core dump's NT_FILE note names the mapping of \S+ '/'",
    releases=">=7.2", params=["*-sharing"],
    unless_patched="name mappings by the user path in core dumps")
@pytest.mark.parametrize("options", ["", SHARE], ids=["plain", "sharing"])
def test_a_mapping_is_named_by_the_path_it_was_opened_by(
        pair: tuple[BuiltImage, BuiltImage], source: str, options: str, mount: Mounter,
        pagecache: Probe) -> None:
    """A sharing mount maps the shared inode's file in place of the file opened; what names
    the mapping must still name the file: /proc/<pid>/maps (what profilers and lsof read)
    and a core dump's NT_FILE note (what gdb follows to load the files a core maps)."""
    path = mount(pair[0], options, source).path(BIG)
    names = pagecache.mapping_names(path)
    assert names.maps == path, f"/proc/self/maps names the mapping of {path} {names.maps!r}"
    assert names.core == path, (
        f"the core dump's NT_FILE note names the mapping of {path} {names.core!r}")


@pytest.mark.requires_kernel("erofs")
@pytest.mark.known_bug(
    "erofs_ishare_file_open refuses O_DIRECT, but fcntl(F_SETFL) sets it (FMODE_CAN_ODIRECT "
    "comes from the real inode's a_ops) and the reads then fill the shared page cache "
    "(reports/ishare-file-calls.yaml; found by this test on 7.2.13 and 7.3.4)",
    signature=r"open\(O_DIRECT\) gave EINVAL, fcntl\(F_SETFL, O_DIRECT\) success",
    releases=">=7.2", params=["loop-sharing", "block-sharing"],
    unless_patched="refuse O_DIRECT from fcntl(F_SETFL)")
@pytest.mark.parametrize("options", ["", SHARE], ids=["plain", "sharing"])
def test_o_direct_is_answered_alike_at_open_and_by_fcntl(
        pair: tuple[BuiltImage, BuiltImage], source: str, options: str, mount: Mounter,
        pagecache: Probe) -> None:
    """A file that refuses O_DIRECT at open(2) must refuse it from fcntl(F_SETFL) too, or a
    program gets by the second door the direct I/O the first one said the file has not
    (and its reads then go through the page cache all the same)."""
    calls = pagecache.file_calls(mount(pair[0], options, source).path(BIG))
    assert calls.setfl_odirect_errno == calls.odirect_errno, (
        f"open(O_DIRECT) gave {errno_name(calls.odirect_errno)}, fcntl(F_SETFL, O_DIRECT) "
        f"{errno_name(calls.setfl_odirect_errno)}")


@pytest.mark.requires_kernel("erofs", "cachestat")
@pytest.mark.known_bug(
    "cachestat(2) counts the pages of file->f_mapping, the real inode's mapping, which a "
    "sharing mount leaves empty: the pages are the shared inode's "
    "(reports/ishare-cachestat-empty.yaml; found by reading fs/erofs, 7.2.13 and 7.3.4)",
    signature=r"cachestat counts 0 cached pages of \S+, mincore [1-9]\d*/\d+ pages resident",
    releases=">=7.2", params=["*-sharing"])
@pytest.mark.parametrize("options", ["", SHARE], ids=["plain", "sharing"])
def test_cachestat_counts_the_pages_a_read_left_in_the_cache(
        pair: tuple[BuiltImage, BuiltImage], source: str, options: str, mount: Mounter,
        pagecache: Probe) -> None:
    """cachestat(2) (what page cache monitors and cachestat tools read) must count the
    pages mincore() shows resident after a whole read, through a sharing mount as through a
    plain one: the pages are the shared inode's, wherever the file opened keeps its own."""
    path = mount(pair[0], options, source).path(BIG)
    pagecache.read(path)
    resident = pagecache.residency(path)
    seen = pagecache.watchers(path)
    assert seen.cachestat_errno == 0, f"cachestat: {errno_name(seen.cachestat_errno)}"
    assert seen.cachestat_pages == resident.resident, (
        f"cachestat counts {seen.cachestat_pages} cached pages of {path}, mincore "
        f"{resident}")


@pytest.mark.requires_kernel("erofs", "uprobes")
@pytest.mark.known_bug(
    "a uprobe registers on the inode the path names (d_real_inode), the real inode; a "
    "sharing mount maps the shared inode's file, so uprobe_mmap() finds no probe on "
    "file_inode(vma->vm_file), and registration finds no mapping in the real inode's "
    "i_mmap (reports/ishare-uprobes-never-installed.yaml; found by reading fs/erofs, 7.2.13 "
    "and 7.3.4)",
    signature=r"a uprobe on \S+, enabled, then an executable mapping of it: not installed "
              r"\(the mapping shows 0x90\)",
    releases=">=7.2", params=["*-sharing"], unless_patched="let uprobes reach")
@pytest.mark.parametrize("options", ["", SHARE], ids=["plain", "sharing"])
def test_a_uprobe_on_a_file_reaches_its_executable_mappings(
        pair: tuple[BuiltImage, BuiltImage], source: str, options: str, mount: Mounter,
        pagecache: Probe) -> None:
    """A uprobe registered on a file (perf probe, bpftrace, systemtap) is written into every
    executable mapping of the file as it is made. A sharing mount maps the shared inode's
    file in place of the file opened; the probe on the file opened must reach it all the
    same, or nothing run from a sharing mount can be traced."""
    path = mount(pair[0], options, source).path(BIG)
    seen = pagecache.watchers(path)
    assert seen.uprobe == "installed", (
        f"a uprobe on {path}, enabled, then an executable mapping of it: {seen.uprobe}")


OWNED, OWNER = "owned", 1000  # in `sizes`: 40 KiB, uid 1000, mode 0600


@pytest.mark.requires_kernel("erofs")
@pytest.mark.known_bug(
    "mincore(2) shows a mapping's pages to the file's owner and to users who may write it, "
    "and says every page is resident to others (can_do_mincore: file_owner_or_capable("
    "vma->vm_file)); a sharing mount's VMA holds the shared inode's backing file, owned by "
    "root with mode 0444, so the file's own owner is told every page is resident (and, "
    "by the same rule in can_do_file_pageout, read not measured, MADV_PAGEOUT skips them) "
    "(reports/ishare-mincore-owner-sees-all-resident.yaml; found by reading mm/ beside "
    "fs/erofs, 7.2.13 and 7.3.4)",
    signature=r"its owner \(uid 1000\) is shown (\d+)/\1 pages resident",
    releases=">=7.2", params=["*-sharing"],
    unless_patched="check the owner of the user's file in mincore")
@pytest.mark.parametrize("options", ["", SHARE], ids=["plain", "sharing"])
def test_mincore_shows_a_files_owner_the_pages_that_are_resident(
        pair: tuple[BuiltImage, BuiltImage], source: str, options: str, mount: Mounter,
        pagecache: Probe) -> None:
    """The owner of a file sees its residency through mincore(2) as root does (the kernel
    hides it only from users who neither own nor may write the file), before a read and
    after it: through a sharing mount as through a plain one."""
    path = mount(pair[0], options, source).path(OWNED)
    with pagecache.batch() as batch:  # one guest round trip
        batch.drop_caches()
        cold = batch.residency(path), batch.residency_as(path, OWNER)
        read = batch.read_as(path, OWNER, may_fail=True)
        warm = batch.residency(path), batch.residency_as(path, OWNER)
    for when, (root, owner) in (("before a read", (cold[0].value, cold[1].value)),
                                ("after the owner read it", (warm[0].value, warm[1].value))):
        assert owner.resident == root.resident, (
            f"{when}, root sees {root} of {path}, its owner (uid {OWNER}) is shown {owner}")
        if when == "before a read":
            assert root.resident == 0, f"{path} is cold after drop_caches, yet {root}"
            assert not read.failed, f"its owner could not read {path}: {read.error}"
