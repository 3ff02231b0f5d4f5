"""The probe's server: each operation by its name on the wire (the names of
harness/guest/probe.py's Batch methods, which declare the operations and
their arguments), batches in and answers out, one JSON line each."""

import importlib
import json
import sys

from pcprobe.base import child_result
from pcprobe.cgroups import cgroup_read
from pcprobe.cores import mapping_names
from pcprobe.devices import cleanup, loop_attach
from pcprobe.fanotify import fanotify_watch
from pcprobe.filecalls import fiemap, file_calls
from pcprobe.handles import reopen_by_handle, statfs_of, sysfs_knobs
from pcprobe.holders import end_holders, hold, release
from pcprobe.kernlog import kernel_log
from pcprobe.memory import drop_caches, meminfo, slab_objects, statvfs_free
from pcprobe.mounts import (
    do_mount,
    do_remount,
    do_umount,
    erofs_mounts,
    mount_unprivileged,
    patch_file,
)
from pcprobe.pages import (
    collapse,
    fadvise_dontneed,
    first_page_readahead,
    hint,
    mincore,
    mincore_as,
    pfns,
    smaps,
)
from pcprobe.programs import execute
from pcprobe.reads import parallel_read, read_as, read_file, seek_map, sha256_of
from pcprobe.walk import WALK_READ_CAP, walk
from pcprobe.watchers import watchers


def _helper(name):
    """A helper module beside this package (dmtarget: device mapper targets; failnth:
    failing allocations one at a time; treecheck: the generated-layout checks; kmemleak:
    leaks on demand; fusepass: a FUSE passthrough daemon), imported on first use: most
    guests never need most of them."""
    return importlib.import_module(name)


# Keyed by the names of harness/guest/probe.py's Batch methods, which declare each
# operation and its arguments.
OPS = {
    "read": lambda op: read_file(op["path"], op.get("method", "read")),
    "residency": lambda op: mincore(op["path"]),
    "residency_as": lambda op: mincore_as(op["path"], op["uid"]),
    "first_page_readahead": lambda op: first_page_readahead(op["path"], op["device"],
                                                            op["read_ahead_kb"],
                                                            op.get("advice")),
    "pfns": lambda op: pfns(op["paths"]),
    "smaps": lambda op: smaps(op["paths"]),
    "collapse_huge": lambda op: collapse(op["path"], op.get("touch", False), op.get("retries", 0)),
    "meminfo": lambda op: meminfo(),
    "slab_objects": lambda op: slab_objects(op["name"]),
    "cgroup_read": lambda op: cgroup_read(op["cgroup"], op["path"], op.get("method", "read"),
                                          op.get("limit")),
    "hold": lambda op: hold(op["path"], op["tag"], op.get("timeout", 120.0)),
    "release": lambda op: release(op["tag"], op.get("pageout", False)),
    "mount": lambda op: do_mount(op["source"], op["target"], op.get("options", ""),
                                 op.get("fstype", "erofs"), op.get("readonly", True),
                                 op.get("settle", True)),
    "umount": lambda op: do_umount(op["target"], op.get("lazy", False),
                                   op.get("settle", True)),
    "remount": lambda op: do_remount(op["target"], op.get("options", ""),
                                     op.get("settle", True)),
    "drop_caches": lambda op: drop_caches(op.get("level", 3), op.get("sync", True)),
    "erofs_mounts": lambda op: erofs_mounts(op["prefix"]),
    "fadvise_dontneed": lambda op: fadvise_dontneed(op["path"]),
    "hint": lambda op: hint(op["path"], op["advice"], op.get("settle", 5.0)),
    "end_holders": lambda op: end_holders(),
    "loop_attach": lambda op: loop_attach(op["path"], op.get("read_only", True)),
    "cleanup": lambda op: cleanup(op["prefix"], op["dirs"], op.get("devices", [])),
    "data_ranges": lambda op: seek_map(op["path"]),
    "parallel_read": lambda op: parallel_read(op["paths"]),
    "walk": lambda op: walk(op["root"], op.get("cap", WALK_READ_CAP), op.get("budget", 120.0),
                            data=op.get("data", True)),
    "file_state": lambda op: sha256_of(op["path"]),
    "patch_file": lambda op: patch_file(op["path"], op["edits"], op.get("truncate")),
    "mount_unprivileged": lambda op: mount_unprivileged(op["source"], op["target"],
                                                        op.get("options", "")),
    "free_bytes": lambda op: statvfs_free(op["path"]),
    "file_calls": lambda op: file_calls(op["path"]),
    "reopen_by_handle": lambda op: reopen_by_handle(op["root"], op["paths"],
                                                    op.get("drop_level", 2)),
    "statfs": lambda op: statfs_of(op["path"]),
    "sysfs_knobs": lambda op: sysfs_knobs(op["target"], op.get("writes", [])),
    "watchers": lambda op: watchers(op["path"]),
    "mapping_names": lambda op: mapping_names(op["path"]),
    "fanotify_watch": lambda op: fanotify_watch(op["image"], op["root"], op["path"],
                                                op.get("deny", False),
                                                op.get("mount_options")),
    "read_as": lambda op: read_as(op["path"], op["uid"], op.get("method", "read")),
    "execute": lambda op: execute(op["path"], op.get("timeout", 60.0)),
    "tree_check": lambda op: _helper("treecheck").tree_check(
        op["root"], op["entries"], op.get("methods", ["read"])),
    "residencies": lambda op: _helper("treecheck").residency(op["paths"]),
    "fuse_passthrough_unmount": lambda op: _helper("fusepass").passthrough_unmount(
        op["source"], op["target"], op["workdir"]),
    "fiemap": lambda op: fiemap(op["paths"]),
    "lookup": lambda op: _helper("treecheck").lookup(op["paths"]),
    "dm_create": lambda op: {"device": _helper("dmtarget").create(
        _helper("dmtarget").PREFIX + op["name"], op["device"])},
    "dm_swap": lambda op: _helper("dmtarget").swap(
        _helper("dmtarget").PREFIX + op["name"], op["kind"], op["device"],
        op.get("delay_ms", 0)) or {},
    # In a child: a pointer left on its kernel stack by the sweep's calls goes with it
    # (kmemleak scans the kernel stacks of live tasks, and would take it for a reference).
    "fail_nth_sweep": lambda op: child_result(lambda: _helper("failnth").sweep(
        op["operation"], op["source"], op.get("options", ""), op["path"], op["sha256"],
        op["root"], op.get("remount_options"), op.get("max_n", 1000), op.get("budget", 240.0),
        op.get("twin"))),
    "kmemleak_clear": lambda op: _helper("kmemleak").clear(),
    "kmemleak_scan": lambda op: _helper("kmemleak").scan(),
    "kernel_log_mark": lambda op: kernel_log().mark(),
    "kernel_log_since": lambda op: kernel_log().since(op["mark"]),
}


def run(ops):
    results = []
    for op in ops:
        try:
            results.append(OPS[op["op"]](op))
        except OSError as exc:
            results.append({"error": str(exc), "errno": exc.errno or 0})
        except Exception as exc:
            results.append({"error": f"{type(exc).__name__}: {exc}", "errno": 0})
    return results


def main():
    if sys.argv[1] == "--serve":
        # One batch per line in, one line of results out: Python starts once per VM.
        for line in sys.stdin:
            sys.stdout.write(json.dumps(run(json.loads(line))) + "\n")
            sys.stdout.flush()
        return
    json.dump(run(json.loads(sys.argv[1])), sys.stdout)
