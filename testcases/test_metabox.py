"""Metadata-compressed images (mkfs.erofs -m: the inodes in the metabox inode) read every
xattr of every file back, shared ones included, on every source, plain and sharing; and their
files, whose fingerprints mkfs also stores as shared xattrs, share with their twins in an
image built without -m.

The lookup of an xattr reads the inode's own (inline) xattrs through the metabox's page
cache and then the shared ones through the device's, with one buffer: what reads the second
must not take the page it still holds of the first (reports/metabox-shared-xattr-stale-page.yaml).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from conftest import SHARE
from harness.erofs.images import BuiltImage
from harness.guest.mounts import Mounter
from harness.guest.probe import Probe

Images = Callable[[str], BuiltImage]
METABOX_STALE_PAGE = dict(
    reason="an xattr lookup reads the shared xattrs through the page it still holds of the "
           "metabox when the two page numbers agree (reports/metabox-shared-xattr-stale-page"
           ".yaml): xattrs of files whose inodes sit in the metabox go missing or wrong",
    signature=r"shared-xattrs-metabox: \d+ of 160 files read other xattrs",
    releases=">=6.17", unless_patched="take no page of another mapping for a metadata buffer",
    params=["*-shared-xattrs-metabox"])


def _xattrs_read_wrong(image: BuiltImage, root: str, pagecache: Probe) -> list[str]:
    """Each file whose user xattrs (listxattr, then getxattr of each) differ from its tree's."""
    walk = pagecache.walk(root, data=False)
    wrong = []
    for spec in image.spec.files:
        entry = walk.entries.get(spec.path)
        if entry is None or entry.error is not None:
            wrong.append(f"{spec.path}: {entry.error if entry else 'not listed'}")
            continue
        want = {name: value.encode().hex() for name, value in spec.xattrs}
        got = {name: value for name, value in entry.xattrs.items() if name.startswith("user.")}
        if got != want:
            missing = sorted(set(want) - set(got))
            other = sorted(n for n in set(want) & set(got) if want[n] != got[n])
            extra = sorted(set(got) - set(want))
            wrong.append(f"{spec.path}: missing {missing}, other values {other}, "
                         f"extra {extra}")
    return wrong


@pytest.mark.requires_kernel("erofs")
@pytest.mark.known_bug(**METABOX_STALE_PAGE)
@pytest.mark.parametrize("name", ["shared-xattrs", "shared-xattrs-metabox"])
@pytest.mark.parametrize("options", ["", SHARE], ids=["plain", "sharing"])
def test_every_xattr_of_a_metadata_compressed_image_reads_back(
        erofs_image: Images, source: str, name: str, options: str, mount: Mounter,
        pagecache: Probe) -> None:
    if options and not pagecache.vm.kernel.features["page_cache_share"]:
        pytest.skip(f"kernel {pagecache.vm.kernel.release} lacks page_cache_share")
    image = erofs_image(name)
    m = mount(image, options, source)
    wrong = _xattrs_read_wrong(image, m.target, pagecache)
    assert not wrong, (f"{name}: {len(wrong)} of {len(image.spec.files)} files read other "
                       f"xattrs than the tree's:\n" + "\n".join(wrong[:20]))


@pytest.mark.requires_kernel("page_cache_share")
def test_files_of_a_metadata_compressed_image_share_with_their_twins(
        erofs_image: Images, source: str, mount: Mounter, pagecache: Probe) -> None:
    """Their fingerprints are shared xattrs too (80 files of one content each): read wrong,
    a file would keep a cache of its own, or join another content's."""
    a, b = erofs_image("shared-xattrs-metabox"), erofs_image("shared-xattrs")
    ma, mb = mount(a, SHARE, source), mount(b, SHARE, source)
    paths = [f.path for f in a.spec.files]
    frames = pagecache.pfns(*[ma.path(p) for p in paths], *[mb.path(p) for p in paths])
    apart = [p for p in paths if frames[ma.path(p)].pfns != frames[mb.path(p)].pfns]
    assert not apart, (f"{len(apart)} of {len(paths)} files of the -m image keep page frames "
                       f"of their own beside their twins: {apart[:10]}")
