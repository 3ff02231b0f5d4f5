"""Damage to images (harness/erofs/damage.py): what each damage changes, what it expects of
the kernel, and that a report's damage replays byte for byte. No VM, no mkfs: a synthetic
image and layout."""

from __future__ import annotations

import random
import struct

import pytest

from harness.erofs.damage import Damage, random_damage
from harness.erofs.layout import ALL, ImageLayout, Region
from harness.erofs.superblock import CHECKSUM_AT, COMPAT_AT, COMPAT_SB_CHKSUM, SUPERBLOCK_OFFSET
from harness.erofs.xattrs import superblock_checksum

BLOCK = 4096


def _image() -> bytes:
    data = bytearray(random.Random(1).randbytes(4 * BLOCK))
    data[:SUPERBLOCK_OFFSET] = bytes(SUPERBLOCK_OFFSET)
    data[SUPERBLOCK_OFFSET + 12] = 12  # blkszbits
    struct.pack_into("<I", data, SUPERBLOCK_OFFSET + COMPAT_AT, COMPAT_SB_CHKSUM)
    struct.pack_into("<I", data, SUPERBLOCK_OFFSET + CHECKSUM_AT, superblock_checksum(bytes(data)))
    return bytes(data)


def _layout(size: int) -> ImageLayout:
    files = frozenset({"a", "d/b"})
    regions = (Region("head", "head", 0, 1024, frozenset()),
               Region("superblock", "superblock", 1024, 1152, frozenset({ALL})),
               Region("inode", "inode:a", 2048, 2080, frozenset({"a"})),
               Region("dir", "dir:d#0", BLOCK, 2 * BLOCK, frozenset({"d/b"})),
               Region("data", "data:a#0", 2 * BLOCK, 3 * BLOCK, frozenset({"a"})),
               Region("xattrs", "xattrs:d/b", 3 * BLOCK, 3 * BLOCK + 56, frozenset()))
    return ImageLayout(size, BLOCK, (1024, BLOCK), regions, (), files)


def _checksum_ok(data: bytes) -> bool:
    stored = struct.unpack_from("<I", data, SUPERBLOCK_OFFSET + CHECKSUM_AT)[0]
    return stored == superblock_checksum(data)


def test_edits_and_truncation_apply_and_resign_keeps_the_checksum_valid() -> None:
    data, layout = _image(), _layout(4 * BLOCK)
    plain = Damage("x", ((2050, b"\xff\xff"),))
    out = plain.apply(data)
    assert out[2050:2052] == b"\xff\xff" and len(out) == len(data)
    assert not _checksum_ok(out), "an edit in the superblock's block must break its checksum"
    assert plain.expect(layout) == "refused"
    signed = Damage("x", ((2050, b"\xff\xff"),), resign=True)
    assert _checksum_ok(signed.apply(data)) and signed.expect(layout) == "contained"
    cut = Damage("t", truncate=3 * BLOCK)
    assert len(cut.apply(data)) == 3 * BLOCK
    assert cut.affected(layout) == frozenset()  # only the xattrs lie past the cut


@pytest.mark.parametrize(("damage", "expect", "affected"), [
    (Damage("head", ((0, bytes(1024)),)), "intact", set()),
    (Damage("sb", ((1030, b"\1"),)), "refused", {"a", "d/b"}),
    (Damage("dir", ((BLOCK + 5, b"\1"),)), "contained", {"d/b"}),
    (Damage("data", ((2 * BLOCK, b"\1"),)), "contained", {"a"}),
    (Damage("xattr", ((3 * BLOCK + 20, b"\1"),)), "contained", set()),
    (Damage("short", truncate=512), "refused", {"a", "d/b"}),
])
def test_expectations_follow_the_layout(damage: Damage, expect: str, affected: set[str]) -> None:
    layout = _layout(4 * BLOCK)
    assert damage.expect(layout) == expect
    assert damage.affected(layout) == affected


def test_a_report_round_trip_gives_the_same_damage_and_bytes() -> None:
    data, layout = _image(), _layout(4 * BLOCK)
    damage = random_damage(layout, data, random.Random(7))
    again = Damage.from_dict(damage.as_dict())
    assert again == damage and again.ident == damage.ident
    assert again.apply(data) == damage.apply(data)


def test_random_damage_is_fixed_by_its_seed() -> None:
    data, layout = _image(), _layout(4 * BLOCK)
    first = [random_damage(layout, data, random.Random(3)) for _ in range(1)]
    rng_a, rng_b = random.Random(11), random.Random(11)
    assert [random_damage(layout, data, rng_a) for _ in range(20)] == \
        [random_damage(layout, data, rng_b) for _ in range(20)]
    assert first[0] == random_damage(layout, data, random.Random(3))


def test_a_damage_that_changes_nothing_is_never_drawn() -> None:
    data = bytearray(_image())
    data[2 * BLOCK:3 * BLOCK] = bytes(BLOCK)  # a zeroed stretch, where zeroing does nothing
    layout, rng = _layout(4 * BLOCK), random.Random(5)
    assert not Damage("noop", ((2 * BLOCK + 10, b"\0\0"),)).changes(bytes(data))
    assert all(random_damage(layout, bytes(data), rng).changes(bytes(data)) for _ in range(200))


@pytest.mark.parametrize(("blkszbits", "covered"), [(12, 4096 - 1024), (10, 1024), (9, 512)])
def test_the_checksum_covers_what_the_kernel_reads_for_every_block_size(
        blkszbits: int, covered: int) -> None:
    """erofs_superblock_csum_verify: crc32c seeded 0x5045B54A over the bytes after the
    checksum field, to the end of the first block, or of the superblock's own block when
    blocks are 1 KiB or smaller (a harness once summed nothing there)."""
    from harness.erofs.superblock import MAGIC
    from harness.erofs.xattrs import crc32c
    data = bytearray(random.Random(blkszbits).randbytes(4 * BLOCK))
    struct.pack_into("<I", data, SUPERBLOCK_OFFSET, MAGIC)
    data[SUPERBLOCK_OFFSET + 12] = blkszbits
    after = SUPERBLOCK_OFFSET + CHECKSUM_AT + 4
    want = crc32c(0x5045B54A, bytes(data[after:SUPERBLOCK_OFFSET + covered]))
    assert superblock_checksum(bytes(data)) == want
