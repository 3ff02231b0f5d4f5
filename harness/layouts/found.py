"""A layout finding as a report: ``reports/found/layout-<id>.yaml``.

It carries everything to build the example again: the trees (as the segments the harness
makes them from, and as a base64 tar.gz with a shell script, so a reader can rebuild the
images with nothing but tar and mkfs.erofs), each layout, the exact mkfs.erofs command,
the read ranges and methods, and the failure. ``make repro`` replays it through
``testcases/test_generated_layouts.py::test_found_layout_replays``.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import tempfile
from pathlib import Path
from typing import Any

import yaml

from harness.campaign.found import deliberate_break, found_report, save_found
from harness.campaign.runner import FOUND
from harness.core.errors import SpecError
from harness.core.paths import PROJECT
from harness.kernel.spec import KernelSpec
from harness.layouts.build import image_uuid
from harness.layouts.check import Example
from harness.layouts.mkfs import Layout
from harness.layouts.trees import Tree, write_tar, write_tree

REPLAY_TEST = "testcases/test_generated_layouts.py::test_found_layout_replays"
INLINE_TAR_LIMIT = 256 << 10  # bytes of base64 a report carries its trees in


def example_dict(example: Example) -> dict[str, Any]:
    return {"tree_a": example.tree_a.as_dict(), "layout_a": example.layout_a.as_dict(),
            "tree_b": example.tree_b.as_dict(), "layout_b": example.layout_b.as_dict(),
            "cuts_a": {k: [list(c) for c in v] for k, v in example.cuts_a.items()},
            "cuts_b": {k: [list(c) for c in v] for k, v in example.cuts_b.items()},
            "methods": list(example.methods), "reader": example.reader,
            "other_domain": example.other_domain}


def example_from_dict(raw: dict[str, Any]) -> Example:
    def cuts(value: dict[str, Any]) -> dict[str, list[tuple[int, int]]]:
        return {str(k): [(int(a), int(b)) for a, b in v] for k, v in (value or {}).items()}
    return Example(Tree.from_dict(raw["tree_a"]), Layout.from_dict(raw["layout_a"]),
                   Tree.from_dict(raw["tree_b"]), Layout.from_dict(raw["layout_b"]),
                   cuts(raw.get("cuts_a", {})), cuts(raw.get("cuts_b", {})),
                   tuple(raw["methods"]), int(raw["reader"]), bool(raw["other_domain"]))


def _tar_b64(tree: Tree) -> str | None:
    """The tree as the base64 of a gzipped tar (None when too big to carry): the tar that
    --tar layouts give mkfs, with the root as "." and xattrs as PAX records, which GNU tar
    restores with --xattrs (holes come back as zeros)."""
    with tempfile.TemporaryDirectory(prefix="layout-report.") as tmp:
        root = Path(tmp) / "tree"
        root.mkdir()
        write_tree(tree, root)
        write_tar(tree, root, Path(tmp) / "t.tar")
        raw = io.BytesIO()
        with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
            gz.write((Path(tmp) / "t.tar").read_bytes())
        text = base64.b64encode(raw.getvalue()).decode()
    return text if len(text) <= INLINE_TAR_LIMIT else None


def _rebuild(name: str, tree: Tree, layout: Layout, encoded: str | None) -> str:
    """A shell script that makes the image again with tar and mkfs.erofs alone."""
    args = " ".join(layout.argv(Path("hints") if layout.hints else None,
                                Path("blob.img") if layout.blobdev else None))
    lines = [f"# image {name}: run in an empty directory"]
    if encoded is None:
        lines.append("# (the tree is too big to carry here: make it with the harness)")
    else:
        lines.append(f"base64 -d <<'EOF' | gunzip > tree.tar\n{encoded}\nEOF")
        if not layout.tar:
            lines.append("mkdir tree && tar xpf tree.tar -C tree --xattrs --xattrs-include='*'")
    if layout.hints:
        lines.append("printf '%s\\n' " + " ".join(f"'{h.line()}'" for h in layout.hints)
                     + " > hints")
    source = "tree.tar" if layout.tar else "tree"
    lines.append(f"mkfs.erofs {args} -T0 -U{image_uuid(tree, layout)} image.erofs {source}")
    return "\n".join(lines) + "\n"


def found_id(kernel: str, example: Example, failure: str) -> str:
    blob = json.dumps([kernel, example_dict(example), failure.splitlines()[0]],
                      sort_keys=True)
    return f"layout-{hashlib.sha256(blob.encode()).hexdigest()[:10]}"


MUTATION_FOUND = PROJECT / "reports" / "mutations" / "layouts"
FOUND_DIRS = (FOUND, MUTATION_FOUND)


def found_reports() -> list[Path]:
    """Every report make layouts wrote: kernel bugs, and the deliberate breaks it caught
    (on a healthy kernel those examples must read right)."""
    return sorted(path for directory in FOUND_DIRS for path in directory.glob("layout-*.yaml"))


def write_found(spec: KernelSpec, seed: int, example: Example, failure: str, directory: Path,
                *, examples: int, seconds: float, shrunk: bool) -> Path:
    """Write the report (into ``directory``; what a tree built with patches gave is the
    deliberate break's, in reports/mutations/layouts/, replayed as the explorer's are)."""
    kernel = str(spec)
    if deliberate_break(spec) is not None and directory.resolve() == FOUND.resolve():
        directory = MUTATION_FOUND
    ident = found_id(kernel, example, failure)
    report = found_report(spec, f"layouts: {failure.splitlines()[0][:150]}",
                          f"make layouts KERNEL={kernel} SEED={seed} (after {examples} "
                          f"examples, {seconds / 60:.1f} min"
                          f"{', shrunk' if shrunk else ', not shrunk'})",
                          f"{REPLAY_TEST}[{ident}]", 900, directory)
    report["layout"] = {**example_dict(example), "failure": failure}
    report["rebuild"] = {"a": _rebuild("a", example.tree_a, example.layout_a,
                                       _tar_b64(example.tree_a)),
                         "b": _rebuild("b", example.tree_b, example.layout_b,
                                       _tar_b64(example.tree_b))}
    path = save_found(directory, ident,
                      "# Found by `make layouts`: two images of a generated tree, mounted on "
                      "every source,\n# plain and sharing. `make repro REPORT=<this file>` "
                      "replays it; rebuild: has\n# the shell commands that make the images "
                      "without the harness.\n", report)
    return path


def load_found(path: Path) -> tuple[Example, str]:
    """The example and failure of a layout report; a report that is not one is an error
    that names it."""
    try:
        raw = yaml.safe_load(path.read_text())["layout"]
        return example_from_dict(raw), str(raw.get("failure", ""))
    except (KeyError, TypeError, ValueError, IndexError, yaml.YAMLError) as exc:
        raise SpecError(f"{path}: not a make layouts report: its layout: section lacks or "
                        f"mangles {exc!r} (see harness/layouts/found.py for the keys)") from exc
