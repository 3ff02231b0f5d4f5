import logging
from pathlib import Path

import pytest

from harness.core import cache
from harness.core.errors import CacheCorrupt


def _builder(calls: list[int]):  # type: ignore[no-untyped-def]
    def build(out: Path) -> dict[str, object]:
        calls.append(1)
        (out / "data.bin").write_bytes(b"payload")
        return {"n": len(calls)}
    return build


def test_entry_is_built_once_and_reused(tmp_path: Path) -> None:
    calls: list[int] = []
    first = cache.get_or_build("kind", "k1", _builder(calls), root=tmp_path)
    second = cache.get_or_build("kind", "k1", _builder(calls), root=tmp_path)
    assert first == second and len(calls) == 1
    assert cache.read_meta(first) == {"n": 1}


def test_corrupted_entry_is_detected_and_rebuilt(tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    calls: list[int] = []
    entry = cache.get_or_build("kind", "k1", _builder(calls), root=tmp_path)
    (entry / "data.bin").write_bytes(b"bit rot")
    with pytest.raises(CacheCorrupt, match=r"data\.bin is missing or does not match"):
        cache.verify(entry)
    with caplog.at_level(logging.WARNING):
        entry = cache.get_or_build("kind", "k1", _builder(calls), root=tmp_path)
    assert (entry / "data.bin").read_bytes() == b"payload" and len(calls) == 2
    assert "building it again" in caplog.text


def test_failed_build_leaves_nothing_behind(tmp_path: Path) -> None:
    def broken(out: Path) -> dict[str, object]:
        (out / "half").write_text("x")
        raise RuntimeError("build failed")
    with pytest.raises(RuntimeError):
        cache.get_or_build("kind", "k2", broken, root=tmp_path)
    assert [p.name for p in (tmp_path / "kind").iterdir()] == ["k2.lock"]


def test_content_key_depends_on_every_part() -> None:
    assert cache.content_key(["a", "b"]) != cache.content_key(["ab"])
    assert cache.content_key(["a", b"b"]) == cache.content_key(["a", "b"])


def test_forget_removes_the_entry_so_that_it_is_built_again(tmp_path: Path) -> None:
    calls: list[int] = []
    cache.get_or_build("kind", "k1", _builder(calls), root=tmp_path)
    cache.forget("kind", "k1", root=tmp_path)
    cache.forget("other-kind", "k1", root=tmp_path)  # nothing there: no error
    cache.get_or_build("kind", "k1", _builder(calls), root=tmp_path)
    assert len(calls) == 2
