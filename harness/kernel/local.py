"""Kernels the user built (``path:<vmlinuz>[,modules=<dir>]``): read the release from the
bzImage header, find the modules and the config next to it."""

from __future__ import annotations

import gzip
from pathlib import Path

from harness.core import cache
from harness.core.errors import KernelNotFound, SpecError
from harness.kernel.kernel import Kernel, bzimage_release, parse_config
from harness.kernel.spec import PathSpec


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


def locate_path_kernel(spec: PathSpec) -> Kernel:
    vmlinuz = spec.vmlinuz.resolve()
    if not vmlinuz.is_file():
        raise KernelNotFound(f"kernel spec {spec}: {vmlinuz} does not exist or is not a file")
    release = bzimage_release(vmlinuz)
    modules = _resolve_modules_dir(spec.modules.resolve(), release) if spec.modules else None
    stat = vmlinuz.stat()
    key = cache.content_key(["path-kernel", str(vmlinuz), str(stat.st_size),
                             str(stat.st_mtime_ns), str(modules or "")])
    return Kernel(spec=spec, release=release, vmlinuz=vmlinuz, modules_dir=modules,
                  config=_find_config(vmlinuz, modules, release), origin=str(vmlinuz), key=key)
