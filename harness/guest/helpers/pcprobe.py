#!/usr/bin/env python3
"""Guest-side page cache probe (runs inside the VM, standard library only).

Usage: pcprobe.py '<json list of operations>'; prints a JSON list of results, one per
operation. ``pcprobe.py --serve`` reads one such list per line and answers one line each.
An operation that fails gives {"error": text, "errno": n} instead of stopping the batch,
so that the host sees exactly which step failed and how.
"""

import ctypes
import errno
import fcntl
import gc
import hashlib
import json
import mmap
import os
import resource
import shutil
import signal
import stat
import struct
import sys
import time

PAGE = mmap.PAGESIZE
libc = ctypes.CDLL("libc.so.6", use_errno=True)
libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
libc.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_char_p]
libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
libc.readahead.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_size_t]
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


def _oserror(what):
    err = ctypes.get_errno()
    raise OSError(err, f"{what}: {os.strerror(err)}")


# ---- reading through every access path ------------------------------------------------

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


# ---- io_uring, by raw system calls (no liburing in the guest) -------------------------------
# Layouts from include/uapi/linux/io_uring.h (x86_64): io_uring_params is 120 bytes with the
# SQ ring offsets at 40 and the CQ ring offsets at 80; an SQE is 64 bytes, a CQE 16.
SYS_IO_URING_SETUP, SYS_IO_URING_ENTER = 425, 426
IORING_OP_READ, IORING_ENTER_GETEVENTS = 22, 1
IORING_OFF_SQ_RING, IORING_OFF_CQ_RING, IORING_OFF_SQES = 0, 0x8000000, 0x10000000
libc.syscall.restype = ctypes.c_long


def _io_uring_read(fd, size, chunk=65536):
    params = ctypes.create_string_buffer(120)
    ring = libc.syscall(SYS_IO_URING_SETUP, 4, params)
    if ring < 0:
        _oserror("io_uring_setup")
    _sq_head, sq_tail, sq_mask, _, _, _, sq_array = struct.unpack_from("<7I", params, 40)
    cq_head, cq_tail, cq_mask, _, _, cqes = struct.unpack_from("<6I", params, 80)
    sq_entries, cq_entries = struct.unpack_from("<2I", params, 0)
    prot = mmap.PROT_READ | mmap.PROT_WRITE
    sq = mmap.mmap(ring, sq_array + 4 * sq_entries, mmap.MAP_SHARED, prot,
                   offset=IORING_OFF_SQ_RING)
    cq = mmap.mmap(ring, cqes + 16 * cq_entries, mmap.MAP_SHARED, prot,
                   offset=IORING_OFF_CQ_RING)
    sqes = mmap.mmap(ring, 64 * sq_entries, mmap.MAP_SHARED, prot, offset=IORING_OFF_SQES)
    buf = ctypes.create_string_buffer(chunk)
    out, offset = [], 0
    try:
        while offset < size:
            tail = struct.unpack_from("<I", sq, sq_tail)[0]
            index = tail & struct.unpack_from("<I", sq, sq_mask)[0]
            sqe = struct.pack("<BBHiQQIIQ", IORING_OP_READ, 0, 0, fd, offset,
                              ctypes.addressof(buf), chunk, 0, offset).ljust(64, b"\0")
            sqes[64 * index:64 * index + 64] = sqe
            struct.pack_into("<I", sq, sq_array + 4 * index, index)
            struct.pack_into("<I", sq, sq_tail, tail + 1)
            if libc.syscall(SYS_IO_URING_ENTER, ring, 1, 1, IORING_ENTER_GETEVENTS, None, 0) < 0:
                _oserror("io_uring_enter")
            head = struct.unpack_from("<I", cq, cq_head)[0]
            if head == struct.unpack_from("<I", cq, cq_tail)[0]:
                raise OSError(errno.EIO, "io_uring: no completion after io_uring_enter")
            slot = cqes + 16 * (head & struct.unpack_from("<I", cq, cq_mask)[0])
            _user, res, _flags = struct.unpack_from("<QiI", cq, slot)
            struct.pack_into("<I", cq, cq_head, head + 1)
            if res < 0:
                raise OSError(-res, f"io_uring read at {offset}: {os.strerror(-res)}")
            if res == 0:
                break
            out.append(buf.raw[:res])
            offset += res
    finally:
        sq.close()
        cq.close()
        sqes.close()
        os.close(ring)
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
                _oserror("readahead")
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
            data = _io_uring_read(fd, size)
        elif method == "seek_data":
            data = bytearray(size)
            for start, end in _data_ranges(fd, size):
                data[start:end] = os.pread(fd, end - start, start)
            data = bytes(data)
        else:
            raise ValueError(f"unknown read method {method!r}")
    finally:
        os.close(fd)
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


# ---- residency and page frames --------------------------------------------------------

libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                      ctypes.c_long]
libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
MAP_FAILED = ctypes.c_void_p(-1).value


MADV_PAGEOUT = 21


class Mapping:
    """A read-only shared mapping of a whole file made with libc mmap (we need its address,
    which Python's mmap object does not give for read-only maps)."""

    def __init__(self, path, private=False):
        self.size = os.stat(path).st_size
        fd = os.open(path, os.O_RDONLY)
        try:
            flags = mmap.MAP_PRIVATE if private else mmap.MAP_SHARED
            self.address = libc.mmap(None, max(self.size, 1), mmap.PROT_READ, flags, fd, 0)
        finally:
            os.close(fd)
        if self.address in (None, MAP_FAILED):
            _oserror(f"mmap {path}")

    def touch(self):
        for offset in range(0, self.size, PAGE):
            ctypes.string_at(self.address + offset, 1)

    def resident(self):
        """Pages of this mapping in the page cache (mincore on the mapping itself)."""
        pages = (self.size + PAGE - 1) // PAGE
        vec = ctypes.create_string_buffer(max(pages, 1))
        if libc.mincore(ctypes.c_void_p(self.address), ctypes.c_size_t(self.size), vec) != 0:
            _oserror("mincore")
        return {"pages": pages, "resident": sum(b & 1 for b in vec.raw[:pages])}

    def page_out(self):
        """madvise(MADV_PAGEOUT): reclaim this mapping's pages now (clean file pages are
        unmapped and freed when no one else maps them); what stayed resident."""
        if libc.madvise(ctypes.c_void_p(self.address), ctypes.c_size_t(self.size),
                        MADV_PAGEOUT) != 0:
            _oserror("madvise(MADV_PAGEOUT)")
        return self.resident()

    def close(self):
        libc.munmap(self.address, max(self.size, 1))


def mincore(path):
    """Pages of ``path`` resident in the page cache its mapping uses, without faulting."""
    size = os.stat(path).st_size
    pages = (size + PAGE - 1) // PAGE
    if pages == 0:
        return {"pages": 0, "resident": 0}
    mapping = Mapping(path)
    try:
        return mapping.resident()
    finally:
        mapping.close()


def _frames(pagemap, mapping):
    frames = []
    for offset in range(0, mapping.size, PAGE):
        pagemap.seek(((mapping.address + offset) // PAGE) * 8)
        entry = struct.unpack("<Q", pagemap.read(8))[0]
        present = entry >> 63 & 1
        frames.append(entry & ((1 << 55) - 1) if present else 0)
    return frames


# Page frames are not fixed for a file's lifetime: khugepaged may collapse page cache pages
# into a huge page (it zaps the old mappings and puts a new folio in the cache) and
# compaction may migrate them, both while this process reads pagemap. A view taken file by
# file can then put two files of one page cache on two frames. So all files are mapped and
# touched first, and the view counts only when a second look, after touching again, gives
# the same frames: a consistent snapshot of one moment, whatever moved before it. Their
# mapcounts and flags are read between the two looks.
PFN_SNAPSHOT_TRIES = 8


def pfns(paths):
    """Page frame numbers of each file's pages, all mapped and touched in this process at
    once; a snapshot that a second look confirmed unchanged."""
    mappings = []
    try:
        for path in paths:
            mappings.append(Mapping(path))
        with open("/proc/self/pagemap", "rb") as pagemap:
            seen, facts = [], []
            for _ in range(PFN_SNAPSHOT_TRIES):
                for mapping in mappings:
                    mapping.touch()
                now = [_frames(pagemap, mapping) for mapping in mappings]
                if now == seen:
                    # The counts and flags were read between two looks that agree: of these
                    # very frames, not of frames a collapse freed after the last look (all
                    # counts 0).
                    return {path: {"pfns": frames, "counts": counts, "huge": huge,
                                   "memcgs": memcgs}
                            for path, frames, (counts, huge, memcgs)
                            in zip(paths, now, facts, strict=True)}
                seen = now
                facts = [(_kpagecount(frames), _huge(frames), _kpagecgroup(frames))
                         for frames in now]
    finally:
        for mapping in mappings:
            mapping.close()
    raise RuntimeError(f"page frames of {list(paths)} kept changing over "
                       f"{PFN_SNAPSHOT_TRIES} looks (huge page collapse or migration)")


def _smaps_of(paths, mappings):
    figures = {}
    current = None
    with open("/proc/self/smaps") as fh:
        for line in fh:
            head = line.split()
            if "-" in head[0] and len(head) >= 5 and ":" not in head[0]:
                start = int(head[0].split("-")[0], 16)
                current = next((p for p, m in zip(paths, mappings, strict=True)
                                if m.address == start), None)
                if current is not None:
                    figures[current] = {}
            elif current is not None and head[0].endswith(":") and head[1:2] \
                    and head[1].isdigit():
                figures[current][head[0][:-1]] = int(head[1])
    return figures


def smaps(paths):
    """Map and touch every file in this one process; the smaps figures of each mapping, as
    a snapshot a second look confirmed (khugepaged may zap the mappings in between, as for
    pfns)."""
    mappings = [Mapping(path) for path in paths]
    try:
        seen = None
        for _ in range(PFN_SNAPSHOT_TRIES):
            for mapping in mappings:
                mapping.touch()
            now = _smaps_of(paths, mappings)
            if now == seen:
                return now
            seen = now
    finally:
        for mapping in mappings:
            mapping.close()
    raise RuntimeError(f"the smaps figures of {list(paths)} kept changing over "
                       f"{PFN_SNAPSHOT_TRIES} looks (huge page collapse or migration)")


def _kpage_words(table, frames):
    """The 64-bit word of /proc/<table> for each frame (0 for a frame of 0: not present)."""
    words = []
    with open(f"/proc/{table}", "rb") as fh:
        for pfn in frames:
            if pfn == 0:
                words.append(0)
                continue
            fh.seek(pfn * 8)
            words.append(struct.unpack("<Q", fh.read(8))[0])
    return words


def _kpagecount(frames):
    return _kpage_words("kpagecount", frames)


def _kpagecgroup(frames):
    """The inode number of the memory cgroup each frame is charged to (the nearest online
    one; 0 for none), from /proc/kpagecgroup: empty on a kernel without memory cgroups."""
    if not os.path.exists("/proc/kpagecgroup"):
        return []
    return _kpage_words("kpagecgroup", frames)


KPF_THP = 22  # /proc/kpageflags: the page belongs to a transparent huge page


def _huge(frames):
    return [bool(word >> KPF_THP & 1) for word in _kpage_words("kpageflags", frames)]


MADV_COLLAPSE = 25


def collapse(path, touch, retries=0):
    """madvise(MADV_COLLAPSE) over a fresh shared mapping of ``path``, after touching its
    pages first if ``touch`` (else the kernel reads what is missing while collapsing). The
    errno, 0 on success; the mapping is gone afterwards, the huge pages stay in the cache.
    EAGAIN is documented as transient (a page still locked, or not yet on the LRU: freshly
    read pages sit in another CPU's LRU batch), and a caller that wants the collapse asks
    again, up to ``retries`` times."""
    mapping = Mapping(path)
    try:
        if touch:
            mapping.touch()
        for _ in range(retries + 1):
            if libc.madvise(ctypes.c_void_p(mapping.address), ctypes.c_size_t(mapping.size),
                            MADV_COLLAPSE) == 0:
                return {"errno": 0}
            err = ctypes.get_errno()
            if err != errno.EAGAIN:
                break
            time.sleep(0.05)
        return {"errno": err}
    finally:
        mapping.close()


def slab_objects(name):
    """Objects of the slab cache ``name`` from /proc/slabinfo: in use and allocated. SLUB
    counts the free objects in a CPU's own slabs as in use (hundreds of objects), so the
    cache is shrunk first where sysfs allows: that hands every CPU's slabs back."""
    try:
        with open(f"/sys/kernel/slab/{name}/shrink", "w") as fh:
            fh.write("1")
    except OSError:
        pass
    with open("/proc/slabinfo") as fh:
        for line in fh:
            fields = line.split()
            if fields and fields[0] == name:
                return {"active": int(fields[1]), "total": int(fields[2])}
    raise OSError(errno.ENOENT, f"no slab cache {name} in /proc/slabinfo")


def meminfo():
    out = {}
    with open("/proc/meminfo") as fh:
        for line in fh:
            name, value = line.split(":", 1)
            out[name] = int(value.split()[0])
    return out


# ---- cgroups ---------------------------------------------------------------------------

def _read_to_end(fd):
    """Everything a child writes to the pipe ``fd`` until it closes its end; ``fd`` closed."""
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks)


def cgroup_read(cgroup, path, method, limit=None):
    """Read ``path`` in a child process that lives in cgroup ``cgroup`` (with memory.max
    ``limit`` bytes if given); report what the cgroup was charged.

    The child is a fork of this Python process: every page it writes after the fork is a
    copy, charged to the cgroup it is in at that moment, and Python writes reference counts
    all over its heap. Charged after joining, those copies ate a tight limit (megabytes for
    a garbage collection) and the OOM killer took the reader in the middle of a read. So the
    child turns the collector off and runs the read's code once on a small file before it
    joins: what the cgroup is charged for is then the read, which is what the callers
    measure."""
    base = f"/sys/fs/cgroup/{cgroup}"
    os.makedirs(base, exist_ok=True)
    with open("/sys/fs/cgroup/cgroup.subtree_control", "w") as ctl:
        ctl.write("+memory")
    if limit is not None:
        with open(f"{base}/memory.max", "w") as fh:
            fh.write(str(limit))
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            gc.disable()
            try:  # copies made here are not the cgroup's; a method /proc refuses is no harm
                json.dumps(read_file("/proc/self/stat", method))
            except OSError:
                pass
            with open(f"{base}/cgroup.procs", "w") as procs:
                procs.write(str(os.getpid()))
            result = read_file(path, method)
        except Exception as exc:  # report, do not raise, in the child
            result = {"error": str(exc)}
        try:  # the reader's own pages, while it still has them
            anon = _keyed_numbers(f"{base}/memory.stat").get("anon", 0)
        except OSError:
            anon = -1
        os.write(w, json.dumps({"read": result, "anon": anon}).encode())
        os._exit(0)
    os.close(w)
    data = _read_to_end(r)
    _, status = os.waitpid(pid, 0)
    stat = _keyed_numbers(f"{base}/memory.stat")
    with open(f"{base}/memory.current") as fh:
        current = int(fh.read())
    if not data:  # the child died before it could answer: say how, not "bad JSON"
        events = _keyed_numbers(f"{base}/memory.events")
        how = (f"killed by signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status)
               else f"exit status {os.waitstatus_to_exitcode(status)}")
        raise OSError(errno.EIO, f"the reader of {path} in cgroup {cgroup} gave no answer: "
                      f"{how}; memory.events oom_kill={events.get('oom_kill', 0)}, "
                      f"memory.max {limit}, charged anon {stat.get('anon', 0)} B, "
                      f"file {stat.get('file', 0)} B, kernel {stat.get('kernel', 0)} B")
    answer = json.loads(data)
    return {"read": answer["read"], "file": stat.get("file", 0),
            "file_mapped": stat.get("file_mapped", 0), "current": current,
            "anon": answer["anon"], "inode": os.stat(base).st_ino}


def _keyed_numbers(path):
    """A cgroup file of "name value" lines (memory.stat, memory.events) as a dict."""
    out = {}
    with open(path) as fh:
        for line in fh:
            name, value = line.split()
            out[name] = int(value)
    return out


# ---- a mapping held by another process ------------------------------------------------

HOLDERS = {}


def hold(path, tag, timeout=120.0):
    """A child maps ``path`` (the file is closed right after mmap), touches every page and
    waits, at most ``timeout`` seconds; ``release`` makes it hash the mapping and exit."""
    ready, go, out = (f"/run/hold-{tag}.{s}" for s in ("ready", "go", "out"))
    for name in (ready, go, out):
        if os.path.exists(name):
            os.unlink(name)
    pid = os.fork()
    if pid == 0:
        try:
            mapping = Mapping(path)
            mapping.touch()
            open(ready, "w").close()
            deadline = time.monotonic() + timeout
            while not os.path.exists(go) and time.monotonic() < deadline:
                time.sleep(0.01)
            result = {}
            with open(go) as fh:
                if fh.read() == "pageout":
                    result["paged_out"] = mapping.page_out()
            data = ctypes.string_at(mapping.address, mapping.size)
            result.update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
        except Exception as exc:
            result = {"error": str(exc)}
        with open(out, "w") as fh:
            json.dump(result, fh)
        os._exit(0)
    deadline = time.monotonic() + timeout
    while not os.path.exists(ready):
        if os.waitpid(pid, os.WNOHANG)[0] or time.monotonic() > deadline:
            raise OSError(errno.ECHILD, f"the holder of {path} did not map it")
        time.sleep(0.01)
    HOLDERS[tag] = pid
    return {"pid": pid}


def end_holders():
    """Kill every holder still alive: a test that failed before release() would otherwise
    leave mapped pages resident (drop_caches cannot drop them) for the tests after it."""
    ended = []
    for tag, pid in list(HOLDERS.items()):
        try:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        ended.append(tag)
        del HOLDERS[tag]
    return {"ended": ended}


def release(tag, pageout=False):
    """The holder hashes its mapping (every page touched again) and exits. With
    ``pageout`` it first reclaims its own pages with MADV_PAGEOUT, as memory pressure
    would, and reports what stayed resident: the hash then faults them back in."""
    pid = HOLDERS.pop(tag)
    # Written aside and renamed: the holder polls for the name and must never see it empty.
    with open(f"/run/hold-{tag}.go.tmp", "w") as fh:
        fh.write("pageout" if pageout else "")
    os.rename(f"/run/hold-{tag}.go.tmp", f"/run/hold-{tag}.go")
    os.waitpid(pid, 0)
    with open(f"/run/hold-{tag}.out") as fh:
        return json.load(fh)


# ---- mounts ----------------------------------------------------------------------------

class KernelLog:
    """The kernel log as /dev/kmsg records, each with its sequence number.

    A mark is the sequence number of the last record read; "since a mark" is every record
    with a higher number. Counting lines cannot work: once the ring buffer is full, old
    records drop off as new ones arrive and the count stays the same. One reader is kept
    for the life of the server, so it sees each record once even as the buffer wraps; when
    records were overwritten before it read them, it says how many (``missed``).
    """

    KEEP = 20000  # records remembered for since(); a test logs far fewer

    def __init__(self):
        # Opening /dev/kmsg starts at the oldest record still in the buffer.
        self.fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
        self.records = []  # (seq, message)
        self.last = -1

    def pump(self):
        while True:
            try:
                raw = os.read(self.fd, 8192)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno == errno.EPIPE:  # overwritten before we read them: go on
                    continue
                raise
            prefix, _, rest = raw.decode(errors="replace").partition(";")
            fields = prefix.split(",")
            seq = int(fields[1])
            self.last = seq
            # Continuation lines (" SUBSYSTEM=...") are dictionary data, not the message.
            self.records.append((seq, rest.split("\n", 1)[0]))
        del self.records[:-self.KEEP]

    def mark(self):
        self.pump()
        return {"seq": self.last}

    def since(self, mark):
        self.pump()
        lines = [text for seq, text in self.records if seq > mark]
        # Sequence numbers have no gaps: whatever is not here was overwritten unread.
        missed = max(0, self.last - max(mark, -1) - len(lines)) if mark >= 0 else 0
        return {"lines": lines, "seq": self.last, "missed": missed}


_KERNEL_LOG = []


def kernel_log():
    if not _KERNEL_LOG:
        _KERNEL_LOG.append(KernelLog())
    return _KERNEL_LOG[0]


def _settle():
    time.sleep(0.05)  # let printk from the syscall reach the ring buffer


def do_mount(source, target, options, fstype="erofs", readonly=True, settle=True):
    os.makedirs(target, exist_ok=True)
    log = kernel_log()
    mark = log.mark()["seq"]
    rc = libc.mount(source.encode(), target.encode(), fstype.encode(),
                    MS_RDONLY if readonly else 0, options.encode() if options else None)
    err = ctypes.get_errno() if rc != 0 else 0
    if settle:
        _settle()
    return {"ok": rc == 0, "errno": err, "errname": errno.errorcode.get(err, "") if err else "",
            "kmsg": log.since(mark)["lines"]}


MS_REMOUNT = 32


def do_remount(target, options, settle=True):
    """mount(2) with MS_REMOUNT and exactly ``options``: what a program that does not go
    through mount(8) (which re-sends the options in effect) asks of the kernel."""
    log = kernel_log()
    mark = log.mark()["seq"]
    rc = libc.mount(b"none", target.encode(), None, MS_REMOUNT | MS_RDONLY,
                    options.encode() if options else None)
    err = ctypes.get_errno() if rc != 0 else 0
    if settle:
        _settle()
    return {"ok": rc == 0, "errno": err, "errname": errno.errorcode.get(err, "") if err else "",
            "kmsg": log.since(mark)["lines"]}


def do_umount(target, lazy=False, settle=True):
    log = kernel_log()
    mark = log.mark()["seq"]
    rc = libc.umount2(target.encode(), MNT_DETACH if lazy else 0)
    err = ctypes.get_errno() if rc != 0 else 0
    if settle:
        _settle()
    return {"ok": rc == 0, "errno": err, "errname": errno.errorcode.get(err, "") if err else "",
            "kmsg": log.since(mark)["lines"]}


# ---- loop devices and the clean-up after a test ------------------------------------------
# Done here with ioctls rather than with losetup(8) and umount(8): under TCG every program
# started costs tens of milliseconds, and a test sets up and tears down several.

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
        problems += _dmtarget().remove_ours()
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


DROP_CACHES_QUIET = "4"  # drops nothing; from then on the kernel logs no line per drop
_drop_caches_quiet = []


def drop_caches(level=3, sync=True):
    """``sync`` first unless told the caller wrote nothing (EROFS pages are never dirty).
    Quiet (the value 4 once; it cannot be or-ed into a drop, the sysctl's range is 1..4): a
    console line for each drop is slow under TCG and buries the log."""
    if sync:
        os.sync()
    if not _drop_caches_quiet:
        with open("/proc/sys/vm/drop_caches", "w") as fh:
            fh.write(DROP_CACHES_QUIET)
        _drop_caches_quiet.append(True)
    with open("/proc/sys/vm/drop_caches", "w") as fh:
        fh.write(str(level))
    return {}


def erofs_mounts(prefix):
    """EROFS mounts at or under ``prefix``, as this process's mount table shows them."""
    found = {}
    with open("/proc/self/mounts") as fh:
        for line in fh:
            fields = line.split()
            if len(fields) >= 4 and fields[2] == "erofs" and (
                    fields[1] == prefix or fields[1].startswith(prefix + "/")):
                found[fields[1]] = fields[3].split(",")
    return {"mounts": found}


def fadvise_dontneed(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    return {}


def hint(path, advice, settle=5.0):
    """Give the kernel a read hint (no read): POSIX_FADV_WILLNEED or readahead(2). Both
    start I/O and may return before it ends, so wait until the file's residency through
    its own mapping stops growing (at most ``settle`` seconds)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        if advice == "willneed":
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
        elif advice == "readahead":
            if libc.readahead(fd, 0, size) != 0:
                _oserror("readahead")
        else:
            raise ValueError(f"unknown hint {advice!r}")
    finally:
        os.close(fd)
    # mincore counts a page once its read has completed, and no call says when a hint's
    # reads have. The count must hold still for a quarter of a second, and nothing at all
    # for a whole one: on a slow kernel (KASAN under TCG, a loop device's worker between
    # them) the first pages complete well after 50 ms, and batches later ones apart.
    started = time.monotonic()
    deadline, last, since = started + settle, -1, started
    while time.monotonic() < deadline:
        now, at = mincore(path)["resident"], time.monotonic()
        if now != last:
            last, since = now, at
        elif at - since >= (0.25 if now else 1.0):
            break
        time.sleep(0.05)
    return {}


def seek_map(path):
    """The data ranges SEEK_DATA and SEEK_HOLE report, as [start, end) pairs."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        return {"data": [list(r) for r in _data_ranges(fd, size)], "size": size}
    finally:
        os.close(fd)


def _data_ranges(fd, size):
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


# ---- walking a (possibly damaged) mount ------------------------------------------------

WALK_READ_CAP = 8 << 20  # a damaged inode may claim any size: read at most this much


def _capped_read(path, cap):
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


def _capped_mmap(path, size, cap):
    """Hash the file through a shared mapping of it, read via /proc/self/mem: a fault that
    fails (EIO under a damaged image) is then a short read, not a SIGBUS killing the probe,
    and it still goes through the mapping's fault path."""
    if size == 0:
        return {"bytes": 0, "sha256": hashlib.sha256(b"").hexdigest()}
    length = min(size, cap)
    fd = os.open(path, os.O_RDONLY)
    try:
        address = libc.mmap(None, length, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
    finally:
        os.close(fd)
    if address in (None, MAP_FAILED):
        _oserror(f"mmap {path}")
    try:
        mem = os.open("/proc/self/mem", os.O_RDONLY)
        try:
            digest, done = hashlib.sha256(), 0
            while done < length:
                chunk = os.pread(mem, min(1 << 16, length - done), address + done)
                if not chunk:
                    raise OSError(errno.EFAULT, f"the mapping gave no bytes at {done}")
                digest.update(chunk)
                done += len(chunk)
        finally:
            os.close(mem)
    finally:
        libc.munmap(address, length)
    return {"bytes": done, "sha256": digest.hexdigest()}


def _attempt(what, fn, *args):
    try:
        return fn(*args)
    except OSError as exc:
        return {"error": f"{what}: {exc.strerror or exc}", "errno": exc.errno or 0}


def walk(root, cap=WALK_READ_CAP, budget=120.0, limit=5000, data=True):
    """Every entry under ``root``, each looked at as a reader would: lstat, readlink,
    listxattr and getxattr, read(2) and mmap of regular files (at most ``cap`` bytes;
    ``data=False``: metadata only). Each failure is recorded with its errno and the walk goes
    on; directories already seen (a damaged entry pointing at an ancestor) are not entered
    twice."""
    out, seen, pending = {}, set(), [""]
    deadline = time.monotonic() + budget
    while pending and len(out) < limit and time.monotonic() < deadline:
        rel = pending.pop()
        here = os.path.join(root, rel) if rel else root
        try:
            names = sorted(os.listdir(here))
        except OSError as exc:
            out[rel or "."] = {"error": f"listdir: {exc.strerror}", "errno": exc.errno or 0}
            continue
        for name in names:
            path_rel = os.path.join(rel, name) if rel else name
            path = os.path.join(root, path_rel)
            try:
                st = os.lstat(path)
            except OSError as exc:
                out[path_rel] = {"error": f"lstat: {exc.strerror}", "errno": exc.errno or 0}
                continue
            entry = {"mode": st.st_mode, "size": st.st_size}
            xattrs = _attempt("listxattr", lambda p: {"names": os.listxattr(
                p, follow_symlinks=False)}, path)
            if "names" in xattrs:
                values = {}
                for xname in xattrs["names"]:
                    got = _attempt("getxattr", lambda p, x: {"v": os.getxattr(
                        p, x, follow_symlinks=False).hex()}, path, xname)
                    values[xname] = got.get("v", got.get("error"))
                entry["xattrs"] = values
            else:
                entry["xattrs_error"] = xattrs
            if stat_is(st, "dir"):
                key = (st.st_dev, st.st_ino)
                if key in seen:
                    entry["cycle"] = True
                else:
                    seen.add(key)
                    pending.append(path_rel)
            elif stat_is(st, "link"):
                entry["link"] = _attempt("readlink", lambda p: {"to": os.readlink(p)}, path)
            elif stat_is(st, "reg") and data:
                entry["read"] = _attempt("read", _capped_read, path, cap)
                entry["mmap"] = _attempt("mmap", _capped_mmap, path, st.st_size, cap)
            out[path_rel] = entry
    return {"entries": out, "complete": not pending}


def stat_is(st, kind):
    return {"dir": stat.S_ISDIR, "link": stat.S_ISLNK, "reg": stat.S_ISREG}[kind](st.st_mode)


def sha256_of(path):
    st = os.stat(path)
    return {**_capped_read(path, 1 << 40), "mtime_ns": st.st_mtime_ns}


def patch_file(path, edits, truncate=None):
    """Write ``edits`` ([offset, hex bytes]) into a file in place and truncate it if asked:
    an image changed under its live mount."""
    fd = os.open(path, os.O_WRONLY)
    try:
        for offset, data in edits:
            os.pwrite(fd, bytes.fromhex(data), offset)
        if truncate is not None:
            os.ftruncate(fd, truncate)
        os.fsync(fd)
    finally:
        os.close(fd)
    return {}


CLONE_NEWUSER, CLONE_NEWNS = 0x10000000, 0x00020000
NOBODY = 65534
PR_SET_DUMPABLE = 4


def _in_child(work):
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


def _child_result(work):
    """``work`` in a child (other credentials, namespaces): its answer, or its OSError."""
    pid, pipe = _in_child(work)
    with os.fdopen(pipe, "rb") as fh:
        raw = fh.read()
    os.waitpid(pid, 0)
    answer = json.loads(raw or b'{"error": "the child died", "errno": 0}')
    if "error" in answer:
        raise OSError(answer["errno"], answer["error"])
    return answer


def mount_unprivileged(source, target, options):
    """mount(2) from a child that is nobody, in a user and mount namespace of its own (root
    there): what an unprivileged user can ask of EROFS."""
    os.makedirs(target, exist_ok=True)

    def work():
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)
        # Changing credentials made the process undumpable, which makes its /proc files
        # root's: the namespace maps below could not be written.
        libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)
        if libc.unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0:
            _oserror("unshare")
        for name, text in (("setgroups", "deny"), ("uid_map", f"0 {NOBODY} 1"),
                           ("gid_map", f"0 {NOBODY} 1")):
            with open(f"/proc/self/{name}", "w") as fh:
                fh.write(text)
        rc = libc.mount(source.encode(), target.encode(), b"erofs", MS_RDONLY,
                        options.encode() if options else None)
        err = ctypes.get_errno() if rc != 0 else 0
        return {"ok": rc == 0, "errno": err, "errname": errno.errorcode.get(err, "")}
    return {**_child_result(work), "kmsg": []}


def read_as(path, uid, method="read"):
    """read_file from a child running as ``uid`` (and its own gid, no groups)."""
    def work():
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
        return read_file(path, method)
    return _child_result(work)


def execute(path, timeout=60.0):
    """Run the program ``path`` (no arguments, nothing on stdin): its exit status and what
    it printed."""
    import subprocess
    done = subprocess.run([path], stdin=subprocess.DEVNULL, capture_output=True,
                          timeout=timeout, check=False)
    return {"status": done.returncode, "stdout": done.stdout.decode(errors="replace"),
            "stderr": done.stderr.decode(errors="replace")}


# ---- fanotify on an image file ----------------------------------------------------------

FAN_ACCESS, FAN_ACCESS_PERM = 0x1, 0x20000
FAN_CLASS_NOTIF, FAN_CLASS_CONTENT = 0x0, 0x4
FAN_NONBLOCK, FAN_MARK_ADD = 0x2, 0x1
FAN_ALLOW, FAN_DENY = 0x1, 0x2
AT_FDCWD = -100
EVENT = struct.Struct("<IBBHQii")  # struct fanotify_event_metadata
libc.fanotify_init.argtypes = [ctypes.c_uint, ctypes.c_uint]
libc.fanotify_mark.argtypes = [ctypes.c_int, ctypes.c_uint, ctypes.c_uint64, ctypes.c_int,
                               ctypes.c_char_p]


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
    _oserror("fanotify_init/fanotify_mark")


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
        child, pipe = _in_child(lambda: do_mount(image, root, mount_options))
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
            child, pipe = _in_child(work)
            _serve_events(fd, child, deny, counts)
            with os.fdopen(pipe, "rb") as fh:
                result = json.loads(fh.read() or b'{"error": "the child died", "errno": 0}')
            out[phase] = {**counts, "result": result}
    finally:
        os.close(fd)  # first: pending permission events are allowed when the group goes
        if mount_options is not None:
            do_umount(root, lazy=True)
    return out


# ---- the file calls a reader makes besides reading ----------------------------------------

SYS_STATX = 332  # x86_64
AT_FDCWD = -100
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
        _oserror(f"statx {path}")
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


# ---- what tools that watch a file see: cachestat(2) and uprobes --------------------------

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


# ---- what a core dump and /proc say a mapping is ---------------------------------------

CORE_PATTERN = "/proc/sys/kernel/core_pattern"
NT_FILE = 0x46494C45


def _nt_file_names(core):
    """{start address: file name} from the NT_FILE note of an ELF64 core dump."""
    phoff, = struct.unpack_from("<Q", core, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", core, 0x36)
    names = {}
    for i in range(phnum):
        ptype, _, offset, _, _, filesz = struct.unpack_from("<IIQQQQ", core, phoff + i * phentsize)
        if ptype != 4:  # PT_NOTE
            continue
        at, end = offset, offset + filesz
        while at + 12 <= end:
            namesz, descsz, ntype = struct.unpack_from("<III", core, at)
            desc = at + 12 + (namesz + 3) // 4 * 4
            if ntype == NT_FILE:
                count, _ = struct.unpack_from("<QQ", core, desc)
                starts = [struct.unpack_from("<QQQ", core, desc + 16 + 24 * k)[0]
                          for k in range(count)]
                text = core[desc + 16 + 24 * count:desc + descsz].split(b"\0")
                names.update({start: text[k].decode(errors="replace")
                              for k, start in enumerate(starts)})
            at = desc + (descsz + 3) // 4 * 4
    return names


def mapping_names(path):
    """A child maps ``path``, reads the name /proc/self/maps gives the mapping, and dumps
    core (core_pattern set for it, restored after; only the core's headers and notes): the
    names /proc and the core's NT_FILE note (what gdb opens to load a core) give it."""
    with open(CORE_PATTERN) as fh:
        old_pattern = fh.read().strip()
    core_dir = "/tmp/harness-cores"
    os.makedirs(core_dir, exist_ok=True)
    with open(CORE_PATTERN, "w") as fh:
        fh.write(f"{core_dir}/core.%p")
    try:
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                os.close(r)
                resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY,) * 2)
                with open("/proc/self/coredump_filter", "w") as fh:
                    fh.write("0")
                mapping = Mapping(path)
                mapping.touch()
                start = f"{mapping.address:x}-"
                with open("/proc/self/maps") as fh:
                    line = next(line for line in fh if line.startswith(start))
                os.write(w, json.dumps({"address": mapping.address,
                                        "maps": line.split(None, 5)[5].strip()}).encode())
                os.close(w)
                signal.signal(signal.SIGABRT, signal.SIG_DFL)
                os.abort()
            finally:
                os._exit(1)
        os.close(w)
        answer = _read_to_end(r)
        _, status = os.waitpid(pid, 0)
        child = json.loads(answer or b"{}")
        if "maps" not in child:
            raise OSError(0, f"the child mapping {path} ended without reporting (status {status})")
        core = f"{core_dir}/core.{pid}"
        if not os.WCOREDUMP(status) or not os.path.exists(core):
            raise OSError(0, f"the child mapping {path} dumped no core (status {status})")
        with open(core, "rb") as fh:
            names = _nt_file_names(fh.read())
        os.unlink(core)
    finally:
        with open(CORE_PATTERN, "w") as fh:
            fh.write(old_pattern)
    return {"maps": child["maps"], "core": names.get(child["address"])}


def statvfs_free(path):
    st = os.statvfs(path)
    return {"free": st.f_bfree * st.f_frsize}


def _helper(name):
    """Another helper module uploaded beside this file (dmtarget.py: device mapper targets;
    failnth.py: failing allocations one at a time; treecheck.py: the generated-layout
    checks; kmemleak.py: leaks on demand), loaded once on first use."""
    if name not in sys.modules:
        import importlib.util
        where = os.path.join(os.path.dirname(os.path.abspath(__file__)), f"{name}.py")
        spec = importlib.util.spec_from_file_location(name, where)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def _dmtarget():
    return _helper("dmtarget")


def _failnth():
    return _helper("failnth")


def _treecheck():
    return _helper("treecheck")


def _kmemleak():
    return _helper("kmemleak")


# Keyed by the names of harness/guest/probe.py's Batch methods, which declare each
# operation and its arguments.
OPS = {
    "read": lambda op: read_file(op["path"], op.get("method", "read")),
    "residency": lambda op: mincore(op["path"]),
    "pfns": lambda op: pfns(op["paths"]),
    "smaps": lambda op: smaps(op["paths"]),
    "collapse_huge": lambda op: collapse(op["path"], op.get("touch", False), op.get("retries", 0)),
    "meminfo": lambda op: meminfo(),
    "slab_objects": lambda op: slab_objects(op["name"]),
    "cgroup_read": lambda op: cgroup_read(op["cgroup"], op["path"], op.get("method", "read"),
                                          op.get("limit")),
    "hold": lambda op: hold(op["path"], op["tag"], op.get("timeout", 120.0)),
    "release": lambda op: release(op["tag"], op.get("pageout", False)),
    "mount": lambda op: do_mount(op["source"], op["target"], op.get("options", ""),
                                 op.get("fstype", "erofs"), op.get("readonly", True),
                                 op.get("settle", True)),
    "umount": lambda op: do_umount(op["target"], op.get("lazy", False),
                                   op.get("settle", True)),
    "remount": lambda op: do_remount(op["target"], op.get("options", ""),
                                     op.get("settle", True)),
    "drop_caches": lambda op: drop_caches(op.get("level", 3), op.get("sync", True)),
    "erofs_mounts": lambda op: erofs_mounts(op["prefix"]),
    "fadvise_dontneed": lambda op: fadvise_dontneed(op["path"]),
    "hint": lambda op: hint(op["path"], op["advice"], op.get("settle", 5.0)),
    "end_holders": lambda op: end_holders(),
    "loop_attach": lambda op: loop_attach(op["path"], op.get("read_only", True)),
    "cleanup": lambda op: cleanup(op["prefix"], op["dirs"], op.get("devices", [])),
    "data_ranges": lambda op: seek_map(op["path"]),
    "parallel_read": lambda op: parallel_read(op["paths"]),
    "walk": lambda op: walk(op["root"], op.get("cap", WALK_READ_CAP), op.get("budget", 120.0),
                            data=op.get("data", True)),
    "file_state": lambda op: sha256_of(op["path"]),
    "patch_file": lambda op: patch_file(op["path"], op["edits"], op.get("truncate")),
    "mount_unprivileged": lambda op: mount_unprivileged(op["source"], op["target"],
                                                        op.get("options", "")),
    "free_bytes": lambda op: statvfs_free(op["path"]),
    "file_calls": lambda op: file_calls(op["path"]),
    "watchers": lambda op: watchers(op["path"]),
    "mapping_names": lambda op: mapping_names(op["path"]),
    "fanotify_watch": lambda op: fanotify_watch(op["image"], op["root"], op["path"],
                                                op.get("deny", False),
                                                op.get("mount_options")),
    "read_as": lambda op: read_as(op["path"], op["uid"], op.get("method", "read")),
    "execute": lambda op: execute(op["path"], op.get("timeout", 60.0)),
    "tree_check": lambda op: _treecheck().tree_check(op["root"], op["entries"],
                                                     op.get("methods", ["read"])),
    "residencies": lambda op: _treecheck().residency(op["paths"]),
    "lookup": lambda op: _treecheck().lookup(op["paths"]),
    "dm_create": lambda op: {"device": _dmtarget().create(_dmtarget().PREFIX + op["name"],
                                                          op["device"])},
    "dm_swap": lambda op: _dmtarget().swap(_dmtarget().PREFIX + op["name"], op["kind"],
                                           op["device"], op.get("delay_ms", 0)) or {},
    # In a child: a pointer left on its kernel stack by the sweep's calls goes with it
    # (kmemleak scans the kernel stacks of live tasks, and would take it for a reference).
    "fail_nth_sweep": lambda op: _child_result(lambda: _failnth().sweep(
        op["operation"], op["source"], op.get("options", ""), op["path"], op["sha256"],
        op["root"], op.get("remount_options"), op.get("max_n", 1000), op.get("budget", 240.0),
        op.get("twin"))),
    "kmemleak_clear": lambda op: _kmemleak().clear(),
    "kmemleak_scan": lambda op: _kmemleak().scan(),
    "kernel_log_mark": lambda op: kernel_log().mark(),
    "kernel_log_since": lambda op: kernel_log().since(op["mark"]),
}


def run(ops):
    results = []
    for op in ops:
        try:
            results.append(OPS[op["op"]](op))
        except OSError as exc:
            results.append({"error": str(exc), "errno": exc.errno or 0})
        except Exception as exc:
            results.append({"error": f"{type(exc).__name__}: {exc}", "errno": 0})
    return results


def main():
    if sys.argv[1] == "--serve":
        # One batch per line in, one line of results out: Python starts once per VM.
        for line in sys.stdin:
            sys.stdout.write(json.dumps(run(json.loads(line))) + "\n")
            sys.stdout.flush()
        return
    json.dump(run(json.loads(sys.argv[1])), sys.stdout)


if __name__ == "__main__":
    main()
