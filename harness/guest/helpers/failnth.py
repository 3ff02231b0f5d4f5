"""Failing allocations, one at a time: the per-task fail-nth interface (what syzkaller uses).

``sweep`` runs one operation on an EROFS mount again and again; before the n-th run it arms
/proc/thread-self/fail-nth with n, so that the n-th fault site the operation reaches (a
slab or page allocation) fails. It stops at the first n the operation completes without
reaching: every site it has was failed once. After each run it checks what the operation
returned and what it left: an error other than ENOMEM or EIO, a mount neither usable nor
gone, a file that reads wrong without faults, an unmount that is refused.

Runs in the guest (python3, standard library only); needs CONFIG_FAULT_INJECTION,
FAILSLAB, FAIL_PAGE_ALLOC and FAULT_INJECTION_DEBUG_FS.
"""

import ctypes
import errno
import hashlib
import mmap
import os
import time

libc = ctypes.CDLL("libc.so.6", use_errno=True)
libc.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_char_p]
libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
libc.readahead.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_size_t]
MS_RDONLY, MS_REMOUNT = 1, 32
MADV_POPULATE_READ = 22  # not in Python 3.11's mmap module
POSIX_FADV_DONTNEED = 4
OPERATIONS = ("mount", "open", "read", "mmap_fault", "readahead", "remount", "umount")
# With a twin: a mount of another image of the domain whose file of the same content was
# looked up first, so that the operation joins a shared inode that exists already.
# What an operation may answer when an allocation in it fails. A page fault that fails is a
# SIGBUS, which MADV_POPULATE_READ answers as EFAULT.
CLEAN_ERRORS = {errno.ENOMEM, errno.EIO}
CLEAN_FAULT_ERRORS = CLEAN_ERRORS | {errno.EFAULT}
SETUP_FAILED = -1  # the run's set-up (a mount without faults) failed: no verdict on it
DEBUGFS = "/sys/kernel/debug"


def _enable():
    """Let fail-nth fail the allocations that may sleep too (most of the kernel's) and
    single pages, without a stack trace on the console per injected fault (slow under
    TCG)."""
    for attr in ("failslab", "fail_page_alloc"):
        for name, value in (("ignore-gfp-wait", "N"), ("verbose", "0")):
            with open(f"{DEBUGFS}/{attr}/{name}", "w") as fh:
                fh.write(value)
    # And single pages too: the page cache's folios (min-order is 1 by default).
    for name, value in (("ignore-gfp-highmem", "N"), ("min-order", "0")):
        with open(f"{DEBUGFS}/fail_page_alloc/{name}", "w") as fh:
            fh.write(value)


def _mounted(target):
    with open("/proc/self/mounts") as fh:
        return any(line.split()[1] == target for line in fh)


def _mount(source, target, options):
    if libc.mount(source.encode(), target.encode(), b"erofs", MS_RDONLY,
                  options.encode() if options else None) != 0:
        return ctypes.get_errno()
    return 0


def _umount(target):
    return 0 if libc.umount2(target.encode(), 0) == 0 else ctypes.get_errno()


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _cold(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


class Armed:
    """fail-nth of this thread, armed around exactly one operation. The file is opened
    before arming, so that only the operation's own fault sites count."""

    def __init__(self):
        self.fd = os.open("/proc/thread-self/fail-nth", os.O_RDWR)

    def run(self, n, action):
        """(errno or 0, whether the n-th site was reached and failed). Disarmed whatever
        happens: an armed thread would fail the probe's own next allocation."""
        os.pwrite(self.fd, str(n).encode(), 0)
        err = 0
        try:
            action()
        except OSError as exc:
            err = exc.errno
        except MemoryError:  # an allocation of Python's own, failed by the injection
            err = errno.ENOMEM
        finally:
            left = os.pread(self.fd, 32, 0)
            os.pwrite(self.fd, b"0", 0)
        return err, int(left.strip() or b"0") == 0

    def close(self):
        os.close(self.fd)


def _check_oserror(rc):
    if rc:
        raise OSError(rc, os.strerror(rc))


def sweep(operation, source, options, path, sha256, root, remount_options=None,
          max_n=1000, budget=240.0, twin=None):
    """Fail the 1st, 2nd, ... fault site of ``operation`` in turn on a mount of ``source``
    with ``options``, checking after each run. ``path``: the file (relative to the mount)
    the file operations act on and whose bytes are checked (``sha256``)."""
    if operation not in OPERATIONS:
        raise ValueError(f"unknown operation {operation!r} (one of {', '.join(OPERATIONS)})")
    _enable()
    target = f"{root}/m"
    os.makedirs(target, exist_ok=True)
    file = f"{target}/{path}"
    twin_target = f"{root}/t"
    if twin is not None:
        # {"source": device or file, "path": the twin file in it}: mounted for the whole
        # sweep, its file looked up, so that every run's lookup joins its shared inode.
        os.makedirs(twin_target, exist_ok=True)
        _check_oserror(_mount(twin["source"], twin_target, options))
        os.stat(f"{twin_target}/{twin['path']}")
    armed = Armed()
    outcomes, problems, started, n = {}, [], time.monotonic(), 0
    clean = CLEAN_FAULT_ERRORS if operation == "mmap_fault" else CLEAN_ERRORS
    stopped = "max_n"
    try:
        while n < max_n:
            if time.monotonic() - started > budget:
                stopped = "budget"
                break
            n += 1
            err, injected = _once(operation, armed, n, source, target, options, file,
                                  remount_options, problems)
            if err == SETUP_FAILED:
                stopped = "set-up"
                break
            name = errno.errorcode.get(err, str(err)) if err else "ok"
            outcomes[name] = outcomes.get(name, 0) + 1
            if err and err not in clean:
                problems.append(f"n={n}: {operation} failed with {name} ({os.strerror(err)}), "
                                f"not {' or '.join(sorted(errno.errorcode[e] for e in clean))}")
            problems += _after(operation, n, err, source, target, options, file, sha256)
            if len(problems) > 20:
                stopped = "problems"
                break
            if not injected:
                return {"points": n - 1, "complete": True, "stopped": "",
                        "outcomes": outcomes, "problems": problems}
    finally:
        armed.close()
        for point in (target, twin_target):
            if _mounted(point):
                libc.umount2(point.encode(), 2)
    return {"points": n, "complete": False, "stopped": stopped, "outcomes": outcomes,
            "problems": problems}


def _once(operation, armed, n, source, target, options, file, remount_options, problems):
    """Set up, then run the operation with its n-th fault site armed."""
    if operation == "mount":
        return armed.run(n, lambda: _check_oserror(_mount(source, target, options)))
    rc = _mount(source, target, options)
    if rc:
        problems.append(f"n={n}: mounting without faults failed: {os.strerror(rc)}")
        return SETUP_FAILED, True
    if operation == "open":  # the first lookup and open of the file since the mount
        fds = []
        err, injected = armed.run(n, lambda: fds.append(os.open(file, os.O_RDONLY)))
        for fd in fds:
            os.close(fd)
        return err, injected
    if operation in ("remount", "umount"):
        os.stat(file)  # a mount in use: its inode (and shared inode) exist
        if operation == "umount":
            return armed.run(n, lambda: _check_oserror(_umount(target)))
        return armed.run(n, lambda: _check_oserror(
            0 if libc.mount(b"none", target.encode(), None, MS_REMOUNT | MS_RDONLY,
                            (remount_options or options or "").encode() or None) == 0
            else ctypes.get_errno()))
    _cold(file)
    fd = os.open(file, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        if operation == "read":
            # Into a buffer whose pages exist before arming: the faults of a fresh buffer
            # in copy_to_user would be fault sites of their own, not EROFS's.
            buf = bytearray(b"\1" * max(size, 1))

            def read():
                offset = 0
                while offset < size:
                    got = os.preadv(fd, [memoryview(buf)[offset:]], offset)
                    if not got:
                        break
                    offset += got
            return armed.run(n, read)
        if operation == "readahead":
            return armed.run(n, lambda: _check_oserror(
                0 if libc.readahead(fd, 0, size) == 0 else ctypes.get_errno()))
        with mmap.mmap(fd, size, prot=mmap.PROT_READ) as m:
            # MADV_POPULATE_READ faults every page in and answers an errno where a
            # failed fault would otherwise be a SIGBUS.
            return armed.run(n, lambda: m.madvise(MADV_POPULATE_READ))
    finally:
        os.close(fd)


def _after(operation, n, err, source, target, options, file, sha256):
    """What the run left must be usable or cleanly gone; the file reads right without
    faults (as the cache holds it, then cold); the mount goes away when asked."""
    problems = []
    if operation == "umount" and not err:
        if _mounted(target):
            problems.append(f"n={n}: umount succeeded but the mount is still there")
        return problems
    if operation == "mount" and err:
        if _mounted(target):
            problems.append(f"n={n}: mount failed ({os.strerror(err)}) but is mounted")
            _umount(target)
        rc = _mount(source, target, options)  # a retry without faults must work
        if rc:
            return [*problems, f"n={n}: the mount without faults after a failed one "
                               f"failed: {os.strerror(rc)}"]
    if not _mounted(target):
        return [*problems, f"n={n}: {operation} left no mount behind"]
    for when in ("as cached", "cold"):
        try:
            if when == "cold":
                _cold(file)
            got = _sha256(file)
            if got != sha256:
                problems.append(f"n={n}: {file} read {when} after the {operation} is wrong "
                                f"({got[:16]}, want {sha256[:16]})")
        except OSError as exc:
            problems.append(f"n={n}: {file} read {when} after the {operation}: "
                            f"{exc.strerror}")
    rc = _umount(target)
    if rc:
        problems.append(f"n={n}: umount after the {operation} refused: {os.strerror(rc)}")
        libc.umount2(target.encode(), 2)
    return problems
