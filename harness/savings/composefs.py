"""composefs's tools, built from Debian's ``composefs`` source package (sid), cached.

Debian 12 has no composefs package and sid's binaries need a newer libc, so the source is
built on this host with meson (a few seconds), as erofs-utils is. Only ``mkcomposefs`` is
used: it writes the metadata image (EROFS with overlay metacopy/redirect xattrs) and fills
a content-addressed object store. The guest mounts the result as ``mount.composefs``
does: the image through loop, then an overlay over it with the object store as a
data-only lower layer (``lowerdir=<image>::<objects>``, metacopy and redirect_dir on).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from harness.core.errors import HarnessError, ToolMissing
from harness.kernel.aptrepo import PrivateApt, build_source_package, cached_source_build

BUILD_TOOLS = ("dpkg-source", "meson", "ninja", "pkg-config", "cc")
MESON_OPTIONS = ["-Dman=disabled", "-Dfuse=disabled"]


@dataclass(frozen=True)
class Composefs:
    mkcomposefs: Path
    libdir: Path
    version: str

    def make(self, tree: Path, image: Path, objects: Path) -> None:
        """The metadata image of ``tree``, its file contents stored in ``objects``."""
        env = {**os.environ, "LD_LIBRARY_PATH": str(self.libdir)}
        proc = subprocess.run([str(self.mkcomposefs), f"--digest-store={objects}",
                               str(tree), str(image)], env=env, capture_output=True,
                              text=True, check=False)
        if proc.returncode != 0:
            raise HarnessError(f"mkcomposefs {tree} failed (exit {proc.returncode}): "
                               f"{proc.stderr.strip()[-800:]}")


def _build(apt: PrivateApt, out: Path) -> dict[str, object]:
    missing = [tool for tool in BUILD_TOOLS if shutil.which(tool) is None]
    if missing:
        raise ToolMissing(f"building composefs needs {', '.join(missing)} (`make deps` "
                          "installs meson, ninja-build and pkg-config)")
    with tempfile.TemporaryDirectory(prefix="composefs.") as tmp:
        src = build_source_package(apt, "composefs", Path(tmp), [
            ["meson", "setup", "build", *MESON_OPTIONS], ["ninja", "-C", "build"]])
        (out / "bin").mkdir()
        (out / "lib").mkdir()
        shutil.copy2(src / "build" / "tools" / "mkcomposefs", out / "bin" / "mkcomposefs")
        for lib in (src / "build" / "libcomposefs").glob("libcomposefs.so*"):
            if lib.is_file():  # the .so, its soname link (copied as a file); not meson's .p
                shutil.copy2(lib, out / "lib" / lib.name, follow_symlinks=True)
    return {"source": apt.source_version("composefs")}


def provide(apt_root: Path | None = None) -> Composefs:
    entry, version = cached_source_build("composefs", MESON_OPTIONS, _build, apt_root)
    return Composefs(entry / "bin" / "mkcomposefs", entry / "lib", version)
