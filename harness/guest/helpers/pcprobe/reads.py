"""Reading a whole file through every access path a reader has, and the calls
around reads: SEEK_DATA/SEEK_HOLE maps, concurrent first reads, reads as
another user."""

import ctypes
import errno
import hashlib
import json
import mmap
import os
import time

from pcprobe.base import PAGE, as_user, libc, oserror
from pcprobe.iouring import io_uring_read


def _read_all(fd, size):
    chunks, offset = [], 0
    while True:
        data = os.read(fd, 1 << 20)
        if not data:
            return b"".join(chunks)
        chunks.append(data)
        offset += len(data)


def _via_pipe(fd, size, mover):
    r, w = os.pipe()
    out, moved = [], 0
    try:
        while moved < size:
            n = mover(fd, w, moved, min(65536, size - moved))
            if n == 0:
                break
            moved += n
            out.append(os.read(r, n))
    finally:
        os.close(r)
        os.close(w)
    return b"".join(out)


def read_file(path, method):
    size = os.stat(path).st_size
    flags = os.O_RDONLY | (os.O_DIRECT if method == "odirect" else 0)
    fd = os.open(path, flags)
    try:
        if method == "stream":
            # Hash as it reads: a reader under a tight memory.max must not hold the file.
            digest, count = hashlib.sha256(), 0
            while chunk := os.read(fd, 65536):
                digest.update(chunk)
                count += len(chunk)
            return {"bytes": count, "sha256": digest.hexdigest()}
        if method == "read":
            data = _read_all(fd, size)
        elif method == "pread":
            data = b"".join(os.pread(fd, min(1 << 20, size - o), o)
                            for o in range(0, size, 1 << 20))
        elif method == "readv":
            bufs = [bytearray(PAGE) for _ in range((size + PAGE - 1) // PAGE)]
            n = os.readv(fd, bufs) if bufs else 0
            data = b"".join(bufs)[:n]
        elif method in ("mmap_shared", "mmap_private"):
            if size == 0:
                data = b""
            else:
                kind = mmap.MAP_SHARED if method == "mmap_shared" else mmap.MAP_PRIVATE
                with mmap.mmap(fd, size, flags=kind, prot=mmap.PROT_READ) as m:
                    data = bytes(m)
        elif method == "sendfile":
            data = _via_pipe(fd, size, lambda i, o, off, n: os.sendfile(o, i, off, n))
        elif method == "splice":
            data = _via_pipe(fd, size, lambda i, o, off, n: os.splice(i, o, n, offset_src=off))
        elif method == "copy_file_range":
            dest = f"/scratch/.cfr-{os.getpid()}"
            out = os.open(dest, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                copied = 0
                while copied < size:
                    n = os.copy_file_range(fd, out, size - copied, copied, copied)
                    if n == 0:
                        break
                    copied += n
                data = os.pread(out, size, 0) if size else b""
            finally:
                os.close(out)
                os.unlink(dest)
        elif method == "fadvise_willneed":
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
            data = _read_all(fd, size)
        elif method == "readahead":
            if libc.readahead(fd, 0, size) != 0:
                oserror("readahead")
            data = _read_all(fd, size)
        elif method == "odirect":
            # O_DIRECT needs aligned buffers: an anonymous mapping is page aligned.
            out_chunks, offset = [], 0
            with mmap.mmap(-1, 1 << 20) as buf:
                while True:
                    n = os.preadv(fd, [buf], offset)
                    if n <= 0:
                        break
                    out_chunks.append(bytes(buf[:n]))
                    offset += n
            data = b"".join(out_chunks)[:size]
        elif method == "io_uring":
            data = io_uring_read(fd, size)
        elif method == "zero_length":
            # read(2) at the start, pread(2) mid-file and preadv(2) of one empty buffer, each
            # asking for 0 bytes (through libc: no wrapper may answer for the kernel). The
            # bytes they say they read stand in for the data: none is right.
            buf = ctypes.create_string_buffer(1)
            counts = [libc.read(fd, buf, 0), libc.pread(fd, buf, 0, ctypes.c_long(size // 2)),
                      os.preadv(fd, [bytearray(0)], 0)]
            if any(c < 0 for c in counts):
                oserror("zero-length read")
            data = b"\0" * sum(counts)
        elif method == "seek_data":
            data = bytearray(size)
            for start, end in data_ranges(fd, size):
                data[start:end] = os.pread(fd, end - start, start)
            data = bytes(data)
        else:
            raise ValueError(f"unknown read method {method!r}")
    finally:
        os.close(fd)
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def seek_map(path):
    """The data ranges SEEK_DATA and SEEK_HOLE report, as [start, end) pairs."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        return {"data": [list(r) for r in data_ranges(fd, size)], "size": size}
    finally:
        os.close(fd)


def data_ranges(fd, size):
    """[start, end) ranges of data, walking SEEK_DATA and SEEK_HOLE from 0 to size."""
    ranges, offset = [], 0
    while offset < size:
        try:
            start = os.lseek(fd, offset, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:
                break
            raise
        end = os.lseek(fd, start, os.SEEK_HOLE)
        ranges.append((start, end))
        offset = end
    return ranges


def parallel_read(paths, timeout=120.0):
    """One child per path, all released at once by one write to a pipe, each opening and
    reading its file: concurrent first opens (lookups) of twins. Their hashes, in order."""
    gate_r, gate_w = os.pipe()
    children = []
    for index, path in enumerate(paths):
        out = f"/run/parallel-{os.getpid()}-{index}.json"
        pid = os.fork()
        if pid == 0:
            os.close(gate_w)
            try:
                os.read(gate_r, 1)  # blocks until the parent closes the write end
                result = read_file(path, "read")
            except Exception as exc:
                result = {"error": str(exc)}
            with open(out, "w") as fh:
                json.dump(result, fh)
            os._exit(0)
        children.append((pid, out))
    os.close(gate_r)
    time.sleep(0.2)  # every child is waiting on the gate
    os.close(gate_w)
    results = []
    for pid, out in children:
        os.waitpid(pid, 0)
        with open(out) as fh:
            results.append(json.load(fh))
        os.unlink(out)
    return {"reads": results}


def capped_read(path, cap):
    fd = os.open(path, os.O_RDONLY)
    try:
        digest, count = hashlib.sha256(), 0
        while count < cap:
            chunk = os.read(fd, min(1 << 16, cap - count))
            if not chunk:
                break
            digest.update(chunk)
            count += len(chunk)
        return {"bytes": count, "sha256": digest.hexdigest()}
    finally:
        os.close(fd)


def sha256_of(path):
    st = os.stat(path)
    return {**capped_read(path, 1 << 40), "mtime_ns": st.st_mtime_ns}


def read_as(path, uid, method="read"):
    """read_file from a child running as ``uid`` (and its own gid, no groups)."""
    return as_user(uid, lambda: read_file(path, method))
