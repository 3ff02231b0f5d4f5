"""Operations side by side on mounts of one domain, the windows held open (harness/races/):
while two processes on two CPUs mount, unmount, remount, read, fault, advise, collapse,
reclaim and look up at once, every byte read is right, every error is one the model
allows, and once they stop the mount table, the files, sharing and the count of EROFS
inodes are as before. Every race `make races` ever wrote a report for replays.

The smoke here is a fixed handful of cells; `make races` runs every pair.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import BORROWED_INODE_BUG, found_params
from harness.campaign.found import known_finds, other_known_finds, which_known
from harness.erofs.tools import ErofsUtils
from harness.guest.session import GuestSession
from harness.races.cells import CellResult, CellRunner, build_images
from harness.races.found import REPLAY_SECONDS, found_reports, load_found
from harness.races.ops import Cell, Pair

pytestmark = pytest.mark.requires_kernel("page_cache_share")

SMOKE_SEED = 20261206
UNMOUNT_ATTEMPTS = 4  # runs of the unmount-under-a-reader cell (the bug shows in the first)
# Windows the suite's own bugs came through, one cell each: an unmount under its reader, a
# lazy unmount under a mapping's faults, a first lookup while the twin's mount comes and
# goes, reclaim under a reader of the shared cache, the last close beside an unmount.
SMOKE = [
    Cell(Pair("umount", "read"), "one-mount", "lz4", ("block", "block"), False, 2.0),
    Cell(Pair("umount_lazy", "mmap_fault"), "one-mount", "plain", ("block", "block"), False,
         2.0),
    Cell(Pair("mount", "lookup_cold"), "twins", "plain", ("block", "block"), True, 2.0),
    Cell(Pair("reclaim", "read"), "two-mounts", "plain", ("block", "block"), False, 2.0),
    Cell(Pair("close_last", "umount"), "two-mounts", "lz4", ("block", "file"), False, 2.0),
    Cell(Pair("dontneed", "collapse"), "twins", "plain", ("block", "block"), False, 2.0),
]


def _problems(result: CellResult, known: dict[str, re.Pattern[str]]) -> list[str]:
    """What fails the cell: nothing when its failure is a known bug's."""
    return [] if which_known(result.failure(), known) is not None else result.problems


@pytest.mark.fast
def test_operations_side_by_side_keep_bytes_errors_sharing_and_inode_counts(
        guest_session: GuestSession, erofs_tools: ErofsUtils,
        measure: Callable[..., None]) -> None:
    known = known_finds(guest_session.vm.kernel, "race")
    runner = CellRunner(guest_session, build_images(erofs_tools))
    results = list(runner.run(SMOKE, SMOKE_SEED))
    assert [r.cell for r in results] == SMOKE, "the guest did not run every cell"
    failed = {r.cell.id: _problems(r, known) for r in results}
    assert not any(failed.values()), "\n".join(
        f"{cell}:\n  " + "\n  ".join(problems) for cell, problems in failed.items() if problems)
    measure(race_overlaps=sum(r.overlaps for r in results))
    # Both sides ran and met: a cell whose sides never overlapped tested nothing.
    idle = [r.cell.id for r in results if r.overlaps == 0]
    assert not idle, f"no overlapping calls in {idle}: {[r.raw for r in results]}"
    assert not runner.wideners_missing, runner.wideners_missing
    # The model's sharing check ran where the cell has two mounts that share.
    checked = [r for r in results if r.raw.get("sharing")]
    assert len(checked) >= 3, [r.raw.get("sharing") for r in results]


@pytest.mark.known_bug(**BORROWED_INODE_BUG)
@pytest.mark.parametrize("target,layout,sources", [
    ("two-mounts", "lz4", ("block", "file")),
    ("twins", "plain", ("block", "block")),
], ids=["two-mounts-lz4", "twins-plain"])
def test_unmounting_a_mount_while_its_twin_is_read_leaves_no_busy_inode(
        guest_session: GuestSession, erofs_tools: ErofsUtils, target: str, layout: str,
        sources: tuple[str, str]) -> None:
    """One side unmounts a mount after looking the file up; the other reads the same
    content through a mount of the same domain, missing the cache each time. The reader
    must be served through its own mount: the unmount finds no busy inode, nothing oopses,
    and afterwards the EROFS inode count is back where it was."""
    cell = Cell(Pair("umount", "read"), target, layout, sources, False, 4.0)
    runner = CellRunner(guest_session, build_images(erofs_tools))
    for attempt in range(UNMOUNT_ATTEMPTS):
        results = list(runner.run([cell], attempt))
        assert results and not results[0].problems, (
            f"{cell.id}, attempt {attempt + 1}:\n  " + "\n  ".join(
                results[0].problems if results else ["no result"]))
        assert results[0].overlaps > 0, results[0].raw


def _found() -> list[object]:
    # A replay on a kernel with the borrowed-inode bug may meet it beside its own failure.
    return found_params(found_reports(), pytest.mark.known_bug(**BORROWED_INODE_BUG))


FOUND_REPORTS = _found()
if FOUND_REPORTS:  # no replay test at all, rather than one skipped for an empty set
    @pytest.mark.parametrize("report", FOUND_REPORTS)
    def test_found_race_replays(report: Path, guest_session: GuestSession,
                                erofs_tools: ErofsUtils) -> None:
        """The cell of a race report, run until its failure shows or REPLAY_SECONDS have
        passed: on a kernel with the bug it shows (the test fails), on a healthy one every
        run is clean."""
        cell, _ = load_found(report)
        others = other_known_finds(guest_session.vm.kernel, report)
        runner = CellRunner(guest_session, build_images(erofs_tools))
        started, attempt = time.monotonic(), 0
        while attempt == 0 or time.monotonic() - started < REPLAY_SECONDS:
            results = list(runner.run([cell], attempt))
            assert results, f"{report.name}: the guest gave no result for {cell.id}"
            result, when = results[0], (f"{cell.id}, attempt {attempt + 1} "
                                        f"({time.monotonic() - started:.0f} s in)")
            problems = _problems(result, others)
            assert not problems, f"{when}:\n  " + "\n  ".join(problems)
            if result.spoils_guest:
                # Another known bug came first and left the guest unfit for more attempts
                # (its mounts busy, its probe killed): the replay cannot decide, and says so
                # with that bug's own text, which only that bug's mark accepts.
                raise AssertionError(
                    f"{when}: the known bug of {which_known(result.failure(), others)} came "
                    f"first; no attempt after it means anything:\n  "
                    + "\n  ".join(result.problems))
            attempt += 1

