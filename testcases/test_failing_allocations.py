"""Every allocation of an operation failed in turn, as syzkaller does (fail-nth).

For each operation (a mount with and without sharing, the first open of a file, a cold
read, a page fault, readahead, a remount, an unmount), the guest runs it again and again
and fails its 1st, 2nd, ... n-th fault site (a slab or page allocation) until it runs
without reaching the n-th (harness/guest/helpers/failnth.py). After each run: the
operation succeeded or failed with ENOMEM or EIO; the mount is usable or cleanly gone; the
file reads right without faults, as cached and cold; the mount unmounts. The kernel's
reports (BUG, WARNING, KASAN and lockdep on the debug build) fail the test as everywhere,
and on a kernel with kmemleak (the debug build) so does an object EROFS allocated during
the sweep and left unreferenced.

Needs a kernel built with fault injection: `tree:,faults` (or `tree:,debug`, which has it).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from harness.erofs.images import BuiltImage
from harness.guest.handle import Guest
from harness.guest.probe import Probe
from testcases.conftest import SHARE, LeakWatch, twin_of

pytestmark = [pytest.mark.requires_kernel(
    "erofs", "CONFIG_FAULT_INJECTION", "CONFIG_FAILSLAB", "CONFIG_FAIL_PAGE_ALLOC",
    "CONFIG_FAULT_INJECTION_DEBUG_FS")]

# A 64 KiB file: a cold read has a few dozen fault sites, where 4 MiB would have thousands.
FILE = "dir/sixty-four-k"
OPERATIONS = ["mount", "open", "read", "mmap_fault", "readahead", "remount", "umount"]


def _source(guest: Guest, pagecache: Probe, image: BuiltImage, source: str) -> str:
    remote = guest.session.upload(image.path, f"{image.key}.erofs")
    return pagecache.loop_attach(remote) if source == "loop" else remote


@pytest.mark.parametrize("layout", ["", "-lz4"], ids=["plain", "lz4"])
@pytest.mark.parametrize("options", ["", SHARE, "joining"], ids=["private", "sharing",
                                                               "joining"])
@pytest.mark.parametrize("source", ["loop", "file"])
@pytest.mark.parametrize("operation", OPERATIONS)
def test_each_failed_allocation_fails_the_operation_cleanly_or_not_at_all(
        erofs_image: Callable[[str], BuiltImage], guest: Guest, pagecache: Probe,
        measure: Callable[..., None], leaks: LeakWatch, operation: str, source: str,
        options: str, layout: str) -> None:
    """``joining``: sharing, with a twin in another image of the domain looked up first,
    so that the operation's lookups join a shared inode that exists already (the other
    branch of erofs_ishare_fill_inode)."""
    if options and not pagecache.vm.kernel.features["page_cache_share"]:
        pytest.skip(f"kernel {pagecache.vm.kernel.release} lacks page_cache_share")
    image = erofs_image(f"sizes{layout}")
    device = _source(guest, pagecache, image, source)
    twin = None
    if options == "joining":
        options, other = SHARE, erofs_image(f"renamed{layout}")
        twin = (_source(guest, pagecache, other, source), twin_of(image, other, FILE))
    sweep = pagecache.fail_nth_sweep(operation, device, options, FILE,
                                     image.file(FILE)["sha256"], f"{guest.workdir}/fail",
                                     twin=twin)
    measure(fault_sites=sweep.points, **{f"answered_{k}": v for k, v in sweep.outcomes.items()})
    assert not sweep.problems, "\n".join(sweep.problems)
    assert sweep.complete, (f"{operation}: the sweep stopped ({sweep.stopped}) at site "
                            f"{sweep.points} ({sweep.outcomes})")
    # The control: a sweep that failed nothing proves nothing.
    assert sweep.points > 0, f"{operation}: no fault site reached: is fail-nth working?"
    # Every run's mount is gone by now: an error path that forgot a kfree shows here.
    measure(kmemleak_reports=leaks.assert_erofs_leaked_nothing())
