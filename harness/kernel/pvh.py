"""Boot without decompression: the uncompressed kernel through its PVH entry point.

A bzImage unpacks itself before the kernel starts; under TCG that is emulated code working
through 14 MiB of zstd (Debian) or more, about a second of every boot. A kernel built with
``CONFIG_PVH`` carries an ELF note (Xen's PHYS32_ENTRY) that QEMU's ``-kernel`` recognises
in an uncompressed vmlinux, and it then jumps straight to that entry point, with the
initramfs and the command line as usual. Tree builds make that vmlinux anyway; for a
bzImage (Debian's) the compressed payload is unpacked here once per image and cached.

Anything unexpected (no PVH note, a compression we do not unpack, a size that does not
match) keeps the bzImage: the result is the same guest, only slower to start.
"""

from __future__ import annotations

import logging
import lzma
import shutil
import struct
import subprocess
import zlib
from dataclasses import replace
from pathlib import Path

from harness.core import cache
from harness.kernel.kernel import Kernel

log = logging.getLogger(__name__)

PT_NOTE = 4
XEN_ELFNOTE_PHYS32_ENTRY = 18  # the note QEMU's ELF loader looks for


def has_pvh_entry(path: Path) -> bool:
    """Whether ``path`` is an x86-64 ELF kernel with a PVH entry point note."""
    with path.open("rb") as fh:
        head = fh.read(64)
        if len(head) < 64 or head[:4] != b"\x7fELF" or head[4] != 2:  # ELFCLASS64
            return False
        phoff, = struct.unpack_from("<Q", head, 0x20)
        phentsize, phnum = struct.unpack_from("<HH", head, 0x36)
        for i in range(phnum):
            fh.seek(phoff + i * phentsize)
            phdr = fh.read(56)
            if len(phdr) < 56 or struct.unpack_from("<I", phdr, 0)[0] != PT_NOTE:
                continue
            offset, = struct.unpack_from("<Q", phdr, 0x08)
            size, = struct.unpack_from("<Q", phdr, 0x20)
            fh.seek(offset)
            if _notes_have_pvh(fh.read(size)):
                return True
    return False


def _notes_have_pvh(notes: bytes) -> bool:
    pos = 0
    while pos + 12 <= len(notes):
        namesz, descsz, kind = struct.unpack_from("<III", notes, pos)
        name = notes[pos + 12:pos + 12 + namesz].rstrip(b"\0")
        if name == b"Xen" and kind == XEN_ELFNOTE_PHYS32_ENTRY:
            return True
        pos += 12 + (namesz + 3) // 4 * 4 + (descsz + 3) // 4 * 4
    return False


def bzimage_payload(bzimage: Path) -> bytes:
    """The compressed kernel inside a bzImage, from the boot protocol's setup header."""
    data = bzimage.read_bytes()
    if len(data) < 0x250 or data[0x202:0x206] != b"HdrS":
        raise ValueError(f"{bzimage}: not a bzImage (no HdrS setup header)")
    setup_sects = data[0x1f1] or 4
    offset, length = struct.unpack_from("<II", data, 0x248)
    start = (setup_sects + 1) * 512 + offset
    if not length or start + length > len(data):
        raise ValueError(f"{bzimage}: payload {offset}+{length} outside the file")
    return data[start:start + length]


def decompress_payload(payload: bytes) -> bytes:
    """Unpack a kernel payload. The kernel's build appends the unpacked size (32-bit little
    endian) to every format, so the result is checked against it."""
    expected, = struct.unpack_from("<I", payload, len(payload) - 4)
    if payload.startswith(b"\x28\xb5\x2f\xfd"):  # zstd: not in this Python's stdlib
        zstd = shutil.which("zstd")
        if zstd is None:
            raise ValueError("the payload is zstd and no zstd tool is installed")
        out = subprocess.run([zstd, "-dc"], input=payload[:-4], capture_output=True,
                             check=True).stdout
    elif payload.startswith(b"\xfd7zXZ\x00"):
        out = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(payload)
    elif payload.startswith(b"\x1f\x8b"):
        out = zlib.decompressobj(wbits=31).decompress(payload)
    else:
        raise ValueError(f"a compression this harness does not unpack (magic "
                         f"{payload[:4].hex()})")
    if len(out) % (1 << 32) != expected:
        raise ValueError(f"unpacked {len(out)} bytes where the image says {expected}")
    return out


def pvh_image(bzimage: Path) -> Path | None:
    """The uncompressed vmlinux of ``bzimage`` if it has a PVH entry point (cached by the
    bzImage's content), else None."""
    key = cache.content_key(["pvh-vmlinux", cache.file_sha256(bzimage)])

    def build(out: Path) -> dict[str, object]:
        try:
            vmlinux = decompress_payload(bzimage_payload(bzimage))
        except (ValueError, OSError, lzma.LZMAError, zlib.error,
                subprocess.CalledProcessError) as exc:
            log.info("%s: booting the bzImage itself: %s", bzimage, exc)
            return {"pvh": False, "why": str(exc)}
        (out / "vmlinux").write_bytes(vmlinux)
        if not has_pvh_entry(out / "vmlinux"):
            (out / "vmlinux").unlink()
            return {"pvh": False, "why": "no PVH entry point (CONFIG_PVH is off)"}
        return {"pvh": True}

    entry = cache.get_or_build("pvh-kernels", key, build)
    return entry / "vmlinux" if cache.read_meta(entry).get("pvh") else None


def booted_through_pvh(kernel: Kernel) -> Kernel:
    """``kernel`` set to boot its unpacked vmlinux at the PVH entry when its bzImage allows,
    keeping the bzImage's path; unchanged otherwise."""
    if kernel.bzimage is not None or has_pvh_entry(kernel.vmlinuz):
        return kernel
    vmlinux = pvh_image(kernel.vmlinuz)
    if vmlinux is None:
        return kernel
    return replace(kernel, vmlinuz=vmlinux, bzimage=kernel.vmlinuz,
                   origin=f"{kernel.origin}; booted unpacked, at its PVH entry")
