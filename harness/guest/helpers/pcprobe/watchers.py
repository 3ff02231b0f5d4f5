"""What tools that watch a file see: cachestat(2) and uprobes."""

import ctypes
import mmap
import os
import struct

from pcprobe.base import libc

SYS_CACHESTAT = 451
TRACING = "/sys/kernel/tracing"
UPROBE_EVENT = "harness_pc/at"
PROT_READ_EXEC = mmap.PROT_READ | mmap.PROT_EXEC


def _uprobe_events():
    """tracefs's uprobe_events, mounting tracefs first if need be; None without it."""
    events = f"{TRACING}/uprobe_events"
    if not os.path.exists(events) and os.path.isdir(TRACING):
        libc.mount(b"nodev", TRACING.encode(), b"tracefs", 0, None)
    return events if os.path.exists(events) else None


def _tracefs_write(name, line):
    """One write(2) to a tracefs control file (Python's append mode seeks to the end first,
    which tracefs refuses with EINVAL)."""
    fd = os.open(f"{TRACING}/{name}", os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def _uprobe_at(path, offset):
    """Register a uprobe at ``offset`` of ``path``, enable it, map the file executable and
    read that byte through the mapping: uprobe_mmap() writes the breakpoint (0xcc) into
    every executable mapping of a probed file, as perf probe and bpftrace rely on."""
    events = _uprobe_events()
    if events is None:
        return "unsupported: no uprobe_events (a kernel without CONFIG_UPROBE_EVENTS)"
    try:  # one left by a probe that died halfway
        _tracefs_write("uprobe_events", f"-:{UPROBE_EVENT}\n")
    except OSError:
        pass
    try:
        _tracefs_write("uprobe_events", f"p:{UPROBE_EVENT} {path}:{offset:#x}\n")
    except OSError as exc:
        try:
            with open(f"{TRACING}/error_log") as fh:
                said = " | ".join(fh.read().strip().splitlines()[-3:])
        except OSError:
            said = ""
        return f"register: {exc.strerror}" + (f" ({said})" if said else "")
    enable = f"events/{UPROBE_EVENT}/enable"
    try:
        _tracefs_write(enable, "1\n")
        fd = os.open(path, os.O_RDONLY)
        try:
            view = mmap.mmap(fd, offset + 1, flags=mmap.MAP_PRIVATE, prot=PROT_READ_EXEC)
        except OSError as exc:
            return f"map it executable: {exc.strerror}"
        finally:
            os.close(fd)
        try:
            byte = view[offset]
        finally:
            view.close()
        return "installed" if byte == 0xCC else f"not installed (the mapping shows {byte:#04x})"
    finally:
        for name, line in ((enable, "0\n"), ("uprobe_events", f"-:{UPROBE_EVENT}\n")):
            try:
                _tracefs_write(name, line)
            except OSError:
                pass  # the next call removes it first


def watchers(path):
    """cachestat(2)'s count of the file's cached pages (what cachestat tools and page cache
    monitors read), and whether a uprobe at a one-byte instruction (a NOP) of the file
    reaches an executable mapping of it."""
    out = {}
    fd = os.open(path, os.O_RDONLY)
    try:
        rng = ctypes.create_string_buffer(struct.pack("<QQ", 0, 0), 16)  # len 0: to EOF
        stat_ = ctypes.create_string_buffer(40)
        rc = libc.syscall(SYS_CACHESTAT, fd, rng, stat_, 0)
        out["cachestat_errno"] = 0 if rc == 0 else ctypes.get_errno()
        out["cachestat_pages"] = struct.unpack_from("<Q", stat_, 0)[0] if rc == 0 else -1
        data = os.pread(fd, 1 << 20, 0)
    finally:
        os.close(fd)
    nop = data.find(b"\x90")
    out["uprobe"] = _uprobe_at(path, nop) if nop >= 0 else "no NOP in the file's first MiB"
    return out
