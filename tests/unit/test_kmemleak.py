"""kmemleak's report read into records, and the EROFS ones told from the rest."""

from __future__ import annotations

from harness.guest.helpers.kmemleak import _records
from harness.guest.probe import Leaks

REPORT = """unreferenced object 0xffff888004a1c000 (size 32):
  comm "pcprobe", pid 311, jiffies 4294937012
  hex dump (first 32 bytes):
    6c 31 00 7a 02 00 00 00 00 00 00 00 00 00 00 00  l1.z............
  backtrace (crc 9c3f1e2a):
    [<ffffffff8155f0e1>] __kmalloc_noprof+0x2d1/0x3f0
    [<ffffffff81b0d2c3>] erofs_xattr_fill_inode_fingerprint+0x1b3/0x2c0
    [<ffffffff81b0f5a7>] erofs_ishare_fill_inode+0x97/0x3a0
unreferenced object 0xffff888005f2d800 (size 1024):
  comm "swapper/0", pid 1, jiffies 4294892301
  backtrace (crc 0):
    [<ffffffff8155f0e1>] __kmalloc_noprof+0x2d1/0x3f0
    [<ffffffff8201c3a4>] acpi_os_allocate_zeroed+0x14/0x20
"""


def test_a_report_splits_into_one_record_per_object() -> None:
    records = _records(REPORT)
    assert len(records) == 2
    assert records[0].startswith("unreferenced object 0xffff888004a1c000")
    assert "erofs_ishare_fill_inode" in records[0] and "acpi" in records[1]
    assert _records("") == []


def test_only_objects_erofs_allocated_are_erofs_leaks() -> None:
    """The allocating task's name (a test's "erofs-..." mount point, say) is not enough:
    EROFS must be in the allocation's backtrace."""
    records = _records(REPORT.replace('comm "swapper/0"', 'comm "erofs-probe"'))
    leaks = Leaks(True, "", tuple(records))
    assert leaks.erofs() == [records[0]]
