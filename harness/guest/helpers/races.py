"""Guest side of `make races`: two operations on mounts of one domain, each in a tight loop in
its own process on its own CPU, for a few seconds, with the windows held open (a dm-delay
target under the block sources, large files, cold caches, a tight memory.high). Every
iteration's start and end are kept, so the host learns how many iterations of the two
operations really overlapped.

Run as ``python3 races.py CONFIG_FILE`` (JSON). For each cell of the config (a pair of operations
and what they act on) it prints ``{"cell": id, "started": true}`` and then one JSON line of
results: overlaps, counts, wrong bytes, errors outside what the model allows, the checks
after the pair stopped (bytes, sharing, the mount table, the EROFS inode slab back to its
baseline) and the kernel log lines of the cell. Standard library only, plus the page cache
probe next to this file.
"""

import ctypes
import errno
import json
import mmap
import os
import random
import signal
import sys
import time

import dmtarget  # beside this file, as the probe's package (sys.path[0])
import pcprobe

libc = pcprobe.libc

ROOT = "/run/races"
CGROUP = "/sys/fs/cgroup/races"
CHUNK = 65536
HANG_GRACE = 30.0  # seconds after the budget before a worker counts as stuck
READ_METHODS = ["read", "pread", "mmap", "sendfile", "splice"]
# What a file on a mount the other side unmounts answers: the path is gone, never EIO.
GONE = {errno.ENOENT, errno.ENOTDIR, errno.ESTALE, errno.ENOTCONN, errno.ENODEV}
LIFECYCLE = {"mount", "umount", "umount_lazy", "remount"}
# Errors an operation may always give: MADV_COLLAPSE without a huge page to make (no THP
# for this file system, a page busy, no memory), proactive reclaim that fell short.
ALWAYS_ALLOWED = {"collapse": {errno.EINVAL, errno.EAGAIN, errno.ENOMEM, errno.EBUSY},
                  "reclaim": {errno.EAGAIN}}
# Operations that read file data: the cold-cache widener empties the file's cache first.
DATA = {"read", "mmap_fault", "willneed", "readahead", "collapse"}




def dm_delay(name, device, delay_ms):
    """A read-only dm-delay device over ``device`` that holds every I/O for ``delay_ms``;
    its /dev path."""
    return dmtarget.create(name, device, "delay", delay_ms)


dm_remove = dmtarget.remove


# ---- the sides ---------------------------------------------------------------------------

class Side:
    """One side of a pair: its operation, its mount (maybe the other side's) and its file."""

    def __init__(self, cfg, cell, key, shared_mount):
        self.op = cell[key]
        self.mount = shared_mount
        self.files = cfg["trees"][self.mount["tree"]]
        data = "large" if "large" in cell["wideners"] else "medium"
        self.data_path = os.path.join(self.mount["target"], self.files[data])
        self.ref_path = cfg["refs"][data]
        self.cold = 0
        self.method = 0
        self.fds = []


def _mounted(target):
    return target in pcprobe.erofs_mounts(target)["mounts"]


def mount_side(mount):
    answer = pcprobe.do_mount(mount["source"], mount["target"], mount["options"], settle=False)
    if not answer["ok"]:
        raise OSError(answer["errno"], f"mount {mount['target']}: {answer['errname']}")


def unmount_side(mount):
    if libc.umount2(mount["target"].encode(), 0) != 0 and \
            libc.umount2(mount["target"].encode(), pcprobe.MNT_DETACH) != 0:
        err = ctypes.get_errno()
        if err != errno.EINVAL:  # not mounted: nothing to undo
            raise OSError(err, f"umount {mount['target']}")


def _compare(got, want, offset, where):
    if got != want[offset:offset + len(got)]:
        raise WrongBytes(f"{where}: the bytes at {offset}..{offset + len(got)} differ")


class WrongBytes(Exception):
    pass


def read_checked(path, want, method):
    """Read ``path`` whole by ``method``, comparing each chunk as it comes (a reader under a
    tight memory.high must not hold the file)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        if size != len(want):
            raise WrongBytes(f"{path}: size {size}, not {len(want)}")
        where = f"{path} ({method})"
        if method == "read":
            offset = 0
            while chunk := os.read(fd, CHUNK):
                _compare(chunk, want, offset, where)
                offset += len(chunk)
        elif method == "pread":
            offset = size
            while offset > 0:  # backwards: another order of requests than read's
                start = max(0, offset - CHUNK)
                _compare(os.pread(fd, offset - start, start), want, start, where)
                offset = start
            offset = size
        elif method == "mmap":
            with mmap.mmap(fd, size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ) as m:
                for offset in range(0, size, CHUNK):
                    _compare(m[offset:offset + CHUNK], want, offset, where)
            offset = size
        else:
            r, w = os.pipe()
            try:
                offset = 0
                while offset < size:
                    n = min(CHUNK, size - offset)
                    moved = (os.sendfile(w, fd, offset, n) if method == "sendfile"
                             else os.splice(fd, w, n, offset_src=offset))
                    if moved == 0:
                        break
                    got = b""
                    while len(got) < moved:
                        got += os.read(r, moved - len(got))
                    _compare(got, want, offset, where)
                    offset += moved
            finally:
                os.close(r)
                os.close(w)
        if offset != size:
            raise WrongBytes(f"{where}: ended at {offset} of {size}")
    finally:
        os.close(fd)


# ---- the operations ------------------------------------------------------------------------
# Each is (set-up, timed call): the set-up re-establishes what the call needs and is not
# timed; the call is the iteration the overlap count is about.

def _ensure_mounted(side, ctx):
    if not _mounted(side.mount["target"]):
        mount_side(side.mount)


def _in_use(side, ctx):
    """Mounted, and its data file looked up: a mount that was used. Its real inode is then
    the newest on the shared inode's list, the one readers through other mounts borrow."""
    _ensure_mounted(side, ctx)
    os.stat(side.data_path)


def _ensure_unmounted(side, ctx):
    if _mounted(side.mount["target"]):
        unmount_side(side.mount)


def _cold(side, ctx):
    if ctx["cold"]:
        try:
            pcprobe.fadvise_dontneed(side.data_path)
        except OSError as exc:
            if exc.errno not in GONE:
                raise


def _open_one(side, ctx):
    side.fds.append(os.open(side.data_path, os.O_RDONLY))


def _close_all(side, ctx=None):
    while side.fds:
        os.close(side.fds.pop())


def op_mount(side, ctx):
    mount_side(side.mount)


def op_umount(side, ctx, lazy=False):
    if libc.umount2(side.mount["target"].encode(), pcprobe.MNT_DETACH if lazy else 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"umount {side.mount['target']}: {os.strerror(err)}")


def op_remount(side, ctx):
    # Another option each time (acl and noacl), the domain and sharing kept: a remount that
    # changes what it is allowed to change while the other side works.
    side.method += 1
    extra = "acl" if side.method % 2 else "noacl"
    # domain_id is fixed at mount time (a remount naming it is told so in the log).
    kept = [o for o in side.mount["options"].split(",") if o and not o.startswith("domain_id=")]
    options = ",".join([*kept, extra])
    answer = pcprobe.do_remount(side.mount["target"], options, settle=False)
    if not answer["ok"]:
        raise OSError(answer["errno"], f"remount {options}: {answer['errname']}")


def op_open(side, ctx):
    _open_one(side, ctx)


def op_close_last(side, ctx):
    _close_all(side)


def op_read(side, ctx):
    method = READ_METHODS[side.method % len(READ_METHODS)]
    side.method += 1
    ctx["methods"][method] = ctx["methods"].get(method, 0) + 1
    read_checked(side.data_path, ctx["want"], method)


def op_mmap_fault(side, ctx):
    fd = os.open(side.data_path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        with mmap.mmap(fd, size, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ) as m:
            for offset in range(0, size, pcprobe.PAGE):  # one fault per page
                if m[offset] != ctx["want"][offset]:
                    raise WrongBytes(f"{side.data_path} (mmap fault): byte {offset} differs")
    finally:
        os.close(fd)


def _advise(side, advice):
    fd = os.open(side.data_path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, advice)
    finally:
        os.close(fd)


def op_willneed(side, ctx):
    _advise(side, os.POSIX_FADV_WILLNEED)


def op_dontneed(side, ctx):
    _advise(side, os.POSIX_FADV_DONTNEED)


def op_readahead(side, ctx):
    fd = os.open(side.data_path, os.O_RDONLY)
    try:
        if libc.readahead(fd, 0, os.fstat(fd).st_size) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"readahead {side.data_path}")
    finally:
        os.close(fd)


def op_collapse(side, ctx):
    err = pcprobe.collapse(side.data_path, touch=True)["errno"]
    if err:
        raise OSError(err, f"MADV_COLLAPSE {side.data_path}")


def op_drop_caches(side, ctx):
    pcprobe.drop_caches(3, sync=False)


def op_reclaim(side, ctx):
    with open(f"{CGROUP}/memory.reclaim", "w") as fh:
        fh.write("4M")


def op_lookup_cold(side, ctx):
    # A name never looked up on this mount since the last dentry drop: the lookup reads the
    # directory and makes the inode (and, sharing, finds or makes the shared one).
    files = side.files
    if side.cold >= files["cold_count"]:
        side.cold = 0
        pcprobe.drop_caches(2, sync=False)
    name = files["cold_pattern"] % side.cold
    side.cold += 1
    os.stat(os.path.join(side.mount["target"], files["cold_dir"], name))


def op_stat(side, ctx):
    st = os.stat(side.data_path)
    if st.st_size != len(ctx["want"]):
        raise WrongBytes(f"stat {side.data_path}: size {st.st_size}, not {len(ctx['want'])}")


def op_readdir(side, ctx):
    names = os.listdir(os.path.join(side.mount["target"], side.files["cold_dir"]))
    if len(names) != side.files["cold_count"]:
        raise WrongBytes(f"readdir: {len(names)} entries, not {side.files['cold_count']}")


def op_readlink(side, ctx):
    got = os.readlink(os.path.join(side.mount["target"], side.files["link"]))
    if got != side.files["link_target"]:
        raise WrongBytes(f"readlink: {got!r}, not {side.files['link_target']!r}")


def op_getxattr(side, ctx):
    name, value = side.files["xattr"]
    got = os.getxattr(side.data_path, name)
    if got != value.encode():
        raise WrongBytes(f"getxattr {name}: {got!r}, not {value!r}")


# name -> (set-up, call)
OPS = {
    "mount": (_ensure_unmounted, op_mount),
    "umount": (_in_use, op_umount),
    "umount_lazy": (_in_use, lambda side, ctx: op_umount(side, ctx, lazy=True)),
    "remount": (_ensure_mounted, op_remount),
    "open": (_close_all, op_open),
    "close_last": (_open_one, op_close_last),
    "read": (_cold, op_read),
    "mmap_fault": (_cold, op_mmap_fault),
    "willneed": (_cold, op_willneed),
    "dontneed": (None, op_dontneed),
    "readahead": (_cold, op_readahead),
    "collapse": (_cold, op_collapse),
    "drop_caches": (None, op_drop_caches),
    "reclaim": (None, op_reclaim),
    "lookup_cold": (None, op_lookup_cold),
    "stat": (None, op_stat),
    "readdir": (None, op_readdir),
    "readlink": (None, op_readlink),
    "getxattr": (None, op_getxattr),
}


def allowed(side, other, cell, err):
    """Whether ``err`` is an answer the model allows for ``side``'s operation now."""
    if err in ALWAYS_ALLOWED.get(side.op, ()):
        return True
    shares_mount = side.mount["target"] == other.mount["target"]
    if err in GONE and shares_mount and other.op in LIFECYCLE:
        return True  # the other side unmounted the mount this side works in
    if err == errno.EBUSY and side.op == "umount" and shares_mount and other.op not in LIFECYCLE:
        return True  # the other side holds a file of this mount open
    return False


class Board:
    """Counters both sides share (an anonymous shared mapping made before the fork), from
    which each side tells, per call, which of the other's calls overlapped it: the one in
    flight when it began, and every one begun before it ended. Keeping every start and end
    instead would cost memory in a cgroup that is kept short of it."""

    SLOTS = 2  # per side: calls begun, in a call now

    def __init__(self):
        self.map = mmap.mmap(-1, 4096, flags=mmap.MAP_SHARED)
        self.words = (ctypes.c_long * (2 * self.SLOTS)).from_buffer(self.map)

    def begin(self, side):
        self.words[side * self.SLOTS] += 1
        self.words[side * self.SLOTS + 1] = 1

    def end(self, side):
        self.words[side * self.SLOTS + 1] = 0

    def other(self, side):
        base = (1 - side) * self.SLOTS
        return self.words[base], self.words[base + 1]


def worker(cfg, cell, sides, index, out_path, start_at, stop_at, board):
    side, other = sides[index], sides[1 - index]
    cpus = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpus[index % len(cpus)]})
    with open(side.ref_path, "rb") as fh:
        want = fh.read()
    ctx = {"want": want, "cold": "cold" in cell["wideners"], "methods": {}}
    setup, call = OPS[side.op]
    result = {"iterations": 0, "wrong": [], "errors": [], "allowed": {}, "setup_errors": [],
              "met": 0, "pairs": 0, "seconds": 0.0}
    clock = time.monotonic
    if "pressure" in cell["wideners"]:  # after the big allocations: they are not the point
        with open(f"{CGROUP}/cgroup.procs", "w") as fh:
            fh.write(str(os.getpid()))
    while clock() < start_at:
        time.sleep(0.001)
    while clock() < stop_at:
        if setup is not None:
            try:
                setup(side, ctx)
            except OSError as exc:
                if not allowed(side, other, cell, exc.errno) and len(result["setup_errors"]) < 5:
                    result["setup_errors"].append(f"set-up of {side.op}: {exc}")
                time.sleep(0.001)
                continue
        begun, busy = board.other(index)
        board.begin(index)
        t0 = clock()
        try:
            call(side, ctx)
            failure = None
        except WrongBytes as exc:
            failure = ("wrong", str(exc))
        except OSError as exc:
            if allowed(side, other, cell, exc.errno):
                name = errno.errorcode.get(exc.errno, str(exc.errno))
                result["allowed"][name] = result["allowed"].get(name, 0) + 1
                failure = None
            else:
                failure = ("errors", f"{side.op}: {exc}")
        t1 = clock()
        board.end(index)
        begun_after, _ = board.other(index)
        # Every overlapping pair of calls is counted here exactly once: the other's call
        # either began first (in flight at this one's start) or while this one ran.
        met = busy + (begun_after - begun)
        result["iterations"] += 1
        result["seconds"] += t1 - t0
        if met:
            result["met"] += 1
            result["pairs"] += met
        if failure and len(result[failure[0]]) < 10:
            result[failure[0]].append(failure[1])
    _close_all(side)
    # Leave the mount as the cell began, so the checks after the pair find it.
    try:
        if side.op in LIFECYCLE:
            _ensure_mounted(side, ctx)
    except OSError as exc:
        result["setup_errors"].append(f"re-mounting after {side.op}: {exc}")
    result["methods"] = ctx["methods"]
    result["seconds"] = round(result["seconds"], 2)
    with open(out_path + ".tmp", "w") as fh:
        json.dump(result, fh)
    os.replace(out_path + ".tmp", out_path)


def _reclaim(amount):
    """Take ``amount`` bytes from the sides' cgroup now (memory.reclaim); it may fall short
    (EAGAIN) when there is less to take."""
    try:
        with open(f"{CGROUP}/memory.reclaim", "w") as fh:
            fh.write(str(amount))
    except OSError as exc:
        if exc.errno != errno.EAGAIN:
            raise


def _oom_count():
    try:
        with open(f"{CGROUP}/memory.events") as fh:
            return int(dict(line.split() for line in fh).get("oom_kill", "0"))
    except OSError:
        return 0


def _oom_kills():
    return f" (the sides' cgroup: oom_kill {_oom_count()})"


# ---- one cell --------------------------------------------------------------------------

def _sources(cfg, cell, made):
    """Each mount of the cell with its source made (a loop device, with a dm-delay target
    over it when that widener is on, or the image file itself)."""
    mounts = {}
    for name, spec in cell["mounts"].items():
        image = cfg["images"][spec["image"]]
        if spec["source"] == "file":
            source = image
        else:
            source = pcprobe.loop_attach(image)["device"]
            made["loops"].append(source)
            if "dm_delay" in cell["wideners"]:
                dm_name = f"races-{name}"
                source = dm_delay(dm_name, source, cfg["delay_ms"])
                made["dm"].append(dm_name)
        mounts[name] = {"target": f"{ROOT}/{name}", "source": source,
                        "options": spec["options"], "tree": spec["tree"],
                        "domain": next((o.split("=", 1)[1] for o in spec["options"].split(",")
                                        if o.startswith("domain_id=")), None)}
    return mounts


def _teardown(made):
    problems = pcprobe.cleanup(ROOT, [])["problems"]
    for name in made["dm"]:
        try:
            dm_remove(name)
        except OSError as exc:
            problems.append(f"remove dm device {name}: {exc}")
    # The loop devices under the dm targets: detached now that nothing holds them.
    problems += pcprobe.cleanup(ROOT, [])["problems"]
    return problems


def _erofs_inodes():
    try:
        return pcprobe.slab_objects("erofs_inode")["active"]
    except OSError:
        return None


def _slab_back(baseline, seconds=10.0):
    """The EROFS inode count once it is back at ``baseline`` (inodes are freed after an RCU
    grace period), or the last count when it is not back within ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        pcprobe.drop_caches(2, sync=False)
        now = _erofs_inodes()
        if now is None or now <= baseline or time.monotonic() > deadline:
            return now
        time.sleep(0.25)


def _checks_after(cfg, cell, mounts, sides):
    """The explorer's invariants once both sides stopped: every mount in the table with its
    options, every file right through every mount, and sharing as the model says."""
    problems = []
    table = pcprobe.erofs_mounts(ROOT)["mounts"]
    for mount in mounts.values():
        shown = table.get(mount["target"])
        if shown is None:
            problems.append(f"mount table: {mount['target']} is missing after the pair")
            continue
        # The domain is never shown (it is a secret of the mount's owner).
        want = [o for o in mount["options"].split(",") if o and not o.startswith("domain_id=")]
        lost = [o for o in want if o not in shown]
        if lost:
            problems.append(f"mount table: {mount['target']} shows {','.join(shown)}, "
                            f"without {','.join(lost)}")
    extra = sorted(set(table) - {m["target"] for m in mounts.values()})
    if extra:
        problems.append(f"mount table: mounts left behind: {', '.join(extra)}")
    if problems:
        return problems, None
    wants = {}
    for side in sides:
        if side.ref_path not in wants:
            with open(side.ref_path, "rb") as fh:
                wants[side.ref_path] = fh.read()
        for method in ("read", "mmap"):
            try:
                read_checked(side.data_path, wants[side.ref_path], method)
            except (OSError, WrongBytes) as exc:
                problems.append(f"after the pair: {exc}")
    a, b = sides
    sharing = None
    if a.mount["target"] != b.mount["target"] and cell["model"] in ("share", "private"):
        # Empty both caches, read through a, look through b's mapping. DONTNEED is best
        # effort (a folio still referenced stays), so what b shows is compared with what it
        # showed before the read: the read through a must fill b (shared) or leave it be.
        try:
            for side in sides:
                pcprobe.fadvise_dontneed(side.data_path)
            before = pcprobe.mincore(b.data_path)
            read_checked(a.data_path, wants[a.ref_path], "read")
            seen = pcprobe.mincore(b.data_path)
            sharing = {**seen, "before": before["resident"]}
            why = ("another domain" if a.mount.get("domain") != b.mount.get("domain")
                   else "other address space operations (block and file-backed)")
            if cell["model"] == "share" and seen["resident"] < seen["pages"]:
                problems.append(f"sharing: after reading {a.data_path}, "
                                f"{seen['resident']} of {seen['pages']} pages resident "
                                f"through its twin {b.data_path} (the model: shared)")
            if cell["model"] == "private" and seen["resident"] > before["resident"]:
                problems.append(f"sharing: reading {a.data_path} made "
                                f"{seen['resident'] - before['resident']} more pages resident "
                                f"through {b.data_path} of {why} ({before['resident']} "
                                f"before, {seen['resident']} after; the model: not shared)")
        except (OSError, WrongBytes) as exc:
            problems.append(f"sharing check: {exc}")
    return problems, sharing


def run_cell(cfg, cell):
    log = pcprobe.kernel_log()
    mark = log.mark()["seq"]
    result = {"cell": cell["id"], "problems": []}
    made = {"loops": [], "dm": []}
    problems = result["problems"]
    problems += [f"left from before: {p}" for p in _teardown(made)]
    baseline = _slab_back(10**9, 0)
    result["slab_before"] = baseline
    try:
        mounts = _sources(cfg, cell, made)
        for mount in mounts.values():
            mount_side(mount)
        sides = [Side(cfg, cell, "a", mounts[cell["side_mount"]["a"]]),
                 Side(cfg, cell, "b", mounts[cell["side_mount"]["b"]])]
        if "pressure" in cell["wideners"]:
            os.makedirs(CGROUP, exist_ok=True)
            with open("/sys/fs/cgroup/cgroup.subtree_control", "w") as fh:
                fh.write("+memory")
            # No limit: a tight memory.max OOM-kills (a file-backed read under it is killed
            # on 7.x, a known bug of its own, reports/file-backed-read-oom-under-memory-max.yaml)
            # and a tight memory.high throttles the sides for seconds at a time. The pressure
            # is proactive reclaim of the sides' cgroup, from this process, while they run.
            for knob in ("memory.max", "memory.high"):
                with open(f"{CGROUP}/{knob}", "w") as fh:
                    fh.write("max")
        ooms_before = _oom_count()
        start_at = time.monotonic() + 0.3
        stop_at = start_at + cell["seconds"]
        pids, outs, board, statuses = [], [], Board(), {}
        for index in range(2):
            out = f"{ROOT}-side{index}.json"
            try:
                os.unlink(out)
            except FileNotFoundError:
                pass
            outs.append(out)
            pid = os.fork()
            if pid == 0:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                code = 0
                try:
                    random.seed(cfg["seed"] + index)
                    worker(cfg, cell, sides, index, out, start_at, stop_at, board)
                except BaseException as exc:  # report in the results, not on stderr
                    with open(out, "w") as fh:
                        json.dump({"crashed": f"{type(exc).__name__}: {exc}"}, fh)
                    code = 1
                finally:
                    os._exit(code)
            pids.append(pid)
        alive = set(pids)
        pressure = "pressure" in cell["wideners"]
        while alive and time.monotonic() < stop_at + HANG_GRACE:
            if pressure and time.monotonic() < stop_at:
                _reclaim(cfg["reclaim_bytes"])
            for pid in list(alive):
                try:
                    done, status = os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:  # reaped already: it is gone all the same
                    done, status = pid, 0
                if done:
                    alive.discard(pid)
                    statuses[pid] = status
            time.sleep(0.05)
        if alive:
            result["stuck"] = [f"side {pids.index(pid)} ({cell['ab'[pids.index(pid)]]}) "
                               f"pid {pid}: {pcprobe.where_in_kernel(pid)}"
                               for pid in sorted(alive)]
            problems += [f"stuck: {s}" for s in result["stuck"]]
            print(json.dumps(result), flush=True)
            return False  # a worker stuck in the kernel: the guest cannot go on cleanly
        got = []
        for index, out in enumerate(outs):
            try:
                with open(out) as fh:
                    got.append(json.load(fh))
            except (OSError, ValueError):
                status = statuses.get(pids[index], 0)
                how = (f"killed by signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status)
                       else f"exit status {os.waitstatus_to_exitcode(status)}")
                got.append({"crashed": f"{how}, no results{_oom_kills()}"})
        result["oom_kills"] = _oom_count() - ooms_before
        for index, side_result in enumerate(got):
            label = f"side {'ab'[index]} ({cell['ab'[index]]})"
            if "crashed" in side_result:
                problems.append(f"{label} crashed: {side_result['crashed']}")
                continue
            problems += [f"{label}: wrong bytes: {w}" for w in side_result["wrong"]]
            problems += [f"{label}: error: {e}" for e in side_result["errors"]]
            problems += [f"{label}: {e}" for e in side_result["setup_errors"]]
        if all("crashed" not in g for g in got):
            a, b = got
            # Both sides count each overlapping pair of calls once: a's count is the figure.
            result.update(overlaps=a["pairs"], a_met=a["met"], b_met=b["met"],
                          a_iterations=a["iterations"], b_iterations=b["iterations"],
                          a_allowed=a["allowed"], b_allowed=b["allowed"],
                          methods={**a["methods"], **b["methods"]},
                          a_seconds=a["seconds"], b_seconds=b["seconds"])
        after, sharing = _checks_after(cfg, cell, mounts, sides)
        problems += after
        result["sharing"] = sharing
    except OSError as exc:
        problems.append(f"set-up of the cell: {exc}")
    finally:
        problems += _teardown(made)
    after = _slab_back(baseline) if baseline is not None else None
    result["slab_after"] = after
    if baseline is not None and after is not None and after > baseline:
        problems.append(f"leak: {after - baseline} EROFS inodes still allocated after the "
                        f"last unmount ({baseline} before the cell, {after} after)")
    result["kmsg"] = log.since(mark)["lines"][-800:]
    print(json.dumps(result), flush=True)
    return True


def main():
    with open(sys.argv[1]) as fh:  # a file: the cells of a run outgrow one argument
        cfg = json.load(fh)
    os.makedirs(ROOT, exist_ok=True)
    for cell in cfg["cells"]:
        print(json.dumps({"cell": cell["id"], "started": True}), flush=True)
        if not run_cell(cfg, cell):
            break
    print(json.dumps({"done": True}), flush=True)


if __name__ == "__main__":
    main()
