import pytest

from harness.vm.splats import find_splats

BOOT = """\
[    0.000000] Linux version 7.3.4+deb13-cloud-amd64
[    0.770095] acpi PNP0A03:00: fail to add MMCONFIG information
[    3.55] EXT4-fs (vda): mounted filesystem r/w with ordered data mode.
[    9.1] erofs (device loop0): EXPERIMENTAL EROFS page cache share support in use. \
 Use at your own risk!
[    9.2] erofs: domain_id is needed when inode_ishare is on
"""


def test_normal_boot_log_has_no_splat() -> None:
    assert find_splats(BOOT) == []


@pytest.mark.parametrize("line, kind", [
    ("[ 5.1] Kernel panic - not syncing: sysrq triggered crash", "panic"),
    ("[ 5.1] BUG: KASAN: slab-use-after-free in erofs_ishare_fill", "kasan"),
    ("[ 5.1] UBSAN: shift-out-of-bounds in fs/erofs/zmap.c:42:3", "ubsan"),
    ("[ 5.1] WARNING: possible circular locking dependency detected", "lockdep"),
    ("[ 5.1] INFO: task mount:123 blocked for more than 120 seconds.", "hung_task"),
    ("[ 5.1] kernel BUG at fs/erofs/ishare.c:77!", "bug"),
    ("[ 5.1] Oops: general protection fault, probably for non-canonical address", "oops"),
    ("[ 5.1] WARNING: CPU: 1 PID: 80 at fs/erofs/ishare.c:99 erofs_ishare_x+0x1/0x2", "warning"),
])
def test_each_report_kind_is_found_with_its_excerpt(line: str, kind: str) -> None:
    text = BOOT + line + "\n[ 5.2] Call Trace:\n[ 5.2]  <TASK>\n"
    splats = find_splats(text)
    assert [s.kind for s in splats] == [kind]
    assert "Call Trace" in splats[0].excerpt


def test_cut_here_and_warning_line_are_one_report() -> None:
    text = ("[1] ------------[ cut here ]------------\n"
            "[1] WARNING: CPU: 0 PID: 1 at mm/filemap.c:1 x\n[1] Call Trace:\n")
    assert len(find_splats(text)) == 1


def test_warning_in_the_7_3_format_is_found() -> None:
    from harness.vm.splats import find_splats
    text = ("[   12.1] WARNING: ../../tree/fs/erofs/ishare.c:75 at "
            "erofs_ishare_fill_inode+0x140/0x19b, CPU#1: cat/93\n[   12.2] Modules linked in:\n")
    (splat,) = find_splats(text)
    assert splat.kind == "warning" and "ishare.c:75" in splat.first_line
