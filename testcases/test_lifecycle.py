"""Sharing over the life of mounts, files and caches: unmounts in either order, lazy
unmount under a live mapping, cache drops, many mounts, mount cycles, memory limits."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from conftest import BIG, SHARE, mount_twins, twin_of
from harness.erofs.images import BuiltImage
from harness.guest.mounts import Mounter
from harness.guest.probe import Probe

pytestmark = pytest.mark.requires_kernel("page_cache_share")


@pytest.mark.parametrize("first_gone", ["a", "b"])
def test_unmounting_one_mount_leaves_the_other_serving(pair: tuple[BuiltImage, BuiltImage],
                                                       source: str, first_gone: str,
                                                       mount: Mounter,
                                                       pagecache: Probe) -> None:
    a, b = pair
    ma, mb, pa, pb = mount_twins(mount, a, b, source)
    pagecache.read(pa if first_gone == "b" else pb)
    gone, path = (ma, pb) if first_gone == "a" else (mb, pa)
    result = mount.umount(gone)
    assert result.ok, f"umount {gone.target}: {result.errname} {result.kmsg}"
    resident, read = pagecache.batch([{"op": "mincore", "path": path},
                                      {"op": "read", "path": path}])
    assert read["sha256"] == a.file(BIG)["sha256"], "wrong bytes after the other unmount"
    assert resident["resident"] == resident["pages"], (
        f"the shared pages went away with the other mount: {resident}")


def test_mapping_survives_close_and_lazy_unmount(pair: tuple[BuiltImage, BuiltImage],
                                                 source: str, mount: Mounter,
                                                 pagecache: Probe) -> None:
    a, b = pair
    ma, mb = mount(a, SHARE, source), mount(b, SHARE, source)
    pagecache.one({"op": "hold", "path": ma.path(BIG), "tag": "lazy"})  # fd closed after mmap
    result = mount.umount(ma, lazy=True)
    assert result.ok, f"lazy umount: {result.errname} {result.kmsg}"
    other = pagecache.residency(mb.path(twin_of(a, b, BIG)))
    held = pagecache.one({"op": "release", "tag": "lazy"})
    assert held["sha256"] == a.file(BIG)["sha256"], f"the held mapping read {held}"
    assert other.resident == other.pages, f"after the lazy unmount of a: b shows {other}"


def test_drop_caches_empties_both_views_and_refill_is_shared(
        pair: tuple[BuiltImage, BuiltImage], source: str, mount: Mounter,
        pagecache: Probe) -> None:
    a, b = pair
    *_, pa, pb = mount_twins(mount, a, b, source)
    answers = pagecache.batch([
        {"op": "read", "path": pa}, {"op": "drop_caches"},
        {"op": "mincore", "path": pa}, {"op": "mincore", "path": pb},
        {"op": "read", "path": pb}, {"op": "mincore", "path": pa}])
    assert answers[2]["resident"] == answers[3]["resident"] == 0, answers[2:4]
    assert answers[5]["resident"] == answers[5]["pages"], f"refill through b: {answers[5]}"


def test_fadvise_dontneed_through_one_mount_is_seen_through_both(
        pair: tuple[BuiltImage, BuiltImage], source: str, mount: Mounter,
        pagecache: Probe) -> None:
    a, b = pair
    *_, pa, pb = mount_twins(mount, a, b, source)
    answers = pagecache.batch([
        {"op": "read", "path": pa}, {"op": "fadvise_dontneed", "path": pb},
        {"op": "mincore", "path": pa}, {"op": "mincore", "path": pb}])
    assert answers[2]["resident"] == answers[3]["resident"], (
        f"the two mounts disagree about the shared cache: a {answers[2]}, b {answers[3]}")


@pytest.mark.parametrize("source", ["loop", "file"])
def test_thirty_two_mounts_share_one_copy(pair: tuple[BuiltImage, BuiltImage], source: str,
                                          mount: Mounter, pagecache: Probe,
                                          measure: Callable[..., None]) -> None:
    a, b = pair
    mounts = [mount(a if i % 2 == 0 else b, SHARE, source) for i in range(32)]
    paths = [m.path(BIG if m.image is a else twin_of(a, b, BIG)) for m in mounts]
    _, *views = pagecache.batch([{"op": "read", "path": paths[0]}]
                                + [{"op": "mincore", "path": p} for p in paths])
    cold = [i for i, v in enumerate(views) if v["resident"] != v["pages"]]
    assert not cold, f"mounts {cold} of 32 do not see the pages read through mount 0"
    reads = pagecache.batch([{"op": "meminfo"}] + [{"op": "read", "path": p} for p in paths]
                            + [{"op": "meminfo"}])
    grown = reads[-1]["Cached"] - reads[0]["Cached"]
    measure(readers=32, file_kib=a.file(BIG)["size"] // 1024, cached_all_kib=grown)
    assert grown <= 512, f"reading through all 32 mounts grew Cached by {grown} KiB"


def test_mount_unmount_cycles_leave_sharing_and_memory_intact(
        pair: tuple[BuiltImage, BuiltImage], source: str, mount: Mounter,
        pagecache: Probe) -> None:
    a, b = pair
    before = pagecache.meminfo()
    for _ in range(12):
        m = mount(a, SHARE, source)
        assert pagecache.read(m.path(BIG))["sha256"] == a.file(BIG)["sha256"]
        assert mount.umount(m).ok
    pagecache.drop_caches()
    after = pagecache.meminfo()
    assert after["Cached"] - before["Cached"] <= 1024, (
        f"Cached grew by {after['Cached'] - before['Cached']} KiB over 12 mount cycles")
    ma, mb = mount(a, SHARE, source), mount(b, SHARE, source)
    _, other = pagecache.batch([{"op": "read", "path": ma.path(BIG)},
                                {"op": "mincore", "path": mb.path(twin_of(a, b, BIG))}])
    assert other["resident"] == other["pages"], f"after the cycles: {other}"


def test_reclaim_under_memory_max_keeps_bytes_right(pair: tuple[BuiltImage, BuiltImage],
                                                    source: str, mount: Mounter,
                                                    pagecache: Probe) -> None:
    a, b = pair
    ma, mb = mount(a, SHARE, source), mount(b, SHARE, source)
    group = f"tight-{source}"
    limit = 3 << 20  # below the 4 MiB file: its pages must be reclaimed while it is read
    limited = pagecache.one({"op": "cgroup_read", "cgroup": group, "path": ma.path(BIG),
                             "method": "stream", "limit": limit})
    pagecache.vm.run(f"rmdir /sys/fs/cgroup/{group}")
    assert limited["read"].get("sha256") == a.file(BIG)["sha256"], limited
    assert limited["current"] <= limit, f"memory.max exceeded: {limited}"
    pa, pb = ma.path(BIG), mb.path(twin_of(a, b, BIG))
    va, vb = pagecache.batch([{"op": "mincore", "path": pa}, {"op": "mincore", "path": pb}])
    assert va["resident"] == vb["resident"] < va["pages"], (
        f"after reclaim the views must agree and not hold everything: a {va}, b {vb}")
