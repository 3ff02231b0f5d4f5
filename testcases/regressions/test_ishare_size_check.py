"""Regression test for reports/ishare-size-check.yaml.

Two inodes with the same fingerprint but different sizes must not share: the kernel warns
"i_size mismatch ... for the same fingerprint" and keeps them apart (fs/erofs/ishare.c).
Patch 1 of reports/patches/ishare-size-check.mbox turns that check into a WARN_ON_ONCE and
shares anyway; patch 2 restores it. On a kernel carrying patch 1 but not patch 2 this test
is a known bug: xfail(strict=True), so a kernel where it passes anyway is reported too.
"""

from __future__ import annotations

import pytest

from conftest import SHARE
from harness.mounts import Mounter
from harness.pagecache import Probe

pytestmark = [
    pytest.mark.requires_kernel("page_cache_share"),
    # The check is in every release that has the feature; 7.2 is the oldest Debian kernel
    # with it (FIELD-NOTES).
    pytest.mark.regression(report="reports/ishare-size-check.yaml",
                           fix="erofs: ishare: refuse to share inodes whose sizes differ",
                           fixed_in="7.2"),
    pytest.mark.known_bug("the i_size check was turned into a WARN_ON_ONCE",
                          when_patched="trust the fingerprint for the file size",
                          unless_patched="refuse to share inodes whose sizes differ"),
]


@pytest.mark.parametrize("first", ["genuine", "forged"])
def test_same_fingerprint_with_other_size_warns_and_does_not_share(
        erofs_image, first: str, mount: Mounter, pagecache: Probe) -> None:
    genuine, forged = erofs_image("sizes"), erofs_image("renamed-resized-forgery")
    mg = mount(genuine, SHARE, "loop")
    mf = mount(forged, SHARE, "loop")
    paths = {"genuine": mg.path("page"), "forged": mf.path("x/c")}
    own = {"genuine": genuine.file("page")["sha256"], "forged": forged.file("x/c")["sha256"]}
    second = "forged" if first == "genuine" else "genuine"
    before = len(pagecache.vm.run("dmesg", check=True).stdout.splitlines())
    answers = pagecache.batch([{"op": "read", "path": paths[first]},
                               {"op": "read", "path": paths[second]}])
    assert [a["sha256"] for a in answers] == [own[first], own[second]], answers
    frames = pagecache.pfns(paths[first], paths[second])
    assert not set(frames[paths[first]]["pfns"]) & set(frames[paths[second]]["pfns"]) - {0}
    new = pagecache.vm.run("dmesg", check=True).stdout.splitlines()[before:]
    assert any("i_size mismatch" in line and "for the same fingerprint" in line
               for line in new), f"no i_size mismatch warning in the kernel log: {new}"
