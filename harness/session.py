"""Boot a VM for the command line: kernel spec -> kernel -> guest image -> running VM."""

from __future__ import annotations

import sys
from dataclasses import dataclass

from .guestimage import build_guest_image
from .kernels import resolve_kernel
from .vm import VM, VMConfig


@dataclass(frozen=True)
class BootRequest:
    kernel: str | None
    accel: str = "auto"
    memory_mb: int = 1024
    cpus: int = 2
    keep: bool = False


def boot(request: BootRequest, name: str = "cli") -> VM:
    """A VM, not yet started: use it as a context manager."""
    kernel = resolve_kernel(request.kernel)
    image = build_guest_image(kernel)
    print(f"harness: booting {kernel.release} ({kernel.origin})", file=sys.stderr, flush=True)
    return VM(kernel, image, VMConfig(memory_mb=request.memory_mb, cpus=request.cpus,
                                      accel=request.accel, keep=request.keep), name=name)
