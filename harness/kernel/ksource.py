"""The default kernel source tree: Debian's ``linux-source-<version>`` package, unpacked.

``make kernel`` with no tree builds this, so a developer gets a tree of the same version as
the default prebuilt kernel without cloning anything. The package carries the tree as one
tarball (about 165 MB; unpacking takes about 11 s on 2 cores); it is fetched with the
harness's private apt configuration and unpacked once into the cache.
"""

from __future__ import annotations

import functools
import subprocess
import sys
import tempfile
from pathlib import Path

from harness.core import cache
from harness.core.errors import HarnessError, KernelNotFound
from harness.kernel.aptrepo import PrivateApt
from harness.kernel.debian import default_spec


def default_source_version() -> str:
    """The major.minor of the pinned default kernel (``debian:7.3`` gives ``7.3``)."""
    spec = default_spec()
    if not spec.startswith("debian:"):
        raise HarnessError(f"the default kernel {spec} is not a Debian kernel, so there is no "
                           f"Debian source package to build; give KERNEL_TREE=<dir>")
    return ".".join(spec.split(":", 1)[1].split(".")[:2])


def _newest(index: list[dict[str, str]], name: str) -> dict[str, str]:
    found = [s for s in index if s.get("Package") == name]
    if not found:
        raise KernelNotFound(f"no package {name} in the suites the harness searches (sid, "
                             f"trixie-backports, bookworm-security); give KERNEL_TREE=<dir>")
    def newer(a: dict[str, str], b: dict[str, str]) -> int:
        gt = subprocess.run(["dpkg", "--compare-versions", a["Version"], "gt", b["Version"]],
                            check=False).returncode == 0
        return -1 if gt else 1

    return sorted(found, key=functools.cmp_to_key(newer))[0]


def _unpack(apt: PrivateApt, name: str, version: str, out: Path) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="ksource.") as tmp:
        (deb,) = apt.download([f"{name}={version}"], Path(tmp))
        subprocess.run(["dpkg-deb", "-x", str(deb), tmp], check=True)
        tarballs = sorted(Path(tmp).glob("usr/src/linux-source-*.tar.*"))
        if not tarballs:
            raise HarnessError(f"{deb.name} has no usr/src/linux-source-*.tar.* inside")
        print(f"harness: unpacking {tarballs[0].name} (about 1.8 GB)", file=sys.stderr,
              flush=True)
        subprocess.run(["tar", "-xf", str(tarballs[0]), "-C", str(out)], check=True)
    trees = [p for p in out.iterdir() if (p / "Makefile").is_file()]
    if len(trees) != 1:
        raise HarnessError(f"the tarball of {name} did not unpack to one tree in {out}")
    trees[0].rename(out / "linux")
    return {"package": name, "version": version}


def debian_source_tree(version: str | None = None) -> tuple[Path, str]:
    """The unpacked tree of ``linux-source-<version>`` and the package version it came from."""
    version = version or default_source_version()
    name = f"linux-source-{version}"
    apt = PrivateApt(cache.cache_root() / "apt")
    with apt.locked():
        apt.update()
        stanza = apt.memoized(["ksource", name],
                              lambda: _newest(apt.packages_index(), name))
    key = cache.content_key(["ksource", name, stanza["Version"]])
    # The tree is 1.8 GB of files: checking every hash on each use would take longer than
    # the build it feeds, so only the manifest's presence is checked.
    entry = cache.get_or_build("ksource", key,
                               lambda out: _unpack(apt, name, stanza["Version"], out),
                               verify_files=False)
    return entry / "linux", f"{name} {stanza['Version']}"
