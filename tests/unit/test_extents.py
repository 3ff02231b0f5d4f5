"""FIEMAP judged against the image (harness/layouts/extents.py) on made-up devices, and the
guest's FIEMAP call (pcprobe.filecalls.fiemap) paging through a file of many extents."""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

from harness.guest.probe import Extent
from harness.layouts.build import Built, FileFacts
from harness.layouts.extents import extent_problems
from harness.layouts.mkfs import Layout
from harness.layouts.trees import Node, Segment, Tree

LAST = Extent.LAST
AT = 8192  # where the made-up image keeps the file's bytes


def _built(layout: int = 0) -> tuple[Built, bytes, list[bytes]]:
    node = Node("f", "file", (Segment("text", 5000, 1), Segment("hole", 3000),
                              Segment("random", 2000, 2)))
    tree = Tree((Node("", "dir"), node, Node("h", "hardlink", target="f")))
    built = Built("a", Layout(), tree, files={"f": FileFacts(1, layout, node.size),
                                               "h": FileFacts(1, layout, node.size)})
    data = node.data()
    device = bytes(AT) + data + bytes(65536 - AT - len(data))
    return built, data, [device]


def test_extents_that_hold_the_files_bytes_pass() -> None:
    built, data, devices = _built()
    assert extent_problems(built, "f", [Extent(0, AT, len(data), LAST)], devices) == []
    # A hard link is judged by its target's bytes.
    assert extent_problems(built, "h", [Extent(0, AT, len(data), LAST)], devices) == []
    # A hole may be left out: it holds only zeros.
    split = [Extent(0, AT, 5000, 0), Extent(8000, AT + 8000, 2000, LAST)]
    assert extent_problems(built, "f", split, devices) == []
    # An extent may run past the end of the file (the end of its block or chunk).
    assert extent_problems(built, "f", [Extent(0, AT, 12288, LAST)], devices) == []


@pytest.mark.parametrize(("extents", "words"), [
    ([Extent(0, AT + 1, 10000, LAST)], "said to lie at byte 8193, which holds other bytes"),
    ([Extent(0, AT, 4096, LAST)], "bytes 4096..9999 hold data, and no extent maps them"),
    ([Extent(0, AT, 5000, 0)], "bytes 8000..9999 hold data"),
    ([Extent(0, AT, 6000, 0), Extent(4096, AT + 4096, 5904, LAST)], "overlaps the one before"),
    ([Extent(0, AT, 10000, 0)], "extent 0 of 1 is not flagged last"),
    ([Extent(0, AT, 5000, LAST), Extent(5000, AT + 5000, 5000, LAST)], "is flagged last"),
    ([Extent(0, AT, 10000, 0), Extent(12288, 0, 4096, LAST)], "past the end of the file"),
    ([Extent(0, AT, 0, LAST)], "has length 0"),
])
def test_extents_that_do_not_hold_the_files_bytes_are_named(extents: list[Extent],
                                                            words: str) -> None:
    built, _, devices = _built()
    problems = extent_problems(built, "f", extents, devices)
    assert problems and all(p.startswith("f: fiemap: ") for p in problems)
    assert any(words in p for p in problems), problems


def test_what_has_no_address_is_not_judged_by_its_bytes() -> None:
    built, data, devices = _built()
    unknown = [Extent(0, 0, len(data), LAST | Extent.UNKNOWN)]
    assert extent_problems(built, "f", unknown, devices) == []
    # A metabox tail (-m): no device address, given as 0.
    inline = [Extent(0, AT, 8192, 0),
              Extent(8192, 0, 1808, LAST | Extent.DATA_INLINE | Extent.NOT_ALIGNED)]
    assert extent_problems(built, "f", inline, devices) == []
    assert extent_problems(built, "f", "Operation not supported (errno 95)", devices) == \
        ["f: fiemap: Operation not supported (errno 95)"]


def test_compressed_extents_must_start_inside_a_device() -> None:
    built, data, devices = _built(layout=3)
    assert extent_problems(built, "f", [Extent(0, 4096, len(data), LAST)], devices) == []
    far = extent_problems(built, "f", [Extent(0, 1 << 20, len(data), LAST)], devices)
    assert len(far) == 1 and "past the end of every device" in far[0]
    # Their data must still be mapped.
    assert "no extent maps them" in extent_problems(
        built, "f", [Extent(0, 4096, 4096, LAST)], devices)[0]


def test_the_guest_asks_again_until_the_last_extent(
        guest_import: Callable[[str], ModuleType], monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    filecalls = guest_import("pcprobe.filecalls")
    total, calls = 300, []

    def ioctl(fd: int, request: int, buf: bytearray) -> int:
        assert request == filecalls.FS_IOC_FIEMAP
        start, _, _, _, count, _ = filecalls.FIEMAP_HEAD.unpack_from(buf, 0)
        calls.append(start)
        first = start // 4096
        mapped = min(count, total - first)
        struct.pack_into("=I", buf, 20, mapped)
        for i in range(mapped):
            n = first + i
            filecalls.FIEMAP_EXTENT.pack_into(
                buf, filecalls.FIEMAP_HEAD.size + i * filecalls.FIEMAP_EXTENT.size,
                n * 4096, 1 << 20 | n, 4096, 0, 0, 1 if n == total - 1 else 0, 0, 0, 0)
        return 0

    monkeypatch.setattr(filecalls.fcntl, "ioctl", ioctl)
    (tmp_path / "f").write_bytes(b"x")
    got = filecalls.fiemap([str(tmp_path / "f"), str(tmp_path / "missing")])
    extents = got[str(tmp_path / "f")]
    assert len(extents) == total and calls == [0, 256 * 4096]
    assert extents[-1] == [299 * 4096, 1 << 20 | 299, 4096, 1]
    assert "No such file" in got[str(tmp_path / "missing")]
