"""Device mapper targets, by ioctl (the guest has no dmsetup): a read-only device over a
block device whose table can be swapped while it is open, to hold I/O (delay) or fail it
(error) under a mounted file system and to bring it back (linear).

Runs in the guest (python3, standard library only).
"""

import errno
import fcntl
import os
import struct
import time

# struct dm_ioctl (include/uapi/linux/dm-ioctl.h): version[3], data_size, data_start,
# target_count, open_count, flags, event_nr, padding, dev, name[128], uuid[129], data[7];
# struct dm_target_spec: sector_start, length, status, next, target_type[16].
DM_IOCTL = struct.Struct("=3IIIIiIIIQ128s129s7s")
DM_TARGET = struct.Struct("=QQiI16s")
DM_READONLY_FLAG = 1
# Devices this module made for the probe's tests: the cleanup after a test removes them.
PREFIX = "harness-"


def _dm_request(nr):
    return (3 << 30) | (DM_IOCTL.size << 16) | (0xFD << 8) | nr


DM_DEV_CREATE, DM_DEV_REMOVE, DM_DEV_SUSPEND, DM_TABLE_LOAD, DM_LIST_DEVICES = (
    _dm_request(3), _dm_request(4), _dm_request(6), _dm_request(9), _dm_request(2))


def _dm(request, name, flags=0, payload=b"", targets=0):
    head = DM_IOCTL.pack(4, 0, 0, DM_IOCTL.size + len(payload), DM_IOCTL.size, targets, 0,
                         flags, 0, 0, 0, name.encode(), b"", b"")
    buf = bytearray(head + payload + bytes(max(0, 16384 - len(head) - len(payload))))
    fd = os.open("/dev/mapper/control", os.O_RDWR)
    try:
        fcntl.ioctl(fd, request, buf, True)
    finally:
        os.close(fd)
    return DM_IOCTL.unpack_from(buf)


def _table(kind, device, delay_ms=0):
    """One target over the whole of ``device``: its dm_target_spec and parameters."""
    with open(f"/sys/class/block/{os.path.basename(os.path.realpath(device))}/size") as fh:
        sectors = int(fh.read())
    st = os.stat(device)
    where = f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)} 0"
    params = {"linear": where, "delay": f"{where} {delay_ms}", "error": ""}[kind]
    raw = params.encode() + b"\0"
    raw += bytes(-len(raw) % 8)
    return DM_TARGET.pack(0, sectors, 0, 0, kind.encode()) + raw


def _load(name, kind, device, delay_ms=0):
    """Load a table and make it live (a resume swaps the inactive table in, suspending
    the device around the swap: I/O in flight completes on the old table first)."""
    _dm(DM_TABLE_LOAD, name, DM_READONLY_FLAG, _table(kind, device, delay_ms), targets=1)
    _dm(DM_DEV_SUSPEND, name)  # without DM_SUSPEND_FLAG: resume


def create(name, device, kind="linear", delay_ms=0):
    """A read-only device ``name`` over ``device`` with a ``kind`` table; its /dev path."""
    _dm(DM_DEV_CREATE, name)
    try:
        _load(name, kind, device, delay_ms)
    except OSError:
        remove(name)
        raise
    for block in os.listdir("/sys/block"):
        try:
            with open(f"/sys/block/{block}/dm/name") as fh:
                if fh.read().strip() == name:
                    return f"/dev/{block}"
        except OSError:
            continue
    raise OSError(errno.ENODEV, f"dm device {name} made, but not in /sys/block")


def swap(name, kind, device, delay_ms=0):
    """Make ``name`` fail every I/O (``error``), pass it to ``device`` again (``linear``),
    or pass it on after ``delay_ms`` (``delay``), while mounted."""
    _load(name, kind, device, delay_ms)


def remove(name):
    for _ in range(50):  # a device still closing after its unmount is busy for a moment
        try:
            _dm(DM_DEV_REMOVE, name)
            return
        except OSError as exc:
            if exc.errno == errno.ENXIO:
                return
            if exc.errno != errno.EBUSY:
                raise
            time.sleep(0.1)
    _dm(DM_DEV_REMOVE, name)


def names():
    """The names of every dm device there is."""
    found = []
    for block in os.listdir("/sys/block"):
        try:
            with open(f"/sys/block/{block}/dm/name") as fh:
                found.append(fh.read().strip())
        except OSError:
            continue
    return found


def remove_ours():
    """Remove the devices this module made for tests (PREFIX); the ones that could not go,
    as problems."""
    # A device stacked on another holds it open: the upper one goes first, in any order
    # of names, so each pass removes what it can and the next retries the rest.
    left = [name for name in names() if name.startswith(PREFIX)]
    for _ in range(len(left)):
        busy = []
        for name in left:
            try:
                _dm(DM_DEV_REMOVE, name)
            except OSError as exc:
                if exc.errno != errno.ENXIO:
                    busy.append(name)
        if len(busy) in (0, len(left)):
            left = busy
            break
        left = busy
    problems = []
    for name in left:
        try:
            remove(name)  # with its waits: one still closing after its unmount
        except OSError as exc:
            problems.append(f"remove dm device {name}: {exc.strerror}")
    return problems
