"""What a tree build makes for QEMU: the vmlinux booted at its PVH entry, except for the
debug fragment (its KASAN vmlinux does not start at that entry) and coverage builds."""

from __future__ import annotations

from pathlib import Path

from harness.kernel.kbuild import boot_image_path, modules_target
from harness.kernel.spec import TreeSpec


def test_plain_builds_boot_vmlinux_and_debug_or_coverage_builds_a_bzimage() -> None:
    assert boot_image_path(TreeSpec(None)) == "vmlinux"
    assert boot_image_path(TreeSpec(None, debug=True)) == "arch/x86/boot/bzImage"
    assert boot_image_path(TreeSpec(None, coverage=True)) == "arch/x86/boot/bzImage"


def test_modules_are_built_unless_the_config_has_none_and_modules_order_exists(
        tmp_path: Path) -> None:
    (tmp_path / ".config").write_text("CONFIG_EROFS_FS=y\n# CONFIG_XFS_FS is not set\n")
    assert modules_target(tmp_path) == ["modules"]  # a first build writes modules.order
    (tmp_path / "modules.order").write_text("")
    assert modules_target(tmp_path) == []
    (tmp_path / ".config").write_text("CONFIG_EROFS_FS=y\nCONFIG_LOOP=m\n")
    assert modules_target(tmp_path) == ["modules"]
