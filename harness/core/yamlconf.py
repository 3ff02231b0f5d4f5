"""YAML files read strictly: duplicate keys and unknown keys are errors naming file and line.

Config that silently drops a misspelt key is a classic harness complaint; every
YAML file the harness reads goes through ``load_yaml`` and ``check_keys``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from harness.core.errors import SpecError


class _StrictLoader(yaml.SafeLoader):
    pass


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode,
                       deep: bool = False) -> dict[Any, Any]:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise SpecError(f"{key_node.start_mark.name}:{key_node.start_mark.line + 1}: "
                            f"duplicate key {key!r} (first at line {seen[key]})")
        seen[key] = key_node.start_mark.line + 1
    mapping = loader.construct_mapping(node, deep=deep)
    return dict(mapping)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
                              _construct_mapping)


class Located(dict):  # type: ignore[type-arg]
    """A mapping that remembers the file and line of each of its keys."""

    origin: str = ""
    lines: dict[str, int]


def load_yaml(path: Path, text: str | None = None) -> Any:
    """Parse a YAML file; syntax errors and duplicate keys name the file and line."""
    try:
        source = text if text is not None else path.read_text()
    except OSError as exc:
        raise SpecError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        loader = _StrictLoader(source)
        loader.name = str(path)
        try:
            root = loader.get_single_node()
            if root is None:
                return None
            data = loader.construct_document(root)
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise SpecError(f"{where}: invalid YAML: {exc.problem}") from exc
    return _locate(data, root, str(path))


def _locate(data: Any, node: yaml.Node, origin: str) -> Any:
    if isinstance(data, dict) and isinstance(node, yaml.MappingNode):
        out = Located(data)
        out.origin = origin
        out.lines = {}
        for key_node, value_node in node.value:
            key = key_node.value
            out.lines[key] = key_node.start_mark.line + 1
            if key in out:
                out[key] = _locate(out[key], value_node, origin)
        return out
    if isinstance(data, list) and isinstance(node, yaml.SequenceNode):
        return [_locate(item, child, origin) for item, child in zip(data, node.value, strict=True)]
    return data


def where(mapping: Any, key: str) -> str:
    """``file:line`` of key in a mapping from load_yaml (just the file if unknown)."""
    if isinstance(mapping, Located):
        line = mapping.lines.get(key)
        return f"{mapping.origin}:{line}" if line else mapping.origin
    return "<input>"


def check_keys(mapping: Any, allowed: set[str], required: set[str], what: str) -> None:
    """Unknown or missing keys are SpecErrors naming the file and line."""
    if not isinstance(mapping, dict):
        origin = mapping.origin if isinstance(mapping, Located) else "<input>"
        raise SpecError(f"{origin}: {what} must be a mapping")
    for key in mapping:
        if key not in allowed:
            raise SpecError(f"{where(mapping, key)}: unknown key {key!r} in {what} "
                            f"(known: {', '.join(sorted(allowed))})")
    for key in sorted(required - set(mapping)):
        origin = mapping.origin if isinstance(mapping, Located) else "<input>"
        raise SpecError(f"{origin}: {what} lacks the required key {key!r}")
