"""What a tree build makes for QEMU: the vmlinux booted at its PVH entry, except for the
debug fragment (its KASAN vmlinux does not start at that entry) and coverage builds."""

from __future__ import annotations

from harness.kernel.kbuild import boot_image_path
from harness.kernel.spec import TreeSpec


def test_plain_builds_boot_vmlinux_and_debug_or_coverage_builds_a_bzimage() -> None:
    assert boot_image_path(TreeSpec(None)) == "vmlinux"
    assert boot_image_path(TreeSpec(None, debug=True)) == "arch/x86/boot/bzImage"
    assert boot_image_path(TreeSpec(None, coverage=True)) == "arch/x86/boot/bzImage"
