"""Guest side of `make savings`: mount one image pair in one configuration as N containers,
run the workloads, and report memory, residency and timing as JSON lines.

Run as ``python3 savings.py CONFIG_JSON``. The store disk (ext4, read-only) holds the
trees, the EROFS images, the composefs images and object store (harness/savings/store.py).
Configurations:

- ``erofs``: each container mounts its side's EROFS image file-backed with ``directio``
  (no second copy in the ext4 page cache), no sharing;
- ``inode_share``: the same with ``inode_share,domain_id=savings``;
- ``inode_share_buffered``: ``inode_share`` without ``directio``: the image file's own page
  cache (on ext4) then holds what EROFS reads through it, shared by every mount of the file;
- ``composefs``: the metadata image through loop, an overlay over it with the shared object
  store as a data-only lower layer (``lowerdir=meta::objects``, metacopy, redirect_dir);
- ``overlay``: an overlay of the side's tree on ext4 with a tmpfs upper layer.

Container i (0-based) runs the ``old`` image when i is even, ``new`` when odd. Each
container's commands run chrooted in a memory cgroup of its own; the page cache it brought
in is charged there. Memory is measured as page cache: ``Cached`` from /proc/meminfo
against the same point with nothing mounted, and the sum of the containers' memcg ``file``
charges. Standard library only, plus the probe's package (pcprobe/) next to this file.
"""

import ctypes
import json
import os
import shlex
import subprocess
import sys
import time

import pcprobe  # the probe's package, beside this file (sys.path[0])

BASE = "/run/savings"
STORE = BASE + "/store"
CGROOT = "/sys/fs/cgroup/savings"
SIDES = ("old", "new")
KIB = 1024


def emit(**fields):
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def sh(command):
    proc = subprocess.run(command, shell=True, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{command}: exit {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


class Containers:
    """The mounts of one configuration; ``close`` undoes them in reverse order."""

    def __init__(self, config):
        self.config = config
        self.targets = []  # everything mounted, in order
        self.loops = []

    def _mount(self, source, target, fstype, options, readonly=True):
        result = pcprobe.do_mount(source, target, options, fstype=fstype, readonly=readonly)
        if not result["ok"]:
            raise RuntimeError(f"mount -t {fstype} -o {options} {source} {target}: "
                               f"{result['errname']} {' | '.join(result['kmsg'][-3:])}")
        self.targets.append(target)

    def add(self, index):
        side = SIDES[index % 2]
        root = f"{BASE}/c{index}"
        if self.config in ("erofs", "inode_share", "inode_share_buffered"):
            options = "" if self.config.endswith("_buffered") else "directio"
            if self.config.startswith("inode_share"):
                options = ",".join(filter(None, [options, "inode_share,domain_id=savings"]))
            self._mount(f"{STORE}/erofs/{side}.erofs", root, "erofs", options)
        elif self.config == "composefs":
            loop = sh(f"losetup -f --show -r {STORE}/cfs/{side}.cfs").strip()
            self.loops.append(loop)
            meta = f"{BASE}/meta{index}"
            self._mount(loop, meta, "erofs", "")
            self._mount("composefs", root, "overlay",
                        f"metacopy=on,redirect_dir=on,lowerdir={meta}::{STORE}/objects")
        elif self.config == "overlay":
            layer = f"{BASE}/upper{index}"
            os.makedirs(f"{layer}/up", exist_ok=True)
            os.makedirs(f"{layer}/work", exist_ok=True)
            self._mount("overlay", root, "overlay",
                        f"lowerdir={STORE}/trees/{side},upperdir={layer}/up,"
                        f"workdir={layer}/work", readonly=False)
        else:
            raise RuntimeError(f"unknown configuration {self.config!r}")
        return root

    def close(self):
        problems = []
        for target in reversed(self.targets):
            result = pcprobe.do_umount(target)
            if not result["ok"]:
                problems.append(f"umount {target}: {result['errname']}")
        for loop in self.loops:
            subprocess.run(["losetup", "-d", loop], check=False)
        sh(f"rm -rf {BASE}/upper* {BASE}/c* {BASE}/meta*")
        self.targets, self.loops = [], []
        if problems:
            raise RuntimeError("; ".join(problems))


def cached_kib():
    return pcprobe.meminfo()["Cached"]


def files_of(root):
    out = []
    for top, dirs, names in os.walk(root):
        dirs.sort()
        for name in sorted(names):
            path = os.path.join(top, name)
            if os.path.isfile(path) and not os.path.islink(path):
                out.append(path)
    return out


def residency(root):
    """Resident pages of every file of a container that has any, by path in the image."""
    out = {}
    for path in files_of(root):
        try:
            pages = pcprobe.mincore(path)["resident"]
        except OSError:
            continue
        if pages:
            out[os.path.relpath(path, root)] = pages
    return out


class Cgroup:
    def __init__(self, name):
        self.path = f"{CGROOT}/{name}"
        os.makedirs(self.path, exist_ok=True)

    def join(self):
        with open(f"{self.path}/cgroup.procs", "w") as fh:
            fh.write(str(os.getpid()))

    def file_bytes(self):
        with open(f"{self.path}/memory.stat") as fh:
            for line in fh:
                name, value = line.split()
                if name == "file":
                    return int(value)
        return 0

    def remove(self):
        try:
            os.rmdir(self.path)
        except OSError:
            pass  # a dying cgroup with charges left goes away by itself


def in_cgroup(cgroup, work):
    """``work()`` in a child that lives in ``cgroup``; returns what it returned (JSON), or
    {"error"} with what it raised."""
    def joined():
        cgroup.join()
        try:
            return work()
        except Exception as exc:  # reported, never raised, in the child
            return {"error": f"{type(exc).__name__}: {exc}"}
    pid, pipe = pcprobe.in_child(joined)
    with os.fdopen(pipe, "rb") as fh:
        raw = fh.read()
    os.waitpid(pid, 0)
    return json.loads(raw or b'{"error": "the child died"}')


CLONE_NEWNS = 0x00020000
MS_BIND = 4096
MS_REC = 16384


def _container_mounts(root):
    """What a container runtime gives a container besides its image: /dev and /proc, in a
    mount namespace of this (forked) process alone, so they go away with it. The trees
    carry the empty directories (harness/savings/pairs.py), as base-files makes them."""
    libc = pcprobe.libc
    if libc.unshare(CLONE_NEWNS) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNS)")
    libc.mount(b"none", b"/", None, MS_REC | (1 << 18), None)  # MS_PRIVATE: no propagation
    for name, source, fstype, flags in (("dev", b"/dev", None, MS_BIND | MS_REC),
                                        ("proc", b"proc", b"proc", 0)):
        target = os.path.join(root, name)
        if not os.path.isdir(target):
            continue  # a read-only image without the directory: the program goes without
        if libc.mount(source, target.encode(), fstype, flags, None) != 0:
            raise OSError(ctypes.get_errno(), f"mount {name} in {root}")


def run_container(root, commands):
    """The container's commands, chrooted into its root (in the current, forked, process)."""
    _container_mounts(root)
    os.chroot(root)
    os.chdir("/")
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/", "LC_ALL": "C",
           "PYTHONDONTWRITEBYTECODE": "1"}
    started = time.monotonic()
    for command in commands:
        proc = subprocess.run(shlex.split(command), env=env, capture_output=True,
                              check=False)
        if proc.returncode != 0:
            return {"error": f"{command!r} exited {proc.returncode}: "
                             f"{proc.stderr.decode(errors='replace').strip()[-300:]}"}
    return {"seconds": time.monotonic() - started}


def read_all(root, cgroup):
    """Every regular file of a container, whole, with read(2): bytes and seconds, and the
    charge after the walk alone (metadata: directories and inodes) and after the reads."""
    paths = files_of(root)
    for path in paths:
        os.stat(path)
    metadata = cgroup.file_bytes()
    total = 0
    started = time.monotonic()
    for path in paths:
        with open(path, "rb", buffering=0) as fh:
            while chunk := fh.read(1 << 20):
                total += len(chunk)
    return {"bytes": total, "seconds": time.monotonic() - started, "metadata": metadata}


def first_byte(containers, probe):
    """Mount container 0 and read one byte of ``probe`` in it, cold: the cost to start."""
    started = time.monotonic()
    root = containers.add(0)
    with open(os.path.join(root, probe.lstrip("/")), "rb", buffering=0) as fh:
        fh.read(1)
    return root, time.monotonic() - started


def workload_read_all(cfg, config, tag):
    pcprobe.drop_caches()
    before = cached_kib()
    containers = Containers(config)
    try:
        root0, ttfb = first_byte(containers, cfg["probe"])
        roots = [root0, containers.add(1)]
        reads, charges, preshared = [], [], {}
        for i, root in enumerate(roots):
            if i == 1:
                # What the new image shows resident before anything of it was read: the
                # files it shares with the old one, which was read in full.
                preshared = residency(root)
            cgroup = Cgroup(f"{tag}-read{i}")
            result = in_cgroup(cgroup, lambda root=root, cgroup=cgroup: read_all(root, cgroup))
            if "error" in result:
                raise RuntimeError(f"reading {SIDES[i]} in {config}: {result['error']}")
            reads.append(result)
            charges.append(cgroup.file_bytes())
        after = cached_kib()
    finally:
        containers.close()
    pcprobe.drop_caches()
    for i in range(2):
        Cgroup(f"{tag}-read{i}").remove()
    emit(kind="read_all", config=config, cached_bytes=(after - before) * KIB,
         memcg_bytes=sum(charges), memcg_per_container=charges,
         metadata_bytes=sum(r["metadata"] for r in reads), preshared=preshared,
         ttfb_seconds=ttfb,
         read_bytes=[r["bytes"] for r in reads], read_seconds=[r["seconds"] for r in reads])


def workload_containers(cfg, config, tag):
    pcprobe.drop_caches()
    before = cached_kib()
    counts = set(cfg["containers"])
    containers = Containers(config)
    charges, seconds, points = [], [], []
    try:
        roots = []
        for i in range(max(counts)):
            root = containers.add(i)
            roots.append(root)
            cgroup = Cgroup(f"{tag}-c{i}")
            result = in_cgroup(cgroup, lambda root=root: run_container(root, cfg["run"]))
            if "error" in result:
                raise RuntimeError(f"container {i} ({SIDES[i % 2]}) in {config}: "
                                   f"{result['error']}")
            seconds.append(result["seconds"])
            charges.append(cgroup.file_bytes())
            if i + 1 in counts:
                points.append({"containers": i + 1,
                               "cached_bytes": (cached_kib() - before) * KIB,
                               "memcg_bytes": sum(charges)})
                emit(kind="progress", config=config, containers=i + 1)
        # Per-file residency of the first container of each side: what each one touched.
        touched = {SIDES[i]: residency(roots[i]) for i in range(min(2, len(roots)))}
    finally:
        containers.close()
    pcprobe.drop_caches()
    for i in range(max(counts)):
        Cgroup(f"{tag}-c{i}").remove()
    emit(kind="containers", config=config, points=points, memcg_per_container=charges,
         run_seconds=seconds, touched=touched)


def main():
    cfg = json.loads(sys.argv[1])
    os.makedirs(STORE, exist_ok=True)
    os.makedirs(CGROOT, exist_ok=True)
    with open("/sys/fs/cgroup/cgroup.subtree_control", "w") as ctl:
        ctl.write("+memory")
    with open(f"{CGROOT}/cgroup.subtree_control", "w") as ctl:
        ctl.write("+memory")
    sh(f"mount -t ext4 -o ro,noload {cfg['store']} {STORE}")
    try:
        for n, config in enumerate(cfg["configs"]):
            tag = f"{cfg['pair']}-{n}"
            try:
                workload_read_all(cfg, config, tag)
                workload_containers(cfg, config, tag)
            except RuntimeError as exc:
                emit(kind="error", config=config, error=str(exc))
    finally:
        sh(f"umount {STORE}")
    emit(kind="done")


if __name__ == "__main__":
    main()
