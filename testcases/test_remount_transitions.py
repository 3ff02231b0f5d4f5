"""Changing options on a live mount. EROFS fixes ``domain_id`` at mount time ("ignoring
reconfiguration for domain_id"); whatever else a remount changes, every file must still read
its bytes, the kernel must not splat, and sharing must follow what /proc/mounts says, for
files looked up before the remount and for files looked up after it.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from conftest import (
    BIG,
    SHARE,
    SIZES_FILES,
    join_options,
    read_then_mincore,
    shown_options,
    twin_of,
)
from harness.erofs.images import BuiltImage
from harness.guest.mounts import Mount, Mounter
from harness.guest.probe import Probe

pytestmark = pytest.mark.requires_kernel("page_cache_share")
Images = Callable[[str], BuiltImage]
NEVER_LOOKED_UP = "dir/deeper/one-mib"


def _remount(pagecache: Probe, m: Mount, options: str, how: str = "mount(8)"
             ) -> tuple[bool, str]:
    """Remount with ``options`` through util-linux mount(8), which sends the options in
    effect along with the new ones, or through mount(2) itself with only ``options``."""
    if how == "mount(2)":
        answer = pagecache.remount(m.target, options)
        return answer.ok, f"{answer.errname} {' | '.join(answer.kmsg)}".strip()
    result = pagecache.vm.run(f"mount -o {','.join(['remount', *filter(None, [options])])} "
                              f"{m.target}")
    return result.ok, result.stderr.strip()


@pytest.mark.known_bug(
    "remount,inode_share of a plain mount turns sharing on without a domain_id, and the next "
    "lookup dereferences it (reports/remount-inode-share-null-domain.yaml)",
    signature=r"erofs_xattr_fill_inode_fingerprint|NULL pointer dereference",
    releases=">=7.2", unless_patched="keep dax and inode_share as mounted")
@pytest.mark.parametrize("options", ["inode_share", SHARE], ids=["inode_share", "with-domain"])
@pytest.mark.parametrize("looked_up", [False, True], ids=["cold", "looked-up"])
def test_remount_turning_inode_share_on_keeps_files_readable(
        erofs_image: Images, source: str, options: str, looked_up: bool, mount: Mounter,
        pagecache: Probe) -> None:
    """A plain mount of a fingerprinted image, remounted with inode_share. The mount has no
    domain (domain_id cannot be set by a remount), so it has nothing to share in: the remount
    may be refused, or accepted with sharing off, but every file must read right."""
    a = erofs_image("sizes")
    m = mount(a, "", source)
    if looked_up:
        assert pagecache.read(m.path(BIG)).sha256 == a.file(BIG)["sha256"]
    ok, stderr = _remount(pagecache, m, options)
    for path in (NEVER_LOOKED_UP, BIG, "page", "sparse"):
        got = pagecache.try_read(m.path(path))
        assert not got.failed and got.value.sha256 == a.file(path)["sha256"], (
            f"after `mount -o remount,{options}` ({'accepted' if ok else stderr}) {path} "
            f"read {got.error or got.value}")
    assert "inode_share" not in shown_options(pagecache, m) or not ok, (
        f"/proc/mounts shows inode_share on a mount without a domain: "
        f"{shown_options(pagecache, m)}")


@pytest.mark.known_bug(
    "a remount(2) without inode_share clears it: files looked up before it keep sharing, "
    "files looked up after it do not (reports/remount-inode-share-null-domain.yaml, the same "
    "fix)", signature=r"a remount without inode_share turned sharing off",
    releases=">=7.2", unless_patched="keep dax and inode_share as mounted",
    params=["*-mount(2)"])
@pytest.mark.parametrize("how", ["mount(8)", "mount(2)"])
@pytest.mark.parametrize("options", ["", "cache_strategy=disabled"],
                         ids=["bare-remount", "other-option"])
def test_remount_without_inode_share_changes_nothing_about_sharing(
        pair: tuple[BuiltImage, BuiltImage], source: str, options: str, how: str,
        mount: Mounter, pagecache: Probe) -> None:
    """`mount -o remount` of a sharing mount, as an administrator does to change another
    option. /proc/mounts and the files looked up after the remount must agree: a mount
    whose files share half before and half after is in no state the user can see."""
    a, b = pair
    ma, mb = mount(a, SHARE, source), mount(b, SHARE, source)
    before = read_then_mincore(pagecache, ma.path("page"), mb.path(twin_of(a, b, "page")))
    assert before.resident == before.pages, f"the twins did not share before: {before}"
    ok, stderr = _remount(pagecache, ma, options, how)
    assert ok, f"remount through {how} with '{options}': {stderr}"
    shown = "inode_share" in shown_options(pagecache, ma)
    # BIG was never looked up through ma: its inode is made after the remount.
    after = read_then_mincore(pagecache, ma.path(BIG), mb.path(twin_of(a, b, BIG)))
    shared = after.resident == after.pages
    assert shared == shown, (
        f"after the remount /proc/mounts {'shows' if shown else 'no longer shows'} "
        f"inode_share, but a file looked up after it is {'' if shared else 'not '}shared "
        f"({after} through the twin), while the file looked up before still is")
    assert shown, (
        f"a remount without inode_share turned sharing off: {shown_options(pagecache, ma)}")


@pytest.mark.known_bug(
    "remount,dax=always is accepted where the mount refused DAX; files looked up afterwards "
    "fail with EOPNOTSUPP (reports/remount-inode-share-null-domain.yaml, the same fix)",
    signature=r"after remount,dax=always .* read \[Errno 95\]", releases=">=7.2",
    unless_patched="keep dax and inode_share as mounted",
    params=["*-plain-*", "*-sharing-mount(2)"])
@pytest.mark.parametrize("how", ["mount(8)", "mount(2)"])
@pytest.mark.parametrize("options", ["", SHARE], ids=["plain", "sharing"])
def test_remount_asking_for_dax_keeps_files_readable(
        erofs_image: Images, source: str, options: str, how: str, mount: Mounter,
        pagecache: Probe) -> None:
    """dax=always is refused at mount time where it cannot work (no DAX device; with
    inode_share, "FSDAX is not allowed"). Asked for on a remount, it must be refused or
    ignored: files looked up afterwards must still read their bytes."""
    a = erofs_image("sizes")
    m = mount(a, options, source)
    ok, stderr = _remount(pagecache, m, "dax=always", how)
    for path in (NEVER_LOOKED_UP, BIG, "page"):
        got = pagecache.try_read(m.path(path))
        assert not got.failed and got.value.sha256 == a.file(path)["sha256"], (
            f"after remount,dax=always through {how} ({'accepted' if ok else stderr}) "
            f"{path} read {got.error or got.value}")


@pytest.mark.known_bug(
    "a remount turns inode_share back on for an image without fingerprints (the mount had "
    "turned it off); lookups then take the image's first long xattr prefix for the "
    "fingerprint, so files with equal values of that xattr share one cache and read each "
    "other's bytes (reports/remount-reenables-inode-share.yaml, the same fix)",
    signature=r"after the remount .* read the bytes of|/proc/mounts shows inode_share on a "
              r"mount that turned it off",
    releases=">=7.2", unless_patched="keep dax and inode_share as mounted")
@pytest.mark.parametrize("how", ["mount(8)", "mount(2)"])
def test_remount_cannot_turn_on_sharing_the_mount_turned_off(
        erofs_image: Images, source: str, how: str, mount: Mounter, pagecache: Probe) -> None:
    """`overlay-origin` has no fingerprints, and its files `a` and `b` (other bytes, one size)
    carry an equal `trusted.overlay.origin`, stored under a long xattr prefix. Mounted with
    sharing, the kernel turns it off. A remount with the same options (mount(8) sends them
    again on any remount) must leave it off: no file may read another's bytes."""
    image = erofs_image("overlay-origin")
    m = mount(image, SHARE, source)
    assert m.result.says("on-disk ishare xattrs not found. Turning off inode_share"), (
        m.result.kmsg)
    ok, said = _remount(pagecache, m, SHARE, how)
    with pagecache.batch() as batch:
        reads = {path: batch.read(m.path(path)) for path in ("a", "b")}
    want = {path: image.file(path)["sha256"] for path in ("a", "b")}
    for path, other in (("a", "b"), ("b", "a")):
        got = reads[path].value.sha256
        assert got == want[path], (
            f"after the remount ({how}, {'accepted' if ok else said}) {path} read the bytes "
            f"of {other}" if got == want[other] else f"{path} read {got}, want {want[path]}")
    shown = shown_options(pagecache, m)
    assert "inode_share" not in shown, (
        f"/proc/mounts shows inode_share on a mount that turned it off: {shown}")


@pytest.mark.parametrize("state", ["cold", "looked-up", "mapped"])
@pytest.mark.parametrize("start, then", [("", "directio"), ("directio", "nodirectio")],
                         ids=["adding", "removing"])
@pytest.mark.parametrize("options", ["", SHARE], ids=["plain", "sharing"])
def test_remount_switching_directio_on_a_file_backed_mount_does_what_proc_mounts_says(
        erofs_image: Images, options: str, start: str, then: str, state: str,
        mount: Mounter, pagecache: Probe) -> None:
    """`directio` makes a file-backed mount read its image file with O_DIRECT, past the
    image file's own page cache. Remounted on or off, with files never looked up, looked up,
    or mapped by a process across the remount: every file reads its bytes, the mapping
    too, and whether a cold file's data now lands in the image file's page cache agrees
    with /proc/mounts (direct: only metadata does)."""
    a = erofs_image("sizes")
    m = mount(a, join_options(options, start), "file")
    assert m.backing is not None
    assert ("directio" in shown_options(pagecache, m)) == bool(start), (
        f"/proc/mounts after `-o {join_options(options, start)}`: {shown_options(pagecache, m)}")
    if state == "looked-up":
        assert pagecache.read(m.path(BIG)).sha256 == a.file(BIG)["sha256"]
    elif state == "mapped":
        pagecache.hold(m.path(BIG), "across-remount")
    answer = pagecache.remount(m.target, join_options(options, then))
    assert answer.ok, f"remount -o {join_options(options, then)}: {answer.errname} {answer.kmsg}"
    shown = shown_options(pagecache, m)
    shown_direct = "directio" in shown
    assert shown_direct == (then == "directio"), (
        f"/proc/mounts after remount -o {join_options(options, then)}: {shown}")
    # The cold 1 MiB file, from a cold cache: buffered reads leave its 256 pages in the image
    # file's cache, direct ones only the metadata blocks the lookup read.
    pagecache.drop_caches()
    before = pagecache.residency(m.backing).resident
    assert pagecache.read(m.path(NEVER_LOOKED_UP)).sha256 == \
        a.file(NEVER_LOOKED_UP)["sha256"]
    gained = pagecache.residency(m.backing).resident - before
    assert (gained < 64) == shown_direct, (
        f"/proc/mounts {'shows' if shown_direct else 'does not show'} directio, but reading "
        f"1 MiB of a cold file added {gained} pages to the image file's page cache")
    for path in (BIG, "page", "sparse"):
        assert pagecache.read(m.path(path)).sha256 == a.file(path)["sha256"], path
    if state == "mapped":
        held = pagecache.release("across-remount")
        assert not isinstance(held, str) and held.sha256 == a.file(BIG)["sha256"], (
            f"the mapping made before the remount read {held}")


@pytest.mark.parametrize("state", ["looked-up", "mapped"])
@pytest.mark.parametrize("start, then", [("readaround", "disabled"), ("disabled", "readahead")],
                         ids=["readaround-to-disabled", "disabled-to-readahead"])
def test_remount_changing_cache_strategy_keeps_compressed_files_right_and_shared(
        erofs_image: Images, source: str, start: str, then: str, state: str, mount: Mounter,
        pagecache: Probe) -> None:
    """cache_strategy decides whether compressed clusters are kept in the superblock's own
    cache. A remount changes it under live state: pclusters cached (or not) under the old
    strategy, a file mapped across the remount. Every file and its twin must read right,
    /proc/mounts must show the new strategy, and a file first read after the remount must
    still share with its twin in the other image."""
    a, b = erofs_image("sizes-lz4"), erofs_image("renamed-lz4")
    ma = mount(a, f"{SHARE},cache_strategy={start}", source)
    mb = mount(b, f"{SHARE},cache_strategy={start}", source)
    if state == "mapped":
        pagecache.hold(ma.path(BIG), "across-remount")
    else:
        assert pagecache.read(ma.path(BIG)).sha256 == a.file(BIG)["sha256"]
    answer = pagecache.remount(ma.target, f"{SHARE},cache_strategy={then}")
    assert answer.ok, f"remount to cache_strategy={then}: {answer.errname} {answer.kmsg}"
    shown = shown_options(pagecache, ma)
    assert f"cache_strategy={then}" in shown, f"/proc/mounts after the remount: {shown}"
    after = read_then_mincore(pagecache, ma.path(NEVER_LOOKED_UP),
                              mb.path(twin_of(a, b, NEVER_LOOKED_UP)))
    assert after.resident == after.pages, (
        f"a file first read after the remount does not share with its twin: {after}")
    for path in SIZES_FILES:
        assert pagecache.read(ma.path(path)).sha256 == a.file(path)["sha256"], path
        twin = twin_of(a, b, path)
        assert pagecache.read(mb.path(twin)).sha256 == b.file(twin)["sha256"], twin
    if state == "mapped":
        held = pagecache.release("across-remount")
        assert not isinstance(held, str) and held.sha256 == a.file(BIG)["sha256"], (
            f"the mapping made before the remount read {held}")
