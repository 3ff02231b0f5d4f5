"""The image pairs of ``make savings``: one package set installed twice, from Debian 12's
release suite and with its updates, unpacked into root filesystem trees.

A pair is defined in ``savings/pairs.yaml`` (packages and the container command). The
versions come from a private apt configuration of its own (``apt-userland`` in the cache:
bookworm, bookworm-updates, bookworm-security, mirror read from the machine's apt
sources); the Depends closure is followed in the index. Each side's tree is a cache entry
keyed by its exact package versions, with a manifest of every regular file (path, size,
sha256) from which the identity figures and the ideal are computed.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.core import cache
from harness.core.errors import HarnessError, SpecError
from harness.core.yamlconf import check_keys, load_yaml, where
from harness.kernel.aptrepo import PrivateApt

PAIRS_FILE = Path(__file__).resolve().parents[2] / "savings" / "pairs.yaml"
SIDES = ("old", "new")
# Packages every Debian system has and a container image never needs to run a program:
# dpkg's own machinery and maintainer-script helpers.
NOT_IN_IMAGE = frozenset({"debconf", "dpkg", "init-system-helpers", "debianutils",
                          "base-files", "base-passwd", "usrmerge", "usr-is-merged",
                          "install-info", "dpkg-dev"})
PAGE = 4096


@dataclass(frozen=True)
class PairSpec:
    name: str
    packages: tuple[str, ...]
    run: tuple[str, ...]
    origin: str


@dataclass(frozen=True)
class PairsFile:
    suites: dict[str, tuple[str, ...]]
    pairs: dict[str, PairSpec]


def load_pairs(path: Path = PAIRS_FILE) -> PairsFile:
    data = load_yaml(path)
    check_keys(data, {"suites", "pairs"}, {"suites", "pairs"}, str(path))
    suites = data["suites"]
    check_keys(suites, set(SIDES), set(SIDES), f"{path}: suites")
    pairs: dict[str, PairSpec] = {}
    for name, body in data["pairs"].items():
        check_keys(body, {"packages", "run"}, {"packages", "run"}, f"pair {name!r}")
        packages = body["packages"]
        if not isinstance(packages, list) or not packages or \
                not all(isinstance(p, str) for p in packages):
            raise SpecError(f"{where(body, 'packages')}: packages of pair {name!r} must be a "
                            "non-empty list of package names")
        run = body["run"]
        if not isinstance(run, list) or not run or \
                not all(isinstance(c, str) and c.strip() for c in run):
            raise SpecError(f"{where(body, 'run')}: run of pair {name!r} must be a list of "
                            "commands")
        for command in run:
            try:
                shlex.split(command)
            except ValueError as exc:
                raise SpecError(f"{where(body, 'run')}: pair {name!r}: cannot split "
                                f"{command!r} into words: {exc}") from exc
        pairs[name] = PairSpec(name, tuple(packages), tuple(run), where(data["pairs"], name))
    return PairsFile({side: tuple(suites[side]) for side in SIDES}, pairs)


def userland_apt() -> PrivateApt:
    return PrivateApt(cache.cache_root() / "apt-userland",
                      archive_suites=("bookworm", "bookworm-updates"),
                      security_suites=("bookworm-security",), with_sources=False)


def _newer(a: str, b: str) -> bool:
    return subprocess.run(["dpkg", "--compare-versions", a, "gt", b],
                          check=False).returncode == 0


class Index:
    """The binary package index of the userland apt, by package and suite."""

    def __init__(self, stanzas: list[dict[str, str]]) -> None:
        self.by_name: dict[str, dict[str, dict[str, str]]] = defaultdict(dict)
        self.provides: dict[str, list[str]] = defaultdict(list)
        for stanza in stanzas:
            self.by_name[stanza["Package"]][stanza["Suite"]] = stanza
            for item in stanza.get("Provides", "").split(","):
                virtual = item.strip().split(" ")[0]
                if virtual:
                    self.provides[virtual].append(stanza["Package"])

    def pick(self, package: str, suites: tuple[str, ...], origin: str) -> dict[str, str]:
        """The highest version of ``package`` among ``suites``."""
        found = [self.by_name[package][s] for s in suites if s in self.by_name.get(package, {})]
        if not found:
            raise HarnessError(f"{origin}: package {package!r} is in none of the suites "
                               f"{', '.join(suites)}")
        best = found[0]
        for stanza in found[1:]:
            if _newer(stanza["Version"], best["Version"]):
                best = stanza
        return best

    def _dependency(self, alternatives: str) -> str | None:
        names = [a.strip().split(" ")[0].split(":")[0] for a in alternatives.split("|")]
        for name in names:
            if name in self.by_name:
                return name
        for name in names:
            if self.provides.get(name):
                return self.provides[name][0]
        return None

    def closure(self, roots: tuple[str, ...], suites: tuple[str, ...],
                origin: str) -> dict[str, dict[str, str]]:
        """Every package ``roots`` need to run (Pre-Depends and Depends, the first
        alternative that exists), each at its version in ``suites``."""
        chosen: dict[str, dict[str, str]] = {}
        todo = list(roots)
        while todo:
            name = todo.pop()
            if name in chosen or (name in NOT_IN_IMAGE and name not in roots):
                continue
            stanza = self.pick(name, suites, origin)
            chosen[name] = stanza
            for field in ("Pre-Depends", "Depends"):
                for alternatives in stanza.get(field, "").split(","):
                    if alternatives.strip():
                        dep = self._dependency(alternatives)
                        if dep is not None:
                            todo.append(dep)
        return chosen


@dataclass(frozen=True)
class Tree:
    """One side of a pair, unpacked: the root directory and its file manifest."""

    pair: str
    side: str
    root: Path
    packages: dict[str, str]  # name -> version
    files: dict[str, tuple[int, str]]  # path -> (size, sha256)

    @property
    def bytes(self) -> int:
        return sum(size for size, _ in self.files.values())


def _manifest(root: Path) -> dict[str, tuple[int, str]]:
    files: dict[str, tuple[int, str]] = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            files[str(path.relative_to(root))] = (path.stat().st_size,
                                                  cache.file_sha256(path))
    return files


def _compile_python(root: Path) -> None:
    """What python3's postinst does on an install (py3compile): the stdlib's .pyc files.
    Without them every container would compile the modules it imports, on a read-only
    image, each time. The host's own interpreter is Debian 12's, the same 3.11."""
    for libdir in sorted((root / "usr" / "lib").glob("python3.*")):
        interpreter = shutil.which(libdir.name)
        if interpreter is None:
            print(f"savings: no host {libdir.name} to compile {libdir}: containers will "
                  "compile what they import", file=sys.stderr)
            continue
        subprocess.run([interpreter, "-m", "compileall", "-q", "-j0", "-x", "/(test|tests|"
                        "idlelib|lib2to3)/", str(libdir)], check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _unpack(apt: PrivateApt, versions: dict[str, str], out: Path, label: str) -> None:
    root = out / "root"
    root.mkdir()
    with tempfile.TemporaryDirectory(prefix="savings-debs.") as tmp:
        with apt.locked():
            debs = apt.download([f"{name}={version}" for name, version in
                                 sorted(versions.items())], Path(tmp))
        print(f"savings: {label}: unpacking {len(debs)} packages", file=sys.stderr, flush=True)
        for deb in debs:
            proc = subprocess.run(["dpkg-deb", "-x", str(deb), str(root)],
                                  capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                raise HarnessError(f"dpkg-deb -x {deb.name} failed: {proc.stderr.strip()}")
    _compile_python(root)
    # The mount points a container runtime fills (base-files makes them on a real system).
    for name in ("dev", "proc", "tmp"):
        (root / name).mkdir(exist_ok=True)
    # The dynamic loader finds libraries through ld.so.cache on an installed system.
    ldconfig = shutil.which("ldconfig") or "/sbin/ldconfig"
    (root / "etc").mkdir(exist_ok=True)
    subprocess.run([ldconfig, "-r", str(root)], check=False, capture_output=True)
    manifest = _manifest(root)
    (out / "files.json").write_text(json.dumps(manifest))
    (out / "packages.json").write_text(json.dumps(versions, indent=1, sort_keys=True))


def build_tree(spec: PairSpec, side: str, suites: tuple[str, ...], index: Index,
               apt: PrivateApt) -> Tree:
    chosen = index.closure(spec.packages, suites, spec.origin)
    versions = {name: stanza["Version"] for name, stanza in chosen.items()}
    key = cache.content_key(["savings-tree-v2", json.dumps(versions, sort_keys=True)])
    label = f"{spec.name}/{side}"

    def build(out: Path) -> dict[str, object]:
        print(f"savings: {label}: {len(versions)} packages from {', '.join(suites)}",
              file=sys.stderr, flush=True)
        _unpack(apt, versions, out, label)
        return {"pair": spec.name, "side": side}

    # The trees hold thousands of files: their own manifest (files.json) is what is checked.
    entry = cache.get_or_build("savings-trees", key, build, verify_files=False)
    files = {path: (int(v[0]), str(v[1])) for path, v in
             json.loads((entry / "files.json").read_text()).items()}
    return Tree(spec.name, side, entry / "root", versions, files)


@dataclass(frozen=True)
class Identity:
    """How much of ``new`` has a byte-identical file in ``old`` (same contents, any path)."""

    files_old: int
    files_new: int
    files_identical: int
    bytes_new: int
    bytes_identical: int
    unique_pages: int  # pages of the distinct contents of both trees: the read-all ideal

    @property
    def files_pct(self) -> float:
        return 100.0 * self.files_identical / max(self.files_new, 1)

    @property
    def bytes_pct(self) -> float:
        return 100.0 * self.bytes_identical / max(self.bytes_new, 1)

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "files_pct": round(self.files_pct, 1),
                "bytes_pct": round(self.bytes_pct, 1)}


def pages(size: int) -> int:
    return (size + PAGE - 1) // PAGE


def identity(old: Tree, new: Tree) -> Identity:
    old_contents = {digest for _, digest in old.files.values()}
    same = [(size, digest) for size, digest in new.files.values() if digest in old_contents]
    distinct: dict[str, int] = {}
    for size, digest in [*old.files.values(), *new.files.values()]:
        distinct[digest] = size
    return Identity(len(old.files), len(new.files), len(same), new.bytes,
                    sum(size for size, _ in same), sum(pages(s) for s in distinct.values()))


def build_pair(spec: PairSpec, pairs: PairsFile, index: Index,
               apt: PrivateApt) -> tuple[Tree, Tree]:
    old = build_tree(spec, "old", pairs.suites["old"], index, apt)
    new = build_tree(spec, "new", pairs.suites["new"], index, apt)
    return old, new


def open_index() -> tuple[PrivateApt, Index]:
    apt = userland_apt()
    with apt.locked():
        apt.update()
        stanzas = apt.packages_index()
    return apt, Index(stanzas)


def environment_ok() -> None:
    for tool in ("dpkg-deb", "dpkg"):
        if shutil.which(tool) is None:
            raise HarnessError(f"make savings needs {tool} (Debian's dpkg)")
    if os.geteuid() != 0:
        # dpkg-deb -x as a user loses setuid bits and ownership: the trees would differ
        # from an image's, but the bytes (what sharing is about) stay the same.
        print("savings: not root: the trees keep the bytes, not the owners", file=sys.stderr)
