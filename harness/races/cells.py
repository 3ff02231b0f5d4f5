"""Running cells in a guest: the images and the reference bytes uploaded once, the cells
handed to the guest helper (harness/guest/helpers/races.py) in batches, and each cell's
answer judged: what its sides saw, the checks after the pair, and the kernel's reports.

Used by the campaign (`make races`), by the smoke and the replays of found races in
``testcases/test_races.py``.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from paramiko.ssh_exception import SSHException

from harness.core.cache import cache_root
from harness.core.errors import HarnessError
from harness.core.paths import CATALOG
from harness.erofs.images import BuiltImage, build_image, content_bytes, load_catalog
from harness.erofs.tools import ErofsUtils
from harness.guest.probe import PROBE_SOURCE
from harness.guest.session import GuestSession
from harness.races.ops import Cell, cell_config
from harness.vm.machine import VMState
from harness.vm.splats import splats_seen

RACES_SOURCE = PROBE_SOURCE.parent / "races.py"
# layout -> (first image, second image): twins under other names, owners and modes
IMAGES = {"plain": ("races", "races-renamed"), "lz4": ("races-lz4", "races-renamed-lz4")}
# Where each image's files are (the guest helper's "trees").
TREES = {
    "first": {"large": "data/large", "medium": "data/medium", "link": "link",
              "link_target": "data/large", "cold_dir": "cold", "cold_pattern": "n%03d",
              "cold_count": 400, "xattr": ["user.harness", "races"]},
    "second": {"large": "big", "medium": "mid", "link": "ln", "link_target": "big",
               "cold_dir": "names", "cold_pattern": "m%03d", "cold_count": 400,
               "xattr": ["user.harness", "races"]},
}
# The data files' bytes (seed and size in the catalog's races trees).
REFS = {"large": (400, 8 << 20), "medium": (401, 256 << 10)}
DELAY_MS = 4  # each I/O of a block source held this long by dm-delay
RECLAIM_BYTES = 2 << 20  # taken from the sides' cgroup every 50 ms while a cell runs
CONFIG = "/run/races-config.json"  # the batch of cells the guest helper runs
BATCH = 12  # cells per guest helper run (its config is a file; a lost guest loses one batch)
HELPER_SLACK = 75.0  # seconds beyond a cell's own before a silent helper counts as lost


def reference_files() -> dict[str, Path]:
    """The data files' bytes as files (in the cache, made once), uploaded beside the images:
    the sides compare what they read with them."""
    folder = cache_root() / "races-refs"
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, (seed, size) in REFS.items():
        path = folder / f"{name}-{seed}-{size}.ref"
        if not path.exists() or path.stat().st_size != size:
            partial = path.with_suffix(".partial")
            partial.write_bytes(content_bytes(seed, size))
            partial.replace(path)
        out[name] = path
    return out


def build_images(tools: ErofsUtils) -> dict[str, BuiltImage]:
    catalog = load_catalog(CATALOG)
    return {name: build_image(catalog.image(name), tools)
            for pair in IMAGES.values() for name in pair}


@dataclass
class CellResult:
    """One cell's answer. ``problems`` is what fails it (wrong bytes, errors the model does
    not allow, a failed check after the pair, a leak, a kernel report, a lost guest)."""
    cell: Cell
    raw: dict[str, Any]
    problems: list[str] = field(default_factory=list)

    @property
    def overlaps(self) -> int:
        return int(self.raw.get("overlaps", 0))

    def failure(self) -> str:
        """The text a signature is matched against: the cell, then every problem."""
        return f"{self.cell.id}: " + "\n".join(self.problems)

    @property
    def spoils_guest(self) -> bool:
        """Whether the cells after this one need a new guest: it was lost or hung, the
        kernel said anything (a report, a busy inode: its state is no longer what the next
        cell assumes), or a side died."""
        return ("lost" in self.raw or bool(self.raw.get("stuck"))
                or any(p.startswith(("kernel", "set-up of the cell", "left from before",
                                     "remove dm device")) or " crashed: " in p
                       for p in self.problems))


class CellRunner:
    """The guest side of a run of cells: one per guest session."""

    def __init__(self, session: GuestSession, images: dict[str, BuiltImage]) -> None:
        self.session = session
        self.images = images
        self.wideners_missing: dict[str, str] = {}
        self._config: dict[str, Any] | None = None

    def _setup(self) -> dict[str, Any]:
        if self._config is not None:
            return self._config
        session = self.session
        session.need_modules("erofs", "loop")
        try:
            session.need_modules("dm_delay")
        except Exception as exc:  # a kernel without device mapper: the widener is off
            self.wideners_missing["dm_delay"] = f"modprobe dm_delay failed: {exc}"
        uploads = {name: session.upload(image.path, f"{image.key}.erofs")
                   for name, image in self.images.items()}
        refs = {name: session.upload(path, path.name) for name, path in reference_files().items()}
        self._config = {"images": uploads, "refs": refs, "trees": TREES,
                        "delay_ms": DELAY_MS, "reclaim_bytes": RECLAIM_BYTES}
        return self._config

    def _cell(self, cell: Cell) -> dict[str, Any]:
        first, second = IMAGES[cell.layout]
        config = cell_config(cell, {"first": first, "second": second})
        config["wideners"] = [w for w in config["wideners"]
                              if w not in self.wideners_missing]
        return config

    def run(self, cells: list[Cell], seed: int,
            started: Callable[[Cell], None] = lambda cell: None) -> Iterator[CellResult]:
        """Each cell's result, as the guest finishes it. A guest that dies or hangs ends
        the run with a result for the cell it was in."""
        base = self._setup()
        vm = self.session.vm
        for at in range(0, len(cells), BATCH):
            batch = cells[at:at + BATCH]
            by_id = {cell.id: cell for cell in batch}
            config = {**base, "seed": seed, "cells": [self._cell(c) for c in batch]}
            console_from = vm.console_offset()
            current: Cell | None = None
            done: set[str] = set()
            # The helper prints a line per cell: silence longer than a cell, its checks and
            # the helper's own wait for a stuck side (30 s) means the guest is lost.
            budget = max(c.seconds for c in batch) + HELPER_SLACK
            finished = False
            try:
                vm.run(f"cat > {CONFIG}", stdin=json.dumps(config).encode(), check=True)
                for line in self._lines(budget):
                    if line.get("done"):
                        finished = True
                        break
                    cell = by_id[line["cell"]]
                    if line.get("started"):
                        current = cell
                        started(cell)
                        continue
                    result = judge(cell, line, vm.console.since(console_from)
                                   if vm.console else "")
                    console_from = vm.console_offset()
                    current = None
                    done.add(cell.id)
                    yield result
                    if line.get("stuck"):
                        return
                if not finished:
                    raise EOFError("the guest helper ended without finishing its cells")
            except (OSError, TimeoutError, ValueError, EOFError, SSHException,
                    HarnessError) as exc:
                yield self._lost(batch, done, current, exc, console_from)
                return

    def _lines(self, budget: float) -> Iterator[dict[str, Any]]:
        """The helper's lines. Opening its channel is tried twice: the guest's SSH server
        has refused a new channel now and then (the guest answering at once after), and
        that is no verdict on the kernel; a second refusal is."""
        for attempt in (1, 2):
            lines = self.session.agent.stream(RACES_SOURCE, [CONFIG], budget)
            try:
                first = next(lines)
            except StopIteration:
                return
            except SSHException:
                if attempt == 2:
                    raise
                time.sleep(2.0)
                continue
            yield first
            yield from lines
            return

    def _lost(self, batch: list[Cell], done: set[str], current: Cell | None,
              exc: BaseException, console_from: int) -> CellResult:
        """The result of the cell the guest was lost in (or, lost between cells, of the
        next one, saying so), with what the console and, if it still answers, the kernel
        log say."""
        vm = self.session.vm
        between = current is None
        cell = current or next(c for c in batch if c.id not in done)
        alive = vm.state is VMState.RUNNING and vm.responsive()
        console = vm.console.since(console_from) if vm.console else ""
        log = vm.run("dmesg | tail -n 80", check=False, forensic=True).stdout if alive else ""
        lost = CellResult(cell, {"lost": repr(exc)})
        notable = dict.fromkeys(m.group(0).strip() for m in NOTABLE.finditer(log + "\n" + console))
        splats = splats_seen(console, log)
        # A guest that answers, said nothing, and refused the channel of a cell not begun:
        # the harness could not reach it, which is no verdict on the kernel.
        lost.raw["unreachable"] = bool(between and alive and not notable and not splats
                                       and isinstance(exc, SSHException))
        lost.problems.append(
            f"the guest {'stopped answering' if alive else 'died'} "
            f"{'before the cell began' if between else 'during the cell'}: {exc!r}")
        lost.problems += [f"kernel: {line}" for line in notable]
        lost.problems += [str(s) for s in splats]
        if alive and log:
            lost.raw["dmesg_tail"] = log.splitlines()[-40:]
        return lost


# Kernel lines that are no report of their own (no splat starts with them) but say what
# went wrong: they are problems too, so that a signature can name them.
NOTABLE = re.compile(r"VFS: Busy inodes after unmount[^\n]*|list_(?:add|del) corruption[^\n]*")


def judge(cell: Cell, raw: dict[str, Any], console: str) -> CellResult:
    result = CellResult(cell, raw, list(raw.get("problems", [])))
    log = "\n".join(raw.get("kmsg", []))
    notable = dict.fromkeys(m.group(0).strip() for m in NOTABLE.finditer(log + "\n" + console))
    result.problems += [f"kernel: {line}" for line in notable]
    result.problems += [str(s) for s in splats_seen(console, log)]
    return result
