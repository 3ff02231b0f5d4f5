"""The file calls a reader makes besides reading: statx's direct I/O alignment,
O_DIRECT, read leases, the filesystem label ioctl."""

import ctypes
import fcntl
import os
import struct

from pcprobe.base import AT_FDCWD, libc, oserror

SYS_STATX = 332  # x86_64
STATX_DIOALIGN = 0x2000
FS_IOC_GETFSLABEL = 0x81009431  # _IOR(0x94, 49, char[256])


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
