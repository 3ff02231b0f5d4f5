"""Fields of an EROFS superblock, read from the image file's bytes (never by mounting it on
the host): what a test needs to know the image is shaped as it claims."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

SUPERBLOCK_OFFSET = 1024
MAGIC = 0xE0F5E1E2
COMPAT_SB_CHKSUM = 0x00000001  # EROFS_FEATURE_COMPAT_SB_CHKSUM
COMPAT_ISHARE_XATTRS = 0x00000020  # EROFS_FEATURE_COMPAT_ISHARE_XATTRS
# Offsets in struct erofs_super_block (fs/erofs/erofs_fs.h); the image tools use them too.
MAGIC_AT, CHECKSUM_AT, COMPAT_AT, BLKSZBITS_AT, META_BLKADDR_AT = 0, 4, 8, 12, 40
INOS_AT, BLOCKS_LO_AT, UUID_AT, BLOCKS_HI_AT, INCOMPAT_AT = 16, 36, 48, 14, 80
EXTRA_DEVICES_AT, ROOTNID_8B_AT = 86, 112
INCOMPAT_48BIT = 0x00000080  # EROFS_FEATURE_INCOMPAT_48BIT: blocks_hi in the root nid's place
PREFIX_COUNT_AT, ISHARE_PREFIX_ID_AT = 91, 105


def checksummed_range(blksz: int) -> tuple[int, int]:
    """The bytes the superblock checksum covers (erofs_superblock_csum_verify): from the
    superblock to the end of the first block, or with blocks of 1 KiB or less, where the
    superblock is a block of its own, the whole of that block."""
    return SUPERBLOCK_OFFSET, SUPERBLOCK_OFFSET + (blksz - SUPERBLOCK_OFFSET
                                                   if blksz > SUPERBLOCK_OFFSET else blksz)


@dataclass(frozen=True)
class Superblock:
    feature_compat: int
    xattr_prefix_count: int  # long xattr name prefixes
    ishare_xattr_prefix_id: int  # which of them names the fingerprint xattr
    blkszbits: int = 12
    inos: int = 0  # inodes in the image
    blocks: int = 0  # blocks of the primary device, as erofs_read_superblock() counts them
    uuid: bytes = bytes(16)
    extra_devices: int = 0  # devices besides the primary one (their blocks are not counted)

    @property
    def has_fingerprints(self) -> bool:
        return bool(self.feature_compat & COMPAT_ISHARE_XATTRS)


def read_superblock(image: Path) -> Superblock:
    with open(image, "rb") as fh:
        fh.seek(SUPERBLOCK_OFFSET)
        raw = fh.read(128)
    if len(raw) < 128 or struct.unpack_from("<I", raw, MAGIC_AT)[0] != MAGIC:
        raise ValueError(f"{image}: no EROFS superblock at offset {SUPERBLOCK_OFFSET}")
    blocks = struct.unpack_from("<I", raw, BLOCKS_LO_AT)[0]
    # With 48BIT the 16 bits after blkszbits are the blocks' high bits only when the root's
    # nid is kept in rootnid_8b; otherwise they are still the root nid (super.c).
    if (struct.unpack_from("<I", raw, INCOMPAT_AT)[0] & INCOMPAT_48BIT
            and struct.unpack_from("<Q", raw, ROOTNID_8B_AT)[0]):
        blocks |= struct.unpack_from("<H", raw, BLOCKS_HI_AT)[0] << 32
    return Superblock(struct.unpack_from("<I", raw, COMPAT_AT)[0], raw[PREFIX_COUNT_AT],
                      raw[ISHARE_PREFIX_ID_AT], raw[BLKSZBITS_AT],
                      struct.unpack_from("<Q", raw, INOS_AT)[0], blocks,
                      bytes(raw[UUID_AT:UUID_AT + 16]),
                      struct.unpack_from("<H", raw, EXTRA_DEVICES_AT)[0])
