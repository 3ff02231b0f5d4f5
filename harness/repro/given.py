"""An image as a reporter gave it: a file (raw or gzip), not an entry of the catalog.

It is judged on the host by what it is, never by mounting it there: the EROFS superblock
magic at byte 1024, then ``dump.erofs -s``, whose feature names the verdict shows. Only the
guest mounts it, as it mounts the catalog's images (``Mounter.attempt``).
"""

from __future__ import annotations

import gzip
import hashlib
import subprocess
from pathlib import Path

from harness.core.errors import SpecError
from harness.erofs.images import BuiltImage, ImageSpec
from harness.erofs.tools import ErofsUtils

SUPERBLOCK_OFFSET = 1024
EROFS_MAGIC = bytes.fromhex("e2e1f5e0")  # EROFS_SUPER_MAGIC_V1, little-endian
GZIP_MAGIC = b"\x1f\x8b"


def unpacked(data: bytes) -> bytes:
    """The bytes of an image, gunzipped when gzip wrapped them (a mail's attachment, say)."""
    if data[:2] == GZIP_MAGIC:
        try:
            return gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise SpecError(f"a gzip file that does not unpack: {exc}") from exc
    return data


def is_erofs(data: bytes) -> bool:
    return data[SUPERBLOCK_OFFSET:SUPERBLOCK_OFFSET + 4] == EROFS_MAGIC


def not_an_image(data: bytes) -> str:
    """Why ``data`` is not an EROFS image, in words that help the one who sent it."""
    if len(data) < SUPERBLOCK_OFFSET + 4:
        return f"it has {len(data)} bytes, fewer than an EROFS superblock needs"
    head = data[:16].hex(" ")
    found = data[SUPERBLOCK_OFFSET:SUPERBLOCK_OFFSET + 4].hex()
    return (f"no EROFS magic at byte {SUPERBLOCK_OFFSET} (found {found}, want "
            f"{EROFS_MAGIC.hex()}); it starts with {head}")


def superblock_features(dump: Path, image: Path) -> list[str]:
    """The feature names ``dump.erofs -s`` gives; an image it cannot read is an error."""
    proc = subprocess.run([str(dump), "-s", str(image)], capture_output=True, text=True,
                          check=False, timeout=120)
    if proc.returncode != 0:
        words = (proc.stderr or proc.stdout).strip().splitlines()
        raise SpecError(f"{image}: dump.erofs cannot read it (exit {proc.returncode}): "
                        f"{words[-1] if words else 'no message'}")
    return [name for line in proc.stdout.splitlines() if "features" in line.split(":")[0]
            for name in line.partition(":")[2].split()]


def given_image(path: Path, tools: ErofsUtils, workdir: Path, origin: str) -> BuiltImage:
    """``path`` (raw or gzip) as an image the guest can mount: unpacked into ``workdir``
    under a name made of its hash, checked, and described by its features. ``origin`` (the
    report's file and line) is named in every error."""
    try:
        data = unpacked(path.read_bytes())
    except OSError as exc:
        raise SpecError(f"{origin}: {path}: {exc.strerror}") from exc
    except SpecError as exc:
        raise SpecError(f"{origin}: {path}: {exc}") from exc
    if not is_erofs(data):
        raise SpecError(f"{origin}: {path} is not an EROFS image: {not_an_image(data)}")
    key = "given-" + hashlib.sha256(data).hexdigest()[:20]
    workdir.mkdir(parents=True, exist_ok=True)
    image = workdir / f"{key}.erofs"
    if not image.exists():
        image.write_bytes(data)
    if tools.dump is None:
        raise SpecError(f"{origin}: {path}: {tools.describe()} has no dump.erofs to check it "
                        f"with before the guest mounts it")
    try:
        features = superblock_features(tools.dump, image)
    except SpecError as exc:
        raise SpecError(f"{origin}: {path} ({len(data)} bytes): {exc}") from exc
    spec = ImageSpec(name=path.name, tree="(the reporter's)", files=())
    return BuiltImage(spec, image, None, {"files": [], "given": str(path),
                                         "features": features}, key)
