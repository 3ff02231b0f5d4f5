"""fanotify on the image file behind a file-backed mount."""

import json
import os
import struct

from pcprobe.base import AT_FDCWD, in_child, libc, oserror
from pcprobe.memory import drop_caches
from pcprobe.mounts import do_mount, do_umount
from pcprobe.reads import read_file

FAN_ACCESS, FAN_ACCESS_PERM = 0x1, 0x20000
FAN_CLASS_NOTIF, FAN_CLASS_CONTENT = 0x0, 0x4
FAN_NONBLOCK, FAN_MARK_ADD = 0x2, 0x1
FAN_ALLOW, FAN_DENY = 0x1, 0x2
EVENT = struct.Struct("<IBBHQii")  # struct fanotify_event_metadata


def _fanotify_group(path):
    """A group watching ``path``: with permission events where the kernel has them."""
    for cls, mask in ((FAN_CLASS_CONTENT, FAN_ACCESS | FAN_ACCESS_PERM),
                      (FAN_CLASS_NOTIF, FAN_ACCESS)):
        fd = libc.fanotify_init(cls | FAN_NONBLOCK, os.O_RDONLY)
        if fd < 0:
            continue
        if libc.fanotify_mark(fd, FAN_MARK_ADD, mask, AT_FDCWD, path.encode()) == 0:
            return fd, bool(mask & FAN_ACCESS_PERM)
        os.close(fd)
    oserror("fanotify_init/fanotify_mark")


def _serve_events(fd, child, deny, counts):
    """Answer and count events until ``child`` exits (its wait status)."""
    import select
    while True:
        done, status = os.waitpid(child, os.WNOHANG)
        ready, _, _ = select.select([fd], [], [], 0.05)
        if ready:
            try:
                buf = os.read(fd, 65536)
            except BlockingIOError:
                buf = b""
            pos = 0
            while pos + EVENT.size <= len(buf):
                length, _, _, _, mask, efd, _ = EVENT.unpack_from(buf, pos)
                if mask & FAN_ACCESS_PERM:
                    counts["access_perm"] += 1
                    os.write(fd, struct.pack("<iI", efd, FAN_DENY if deny else FAN_ALLOW))
                if mask & FAN_ACCESS:
                    counts["access"] += 1
                if efd >= 0:
                    os.close(efd)
                pos += length
        if done:
            return status


def fanotify_watch(image, root, path, deny=False, mount_options=None):
    """Listen on the image file behind a file-backed mount while, from cold caches, a
    child first walks the mount's metadata (lstat and listdir of everything) and then
    reads ``path``. Events on the image file per phase; permission events are answered
    with FAN_DENY if ``deny``; what the read gave. With ``mount_options`` the listener
    starts first and mounts the image at ``root`` itself (unmounted at the end): the
    kernel decides at open time whether a file gets permission events at all."""
    fd, perm = _fanotify_group(image)
    out = {"permission_events": perm}
    if mount_options is not None:
        # mount(2) reads the image, which raises permission events: it must run in another
        # process than the one answering them, or it waits for itself.
        child, pipe = in_child(lambda: do_mount(image, root, mount_options))
        _serve_events(fd, child, False, {"access": 0, "access_perm": 0})
        with os.fdopen(pipe, "rb") as fh:
            answer = json.loads(fh.read() or b'{"ok": false, "errno": 0, "errname": "died"}')
        if not answer.get("ok"):
            os.close(fd)
            raise OSError(answer.get("errno", 0), f"mount {image}: {answer}")
    try:
        def metadata():
            for dirpath, dirnames, filenames in os.walk(root):
                for name in dirnames + filenames:
                    os.lstat(os.path.join(dirpath, name))
            return {}
        for phase, work in (("metadata", metadata), ("data", lambda: read_file(path, "read"))):
            drop_caches(3, sync=False)
            counts = {"access": 0, "access_perm": 0}
            child, pipe = in_child(work)
            _serve_events(fd, child, deny, counts)
            with os.fdopen(pipe, "rb") as fh:
                result = json.loads(fh.read() or b'{"error": "the child died", "errno": 0}')
            out[phase] = {**counts, "result": result}
    finally:
        os.close(fd)  # first: pending permission events are allowed when the group goes
        if mount_options is not None:
            do_umount(root, lazy=True)
    return out
