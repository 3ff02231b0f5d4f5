"""Fingerprints are trusted: a file whose fingerprint claims other content.

Measured on Debian 7.3.4 with a forged image (one page of `renamed` changed, its fingerprint
left as it was): within one domain, whichever of the two files is read first fills the
shared cache, and the other mount then serves those bytes. The domain is the trust
boundary; these tests record both sides of it. A fingerprint copied onto a file of another
size (harness/erofs_xattrs.py) is not enough: the files stay apart.
"""

from __future__ import annotations

import pytest

from conftest import OTHER_DOMAIN, SHARE, check_resized_forgery_kept_apart
from harness.erofs.images import BuiltImage
from harness.guest.mounts import Mounter
from harness.guest.probe import Probe

pytestmark = pytest.mark.requires_kernel("page_cache_share")


@pytest.mark.parametrize("first", ["genuine", "forged"])
def test_forged_fingerprint_in_one_domain_serves_the_first_readers_bytes(
        erofs_image, forged_renamed: BuiltImage, source: str, first: str, mount: Mounter,
        pagecache: Probe) -> None:
    genuine = erofs_image("sizes")
    mg, mf = mount(genuine, SHARE, source), mount(forged_renamed, SHARE, source)
    paths = {"genuine": mg.path("page"), "forged": mf.path("x/d")}
    bytes_of = {"genuine": genuine.file("page")["sha256"],
                "forged": forged_renamed.manifest["forged"]["sha256"]}
    second = "forged" if first == "genuine" else "genuine"
    got_first, got_second = pagecache.read(paths[first]), pagecache.read(paths[second])
    assert got_first.sha256 == bytes_of[first], f"the {first} file read wrong on its own"
    assert got_second.sha256 == bytes_of[first], (
        f"the {second} file served its own bytes: the shared cache was not keyed by the "
        f"fingerprint alone (behaviour changed from 7.3.4)")


@pytest.mark.parametrize("first", ["genuine", "forged"])
def test_forged_fingerprint_in_another_domain_cannot_poison(
        erofs_image, forged_renamed: BuiltImage, source: str, first: str, mount: Mounter,
        pagecache: Probe) -> None:
    genuine = erofs_image("sizes")
    mg, mf = mount(genuine, SHARE, source), mount(forged_renamed, OTHER_DOMAIN, source)
    paths = {"genuine": mg.path("page"), "forged": mf.path("x/d")}
    own = {"genuine": genuine.file("page")["sha256"],
           "forged": forged_renamed.manifest["forged"]["sha256"]}
    order = ["genuine", "forged"] if first == "genuine" else ["forged", "genuine"]
    got = {name: pagecache.read(paths[name]).sha256 for name in order}
    # Each file its own bytes, compared file by file: two files that swapped bytes fail.
    assert got == own, (
        f"a file in another domain was served bytes of its forged (or genuine) twin: read "
        f"{got}, own {own}")




@pytest.mark.parametrize("first", ["genuine", "forged"])
def test_forged_fingerprint_of_another_size_is_not_shared(
        erofs_image, source: str, first: str, mount: Mounter, pagecache: Probe) -> None:
    """Measured on 7.3.4: a fingerprint copied onto a file of another size (4095 against
    4096 bytes) does not join the genuine file's shared inode: the kernel warns of the
    i_size mismatch, and each file reads its own bytes from its own page frame."""
    check_resized_forgery_kept_apart(erofs_image, mount, pagecache, source, first)
