"""kmemleak on demand (guest side): forget what is reported so far, and later ask what
leaked since (CONFIG_DEBUG_KMEMLEAK, the debug tree).

kmemleak reports an object only when it is older than its minimum age (5 s) and was found
unreferenced, with an unchanged checksum, by two scans in a row; so a scan here waits out
the age and scans twice. What it reports is then cleared, so that the next scan reports
only what leaks after it.
"""

import errno
import os
import time

CONTROL = "/sys/kernel/debug/kmemleak"
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


def scan():
    """The objects that leaked since the last clear: each record as kmemleak prints it
    (the object, its allocating task and the allocation's backtrace)."""
    _debugfs()
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
