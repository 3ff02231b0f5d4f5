"""Guest-side page cache probe (runs inside the VM, standard library only), one module per
concern: reads (every access path; io_uring in iouring), pages (residency, page frames,
smaps, collapse, hints), memory, cgroups, holders (mappings kept by other processes),
kernlog, mounts, devices (loop devices and the clean-up), walk, fanotify, filecalls,
watchers (cachestat, uprobes), cores (what a core dump names a mapping), programs, and the
server that answers the host (``python3 -m pcprobe --serve``: one JSON list of operations
per line in, one list of answers per line out; a failed operation answers
{"error": text, "errno": n} and the batch goes on).

The other helpers beside this package (races, stress, savings, treecheck) call the probe's
functions through the names below.
"""

import os
import sys

# The helpers beside this package (dmtarget, failnth, ...) are imported by name, however
# the probe was started.
_HELPERS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _HELPERS not in sys.path:
    sys.path.insert(0, _HELPERS)

from pcprobe.base import MNT_DETACH, PAGE, in_child, libc, where_in_kernel  # noqa: E402
from pcprobe.cgroups import cgroup_read  # noqa: E402
from pcprobe.devices import cleanup, loop_attach  # noqa: E402
from pcprobe.kernlog import kernel_log  # noqa: E402
from pcprobe.memory import drop_caches, meminfo, slab_objects  # noqa: E402
from pcprobe.mounts import do_mount, do_remount, do_umount, erofs_mounts  # noqa: E402
from pcprobe.pages import collapse, fadvise_dontneed, mincore  # noqa: E402
from pcprobe.reads import read_file  # noqa: E402

__all__ = ["MNT_DETACH", "PAGE", "cgroup_read", "cleanup", "collapse", "do_mount",
           "do_remount", "do_umount", "drop_caches", "erofs_mounts", "fadvise_dontneed",
           "in_child", "kernel_log", "libc", "loop_attach", "meminfo", "mincore", "read_file",
           "slab_objects", "where_in_kernel"]
