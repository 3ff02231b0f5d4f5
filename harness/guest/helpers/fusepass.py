"""A file of an EROFS mount served through FUSE passthrough, as a container runtime's or a
backup tool's FUSE daemon serves files of lower layers, and a mapping of it that outlives
every open file: what then keeps the EROFS mount busy?

The daemon speaks the FUSE protocol on /dev/fuse itself (the guest has no libfuse): INIT
with FUSE_PASSTHROUGH, LOOKUP and GETATTR of one file, OPEN answered with a backing file
(FUSE_DEV_IOC_BACKING_OPEN of the EROFS file, FOPEN_PASSTHROUGH), and on RELEASE it drops
the backing id and its own open file. The client opens the FUSE file, maps it privately,
closes it, reads the first page through the mapping, waits until the daemon let go, and
then a child unmounts the EROFS mount: the mapping should keep it busy (EBUSY), as it does
when the EROFS file is mapped without FUSE. The mapping is read again after.
"""

import ctypes
import errno
import hashlib
import os
import select
import struct
import time

from pcprobe.base import PAGE, libc
from pcprobe.pages import Mapping

FUSE_DEV_IOC_BACKING_OPEN = 0x4010E501  # _IOW(229, 1, struct fuse_backing_map)
FUSE_DEV_IOC_BACKING_CLOSE = 0x4004E502  # _IOW(229, 2, uint32_t)
IN_HEADER = struct.Struct("=IIQQIIIHH")  # len, opcode, unique, nodeid, uid, gid, pid, ext, pad
OUT_HEADER = struct.Struct("=IiQ")  # len, error, unique
ATTR = struct.Struct("=QQQQQQIIIIIIIIII")
LOOKUP, FORGET, GETATTR, OPEN, RELEASE, FLUSH, INIT, DESTROY, INTERRUPT, BATCH_FORGET = \
    1, 2, 3, 14, 18, 25, 26, 38, 36, 42
NO_REPLY = (FORGET, BATCH_FORGET, INTERRUPT)
FUSE_INIT_EXT = 1 << 30
FUSE_PASSTHROUGH_FLAGS2 = 1 << (37 - 32)
FOPEN_PASSTHROUGH = 1 << 7
ROOT, FILE_NODE = 1, 2
NAME = b"f"


def _attr(node, size):
    mode = 0o40755 if node == ROOT else 0o100444
    return ATTR.pack(node, size if node != ROOT else 0, (size + 511) // 512, 0, 0, 0, 0, 0, 0,
                     mode, 2 if node == ROOT else 1, 0, 0, 0, 4096, 0)


def _ioctl(fd, request, arg):
    """ioctl(2) with a buffer, its return value (fcntl.ioctl gives the buffer back instead,
    and FUSE_DEV_IOC_BACKING_OPEN answers with the return value)."""
    buf = ctypes.create_string_buffer(arg, len(arg))
    rc = libc.ioctl(fd, request, buf)
    if rc < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return rc


def _reply(fd, unique, body=b"", error=0):
    os.write(fd, OUT_HEADER.pack(OUT_HEADER.size + len(body), -error, unique) + body)


def _serve(fd, source, size, done_w):
    """The daemon, in a child: until the FUSE mount goes away."""
    backing = {}  # fh -> (backing id, EROFS fd)
    while True:
        try:
            request = os.read(fd, (1 << 20) + 4096)
        except OSError as exc:
            if exc.errno == errno.EINTR:
                continue
            return  # ENODEV: unmounted
        length, opcode, unique, node, *_ = IN_HEADER.unpack_from(request)
        body = request[IN_HEADER.size:length]
        if opcode in NO_REPLY:
            continue
        if opcode == INIT:
            _, minor, readahead = struct.unpack_from("=III", body)
            out = struct.pack("=IIIIHHIIHHII6I", 7, min(minor, 41), readahead, FUSE_INIT_EXT,
                              16, 12, 1 << 17, 1, 32, 0, FUSE_PASSTHROUGH_FLAGS2, 1,
                              *([0] * 6))
            _reply(fd, unique, out)
        elif opcode == LOOKUP:
            if body.rstrip(b"\0") != NAME:
                _reply(fd, unique, error=errno.ENOENT)
                continue
            _reply(fd, unique, struct.pack("=QQQQII", FILE_NODE, 0, 3600, 3600, 0, 0)
                   + _attr(FILE_NODE, size))
        elif opcode == GETATTR:
            _reply(fd, unique, struct.pack("=QII", 3600, 0, 0) + _attr(node, size))
        elif opcode == OPEN:
            real = os.open(source, os.O_RDONLY)
            try:
                backing_id = _ioctl(fd, FUSE_DEV_IOC_BACKING_OPEN,
                                    struct.pack("=iIQ", real, 0, 0))
            except OSError as exc:
                os.close(real)
                os.write(done_w, f"backing-open {errno.errorcode.get(exc.errno, exc.errno)}\n"
                         .encode())
                _reply(fd, unique, error=exc.errno or errno.EIO)
                continue
            fh = len(backing) + 1
            backing[fh] = (backing_id, real)
            _reply(fd, unique, struct.pack("=QIi", fh, FOPEN_PASSTHROUGH, backing_id))
        elif opcode == RELEASE:
            fh = struct.unpack_from("=Q", body)[0]
            backing_id, real = backing.pop(fh, (0, -1))
            if backing_id:
                _ioctl(fd, FUSE_DEV_IOC_BACKING_CLOSE, struct.pack("=I", backing_id))
                os.close(real)
            _reply(fd, unique)
            os.write(done_w, b"released\n")
        elif opcode in (FLUSH, DESTROY):
            _reply(fd, unique)
        else:
            _reply(fd, unique, error=errno.ENOSYS)


def _wait_line(fd, want, seconds=30.0):
    """Lines the daemon wrote until one starts with ``want`` (or the deadline): all of them."""
    got, deadline = b"", time.monotonic() + seconds
    while time.monotonic() < deadline:
        ready = os.read(fd, 4096) if _readable(fd) else b""
        got += ready
        if any(line.startswith(want.encode()) for line in got.splitlines()):
            break
        if not ready:
            time.sleep(0.05)
    return got.decode(errors="replace").splitlines()


def _readable(fd):
    return bool(select.select([fd], [], [], 0.1)[0])


def _umount_in_child(target):
    """umount(2) of ``target`` in a child (an oops kills the child, not the probe): its
    errno name, "ok", or how the child died."""
    pid = os.fork()
    if pid == 0:
        rc = libc.umount2(target.encode(), 0)
        os._exit(0 if rc == 0 else min(ctypes.get_errno(), 250))
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    code = os.WEXITSTATUS(status)
    return "ok" if code == 0 else errno.errorcode.get(code, str(code))


def passthrough_unmount(source, erofs_target, workdir):
    """The scenario of the module docstring for the EROFS file ``source`` on the mount at
    ``erofs_target``. Its answer: what the umount returned, whether the EROFS mount is still
    in the mount table, and the sha256 of the first page through the mapping before and
    after the umount (None where the read failed)."""
    size = os.stat(source).st_size
    fuse_target = os.path.join(workdir, "fusepass")
    os.makedirs(fuse_target, exist_ok=True)
    fd = os.open("/dev/fuse", os.O_RDWR)
    data = f"fd={fd},rootmode=40000,user_id=0,group_id=0".encode()
    if libc.mount(b"fusepass", fuse_target.encode(), b"fuse", 0, data) != 0:
        err = ctypes.get_errno()
        os.close(fd)
        raise OSError(err, f"mount -t fuse {fuse_target}: {os.strerror(err)}")
    done_r, done_w = os.pipe()
    daemon = os.fork()
    if daemon == 0:
        os.close(done_r)
        try:
            _serve(fd, source, size, done_w)
        finally:
            os._exit(0)
    os.close(fd)
    os.close(done_w)
    out = {"umount": None, "still_mounted": None, "before": None, "after": None,
           "daemon": []}
    mapping = None
    try:
        # libc's mmap, which keeps no file open (Python's mmap keeps a dup of the fd, and
        # the daemon would never see the RELEASE).
        mapping = Mapping(os.path.join(fuse_target, NAME.decode()), private=True)
        first = min(size, PAGE)
        out["before"] = hashlib.sha256(ctypes.string_at(mapping.address, first)).hexdigest()
        out["daemon"] = _wait_line(done_r, "released")
        out["umount"] = _umount_in_child(erofs_target)
        with open("/proc/self/mounts") as fh:
            out["still_mounted"] = any(line.split()[1] == erofs_target for line in fh)
        out["after"] = hashlib.sha256(ctypes.string_at(mapping.address, first)).hexdigest()
    finally:
        if mapping is not None:
            mapping.close()
        libc.umount2(fuse_target.encode(), 2)  # MNT_DETACH: the daemon reads ENODEV and ends
        os.waitpid(daemon, 0)
        os.close(done_r)
    return out
