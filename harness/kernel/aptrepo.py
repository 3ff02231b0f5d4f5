"""A private apt configuration for fetching Debian kernel and source packages.

The system's apt sources are only read, never changed: the Debian mirror addresses are
taken from them at run time (no mirror host is written into the project), and the suites
that carry the kernels under test (sid, trixie-backports, bookworm-security) are listed in
a sources file of our own, with lists, cache and state directories of our own, passed to
apt with ``-o Dir::...`` options.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.core.cache import cache_root, get_or_build
from harness.core.cache import content_key as cache_key
from harness.core.errors import HarnessError, ToolMissing

log = logging.getLogger(__name__)

DEFAULT_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
# Suites that carry the kernels and erofs-utils sources the project needs
# (docs/ARCHITECTURE.md, "Kernels").
ARCHIVE_SUITES = ("sid", "trixie-backports")
SECURITY_SUITES = ("bookworm-security",)
LISTS_MAX_AGE = 24 * 3600.0
APT_HELPER = "/usr/lib/apt/apt-helper"


@dataclass(frozen=True)
class SourceEntry:
    types: tuple[str, ...]
    uris: tuple[str, ...]
    suites: tuple[str, ...]
    components: tuple[str, ...]
    signed_by: str | None
    origin: str  # file:line, for error messages


def parse_deb822(text: str, origin: str) -> list[SourceEntry]:
    """Entries of a deb822 ``.sources`` file; comments and disabled stanzas are skipped."""
    entries = []
    for start_line, stanza in _stanzas(text):
        fields: dict[str, str] = {}
        last = None
        for line in stanza:
            if line.startswith("#"):
                continue
            if line[:1] in (" ", "\t") and last:
                fields[last] += " " + line.strip()
                continue
            if ":" in line:
                name, _, value = line.partition(":")
                last = name.strip().lower()
                fields[last] = value.strip()
        if fields.get("enabled", "yes").lower() == "no" or "uris" not in fields:
            continue
        entries.append(SourceEntry(
            types=tuple(fields.get("types", "deb").split()),
            uris=tuple(fields["uris"].split()),
            suites=tuple(fields.get("suites", "").split()),
            components=tuple(fields.get("components", "").split()),
            signed_by=fields.get("signed-by") or None,
            origin=f"{origin}:{start_line}",
        ))
    return entries


def _stanzas(text: str) -> list[tuple[int, list[str]]]:
    out: list[tuple[int, list[str]]] = []
    current: list[str] = []
    start = 1
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            if not current:
                start = number
            current.append(line)
        elif current:
            out.append((start, current))
            current = []
    if current:
        out.append((start, current))
    return out


_ONE_LINE = re.compile(r"^(deb|deb-src)\s+(?:\[(?P<opts>[^\]]*)\]\s+)?(?P<uri>\S+)\s+"
                       r"(?P<suite>\S+)(?P<comps>(?:\s+\S+)*)\s*$")


def parse_one_line(text: str, origin: str) -> list[SourceEntry]:
    """Entries of a one-line-style ``sources.list`` file."""
    entries = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        match = _ONE_LINE.match(line)
        if not match:
            continue
        signed_by = None
        for opt in (match.group("opts") or "").split():
            if opt.startswith("signed-by="):
                signed_by = opt.split("=", 1)[1]
        entries.append(SourceEntry((match.group(1),), (match.group("uri"),),
                                   (match.group("suite"),),
                                   tuple(match.group("comps").split()), signed_by,
                                   f"{origin}:{number}"))
    return entries


def system_sources(etc: Path = Path("/etc/apt")) -> list[SourceEntry]:
    entries: list[SourceEntry] = []
    main_list = etc / "sources.list"
    if main_list.is_file():
        entries += parse_one_line(main_list.read_text(), str(main_list))
    parts = etc / "sources.list.d"
    if parts.is_dir():
        for path in sorted(parts.iterdir()):
            if path.suffix == ".sources":
                entries += parse_deb822(path.read_text(), str(path))
            elif path.suffix == ".list":
                entries += parse_one_line(path.read_text(), str(path))
    return entries


@dataclass(frozen=True)
class Mirrors:
    archive: str
    security: str | None
    keyring: str


# Debian's release codenames and aliases. An archive is taken as Debian's only when it
# serves one of these: an Ubuntu machine's sources (noble, jammy, ...) have the same shape,
# but no Debian kernel and none of the suites the harness adds exist there.
DEBIAN_SUITES = frozenset({
    "buzz", "rex", "bo", "hamm", "slink", "potato", "woody", "sarge", "etch", "lenny",
    "squeeze", "wheezy", "jessie", "stretch", "buster", "bullseye", "bookworm", "trixie",
    "forky", "duke", "sid", "stable", "testing", "unstable", "oldstable", "oldoldstable",
    "experimental"})


def _release(suite: str) -> str:
    """``bookworm-security`` -> ``bookworm``; ``bookworm/updates`` (old security) likewise."""
    return re.split(r"[-/]", suite, maxsplit=1)[0]


def find_mirrors(entries: list[SourceEntry]) -> Mirrors:
    """The Debian archive and security mirrors the machine is configured with.

    The archive mirror is the one serving a plain Debian release suite with ``main``; the
    security mirror the one serving a Debian ``-security`` suite. Sources of another
    distribution are refused with a message that says what was found.
    """
    archive = security = None
    keyring = None
    foreign: list[str] = []
    for entry in entries:
        if "deb" not in entry.types or "main" not in entry.components:
            continue
        for suite in entry.suites:
            if _release(suite) not in DEBIAN_SUITES:
                foreign.append(f"{suite} ({entry.origin})")
                continue
            if suite.endswith("-security") and security is None:
                security = entry.uris[0]
                keyring = keyring or entry.signed_by
            elif re.fullmatch(r"[a-z]+", suite) and archive is None:
                archive = entry.uris[0]
                keyring = entry.signed_by or keyring
    if archive is None and foreign:
        raise HarnessError(
            "the machine's apt sources are not Debian's: they serve "
            f"{', '.join(foreign[:4])}, which are no Debian suites. Debian kernels and the "
            "suites the harness adds (sid, trixie-backports, bookworm-security) cannot come "
            "from there. Run the harness in a Debian container (for example the "
            "debian:bookworm image, with --device /dev/kvm where the host has it), or give a "
            "kernel you built with KERNEL=path:<vmlinuz>.")
    if archive is None:
        origins = ", ".join(sorted({e.origin.rsplit(":", 1)[0] for e in entries})) or "none"
        raise HarnessError(
            "no Debian archive mirror found in the machine's apt sources (read: "
            f"{origins}). Debian kernels are fetched through the mirror the system already "
            "uses: add a Debian 'main' source to /etc/apt, or use KERNEL=path:<vmlinuz>.")
    return Mirrors(archive.rstrip("/"), security.rstrip("/") if security else None,
                   keyring or DEFAULT_KEYRING)


class PrivateApt:
    """apt-get and apt-cache run against our own sources, lists and cache."""

    def __init__(self, root: Path, mirrors: Mirrors | None = None, *,
                 archive_suites: tuple[str, ...] = ARCHIVE_SUITES,
                 security_suites: tuple[str, ...] = SECURITY_SUITES,
                 with_sources: bool = True) -> None:
        self.root = root
        self.mirrors = mirrors or find_mirrors(system_sources())
        self.sources = root / "etc" / "sources.list"
        self.lists = root / "lists"
        # Another set of suites gets another root: lists of one set never slow the other.
        self.archive_suites = archive_suites
        self.security_suites = security_suites
        self.with_sources = with_sources

    def sources_text(self) -> str:
        m = self.mirrors
        lines = []
        for suite in self.archive_suites:
            lines.append(f"deb [signed-by={m.keyring}] {m.archive} {suite} main")
            if self.with_sources:
                lines.append(f"deb-src [signed-by={m.keyring}] {m.archive} {suite} main")
        if m.security:
            for suite in self.security_suites:
                lines.append(f"deb [signed-by={m.keyring}] {m.security} {suite} main")
        return "\n".join(lines) + "\n"

    def options(self) -> list[str]:
        r = self.root
        opts = {
            "Dir::Etc::SourceList": str(self.sources),
            "Dir::Etc::SourceParts": str(r / "etc" / "sources.list.d"),
            "Dir::Etc::Preferences": str(r / "etc" / "preferences"),
            "Dir::Etc::PreferencesParts": str(r / "etc" / "preferences.d"),
            "Dir::State::Lists": str(self.lists),
            "Dir::State::status": str(r / "state" / "status"),
            "Dir::Cache": str(r / "cache"),
            "APT::Architecture": "amd64",
            "Acquire::Languages": "none",
            "APT::Get::List-Cleanup": "true",
            # Downloads land in our own directories, which the _apt user cannot enter.
            "APT::Sandbox::User": "root",
        }
        out = []
        for key, value in opts.items():
            out += ["-o", f"{key}={value}"]
        return out

    def _prepare(self) -> None:
        for sub in ("etc/sources.list.d", "etc/preferences.d", "lists/partial",
                    "cache/archives/partial", "state"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        (self.root / "state" / "status").touch()
        text = self.sources_text()
        if not self.sources.is_file() or self.sources.read_text() != text:
            self.sources.write_text(text)
            for old in self.lists.glob("*_Packages*"):
                old.unlink()

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Serialise apt runs on this root: pytest-xdist workers resolve kernels at once."""
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / "harness.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def lists_fresh(self) -> bool:
        stamps = list(self.lists.glob("*_Packages*"))
        if not stamps:
            return False
        return time.time() - min(p.stat().st_mtime for p in stamps) < LISTS_MAX_AGE

    def update(self, force: bool = False) -> None:
        """Refresh the package lists (at most once a day unless forced)."""
        self._prepare()
        if not force and self.lists_fresh():
            return
        suites = ", ".join(self.archive_suites + self.security_suites)
        print(f"harness: refreshing private apt lists ({suites})", file=sys.stderr, flush=True)
        self._run(["apt-get", *self.options(), "update"], "apt-get update")
        for path in self.lists.glob("*_Packages*"):
            path.touch()

    def memoized(self, parts: list[str | bytes],
                 compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """``compute()`` (a JSON-able answer read from the package index) kept until the
        lists or ``parts`` change: parsing sid's index takes seconds, and every xdist worker,
        repro kernel and bisect step asks again."""
        stamp = cache_key([*parts, *(f"{p.name}:{p.stat().st_mtime_ns}"
                                     for p in sorted(self.lists.glob("*_Packages*")))])
        memo = self.root / "resolved" / f"{stamp}.json"
        if memo.is_file():
            data: dict[str, Any] = json.loads(memo.read_text())
            return data
        answer = compute()
        memo.parent.mkdir(parents=True, exist_ok=True)
        memo.write_text(json.dumps(answer))
        return answer

    def packages_index(self) -> list[dict[str, str]]:
        """Every binary package stanza of the private lists.

        apt stores lists compressed as it sees fit (lz4 here); ``apt-helper cat-file``
        reads any of its formats, so we do not assume one.
        """
        stanzas: list[dict[str, str]] = []
        for path in sorted(self.lists.glob("*_binary-amd64_Packages*")):
            proc = subprocess.run([APT_HELPER, "cat-file", str(path)], capture_output=True,
                                  text=True, check=False)
            if proc.returncode != 0:
                raise HarnessError(f"cannot read apt list {path}: {proc.stderr.strip()}")
            suite = path.name.split("_dists_", 1)[-1].split("_", 1)[0]
            for stanza in parse_packages(proc.stdout):
                stanza["Suite"] = suite
                stanzas.append(stanza)
        return stanzas

    def download(self, packages: list[str], dest: Path) -> list[Path]:
        """Download ``name=version`` packages into dest, with apt's progress shown."""
        dest.mkdir(parents=True, exist_ok=True)
        print(f"harness: downloading {' '.join(packages)}", file=sys.stderr, flush=True)
        self._run(["apt-get", *self.options(), "download", *packages], "apt-get download",
                  cwd=dest)
        return sorted(dest.glob("*.deb"))

    def source(self, package: str, dest: Path) -> list[Path]:
        """Download a source package (sid's deb-src line) into dest; returns its .dsc."""
        dest.mkdir(parents=True, exist_ok=True)
        print(f"harness: downloading the source of {package}", file=sys.stderr, flush=True)
        self._run(["apt-get", *self.options(), "source", "--download-only", package],
                  "apt-get source", cwd=dest)
        return sorted(dest.glob("*.dsc"))

    def source_version(self, package: str) -> str:
        """The version `apt-get source` would fetch (from the Sources lists)."""
        proc = subprocess.run(["apt-cache", *self.options(), "showsrc", package],
                              capture_output=True, text=True, check=False)
        versions = [ln.split(":", 1)[1].strip() for ln in proc.stdout.splitlines()
                    if ln.startswith("Version:")]
        if not versions:
            raise HarnessError(f"no source package {package!r} in the private apt lists "
                               f"({self.root}): {proc.stderr.strip()}")
        return versions[0]

    def _run(self, argv: list[str], what: str, cwd: Path | None = None) -> None:
        try:
            proc = subprocess.run(argv, cwd=cwd, stdout=sys.stderr, stderr=subprocess.PIPE,
                                  text=True, check=False)
        except FileNotFoundError as exc:
            raise ToolMissing(f"{argv[0]} is not installed: the Debian kernel fetch needs apt "
                              "(run on a Debian or Ubuntu host, or use KERNEL=path:...)") from exc
        if proc.returncode != 0:
            raise HarnessError(f"{what} with the private apt configuration in {self.root} "
                               f"failed (exit {proc.returncode}): {proc.stderr.strip()[-1500:]}")


def build_source_package(apt: PrivateApt, package: str, tmp: Path,
                         commands: list[list[str]]) -> Path:
    """Fetch sid's source of ``package`` into ``tmp``, unpack it and run ``commands`` in it
    (a build), with progress shown and the log's tail in the error of a failed step; the
    unpacked, built source directory is returned. For host tools Debian 12 has too old or
    not at all, whose sid binaries need a newer libc."""
    dsc = apt.source(package, tmp / "dl")
    if not dsc:
        raise HarnessError(f"apt-get source {package} fetched no .dsc")
    src = tmp / "src"
    steps = [(["dpkg-source", "--no-check", "-x", str(dsc[0]), str(src)], tmp),
             *((argv, src) for argv in commands)]
    log_path = tmp / "build.log"
    for argv, cwd in steps:
        print(f"harness: {package}: {' '.join(argv[:2])}", file=sys.stderr, flush=True)
        with log_path.open("a") as log:
            proc = subprocess.run(argv, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                                  check=False)
        if proc.returncode != 0:
            tail = "\n".join(log_path.read_text().splitlines()[-25:])
            raise HarnessError(f"building {package} failed at {' '.join(argv)} "
                               f"(exit {proc.returncode}); last lines:\n{tail}")
    return src


def cached_source_build(package: str, parts: list[str],
                        build: Callable[[PrivateApt, Path], dict[str, object]],
                        apt_root: Path | None = None) -> tuple[Path, str]:
    """The cache entry of ``build`` for sid's current source version of ``package`` (and
    ``parts``, what else shapes the build): built once per version. Returns the entry and
    the version."""
    apt = PrivateApt(apt_root or cache_root() / "apt")
    with apt.locked():
        apt.update()
        version = apt.source_version(package)
        key = cache_key([f"{package}-v1", version, *parts])
        entry = get_or_build(package, key, lambda out: build(apt, out))
    return entry, version


def parse_packages(text: str) -> list[dict[str, str]]:
    """Stanzas of an apt ``Packages`` index as dicts (only single-line fields kept whole)."""
    out = []
    for _, stanza in _stanzas(text):
        fields: dict[str, str] = {}
        for line in stanza:
            if line[:1] in (" ", "\t"):
                continue
            name, sep, value = line.partition(":")
            if sep:
                fields[name] = value.strip()
        if "Package" in fields:
            out.append(fields)
    return out
