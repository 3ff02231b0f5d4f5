"""Damaged and hostile images (harness/erofs/damage.py): every structure of an image (the
superblock and the fields a hostile author sets, the long xattr prefixes, inodes, inline
xattrs with the fingerprint, directory blocks, plain and inline data, compressed clusters
and their indexes), each damaged in one block and as a whole, mounted beside its healthy
twin on every source, with sharing in one domain and without.

The kernel must refuse what its superblock checksum catches, keep everything the damage
cannot reach readable and right, never let the damaged twin change what the healthy one
serves once it is unmounted, never write an image, and never splat or hang (the hooks
fail the test on any kernel report). What each damage may change is computed from the
image's layout (dump.erofs), not guessed: see harness/hostile/trial.py.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from harness.core.names import SOURCES
from harness.erofs.damage import CORPUS, Damage, recipe
from harness.erofs.images import BuiltImage
from harness.erofs.layout import ImageLayout, image_layout
from harness.erofs.tools import ErofsUtils
from harness.guest.mounts import Mounter
from harness.guest.probe import Probe
from harness.hostile.fuzz import FOUND as FUZZ_FOUND
from harness.hostile.trial import damaged_copy, run_trial

CASES = [(image, name) for image, names in CORPUS.items() for name in names]
# Every source, with sharing in one domain and without: the source decides how blocks reach
# EROFS's parsers (bdev page cache, the image file's page cache, a virtio disk), sharing
# decides whether a damaged inode can join a healthy one's cache.
MODES = [(source, sharing) for sharing in (True, False) for source in SOURCES]
# The fast slice (make test) keeps, on a loop device with sharing, one damage the checksum
# must refuse, one EROFS must ignore, and a hostile fingerprint entry.
FAST = {"hostile:head:overwritten", "hostile:superblock:bit-flip",
        "hostile:xattrs@wide/entry-150:value-size-huge"}


def _params() -> list[object]:
    out = []
    for image, damage in CASES:
        for source, sharing in MODES:
            ident = f"{image}:{damage}"
            marks = [pytest.mark.requires_kernel("page_cache_share")] if sharing else []
            if ident in FAST and (source, sharing) == ("loop", True):
                marks.append(pytest.mark.fast)
            out.append(pytest.param(image, damage, source, sharing, marks=marks,
                                    id=f"{ident}-{source}-{'sharing' if sharing else 'plain'}"))
    return out


# Changed under a live mount: each structure flipped, zeroed or cut off (the superblock is
# read once, at mount time, so its fields are left out), on the two sources whose image is a
# file the guest can rewrite (a virtio disk is attached read-only), with sharing and without.
LIVE = [(image, name) for image, name in CASES
        if not name.startswith("superblock") and not name.endswith("all-ones")
        and "-huge" not in name]


def _live_params() -> list[object]:
    out = []
    for image, damage in LIVE:
        for source, sharing in (("loop", True), ("loop", False), ("file", True),
                                ("file", False)):
            marks = [pytest.mark.requires_kernel("page_cache_share")] if sharing else []
            out.append(pytest.param(image, damage, source, sharing, marks=marks,
                                    id=f"{image}:{damage}-{source}-"
                                       f"{'sharing' if sharing else 'plain'}"))
    return out


@pytest.fixture(scope="session")
def hostile_layout(erofs_image: Callable[[str], BuiltImage], erofs_tools: ErofsUtils
                   ) -> Callable[[str], ImageLayout]:
    layouts: dict[str, ImageLayout] = {}

    def get(name: str) -> ImageLayout:
        if name not in layouts:
            assert erofs_tools.dump is not None, "dump.erofs is needed to map an image"
            layouts[name] = image_layout(erofs_image(name), erofs_tools.dump)
        return layouts[name]
    return get


@pytest.fixture(scope="session")
def damaged_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("damaged")


# Zeroing the compression index of data/plain in the lz4 image makes the intact
# data/sixty-four-k of the *healthy* twin image read wrong bytes once the damaged image was
# read, the shape of the pcluster reuse the fuzzer found (reports/pcluster-reuse-wrong-bytes.yaml):
# on 7.2.13 whatever the build, and on 7.3.4 only in a kernel built without transparent huge
# pages, whose page cache has order-0 folios alone: the same tree build fails these five cases
# without CONFIG_TRANSPARENT_HUGEPAGE and passes them with it, and Debian's 7.3.4 binary
# (THP on) passes them. Reading with POSIX_FADV_RANDOM, which makes order-0 folios on a THP
# kernel too, did not bring the failure back there.
ZINDEX_ZEROED = dict(
    reason="a zeroed compression index in one image makes a healthy twin serve wrong bytes "
           "(reports/pcluster-reuse-wrong-bytes.yaml; on 7.2, and on 7.3 without THP)",
    signature=r"healthy mount after the damaged one was read: \S+ \((read\(2\)|mmap)\) "
              r"gave",
    params=["hostile-lz4:zindex@data/plain:block-zeroed-*-sharing"])
# A build with CONFIG_EROFS_FS_DEBUG (the debug tree) turns EROFS's corruption checks
# (DBG_BUGON) into BUG(): a damaged image kills its reader by design, for example at
# fs/erofs/xattr.c:286 or fs/erofs/zmap.c:174 on 7.3.4. Such a case counts as expected (not
# as a pass); every other damage still runs under KASAN and lockdep there.
DEBUG_ASSERTS = dict(
    reason="CONFIG_EROFS_FS_DEBUG: EROFS's own corruption checks (DBG_BUGON) BUG() on a "
           "damaged image by design",
    signature=r"kernel BUG at fs/erofs/\w+\.c:\d+", with_config=["EROFS_FS_DEBUG"],
    strict=False)
ZINDEX_ZEROED_72 = dict(ZINDEX_ZEROED, releases="==7.2")
ZINDEX_ZEROED_73_NO_THP = dict(ZINDEX_ZEROED, releases="==7.3",
                              without_config=["TRANSPARENT_HUGEPAGE"],
                              unless_patched="refuse to reuse a pcluster")


@pytest.mark.known_bug(**DEBUG_ASSERTS)
@pytest.mark.known_bug(**ZINDEX_ZEROED_72)
@pytest.mark.known_bug(**ZINDEX_ZEROED_73_NO_THP)
@pytest.mark.parametrize(("image", "damage", "source", "sharing"), _params())
def test_damage_is_refused_or_contained(erofs_image: Callable[[str], BuiltImage],
                                        hostile_layout: Callable[[str], ImageLayout],
                                        damaged_dir: Path, image: str, damage: str,
                                        source: str, sharing: bool, mount: Mounter,
                                        pagecache: Probe, measure: Callable[..., None]) -> None:
    healthy, layout = erofs_image(image), hostile_layout(image)
    dmg = recipe(layout, healthy.path.read_bytes(), damage)
    trial = run_trial(mount, pagecache, healthy, damaged_copy(healthy, dmg, damaged_dir), dmg,
                      layout, source, sharing)
    trial.record(measure)
    assert not trial.violations, f"{trial.summary()}\n" + "\n".join(trial.violations)


@pytest.mark.known_bug(**DEBUG_ASSERTS)
@pytest.mark.known_bug(**ZINDEX_ZEROED_72)
@pytest.mark.known_bug(**ZINDEX_ZEROED_73_NO_THP)
@pytest.mark.parametrize(("image", "damage", "source", "sharing"), _live_params())
def test_change_under_a_live_mount_is_contained(erofs_image: Callable[[str], BuiltImage],
                                                hostile_layout: Callable[[str], ImageLayout],
                                                damaged_dir: Path, image: str, damage: str,
                                                source: str, sharing: bool, mount: Mounter,
                                                pagecache: Probe,
                                                measure: Callable[..., None]) -> None:
    """The image file behind a mounted, walked image is changed in place (the bytes of one
    structure, or cut short) and the caches dropped: the kernel re-reads what changed. No
    splat, and the same rules as for an image damaged before its mount; only the checksum,
    which is checked at mount time, no longer refuses anything."""
    healthy, layout = erofs_image(image), hostile_layout(image)
    dmg = recipe(layout, healthy.path.read_bytes(), damage)
    trial = run_trial(mount, pagecache, healthy, healthy, dmg, layout, source, sharing,
                      live=True)
    trial.record(measure)
    assert not trial.violations, f"{trial.summary()}\n" + "\n".join(trial.violations)


def _found() -> list[object]:
    """Every damage `make fuzz` found (reports/found/fuzz-*.yaml); one that names a known bug
    is marked so, and fails as expected only with that signature."""
    params: list[object] = []
    for path in sorted(FUZZ_FOUND.glob("fuzz-*.yaml")):
        report = yaml.safe_load(path.read_text())
        marks = [pytest.mark.known_bug(**report["known_bug"])] if report.get("known_bug") else []
        if report["damage"].get("sharing"):
            marks.append(pytest.mark.requires_kernel("page_cache_share"))
        params.append(pytest.param(path, marks=marks, id=path.stem))
    return params


FOUND = _found()
if FOUND:  # no replay test at all, rather than one skipped for an empty parameter set
    @pytest.mark.known_bug(**DEBUG_ASSERTS)
    @pytest.mark.parametrize("report", FOUND)
    def test_found_damage_replays(report: Path, erofs_image: Callable[[str], BuiltImage],
                                  hostile_layout: Callable[[str], ImageLayout],
                                  damaged_dir: Path, mount: Mounter, pagecache: Probe,
                                  measure: Callable[..., None]) -> None:
        raw = yaml.safe_load(report.read_text())["damage"]
        healthy, layout = erofs_image(raw["image"]), hostile_layout(raw["image"])
        damage = Damage.from_dict(raw)
        trial = run_trial(mount, pagecache, healthy, damaged_copy(healthy, damage, damaged_dir),
                          damage, layout, raw["source"], bool(raw["sharing"]))
        trial.record(measure)
        assert not trial.violations, f"{trial.summary()}\n" + "\n".join(trial.violations)
