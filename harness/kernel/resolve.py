"""Kernel spec -> bootable Kernel: the one dispatch over the kinds of spec."""

from __future__ import annotations

from harness.kernel.debian import default_spec, fetch_debian
from harness.kernel.kbuild import build_tree
from harness.kernel.kernel import Kernel
from harness.kernel.local import locate_path_kernel
from harness.kernel.pvh import booted_through_pvh
from harness.kernel.spec import DebianSpec, KernelSpec, PathSpec, parse_kernel_spec


def resolve_kernel(spec: str | KernelSpec | None) -> Kernel:
    """Turn a kernel spec (None: the pinned default) into a bootable Kernel."""
    if spec is None or isinstance(spec, str):
        spec = parse_kernel_spec(spec or default_spec())
    if isinstance(spec, DebianSpec):
        return booted_through_pvh(fetch_debian(spec))
    if isinstance(spec, PathSpec):
        return booted_through_pvh(locate_path_kernel(spec))
    return build_tree(spec).kernel  # built as a vmlinux with a PVH entry (base.config)
