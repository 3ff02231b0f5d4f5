"""Fixtures shared by the unit tests."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from types import ModuleType

import pytest

from harness.guest.agent import HELPERS_DIR


@pytest.fixture
def guest_import(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], ModuleType]:
    """Import a guest helper module (``pcprobe.cores``, ``treecheck``) as the guest does: with
    the helpers folder first on sys.path, where the probe's package and its neighbours
    import one another by name."""
    monkeypatch.syspath_prepend(str(HELPERS_DIR))
    return importlib.import_module
