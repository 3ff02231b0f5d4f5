"""Kernels under test: parse a kernel spec, fetch or locate the kernel, describe it.

Specs (DESIGN.md), the same for ``make KERNEL=`` and ``pytest --kernel=``:
  ``debian:<version-prefix>``        a Debian cloud kernel fetched through a private apt config
  ``path:<vmlinuz>[,modules=<dir>]`` a kernel the user built
  ``tree:[<dir>][,ref=,patches=,kconfig=,debug]``  a source tree built with kconfigs/
                                     fragments (kbuild.py; empty dir: Debian linux-source)
"""

from __future__ import annotations

import dataclasses
import gzip
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from . import cache
from .aptrepo import PrivateApt
from .errors import HarnessError, KernelNotFound, SpecError

PINS_FILE = Path(__file__).parent / "data" / "kernel-pins.yaml"
FLAVOUR = "cloud-amd64"  # small, virtio built for VMs

# What the suite needs from a kernel, by the config options that provide it.
FEATURES: dict[str, tuple[str, ...]] = {
    "erofs": ("CONFIG_EROFS_FS",),
    "erofs_xattr": ("CONFIG_EROFS_FS_XATTR",),
    "page_cache_share": ("CONFIG_EROFS_FS_PAGE_CACHE_SHARE",),
    "file_backed_mount": ("CONFIG_EROFS_FS_BACKED_BY_FILE",),
    "lz4": ("CONFIG_EROFS_FS_ZIP",),
    "lzma": ("CONFIG_EROFS_FS_ZIP_LZMA",),
    "deflate": ("CONFIG_EROFS_FS_ZIP_DEFLATE",),
    "zstd": ("CONFIG_EROFS_FS_ZIP_ZSTD",),
    "memcg": ("CONFIG_MEMCG",),
    "pagemap": ("CONFIG_PROC_PAGE_MONITOR",),
    "io_uring": ("CONFIG_IO_URING",),
    "loop": ("CONFIG_BLK_DEV_LOOP",),
}


@dataclass(frozen=True)
class KernelSpec:
    kind: str  # "debian" | "path" | "tree"
    value: str
    modules: Path | None = None

    def __str__(self) -> str:
        text = f"{self.kind}:{self.value}"
        return text + (f",modules={self.modules}" if self.modules else "")


def parse_kernel_spec(text: str) -> KernelSpec:
    """Parse a kernel spec; a malformed one is a SpecError that shows the accepted forms."""
    forms = ("accepted forms: debian:<version-prefix> (e.g. debian:7.3), "
             "path:<vmlinuz>[,modules=<dir>], "
             "tree:[<dir>][,ref=<rev>][,patches=<series>][,kconfig=<f1>+<f2>][,debug]")
    kind, sep, rest = text.strip().partition(":")
    if kind == "tree" and sep:
        from .kbuild import parse_tree_spec
        parse_tree_spec(rest)  # errors early, naming the bad option
        return KernelSpec("tree", rest)
    if not sep or not rest:
        raise SpecError(f"kernel spec {text!r} has no kind; {forms}")
    if kind == "debian":
        if not re.fullmatch(r"\d+(\.\d+)*", rest):
            raise SpecError(f"kernel spec {text!r}: {rest!r} is not a version prefix such as "
                            f"7.3 or 6.12; {forms}")
        return KernelSpec("debian", rest)
    if kind == "path":
        image, *opts = rest.split(",")
        modules = None
        for opt in opts:
            name, _, value = opt.partition("=")
            if name != "modules" or not value:
                raise SpecError(f"kernel spec {text!r}: unknown option {opt!r} (only "
                                f"modules=<dir>); {forms}")
            modules = Path(value).expanduser()
        return KernelSpec("path", str(Path(image).expanduser()), modules)
    raise SpecError(f"unknown kernel spec kind {kind!r} in {text!r}; {forms}")


@dataclass(frozen=True)
class Kernel:
    """A kernel ready to boot, with what we know about it."""

    spec: str
    release: str
    vmlinuz: Path
    modules_dir: Path | None  # the lib/modules/<release> directory, if it has modules
    config: dict[str, str] = field(default_factory=dict, compare=False)
    origin: str = ""  # e.g. the Debian packages it came from
    key: str = ""  # content key, used for the guest image built for it
    series: tuple[str, ...] = ()  # subjects of the patches applied (tree: kernels)

    def option(self, name: str) -> str | None:
        """The value of CONFIG_<name> (``y``, ``m``, a string) or None when unset."""
        if not name.startswith("CONFIG_"):
            name = "CONFIG_" + name
        return self.config.get(name)

    def has(self, name: str) -> bool:
        return self.option(name) in ("y", "m")

    @property
    def features(self) -> dict[str, bool]:
        return {feat: all(self.has(opt) for opt in opts) for feat, opts in FEATURES.items()}

    def describe(self) -> str:
        on = [f for f, ok in self.features.items() if ok]
        return f"{self.spec} = {self.release} ({self.origin}); features: {', '.join(on)}"


def parse_config(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        if line.startswith("CONFIG_") and "=" in line:
            name, _, value = line.partition("=")
            out[name] = value.strip().strip('"')
    return out


def bzimage_release(path: Path) -> str:
    """The release string from a bzImage's setup header, read without booting it."""
    data = path.read_bytes()[:0x10000]
    if len(data) < 0x210 or data[0x202:0x206] != b"HdrS":
        raise SpecError(f"{path} is not an x86 bzImage (no 'HdrS' setup header)")
    offset = int.from_bytes(data[0x20E:0x210], "little") + 0x200
    version = data[offset:offset + 256].split(b"\0", 1)[0].decode(errors="replace")
    if not version:
        raise SpecError(f"{path}: the setup header carries no kernel version string")
    return version.split()[0]


# ---- Debian kernels ---------------------------------------------------------------------

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
        # Layouts differ between versions (FIELD-NOTES): look rather than assume.
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


def fetch_debian(spec: KernelSpec, apt_root: Path | None = None) -> Kernel:
    root = cache.cache_root()
    apt = PrivateApt(apt_root or root / "apt")
    with apt.locked():
        apt.update()
        pkg, names = _resolve_cached(apt, spec.value)
        key = cache.content_key(["debian-kernel", *names])
        entry = cache.get_or_build("kernels", key,
                                   lambda out: _build_debian_entry(apt, pkg, names, out))
    meta = cache.read_meta(entry)
    return Kernel(spec=str(spec), release=str(meta["release"]), vmlinuz=entry / "vmlinuz",
                  modules_dir=entry / "modules",
                  config=parse_config((entry / "config").read_text()),
                  origin=f"Debian {pkg.name} {pkg.version} from {pkg.suite}", key=key)


# ---- kernels the user built -------------------------------------------------------------

def _resolve_modules_dir(given: Path, release: str) -> Path:
    for candidate in (given, given / release, given / "lib" / "modules" / release,
                      given / "usr" / "lib" / "modules" / release):
        if (candidate / "modules.dep").is_file() or (candidate / "kernel").is_dir():
            return candidate
    raise SpecError(f"modules={given}: no modules for release {release} there (looked for "
                    f"modules.dep or kernel/ in {given}, {given}/{release} and "
                    f"{given}/lib/modules/{release})")


def _find_config(vmlinuz: Path, modules: Path | None, release: str) -> dict[str, str]:
    candidates = [vmlinuz.parent / ".config", vmlinuz.parent.parent.parent.parent / ".config",
                  vmlinuz.parent / f"config-{release}"]
    if modules:
        candidates += [modules / "config", modules / "build" / ".config"]
    for path in candidates:
        if path.is_file():
            return parse_config(path.read_text(errors="replace"))
        gz = path.with_name(path.name + ".gz")
        if gz.is_file():
            return parse_config(gzip.decompress(gz.read_bytes()).decode(errors="replace"))
    return {}


def locate_path_kernel(spec: KernelSpec) -> Kernel:
    vmlinuz = Path(spec.value).resolve()
    if not vmlinuz.is_file():
        raise KernelNotFound(f"kernel spec {spec}: {vmlinuz} does not exist or is not a file")
    release = bzimage_release(vmlinuz)
    modules = _resolve_modules_dir(spec.modules.resolve(), release) if spec.modules else None
    stat = vmlinuz.stat()
    key = cache.content_key(["path-kernel", str(vmlinuz), str(stat.st_size),
                             str(stat.st_mtime_ns), str(modules or "")])
    return Kernel(spec=str(spec), release=release, vmlinuz=vmlinuz, modules_dir=modules,
                  config=_find_config(vmlinuz, modules, release), origin=str(vmlinuz), key=key)


def resolve_kernel(text: str | None) -> Kernel:
    """Turn a kernel spec (None: the pinned default) into a bootable Kernel."""
    spec = parse_kernel_spec(text or default_spec())
    if spec.kind == "debian":
        return fetch_debian(spec)
    if spec.kind == "path":
        return locate_path_kernel(spec)
    from .kbuild import build_tree, parse_tree_spec  # kbuild imports this module
    return build_tree(parse_tree_spec(spec.value)).kernel
