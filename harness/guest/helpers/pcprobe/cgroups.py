"""A read charged to a memory cgroup of its own, and what the cgroup was charged."""

import errno
import gc
import json
import os

from pcprobe.base import read_to_end
from pcprobe.reads import read_file


def cgroup_read(cgroup, path, method, limit=None):
    """Read ``path`` in a child process that lives in cgroup ``cgroup`` (with memory.max
    ``limit`` bytes if given); report what the cgroup was charged.

    The child is a fork of this Python process: every page it writes after the fork is a
    copy, charged to the cgroup it is in at that moment, and Python writes reference counts
    all over its heap. Charged after joining, those copies ate a tight limit (megabytes for
    a garbage collection) and the OOM killer took the reader in the middle of a read. So the
    child turns the collector off and runs the read's code once on a small file before it
    joins: what the cgroup is charged for is then the read, which is what the callers
    measure."""
    base = f"/sys/fs/cgroup/{cgroup}"
    os.makedirs(base, exist_ok=True)
    with open("/sys/fs/cgroup/cgroup.subtree_control", "w") as ctl:
        ctl.write("+memory")
    if limit is not None:
        with open(f"{base}/memory.max", "w") as fh:
            fh.write(str(limit))
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            gc.disable()
            try:  # copies made here are not the cgroup's; a method /proc refuses is no harm
                json.dumps(read_file("/proc/self/stat", method))
            except OSError:
                pass
            with open(f"{base}/cgroup.procs", "w") as procs:
                procs.write(str(os.getpid()))
            result = read_file(path, method)
        except Exception as exc:  # report, do not raise, in the child
            result = {"error": str(exc)}
        try:  # the reader's own pages, while it still has them
            anon = _keyed_numbers(f"{base}/memory.stat").get("anon", 0)
        except OSError:
            anon = -1
        os.write(w, json.dumps({"read": result, "anon": anon}).encode())
        os._exit(0)
    os.close(w)
    data = read_to_end(r)
    _, status = os.waitpid(pid, 0)
    stat = _keyed_numbers(f"{base}/memory.stat")
    with open(f"{base}/memory.current") as fh:
        current = int(fh.read())
    if not data:  # the child died before it could answer: say how, not "bad JSON"
        events = _keyed_numbers(f"{base}/memory.events")
        how = (f"killed by signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status)
               else f"exit status {os.waitstatus_to_exitcode(status)}")
        raise OSError(errno.EIO, f"the reader of {path} in cgroup {cgroup} gave no answer: "
                      f"{how}; memory.events oom_kill={events.get('oom_kill', 0)}, "
                      f"memory.max {limit}, charged anon {stat.get('anon', 0)} B, "
                      f"file {stat.get('file', 0)} B, kernel {stat.get('kernel', 0)} B")
    answer = json.loads(data)
    return {"read": answer["read"], "file": stat.get("file", 0),
            "file_mapped": stat.get("file_mapped", 0), "current": current,
            "anon": answer["anon"], "inode": os.stat(base).st_ino}


def _keyed_numbers(path):
    """A cgroup file of "name value" lines (memory.stat, memory.events) as a dict."""
    out = {}
    with open(path) as fh:
        for line in fh:
            name, value = line.split()
            out[name] = int(value)
    return out
