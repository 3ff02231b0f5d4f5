"""remove_tree: a VM's work folder goes, or a warning names what kept it."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from harness.core.tempdirs import remove_tree


def test_a_tree_and_all_it_holds_is_removed(tmp_path: Path) -> None:
    tree = tmp_path / "harness-vm.x"
    (tree / "deep" / "er").mkdir(parents=True)
    (tree / "deep" / "er" / "console.log").write_text("boot")
    remove_tree(tree)
    assert not tree.exists()
    remove_tree(tree)  # already gone: nothing to do, no error


def test_a_tree_that_will_not_go_is_named_with_what_it_holds(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    tree = tmp_path / "harness-vm.x"
    tree.mkdir()
    (tree / "qmp.sock").write_text("")
    monkeypatch.setattr(shutil, "rmtree", lambda *a, **k: None)
    with caplog.at_level(logging.WARNING, logger="harness"):
        remove_tree(tree)
    assert f"could not remove {tree}" in caplog.text and "qmp.sock" in caplog.text
