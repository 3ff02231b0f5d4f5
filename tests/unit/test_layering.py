"""The import graph of harness/ follows the pipeline: a package imports only packages of
its own layer or below, and no modules import each other in a circle."""

from __future__ import annotations

import ast
from pathlib import Path

import harness

PACKAGE = Path(harness.__file__).parent
# Lowest first. A module may import from its own layer and the layers before it.
LAYERS: list[set[str]] = [
    {"core"},
    {"kernel", "erofs"},
    {"guestimage"},
    {"vm"},
    {"guest"},
    {"pipeline", "results", "campaign"},
    {"plugin", "repro", "matrix", "bench", "explore", "hostile",
     "coverage", "savings", "layouts", "races"},
    {"review"},  # the coverage run and the results of the layer below
    {"cli", "__main__"},
]


def _unit(module: str) -> str:
    """harness.kernel.spec -> kernel; harness.pipeline -> pipeline."""
    return module.split(".")[1]


def _layer(unit: str) -> int:
    for index, units in enumerate(LAYERS):
        if unit in units:
            return index
    raise AssertionError(f"harness/{unit} is in no layer of {__file__}: place it")


def _imports() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        if "helpers" in rel.parts or (rel.name == "__init__" and len(rel.parts) == 1):
            continue
        name = ".".join(p for p in rel.parts if p != "__init__")
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and \
                    node.module.startswith("harness."):
                found.add(node.module)
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name.startswith("harness."))
        graph[name] = found
    return graph


def test_no_module_imports_a_higher_layer() -> None:
    wrong = [f"{mod} ({_unit(mod)}) imports {dep} ({_unit(dep)})"
             for mod, deps in _imports().items() for dep in deps
             if _layer(_unit(dep)) > _layer(_unit(mod))]
    assert not wrong, "imports that point upward:\n" + "\n".join(sorted(wrong))


def test_the_import_graph_has_no_circle() -> None:
    graph = _imports()
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> None:
        if node in path:
            raise AssertionError("import circle: " + " -> ".join([*path[path.index(node):],
                                                                   node]))
        if node in done:
            return
        for dep in sorted(graph.get(node, ())):
            visit(dep, [*path, node])
        done.add(node)

    for module in sorted(graph):
        visit(module, [])
