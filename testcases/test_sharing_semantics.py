"""Where page cache is shared and where it must not be.

Reading a file through one mount brings its pages into the page cache; a second mount of
an image with the same content then sees those pages resident through its own mapping
(mincore) only when both mounts use inode_share with the same domain_id.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from conftest import (
    BIG,
    OTHER_DOMAIN,
    SHARE,
    SIZES_FILES,
    mount_twins,
    read_and_look,
    read_then_mincore,
    twin_of,
)
from harness.erofs.images import BuiltImage
from harness.guest.mounts import Mounter
from harness.guest.probe import Pending, Probe, Residency

Measure = Callable[..., None]

pytestmark = pytest.mark.requires_kernel("page_cache_share")


@pytest.mark.parametrize("path", SIZES_FILES)
@pytest.mark.parametrize("direction", ["a-then-b", "b-then-a"])
def test_same_domain_shares_page_cache(pair: tuple[BuiltImage, BuiltImage], source: str,
                                       path: str, direction: str, mount: Mounter,
                                       pagecache: Probe, measure: Measure) -> None:
    a, b = pair
    ma, mb = mount(a, SHARE, source), mount(b, SHARE, source)
    pa, pb = ma.path(path), mb.path(twin_of(a, b, path))
    first, second = (pa, pb) if direction == "a-then-b" else (pb, pa)
    read, mine, [after] = read_and_look(pagecache, first, second)
    measure(pages=mine.pages, resident_reader=mine.resident, resident_other=after.resident)
    assert read.sha256 == a.file(path)["sha256"], f"wrong bytes read from {first}"
    # Equal is not enough (two views of one shared inode are equal by construction):
    # every page the read covered must be there.
    assert after.resident == after.pages == mine.pages, (
        f"{second} shows {after} after reading {first} ({mine} there): not shared")


@pytest.mark.parametrize("path", ["page", "dir/deeper/one-mib", BIG])
def test_different_domains_do_not_share(pair: tuple[BuiltImage, BuiltImage], source: str,
                                        path: str, mount: Mounter, pagecache: Probe,
                                        measure: Measure) -> None:
    a, b = pair
    ma, mb = mount(a, SHARE, source), mount(b, OTHER_DOMAIN, source)
    _, first, [other] = read_and_look(pagecache, ma.path(path), mb.path(twin_of(a, b, path)))
    measure(pages=first.pages, resident_reader=first.resident, resident_other=other.resident)
    assert other.resident == 0, f"domain d2 sees {other} read in domain d1"


@pytest.mark.parametrize("path", ["page", BIG])
@pytest.mark.parametrize("options_b", ["", "domain_id=d1"], ids=["no-options", "domain-only"])
@pytest.mark.parametrize("options_a", [SHARE, ""], ids=["a-shares", "a-plain"])
def test_no_sharing_unless_both_mounts_share(pair: tuple[BuiltImage, BuiltImage], source: str,
                                             path: str, options_a: str, options_b: str,
                                             mount: Mounter, pagecache: Probe) -> None:
    a, b = pair
    ma, mb = mount(a, options_a, source), mount(b, options_b, source)
    other = read_then_mincore(pagecache, ma.path(path), mb.path(twin_of(a, b, path)))
    assert other.resident == 0, f"-o '{options_b}' sees {other} read through -o '{options_a}'"


@pytest.mark.fast
@pytest.mark.parametrize("path", ["page-plus-1", BIG])
def test_shared_pages_are_the_same_page_frames(pair: tuple[BuiltImage, BuiltImage], source: str,
                                               path: str, mount: Mounter,
                                               pagecache: Probe) -> None:
    a, b = pair
    ma, mb = mount(a, SHARE, source), mount(b, SHARE, source)
    pa, pb = ma.path(path), mb.path(twin_of(a, b, path))
    frames = pagecache.pfns(pa, pb)
    fa, fb = frames[pa].pfns, frames[pb].pfns
    assert all(fa), f"pagemap gave no frame for some pages of {pa} (need root and pagemap)"
    same = sum(x == y for x, y in zip(fa, fb, strict=True))
    assert same == len(fa), f"only {same}/{len(fa)} pages of {pa} and {pb} share a frame"
    counts = frames[pb].counts
    assert min(counts) >= 2, f"kpagecount shows frames mapped fewer than twice: {counts[:8]}"


@pytest.mark.parametrize("options", ["", OTHER_DOMAIN], ids=["plain", "other-domain"])
def test_unshared_pages_are_distinct_page_frames(pair: tuple[BuiltImage, BuiltImage],
                                                 source: str, options: str, mount: Mounter,
                                                 pagecache: Probe) -> None:
    a, b = pair
    ma, mb = mount(a, SHARE, source), mount(b, options, source)
    pa, pb = ma.path(BIG), mb.path(twin_of(a, b, BIG))
    frames = pagecache.pfns(pa, pb)
    common = set(frames[pa].pfns) & set(frames[pb].pfns) - {0}
    assert not common, f"{len(common)} frames are mapped through both unshared mounts"


def test_two_files_with_the_same_content_in_one_image_share(erofs_image, source: str,
                                                            mount: Mounter,
                                                            pagecache: Probe) -> None:
    twins = erofs_image("twins")
    mt = mount(twins, SHARE, source)
    _, _, (second, other) = read_and_look(pagecache, mt.path("first"), mt.path("second"),
                                          mt.path("other"))
    assert second.resident == second.pages, f"second copy: {second}"
    assert other.resident == 0, f"a file with other content became resident: {other}"


def test_files_with_other_content_do_not_share(erofs_image, source: str, mount: Mounter,
                                               pagecache: Probe) -> None:
    a, s = erofs_image("sizes"), erofs_image("strangers")
    ma, ms = mount(a, SHARE, source), mount(s, SHARE, source)
    other = read_then_mincore(pagecache, ma.path(BIG), ms.path(BIG))
    assert other.resident == 0, f"same name and size, other bytes, yet resident: {other}"


@pytest.mark.parametrize("kinds", [("loop", "file"), ("file", "loop"), ("block", "file")],
                         ids=["loop-file", "file-loop", "block-file"])
def test_block_backed_and_file_backed_mounts_do_not_share(pair: tuple[BuiltImage, BuiltImage],
                                                          kinds: tuple[str, str],
                                                          mount: Mounter,
                                                          pagecache: Probe) -> None:
    """Measured on Debian 7.2.13 and 7.3.4: the same content mounted block-backed (loop,
    virtio) and file-backed, both with inode_share and one domain, is cached twice. This
    test records that behaviour; if a kernel starts sharing here it goes red on purpose."""
    a, b = pair
    ma, mb = mount(a, SHARE, kinds[0]), mount(b, SHARE, kinds[1])
    other = read_then_mincore(pagecache, ma.path(BIG), mb.path(twin_of(a, b, BIG)))
    assert other.resident == 0, f"{kinds[1]}-backed mount sees {other} read {kinds[0]}-backed"


@pytest.mark.parametrize("kinds", [("loop", "block"), ("block", "loop")],
                         ids=["loop-block", "block-loop"])
def test_loop_and_virtio_block_mounts_share(pair: tuple[BuiltImage, BuiltImage],
                                            kinds: tuple[str, str], mount: Mounter,
                                            pagecache: Probe) -> None:
    a, b = pair
    ma, mb = mount(a, SHARE, kinds[0]), mount(b, SHARE, kinds[1])
    other = read_then_mincore(pagecache, ma.path(BIG), mb.path(twin_of(a, b, BIG)))
    assert other.resident == other.pages, f"{kinds}: {other}"


@pytest.mark.fast
def test_second_reader_adds_nothing_to_cached(pair: tuple[BuiltImage, BuiltImage], source: str,
                                              mount: Mounter, pagecache: Probe,
                                              measure: Measure) -> None:
    """/proc/meminfo Cached is global: other activity moves it, so a tolerance of 256 KiB
    (64 pages) against a 4 MiB file. The image files behind loop and file-backed mounts are
    cached too (on the guest's ext4): their growth is measured and taken off, so that it
    cannot stand in for the EROFS pages of the first read."""
    a, b = pair
    ma, mb = mount(a, SHARE, source), mount(b, SHARE, source)
    backing = [m.backing for m in (ma, mb) if m.backing]
    with pagecache.batch() as batch:
        m0, k0 = batch.meminfo(), [batch.residency(f) for f in backing]
        batch.read(ma.path(BIG))
        m1, k1 = batch.meminfo(), [batch.residency(f) for f in backing]
        batch.read(mb.path(twin_of(a, b, BIG)))
        m2, k2 = batch.meminfo(), [batch.residency(f) for f in backing]
    first_backing, second_backing = _grown_kib(k0, k1), _grown_kib(k1, k2)
    first = m1.value["Cached"] - m0.value["Cached"] - first_backing
    second = m2.value["Cached"] - m1.value["Cached"] - second_backing
    measure(cached_first_kib=first, cached_second_kib=second,
            backing_first_kib=first_backing)
    assert first >= 4096 - 256, (
        f"the first read grew Cached by only {first} KiB besides {first_backing} KiB of the "
        f"image files")
    assert second <= 256, f"the second, shared read grew Cached by {second} KiB (first {first})"


def _grown_kib(before: list[Pending[Residency]], after: list[Pending[Residency]]) -> int:
    return sum(4 * (y.value.resident - x.value.resident)
               for x, y in zip(before, after, strict=True))


def test_second_cgroup_is_not_charged_for_shared_pages(pair: tuple[BuiltImage, BuiltImage],
                                                       source: str, mount: Mounter,
                                                       pagecache: Probe,
                                                       measure: Measure) -> None:
    """The first reader's cgroup is charged for the shared pages, frame by frame
    (/proc/kpagecgroup), and a second reader of the twin is charged nothing. Frame by
    frame because memory.stat cannot tell the EROFS pages from the image file's: a
    file-backed mount may read its image file in the reader's context and charge it there
    (7.3.4 charges 11.4 MiB for a 4 MiB file), which a total could mistake for them."""
    a, b = pair
    ma, mb = mount(a, SHARE, source), mount(b, SHARE, source)
    groups = (f"first-{source}", f"second-{source}")
    try:
        first = pagecache.cgroup_read(groups[0], ma.path(BIG))
        frames = pagecache.pfns(ma.path(BIG))[ma.path(BIG)]
        second = pagecache.cgroup_read(groups[1], mb.path(twin_of(a, b, BIG)))
    finally:
        pagecache.remove_cgroups(*groups)
    measure(memcg_first_kib=first.file // 1024, memcg_second_kib=second.file // 1024)
    assert frames.memcgs, "no /proc/kpagecgroup: the kernel lacks memory cgroups"
    elsewhere = [m for m in frames.memcgs if m != first.inode]
    assert not elsewhere, (
        f"{len(elsewhere)} of {len(frames.memcgs)} pages the first reader read are charged "
        f"to other cgroups (inodes {sorted(set(elsewhere))}) than its own ({first.inode})")
    assert second.file <= 256 << 10, (
        f"the second cgroup was charged {second.file} B for pages already cached by the "
        f"first ({first.file} B)")


def test_fincore_agrees_with_mincore_through_both_mounts(pair: tuple[BuiltImage, BuiltImage],
                                                         source: str, mount: Mounter,
                                                         pagecache: Probe) -> None:
    """A second tool (util-linux fincore) sees the same shared residency as mincore."""
    a, b = pair
    *_, pa, pb = mount_twins(mount, a, b, source)
    pagecache.read(pa)
    counts = {}
    for path in (pa, pb):
        out = pagecache.vm.run(f"fincore --noheadings --raw --output PAGES {path}",
                               check=True).stdout
        counts[path] = int(out.split()[0])
    mincore = pagecache.residency(pb)
    assert counts[pa] == counts[pb] == mincore.resident == mincore.pages, (
        f"fincore {counts}, mincore through b: {mincore}")


@pytest.mark.parametrize("options", [SHARE, ""], ids=["sharing", "plain"])
def test_smaps_counts_shared_pages_once_per_copy(pair: tuple[BuiltImage, BuiltImage],
                                                 source: str, options: str, mount: Mounter,
                                                 pagecache: Probe) -> None:
    """One process maps both twins: with sharing every page of each mapping is mapped twice
    (Shared_Clean), and Pss is half of Rss; without sharing the pages are private."""
    a, b = pair
    *_, pa, pb = mount_twins(mount, a, b, source, (options, options))
    figures = pagecache.smaps(pa, pb)
    size_kib = a.file(BIG)["size"] // 1024
    for path in (pa, pb):
        f = figures[path]
        assert f["Rss"] == size_kib, f"{path}: {f}"
        if options:
            assert f["Shared_Clean"] == size_kib and f["Pss"] == size_kib // 2, f"{path}: {f}"
        else:
            assert f["Private_Clean"] == size_kib and f["Pss"] == size_kib, f"{path}: {f}"


@pytest.mark.requires_kernel("page_cache_share")
@pytest.mark.known_bug(
    "a block device mounted already gets its superblock reused by get_tree_bdev(), whose "
    "options (domain_id among them) are dropped without a word: the mount asked for another "
    "domain is in the first mount's, and shares its cache "
    "(reports/domain-of-a-reused-superblock.yaml; found by reading fs/erofs)",
    signature=r"a mount of /dev/\S+ asked for domain d2 holds [1-9]\d*/\d+ pages resident "
              r"of \S+ after its twin was read in domain d1",
    releases=">=7.2", params=["loop", "block"],
    unless_patched="refuse a second mount of a device with another")
def test_a_second_mount_of_a_device_in_another_domain_shares_only_in_that_domain(
        pair: tuple[BuiltImage, BuiltImage], source: str, mount: Mounter,
        pagecache: Probe) -> None:
    """A domain is the boundary of sharing. Mounting a device (or file) that is mounted
    already, with another domain_id, must either be refused or give a mount in the domain
    asked for: its files must not share the first domain's cache. (A block device mounted
    twice gets one superblock, whose domain is the first mount's.)"""
    a, b = pair
    first = mount(a, SHARE, source)
    again = pagecache.mount(first.device, f"{first.target}-again", OTHER_DOMAIN)
    if not again.ok:
        return  # refused: the domain asked for is not silently another one
    twin_in_d1 = mount(b, SHARE, source)
    pagecache.read(twin_in_d1.path(twin_of(a, b, BIG)))
    seen = pagecache.residency(f"{first.target}-again/{BIG}")
    assert seen.resident == 0, (
        f"a mount of {first.device} asked for domain d2 holds {seen} of {BIG} after its "
        f"twin was read in domain d1: it shares d1's cache")
