"""Build a kernel from a source tree: ``tree:`` kernel specs and ``make kernel``.

Out of tree (``O=`` under the cache) from ``tinyconfig`` plus the fragments in
``kconfigs/``, so that a clean build takes minutes rather than the hour a distribution
config would. The build directory is keyed by the tree and the merged fragments, and kept:
a second build of the same tree is incremental, and when nothing in the tree changed since
the last build (newest mtime and file count), make is not even started, so every xdist
worker can ask for the kernel cheaply. ccache is used when installed.

Spec: ``tree:[<dir>][,ref=<rev>][,patches=<mbox|dir|series>][,kconfig=<f1>+<f2>]``
``[,debug][,coverage][,config=<.config>]``; an empty ``<dir>`` means Debian's
``linux-source`` package of the default kernel version. ``config=`` starts from a whole
.config (a syzbot report's) instead of tinyconfig: the fragments still go on top (but for
their "off" trims), and every option of the report's config that the build does not have as
the config has it is listed (``not-honoured.txt``).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from harness.core import cache
from harness.core.errors import HarnessError, SpecError
from harness.core.paths import KCONFIGS
from harness.kernel import kconfig
from harness.kernel.kernel import Kernel, parse_config
from harness.kernel.patches import PatchedTree, is_git_tree, prepared_tree
from harness.kernel.spec import TreeSpec

# Every core: the build is the one thing running while a developer waits for it.
JOBS = os.cpu_count() or 1
BASE_FRAGMENTS = ("base.config", "erofs.config")
DEBUG_FRAGMENT = "debug.config"
FAULTS_FRAGMENT = "faults.config"
COVERAGE_FRAGMENT = "coverage.config"
# The directory whose files a coverage build compiles with gcov counters.
COVERAGE_DIR = "fs/erofs"
# In a coverage kernel's cache entry: the .gcno files of COVERAGE_DIR, and the source path.
GCOV_NOTES = "gcov"
PROGRESS_EVERY_S = 10.0


def boot_image_path(request: TreeSpec) -> str:
    """What the build makes for QEMU to boot, relative to the build directory: the plain
    vmlinux, started at its PVH entry (CONFIG_PVH in base.config), so that nothing is packed
    here or unpacked at boot; but a bzImage for the debug fragment, whose vmlinux
    (KASAN, lockdep, 7.3) ends QEMU at the PVH entry before it prints a word, and for
    coverage builds, whose boot through PVH is untried (speed matters less there)."""
    return "arch/x86/boot/bzImage" if request.debug or request.coverage else "vmlinux"


def fragments_for(request: TreeSpec) -> list[Path]:
    frags = [KCONFIGS / name for name in BASE_FRAGMENTS]
    if request.debug:
        frags.append(KCONFIGS / DEBUG_FRAGMENT)
    if request.faults or request.debug:
        frags.append(KCONFIGS / FAULTS_FRAGMENT)
    if request.coverage:
        frags.append(KCONFIGS / COVERAGE_FRAGMENT)
    for frag in request.fragments:
        if not frag.is_file():
            raise SpecError(f"KCONFIG fragment {frag}: no such file")
        frags.append(frag)
    return frags


def coverage_make_args(tree: Path) -> list[str]:
    """``GCOV_PROFILE_<stem>.o=y`` for every C file of fs/erofs: kbuild's per-object switch,
    given on the command line so that the tree itself is never edited. The switch goes by
    file name, so a same-named file elsewhere (fs/super.c) gets counters too; the report
    keeps fs/erofs only."""
    return sorted(f"GCOV_PROFILE_{c.stem}.o=y" for c in (tree / COVERAGE_DIR).glob("*.c"))


def tree_state(tree: Path) -> str:
    """A cheap fingerprint of a tree's files: count and newest mtime (git's checkout and an
    editor's save both move it). 80k files stat in well under a second."""
    count, newest = 0, 0
    stack = [str(tree)]
    while stack:
        with os.scandir(stack.pop()) as it:
            for entry in it:
                if entry.is_dir(follow_symlinks=False):
                    if entry.name != ".git":
                        stack.append(entry.path)
                else:
                    count += 1
                    newest = max(newest, entry.stat(follow_symlinks=False).st_mtime_ns)
    return f"{count}:{newest}"


def _check_tree(tree: Path) -> None:
    if not (tree / "Makefile").is_file() or not (tree / "Kconfig").is_file():
        raise SpecError(f"kernel tree {tree}: not a Linux source tree (no Makefile and Kconfig "
                        f"at its top)")
    if (tree / ".config").exists() or (tree / "include" / "config").exists():
        raise SpecError(f"kernel tree {tree}: it has been configured in place (.config or "
                        f"include/config exist), which out-of-tree builds refuse; run "
                        f"'make mrproper' there or give a clean tree")


def _git_describe(tree: Path) -> str:
    if not is_git_tree(tree):
        return ""
    proc = subprocess.run(["git", "-C", str(tree), "describe", "--always", "--dirty"],
                          capture_output=True, text=True, check=False)
    return proc.stdout.strip()


class _Progress:
    """Echoes make's output into a log and prints a line every few seconds."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.objects = 0
        self.last = ""
        self.started = time.monotonic()
        self.printed = self.started

    def feed(self, line: str) -> None:
        if match := re.match(r"\s+(CC|LD|AR|AS)\s+(?:\[M\]\s+)?(\S+)", line):
            self.objects += 1
            self.last = match.group(2)
        now = time.monotonic()
        if now - self.printed >= PROGRESS_EVERY_S:
            self.printed = now
            print(f"harness: {self.what}: {self.objects} objects, {now - self.started:.0f} s, "
                  f"at {self.last}", file=sys.stderr, flush=True)


def _make(tree: Path, build: Path, targets: list[str], what: str, *, jobs: int = 1,
          extra: list[str] | None = None) -> float:
    argv = ["make", "-C", str(tree), f"O={build}", "ARCH=x86_64", f"-j{jobs}", *(extra or []),
            *targets]
    env = dict(os.environ)
    # Fixed build identity: the same source gives the same vmlinux, and ccache hits.
    env.update(KBUILD_BUILD_USER="harness", KBUILD_BUILD_HOST="harness",
               KBUILD_BUILD_TIMESTAMP="1970-01-01", KBUILD_BUILD_VERSION="1")
    if shutil.which("ccache"):
        argv.insert(-len(targets), "CC=ccache gcc")
        env.setdefault("CCACHE_DIR", str(cache.cache_root() / "ccache"))
        env.setdefault("CCACHE_BASEDIR", str(cache.cache_root()))
    log = build / "build.log"
    progress = _Progress(what)
    started = time.monotonic()
    with log.open("a") as fh:
        fh.write(f"\n$ {' '.join(argv)}\n")
        fh.flush()
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, env=env)
        assert proc.stdout is not None
        tail: list[str] = []
        try:
            for line in proc.stdout:
                fh.write(line)
                progress.feed(line)
                tail = ([*tail, line.rstrip()])[-40:]
            status = proc.wait()
        except BaseException:
            proc.terminate()
            proc.wait()
            raise
    if status != 0:
        errors = [ln for ln in tail if "error" in ln.lower()] or tail[-15:]
        raise HarnessError(f"{what} failed (make exit {status}); the whole log is {log}. "
                           f"Last lines:\n  " + "\n  ".join(errors[-15:]))
    return time.monotonic() - started


@dataclass
class BuildResult:
    kernel: Kernel
    build_dir: Path
    config_seconds: float
    build_seconds: float  # 0 when nothing had changed
    tree: PatchedTree
    install_seconds: float = 0.0  # make modules_install, after a build


def _base_config(request: TreeSpec) -> str | None:
    """The text of the spec's config= file, or None; a missing one is the spec's error."""
    if request.config is None:
        return None
    try:
        return request.config.read_text(errors="replace")
    except OSError as exc:
        raise SpecError(f"config={request.config}: {exc.strerror}") from exc


def forced_on_base(base: dict[str, str], requests: list[kconfig.Request]
                   ) -> list[kconfig.Request]:
    """With a given config, the guest's requests to force on it: its "off" requests only
    trim what tinyconfig would add, so one the given config turns on is left alone (its
    Kconfig selects would bring it back and fail the check)."""
    return [req for req in requests
            if not (req.value == "n" and base.get(req.name, "n") != "n")]


def not_honoured(given: dict[str, str], final: dict[str, str],
                 requests: list[kconfig.Request]) -> list[str]:
    """Every option the build does not have as the given config has it: the guest needs it
    otherwise (its fragment line), or olddefconfig changed it (a dependency or an option
    this tree does not have)."""
    wanted = {req.name: req for req in requests}
    out = []
    for name in sorted(set(given) | set(wanted)):
        had, got = given.get(name, "n"), final.get(name, "n")
        if had != got:
            why = (f"the guest needs it, {wanted[name].where}" if name in wanted else
                   "olddefconfig: a dependency or an option this tree does not have")
            out.append(f"{name}: the given config has {had}, the build has {got} ({why})")
    return out


def _configure(tree: Path, build: Path, requests: list[kconfig.Request], jobs: int,
               base: str | None = None) -> float:
    fragment = build / "harness-fragment.config"
    given: dict[str, str] = {}
    if base is not None:
        (build / "given.config").write_text(base)
        given = kconfig.read_config(build / "given.config")
        requests = forced_on_base(given, requests)
    kconfig.write_clean_fragment(requests, fragment)
    started = time.monotonic()
    print(f"harness: configuring {build.name}: {'the given config' if base else 'tinyconfig'} "
          f"+ {len(requests)} requested options", file=sys.stderr, flush=True)
    if base is None:
        _make(tree, build, ["tinyconfig"], "make tinyconfig", jobs=jobs)
    else:
        (build / ".config").write_text(base)
    proc = subprocess.run([str(tree / "scripts" / "kconfig" / "merge_config.sh"), "-m", "-O",
                           str(build), str(build / ".config"), str(fragment)],
                          capture_output=True, text=True, check=False, cwd=tree)
    with (build / "build.log").open("a") as fh:
        fh.write(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise HarnessError(f"merge_config.sh failed in {build}: {proc.stderr.strip()[-800:]}")
    _make(tree, build, ["olddefconfig"], "make olddefconfig", jobs=jobs)
    if base is not None:
        notes = not_honoured(given, kconfig.read_config(build / ".config"), requests)
        (build / "not-honoured.txt").write_text("".join(line + "\n" for line in notes))
        if notes:
            print(f"harness: {len(notes)} options of the given config are not as it has them "
                  f"(not honoured; all in {build / 'not-honoured.txt'}):\n  "
                  + "\n  ".join(notes[:20]) + ("\n  ..." if len(notes) > 20 else ""),
                  file=sys.stderr, flush=True)
    kconfig.check_config(tree, requests, build / ".config")
    return time.monotonic() - started


def modules_target(build: Path) -> list[str]:
    """``modules`` unless the config builds none and an earlier build of this directory
    already wrote modules.order (which modules_install reads): then it would only walk the
    whole tree a second time, 0.4 s of every rebuild after an edit."""
    config = (build / ".config").read_text()
    if (build / "modules.order").is_file() and not re.search(r"^CONFIG_\w+=m$", config,
                                                            re.MULTILINE):
        return []
    return ["modules"]


def build_tree(request: TreeSpec) -> BuildResult:
    """Configure (when the fragments changed), build (when the tree changed), install
    modules, and describe the kernel."""
    immutable = request.tree is None
    if request.tree is None:
        from harness.kernel.ksource import debian_source_tree
        source, origin = debian_source_tree(request.source)
    else:
        source, origin = request.tree.resolve(), str(request.tree)
        if not source.is_dir():
            raise SpecError(f"kernel tree {request.tree}: no such directory")
    _check_tree(source)
    with prepared_tree(source, request.patches, request.ref, request.upto,
                       immutable=immutable) as prepared:
        return _build_prepared(request, source, origin, prepared)


def _build_prepared(request: TreeSpec, source: Path, origin: str,
                    prepared: PatchedTree) -> BuildResult:
    tree = prepared.path
    requests = kconfig.merge_requests(fragments_for(request))
    base = _base_config(request)
    config_key = cache.content_key(["kconfig", *(r.line() for r in requests)]
                                   + ([f"base {cache.content_key([base])}"] if base else []))
    build = cache.cache_root() / "kbuild" / cache.content_key(["kbuild", str(tree), config_key])
    build.mkdir(parents=True, exist_ok=True)
    stamp_path = build / "harness-stamp.json"
    with (build.parent / f"{build.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        stamp = json.loads(stamp_path.read_text()) if stamp_path.is_file() else {}
        config_seconds = build_seconds = install_seconds = 0.0
        if stamp.get("config") != config_key or not (build / ".config").is_file():
            stamp = {}
            config_seconds = _configure(tree, build, requests, JOBS, base)
            stamp["config"] = config_key
            stamp_path.write_text(json.dumps(stamp))
        state = tree_state(tree)
        image = build / boot_image_path(request)
        if stamp.get("state") != state or not image.is_file():
            print(f"harness: building {origin} in {build} with {JOBS} jobs "
                  f"(log: {build / 'build.log'})", file=sys.stderr, flush=True)
            extra = coverage_make_args(tree) if request.coverage else []
            build_seconds = _make(tree, build, [image.name, *modules_target(build)],
                                  f"building {origin}", jobs=JOBS, extra=extra)
            modinst = build / "modinst"
            shutil.rmtree(modinst, ignore_errors=True)
            install_seconds = _make(
                tree, build, ["modules_install"], "make modules_install", jobs=JOBS,
                extra=[f"INSTALL_MOD_PATH={modinst}", "INSTALL_MOD_STRIP=1",
                       "CONFIG_MODULE_SIG_ALL="])
            stamp.update(state=state, build_seconds=build_seconds)
            if config_seconds:  # a fresh build directory: this was a clean build
                stamp["clean_seconds"] = build_seconds
            stamp_path.write_text(json.dumps(stamp))
        kernel = _describe(request, source, prepared, build, origin)
    return BuildResult(kernel, build, config_seconds, build_seconds, prepared, install_seconds)


def _modules_digest(modinst: Path) -> str:
    """A digest of every installed module file (names and bytes); empty without modules."""
    if not modinst.is_dir():
        return ""
    digest = hashlib.sha256()
    for path in sorted(p for p in modinst.rglob("*.ko*") if p.is_file()):
        digest.update(str(path.relative_to(modinst)).encode() + b"\0")
        digest.update(cache.file_sha256(path).encode())
    return digest.hexdigest()


def _describe(request: TreeSpec, source: Path, prepared: PatchedTree, build: Path,
              origin: str) -> Kernel:
    """The built kernel, copied out of the build directory into an entry of its own: the
    next build of this tree (another checkpoint of a series, a bisect step) overwrites the
    build directory while VMs may still boot this one."""
    release = (build / "include" / "config" / "kernel.release").read_text().strip()
    modinst = build / "modinst" / "lib" / "modules" / release
    image = build / boot_image_path(request)
    # The modules too: a patch to code built as a module (EROFS with erofs-module.config)
    # leaves the boot image as it was, and must not be served the unpatched modules.
    key = cache.content_key(["tree-kernel", cache.file_sha256(image), release,
                             _modules_digest(modinst)])

    def copy_out(out: Path) -> dict[str, object]:
        shutil.copy2(image, out / image.name)
        shutil.copy2(build / ".config", out / "config")
        if modinst.is_dir():
            shutil.copytree(modinst, out / "modules", symlinks=True,
                            ignore=shutil.ignore_patterns("build", "source"))
        if request.coverage:
            # The gcov notes of this very build: the build directory is reused by the next
            # build of the tree (a patched variant), and counters only match their notes.
            notes = out / GCOV_NOTES / COVERAGE_DIR
            notes.mkdir(parents=True)
            for gcno in (build / COVERAGE_DIR).glob("*.gcno"):
                shutil.copy2(gcno, notes / gcno.name)
            (out / GCOV_NOTES / "source").write_text(str(prepared.path.resolve()))
        return {"release": release}

    entry = cache.get_or_build("tree-kernels", key, copy_out)
    describe = _git_describe(prepared.path) or _git_describe(source)
    parts = [f"tree {origin}" + (f" at {describe}" if describe else "")]
    if prepared.series:
        parts.append(f"+ {len(prepared.series)} patch(es): " +
                     "; ".join(p.subject for p in prepared.series))
    frags = [f.name for f in fragments_for(request)]
    parts.append("kconfigs " + "+".join(frags))
    modules = entry / "modules"
    return Kernel(spec=request, release=release, vmlinuz=entry / image.name,
                  modules_dir=modules if modules.is_dir() else None,
                  config=parse_config((entry / "config").read_text()),
                  origin=", ".join(parts), key=key,
                  series=tuple(p.subject for p in prepared.series))
