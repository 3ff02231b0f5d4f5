"""The pipeline, assembled in one place: kernel spec -> Kernel -> GuestImage -> VM.

Every caller that needs a guest (the pytest plugin's VM pool, ``harness exec|shell``, the
benchmarks, ``repro``) goes through :func:`vm_for`; none of them strings the steps together
itself.
"""

from __future__ import annotations

import sys
from pathlib import Path

from harness.core.waits import WaitLedger
from harness.guestimage.build import GuestImage, build_guest_image
from harness.kernel.kernel import Kernel
from harness.kernel.resolve import resolve_kernel
from harness.kernel.spec import KernelSpec
from harness.vm.machine import VM, VMConfig

KernelLike = str | KernelSpec | Kernel | None


def kernel_for(spec: KernelLike) -> Kernel:
    """A bootable kernel for a spec (None: the pinned default); a Kernel is taken as is."""
    return spec if isinstance(spec, Kernel) else resolve_kernel(spec)


def vm_for(kernel: KernelLike, config: VMConfig | None = None, *, name: str = "vm",
           artifacts: Path | None = None, image: GuestImage | None = None,
           announce: bool = True, waits: WaitLedger | None = None) -> VM:
    """A VM for ``kernel``, not yet started: use it as a context manager (or ``start()``).

    ``waits`` is where the VM counts its waits (the caller's ledger, to add up several VMs).
    ``image`` skips the guest image lookup when the caller already holds the one built for
    this kernel (the VM pool boots many VMs from one).
    """
    resolved = kernel_for(kernel)
    guest_image = image if image is not None else build_guest_image(resolved)
    if announce:
        print(f"harness: booting {resolved.release} ({resolved.origin})", file=sys.stderr,
              flush=True)
    return VM(resolved, guest_image, config or VMConfig(), artifacts=artifacts, name=name,
              waits=waits or WaitLedger())
