"""Mappings held by other processes: a child maps a file, closes it and waits; the
mapping outlives mounts, cache drops and reclaim until it is released."""

import ctypes
import errno
import hashlib
import json
import os
import time

from pcprobe.pages import Mapping

HOLDERS = {}


def hold(path, tag, timeout=120.0):
    """A child maps ``path`` (the file is closed right after mmap), touches every page and
    waits, at most ``timeout`` seconds; ``release`` makes it hash the mapping and exit."""
    ready, go, out = (f"/run/hold-{tag}.{s}" for s in ("ready", "go", "out"))
    for name in (ready, go, out):
        if os.path.exists(name):
            os.unlink(name)
    pid = os.fork()
    if pid == 0:
        try:
            mapping = Mapping(path)
            mapping.touch()
            open(ready, "w").close()
            deadline = time.monotonic() + timeout
            while not os.path.exists(go) and time.monotonic() < deadline:
                time.sleep(0.01)
            result = {}
            with open(go) as fh:
                if fh.read() == "pageout":
                    result["paged_out"] = mapping.page_out()
            data = ctypes.string_at(mapping.address, mapping.size)
            result.update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
        except Exception as exc:
            result = {"error": str(exc)}
        with open(out, "w") as fh:
            json.dump(result, fh)
        os._exit(0)
    deadline = time.monotonic() + timeout
    while not os.path.exists(ready):
        if os.waitpid(pid, os.WNOHANG)[0] or time.monotonic() > deadline:
            raise OSError(errno.ECHILD, f"the holder of {path} did not map it")
        time.sleep(0.01)
    HOLDERS[tag] = pid
    return {"pid": pid}


def end_holders():
    """Kill every holder still alive: a test that failed before release() would otherwise
    leave mapped pages resident (drop_caches cannot drop them) for the tests after it."""
    ended = []
    for tag, pid in list(HOLDERS.items()):
        try:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        ended.append(tag)
        del HOLDERS[tag]
    return {"ended": ended}


def release(tag, pageout=False):
    """The holder hashes its mapping (every page touched again) and exits. With
    ``pageout`` it first reclaims its own pages with MADV_PAGEOUT, as memory pressure
    would, and reports what stayed resident: the hash then faults them back in."""
    pid = HOLDERS.pop(tag)
    # Written aside and renamed: the holder polls for the name and must never see it empty.
    with open(f"/run/hold-{tag}.go.tmp", "w") as fh:
        fh.write("pageout" if pageout else "")
    os.rename(f"/run/hold-{tag}.go.tmp", f"/run/hold-{tag}.go")
    os.waitpid(pid, 0)
    with open(f"/run/hold-{tag}.out") as fh:
        return json.load(fh)
