"""Which tree a series is tested on, in the order a maintainer would pick it: the tree at the
series' ``base-commit`` when the tree has that commit; otherwise ``KERNEL_TREE`` as it is;
otherwise Debian's source of the default kernel. What could not be honoured is said. Also
the base's text of each file the series touches, and the patched text (the series applied
to a scratch copy of those files alone)."""

from __future__ import annotations

import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from harness.core.errors import HarnessError, SpecError
from harness.kernel.ksource import debian_source_tree
from harness.kernel.patches import Patch, apply_patch, first_rejected_hunk, is_git_tree


@dataclass(frozen=True)
class Base:
    spec: str  # the kernel spec of the base (tree:..., without the build options)
    tree: Path  # where its files are (the user's tree, or Debian's unpacked source)
    ref: str | None  # the commit, when the base is one
    described: str  # for the reply: what it is and why it was chosen
    not_honoured: tuple[str, ...] = field(default=())


def _has_commit(tree: Path, ref: str) -> bool:
    return subprocess.run(["git", "-C", str(tree), "cat-file", "-e", f"{ref}^{{commit}}"],
                          capture_output=True, check=False).returncode == 0


def choose_base(tree: Path | None, base_commit: str | None) -> Base:
    """``tree``: KERNEL_TREE (None: not given); ``base_commit``: BASE= or the trailer's."""
    if tree is not None:
        tree = tree.expanduser().resolve()
        if not (tree / "Makefile").is_file() or not (tree / "fs" / "erofs").is_dir():
            raise SpecError(f"KERNEL_TREE={tree}: not a kernel source tree (no Makefile and "
                            f"fs/erofs)")
        git = is_git_tree(tree)
        if base_commit and git and _has_commit(tree, base_commit):
            return Base(f"tree:{tree},ref={base_commit}", tree, base_commit,
                        f"{tree} at the series' base-commit {base_commit[:12]}")
        why = (f"base-commit {base_commit[:12]} is not in {tree}" if base_commit and git else
               f"{tree} is not a git tree, so base-commit {base_commit[:12]} cannot be "
               f"checked out" if base_commit else "the series names no base-commit")
        return Base(f"tree:{tree}", tree, None, f"{tree} as it is ({why})",
                    (why,) if base_commit else ())
    source, package = debian_source_tree()
    why = (f"base-commit {base_commit[:12]} could not be used: no KERNEL_TREE was given"
           if base_commit else "")
    return Base("tree:", source, None, f"Debian's {package} (no KERNEL_TREE given)",
                (why,) if why else ())


def base_text(base: Base, path: str) -> str | None:
    """The base's text of ``path`` (None: the base has no such file)."""
    if base.ref is not None:
        proc = subprocess.run(["git", "-C", str(base.tree), "show", f"{base.ref}:{path}"],
                              capture_output=True, text=True, check=False)
        return proc.stdout if proc.returncode == 0 else None
    file = base.tree / path
    return file.read_text(errors="replace") if file.is_file() else None


def patched_texts(texts: dict[str, str | None], patches: list[Patch]) -> dict[str, str | None]:
    """The series applied (patch -p1) to a scratch copy of the files it touches: each file's
    text after the last patch (None: deleted). A patch that does not apply raises, with the
    first rejected hunk."""
    with tempfile.TemporaryDirectory(prefix="erofs-review-") as tmp:
        root = Path(tmp)
        for path, text in texts.items():
            if text is not None:
                (root / path).parent.mkdir(parents=True, exist_ok=True)
                (root / path).write_text(text)
        for patch in patches:
            proc = apply_patch(root, patch.text)
            if proc.returncode != 0:
                raise HarnessError(f"patch {patch.index} \"{patch.subject}\" does not apply "
                                   f"to the base; first rejected hunk in "
                                   f"{first_rejected_hunk(patch, proc.stdout + proc.stderr)}")
        return {path: (root / path).read_text(errors="replace") if (root / path).is_file()
                else None for path in texts}
