"""A device that fails under a mount, while twins on healthy devices share its page cache.

Each mount under test is made from a device mapper device over its loop or virtio device;
swapping its table for one that fails every I/O turns the device off under the mount, and
swapping it back recovers it (Mounter.failing, fail, recover). The twin images of `sizes`
(`renamed`: the same contents under other names) sit on healthy devices in the same domain.

What must hold, sharing or not: a read through the failing mount returns the file's bytes
or fails with EIO, nothing else; a page it had cached reads right without the device; once
the device is back and the caches are dropped, every file reads right; unmounting the
failing mount works, and a healthy twin mounted afterwards reads right. What a healthy
twin's read returns while its twin's device fails is measured (``healthy_twin``), not
judged: no document promises either answer.
"""

from __future__ import annotations

import errno
from collections.abc import Callable

import pytest

from harness.erofs.images import BuiltImage
from harness.guest.mounts import Mount, Mounter
from harness.guest.probe import Probe
from testcases.conftest import BIG, SHARE, SIZES_FILES, LeakWatch, twin_of

Images = Callable[[str], BuiltImage]

pytestmark = [pytest.mark.requires_kernel("erofs", "CONFIG_BLK_DEV_DM")]

DEVICES = ["loop", "block"]
LAYOUTS = ["", "-lz4"]  # uncompressed (iomap reads) and lz4 (EROFS's own decompression)


def every_failing_mount(test: Callable[..., None]) -> Callable[..., None]:
    """Each device, private and sharing, uncompressed and lz4 (ids device-options-layout)."""
    test = pytest.mark.parametrize("device", DEVICES)(test)
    test = pytest.mark.parametrize("options", ["", SHARE], ids=["private", "sharing"])(test)
    return pytest.mark.parametrize("layout", LAYOUTS, ids=["plain", "lz4"])(test)


def _pair(erofs_image: Images, layout: str) -> tuple[BuiltImage, BuiltImage]:
    return erofs_image(f"sizes{layout}"), erofs_image(f"renamed{layout}")


def _read_all(pagecache: Probe, m: Mount, paths: list[str]) -> dict[str, str]:
    """Each file read whole: "right", "EIO", or what else happened (wrong bytes, another
    error), in one round trip."""
    with pagecache.batch() as batch:
        reads = [(p, batch.read(m.path(p), may_fail=True)) for p in paths]
    out = {}
    for path, got in reads:
        if got.failed:
            out[path] = "EIO" if got.errno == errno.EIO else f"error {got.error}"
        else:
            want = m.image.file(path)["sha256"]
            out[path] = "right" if got.value.sha256 == want else \
                f"wrong bytes ({got.value.bytes} bytes {got.value.sha256[:16]}, want {want[:16]})"
    return out


def _not_eio_or_right(seen: dict[str, str]) -> dict[str, str]:
    return {path: what for path, what in seen.items() if what not in ("right", "EIO")}


@pytest.mark.parametrize("metadata", ["cold", "inodes-cached", "looked-up"])
@every_failing_mount
def test_a_failing_device_gives_eio_or_the_right_bytes_and_reads_right_once_back(
        erofs_image: Images, mount: Mounter, pagecache: Probe, leaks: LeakWatch, device: str,
        options: str, layout: str, metadata: str) -> None:
    a, b = _pair(erofs_image, layout)
    failing = mount.failing(a, options, device)
    healthy = mount(b, options, device)
    if metadata == "cold":
        pagecache.drop_caches()  # lookups too need the device: directories, inodes, xattrs
    else:
        with pagecache.batch() as batch:
            looked = batch.lookup([failing.path(p) for p in SIZES_FILES])
        assert not looked.value, f"lookups with the device working: {looked.value}"
        if metadata == "inodes-cached":
            # The inodes stay, the blocks that hold them (and tail-packed data, compression
            # indexes) go, as under memory pressure: the reads' maps need the device.
            pagecache.drop_caches(level=1)
    mount.fail(failing)
    seen = _read_all(pagecache, failing, SIZES_FILES)
    assert not _not_eio_or_right(seen), f"reads while the device fails: {seen}"
    # The device must have mattered: a cold read of a multi-page file needs it.
    assert seen[BIG] == "EIO", f"{BIG} read {seen[BIG]} from a device that fails every I/O"
    twins = [twin_of(a, b, p) for p in SIZES_FILES]
    assert _read_all(pagecache, healthy, twins) == dict.fromkeys(twins, "right")
    mount.recover(failing)
    pagecache.drop_caches()
    assert _read_all(pagecache, failing, SIZES_FILES) == dict.fromkeys(SIZES_FILES, "right")
    assert _read_all(pagecache, healthy, twins) == dict.fromkeys(twins, "right")
    leaks.assert_erofs_leaked_nothing()  # the failed reads' error paths freed what they took


@every_failing_mount
def test_pages_cached_before_the_device_fails_read_right_without_it(
        erofs_image: Images, mount: Mounter, pagecache: Probe, device: str, options: str,
        layout: str) -> None:
    a, _ = _pair(erofs_image, layout)
    failing = mount.failing(a, options, device)
    assert _read_all(pagecache, failing, SIZES_FILES) == dict.fromkeys(SIZES_FILES, "right")
    mount.fail(failing)
    assert _read_all(pagecache, failing, SIZES_FILES) == dict.fromkeys(SIZES_FILES, "right")


HELD_MS = 500  # how long the I/O of a readahead stays in flight above the failing device


@every_failing_mount
def test_a_readahead_in_flight_when_the_device_fails_ends_in_eio_never_wrong_bytes(
        erofs_image: Images, mount: Mounter, pagecache: Probe, leaks: LeakWatch,
        measure: Callable[..., None], device: str, options: str, layout: str) -> None:
    """A readahead (WILLNEED) is started while the device works, and its reads, held in
    flight 500 ms by dm-delay above the failing device, reach it only once it fails: their
    completions run the error paths (iomap's for uncompressed files, EROFS's decompression
    queue for lz4), with the file's folios locked under a reader that waits for them. That
    reader must get EIO, never bytes the device did not give; the healthy twin (the shared
    cache with sharing) its file's bytes or EIO; and once the device is back, every file
    reads right through both mounts."""
    a, b = _pair(erofs_image, layout)
    failing = mount.failing(a, options, device, stacked=True)
    healthy = mount(b, options, device)
    twin = twin_of(a, b, BIG)
    # The failing mount looks up last: with sharing, the shared inode reads through the
    # newest of its inodes (7.3.4), so the readahead goes to the failing device.
    with pagecache.batch() as batch:
        looked = batch.lookup([healthy.path(twin), failing.path(BIG)])
    assert not looked.value, f"lookups with the devices working: {looked.value}"
    mount.hold_io(failing, HELD_MS)
    with pagecache.batch() as batch:
        batch.hint(failing.path(BIG), "willneed", settle=0)
    mount.fail(failing)
    own = _read_all(pagecache, failing, [BIG])[BIG]
    then = _read_all(pagecache, healthy, [twin])[twin]
    measure(failing_mount=own, healthy_twin=then)
    assert own == "EIO", (f"{BIG} read {own} through a mount whose device failed under its "
                          f"readahead: the readahead was not in flight, or its failure lost")
    assert then in ("right", "EIO"), f"the healthy twin read {then}"
    mount.hold_io(failing, 0)
    mount.recover(failing)
    pagecache.drop_caches()
    assert _read_all(pagecache, failing, SIZES_FILES) == dict.fromkeys(SIZES_FILES, "right")
    twins = [twin_of(a, b, p) for p in SIZES_FILES]
    assert _read_all(pagecache, healthy, twins) == dict.fromkeys(twins, "right")
    leaks.assert_erofs_leaked_nothing()


@pytest.mark.requires_kernel("page_cache_share")
@pytest.mark.parametrize("last", ["failing", "healthy"], ids=["failing-joins-last",
                                                               "healthy-joins-last"])
@pytest.mark.parametrize("layout", LAYOUTS, ids=["plain", "lz4"])
@pytest.mark.parametrize("device", DEVICES)
def test_what_a_healthy_twin_reads_while_its_twins_device_fails(
        erofs_image: Images, mount: Mounter, pagecache: Probe,
        measure: Callable[..., None], device: str, layout: str, last: str) -> None:
    """The fact this measures (``healthy_twin``): whether one device's failure reaches a
    mount whose device is healthy, through the page cache they share. Both twins are
    looked up (their inodes join the shared inode, ``last`` joins last) while both devices
    work; then one fails and the healthy twin reads first, from a cold cache. Either
    answer, EIO or the bytes, passes; wrong bytes never do, nor does a failing mount that
    reads its file without an error while no page of it was cached."""
    a, b = _pair(erofs_image, layout)
    failing = mount.failing(a, SHARE, device)
    healthy = mount(b, SHARE, device)
    twin = twin_of(a, b, BIG)
    order = [healthy.path(twin), failing.path(BIG)]
    with pagecache.batch() as batch:
        looked = batch.lookup(order if last == "failing" else order[::-1])
    assert not looked.value, f"lookups with both devices working: {looked.value}"
    mount.fail(failing)
    then = _read_all(pagecache, healthy, [twin])[twin]
    own = _read_all(pagecache, failing, [BIG])[BIG]
    measure(healthy_twin=then, failing_mount_after=own)
    assert then in ("right", "EIO") and own in ("right", "EIO"), (then, own)
    if then != "right":
        assert own == "EIO", f"the failing mount read {own} where its healthy twin got {then}"


@every_failing_mount
def test_a_mount_unmounts_while_its_device_fails_and_a_later_twin_reads_right(
        erofs_image: Images, mount: Mounter, pagecache: Probe, leaks: LeakWatch, device: str,
        options: str, layout: str) -> None:
    """Pages the failing device left behind (failed, or wrongly taken for read) must not
    reach a mount that comes after it: with sharing, the shared inode outlives the failing
    mount while its healthy twin holds it, so a page cached as uptodate with the wrong
    bytes would be served to the twin and to the image mounted again."""
    a, b = _pair(erofs_image, layout)
    failing = mount.failing(a, options, device)
    healthy = mount(b, options, device)
    twins = [twin_of(a, b, p) for p in SIZES_FILES]
    # The twin joins first, the failing mount last: the shared inode reads through the
    # failing mount's inode, as it reads through the newest (7.3.4).
    with pagecache.batch() as batch:
        looked = batch.lookup([healthy.path(p) for p in twins]
                              + [failing.path(p) for p in SIZES_FILES])
    assert not looked.value, f"lookups with the devices working: {looked.value}"
    # The inodes stay, their blocks go: the reads' maps (tail-packed data, compression
    # indexes) need the failing device.
    pagecache.drop_caches(level=1)
    mount.fail(failing)
    _read_all(pagecache, failing, SIZES_FILES)  # leaves failed pages behind, if any
    gone = mount.umount(failing)
    assert gone.ok, f"umount while the device fails: {gone.errname} {gone.kmsg}"
    later = mount(a, options, device)  # the same image again, on a healthy device
    assert _read_all(pagecache, later, SIZES_FILES) == dict.fromkeys(SIZES_FILES, "right")
    assert _read_all(pagecache, healthy, twins) == dict.fromkeys(twins, "right")
    leaks.assert_erofs_leaked_nothing()  # nor did the unmount while failing leave any
