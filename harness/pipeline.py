"""The pipeline, assembled in one place: kernel spec -> Kernel -> GuestImage -> VM -> session.

Every caller that needs a guest goes through here; none of them strings the steps together
itself. :func:`prepare` does the host's part (the kernel and its guest image), so that a
caller can look at the kernel before it boots anything; :func:`open_guest` boots a VM and
gives its :class:`GuestSession`, and stops the VM when the block ends, however it ends.
:func:`vm_for` is the bare VM, for callers that drive it without a session (``exec``,
``shell``, the boot benchmark, which times the boots themselves).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from harness.core.waits import WaitLedger
from harness.guest.session import GuestSession
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


@dataclass(frozen=True)
class Prepared:
    """A kernel and the guest image built for it: everything a boot needs from the host."""
    kernel: Kernel
    image: GuestImage


def prepare(kernel: KernelLike) -> Prepared:
    """Resolve (fetch, build) the kernel and build its guest image."""
    resolved = kernel_for(kernel)
    return Prepared(resolved, build_guest_image(resolved))


@contextmanager
def open_guest(target: Prepared | KernelLike, config: VMConfig | None = None, *,
               name: str = "vm", artifacts: Path | None = None, announce: bool = True,
               waits: WaitLedger | None = None) -> Iterator[GuestSession]:
    """A booted guest's session; the VM (and with it the session) is stopped when the block
    ends, on success, failure and Ctrl-C alike."""
    prepared = target if isinstance(target, Prepared) else prepare(target)
    with vm_for(prepared.kernel, config, name=name, artifacts=artifacts, image=prepared.image,
                announce=announce, waits=waits) as vm:
        yield GuestSession(vm)
