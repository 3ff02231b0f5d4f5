"""Booting unpacked: the PVH note is recognised, a bzImage's payload is unpacked and checked
against the size the kernel's build appends, and anything unexpected keeps the bzImage."""

from __future__ import annotations

import gzip
import lzma
import struct
from pathlib import Path

import pytest

from harness.core import cache
from harness.kernel.kernel import Kernel
from harness.kernel.pvh import (
    booted_through_pvh,
    bzimage_payload,
    decompress_payload,
    has_pvh_entry,
    pvh_image,
)
from harness.kernel.spec import parse_kernel_spec


def elf_with_notes(notes: list[tuple[bytes, int, bytes]]) -> bytes:
    """A minimal ELF64 file: its header, one PT_NOTE program header, the notes."""
    body = b""
    for name, kind, desc in notes:
        name += b"\0"
        body += struct.pack("<III", len(name), len(desc), kind)
        body += name.ljust((len(name) + 3) // 4 * 4, b"\0") + desc.ljust(
            (len(desc) + 3) // 4 * 4, b"\0")
    header = bytearray(64)
    header[:5] = b"\x7fELF\x02"
    struct.pack_into("<Q", header, 0x20, 64)  # e_phoff
    struct.pack_into("<HH", header, 0x36, 56, 1)  # e_phentsize, e_phnum
    phdr = bytearray(56)
    struct.pack_into("<I", phdr, 0, 4)  # PT_NOTE
    struct.pack_into("<Q", phdr, 0x08, 64 + 56)
    struct.pack_into("<Q", phdr, 0x20, len(body))
    return bytes(header) + bytes(phdr) + body


PVH_ELF = elf_with_notes([(b"Xen", 6, b"linux"), (b"Xen", 18, b"\x00\x00\x00\x01")])


def bzimage(payload: bytes, setup_sects: int = 3) -> bytes:
    """A bzImage's shape: setup sectors with the header, then the payload at an offset."""
    image = bytearray((setup_sects + 1) * 512 + 0x40)
    image[0x1f1] = setup_sects
    image[0x202:0x206] = b"HdrS"
    struct.pack_into("<II", image, 0x248, 0x40, len(payload))
    return bytes(image) + payload + b"\0" * 64


def appended(packed: bytes, size: int) -> bytes:
    return packed + struct.pack("<I", size)  # what the kernel's size_append adds


def test_the_pvh_note_is_found_among_other_notes(tmp_path: Path) -> None:
    (tmp_path / "pvh").write_bytes(PVH_ELF)
    (tmp_path / "plain").write_bytes(elf_with_notes([(b"Xen", 6, b"linux"),
                                                     (b"GNU", 18, b"1234")]))
    (tmp_path / "bz").write_bytes(bzimage(b"x" * 100))
    assert has_pvh_entry(tmp_path / "pvh")
    assert not has_pvh_entry(tmp_path / "plain")  # type 18 from another owner is not it
    assert not has_pvh_entry(tmp_path / "bz")


@pytest.mark.parametrize("pack", [lambda d: appended(lzma.compress(d, format=lzma.FORMAT_XZ),
                                                     len(d)),
                                  lambda d: gzip.compress(d)], ids=["xz", "gzip"])
def test_a_payload_unpacks_to_the_size_it_declares(tmp_path: Path, pack: object) -> None:
    data = PVH_ELF * 50
    (tmp_path / "bz").write_bytes(bzimage(pack(data)))  # type: ignore[operator]
    assert decompress_payload(bzimage_payload(tmp_path / "bz")) == data


def test_a_size_mismatch_or_an_unknown_format_is_refused() -> None:
    data = b"kernel" * 1000
    with pytest.raises(ValueError, match="unpacked 6000 bytes where the image says 5999"):
        decompress_payload(appended(lzma.compress(data, format=lzma.FORMAT_XZ), 5999))
    with pytest.raises(ValueError, match="a compression this harness does not unpack"):
        decompress_payload(appended(b"\x02\x21\x4c\x18" + data, len(data)))


def test_not_a_bzimage_is_named(tmp_path: Path) -> None:
    (tmp_path / "k").write_bytes(b"\0" * 4096)
    with pytest.raises(ValueError, match=r"k: not a bzImage"):
        bzimage_payload(tmp_path / "k")


def test_a_kernel_boots_unpacked_only_when_it_has_the_entry(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cache, "cache_root", lambda: tmp_path / "cache")
    with_entry, without = tmp_path / "a.bz", tmp_path / "b.bz"
    with_entry.write_bytes(bzimage(appended(lzma.compress(PVH_ELF), len(PVH_ELF))))
    plain = elf_with_notes([(b"Xen", 6, b"linux")])
    without.write_bytes(bzimage(appended(lzma.compress(plain), len(plain))))
    kernel = Kernel(spec=parse_kernel_spec("path:a"),
                    release="1", vmlinuz=with_entry, modules_dir=None,
                    origin="mine")
    booted = booted_through_pvh(kernel)
    assert booted.bzimage == with_entry and booted.vmlinuz == pvh_image(with_entry)
    assert booted.vmlinuz.read_bytes() == PVH_ELF and "PVH" in booted.origin
    assert booted_through_pvh(booted) == booted  # already unpacked: left alone
    other = Kernel(spec=parse_kernel_spec("path:b"), release="1", vmlinuz=without, modules_dir=None)
    assert booted_through_pvh(other) == other  # no entry point: the bzImage boots
