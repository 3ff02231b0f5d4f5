"""Draws that follow from the seed alone.

Hypothesis (6.170) sometimes draws an integer or a string from a pool of constants it
collects from every local module in sys.modules, rebuilt whenever that set changes. So a
fixed seed drew other examples depending on which harness modules a worker happened to have
imported, and on the text of every one of them: the generated-layouts smoke checked other
layouts from one run of the suite to the next. Inside ``seed_alone()`` the pool holds no
local constants (hypothesis's own, private, interface: requirements.txt pins the version).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from unittest import mock

from hypothesis.internal.conjecture import providers


@contextmanager
def seed_alone() -> Iterator[None]:
    """Within: what hypothesis draws depends on the seed and the strategies only."""
    providers.CONSTANTS_CACHE.cache.clear()
    try:
        # An empty pool of constants: what the module's own Constants() makes.
        empty = getattr(providers, "Constants")  # noqa: B009 (not in the module's exports)
        with mock.patch.object(providers, "_get_local_constants", empty):
            yield
    finally:
        providers.CONSTANTS_CACHE.cache.clear()
