"""Loop devices by ioctl and the clean-up after a test. Done here rather than with
losetup(8) and umount(8): under TCG every program started costs tens of
milliseconds, and a test sets up and tears down several."""

import ctypes
import errno
import fcntl
import os
import shutil
import struct

from pcprobe.base import MNT_DETACH, libc
from pcprobe.holders import end_holders

LOOP_CTL_GET_FREE = 0x4C82
LOOP_CONFIGURE = 0x4C0A
LOOP_CLR_FD = 0x4C01
LO_FLAGS_READ_ONLY = 1

# struct loop_config: fd, block_size, struct loop_info64 (five u64, four u32, three byte
# arrays of 64, 64 and 32, two u64), eight reserved u64.
LOOP_CONFIG = struct.Struct("=II5Q4I64s64s32s2Q8Q")


def loop_attach(path, read_only=True):
    """A free loop device over ``path`` (what ``losetup -f --show -r`` does); its name."""
    backing = os.open(path, os.O_RDONLY if read_only else os.O_RDWR)
    try:
        ctl = os.open("/dev/loop-control", os.O_RDWR)
        try:
            for _ in range(10):  # another opener may take the free device first
                number = fcntl.ioctl(ctl, LOOP_CTL_GET_FREE)
                device = f"/dev/loop{number}"
                fd = os.open(device, os.O_RDWR)
                try:
                    config = LOOP_CONFIG.pack(
                        backing, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                        LO_FLAGS_READ_ONLY if read_only else 0,
                        os.fsencode(path)[:63], b"", b"", 0, 0, *[0] * 8)
                    fcntl.ioctl(fd, LOOP_CONFIGURE, config)
                    return {"device": device}
                except OSError as exc:
                    if exc.errno != errno.EBUSY:
                        raise
                finally:
                    os.close(fd)
            raise OSError(errno.EBUSY, f"no free loop device for {path}")
        finally:
            os.close(ctl)
    finally:
        os.close(backing)


def _mount_points(prefix):
    """The mount points under ``prefix``, the newest first: a mount inside another's tree,
    or of an image stored in another mount, goes before the mount it depends on."""
    points = []
    with open("/proc/self/mounts") as fh:
        for line in fh:
            point = line.split()[1].replace("\\040", " ")
            if point == prefix or point.startswith(prefix + "/"):
                points.append(point)
    return points[::-1]


def cleanup(prefix, dirs, devices=()):
    """After a test: end its holders, unmount everything under ``prefix`` (lazily where a
    plain unmount fails), detach every loop device (a busy one detaches itself when its
    last user goes), remove ``dirs``. What could not be undone, as problems; and which of
    ``devices`` a superblock still holds (they cannot be opened exclusively)."""
    end_holders()
    problems = []
    for point in _mount_points(prefix):
        if libc.umount2(point.encode(), 0) != 0 and \
                libc.umount2(point.encode(), MNT_DETACH) != 0:
            problems.append(f"umount {point}: {os.strerror(ctypes.get_errno())}")
    # Device mapper devices a test put over its loop or virtio devices, before those go.
    if os.path.isdir("/sys/module/dm_mod"):
        import dmtarget  # a helper beside this package, needed only here
        problems += dmtarget.remove_ours()
    for name in sorted(os.listdir("/sys/block")):
        if not name.startswith("loop") or \
                not os.path.exists(f"/sys/block/{name}/loop/backing_file"):
            continue
        try:
            fd = os.open(f"/dev/{name}", os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.ioctl(fd, LOOP_CLR_FD)
        except OSError as exc:
            if exc.errno != errno.ENXIO:  # already detached
                problems.append(f"detach /dev/{name}: {exc.strerror}")
        finally:
            os.close(fd)
    for folder in dirs:
        shutil.rmtree(folder, ignore_errors=True)
    busy = []
    for device in devices:
        try:
            os.close(os.open(device, os.O_RDONLY | os.O_EXCL))
        except OSError:
            busy.append(device)
    return {"problems": problems, "busy": busy}
