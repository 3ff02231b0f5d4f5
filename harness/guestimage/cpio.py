"""A writer for the newc cpio format the kernel unpacks as its initramfs.

Written here rather than calling cpio(1) so that owners, modes and device nodes are set
without root and the archive is byte-for-byte reproducible (fixed mtimes, sorted order).
"""

from __future__ import annotations

import stat
from typing import BinaryIO


class CpioWriter:
    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.ino = 1
        self.names: set[str] = set()

    def _header(self, name: str, mode: int, size: int, *, nlink: int = 1,
                rdev: tuple[int, int] = (0, 0)) -> None:
        encoded = name.encode() + b"\0"
        fields = [self.ino, mode, 0, 0, nlink, 0, size, 0, 0, rdev[0], rdev[1],
                  len(encoded), 0]
        self.ino += 1
        header = b"070701" + b"".join(b"%08X" % f for f in fields)
        self.out.write(header + encoded)
        self._pad(len(header) + len(encoded))

    def _pad(self, length: int) -> None:
        self.out.write(b"\0" * ((4 - length % 4) % 4))

    def _claim(self, name: str) -> bool:
        name = name.lstrip("/")
        if name in self.names:
            return False
        self.names.add(name)
        return True

    def directory(self, name: str, mode: int = 0o755) -> None:
        if self._claim(name):
            self._header(name.lstrip("/"), stat.S_IFDIR | mode, 0, nlink=2)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        if self._claim(name):
            self._header(name.lstrip("/"), stat.S_IFREG | mode, len(data))
            self.out.write(data)
            self._pad(len(data))

    def symlink(self, name: str, target: str) -> None:
        if self._claim(name):
            data = target.encode()
            self._header(name.lstrip("/"), stat.S_IFLNK | 0o777, len(data))
            self.out.write(data)
            self._pad(len(data))

    def chardev(self, name: str, major: int, minor: int, mode: int = 0o600) -> None:
        if self._claim(name):
            self._header(name.lstrip("/"), stat.S_IFCHR | mode, 0, rdev=(major, minor))

    def trailer(self) -> None:
        self._header("TRAILER!!!", 0, 0, nlink=1)
