"""Each probe operation is declared once, in Batch: its wire name is the method's name and a
key of the guest's OPS table, and Probe's method of that name sends exactly the operation
Batch queues (a batch of one), so the two can never drift apart again."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest

from harness.guest.probe import Batch, Probe, ProbeError

# Probe methods that are not one operation: the batch itself, a read that may fail (a
# Batch.read with may_fail), and a cleanup that runs a shell command.
NOT_OPERATIONS = {"batch", "try_read", "remove_cgroups"}
# Two Batch methods of one wire operation: release, with and without a pageout first.
WIRE_NAME = {"release_after_pageout": "release"}



def _public(cls: type) -> list[str]:
    return [n for n, f in inspect.getmembers(cls, inspect.isfunction) if not n.startswith("_")]


def _arguments(function: Any) -> list[Any]:
    """A value of the right kind for each required parameter."""
    values = []
    for p in list(inspect.signature(function).parameters.values())[1:]:
        if p.default is not inspect.Parameter.empty or p.kind is p.VAR_POSITIONAL:
            continue
        kind = str(p.annotation)
        values.append([] if "list" in kind else 1 if kind == "int" else "error"
                      if p.name == "kind" else f"/{p.name}")
    return values


def _queued(name: str, args: list[Any]) -> dict[str, Any]:
    batch = Batch()
    getattr(batch, name)(*args)
    assert len(batch.pending) == 1
    return batch.pending[0].op


def test_every_operation_is_named_on_the_wire_as_its_batch_method(
        guest_import: Callable[[str], ModuleType]) -> None:
    sent = {}
    for name in _public(Batch):
        op = _queued(name, _arguments(getattr(Batch, name)))
        assert op["op"] == WIRE_NAME.get(name, name), f"Batch.{name} sends {op['op']}"
        sent[name] = op["op"]
    guest = set(guest_import("pcprobe.server").OPS)
    assert set(sent.values()) == guest, "Batch and the guest's OPS disagree"


class _Recording(Probe):
    def __init__(self) -> None:
        super().__init__(None, None)  # type: ignore[arg-type]
        self.sent: list[dict[str, Any]] = []
        self._server = object()  # type: ignore[assignment]  # end_holders asks only then

    def _ask(self, ops: list[dict[str, Any]]) -> list[dict[str, Any]]:
        self.sent.extend(ops)
        return [{"error": "recorded", "errno": 5} for _ in ops]


@pytest.mark.parametrize("name", [n for n in _public(Probe) if n not in NOT_OPERATIONS])
def test_a_probe_call_is_the_batch_operation_of_its_name_alone(name: str) -> None:
    assert name in _public(Batch), f"Probe.{name} has no Batch operation"
    args = _arguments(getattr(Probe, name))
    probe = _Recording()
    try:
        getattr(probe, name)(*args)
    except ProbeError:
        pass
    assert probe.sent == [_queued(name, args)]
