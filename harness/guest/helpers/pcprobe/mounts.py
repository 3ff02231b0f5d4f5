"""mount(2), remount and umount2 with the kernel lines each caused; unprivileged
mounts; the EROFS mount table; an image changed under its live mount."""

import ctypes
import errno
import os
import time

from pcprobe.base import MNT_DETACH, MS_RDONLY, child_result, libc, oserror
from pcprobe.kernlog import kernel_log


def _settle():
    time.sleep(0.05)  # let printk from the syscall reach the ring buffer


def do_mount(source, target, options, fstype="erofs", readonly=True, settle=True):
    os.makedirs(target, exist_ok=True)
    log = kernel_log()
    mark = log.mark()["seq"]
    rc = libc.mount(source.encode(), target.encode(), fstype.encode(),
                    MS_RDONLY if readonly else 0, options.encode() if options else None)
    err = ctypes.get_errno() if rc != 0 else 0
    if settle:
        _settle()
    return {"ok": rc == 0, "errno": err, "errname": errno.errorcode.get(err, "") if err else "",
            "kmsg": log.since(mark)["lines"]}


MS_REMOUNT = 32


def do_remount(target, options, settle=True):
    """mount(2) with MS_REMOUNT and exactly ``options``: what a program that does not go
    through mount(8) (which re-sends the options in effect) asks of the kernel."""
    log = kernel_log()
    mark = log.mark()["seq"]
    rc = libc.mount(b"none", target.encode(), None, MS_REMOUNT | MS_RDONLY,
                    options.encode() if options else None)
    err = ctypes.get_errno() if rc != 0 else 0
    if settle:
        _settle()
    return {"ok": rc == 0, "errno": err, "errname": errno.errorcode.get(err, "") if err else "",
            "kmsg": log.since(mark)["lines"]}


def do_umount(target, lazy=False, settle=True):
    log = kernel_log()
    mark = log.mark()["seq"]
    rc = libc.umount2(target.encode(), MNT_DETACH if lazy else 0)
    err = ctypes.get_errno() if rc != 0 else 0
    if settle:
        _settle()
    return {"ok": rc == 0, "errno": err, "errname": errno.errorcode.get(err, "") if err else "",
            "kmsg": log.since(mark)["lines"]}


def erofs_mounts(prefix):
    """EROFS mounts at or under ``prefix``, as this process's mount table shows them."""
    found = {}
    with open("/proc/self/mounts") as fh:
        for line in fh:
            fields = line.split()
            if len(fields) >= 4 and fields[2] == "erofs" and (
                    fields[1] == prefix or fields[1].startswith(prefix + "/")):
                found[fields[1]] = fields[3].split(",")
    return {"mounts": found}


def patch_file(path, edits, truncate=None):
    """Write ``edits`` ([offset, hex bytes]) into a file in place and truncate it if asked:
    an image changed under its live mount."""
    fd = os.open(path, os.O_WRONLY)
    try:
        for offset, data in edits:
            os.pwrite(fd, bytes.fromhex(data), offset)
        if truncate is not None:
            os.ftruncate(fd, truncate)
        os.fsync(fd)
    finally:
        os.close(fd)
    return {}


CLONE_NEWUSER, CLONE_NEWNS = 0x10000000, 0x00020000
NOBODY = 65534
PR_SET_DUMPABLE = 4


def mount_unprivileged(source, target, options):
    """mount(2) from a child that is nobody, in a user and mount namespace of its own (root
    there): what an unprivileged user can ask of EROFS."""
    os.makedirs(target, exist_ok=True)

    def work():
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)
        # Changing credentials made the process undumpable, which makes its /proc files
        # root's: the namespace maps below could not be written.
        libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)
        if libc.unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0:
            oserror("unshare")
        for name, text in (("setgroups", "deny"), ("uid_map", f"0 {NOBODY} 1"),
                           ("gid_map", f"0 {NOBODY} 1")):
            with open(f"/proc/self/{name}", "w") as fh:
                fh.write(text)
        rc = libc.mount(source.encode(), target.encode(), b"erofs", MS_RDONLY,
                        options.encode() if options else None)
        err = ctypes.get_errno() if rc != 0 else 0
        return {"ok": rc == 0, "errno": err, "errname": errno.errorcode.get(err, "")}
    return {**child_result(work), "kmsg": []}
