"""A kernel ready to boot and what the suite knows about it (release, config, features)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from harness.core.errors import SpecError
from harness.kernel.spec import KernelSpec

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
    "core_dumps": ("CONFIG_COREDUMP", "CONFIG_ELF_CORE"),
    "loop": ("CONFIG_BLK_DEV_LOOP",),
    "fanotify": ("CONFIG_FANOTIFY",),
    "user_namespaces": ("CONFIG_USER_NS",),
    "cachestat": ("CONFIG_CACHESTAT_SYSCALL",),
    "uprobes": ("CONFIG_UPROBE_EVENTS",),
    "kmemleak": ("CONFIG_DEBUG_KMEMLEAK",),
    "file_handles": ("CONFIG_FHANDLE",),
}


@dataclass(frozen=True)
class Kernel:
    """A kernel ready to boot, with what we know about it."""

    spec: KernelSpec  # what was asked for, as parsed once
    release: str
    vmlinuz: Path  # what QEMU's -kernel boots: a bzImage, or a vmlinux with a PVH entry
    modules_dir: Path | None  # the lib/modules/<release> directory, if it has modules
    config: dict[str, str] = field(default_factory=dict, compare=False)
    origin: str = ""  # e.g. the Debian packages it came from
    key: str = ""  # content key, used for the guest image built for it
    series: tuple[str, ...] = ()  # subjects of the patches applied (tree: kernels)
    bzimage: Path | None = None  # the bzImage that vmlinuz was unpacked from, if it was

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
