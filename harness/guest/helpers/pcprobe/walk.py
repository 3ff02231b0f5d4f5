"""Walking a (possibly damaged) mount as a reader would, every failure recorded with
its errno so that the walk goes on to the end."""

import errno
import hashlib
import mmap
import os
import time

from pcprobe.base import MAP_FAILED, libc, oserror, stat_is
from pcprobe.reads import capped_read

WALK_READ_CAP = 8 << 20  # a damaged inode may claim any size: read at most this much


def _capped_mmap(path, size, cap):
    """Hash the file through a shared mapping of it, read via /proc/self/mem: a fault that
    fails (EIO under a damaged image) is then a short read, not a SIGBUS killing the probe,
    and it still goes through the mapping's fault path."""
    if size == 0:
        return {"bytes": 0, "sha256": hashlib.sha256(b"").hexdigest()}
    length = min(size, cap)
    fd = os.open(path, os.O_RDONLY)
    try:
        address = libc.mmap(None, length, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
    finally:
        os.close(fd)
    if address in (None, MAP_FAILED):
        oserror(f"mmap {path}")
    try:
        mem = os.open("/proc/self/mem", os.O_RDONLY)
        try:
            digest, done = hashlib.sha256(), 0
            while done < length:
                chunk = os.pread(mem, min(1 << 16, length - done), address + done)
                if not chunk:
                    raise OSError(errno.EFAULT, f"the mapping gave no bytes at {done}")
                digest.update(chunk)
                done += len(chunk)
        finally:
            os.close(mem)
    finally:
        libc.munmap(address, length)
    return {"bytes": done, "sha256": digest.hexdigest()}


def _attempt(what, fn, *args):
    try:
        return fn(*args)
    except OSError as exc:
        return {"error": f"{what}: {exc.strerror or exc}", "errno": exc.errno or 0}


def walk(root, cap=WALK_READ_CAP, budget=120.0, limit=5000, data=True):
    """Every entry under ``root``, each looked at as a reader would: lstat, readlink,
    listxattr and getxattr, read(2) and mmap of regular files (at most ``cap`` bytes;
    ``data=False``: metadata only). Each failure is recorded with its errno and the walk goes
    on; directories already seen (a damaged entry pointing at an ancestor) are not entered
    twice."""
    out, seen, pending = {}, set(), [""]
    deadline = time.monotonic() + budget
    while pending and len(out) < limit and time.monotonic() < deadline:
        rel = pending.pop()
        here = os.path.join(root, rel) if rel else root
        try:
            names = sorted(os.listdir(here))
        except OSError as exc:
            out[rel or "."] = {"error": f"listdir: {exc.strerror}", "errno": exc.errno or 0}
            continue
        for name in names:
            path_rel = os.path.join(rel, name) if rel else name
            path = os.path.join(root, path_rel)
            try:
                st = os.lstat(path)
            except OSError as exc:
                out[path_rel] = {"error": f"lstat: {exc.strerror}", "errno": exc.errno or 0}
                continue
            entry = {"mode": st.st_mode, "size": st.st_size}
            xattrs = _attempt("listxattr", lambda p: {"names": os.listxattr(
                p, follow_symlinks=False)}, path)
            if "names" in xattrs:
                values = {}
                for xname in xattrs["names"]:
                    got = _attempt("getxattr", lambda p, x: {"v": os.getxattr(
                        p, x, follow_symlinks=False).hex()}, path, xname)
                    values[xname] = got.get("v", got.get("error"))
                entry["xattrs"] = values
            else:
                entry["xattrs_error"] = xattrs
            if stat_is(st, "dir"):
                key = (st.st_dev, st.st_ino)
                if key in seen:
                    entry["cycle"] = True
                else:
                    seen.add(key)
                    pending.append(path_rel)
            elif stat_is(st, "link"):
                entry["link"] = _attempt("readlink", lambda p: {"to": os.readlink(p)}, path)
            elif stat_is(st, "reg") and data:
                entry["read"] = _attempt("read", capped_read, path, cap)
                entry["mmap"] = _attempt("mmap", _capped_mmap, path, st.st_size, cap)
            out[path_rel] = entry
    return {"entries": out, "complete": not pending}
