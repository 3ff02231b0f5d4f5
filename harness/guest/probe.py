"""The host side of the guest page cache probe (harness/guest/helpers/pcprobe/), as typed
calls: ``probe.read(path)`` gives a :class:`ReadResult`, ``probe.residency(path)`` a
:class:`Residency`, and so on. Tests speak these, never the wire format.

The probe runs once per guest as a server (Python starts in a TCG guest in a few hundred
milliseconds, so it is started once and kept). Measurements that belong together go in one
round trip with :meth:`Probe.batch`::

    with probe.batch() as b:
        read = b.read(first)
        other = b.residency(second)
    assert other.value.resident == other.value.pages
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Concatenate, Generic, ParamSpec, TypeVar

import paramiko

from harness.core.errors import HarnessError
from harness.guest.agent import Agent
from harness.vm.machine import VM

PROBE_SOURCE = Path(__file__).parent / "helpers" / "pcprobe"  # a package, run with -m
TIMEOUT = 300.0
T = TypeVar("T")
P = ParamSpec("P")


class ProbeLost(HarnessError):
    """The probe process in the guest ended (killed by an oops, the OOM killer, ...)."""


class ProbeError(HarnessError):
    """An operation of the probe failed; carries errno."""

    def __init__(self, op: dict[str, Any], result: dict[str, Any]) -> None:
        self.op = op
        self.errno = int(result.get("errno", 0))
        super().__init__(f"guest probe {op['op']} failed: {result.get('error')} (op: {op})")


# ---- what the probe answers -----------------------------------------------------------

@dataclass(frozen=True)
class ReadResult:
    bytes: int
    sha256: str


@dataclass(frozen=True)
class FaultSweep:
    """One operation with each of its fault sites failed in turn."""
    points: int  # fault sites the operation reached (each failed once)
    complete: bool  # the operation ran once without reaching the next site
    stopped: str  # why not complete: "budget", "max_n", "problems", "set-up"
    outcomes: dict[str, int]  # what the runs answered ("ok", "ENOMEM", ...) and how often
    problems: list[str]


@dataclass(frozen=True)
class Residency:
    pages: int
    resident: int

    def __str__(self) -> str:
        return f"{self.resident}/{self.pages} pages resident"


@dataclass(frozen=True)
class FirstPageRead:
    """A file's residency before one read of its first page (cold: nothing) and after."""
    before: Residency
    after: Residency


@dataclass(frozen=True)
class Extent:
    """One FIEMAP extent: ``length`` bytes of the file from ``logical`` lie at byte
    ``physical`` of the device (its flags say when that address means no bytes as such)."""
    logical: int
    physical: int
    length: int
    flags: int

    LAST: ClassVar[int] = 0x1
    UNKNOWN: ClassVar[int] = 0x2  # the data has no address (yet, or at all)
    ENCODED: ClassVar[int] = 0x8  # stored transformed: the bytes at the address differ
    NOT_ALIGNED: ClassVar[int] = 0x100
    DATA_INLINE: ClassVar[int] = 0x200  # inside metadata (tail packing)
    MERGED: ClassVar[int] = 0x1000

    @property
    def end(self) -> int:
        return self.logical + self.length


@dataclass(frozen=True)
class PassthroughUnmount:
    """An EROFS file served by a FUSE passthrough daemon, mapped, every file closed, then its
    EROFS mount unmounted (harness/guest/helpers/fusepass.py)."""
    umount: str  # "ok", the errno name, or how the unmounting child died
    still_mounted: bool
    before: str  # sha256 of the first page through the mapping, before the umount
    after: str  # and after it
    daemon: list[str]  # what the daemon reported ("released" once it let the file go)


@dataclass(frozen=True)
class PagedOutRead:
    """A holder's mapping reclaimed with MADV_PAGEOUT (what stayed resident), then every
    page touched again (what the faults read)."""
    after_pageout: Residency
    read: ReadResult


@dataclass(frozen=True)
class Frames:
    """Page frame numbers of a file's pages (0: not present), each frame's map count,
    whether it belongs to a transparent huge page, and the inode number of the memory
    cgroup it is charged to (empty without memory cgroups)."""
    pfns: list[int]
    counts: list[int]
    huge: list[bool]
    memcgs: list[int]


@dataclass(frozen=True)
class CgroupRead:
    read: ReadResult | None
    error: str
    file: int  # memory.stat "file" after the read, bytes
    file_mapped: int
    current: int  # memory.current
    anon: int  # memory.stat "anon" at the end of the read: the reader's own pages
    inode: int  # the cgroup directory's inode number, as /proc/kpagecgroup names it


@dataclass(frozen=True)
class MountAnswer:
    ok: bool
    errno: int
    errname: str
    kmsg: list[str]


@dataclass(frozen=True)
class KernelLogSlice:
    """Kernel log records after a mark, the mark to use next, and how many records were
    overwritten in the ring buffer before the probe could read them."""
    lines: list[str]
    mark: int
    missed: int

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@dataclass(frozen=True)
class Outcome:
    """What one look at a file gave: its bytes' hash, or the errno it failed with."""
    read: ReadResult | None
    errno: int = 0
    error: str = ""

    def __str__(self) -> str:
        return f"{self.read.sha256[:12]}" if self.read else f"{self.error} (errno {self.errno})"


@dataclass(frozen=True)
class WalkEntry:
    mode: int
    size: int
    error: Outcome | None  # lstat or listdir failed
    read: Outcome | None  # regular files: read(2)
    mapped: Outcome | None  # regular files: mmap
    xattrs: dict[str, str]  # name -> hex value, or the error text of getxattr
    cycle: bool  # a directory seen before (a damaged entry pointing at an ancestor)


@dataclass(frozen=True)
class Walk:
    entries: dict[str, WalkEntry]  # by path under the root
    complete: bool  # False: the walk's time or entry budget ran out


@dataclass(frozen=True)
class FanotifyPhase:
    access: int  # FAN_ACCESS events on the image file
    access_perm: int  # FAN_ACCESS_PERM events (answered)
    result: Outcome  # what the child's work gave (the read: its bytes or errno)


@dataclass(frozen=True)
class FanotifyWatch:
    permission_events: bool  # whether the kernel offered FAN_ACCESS_PERM
    metadata: FanotifyPhase
    data: FanotifyPhase


@dataclass(frozen=True)
class FileState:
    read: ReadResult
    mtime_ns: int


@dataclass(frozen=True)
class FileCalls:
    """A file's answers to the calls besides read(2) that readers make; an errno of 0 is
    success."""
    dioalign_reported: bool  # statx filled in STATX_DIOALIGN
    dio_offset_align: int  # 0: statx says the file has no direct I/O
    odirect_errno: int  # open(O_DIRECT)
    setfl_odirect_errno: int  # fcntl(F_SETFL, O_DIRECT) on a file opened without it
    lease_errno: int  # fcntl(F_SETLEASE, F_RDLCK), then F_UNLCK
    fslabel_errno: int  # ioctl(FS_IOC_GETFSLABEL)


@dataclass(frozen=True)
class Watchers:
    """What tools that watch a file see of it."""
    cachestat_pages: int  # cachestat(2)'s nr_cache over the whole file (-1: it failed)
    cachestat_errno: int
    # A uprobe at a NOP of the file, then an executable mapping of it: "installed" (the
    # mapping shows the breakpoint), "not installed (...)", or why it could not be tried
    # ("unsupported: ...", "register: ...").
    uprobe: str


@dataclass(frozen=True)
class Ran:
    """A program run in the guest."""
    status: int  # its exit status (negative: killed by that signal)
    stdout: str
    stderr: str

    def said(self, key: str) -> str | None:
        """The rest of the first line it printed that starts with ``key`` and a space."""
        for line in self.stdout.splitlines():
            if line.startswith(f"{key} "):
                return line[len(key) + 1:]
        return None


@dataclass(frozen=True)
class Leaks:
    """What kmemleak reported since it was last cleared."""
    running: bool  # False: kmemleak is off (not built in, or it turned itself off)
    why: str  # why it is off
    records: tuple[str, ...]  # each as kmemleak prints it: object, task, backtrace

    def erofs(self) -> list[str]:
        """The leaks that EROFS allocated (its functions in the allocation's backtrace);
        the rest (a boot-time object, another subsystem) are not the suite's to judge."""
        return [r for r in self.records if "erofs" in r.partition("backtrace")[2]]


@dataclass(frozen=True)
class MappingNames:
    """The name of a file's mapping as /proc/<pid>/maps and the core dump's NT_FILE note
    give it (None: the note has no entry for the mapping)."""
    maps: str
    core: str | None


@dataclass(frozen=True)
class HandleOpen:
    """A file encoded as a handle (name_to_handle_at), then opened by it (open_by_handle_at)
    after the caches were dropped."""
    short_errno: int  # asking with no room for the handle (EOVERFLOW is right)
    needed_bytes: int  # the size the kernel said the handle needs when it refused
    handle_bytes: int  # the size of the handle it then gave
    handle_type: int  # the handle's type (FILEID_*)
    ino_before: int  # the inode number stat gave before the drop
    ino: int  # the inode number of what the handle opened (-1: it failed)
    path: str  # the path the kernel names the opened file by (/proc/self/fd)
    read: ReadResult | None  # a regular file's bytes, read through the handle's descriptor
    error: str  # why open_by_handle_at failed ("" when it opened)


@dataclass(frozen=True)
class StatFs:
    """statfs(2) of a path: the filesystem's magic and statvfs fields, by path and by an
    open descriptor (fstatfs)."""
    magic: int
    by_path: dict[str, int]
    by_fd: dict[str, int]


@dataclass(frozen=True)
class SysfsWrite:
    name: str
    value: str
    errno: int  # 0: the attribute took the value
    after: str  # its text read back afterwards


@dataclass(frozen=True)
class SysfsKnobs:
    """A filesystem instance's attributes under /sys/fs/<fs>/<sb>/: their text, then writes
    in turn."""
    directory: str
    values: dict[str, str]
    writes: list[SysfsWrite]


def _handle_open(raw: dict[str, Any]) -> HandleOpen:
    read = raw.get("read")
    return HandleOpen(int(raw["short_errno"]), int(raw["needed_bytes"]),
                      int(raw["handle_bytes"]), int(raw["handle_type"]),
                      int(raw["ino_before"]), int(raw.get("ino", -1)), str(raw.get("path", "")),
                      None if read is None else _read(read),
                      str(raw.get("error", "")))


@dataclass(frozen=True)
class TreeCheck:
    """What a mounted tree gave that its source did not (empty: every entry as built), and
    how much was looked at (files, dirs, reads, bytes, ranges)."""
    differences: list[str]
    counts: dict[str, int]


MemInfo = dict[str, int]  # /proc/meminfo in KiB, by field name


@dataclass(frozen=True)
class SlabObjects:
    """A slab cache's objects in /proc/slabinfo, read after shrinking the cache (so that
    free objects in a CPU's own slabs are not counted as in use): in use and allocated."""
    active: int
    total: int


def _read(answer: dict[str, Any]) -> ReadResult:
    return ReadResult(int(answer["bytes"]), str(answer["sha256"]))


def _residency(answer: dict[str, Any]) -> Residency:
    return Residency(int(answer["pages"]), int(answer["resident"]))


def _mount(answer: dict[str, Any]) -> MountAnswer:
    return MountAnswer(bool(answer["ok"]), int(answer["errno"]), str(answer["errname"]),
                       list(answer["kmsg"]))


def _cgroup(answer: dict[str, Any]) -> CgroupRead:
    read = answer["read"]
    return CgroupRead(None if "error" in read else _read(read), str(read.get("error", "")),
                      int(answer["file"]), int(answer["file_mapped"]), int(answer["current"]),
                      int(answer["anon"]), int(answer["inode"]))


def _outcome(raw: dict[str, Any] | None) -> Outcome | None:
    if raw is None:
        return None
    if "error" in raw:
        return Outcome(None, int(raw.get("errno", 0)), str(raw["error"]))
    return Outcome(_read(raw))


def _walk(answer: dict[str, Any]) -> Walk:
    entries = {}
    for path, raw in answer["entries"].items():
        failed = _outcome(raw) if "error" in raw else None
        entries[str(path)] = WalkEntry(int(raw.get("mode", 0)), int(raw.get("size", 0)), failed,
                                       _outcome(raw.get("read")), _outcome(raw.get("mmap")),
                                       {str(k): str(v) for k, v in raw.get("xattrs", {}).items()},
                                       bool(raw.get("cycle")))
    return Walk(entries, bool(answer["complete"]))


def _fanotify_phase(raw: dict[str, Any]) -> FanotifyPhase:
    result = raw["result"]
    outcome = _outcome(result) if "error" in result or "sha256" in result else None
    return FanotifyPhase(int(raw["access"]), int(raw["access_perm"]), outcome or Outcome(None))


def _nothing(answer: dict[str, Any]) -> None:
    return None


# ---- one batch, one round trip ------------------------------------------------------------

class Pending(Generic[T]):
    """The answer to one operation of a batch, there once the batch has run."""

    def __init__(self, op: dict[str, Any], convert: Callable[[dict[str, Any]], T],
                 may_fail: bool) -> None:
        self.op = op
        self.may_fail = may_fail
        self._convert = convert
        self._answer: dict[str, Any] | None = None

    def _set(self, answer: dict[str, Any]) -> None:
        self._answer = answer

    @property
    def failed(self) -> bool:
        return self._raw() is not None and "error" in self._raw()

    @property
    def errno(self) -> int:
        """The errno of a failed operation, 0 when it succeeded."""
        return int(self._raw().get("errno", 0)) if self.failed else 0

    @property
    def error(self) -> str:
        return str(self._raw().get("error", "")) if self.failed else ""

    @property
    def value(self) -> T:
        answer = self._raw()
        if "error" in answer:
            raise ProbeError(self.op, answer)
        return self._convert(answer)

    def _raw(self) -> dict[str, Any]:
        if self._answer is None:
            raise HarnessError(f"the batch holding {self.op['op']} has not run yet")
        return self._answer


class Batch:
    """Operations queued for one round trip; run when the ``with`` block ends. A failed
    operation raises ProbeError then, unless it was queued with ``may_fail=True``.

    Every operation of the probe is declared here, once: its name on the wire (the same as
    the method's, and as the key of ``OPS`` in pcprobe/server.py), its arguments and how its
    answer is read. :class:`Probe` offers each as a batch of one."""

    def __init__(self) -> None:
        self.pending: list[Pending[Any]] = []

    def _add(self, op: str, convert: Callable[[dict[str, Any]], T], may_fail: bool = False,
             /, **args: Any) -> Pending[T]:
        item = Pending({"op": op, **args}, convert, may_fail)
        self.pending.append(item)
        return item

    # ---- reading and residency ---------------------------------------------------------

    def read(self, path: str, method: str = "read", *, may_fail: bool = False
             ) -> Pending[ReadResult]:
        """Read the whole file through ``method`` (read, pread, readv, mmap_shared, ...)."""
        return self._add("read", _read, may_fail, path=path, method=method)

    def read_as(self, path: str, uid: int, method: str = "read", *, may_fail: bool = False
                ) -> Pending[ReadResult]:
        """Read the whole file as user ``uid`` (a child that dropped root)."""
        return self._add("read_as", _read, may_fail, path=path, uid=uid, method=method)

    def parallel_read(self, *paths: str) -> Pending[list[ReadResult | str]]:
        """Open and read each file from its own process, all started at the same moment:
        each result, or the error text of a reader that failed."""
        return self._add("parallel_read", lambda a: [
            str(r["error"]) if "error" in r else _read(r) for r in a["reads"]],
            paths=list(paths))

    def residency(self, path: str, *, may_fail: bool = False) -> Pending[Residency]:
        """mincore() over a mapping of the file: its pages in the page cache it reads."""
        return self._add("residency", _residency, may_fail, path=path)

    def residency_as(self, path: str, uid: int) -> Pending[Residency]:
        """mincore() over a mapping of the file made by user ``uid``: the pages the kernel
        lets that user see (its own files' and those it may write; of others it says all)."""
        return self._add("residency_as", _residency, path=path, uid=uid)

    def first_page_readahead(self, path: str, device: str, read_ahead_kb: int,
                             advice: str | None = None) -> Pending[FirstPageRead]:
        """One read of the file's first page from cold, the file opened while block device
        ``device`` reads ahead ``read_ahead_kb`` KiB (restored after) and then advised
        ``advice`` (normal, sequential) if given: its residency before and after."""
        return self._add("first_page_readahead", lambda a: FirstPageRead(
            _residency(a["before"]), _residency(a["after"])), path=path, device=device,
            read_ahead_kb=read_ahead_kb, advice=advice)

    def residencies(self, paths: list[str]) -> Pending[dict[str, Residency | str]]:
        """mincore of each file without faulting pages in, or the error text."""
        return self._add("residencies", lambda a: {
            str(k): (Residency(int(v[1]), int(v[0])) if isinstance(v, list) else str(v))
            for k, v in a.items()}, paths=paths)

    def fuse_passthrough_unmount(self, source: str, target: str, workdir: str
                                 ) -> Pending[PassthroughUnmount]:
        """``source`` (a file of the EROFS mount at ``target``) served through FUSE
        passthrough, mapped privately, closed everywhere; then ``target`` unmounted."""
        return self._add("fuse_passthrough_unmount", lambda a: PassthroughUnmount(
            str(a["umount"]), bool(a["still_mounted"]), str(a["before"]), str(a["after"]),
            [str(x) for x in a["daemon"]]), source=source, target=target, workdir=workdir)

    def fiemap(self, paths: list[str]) -> Pending[dict[str, list[Extent] | str]]:
        """FS_IOC_FIEMAP of each whole file: its extents in order, or the error text."""
        return self._add("fiemap", lambda a: {
            str(k): ([Extent(*map(int, e)) for e in v] if isinstance(v, list) else str(v))
            for k, v in a.items()}, paths=paths)

    def pfns(self, *paths: str) -> Pending[dict[str, Frames]]:
        """Map and touch all files at once; the page frames their pages sit in (pagemap,
        kpagecount, kpageflags), as one snapshot that a second look found unchanged."""
        return self._add("pfns", lambda a: {
            path: Frames(list(v["pfns"]), list(v["counts"]), [bool(h) for h in v["huge"]],
                         list(v["memcgs"])) for path, v in a.items()}, paths=list(paths))

    def smaps(self, *paths: str) -> Pending[dict[str, dict[str, int]]]:
        """Map and touch every file in one process; each mapping's /proc/self/smaps figures."""
        return self._add("smaps", lambda a: a, paths=list(paths))

    def collapse_huge(self, path: str, touch: bool = False, eagain_retries: int = 0
                      ) -> Pending[int]:
        """madvise(MADV_COLLAPSE) over a mapping of the whole file (its pages touched first
        if ``touch``): 0, or the errno it failed with. EAGAIN, which the kernel documents as
        transient, is asked again up to ``eagain_retries`` times."""
        return self._add("collapse_huge", lambda a: int(a["errno"]), path=path, touch=touch,
                         retries=eagain_retries)

    def fadvise_dontneed(self, path: str) -> Pending[None]:
        return self._add("fadvise_dontneed", _nothing, path=path)

    def hint(self, path: str, advice: str, settle: float = 5.0) -> Pending[None]:
        """A read hint without a read: ``willneed`` (POSIX_FADV_WILLNEED) or ``readahead``
        (readahead(2)); returns once the file's residency has settled (for at most
        ``settle`` seconds; 0: at once, its reads still in flight)."""
        return self._add("hint", _nothing, path=path, advice=advice, settle=settle)

    def data_ranges(self, path: str) -> Pending[list[tuple[int, int]]]:
        """[start, end) ranges that SEEK_DATA/SEEK_HOLE report as data."""
        return self._add("data_ranges", lambda a: [(int(s), int(e)) for s, e in a["data"]],
                         path=path)

    def file_state(self, path: str) -> Pending[FileState]:
        """sha256 and mtime of a file in the guest (an image behind a mount, say)."""
        return self._add("file_state", lambda a: FileState(_read(a), int(a["mtime_ns"])),
                         path=path)

    def walk(self, root: str, budget: float = 120.0, data: bool = True) -> Pending[Walk]:
        """Look at every entry under ``root`` as a reader would (lstat, readlink, xattrs,
        and unless ``data`` is False read(2) and mmap of each file, at most 8 MiB each);
        failures are recorded per entry with their errno, so a damaged mount can be walked
        to the end."""
        return self._add("walk", _walk, root=root, budget=budget, data=data)

    def tree_check(self, root: str, entries: list[dict[str, Any]], methods: list[str]
                   ) -> Pending[TreeCheck]:
        """Every entry under ``root`` against what it should be (harness/guest/helpers/
        treecheck.py says what is compared), in the order given: the differences."""
        return self._add("tree_check", lambda a: TreeCheck(
            [str(d) for d in a["differences"]], {str(k): int(v) for k, v in a["counts"].items()}),
            root=root, entries=entries, methods=methods)

    def lookup(self, paths: list[str]) -> Pending[dict[str, str]]:
        """lstat each path in this order (first lookups make the shared inodes): the error
        text of each that failed."""
        return self._add("lookup", lambda a: {str(k): str(v) for k, v in a.items()},
                         paths=paths)

    # ---- memory and caches ---------------------------------------------------------------

    def meminfo(self) -> Pending[MemInfo]:
        return self._add("meminfo", lambda a: {str(k): int(v) for k, v in a.items()})

    def slab_objects(self, name: str) -> Pending[SlabObjects]:
        """The objects of slab cache ``name`` (``erofs_inode``: every EROFS inode, the
        shared ones included)."""
        return self._add("slab_objects", lambda a: SlabObjects(int(a["active"]),
                                                               int(a["total"])), name=name)

    def drop_caches(self, level: int = 3, *, sync: bool = True) -> Pending[None]:
        """sync (unless the caller wrote nothing), then /proc/sys/vm/drop_caches: 1 page
        cache, 2 dentries and inodes, 3 both."""
        return self._add("drop_caches", _nothing, level=level, sync=sync)

    def cgroup_read(self, cgroup: str, path: str, method: str = "read",
                    limit: int | None = None) -> Pending[CgroupRead]:
        """Read ``path`` from a child in ``cgroup`` (memory.max ``limit`` if given)."""
        return self._add("cgroup_read", _cgroup, cgroup=cgroup, path=path, method=method,
                         limit=limit)

    def free_bytes(self, path: str) -> Pending[int]:
        """Free space of the filesystem holding ``path`` (statvfs)."""
        return self._add("free_bytes", lambda a: int(a["free"]), path=path)

    # ---- a mapping held by another process -----------------------------------------------

    def hold(self, path: str, tag: str, timeout: float = 120.0) -> Pending[int]:
        """A child maps ``path``, closes the file, touches every page and keeps the mapping
        for up to ``timeout`` seconds or until released; its pid."""
        return self._add("hold", lambda a: int(a["pid"]), path=path, tag=tag, timeout=timeout)

    def release(self, tag: str, *, may_fail: bool = False) -> Pending[ReadResult]:
        """The holder hashes its mapping and exits: what it read."""
        return self._add("release", _read, may_fail, tag=tag)

    def release_after_pageout(self, tag: str, *, may_fail: bool = False
                              ) -> Pending[PagedOutRead]:
        """The holder reclaims its own mapping (MADV_PAGEOUT, what memory pressure does to
        it), then hashes it, faulting every page back in, and exits."""
        return self._add("release", lambda a: PagedOutRead(_residency(a["paged_out"]),
                                                           _read(a)),
                         may_fail, tag=tag, pageout=True)

    def end_holders(self) -> Pending[list[str]]:
        """Kill the holders a test left behind; their tags."""
        return self._add("end_holders", lambda a: [str(x) for x in a["ended"]])

    # ---- mounts --------------------------------------------------------------------------

    def mount(self, source: str, target: str, options: str,
              settle: bool = True) -> Pending[MountAnswer]:
        """mount(2); a refusal is an answer (errno), not a failure of the batch.

        ``settle=False`` skips the 50 ms wait for kernel messages printed after the call
        returns (asynchronous ones): for callers that read the log later anyway (the
        explorer, which reads it at the end of every step)."""
        return self._add("mount", _mount, source=source, target=target, options=options,
                         settle=settle)

    def remount(self, target: str, options: str, settle: bool = True) -> Pending[MountAnswer]:
        """mount(2) with MS_REMOUNT and exactly ``options`` (mount(8) would add the options
        in effect)."""
        return self._add("remount", _mount, target=target, options=options, settle=settle)

    def umount(self, target: str, lazy: bool = False,
               settle: bool = True) -> Pending[MountAnswer]:
        return self._add("umount", _mount, target=target, lazy=lazy, settle=settle)

    def mount_unprivileged(self, source: str, target: str, options: str
                           ) -> Pending[MountAnswer]:
        """mount(2) as nobody inside a user and mount namespace of its own."""
        return self._add("mount_unprivileged", _mount, source=source, target=target,
                         options=options)

    def erofs_mounts(self, prefix: str) -> Pending[dict[str, list[str]]]:
        """EROFS mounts under ``prefix`` as /proc/self/mounts shows them: their options."""
        return self._add("erofs_mounts", lambda a: {
            str(k): [str(o) for o in v] for k, v in a["mounts"].items()}, prefix=prefix)

    def loop_attach(self, path: str, read_only: bool = True) -> Pending[str]:
        """A free loop device over ``path`` in the guest (``losetup -f --show``, without
        starting a program); its /dev name."""
        return self._add("loop_attach", lambda a: str(a["device"]), path=path,
                         read_only=read_only)

    def patch_file(self, path: str, edits: list[tuple[int, bytes]],
                   truncate: int | None = None) -> Pending[None]:
        """Change a file in place in the guest (an image under its live mount)."""
        return self._add("patch_file", _nothing, path=path, truncate=truncate,
                         edits=[[offset, data.hex()] for offset, data in edits])

    def cleanup(self, prefix: str, dirs: list[str], devices: list[str]
                ) -> Pending[tuple[list[str], set[str]]]:
        """End the holders, unmount everything under ``prefix``, detach every loop device and
        remove ``dirs``: what could not be undone, and which of ``devices`` a superblock
        still holds."""
        return self._add("cleanup", lambda a: ([str(p) for p in a["problems"]],
                                               {str(d) for d in a["busy"]}),
                         prefix=prefix, dirs=dirs, devices=devices)

    # ---- failing devices and allocations ---------------------------------------------------

    def dm_create(self, name: str, device: str) -> Pending[str]:
        """A read-only device mapper device over ``device`` (a linear table, to be swapped
        for one that fails every I/O with ``dm_swap``); its /dev name. The cleanup after
        the test removes it."""
        return self._add("dm_create", lambda a: str(a["device"]), name=name, device=device)

    def dm_swap(self, name: str, kind: str, device: str, delay_ms: int = 0) -> Pending[None]:
        """Make the device ``name`` fail every I/O (``error``), pass it to ``device`` again
        (``linear``) or pass it on ``delay_ms`` later (``delay``), while it is mounted; I/O
        in flight completes first."""
        if kind not in ("error", "linear", "delay"):
            raise HarnessError(f"dm_swap: table {kind!r} is not error, linear or delay")
        return self._add("dm_swap", _nothing, name=name, kind=kind, device=device,
                         delay_ms=delay_ms)

    def fail_nth_sweep(self, operation: str, source: str, options: str, path: str,
                       sha256: str, root: str, remount_options: str | None = None,
                       budget: float = 240.0, twin: tuple[str, str] | None = None
                       ) -> Pending[FaultSweep]:
        """Fail the 1st, 2nd, ... allocation of ``operation`` in turn (fail-nth) on a mount of
        ``source`` at ``root``/m, checking after each run (harness/guest/helpers/
        failnth.py): how many fault sites it has, what it answered, and the problems.
        ``twin``: (source, path) of another image's file of the same content, mounted with
        the same options and looked up first, so that the operation joins its shared
        inode."""
        return self._add("fail_nth_sweep", lambda a: FaultSweep(
            int(a["points"]), bool(a["complete"]), str(a.get("stopped", "")),
            {str(k): int(v) for k, v in a["outcomes"].items()},
            [str(p) for p in a["problems"]]),
            operation=operation, source=source, options=options, path=path, sha256=sha256,
            root=root, remount_options=remount_options, budget=budget,
            twin={"source": twin[0], "path": twin[1]} if twin else None)

    def kmemleak_clear(self) -> Pending[Leaks]:
        """Forget what kmemleak reported so far (harness/guest/helpers/kmemleak.py)."""
        return self._add("kmemleak_clear", lambda a: Leaks(bool(a["running"]), str(a["why"]),
                                                           ()))

    def kmemleak_scan(self) -> Pending[Leaks]:
        """What leaked since the last clear: waits out kmemleak's minimum age (5 s) and
        scans twice, as kmemleak reports only what two scans in a row found unreferenced."""
        return self._add("kmemleak_scan", lambda a: Leaks(
            bool(a["running"]), str(a["why"]), tuple(str(r) for r in a["leaks"])))

    # ---- what programs and watchers see ----------------------------------------------------

    def execute(self, path: str, timeout: float = 60.0) -> Pending[Ran]:
        """Run the program ``path`` in the guest (execve, as a container runs its image's
        programs)."""
        return self._add("execute", lambda a: Ran(int(a["status"]), str(a["stdout"]),
                                                  str(a["stderr"])), path=path, timeout=timeout)

    def fanotify_watch(self, image: str, root: str, path: str, deny: bool = False,
                       mount_options: str | None = None) -> Pending[FanotifyWatch]:
        """fanotify on the image file behind a file-backed mount while a child walks the
        mount's metadata and then reads ``path``, each from cold caches. With
        ``mount_options`` the listener starts before it mounts the image at ``root``."""
        return self._add("fanotify_watch", lambda a: FanotifyWatch(
            bool(a["permission_events"]), _fanotify_phase(a["metadata"]),
            _fanotify_phase(a["data"])),
            image=image, root=root, path=path, deny=deny, mount_options=mount_options)

    def file_calls(self, path: str) -> Pending[FileCalls]:
        """statx's direct I/O alignment and whether O_DIRECT opens, a read lease, and the
        filesystem label ioctl, each on ``path``."""
        return self._add("file_calls", lambda a: FileCalls(
            bool(a["dioalign_reported"]), int(a["dio_offset_align"]), int(a["odirect_errno"]),
            int(a["setfl_odirect_errno"]), int(a["lease_errno"]), int(a["fslabel_errno"])),
            path=path)

    def reopen_by_handle(self, root: str, paths: list[str], drop_level: int = 2
                         ) -> Pending[dict[str, HandleOpen]]:
        """Each of ``paths`` (on the mount at ``root``) encoded as a file handle, the caches
        dropped at ``drop_level`` (2: dentries and inodes; 3: pages too; 0: none), then each
        opened by its handle, as an NFS server does after the client's dentry is gone."""
        return self._add("reopen_by_handle", lambda a: {
            path: _handle_open(raw) for path, raw in a.items()},
            root=root, paths=paths, drop_level=drop_level)

    def statfs(self, path: str) -> Pending[StatFs]:
        """statfs(2) and fstatfs(2) of ``path``."""
        return self._add("statfs", lambda a: StatFs(int(a["magic"]), dict(a["path"]),
                                                    dict(a["fd"])), path=path)

    def sysfs_knobs(self, target: str, writes: list[tuple[str, str]] | None = None
                    ) -> Pending[SysfsKnobs]:
        """Every attribute of the filesystem instance mounted at ``target`` (its directory
        under /sys/fs/erofs/) read, then each (name, value) of ``writes`` written in turn and
        read back."""
        return self._add("sysfs_knobs", lambda a: SysfsKnobs(
            str(a["directory"]), {str(k): str(v) for k, v in a["values"].items()},
            [SysfsWrite(str(w["name"]), str(w["value"]), int(w["errno"]), str(w["after"]))
             for w in a["writes"]]),
            target=target, writes=[list(w) for w in writes or []])

    def watchers(self, path: str) -> Pending[Watchers]:
        """cachestat(2)'s cached pages of ``path`` and whether a uprobe at an instruction of
        it reaches an executable mapping of it (perf probe, bpftrace)."""
        return self._add("watchers", lambda a: Watchers(
            int(a["cachestat_pages"]), int(a["cachestat_errno"]), str(a["uprobe"])), path=path)

    def mapping_names(self, path: str) -> Pending[MappingNames]:
        """Map ``path`` in a child that then dumps core: the mapping's name in its
        /proc/self/maps and in the core's NT_FILE note."""
        return self._add("mapping_names", lambda a: MappingNames(
            str(a["maps"]), None if a["core"] is None else str(a["core"])), path=path)

    # ---- the kernel log --------------------------------------------------------------------

    def kernel_log_mark(self) -> Pending[int]:
        """A mark in the kernel log: the sequence number of its newest record."""
        return self._add("kernel_log_mark", lambda a: int(a["seq"]))

    def kernel_log_since(self, mark: int) -> Pending[KernelLogSlice]:
        """Every kernel log record after ``mark`` (sequence numbers, not line counts: a full
        ring buffer drops old lines as new ones come, so counts stay the same)."""
        return self._add("kernel_log_since", lambda a: KernelLogSlice(
            list(a["lines"]), int(a["seq"]), int(a["missed"])), mark=mark)


class _Server:
    """The probe running as a server in the guest."""

    def __init__(self, vm: VM, agent: Agent) -> None:
        assert vm.ssh is not None
        try:
            self.channel = vm.ssh.open_stream(
                agent.module_command(PROBE_SOURCE.name, "--serve"), TIMEOUT)
        except paramiko.SSHException as exc:
            # A guest whose kernel killed the probe's sshd child (an oops) refuses the next
            # channel: the probe is lost (the caller marks the VM broken), not a paramiko
            # detail for the after-test check to trip over. (races/cells.py sees the
            # SSHException itself: there a refused channel is a flake with no verdict.)
            raise ConnectionError(f"the guest refused the probe's channel: {exc}") from exc
        self.reader = self.channel.makefile("rb")

    def ask(self, ops: list[dict[str, Any]]) -> list[dict[str, Any]]:
        self.channel.sendall(json.dumps(ops).encode() + b"\n")
        line = self.reader.readline()
        if not line:
            err = b""
            while self.channel.recv_stderr_ready():
                err += self.channel.recv_stderr(65536)
            raise ProbeLost(f"the guest probe ended while answering {[o['op'] for o in ops]}"
                            f"{': ' if err else ''}{err.decode(errors='replace')[-2000:]}")
        answers: list[dict[str, Any]] = json.loads(line)
        return answers


def one(operation: Callable[Concatenate[Batch, P], Pending[T]]
        ) -> Callable[Concatenate[Probe, P], T]:
    """The Probe method of a Batch operation: the operation as a batch of its own, its
    answer or ProbeError. Its arguments and documentation are the operation's."""
    def call(self: Probe, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._one(lambda b: operation(b, *args, **kwargs))
    call.__name__ = call.__qualname__ = operation.__name__
    call.__doc__ = operation.__doc__
    # help() and the unit tests see the operation's parameters and the answer itself.
    signature = inspect.signature(operation)
    answer = str(signature.return_annotation).removeprefix("Pending[").removesuffix("]")
    call.__signature__ = signature.replace(  # type: ignore[attr-defined]
        return_annotation=answer)
    return call


class Probe:
    """The page cache probe of one guest. Its owner is the guest's GuestSession, so there is
    one server per guest however many tests and helpers ask.

    Each method is one operation of :class:`Batch` (which declares it and says what it
    does) sent as a batch of its own; a failure raises ProbeError."""

    def __init__(self, vm: VM, agent: Agent) -> None:
        self.vm = vm
        self.agent = agent  # uploads the probe and its helpers, once per guest
        self._server: _Server | None = None

    def _ask(self, ops: list[dict[str, Any]]) -> list[dict[str, Any]]:
        try:
            if self._server is None or self._server.channel.closed:
                self._server = _Server(self.vm, self.agent)
            with self.vm.waits.waiting("guest"):
                return self._server.ask(ops)
        except ProbeLost:
            # The guest may well be alive (the after-test check decides); the next call
            # starts a new probe.
            self._server = None
            raise
        except (OSError, EOFError, TimeoutError) as exc:
            self._server = None
            self.vm.mark_broken()
            raise HarnessError(f"lost the guest probe during {[o['op'] for o in ops]}: "
                               f"{exc!r}") from exc

    @contextmanager
    def batch(self) -> Iterator[Batch]:
        batch = Batch()
        yield batch
        if not batch.pending:
            return
        answers = self._ask([item.op for item in batch.pending])
        for item, answer in zip(batch.pending, answers, strict=True):
            item._set(answer)
        for item in batch.pending:
            if item.failed and not item.may_fail:
                raise ProbeError(item.op, item._raw())

    def _pending(self, queue: Callable[[Batch], Pending[T]]) -> Pending[T]:
        with self.batch() as b:
            item = queue(b)
        return item

    def _one(self, queue: Callable[[Batch], Pending[T]]) -> T:
        return self._pending(queue).value

    # ---- the operations of Batch, each as a batch of its own -----------------------------

    read = one(Batch.read)
    parallel_read = one(Batch.parallel_read)
    residency = one(Batch.residency)
    residencies = one(Batch.residencies)
    fiemap = one(Batch.fiemap)
    fuse_passthrough_unmount = one(Batch.fuse_passthrough_unmount)
    pfns = one(Batch.pfns)
    smaps = one(Batch.smaps)
    collapse_huge = one(Batch.collapse_huge)
    fadvise_dontneed = one(Batch.fadvise_dontneed)
    hint = one(Batch.hint)
    data_ranges = one(Batch.data_ranges)
    file_state = one(Batch.file_state)
    walk = one(Batch.walk)
    tree_check = one(Batch.tree_check)
    lookup = one(Batch.lookup)
    meminfo = one(Batch.meminfo)
    slab_objects = one(Batch.slab_objects)
    drop_caches = one(Batch.drop_caches)
    cgroup_read = one(Batch.cgroup_read)
    free_bytes = one(Batch.free_bytes)
    hold = one(Batch.hold)
    mount = one(Batch.mount)
    remount = one(Batch.remount)
    umount = one(Batch.umount)
    mount_unprivileged = one(Batch.mount_unprivileged)
    erofs_mounts = one(Batch.erofs_mounts)
    loop_attach = one(Batch.loop_attach)
    patch_file = one(Batch.patch_file)
    cleanup = one(Batch.cleanup)
    dm_create = one(Batch.dm_create)
    dm_swap = one(Batch.dm_swap)
    fail_nth_sweep = one(Batch.fail_nth_sweep)
    kmemleak_clear = one(Batch.kmemleak_clear)
    kmemleak_scan = one(Batch.kmemleak_scan)
    execute = one(Batch.execute)
    fanotify_watch = one(Batch.fanotify_watch)
    file_calls = one(Batch.file_calls)
    watchers = one(Batch.watchers)
    reopen_by_handle = one(Batch.reopen_by_handle)
    statfs = one(Batch.statfs)
    sysfs_knobs = one(Batch.sysfs_knobs)
    mapping_names = one(Batch.mapping_names)
    residency_as = one(Batch.residency_as)
    first_page_readahead = one(Batch.first_page_readahead)
    kernel_log_mark = one(Batch.kernel_log_mark)
    kernel_log_since = one(Batch.kernel_log_since)

    # ---- operations whose failure is an answer -------------------------------------------

    def try_read(self, path: str, method: str = "read") -> Pending[ReadResult]:
        """A read that may fail: the Pending carries errno or the result."""
        return self._pending(lambda b: b.read(path, method, may_fail=True))

    def read_as(self, path: str, uid: int, method: str = "read") -> Pending[ReadResult]:
        """A read as user ``uid`` that may fail: the Pending carries errno or the result."""
        return self._pending(lambda b: b.read_as(path, uid, method, may_fail=True))

    def release(self, tag: str) -> ReadResult | str:
        """What the holder read, or its error text."""
        done = self._pending(lambda b: b.release(tag, may_fail=True))
        return done.error if done.failed else done.value

    def release_after_pageout(self, tag: str) -> PagedOutRead | str:
        """What the holder read after reclaiming its mapping, or its error text."""
        done = self._pending(lambda b: b.release_after_pageout(tag, may_fail=True))
        return done.error if done.failed else done.value

    def end_holders(self) -> list[str]:
        """Kill the holders a test left behind (if the probe ever ran); their tags."""
        if self._server is None:
            return []
        return self._one(lambda b: b.end_holders())

    def remove_cgroups(self, *names: str) -> None:
        """Remove the cgroups ``cgroup_read`` made (empty once their reader is gone)."""
        self.vm.run("rmdir " + " ".join(f"/sys/fs/cgroup/{name}" for name in names))
