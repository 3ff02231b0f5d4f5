"""Images whose data lives on other devices, named at mount time with ``-o device=``, built
two ways: ``mkfs.erofs --blobdev`` (one blob of chunks), and metadata-only images rebuilt
from several chunked images, which become their devices (``merged-sizes-twins`` over
sizes and twins; ``merged-twins-renamed`` over twins and renamed: the twins sit on device 2
of one and device 1 of the other). On every source: every file right through every access
path, and twins share across the two compositions and with the blob image."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from conftest import SHARE, join_options, read_and_look, twin_of
from harness.erofs.images import BuiltImage
from harness.guest.mounts import Mounter
from harness.guest.probe import Probe

METHODS = ["read", "pread", "mmap_shared", "mmap_private", "splice", "sendfile", "io_uring"]
MERGED = ("merged-sizes-twins", "merged-twins-renamed")


@pytest.mark.parametrize("name", [*MERGED, "sizes-blob"])
@pytest.mark.parametrize("options", ["", pytest.param(SHARE, marks=pytest.mark.requires_kernel(
    "page_cache_share"))], ids=["plain", "sharing"])
def test_every_file_of_a_multi_device_image_reads_right(erofs_image: Callable[[str], BuiltImage],
                                                        name: str, options: str, source: str,
                                                        mount: Mounter, pagecache: Probe) -> None:
    image = erofs_image(name)
    assert image.extra_devices(), f"{name} has no extra devices"
    m = mount(image, options, source)
    assert m.options.count("device=") == len(image.extra_devices()), m.options
    files = image.files()
    with pagecache.batch() as batch:
        reads = [(f, method, batch.read(m.path(f["path"]), method, may_fail=True))
                 for f in files for method in METHODS]
    wrong = [f"{f['path']} ({method}): {got.error or got.value.sha256[:12]}"
             for f, method, got in reads
             if got.failed or got.value.sha256 != f["sha256"]]
    assert not wrong, f"{name} on {source} with -o {m.options}: {wrong}"


@pytest.mark.requires_kernel("page_cache_share")
@pytest.mark.parametrize(("first", "second", "path"), [
    ("merged-sizes-twins", "merged-twins-renamed", "four-mib"),  # device 1 -> device 2
    ("merged-sizes-twins", "merged-twins-renamed", "first"),  # device 2 -> device 1
    ("merged-twins-renamed", "sizes-blob", "h"),  # a merged device -> a blob
    ("sizes-blob", "merged-sizes-twins", "dir/deeper/one-mib"),
], ids=["dev1-to-dev2", "dev2-to-dev1", "merged-to-blob", "blob-to-merged"])
def test_twins_share_across_device_compositions(erofs_image: Callable[[str], BuiltImage],
                                                first: str, second: str, path: str,
                                                source: str, mount: Mounter,
                                                pagecache: Probe) -> None:
    a, b = erofs_image(first), erofs_image(second)
    ma, mb = mount(a, SHARE, source), mount(b, SHARE, source)
    read, _, [twin] = read_and_look(pagecache, ma.path(path), mb.path(twin_of(a, b, path)))
    assert read.sha256 == a.file(path)["sha256"]
    assert twin.resident == twin.pages > 0, (
        f"{first}:{path} and its twin in {second} do not share: {twin}")


@pytest.mark.parametrize("change", ["swapped", "one-left-out"])
@pytest.mark.parametrize("options", ["", pytest.param(SHARE, marks=pytest.mark.requires_kernel(
    "page_cache_share"))], ids=["plain", "sharing"])
def test_a_remount_cannot_rewire_the_devices(erofs_image: Callable[[str], BuiltImage],
                                             options: str, change: str, source: str,
                                             mount: Mounter, pagecache: Probe) -> None:
    """Which device holds which chunks is fixed when the mount opens them. A remount naming
    the devices in the other order, or one fewer, may be refused or ignored; every file,
    read again from the devices after the caches are dropped, must read its bytes."""
    image = erofs_image("merged-sizes-twins")
    m = mount(image, options, source)
    items = m.options.split(",")
    devices = [i for i in items if i.startswith("device=")]
    assert len(devices) == 2, m.options
    rest = [i for i in items if not i.startswith("device=")]
    asked = rest + (devices[::-1] if change == "swapped" else devices[:1])
    answer = pagecache.remount(m.target, join_options(*asked))
    pagecache.drop_caches()
    files = image.files()
    with pagecache.batch() as batch:
        reads = [batch.read(m.path(f["path"]), may_fail=True) for f in files]
    wrong = {f["path"]: got.error or got.value.sha256[:12]
             for f, got in zip(files, reads, strict=True)
             if got.failed or got.value.sha256 != f["sha256"]}
    assert not wrong, (f"after a remount with the devices {change} "
                       f"({'accepted' if answer.ok else answer.errname}): {wrong}")
