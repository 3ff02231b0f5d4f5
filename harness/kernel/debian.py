"""Debian prebuilt kernels: choose the package a ``debian:<prefix>`` spec means (pinned in
harness/data/kernel-pins.yaml for reproducible runs), fetch it through the private apt
configuration and unpack vmlinuz, config and modules into the cache."""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from harness.core import cache
from harness.core.errors import HarnessError, KernelNotFound, SpecError
from harness.core.paths import DATA
from harness.kernel.aptrepo import PrivateApt
from harness.kernel.kernel import Kernel, parse_config
from harness.kernel.spec import DebianSpec

PINS_FILE = DATA / "kernel-pins.yaml"
FLAVOUR = "cloud-amd64"  # small, virtio built for VMs

_IMAGE_NAME = re.compile(r"^linux-image-(?P<abi>(?P<upstream>\d+\.\d+(?:\.\d+)*)[^-]*)-"
                         + re.escape(FLAVOUR) + "$")


@dataclass(frozen=True)
class DebianPackage:
    name: str
    version: str
    upstream: str
    suite: str
    depends: str

    @property
    def sort_key(self) -> tuple[int, ...]:
        return tuple(int(x) for x in self.upstream.split("."))


def debian_candidates(index: list[dict[str, str]], prefix: str) -> list[DebianPackage]:
    """Kernel image packages whose upstream version starts with prefix, newest first."""
    found = []
    for stanza in index:
        match = _IMAGE_NAME.match(stanza["Package"])
        if not match:
            continue
        upstream = match.group("upstream")
        if upstream != prefix and not upstream.startswith(prefix + "."):
            continue
        found.append(DebianPackage(stanza["Package"], stanza.get("Version", ""), upstream,
                                   stanza.get("Suite", ""), stanza.get("Depends", "")))
    return sorted(found, key=lambda p: p.sort_key, reverse=True)


def load_pins(path: Path = PINS_FILE) -> dict[str, object]:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise SpecError(f"cannot read the kernel pin file {path}: {exc}") from exc
    if not isinstance(data, dict) or "default" not in data:
        raise SpecError(f"{path}: expected a mapping with 'default' and 'pins'")
    return data


def default_spec(path: Path = PINS_FILE) -> str:
    return str(load_pins(path)["default"])


def choose_debian_package(index: list[dict[str, str]], prefix: str,
                          pins: dict[str, object]) -> DebianPackage:
    candidates = debian_candidates(index, prefix)
    pin_table = pins.get("pins") or {}
    assert isinstance(pin_table, dict)
    pin = pin_table.get(prefix)
    if pin:
        want_name, want_version = pin["package"], str(pin["version"])
        for cand in candidates:
            if cand.name == want_name and cand.version == want_version:
                return cand
        newest = (f"the newest available for {prefix} is {candidates[0].name} "
                  f"{candidates[0].version}" if candidates
                  else f"no {FLAVOUR} kernel {prefix}.* is available at all")
        raise KernelNotFound(
            f"kernel debian:{prefix} is pinned to {want_name} {want_version} in {PINS_FILE}, "
            f"which is no longer in the archive; {newest}. Update the pin (or ask for a "
            f"more specific prefix such as debian:{prefix}.N to bypass it).")
    if not candidates:
        raise KernelNotFound(
            f"no Debian {FLAVOUR} kernel matching debian:{prefix} in the suites searched "
            f"(sid, trixie-backports, bookworm-security); try debian:7.3, debian:7.2 or "
            f"debian:6.12.")
    return candidates[0]


def _companion_packages(pkg: DebianPackage, index: list[dict[str, str]]) -> list[str]:
    """The image package and, where it is a meta package, its binary, modules and base parts."""
    wanted = [f"{pkg.name}={pkg.version}"]
    for dep in pkg.depends.split(","):
        name = dep.strip().split(" ", 1)[0]
        if name.startswith(("linux-binary-", "linux-modules-", "linux-base-")):
            wanted.append(f"{name}={pkg.version}")
    return wanted


def _find_one(root: Path, patterns: list[str], what: str) -> Path:
    for pattern in patterns:
        hits = sorted(root.glob(pattern))
        if hits:
            return hits[0]
    raise HarnessError(f"the extracted kernel packages in {root} have no {what} "
                       f"(looked for {', '.join(patterns)})")


def _build_debian_entry(apt: PrivateApt, pkg: DebianPackage, names: list[str],
                        out: Path) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="kernel-fetch.") as tmp:
        debs = apt.download(names, Path(tmp) / "debs")
        tree = Path(tmp) / "tree"
        for deb in debs:
            subprocess.run(["dpkg-deb", "-x", str(deb), str(tree)], check=True)
        # Layouts differ between versions (7.2.13 splits linux-binary- and linux-modules- out of a
        # meta package; some keep boot/vmlinuz-*): look rather than assume.
        vmlinuz = _find_one(tree, ["boot/vmlinuz-*", "usr/lib/modules/*/vmlinuz",
                                   "lib/modules/*/vmlinuz"], "vmlinuz")
        config = _find_one(tree, ["boot/config-*", "usr/lib/modules/*/config",
                                  "lib/modules/*/config"], "kernel config")
        modules = _find_one(tree, ["usr/lib/modules/*/kernel", "lib/modules/*/kernel"],
                            "modules directory").parent
        shutil.copy2(vmlinuz, out / "vmlinuz")
        shutil.copy2(config, out / "config")
        shutil.copytree(modules, out / "modules", symlinks=True,
                        ignore=shutil.ignore_patterns("build", "source"))
        return {"release": modules.name, "origin": " ".join(names)}


def _resolve_cached(apt: PrivateApt, prefix: str) -> tuple[DebianPackage, list[str]]:
    """Which packages a prefix means, kept until the lists or the pins change."""
    def compute() -> dict[str, Any]:
        index = apt.packages_index()
        pkg = choose_debian_package(index, prefix, load_pins())
        return {"package": dataclasses.asdict(pkg), "names": _companion_packages(pkg, index)}

    data = apt.memoized([PINS_FILE.read_bytes(), prefix], compute)
    return DebianPackage(**data["package"]), list(data["names"])


def fetch_debian(spec: DebianSpec, apt_root: Path | None = None) -> Kernel:
    root = cache.cache_root()
    apt = PrivateApt(apt_root or root / "apt")
    with apt.locked():
        apt.update()
        pkg, names = _resolve_cached(apt, spec.prefix)
        key = cache.content_key(["debian-kernel", *names])
        entry = cache.get_or_build("kernels", key,
                                   lambda out: _build_debian_entry(apt, pkg, names, out))
    meta = cache.read_meta(entry)
    return Kernel(spec=spec, release=str(meta["release"]), vmlinuz=entry / "vmlinuz",
                  modules_dir=entry / "modules",
                  config=parse_config((entry / "config").read_text()),
                  origin=f"Debian {pkg.name} {pkg.version} from {pkg.suite}", key=key)
