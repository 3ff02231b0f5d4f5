"""Images where only some files carry a fingerprint (`sizes-partialfp`: page-plus-1,
dir/deeper/one-mib and four-mib have none; built by stripping their digest entries, see
harness/erofs_xattrs.py). Sharing is per inode: the image mounts with sharing on, the
fingerprinted files share with their twins in a fully fingerprinted image, the others
stay private, and every file reads its own bytes."""

from __future__ import annotations

import pytest

from conftest import SHARE, read_and_look, read_then_mincore
from harness.erofs.images import BuiltImage
from harness.guest.mounts import Mounter
from harness.guest.probe import Probe

pytestmark = pytest.mark.requires_kernel("page_cache_share")

FINGERPRINTED = ["page", "dir/sixty-four-k", "sparse"]
BARE = ["page-plus-1", "dir/deeper/one-mib", "four-mib"]


@pytest.fixture
def partial(erofs_image) -> tuple[BuiltImage, BuiltImage]:
    full, part = erofs_image("sizes"), erofs_image("sizes-partialfp")
    assert [f["path"] for f in part.files() if not f["fingerprinted"]] == BARE
    return full, part


def test_partially_fingerprinted_image_mounts_with_sharing_on(partial, source: str,
                                                               mount: Mounter) -> None:
    m = mount(partial[1], SHARE, source)
    assert m.result.says("EXPERIMENTAL EROFS page cache share support in use"), m.result.kmsg
    assert not m.result.says("Turning off inode_share"), m.result.kmsg


@pytest.mark.parametrize("path", FINGERPRINTED)
def test_fingerprinted_files_of_a_partial_image_share(partial, source: str, path: str,
                                                      mount: Mounter, pagecache: Probe) -> None:
    full, part = partial
    mf, mp = mount(full, SHARE, source), mount(part, SHARE, source)
    other = read_then_mincore(pagecache, mf.path(path), mp.path(path))
    assert other.resident == other.pages > 0, (
        f"{path} has a fingerprint in both images yet is not shared: {other}")


@pytest.mark.parametrize("path", BARE)
@pytest.mark.parametrize("first", ["full", "partial"])
def test_files_without_fingerprint_do_not_share_and_read_their_bytes(
        partial, source: str, path: str, first: str, mount: Mounter, pagecache: Probe) -> None:
    full, part = partial
    mf, mp = mount(full, SHARE, source), mount(part, SHARE, source)
    paths = {"full": mf.path(path), "partial": mp.path(path)}
    second = "partial" if first == "full" else "full"
    read, _, [resident] = read_and_look(pagecache, paths[first], paths[second])
    assert read.sha256 == full.file(path)["sha256"]
    assert resident.resident == 0, (
        f"{path} has no fingerprint in {part.spec.name}, yet reading it through the {first} "
        f"image made it resident through the other: {resident}")
    again = pagecache.read(paths[second])
    assert again.sha256 == full.file(path)["sha256"]
