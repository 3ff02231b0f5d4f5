"""System-wide memory figures and the caches: /proc/meminfo, a slab cache's
objects, drop_caches, a filesystem's free space."""

import errno
import os


def slab_objects(name):
    """Objects of the slab cache ``name`` from /proc/slabinfo: in use and allocated. SLUB
    counts the free objects in a CPU's own slabs as in use (hundreds of objects), so the
    cache is shrunk first where sysfs allows: that hands every CPU's slabs back."""
    try:
        with open(f"/sys/kernel/slab/{name}/shrink", "w") as fh:
            fh.write("1")
    except OSError:
        pass
    with open("/proc/slabinfo") as fh:
        for line in fh:
            fields = line.split()
            if fields and fields[0] == name:
                return {"active": int(fields[1]), "total": int(fields[2])}
    raise OSError(errno.ENOENT, f"no slab cache {name} in /proc/slabinfo")


def meminfo():
    out = {}
    with open("/proc/meminfo") as fh:
        for line in fh:
            name, value = line.split(":", 1)
            out[name] = int(value.split()[0])
    return out


DROP_CACHES_QUIET = "4"  # drops nothing; from then on the kernel logs no line per drop
_drop_caches_quiet = []


def drop_caches(level=3, sync=True):
    """``sync`` first unless told the caller wrote nothing (EROFS pages are never dirty).
    Quiet (the value 4 once; it cannot be or-ed into a drop, the sysctl's range is 1..4): a
    console line for each drop is slow under TCG and buries the log."""
    if sync:
        os.sync()
    if not _drop_caches_quiet:
        with open("/proc/sys/vm/drop_caches", "w") as fh:
            fh.write(DROP_CACHES_QUIET)
        _drop_caches_quiet.append(True)
    with open("/proc/sys/vm/drop_caches", "w") as fh:
        fh.write(str(level))
    return {}


def statvfs_free(path):
    st = os.statvfs(path)
    return {"free": st.f_bfree * st.f_frsize}
