"""An image that starts inside its file or device (fsoffset=), with and without sharing."""

from __future__ import annotations

import pytest

from conftest import BIG, FSOFFSET, SHARE, read_then_mincore, twin_of
from harness.erofs.images import BuiltImage
from harness.guest.mounts import Mounter
from harness.guest.probe import Probe

# fsoffset= arrived with "erofs: add 'fsoffset' mount option" (c36ec00d7f67, Linux 6.16).
pytestmark = pytest.mark.requires_kernel(">=6.16", reason="fsoffset= is new in 6.16")


@pytest.mark.requires_kernel("erofs")
def test_image_at_an_offset_reads_back_with_fsoffset(offset_sizes: BuiltImage, source: str,
                                                     mount: Mounter, pagecache: Probe) -> None:
    m = mount(offset_sizes, f"fsoffset={FSOFFSET}", source)
    files = offset_sizes.files()
    with pagecache.batch() as batch:
        reads = [batch.read(m.path(f["path"])) for f in files]
    wrong = [f["path"] for f, got in zip(files, reads, strict=True)
             if got.value.sha256 != f["sha256"]]
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
