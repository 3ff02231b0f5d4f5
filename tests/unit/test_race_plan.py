"""`make races` without a guest: the pair table, the cells a seed gives, what the model says
a cell's two files share, the reports a finding becomes, and the guest helper's overlap
count and error rules (run here on the host: they are plain Python)."""

from __future__ import annotations

import errno
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

from harness.core.errors import HarnessError, SpecError
from harness.kernel.spec import parse_kernel_spec
from harness.races import found
from harness.races.ops import (
    OPS,
    TARGETS,
    WIDENERS,
    Cell,
    Pair,
    cell_config,
    parse_choice,
    parse_pairs,
    plan,
    targets_for,
)

IMAGES = {"first": "races", "second": "races-renamed"}


@pytest.fixture
def races_helper(guest_import: Callable[[str], ModuleType]) -> ModuleType:
    """The guest side of the races (harness/guest/helpers/races.py)."""
    return guest_import("races")


def test_every_unordered_pair_once_with_each_operation_beside_itself() -> None:
    pairs = parse_pairs("")
    n = len(OPS)
    assert len(pairs) == n * (n + 1) // 2
    assert Pair("read", "read") in pairs and Pair("mount", "umount") in pairs
    assert len({frozenset((p.a, p.b)) for p in pairs}) == len(pairs)


def test_pairs_selection_by_pair_in_either_order_or_by_operation() -> None:
    assert parse_pairs("umount+read") == [Pair("umount", "read")]
    assert parse_pairs("read+umount") == [Pair("umount", "read")]
    with_collapse = parse_pairs("collapse")
    assert len(with_collapse) == len(OPS)
    assert all("collapse" in (p.a, p.b) for p in with_collapse)


@pytest.mark.parametrize("text", ["reed+umount", "read+umount+stat", "nothing"])
def test_an_unknown_operation_is_an_error_naming_it(text: str) -> None:
    with pytest.raises(HarnessError, match=r"PAIRS: .*operations: mount"):
        parse_pairs(text)


def test_choices_default_to_all_and_name_the_unknown() -> None:
    assert parse_choice("", WIDENERS, "WIDENERS") == tuple(WIDENERS)
    assert parse_choice("none", WIDENERS, "WIDENERS") == ()
    with pytest.raises(HarnessError, match="WIDENERS: unknown slow"):
        parse_choice("cold,slow", WIDENERS, "WIDENERS")


def test_two_lifecycle_operations_never_share_one_mount_and_two_global_ones_run_once() -> None:
    every = tuple(TARGETS)
    assert "one-mount" not in targets_for(Pair("mount", "umount_lazy"), every)
    assert targets_for(Pair("drop_caches", "reclaim"), every) == ["one-mount"]
    assert targets_for(Pair("read", "umount"), every) == list(every)


def test_a_seed_gives_the_same_cells_and_every_first_mount_is_a_block_device() -> None:
    pairs = parse_pairs("read")
    one = plan(pairs, tuple(TARGETS), 2.0, 7, tuple(WIDENERS))
    assert one == plan(pairs, tuple(TARGETS), 2.0, 7, tuple(WIDENERS))
    assert one != plan(pairs, tuple(TARGETS), 2.0, 8, tuple(WIDENERS))
    assert all(cell.sources[0] == "block" for cell in one)


def _cell(target: str, layout: str = "plain", sources: tuple[str, str] = ("block", "block"),
          swapped: bool = False) -> Cell:
    return Cell(Pair("read", "umount"), target, layout, sources, swapped, 2.0)


@pytest.mark.parametrize("target,layout,sources,model", [
    ("twins", "plain", ("block", "block"), "share"),
    ("twins", "lz4", ("block", "file"), "share"),
    # Uncompressed files are read through other address space operations file-backed.
    ("twins", "plain", ("block", "file"), "private"),
    ("two-mounts", "plain", ("block", "file"), "private"),
    ("two-domains", "plain", ("block", "block"), "private"),
    ("one-mount", "plain", ("block", "block"), "same"),
])
def test_the_model_says_which_cells_share(target: str, layout: str,
                                          sources: tuple[str, str], model: str) -> None:
    assert cell_config(_cell(target, layout, sources), IMAGES)["model"] == model


def test_targets_give_the_mounts_they_name() -> None:
    one = cell_config(_cell("one-mount"), IMAGES)
    assert list(one["mounts"]) == ["m1"] and one["side_mount"] == {"a": "m1", "b": "m1"}
    two = cell_config(_cell("two-mounts"), IMAGES)["mounts"]
    assert two["m1"]["image"] == two["m2"]["image"] == "races"
    twins = cell_config(_cell("twins", swapped=True), IMAGES)["mounts"]
    assert (twins["m1"]["image"], twins["m2"]["image"]) == ("races-renamed", "races")
    domains = cell_config(_cell("two-domains"), IMAGES)["mounts"]
    assert domains["m1"]["options"].endswith("d1") and domains["m2"]["options"].endswith("d2")


def test_a_finding_round_trips_through_its_report(tmp_path: Path) -> None:
    cell = _cell("twins", "lz4", ("block", "file"), True)
    failure = "read+umount@twins: side b (umount): error: umount: EIO"
    path = found.write_found(parse_kernel_spec("debian:7.3"),
                             5, cell, failure, tmp_path, cells_run=3,
                             seconds=90.0, raw={"overlaps": 12, "a_iterations": 4,
                                                "b_iterations": 40})
    assert path.name.startswith("race-") and path.parent == tmp_path
    again, text = found.load_found(path)
    assert again == cell and text == failure
    body = path.read_text()
    assert "test_found_race_replays[" in body and "PAIRS=read+umount" in body


def test_a_report_with_an_unknown_operation_names_the_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "race-bad.yaml"
    path.write_text("race:\n  pair: [read, shred]\n  target: twins\n  layout: plain\n"
                    "  sources: [block, block]\n  swapped: false\n  seconds: 2\n"
                    "  wideners: []\n")
    with pytest.raises(SpecError, match=r"race-bad.yaml: race.pair: 'shred'"):
        found.load_found(path)


def test_the_board_counts_each_overlapping_pair_of_calls_once(races_helper: ModuleType) -> None:
    board = races_helper.Board()

    def call(side: int) -> tuple[int, int]:
        return board.other(side)

    # a: [----a1----]      [a2]
    # b:    [b1] [b2]  [b3]     (b3 ends before a2)
    seen_a1 = call(0)
    board.begin(0)
    board.begin(1)
    board.end(1)
    board.begin(1)
    board.end(1)
    after_a1 = call(0)
    board.end(0)
    board.begin(1)
    board.end(1)
    seen_a2 = call(0)
    board.begin(0)
    board.end(0)
    after_a2 = call(0)
    met_a1 = seen_a1[1] + after_a1[0] - seen_a1[0]
    met_a2 = seen_a2[1] + after_a2[0] - seen_a2[0]
    assert (met_a1, met_a2) == (2, 0)


def test_errors_the_model_allows_and_those_it_does_not(races_helper: ModuleType) -> None:
    helper = races_helper

    class Side:
        def __init__(self, op: str, target: str) -> None:
            self.op, self.mount = op, {"target": target}

    reader, unmounter = Side("read", "/m1"), Side("umount", "/m1")
    elsewhere = Side("umount", "/m2")
    cell: dict[str, object] = {}
    assert helper.allowed(reader, unmounter, cell, errno.ENOENT)
    assert not helper.allowed(reader, unmounter, cell, errno.EIO)
    assert not helper.allowed(reader, elsewhere, cell, errno.ENOENT)
    assert helper.allowed(unmounter, reader, cell, errno.EBUSY)
    assert not helper.allowed(elsewhere, Side("read", "/m1"), cell, errno.EBUSY)
    assert helper.allowed(Side("collapse", "/m1"), reader, cell, errno.EINVAL)


def test_a_busy_inode_line_is_a_problem_a_signature_can_name() -> None:
    from harness.races.cells import judge
    cell = _cell("two-mounts")
    raw = {"problems": [], "kmsg": ["erofs (device dm-0): mounted",
                                    "VFS: Busy inodes after unmount of dm-0 (erofs)"]}
    result = judge(cell, raw, "")
    assert result.problems == ["kernel: VFS: Busy inodes after unmount of dm-0 (erofs)"]
    assert not judge(cell, {"problems": [], "kmsg": ["erofs: mounted"]}, "").problems


@pytest.mark.parametrize("problem,spoilt", [
    ("kernel: VFS: Busy inodes after unmount of dm-0 (erofs)", True),
    ("kernel warning report: WARNING: fs/iomap/buffered-io.c:700", True),
    ("side a (umount) crashed: killed by signal 11, no results", True),
    ("set-up of the cell: [Errno 16] Device or resource busy", True),
    ("side b (read): wrong bytes: /run/races/m2/big (read): the bytes at 0..4096 differ",
     False),
])
def test_a_cell_that_leaves_the_kernel_in_doubt_gets_the_next_cell_a_new_guest(
        problem: str, spoilt: bool) -> None:
    from harness.races.cells import CellResult
    assert CellResult(_cell("twins"), {}, [problem]).spoils_guest is spoilt


def test_two_whole_file_reads_side_by_side_get_three_times_the_seconds() -> None:
    cells = plan(parse_pairs("read+mmap_fault,read+stat"), ("twins",), 2.0, 1, tuple(WIDENERS))
    assert [(c.pair.name, c.seconds) for c in cells] == [("read+mmap_fault", 6.0),
                                                         ("read+stat", 2.0)]
