"""A shared page cache whose pages are collapsed into transparent huge pages stays one cache.

The shared inode's mapping allows large folios, and its files are mapped at huge-page
aligned addresses, so khugepaged (or MADV_COLLAPSE) may replace its small pages with huge
ones while mounts are live: it zaps every mapping of the old pages and puts new folios in
the cache. Collapsing a file that is not all resident also reads the missing pages, through
the shared inode's readahead, from a kernel thread's point of view rather than a reader's.
After either, every twin must still read its bytes from the one (now huge) cache.
"""

from __future__ import annotations

import errno

import pytest

from conftest import BIG, mount_twins
from harness.erofs.images import BuiltImage
from harness.guest.mounts import Mounter
from harness.guest.probe import Probe, ReadResult


@pytest.mark.requires_kernel("page_cache_share")
@pytest.mark.known_bug(
    "on 7.2 a sharing mount's files cannot be collapsed into huge pages: MADV_COLLAPSE is "
    "EINVAL over them and works on a plain mount of the same image (the shared inode's "
    "mapping has no large folios there; reports/huge-pages-lost-with-sharing.yaml)",
    signature=r"MADV_COLLAPSE is EINVAL over the sharing mount's .* but works on a plain "
              r"mount",
    releases="==7.2")
@pytest.mark.parametrize("start", ["resident", "cold"])
def test_huge_page_collapse_keeps_twins_on_one_cache(
        pair: tuple[BuiltImage, BuiltImage], source: str, start: str, mount: Mounter,
        pagecache: Probe) -> None:
    a, b = pair
    ma, _, pa, pb = mount_twins(mount, a, b, source)
    want = ReadResult(a.file(BIG)["size"], a.file(BIG)["sha256"])
    cold = [pagecache.residency(path) for path in (pa, pb)]
    assert not any(view.resident for view in cold), f"twins resident before any read: {cold}"

    # EAGAIN is the kernel's "try again" (a freshly read page not yet on the LRU): asked
    # again as the man page says; any other errno, or EAGAIN that persists, fails.
    err = pagecache.collapse_huge(pa, touch=start == "resident", eagain_retries=20)
    if err == errno.EINVAL:
        # EINVAL is the kernel saying this mapping cannot hold huge pages at all. Whether
        # that is sharing's doing shows on a plain mount of the same image.
        plain = mount(a, "", source)
        plain_err = pagecache.collapse_huge(plain.path(BIG), touch=True, eagain_retries=20)
        if plain_err == errno.EINVAL:
            pytest.skip("this kernel collapses no EROFS file into huge pages (MADV_COLLAPSE "
                        "is EINVAL on a plain mount too): nothing to keep in one cache")
        pytest.fail(f"MADV_COLLAPSE is EINVAL over the sharing mount's {pa} ({start}) but "
                    f"{'works' if plain_err == 0 else f'errno {plain_err}'} on a plain "
                    f"mount of the same image")
    assert err == 0, f"MADV_COLLAPSE over {pa} ({start}) failed with errno {err}"

    frames = pagecache.pfns(pa, pb)
    fa, fb = frames[pa], frames[pb]
    assert all(fa.huge), (
        f"after a successful collapse only {sum(fa.huge)}/{len(fa.huge)} pages of {pa} are "
        f"in huge pages")
    same = sum(x == y for x, y in zip(fa.pfns, fb.pfns, strict=True))
    assert all(fa.pfns) and same == len(fa.pfns), (
        f"after the collapse only {same}/{len(fa.pfns)} pages of the twins {pa} and {pb} "
        f"share a frame")
    got = {path: pagecache.read(path) for path in (pa, pb)}
    assert all(r == want for r in got.values()), f"bytes after the collapse: {got}, want {want}"

    # The huge pages belong to the shared cache, not to the mount that collapsed them: once
    # it is gone they are still the other twin's cache, looked at before anything reads it
    # again (a read would fill a cache that had been dropped, and hide it).
    gone = mount.umount(ma)
    assert gone.ok, f"umount {ma.target}: {gone.errname} {gone.kmsg}"
    resident = pagecache.residency(pb).resident
    assert resident == len(fb.pfns), (
        f"{pb}: {resident}/{len(fb.pfns)} pages left in the cache once the collapsing mount "
        f"went")
    kept = pagecache.pfns(pb)[pb]
    moved = sum(x != y for x, y in zip(kept.pfns, fb.pfns, strict=True))
    assert moved == 0 and all(kept.huge), (
        f"{pb}: {moved}/{len(fb.pfns)} pages moved to other frames and "
        f"{len(kept.huge) - sum(kept.huge)} are no longer huge once the collapsing mount went")
    assert pagecache.read(pb) == want, f"{pb} after the collapsing mount went"
