"""mkfs.erofs new enough for fingerprints (>= 1.9, ``--xattr-inode-digest``).

Debian 12 ships erofs-utils 1.5 and sid's binary package needs a newer libc, so the project
builds sid's *source* package on this host (about 30 s on 2 cores) and caches the
binaries by source version. ``$MKFS_EROFS`` (a path) overrides, and is version-checked too.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from harness.core import cache
from harness.core.errors import ToolMissing
from harness.kernel.aptrepo import PrivateApt, build_source_package, cached_source_build

MIN_VERSION = (1, 9)
BUILD_DEPS = ("autoconf", "automake", "libtool", "pkg-config", "liblz4-dev", "uuid-dev",
              "zlib1g-dev", "libzstd-dev", "liblzma-dev", "libssl-dev", "dpkg-dev", "make")
CONFIGURE = ["--disable-fuse", "--without-selinux"]


@dataclass(frozen=True)
class ErofsUtils:
    mkfs: Path
    dump: Path | None
    fsck: Path | None
    version: str

    def describe(self) -> str:
        return f"mkfs.erofs {self.version} ({self.mkfs})"


def _version(mkfs: Path) -> str:
    proc = subprocess.run([str(mkfs), "--version"], capture_output=True, text=True, check=False)
    match = re.search(r"(\d+\.\d+(?:\.\d+)*)", proc.stdout + proc.stderr)
    if not match:
        raise ToolMissing(f"{mkfs} --version printed no version: {proc.stdout}{proc.stderr}")
    return match.group(1)


def check(mkfs: Path, origin: str) -> ErofsUtils:
    """An ErofsUtils for ``mkfs`` if it is new enough and can write fingerprints."""
    if not mkfs.is_file() or not os.access(mkfs, os.X_OK):
        raise ToolMissing(f"{origin}: {mkfs} is not an executable file")
    version = _version(mkfs)
    if tuple(int(x) for x in version.split(".")[:2]) < MIN_VERSION:
        raise ToolMissing(f"{origin}: {mkfs} is erofs-utils {version}; the suite needs >= "
                          f"{'.'.join(map(str, MIN_VERSION))} for --xattr-inode-digest")
    helptext = subprocess.run([str(mkfs), "--help"], capture_output=True, text=True,
                              check=False).stdout
    if "--xattr-inode-digest" not in helptext:
        raise ToolMissing(f"{origin}: {mkfs} ({version}) has no --xattr-inode-digest option")
    siblings = {name: shutil.which(name, path=str(mkfs.parent)) for name in
                ("dump.erofs", "fsck.erofs")}
    return ErofsUtils(mkfs, Path(siblings["dump.erofs"]) if siblings["dump.erofs"] else None,
                      Path(siblings["fsck.erofs"]) if siblings["fsck.erofs"] else None, version)


def _build(apt: PrivateApt, out: Path) -> dict[str, object]:
    missing = [tool for tool in ("dpkg-source", "autoreconf", "libtoolize", "pkg-config", "make",
                                 "cc") if shutil.which(tool) is None]
    if missing:
        raise ToolMissing(f"building erofs-utils needs {', '.join(missing)}: install "
                          f"{' '.join(BUILD_DEPS)} (`make deps` does it)")
    with tempfile.TemporaryDirectory(prefix="erofs-utils.") as tmp:
        src = build_source_package(apt, "erofs-utils", Path(tmp), [
            ["./autogen.sh"], ["./configure", *CONFIGURE],
            ["make", f"-j{os.cpu_count() or 2}"]])
        (out / "bin").mkdir()
        for rel in ("mkfs/mkfs.erofs", "dump/dump.erofs", "fsck/fsck.erofs"):
            shutil.copy2(src / rel, out / "bin" / Path(rel).name)
    return {"source": apt.source_version("erofs-utils")}


def known_version() -> str | None:
    """The version a run would use, if it is already at hand (no apt, no build)."""
    explicit = os.environ.get("MKFS_EROFS")
    candidates = [Path(explicit)] if explicit else sorted(
        (cache.cache_root() / "erofs-utils").glob("*/bin/mkfs.erofs"),
        key=lambda p: p.stat().st_mtime)
    for mkfs in reversed(candidates):
        try:
            return _version(mkfs)
        except (ToolMissing, OSError):
            continue
    return None


def provide(apt_root: Path | None = None) -> ErofsUtils:
    """$MKFS_EROFS if set, else the cached build of Debian sid's erofs-utils source."""
    explicit = os.environ.get("MKFS_EROFS")
    if explicit:
        return check(Path(explicit), "$MKFS_EROFS")
    entry, version = cached_source_build("erofs-utils", CONFIGURE, _build, apt_root)
    return check(entry / "bin" / "mkfs.erofs", f"erofs-utils {version} built from source")
