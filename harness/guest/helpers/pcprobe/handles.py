"""What NFS servers, fanotify listeners and backup tools ask of a filesystem besides its
files' bytes: file handles (name_to_handle_at, then open_by_handle_at after the dentries are
gone, which makes the kernel rebuild a directory's path through ".."), statfs of the mount
and of an open file, and the filesystem's own knobs under /sys/fs/<fs>/<sb>/."""

import ctypes
import hashlib
import os
import stat

from pcprobe.base import AT_FDCWD, libc
from pcprobe.memory import drop_caches

MAX_HANDLE_SZ = 128


class _FileHandle(ctypes.Structure):
    _fields_ = [("handle_bytes", ctypes.c_uint), ("handle_type", ctypes.c_int),
                ("f_handle", ctypes.c_ubyte * MAX_HANDLE_SZ)]


libc.name_to_handle_at.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p,
                                   ctypes.POINTER(ctypes.c_int), ctypes.c_int]
libc.open_by_handle_at.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
libc.statfs.argtypes = [ctypes.c_char_p, ctypes.c_void_p]


def _encode(path):
    """The handle of ``path``, after first asking with no room: the kernel must refuse with
    EOVERFLOW and say how many bytes the handle needs."""
    handle, mount_id = _FileHandle(), ctypes.c_int()
    handle.handle_bytes = 0
    rc = libc.name_to_handle_at(AT_FDCWD, os.fsencode(path), ctypes.byref(handle),
                                ctypes.byref(mount_id), 0)
    probe_errno = 0 if rc == 0 else ctypes.get_errno()
    needed = handle.handle_bytes
    handle.handle_bytes = MAX_HANDLE_SZ
    if libc.name_to_handle_at(AT_FDCWD, os.fsencode(path), ctypes.byref(handle),
                              ctypes.byref(mount_id), 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"name_to_handle_at {path}: {os.strerror(err)}")
    return handle, {"short_errno": probe_errno, "needed_bytes": needed,
                    "handle_bytes": handle.handle_bytes, "handle_type": handle.handle_type}


def _opened(fd):
    """What the file behind ``fd`` is: its inode, the path the kernel names it by, and for
    a regular file its bytes' digest."""
    st = os.fstat(fd)
    out = {"ino": st.st_ino, "path": os.readlink(f"/proc/self/fd/{fd}")}
    if stat.S_ISREG(st.st_mode):
        digest, count = hashlib.sha256(), 0
        while chunk := os.read(fd, 1 << 16):
            digest.update(chunk)
            count += len(chunk)
        out["read"] = {"bytes": count, "sha256": digest.hexdigest()}
    return out


def reopen_by_handle(root, paths, drop_level):
    """Each of ``paths`` (on the mount at ``root``) encoded as a handle, then the caches
    dropped at ``drop_level`` (2: dentries and inodes, 3: the pages too; 0: nothing), then
    each opened by its handle. Per path: the handle's sizes and what it opened (or the
    error text)."""
    encoded = {path: _encode(path) for path in paths}
    before = {path: os.stat(path).st_ino for path in paths}
    if drop_level:
        drop_caches(drop_level)
    mount_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    out = {}
    try:
        for path, (handle, facts) in encoded.items():
            fd = libc.open_by_handle_at(mount_fd, ctypes.byref(handle), os.O_RDONLY)
            if fd < 0:
                err = ctypes.get_errno()
                out[path] = {**facts, "ino_before": before[path],
                             "error": f"{os.strerror(err)} (errno {err})"}
                continue
            try:
                out[path] = {**facts, "ino_before": before[path], **_opened(fd)}
            finally:
                os.close(fd)
    finally:
        os.close(mount_fd)
    return out


def statfs_of(path):
    """statfs(2) of ``path`` (its f_type, and the statvfs fields) and fstatvfs of it opened,
    as numbers (f_fsid as glibc gives it: the kernel's two words in one, low word first)."""
    def fields(st):
        # The C fields are unsigned; Python hands some back signed (2^64-1 as -1).
        return {name: getattr(st, f"f_{name}") & ((1 << 64) - 1)
                for name in ("bsize", "frsize", "blocks", "bfree", "bavail", "files",
                             "ffree", "namemax", "fsid", "flag")}
    fd = os.open(path, os.O_RDONLY)
    try:
        by_fd = fields(os.fstatvfs(fd))
    finally:
        os.close(fd)
    buf = ctypes.create_string_buffer(120)  # struct statfs (x86_64): f_type first
    if libc.statfs(os.fsencode(path), buf) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"statfs {path}: {os.strerror(err)}")
    magic = int.from_bytes(buf.raw[:8], "little")
    return {"path": fields(os.statvfs(path)), "fd": by_fd, "magic": magic}


def sysfs_dir(target, fs="erofs"):
    """The directory of the filesystem instance mounted at ``target`` under /sys/fs/<fs>/:
    named by its block device (loop0, vdb), or for a mount without one by its anonymous
    device number (major:minor), as the kernel names it (super_set_sysfs_name_id)."""
    dev = os.stat(target).st_dev
    number = f"{os.major(dev)}:{os.minor(dev)}"
    block = f"/sys/dev/block/{number}"
    name = os.path.basename(os.path.realpath(block)) if os.path.exists(block) else number
    return f"/sys/fs/{fs}/{name}"


def sysfs_knobs(target, writes):
    """The attributes of the filesystem instance mounted at ``target``: every readable
    one's text, then each of ``writes`` ([name, value]) in turn, with the errno it got (0:
    taken) and the attribute's text after it."""
    directory = sysfs_dir(target)
    values = {}
    for name in sorted(os.listdir(directory)):
        try:
            with open(os.path.join(directory, name)) as fh:
                values[name] = fh.read().strip()
        except OSError as exc:
            values[name] = f"errno {exc.errno}"
    written = []
    for name, value in writes:
        attr = os.path.join(directory, name)
        try:
            with open(attr, "w") as fh:
                fh.write(value)
            err = 0
        except OSError as exc:
            err = exc.errno or 0
        try:
            with open(attr) as fh:
                after = fh.read().strip()
        except OSError as exc:
            after = f"errno {exc.errno}"
        written.append({"name": name, "value": value, "errno": err, "after": after})
    return {"directory": directory, "values": values, "writes": written}
