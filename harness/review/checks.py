"""What the kernel test robot says of each patch: it applies (or the first rejected hunk),
``scripts/checkpatch.pl --strict`` of the tree has these words for it, and the tree builds
with the series applied up to it (bisectability). The prefixes are built with the tree's
plain config in one build directory, so each is an incremental build of what it touched."""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from harness.core.errors import HarnessError
from harness.kernel.patches import Patch, PatchDoesNotApply
from harness.pipeline import kernel_for

CHECKPATCH_TOTAL = re.compile(r"total: (\d+) errors?, (\d+) warnings?, (?:(\d+) checks?, )?")


@dataclass
class PatchCheck:
    index: int
    subject: str
    applies: bool = True
    rejected: str = ""  # the first rejected hunk, when it does not apply
    builds: bool | None = None  # None: not built (an earlier patch did not apply)
    build_error: str = ""
    checkpatch: list[str] = field(default_factory=list)  # its ERROR/WARNING/CHECK blocks
    checkpatch_totals: tuple[int, int, int] = (0, 0, 0)  # errors, warnings, checks
    checkpatch_ran: str = ""  # why it did not run, when it did not

    @property
    def clean(self) -> bool:
        return self.applies and bool(self.builds) and not any(self.checkpatch_totals)


def checkpatch(tree: Path, patch: Patch) -> tuple[list[str], tuple[int, int, int], str]:
    """The tree's checkpatch.pl --strict on one patch: its message blocks, its totals, and
    why it could not run ("" when it ran)."""
    script = tree / "scripts" / "checkpatch.pl"
    if not script.is_file():
        return [], (0, 0, 0), f"{tree} has no scripts/checkpatch.pl"
    proc = subprocess.run(["perl", str(script), "--strict", "--no-color", "--root", str(tree),
                           "-"], input=patch.text, capture_output=True, text=True,
                          check=False, cwd=tree, timeout=300)
    out = proc.stdout
    total = CHECKPATCH_TOTAL.search(out)
    if total is None:
        return [], (0, 0, 0), f"checkpatch.pl said nothing it could be judged by: " \
                              f"{(proc.stderr or out).strip()[-300:]}"
    blocks = [b.strip() for b in out[:total.start()].split("\n\n")
              if re.match(r"(ERROR|WARNING|CHECK):", b.strip())]
    return blocks, (int(total.group(1)), int(total.group(2)), int(total.group(3) or 0)), ""


def check_patches(base_spec: str, mbox: Path, patches: list[Patch],
                  tree: Path) -> list[PatchCheck]:
    """Apply, build and checkpatch each prefix of the series on ``base_spec``, in order; a
    patch that does not apply ends the walk (nothing after it can be judged)."""
    out = []
    for patch in patches:
        check = PatchCheck(patch.index, patch.subject)
        out.append(check)
        check.checkpatch, check.checkpatch_totals, check.checkpatch_ran = \
            checkpatch(tree, patch)
        print(f"review: patch {patch.index}/{len(patches)}: building the tree with the "
              f"series up to it", file=sys.stderr, flush=True)
        try:
            kernel_for(f"{base_spec},patches={mbox},upto={patch.index}")
            check.builds = True
        except PatchDoesNotApply as exc:
            check.applies, check.rejected = False, str(exc)
            break
        except HarnessError as exc:
            check.builds, check.build_error = False, str(exc)[-2000:]
    return out
