"""Fixtures for the VM-level tests of the harness (helpers live in vmhelpers.py)."""

from vmhelpers import isolated_tmp

__all__ = ["isolated_tmp"]
