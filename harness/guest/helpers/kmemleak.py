"""kmemleak on demand (guest side): forget what is reported so far, and later ask what
leaked since (CONFIG_DEBUG_KMEMLEAK, the debug tree).

kmemleak reports an object only when it is older than its minimum age (5 s) and was found
unreferenced, with an unchanged checksum, by two scans in a row; so a scan here waits out
the age and scans twice. Task stacks are not scanned as such, and the stacks the kernel
keeps for reuse are cycled through fresh tasks first: a stale pointer left on a stack by
the call that leaked an object would keep it from being reported. What a scan reports is
then cleared, so that the next scan reports only what leaks after it.
"""

import errno
import os
import time

CONTROL = "/sys/kernel/debug/kmemleak"
CACHED_STACKS = 2  # kernel/fork.c's NR_CACHED_STACKS
MIN_AGE_SECONDS = 5.5  # kmemleak's jiffies_min_age is 5 s; a little more for TCG's clocks


def _debugfs():
    if not os.path.exists(CONTROL) and os.path.isdir("/sys/kernel/debug"):
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mount(b"debugfs", b"/sys/kernel/debug", b"debugfs", 0, None)


def _write(command):
    # Text-mode appends are refused by debugfs files: one write(2), as the docs do.
    fd = os.open(CONTROL, os.O_WRONLY)
    try:
        os.write(fd, command.encode())
    finally:
        os.close(fd)


def clear():
    """Mark every object reported so far as seen; the answer says whether kmemleak runs."""
    _debugfs()
    try:
        # Task stacks keep stale pointers (the probe's own, deep in a system call, to an
        # object freed or leaked in it): scanned, they hide the leaks of the calls it made.
        _write("stack=off")
        _write("clear")
    except OSError as exc:
        # EPERM/EBUSY: kmemleak turned itself off (out of early log space, or an error).
        return {"running": False, "why": f"{CONTROL}: {os.strerror(exc.errno)}"}
    return {"running": True, "why": ""}


def _records(text):
    out, current = [], []
    for line in text.splitlines():
        if line.startswith("unreferenced object") and current:
            out.append("\n".join(current))
            current = []
        if line.strip():
            current.append(line.rstrip())
    if current:
        out.append("\n".join(current))
    return out


def _recycle_stacks():
    """Run the kernel stacks each CPU keeps for reuse through fresh tasks. A task's stack is
    vmalloc'ed (VMAP_STACK), and kmemleak scans every vmalloc area it knows, so the stack
    of a task that has exited, kept for the next one, still holds that task's stale
    pointers until reused, when it is cleared: an object leaked by a call of the gone task
    would look referenced. Two tasks alive at once per CPU take both cached stacks."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except OSError:
        return
    before = os.sched_getaffinity(0)
    try:
        for cpu in cpus:
            os.sched_setaffinity(0, {cpu})
            # One pipe for the CPU's children: each holds on until the parent closes it.
            read_end, write_end = os.pipe()
            pids = []
            for _ in range(CACHED_STACKS):
                pid = os.fork()
                if pid == 0:
                    try:
                        os.close(write_end)
                        os.read(read_end, 1)
                    finally:
                        os._exit(0)
                pids.append(pid)
            os.close(read_end)
            os.close(write_end)
            for pid in pids:
                os.waitpid(pid, 0)
    finally:
        os.sched_setaffinity(0, before)


def scan():
    """The objects that leaked since the last clear: each record as kmemleak prints it
    (the object, its allocating task and the allocation's backtrace)."""
    _debugfs()
    _recycle_stacks()
    time.sleep(MIN_AGE_SECONDS)
    try:
        for _ in range(2):
            _write("scan")
        with open(CONTROL) as fh:
            text = fh.read()
        _write("clear")
    except OSError as exc:
        if exc.errno in (errno.EPERM, errno.EBUSY, errno.ENOENT):
            return {"running": False, "why": f"{CONTROL}: {os.strerror(exc.errno)}",
                    "leaks": []}
        raise
    return {"running": True, "why": "", "leaks": _records(text)}
