"""Which pages of a file are in the page cache, and where: mincore over a mapping,
page frames from pagemap with their counts, flags and memory cgroups, smaps,
huge page collapse, and read hints that fill the cache without a read."""

import ctypes
import errno
import mmap
import os
import struct
import time

from pcprobe.base import MAP_FAILED, PAGE, as_user, libc, oserror

MADV_PAGEOUT = 21
MADV_NOHUGEPAGE = 15


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
            oserror(f"mmap {path}")

    def touch(self):
        for offset in range(0, self.size, PAGE):
            ctypes.string_at(self.address + offset, 1)

    def resident(self):
        """Pages of this mapping in the page cache (mincore on the mapping itself)."""
        pages = (self.size + PAGE - 1) // PAGE
        vec = ctypes.create_string_buffer(max(pages, 1))
        if libc.mincore(ctypes.c_void_p(self.address), ctypes.c_size_t(self.size), vec) != 0:
            oserror("mincore")
        return {"pages": pages, "resident": sum(b & 1 for b in vec.raw[:pages])}

    def page_out(self):
        """madvise(MADV_PAGEOUT): reclaim this mapping's pages now (clean file pages are
        unmapped and freed when no one else maps them); what stayed resident."""
        if libc.madvise(ctypes.c_void_p(self.address), ctypes.c_size_t(self.size),
                        MADV_PAGEOUT) != 0:
            oserror("madvise(MADV_PAGEOUT)")
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


def mincore_as(path, uid):
    """mincore() of ``path`` from a child running as ``uid`` (its own gid, no groups): what
    the kernel shows that user. It shows the pages of a file the user owns or may write;
    of any other file it says every page is resident (mm/mincore.c, can_do_mincore)."""
    return as_user(uid, lambda: mincore(path))


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
            # Not a mapping khugepaged may collapse through: a collapse puts new huge folios
            # in the cache, charged to this process's (the root) memory cgroup, so the view
            # would show frames and charges that only looking made (once: a cold read's
            # 1024 pages all huge and all root's, while the reader's group held 4 MiB).
            if libc.madvise(ctypes.c_void_p(mappings[-1].address),
                            ctypes.c_size_t(max(mappings[-1].size, 1)), MADV_NOHUGEPAGE) != 0:
                oserror("madvise(MADV_NOHUGEPAGE)")
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


def fadvise_dontneed(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    return {}


ADVICE = {"normal": os.POSIX_FADV_NORMAL, "sequential": os.POSIX_FADV_SEQUENTIAL}


def first_page_readahead(path, device, read_ahead_kb, advice=None):
    """One read(2) of the first page of ``path`` from a cold cache, with the readahead of
    block device ``device`` set to ``read_ahead_kb`` KiB meanwhile (restored after): the
    residency before the read (0 if the cache was cold) and after it. The file is opened
    after the setting (a file takes its readahead size from its backing device when it is
    opened), then given ``advice`` (normal, sequential: fadvise sizes the readahead anew)
    if any."""
    name = os.path.basename(os.path.realpath(device))
    knob = f"/sys/block/{name}/queue/read_ahead_kb"
    with open(knob) as fh:
        old = fh.read().strip()
    try:
        with open(knob, "w") as fh:
            fh.write(str(read_ahead_kb))
        fadvise_dontneed(path)
        before = mincore(path)
        fd = os.open(path, os.O_RDONLY)
        try:
            if advice:
                os.posix_fadvise(fd, 0, 0, ADVICE[advice])
            if len(os.read(fd, PAGE)) != PAGE:
                raise OSError(errno.EIO, f"{path}: a short read of its first page")
        finally:
            os.close(fd)
        return {"before": before, "after": mincore(path)}
    finally:
        with open(knob, "w") as fh:
            fh.write(old)


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
                oserror("readahead")
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
