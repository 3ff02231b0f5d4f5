"""The host side of the guest page cache probe (harness/guest/helpers/pcprobe.py), as typed
calls: ``probe.read(path)`` gives a :class:`ReadResult`, ``probe.residency(path)`` a
:class:`Residency`, and so on. Tests speak these, never the wire format.

The probe runs once per guest as a server (Python starts in a TCG guest in a few hundred
milliseconds, so it is started once and kept). Measurements that belong together go in one
round trip with :meth:`Probe.batch`::

    with probe.batch() as b:
        read = b.read(first)
        other = b.mincore(second)
    assert other.value.resident == other.value.pages
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import paramiko

from harness.core.errors import HarnessError
from harness.guest.agent import Agent
from harness.vm.machine import VM

PROBE_SOURCE = Path(__file__).parent / "helpers" / "pcprobe.py"
TIMEOUT = 300.0
T = TypeVar("T")


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
    operation raises ProbeError then, unless it was queued with ``may_fail=True``."""

    def __init__(self) -> None:
        self.pending: list[Pending[Any]] = []

    def _add(self, op: dict[str, Any], convert: Callable[[dict[str, Any]], T],
             may_fail: bool = False) -> Pending[T]:
        item = Pending(op, convert, may_fail)
        self.pending.append(item)
        return item

    def read(self, path: str, method: str = "read", *, may_fail: bool = False
             ) -> Pending[ReadResult]:
        return self._add({"op": "read", "path": path, "method": method}, _read, may_fail)

    def mincore(self, path: str, *, may_fail: bool = False) -> Pending[Residency]:
        return self._add({"op": "mincore", "path": path}, _residency, may_fail)

    def meminfo(self) -> Pending[MemInfo]:
        return self._add({"op": "meminfo"}, lambda a: {str(k): int(v) for k, v in a.items()})

    def drop_caches(self, level: int = 3, *, sync: bool = True) -> Pending[None]:
        """sync (unless the caller wrote nothing), then /proc/sys/vm/drop_caches: 1 page
        cache, 2 dentries and inodes, 3 both."""
        return self._add({"op": "drop_caches", "level": level, "sync": sync}, _nothing)

    def cgroup_read(self, cgroup: str, path: str, method: str = "read",
                    limit: int | None = None) -> Pending[CgroupRead]:
        return self._add({"op": "cgroup_read", "cgroup": cgroup, "path": path,
                          "method": method, "limit": limit}, _cgroup)

    def mount(self, source: str, target: str, options: str,
              settle: bool = True) -> Pending[MountAnswer]:
        """mount(2); a refusal is an answer (errno), not a failure of the batch.

        ``settle=False`` skips the 50 ms wait for kernel messages printed after the call
        returns (asynchronous ones): for callers that read the log later anyway (the
        explorer, which reads it at the end of every step)."""
        return self._add({"op": "mount", "source": source, "target": target,
                          "options": options, "settle": settle}, _mount)

    def remount(self, target: str, options: str, settle: bool = True) -> Pending[MountAnswer]:
        return self._add({"op": "remount", "target": target, "options": options,
                          "settle": settle}, _mount)

    def umount(self, target: str, lazy: bool = False,
               settle: bool = True) -> Pending[MountAnswer]:
        return self._add({"op": "umount", "target": target, "lazy": lazy,
                          "settle": settle}, _mount)

    def hold(self, path: str, tag: str, timeout: float = 120.0) -> Pending[int]:
        """A child maps and touches ``path`` and keeps the mapping for up to ``timeout``
        seconds or until released; its pid."""
        return self._add({"op": "hold", "path": path, "tag": tag, "timeout": timeout},
                         lambda a: int(a["pid"]))

    def release(self, tag: str) -> Pending[ReadResult | str]:
        return self._add({"op": "release", "tag": tag},
                         lambda a: str(a["error"]) if "error" in a else _read(a))

    def end_holders(self) -> Pending[list[str]]:
        return self._add({"op": "end_holders"}, lambda a: [str(x) for x in a["ended"]])

    def collapse_huge(self, path: str, touch: bool = False) -> Pending[int]:
        return self._add({"op": "collapse", "path": path, "touch": touch},
                         lambda a: int(a["errno"]))

    def erofs_mounts(self, prefix: str) -> Pending[dict[str, list[str]]]:
        """EROFS mounts under ``prefix`` as /proc/self/mounts shows them: their options."""
        return self._add({"op": "erofs_mounts", "prefix": prefix},
                         lambda a: {str(k): [str(o) for o in v] for k, v in a["mounts"].items()})

    def kernel_log_mark(self) -> Pending[int]:
        return self._add({"op": "kmsg_mark"}, lambda a: int(a["seq"]))

    def kernel_log_since(self, mark: int) -> Pending[KernelLogSlice]:
        return self._add({"op": "kmsg_since", "mark": mark},
                         lambda a: KernelLogSlice(list(a["lines"]), int(a["seq"]),
                                                  int(a["missed"])))

    def walk(self, root: str, budget: float = 120.0) -> Pending[Walk]:
        return self._add({"op": "walk", "root": root, "budget": budget}, _walk)

    def fadvise_dontneed(self, path: str) -> Pending[None]:
        return self._add({"op": "fadvise_dontneed", "path": path}, _nothing)

    def hint(self, path: str, advice: str, settle: float = 5.0) -> Pending[None]:
        """A read hint without a read: ``willneed`` (POSIX_FADV_WILLNEED) or ``readahead``
        (readahead(2)); returns once the file's residency has settled (for at most
        ``settle`` seconds; 0: at once, its reads still in flight)."""
        return self._add({"op": "hint", "path": path, "advice": advice, "settle": settle},
                         _nothing)

    def tree_check(self, root: str, entries: list[dict[str, Any]], methods: list[str]
                   ) -> Pending[TreeCheck]:
        """Every entry under ``root`` against what it should be (harness/guest/helpers/
        treecheck.py says what is compared), in the order given: the differences."""
        return self._add({"op": "tree_check", "root": root, "entries": entries,
                          "methods": methods},
                         lambda a: TreeCheck([str(d) for d in a["differences"]],
                                             {str(k): int(v) for k, v in a["counts"].items()}))

    def residencies(self, paths: list[str]) -> Pending[dict[str, Residency | str]]:
        """mincore of each file without faulting pages in, or the error text."""
        return self._add({"op": "residency", "paths": paths}, lambda a: {
            str(k): (Residency(int(v[1]), int(v[0])) if isinstance(v, list) else str(v))
            for k, v in a.items()})

    def lookup(self, paths: list[str]) -> Pending[dict[str, str]]:
        """lstat each path in this order (first lookups make the shared inodes): the error
        text of each that failed."""
        return self._add({"op": "lookup", "paths": paths},
                         lambda a: {str(k): str(v) for k, v in a.items()})


class _Server:
    """The probe running as a server in the guest."""

    def __init__(self, vm: VM, agent: Agent) -> None:
        assert vm.ssh is not None
        try:
            self.channel = vm.ssh.open_stream(
                f"exec python3 {agent.path(PROBE_SOURCE)} --serve", TIMEOUT)
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


class Probe:
    """The page cache probe of one guest. Its owner is the guest's GuestSession, so there is
    one server per guest however many tests and helpers ask."""

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

    def _one(self, op: dict[str, Any], convert: Callable[[dict[str, Any]], T]) -> T:
        answer = self._ask([op])[0]
        if "error" in answer:
            raise ProbeError(op, answer)
        return convert(answer)

    # ---- reading and residency ---------------------------------------------------------

    def read(self, path: str, method: str = "read") -> ReadResult:
        """Read the whole file through ``method`` (read, pread, readv, mmap_shared, ...)."""
        return self._one({"op": "read", "path": path, "method": method}, _read)

    def read_as(self, path: str, uid: int, method: str = "read") -> Pending[ReadResult]:
        """Read the whole file as user ``uid`` (a child that dropped root): the result or
        the errno it failed with."""
        with self.batch() as b:
            result = b._add({"op": "read_as", "path": path, "uid": uid, "method": method},
                            _read, may_fail=True)
        return result

    def try_read(self, path: str, method: str = "read") -> Pending[ReadResult]:
        """A read that may fail: the Pending carries errno or the result."""
        with self.batch() as b:
            result = b.read(path, method, may_fail=True)
        return result

    def residency(self, path: str) -> Residency:
        """mincore() over a mapping of the file: its pages in the page cache it reads."""
        return self._one({"op": "mincore", "path": path}, _residency)

    def pfns(self, *paths: str) -> dict[str, Frames]:
        """Map and touch all files at once; the page frames their pages sit in (pagemap,
        kpagecount, kpageflags), as one snapshot that a second look found unchanged."""
        answer = self._one({"op": "pfns", "paths": list(paths)}, lambda a: a)
        return {path: Frames(list(v["pfns"]), list(v["counts"]), [bool(h) for h in v["huge"]],
                             list(v["memcgs"]))
                for path, v in answer.items()}

    def collapse_huge(self, path: str, touch: bool = False, eagain_retries: int = 0) -> int:
        """madvise(MADV_COLLAPSE) over a mapping of the whole file (its pages touched first
        if ``touch``): 0, or the errno it failed with. EAGAIN, which the kernel documents as
        transient, is asked again up to ``eagain_retries`` times."""
        return self._one({"op": "collapse", "path": path, "touch": touch,
                          "retries": eagain_retries}, lambda a: int(a["errno"]))

    def smaps(self, *paths: str) -> dict[str, dict[str, int]]:
        """Map and touch every file in one process; each mapping's /proc/self/smaps figures."""
        return self._one({"op": "smaps", "paths": list(paths)}, lambda a: a)

    def meminfo(self) -> MemInfo:
        return self._one({"op": "meminfo"}, lambda a: {str(k): int(v) for k, v in a.items()})

    def slab_objects(self, name: str) -> SlabObjects:
        """The objects of slab cache ``name`` (``erofs_inode``: every EROFS inode, the
        shared ones included)."""
        return self._one({"op": "slab_objects", "name": name},
                         lambda a: SlabObjects(int(a["active"]), int(a["total"])))

    def drop_caches(self, level: int = 3) -> None:
        """/proc/sys/vm/drop_caches: 1 page cache, 2 dentries and inodes, 3 both."""
        self._one({"op": "drop_caches", "level": level}, _nothing)

    def cgroup_read(self, cgroup: str, path: str, method: str = "read",
                    limit: int | None = None) -> CgroupRead:
        """Read ``path`` from a child in ``cgroup`` (memory.max ``limit`` if given)."""
        return self._one({"op": "cgroup_read", "cgroup": cgroup, "path": path,
                          "method": method, "limit": limit}, _cgroup)

    def remove_cgroups(self, *names: str) -> None:
        """Remove the cgroups ``cgroup_read`` made (empty once their reader is gone)."""
        self.vm.run("rmdir " + " ".join(f"/sys/fs/cgroup/{name}" for name in names))

    def data_ranges(self, path: str) -> list[tuple[int, int]]:
        """[start, end) ranges that SEEK_DATA/SEEK_HOLE report as data."""
        return self._one({"op": "seek_map", "path": path},
                         lambda a: [(int(s), int(e)) for s, e in a["data"]])

    def parallel_read(self, *paths: str) -> list[ReadResult | str]:
        """Open and read each file from its own process, all started at the same moment:
        each result, or the error text of a reader that failed."""
        answer = self._one({"op": "parallel_read", "paths": list(paths)}, lambda a: a)
        return [str(r["error"]) if "error" in r else _read(r) for r in answer["reads"]]

    def walk(self, root: str, budget: float = 120.0, data: bool = True) -> Walk:
        """Look at every entry under ``root`` as a reader would (lstat, readlink, xattrs,
        and unless ``data`` is False read(2) and mmap of each file, at most 8 MiB each);
        failures are recorded per entry with their errno, so a damaged mount can be walked
        to the end."""
        return self._one({"op": "walk", "root": root, "budget": budget, "data": data}, _walk)

    def file_state(self, path: str) -> FileState:
        """sha256 and mtime of a file in the guest (an image behind a mount, say)."""
        return self._one({"op": "sha256", "path": path},
                         lambda a: FileState(_read(a), int(a["mtime_ns"])))

    def patch_file(self, path: str, edits: list[tuple[int, bytes]],
                   truncate: int | None = None) -> None:
        """Change a file in place in the guest (an image under its live mount)."""
        self._one({"op": "patch_file", "path": path, "truncate": truncate,
                   "edits": [[offset, data.hex()] for offset, data in edits]}, _nothing)

    def fanotify_watch(self, image: str, root: str, path: str, deny: bool = False,
                       mount_options: str | None = None) -> FanotifyWatch:
        """fanotify on the image file behind a file-backed mount while a child walks the
        mount's metadata and then reads ``path``, each from cold caches. With
        ``mount_options`` the listener starts before it mounts the image at ``root``."""
        def phase(raw: dict[str, Any]) -> FanotifyPhase:
            result = raw["result"]
            outcome = _outcome(result) if "error" in result or "sha256" in result else None
            return FanotifyPhase(int(raw["access"]), int(raw["access_perm"]),
                                 outcome or Outcome(None))
        return self._one({"op": "fanotify_watch", "image": image, "root": root, "path": path,
                          "deny": deny, "mount_options": mount_options},
                         lambda a: FanotifyWatch(bool(a["permission_events"]),
                                                 phase(a["metadata"]), phase(a["data"])))

    def file_calls(self, path: str) -> FileCalls:
        """statx's direct I/O alignment and whether O_DIRECT opens, a read lease, and the
        filesystem label ioctl, each on ``path``."""
        return self._one({"op": "file_calls", "path": path},
                         lambda a: FileCalls(bool(a["dioalign_reported"]),
                                             int(a["dio_offset_align"]),
                                             int(a["odirect_errno"]),
                                             int(a["setfl_odirect_errno"]),
                                             int(a["lease_errno"]),
                                             int(a["fslabel_errno"])))

    def watchers(self, path: str) -> Watchers:
        """cachestat(2)'s cached pages of ``path`` and whether a uprobe at an instruction of
        it reaches an executable mapping of it (perf probe, bpftrace)."""
        return self._one({"op": "watchers", "path": path},
                         lambda a: Watchers(int(a["cachestat_pages"]),
                                            int(a["cachestat_errno"]), str(a["uprobe"])))

    def mapping_names(self, path: str) -> MappingNames:
        """Map ``path`` in a child that then dumps core: the mapping's name in its
        /proc/self/maps and in the core's NT_FILE note."""
        return self._one({"op": "mapping_names", "path": path},
                         lambda a: MappingNames(str(a["maps"]),
                                                None if a["core"] is None else str(a["core"])))

    def free_bytes(self, path: str) -> int:
        """Free space of the filesystem holding ``path`` (statvfs)."""
        return self._one({"op": "statvfs_free", "path": path}, lambda a: int(a["free"]))

    # ---- a mapping held by another process ---------------------------------------------

    def hold(self, path: str, tag: str) -> int:
        """A child maps ``path``, closes the file, touches every page and waits; its pid."""
        return self._one({"op": "hold", "path": path, "tag": tag}, lambda a: int(a["pid"]))

    def loop_attach(self, path: str, read_only: bool = True) -> str:
        """A free loop device over ``path`` in the guest (``losetup -f --show``, without
        starting a program); its /dev name."""
        return self._one({"op": "loop_attach", "path": path, "read_only": read_only},
                         lambda a: str(a["device"]))

    def fail_nth_sweep(self, operation: str, source: str, options: str, path: str,
                       sha256: str, root: str, remount_options: str | None = None,
                       budget: float = 240.0, twin: tuple[str, str] | None = None
                       ) -> FaultSweep:
        """Fail the 1st, 2nd, ... allocation of ``operation`` in turn (fail-nth) on a mount of
        ``source`` at ``root``/m, checking after each run (harness/guest/helpers/
        failnth.py): how many fault sites it has, what it answered, and the problems.
        ``twin``: (source, path) of another image's file of the same content, mounted with
        the same options and looked up first, so that the operation joins its shared
        inode."""
        return self._one({"op": "fail_nth_sweep", "operation": operation, "source": source,
                          "options": options, "path": path, "sha256": sha256, "root": root,
                          "remount_options": remount_options, "budget": budget,
                          "twin": {"source": twin[0], "path": twin[1]} if twin else None},
                         lambda a: FaultSweep(int(a["points"]), bool(a["complete"]),
                                              str(a.get("stopped", "")),
                                              {str(k): int(v) for k, v in
                                               a["outcomes"].items()},
                                              [str(p) for p in a["problems"]]))

    def execute(self, path: str, timeout: float = 60.0) -> Ran:
        """Run the program ``path`` in the guest (execve, as a container runs its image's
        programs)."""
        return self._one({"op": "execute", "path": path, "timeout": timeout},
                         lambda a: Ran(int(a["status"]), str(a["stdout"]), str(a["stderr"])))

    def kmemleak_clear(self) -> Leaks:
        """Forget what kmemleak reported so far (harness/guest/helpers/kmemleak.py)."""
        return self._one({"op": "kmemleak_clear"},
                         lambda a: Leaks(bool(a["running"]), str(a["why"]), ()))

    def kmemleak_scan(self) -> Leaks:
        """What leaked since the last clear: waits out kmemleak's minimum age (5 s) and
        scans twice, as kmemleak reports only what two scans in a row found unreferenced."""
        return self._one({"op": "kmemleak_scan"},
                         lambda a: Leaks(bool(a["running"]), str(a["why"]),
                                         tuple(str(r) for r in a["leaks"])))

    def dm_create(self, name: str, device: str) -> str:
        """A read-only device mapper device over ``device`` (a linear table, to be swapped
        for one that fails every I/O with ``dm_swap``); its /dev name. The cleanup after
        the test removes it."""
        return self._one({"op": "dm_create", "name": name, "device": device},
                         lambda a: str(a["device"]))

    def dm_swap(self, name: str, kind: str, device: str, delay_ms: int = 0) -> None:
        """Make the device ``name`` fail every I/O (``error``), pass it to ``device`` again
        (``linear``) or pass it on ``delay_ms`` later (``delay``), while it is mounted; I/O
        in flight completes first."""
        if kind not in ("error", "linear", "delay"):
            raise HarnessError(f"dm_swap: table {kind!r} is not error, linear or delay")
        self._one({"op": "dm_swap", "name": name, "kind": kind, "device": device,
                   "delay_ms": delay_ms}, lambda a: None)

    def cleanup(self, prefix: str, dirs: list[str],
                devices: list[str]) -> tuple[list[str], set[str]]:
        """End the holders, unmount everything under ``prefix``, detach every loop device and
        remove ``dirs``, in one round trip: what could not be undone, and which of
        ``devices`` a superblock still holds."""
        return self._one({"op": "cleanup", "prefix": prefix, "dirs": dirs,
                          "devices": devices},
                         lambda a: ([str(p) for p in a["problems"]],
                                    {str(d) for d in a["busy"]}))

    def end_holders(self) -> list[str]:
        """Kill the holders a test left behind (if the probe ever ran); their tags."""
        if self._server is None:
            return []
        return self._one({"op": "end_holders"}, lambda a: [str(x) for x in a["ended"]])

    def release(self, tag: str) -> ReadResult | str:
        """The holder hashes its mapping and exits: what it read, or its error text."""
        answer = self._one({"op": "release", "tag": tag}, lambda a: a)
        return str(answer["error"]) if "error" in answer else _read(answer)

    def release_after_pageout(self, tag: str) -> PagedOutRead | str:
        """The holder reclaims its own mapping (MADV_PAGEOUT, what memory pressure does to
        it), then hashes it, faulting every page back in, and exits; or its error text."""
        answer = self._one({"op": "release", "tag": tag, "pageout": True}, lambda a: a)
        if "error" in answer:
            return str(answer["error"])
        return PagedOutRead(_residency(answer["paged_out"]), _read(answer))

    # ---- mounts ------------------------------------------------------------------------

    def mount(self, source: str, target: str, options: str, settle: bool = True
              ) -> MountAnswer:
        """mount(2); ``settle=False``: no wait for asynchronous kernel messages (Batch.mount
        says when that is enough)."""
        return self._one({"op": "mount", "source": source, "target": target,
                          "options": options, "settle": settle}, _mount)

    def remount(self, target: str, options: str) -> MountAnswer:
        """mount(2) with MS_REMOUNT and exactly ``options`` (mount(8) would add the options
        in effect)."""
        return self._one({"op": "remount", "target": target, "options": options}, _mount)

    def mount_unprivileged(self, source: str, target: str, options: str) -> MountAnswer:
        """mount(2) as nobody inside a user and mount namespace of its own."""
        return self._one({"op": "mount_unprivileged", "source": source, "target": target,
                          "options": options}, _mount)

    def umount(self, target: str, lazy: bool = False) -> MountAnswer:
        return self._one({"op": "umount", "target": target, "lazy": lazy}, _mount)

    # ---- the kernel log ----------------------------------------------------------------

    def kernel_log_mark(self) -> int:
        """A mark in the kernel log: the sequence number of its newest record."""
        return self._one({"op": "kmsg_mark"}, lambda a: int(a["seq"]))

    def kernel_log_since(self, mark: int) -> KernelLogSlice:
        """Every kernel log record after ``mark`` (sequence numbers, not line counts: a full
        ring buffer drops old lines as new ones come, so counts stay the same)."""
        return self._one({"op": "kmsg_since", "mark": mark},
                         lambda a: KernelLogSlice(list(a["lines"]), int(a["seq"]),
                                                  int(a["missed"])))
