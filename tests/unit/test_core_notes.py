"""The guest probe's reader of a core dump's NT_FILE note (what the mapping-name test's
verdict rests on), on a core built here byte by byte."""

from __future__ import annotations

import struct
from collections.abc import Callable
from types import ModuleType


def _note(name: bytes, ntype: int, desc: bytes) -> bytes:
    def pad(b: bytes) -> bytes:
        return b + bytes(-len(b) % 4)
    return struct.pack("<III", len(name), len(desc), ntype) + pad(name) + pad(desc)


def _core(notes: bytes) -> bytes:
    """An ELF64 header, one PT_LOAD and one PT_NOTE program header, then the notes."""
    phoff, phentsize = 64, 56
    offset = phoff + 2 * phentsize
    header = bytearray(64)
    header[:4] = b"\x7fELF"
    struct.pack_into("<Q", header, 0x20, phoff)
    struct.pack_into("<HH", header, 0x36, phentsize, 2)
    load = struct.pack("<IIQQQQQQ", 1, 0, 0, 0, 0, 0, 0, 0)
    note = struct.pack("<IIQQQQQQ", 4, 0, offset, 0, 0, len(notes), len(notes), 4)
    return bytes(header) + load + note + notes


def test_nt_file_names_map_each_start_address_to_its_name(
        guest_import: Callable[[str], ModuleType]) -> None:
    names = [b"/mnt/a/four-mib", b"/"]
    entries = [(0x7F0000000000, 0x7F0000400000, 0), (0x7F1000000000, 0x7F1000001000, 2)]
    desc = struct.pack("<QQ", len(entries), 4096)
    desc += b"".join(struct.pack("<QQQ", *e) for e in entries) + b"\0".join(names) + b"\0"
    prstatus = _note(b"CORE\0", 1, bytes(336))
    core = _core(prstatus + _note(b"CORE\0", 0x46494C45, desc))
    assert guest_import("pcprobe.cores")._nt_file_names(core) == {0x7F0000000000: "/mnt/a/four-mib",
                                             0x7F1000000000: "/"}


def test_a_core_without_nt_file_names_nothing(
        guest_import: Callable[[str], ModuleType]) -> None:
    cores = guest_import("pcprobe.cores")
    assert cores._nt_file_names(_core(_note(b"CORE\0", 1, bytes(336)))) == {}
