"""The file calls a reader makes besides reading: statx's direct I/O alignment,
O_DIRECT, read leases, the filesystem label ioctl, and FIEMAP (where a file's data lies on
its device, as filefrag and backup tools ask)."""

import ctypes
import fcntl
import os
import struct

from pcprobe.base import AT_FDCWD, libc, oserror

SYS_STATX = 332  # x86_64
STATX_DIOALIGN = 0x2000
FS_IOC_GETFSLABEL = 0x81009431  # _IOR(0x94, 49, char[256])
FS_IOC_FIEMAP = 0xC020660B  # _IOWR('f', 11, struct fiemap)
FIEMAP_FLAG_SYNC = 0x1
FIEMAP_EXTENT_LAST = 0x1
FIEMAP_HEAD = struct.Struct("=QQIIII")  # start, length, flags, mapped, count, reserved
FIEMAP_EXTENT = struct.Struct("=QQQQQIIII")  # logical, physical, length, 2 reserved, flags
FIEMAP_BATCH = 256  # extents asked for per ioctl


def _errno_of(call):
    """0 when ``call()`` succeeds, else its errno."""
    try:
        call()
    except OSError as exc:
        return exc.errno or 0
    return 0


def file_calls(path):
    """What the kernel answers for ``path`` to the calls besides read(2) that readers make:
    statx's direct I/O alignment (and whether an O_DIRECT open then succeeds), a read lease
    (F_SETLEASE, as Samba and the NFS server take), and FS_IOC_GETFSLABEL on the file."""
    buf = ctypes.create_string_buffer(256)
    rc = libc.syscall(SYS_STATX, AT_FDCWD, os.fsencode(path), 0, STATX_DIOALIGN, buf)
    if rc != 0:
        oserror(f"statx {path}")
    # struct statx: stx_mask at 0, stx_dio_offset_align at 0x9c.
    mask = struct.unpack_from("<I", buf, 0)[0]
    out = {"dioalign_reported": bool(mask & STATX_DIOALIGN),
           "dio_offset_align": struct.unpack_from("<I", buf, 0x9c)[0]}
    out["odirect_errno"] = _errno_of(lambda: os.close(os.open(path, os.O_RDONLY | os.O_DIRECT)))
    fd = os.open(path, os.O_RDONLY)
    try:
        out["setfl_odirect_errno"] = _errno_of(
            lambda: fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_DIRECT))
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_DIRECT)
        def lease():
            fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_RDLCK)
            fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
        out["lease_errno"] = _errno_of(lease)
        out["fslabel_errno"] = _errno_of(lambda: fcntl.ioctl(fd, FS_IOC_GETFSLABEL,
                                                             bytearray(256)))
    finally:
        os.close(fd)
    return out


def fiemap(paths):
    """FS_IOC_FIEMAP of each file, the whole file, in as many calls as it takes: a list of
    [logical, physical, length, flags] per path, or the error text."""
    out = {}
    for path in paths:
        try:
            out[path] = _fiemap(path)
        except OSError as exc:
            out[path] = f"{os.strerror(exc.errno or 0)} (errno {exc.errno})"
    return out


def _fiemap(path):
    extents = []
    start = 0
    fd = os.open(path, os.O_RDONLY)
    try:
        while True:
            buf = bytearray(FIEMAP_HEAD.size + FIEMAP_BATCH * FIEMAP_EXTENT.size)
            FIEMAP_HEAD.pack_into(buf, 0, start, (1 << 64) - 1 - start, FIEMAP_FLAG_SYNC, 0,
                                  FIEMAP_BATCH, 0)
            fcntl.ioctl(fd, FS_IOC_FIEMAP, buf)
            mapped = FIEMAP_HEAD.unpack_from(buf, 0)[3]
            last = False
            for index in range(mapped):
                logical, physical, length, _, _, flags, *_ = FIEMAP_EXTENT.unpack_from(
                    buf, FIEMAP_HEAD.size + index * FIEMAP_EXTENT.size)
                extents.append([logical, physical, length, flags])
                last = bool(flags & FIEMAP_EXTENT_LAST)
            if last or mapped < FIEMAP_BATCH or not mapped:
                return extents
            start = extents[-1][0] + extents[-1][2]
    finally:
        os.close(fd)
