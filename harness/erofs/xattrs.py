"""Edit the fingerprint xattr of single files in a built EROFS image (on the host, as bytes:
the image is never mounted here).

mkfs.erofs has no per-file switch for ``--xattr-inode-digest`` and cannot be made to write
a chosen digest, yet the suite must test images where only some files carry a fingerprint
and files whose fingerprint lies. Both are small edits of the inline xattr area of an inode:

- stripping: the fingerprint entry's name index is changed from the long prefix of the
  fingerprint name to the plain ``user.`` namespace, so the inode no longer has that xattr
  (what an image built by a tool without fingerprint support for that file would hold);
- forging: the entry's value (``sha256:`` and 32 bytes) is overwritten with another file's.

Layout (erofs_fs.h): an inode at ``meta_blkaddr * block_size + nid * 32``; after the inode
(32 or 64 bytes) a 12-byte ibody header (name filter, shared count, reserved) and the
shared xattr ids, then entries {u8 name_len, u8 name_index, le16 value_size, name, value}
padded to 4 bytes. Inodes carry no checksum of their own, but small images keep their
inodes in the superblock's block, which the superblock checksum (crc32c, when the sb_csum
feature is on) covers: it is recomputed after every edit. ``dump.erofs`` gives each path's
nid and inode size, so only the xattr area is parsed here.
"""

from __future__ import annotations

import re
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

from harness.core.errors import HarnessError
from harness.erofs.superblock import (
    BLKSZBITS_AT,
    CHECKSUM_AT,
    COMPAT_AT,
    COMPAT_SB_CHKSUM,
    META_BLKADDR_AT,
    SUPERBLOCK_OFFSET,
    checksummed_range,
)

LONG_PREFIX = 0x80  # EROFS_XATTR_LONG_PREFIX: the name index is a long-prefix id
INDEX_USER = 1  # EROFS_XATTR_INDEX_USER
DIGEST_TAG = b"sha256:"


def _crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
        table.append(crc)
    return table


_CRC32C = _crc32c_table()


def crc32c(seed: int, data: bytes) -> int:
    """The kernel's crc32c(seed, data): reflected Castagnoli, no final inversion."""
    crc = seed
    for byte in data:
        crc = _CRC32C[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc


def superblock_checksum(image: bytes) -> int:
    """What the kernel expects in the superblock's checksum field (erofs_superblock_csum_verify)."""
    start, end = checksummed_range(1 << image[SUPERBLOCK_OFFSET + BLKSZBITS_AT])
    block = bytearray(image[start:end])
    block[CHECKSUM_AT:CHECKSUM_AT + 4] = b"\0\0\0\0"
    return crc32c(0xFFFFFFFF, bytes(block))


@dataclass(frozen=True)
class XattrEntry:
    offset: int  # of the entry header in the image
    name_index: int
    name: bytes
    value_offset: int
    value: bytes


def _inode_location(image: Path, path: str, dump: Path) -> tuple[int, int, int]:
    """(nid, inode size, xattr size) of ``path`` as dump.erofs reports them."""
    proc = subprocess.run([str(dump), f"--path=/{path.lstrip('/')}", str(image)],
                          capture_output=True, text=True, check=False)
    nid = re.search(r"NID:\s*(\d+)", proc.stdout)
    sizes = re.search(r"Inode size:\s*(\d+)\s+Xattr size:\s*(\d+)", proc.stdout)
    if proc.returncode != 0 or not nid or not sizes:
        raise HarnessError(f"dump.erofs cannot find {path} in {image}: "
                           f"{(proc.stderr or proc.stdout).strip()[-400:]}")
    return int(nid.group(1)), int(sizes.group(1)), int(sizes.group(2))


def xattr_entries(image: Path, path: str, dump: Path) -> list[XattrEntry]:
    data = image.read_bytes()
    blkszbits = data[SUPERBLOCK_OFFSET + BLKSZBITS_AT]
    meta_blkaddr = struct.unpack_from("<I", data, SUPERBLOCK_OFFSET + META_BLKADDR_AT)[0]
    nid, inode_size, xattr_size = _inode_location(image, path, dump)
    if xattr_size == 0:
        return []
    start = (meta_blkaddr << blkszbits) + nid * 32 + inode_size
    shared_count = data[start + 4]
    pos, end = start + 12 + 4 * shared_count, start + xattr_size
    out = []
    while pos + 4 <= end:
        name_len, name_index, value_size = struct.unpack_from("<BBH", data, pos)
        name = data[pos + 4:pos + 4 + name_len]
        value_offset = pos + 4 + name_len
        out.append(XattrEntry(pos, name_index, name, value_offset,
                              data[value_offset:value_offset + value_size]))
        pos += (4 + name_len + value_size + 3) & ~3
    return out


def fingerprint_entry(image: Path, path: str, dump: Path) -> XattrEntry:
    for entry in xattr_entries(image, path, dump):
        if entry.name_index & LONG_PREFIX and entry.value.startswith(DIGEST_TAG):
            return entry
    raise HarnessError(f"{path} in {image} has no fingerprint xattr (a long-prefix entry "
                       f"whose value starts with {DIGEST_TAG.decode()})")


def _write(image: Path, offset: int, data: bytes) -> None:
    with image.open("r+b") as fh:
        fh.seek(offset)
        fh.write(data)
        fh.seek(0)
        head = fh.read(1 << 16)
        compat = struct.unpack_from("<I", head, SUPERBLOCK_OFFSET + COMPAT_AT)[0]
        if compat & COMPAT_SB_CHKSUM:
            fh.seek(SUPERBLOCK_OFFSET + CHECKSUM_AT)
            fh.write(struct.pack("<I", superblock_checksum(head)))


def _xattr_area(image: Path, path: str, dump: Path) -> tuple[int, int]:
    data = image.read_bytes()
    blkszbits = data[SUPERBLOCK_OFFSET + BLKSZBITS_AT]
    meta_blkaddr = struct.unpack_from("<I", data, SUPERBLOCK_OFFSET + META_BLKADDR_AT)[0]
    nid, inode_size, xattr_size = _inode_location(image, path, dump)
    return (meta_blkaddr << blkszbits) + nid * 32 + inode_size, xattr_size


def copy_missing_fingerprint(source: Path, target: Path, path: str, dump: Path) -> bool:
    """mkfs.erofs 1.9's rebuild mode (an image merged from others, which become its
    devices) sizes each file's inline xattr area for the fingerprint but leaves the entry
    out: its other xattrs are there, followed by zeroes where the fingerprint belongs. Copy
    the area from the source image the file came from, when ``target`` has no fingerprint
    there, ``source`` has one, and the areas are of one size. Whether it did."""
    at, size = _xattr_area(target, path, dump)
    src_at, src_size = _xattr_area(source, path, dump)
    if size == 0 or src_size != size:
        return False
    if any(e.value.startswith(DIGEST_TAG) for e in xattr_entries(target, path, dump)):
        return False
    if not any(e.value.startswith(DIGEST_TAG) for e in xattr_entries(source, path, dump)):
        return False
    _write(target, at, source.read_bytes()[src_at:src_at + size])
    return True


def strip_fingerprint(image: Path, path: str, dump: Path) -> None:
    """Make ``path`` an unfingerprinted file: its digest entry becomes a ``user.`` xattr."""
    entry = fingerprint_entry(image, path, dump)
    _write(image, entry.offset + 1, bytes([INDEX_USER]))


def forge_fingerprint(image: Path, path: str, value: bytes, dump: Path) -> None:
    """Give ``path`` another file's fingerprint value (same length: digests are fixed-size)."""
    entry = fingerprint_entry(image, path, dump)
    if len(value) != len(entry.value):
        raise HarnessError(f"forged fingerprint for {path} is {len(value)} bytes; the entry "
                           f"holds {len(entry.value)}")
    _write(image, entry.value_offset, value)
