"""What every part of the probe stands on: libc through ctypes (every function's
argument types declared here, once), the page size, errors from errno, and
children that do one piece of work with other credentials or namespaces."""

import ctypes
import json
import mmap
import os
import stat

PAGE = mmap.PAGESIZE
libc = ctypes.CDLL("libc.so.6", use_errno=True)
libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
libc.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_char_p]
libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
libc.readahead.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_size_t]
libc.syscall.restype = ctypes.c_long
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                      ctypes.c_long]
libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
libc.fanotify_init.argtypes = [ctypes.c_uint, ctypes.c_uint]
libc.fanotify_mark.argtypes = [ctypes.c_int, ctypes.c_uint, ctypes.c_uint64, ctypes.c_int,
                               ctypes.c_char_p]
MS_RDONLY = 1
MNT_DETACH = 2


def where_in_kernel(pid):
    """Where a process waits in the kernel: its wait channel and kernel stack, one line."""
    out = []
    for name in ("wchan", "stack"):
        try:
            with open(f"/proc/{pid}/{name}") as fh:
                out.append(fh.read().strip().replace("\n", " | "))
        except OSError:
            continue
    return "; ".join(out)


def oserror(what):
    err = ctypes.get_errno()
    raise OSError(err, f"{what}: {os.strerror(err)}")


MAP_FAILED = ctypes.c_void_p(-1).value


def read_to_end(fd):
    """Everything a child writes to the pipe ``fd`` until it closes its end; ``fd`` closed."""
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks)


def stat_is(st, kind):
    return {"dir": stat.S_ISDIR, "link": stat.S_ISLNK, "reg": stat.S_ISREG}[kind](st.st_mode)


def in_child(work):
    """Run ``work`` in a forked child: its pid, and a pipe that gets its answer (a dict, or
    the OSError it raised as {"error", "errno"})."""
    read_r, write_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        # Whatever happens, the child never returns into the caller (the probe's server
        # loop would then run twice).
        try:
            os.close(read_r)
            try:
                answer = work()
            except OSError as exc:
                answer = {"error": str(exc), "errno": exc.errno or 0}
            except Exception as exc:  # said to the parent, which raises it
                answer = {"error": f"{type(exc).__name__}: {exc}", "errno": 0}
            os.write(write_w, json.dumps(answer).encode())
        finally:
            os._exit(0)
    os.close(write_w)
    return pid, read_r


def as_user(uid, work):
    """``work`` in a child running as ``uid`` (and its own gid, no groups): its answer, or
    its OSError (child_result)."""
    def dropped():
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
        return work()
    return child_result(dropped)


def child_result(work):
    """``work`` in a child (other credentials, namespaces): its answer, or its OSError."""
    pid, pipe = in_child(work)
    with os.fdopen(pipe, "rb") as fh:
        raw = fh.read()
    os.waitpid(pid, 0)
    answer = json.loads(raw or b'{"error": "the child died", "errno": 0}')
    if "error" in answer:
        raise OSError(answer["errno"], answer["error"])
    return answer


AT_FDCWD = -100
