"""Regression test for reports/ishare-size-check.yaml.

Two inodes with the same fingerprint but different sizes must not share: the kernel warns
"i_size mismatch ... for the same fingerprint" and keeps them apart (fs/erofs/ishare.c).
Patch 1 of reports/patches/ishare-size-check.mbox turns that check into a WARN_ON_ONCE and
shares anyway; patch 2 restores it. On a kernel carrying patch 1 but not patch 2 this test
is a known bug: xfail(strict=True), so a kernel where it passes anyway is reported too.
"""

from __future__ import annotations

import pytest

from conftest import check_resized_forgery_kept_apart
from harness.guest.mounts import Mounter
from harness.guest.probe import Probe

pytestmark = [
    pytest.mark.requires_kernel("page_cache_share"),
    # The check is in every release that has the feature; 7.2 is the oldest Debian kernel
    # with it (Debian 7.2.13 in sid).
    pytest.mark.regression(report="reports/ishare-size-check.yaml",
                           fix="erofs: ishare: refuse to share inodes whose sizes differ",
                           fixed_in="7.2"),
    pytest.mark.known_bug("the i_size check was turned into a WARN_ON_ONCE",
                          # Its failure: the planted WARN in ishare.c, or the two files of
                          # different size sharing (frames, bytes, residency).
                          signature=r"kernel warning report: .*fs/erofs/ishare\.c|"
                                    r"share a page frame|read the other's bytes|"
                                    r"did not keep them apart",
                          when_patched="trust the fingerprint for the file size",
                          unless_patched="refuse to share inodes whose sizes differ"),
]


@pytest.mark.parametrize("first", ["genuine", "forged"])
def test_same_fingerprint_with_other_size_warns_and_does_not_share(
        erofs_image, first: str, mount: Mounter, pagecache: Probe) -> None:
    check_resized_forgery_kept_apart(erofs_image, mount, pagecache, "loop", first)
