"""The guest image's library list is remembered by the executables' stamps, not re-read
with ldd by every process, and asked again when a remembered library left the host."""

from pathlib import Path

import pytest

from harness.guestimage import build


@pytest.fixture
def ldd_calls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    calls: list[Path] = []
    lib = tmp_path / "libfake.so.1"
    lib.write_bytes(b"lib")

    def fake_ldd(path: Path) -> list[Path]:
        calls.append(path)
        return [lib]

    monkeypatch.setattr(build, "shared_libraries", fake_ldd)
    return calls


def test_libraries_are_read_once_while_the_executables_are_unchanged(
        tmp_path: Path, ldd_calls: list[Path]) -> None:
    exe = tmp_path / "tool"
    exe.write_bytes(b"v1")
    assert build.libraries_of([exe]) == [tmp_path / "libfake.so.1"]
    assert build.libraries_of([exe]) == [tmp_path / "libfake.so.1"]
    assert ldd_calls == [exe]
    exe.write_bytes(b"version 2")  # another size: another stamp
    build.libraries_of([exe])
    assert ldd_calls == [exe, exe]


def test_a_remembered_library_that_left_the_host_is_looked_up_again(
        tmp_path: Path, ldd_calls: list[Path]) -> None:
    exe = tmp_path / "tool"
    exe.write_bytes(b"v1")
    build.libraries_of([exe])
    (tmp_path / "libfake.so.1").unlink()
    with pytest.raises(build.ToolMissing, match=r"libfake\.so\.1"):
        build.libraries_of([exe])
    assert ldd_calls == [exe, exe]
