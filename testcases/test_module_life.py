"""The module's life: after every kind of mount is gone, `rmmod erofs` works and leaves no
object behind, and `modprobe erofs` brings back a module that mounts and reads right.

Debian builds EROFS as a module; a tree build does with
`tree:,kconfig=kconfigs/erofs-module.config` (built in, the test skips and says so).
Sharing adds state to the module's life: the pseudo mount that holds every shared inode, and
shared inodes that outlive the mounts whose files made them until their last reference goes.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from harness.erofs.images import BuiltImage
from harness.guest.handle import Guest
from harness.guest.mounts import Mount, Mounter
from harness.guest.probe import Probe
from testcases.conftest import SHARE, SIZES_FILES, twin_of

pytestmark = pytest.mark.requires_kernel("erofs")

# What a module that leaves objects behind makes the kernel say (the warnings themselves
# fail the test as every kernel report does; these lines say which cache).
LEFT_BEHIND = ("Slab cache still has objects", "kmem_cache_destroy", "Busy inodes",
               "still in use")


def _reads_right(pagecache: Probe, m: Mount, paths: list[str]) -> dict[str, str]:
    with pagecache.batch() as batch:
        reads = [(p, batch.read(m.path(p), may_fail=True)) for p in paths]
    return {p: got.error if got.failed else "wrong bytes" for p, got in reads
            if got.failed or got.value.sha256 != m.image.file(p)["sha256"]}


@pytest.mark.parametrize("layout", ["", "-lz4"], ids=["plain", "lz4"])
@pytest.mark.parametrize("options", ["", SHARE], ids=["private", "sharing"])
def test_erofs_unloads_without_leftovers_and_loads_again_after_its_mounts(
        erofs_image: Callable[[str], BuiltImage], mount: Mounter, pagecache: Probe,
        guest: Guest, source: str, options: str, layout: str) -> None:
    kernel = pagecache.vm.kernel
    if kernel.option("EROFS_FS") != "m":
        pytest.skip(f"EROFS is built into {kernel.release} (CONFIG_EROFS_FS="
                    f"{kernel.option('EROFS_FS')}): a tree build needs "
                    f"kconfig=kconfigs/erofs-module.config")
    if options and not kernel.features["page_cache_share"]:
        pytest.skip(f"kernel {kernel.release} lacks page_cache_share")
    a, b = erofs_image(f"sizes{layout}"), erofs_image(f"renamed{layout}")
    ma, mb = mount(a, options, source), mount(b, options, source)
    twins = [twin_of(a, b, p) for p in SIZES_FILES]
    assert not _reads_right(pagecache, ma, SIZES_FILES)
    assert not _reads_right(pagecache, mb, twins)
    for m in (ma, mb):
        gone = mount.umount(m)
        assert gone.ok, f"umount {m.target}: {gone.errname}"
    mark = pagecache.kernel_log_mark()
    unloaded = guest.run("rmmod erofs")
    try:
        said = pagecache.kernel_log_since(mark).lines
        assert unloaded.status == 0, (f"rmmod erofs after the last unmount: "
                                      f"{unloaded.stderr.strip()}")
        assert guest.run("test -e /sys/module/erofs").status != 0, "erofs is still loaded"
        left = [line for line in said if any(word in line for word in LEFT_BEHIND)]
        assert not left, f"the module left objects behind: {left}"
    finally:
        # Whatever happened, the guest gets its module back for the tests after this one.
        guest.check("modprobe erofs")
    again = mount(a, options, source)
    assert not _reads_right(pagecache, again, SIZES_FILES)
