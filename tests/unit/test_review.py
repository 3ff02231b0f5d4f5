"""make review without a guest: the series and its base-commit, the changed lines on both
sides, the selection by coverage per test file, the verdict, and the reply and KCIDB JSON
(validated with kcidb-io) of a made-up review."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.core.errors import HarnessError, SpecError
from harness.review.base import Base, choose_base, patched_texts
from harness.review.checks import CHECKPATCH_TOTAL, PatchCheck
from harness.review.lines import changed_lines
from harness.review.reply import Review, kcidb, reply_text, write_outputs
from harness.review.select import CORE, select
from harness.review.series import read_mbox, touched_files
from harness.review.verdict import Status, judge

PATCH = """From 1111111111111111111111111111111111111111 Mon Sep 17 00:00:00 2001
From: A Developer <dev@example.org>
Message-Id: <20261207-fix-{n}@example.org>
Subject: [PATCH {n}/2] erofs: change line {n}

Why.

Signed-off-by: A Developer <dev@example.org>
---
diff --git a/fs/erofs/a.c b/fs/erofs/a.c
--- a/fs/erofs/a.c
+++ b/fs/erofs/a.c
@@ -{n},1 +{n},2 @@
-line {n}
+line {n} changed
+an added line after {n}
"""
COVER = """From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001
From: A Developer <dev@example.org>
Message-Id: <20261207-cover@example.org>
Subject: [PATCH 0/2] erofs: two changes
 to a.c

The cover letter.

---
base-commit: 0123456789abcdef0123456789abcdef01234567
change-id: 20261207-two
"""
BASE = "".join(f"line {n}\n" for n in range(1, 21))


def _mbox(tmp_path: Path) -> Path:
    path = tmp_path / "series.mbox"
    path.write_text(COVER + PATCH.format(n=3) + PATCH.format(n=10))
    return path


def test_the_series_its_cover_and_its_base_commit(tmp_path: Path) -> None:
    series = read_mbox(_mbox(tmp_path))
    assert series.subject == "[PATCH 0/2] erofs: two changes to a.c"
    assert series.base_commit == "0123456789abcdef0123456789abcdef01234567"
    assert series.message_id == "20261207-cover@example.org"
    assert [p.subject for p in series.patches] == ["[PATCH 3/2] erofs: change line 3",
                                                   "[PATCH 10/2] erofs: change line 10"]
    assert touched_files(series.patches[0]) == ["fs/erofs/a.c"]
    assert len(series.patchset_hash) == 64
    twice = tmp_path / "two-bases.mbox"
    twice.write_text(COVER + COVER.replace("0123", "4567") + PATCH.format(n=3))
    with pytest.raises(SpecError, match="more than one base-commit"):
        read_mbox(twice)


def test_changed_lines_on_each_side_and_a_patch_that_does_not_apply(tmp_path: Path) -> None:
    series = read_mbox(_mbox(tmp_path))
    after = patched_texts({"fs/erofs/a.c": BASE}, list(series.patches))["fs/erofs/a.c"]
    assert after is not None and "line 10 changed\nan added line after 10\n" in after
    changed = changed_lines("fs/erofs/a.c", BASE, after)
    assert changed.base == (3, 10)  # the replaced lines of the base
    assert changed.added == (3, 4, 11, 12)  # the new lines of the patched file
    inserted = changed_lines("f", "a\nb\n", "a\nnew\nb\n")
    assert inserted.base == (1, 2) and inserted.added == (2,)
    with pytest.raises(HarnessError, match=r"does not apply.*first rejected hunk"):
        patched_texts({"fs/erofs/a.c": "other\n"}, list(series.patches))


def test_the_selection_takes_what_executed_a_changed_line_or_a_neighbour(
        tmp_path: Path) -> None:
    series = read_mbox(_mbox(tmp_path))
    after = patched_texts({"fs/erofs/a.c": BASE}, list(series.patches))["fs/erofs/a.c"]
    changed = [changed_lines("fs/erofs/a.c", BASE, after),
               changed_lines("mm/filemap.c", "x\n", "y\n")]
    by_test_file = {"test_near.py": {"fs/erofs/a.c": [6]},  # 3 lines from line 3
                    "test_far.py": {"fs/erofs/a.c": [15]},
                    "test_hit.py": {"fs/erofs/a.c": [10], "fs/erofs/b.c": [1]},
                    "boot": {"fs/erofs/a.c": [3]}}
    code = {"fs/erofs/a.c": set(range(1, 21)), "fs/erofs/b.c": {1}}
    chosen = select(changed, by_test_file, code)
    assert chosen.files == [*CORE, "test_hit.py", "test_near.py"]
    assert chosen.why == {"test_near.py": ["fs/erofs/a.c:6"],
                          "test_hit.py": ["fs/erofs/a.c:10"]}
    # Line 3 runs at boot only: executed, so not listed; nothing is unexecuted.
    assert chosen.unexecuted == {} and chosen.unmeasured == ["mm/filemap.c"]
    none = select(changed[:1], {"test_far.py": {"fs/erofs/a.c": [15]}}, code)
    assert none.files == list(CORE) and none.unexecuted == {"fs/erofs/a.c": [3, 10]}


def _case(nodeid: str, outcome: str, reason: str = "") -> dict[str, object]:
    return {"nodeid": nodeid, "outcome": outcome, "reason": reason}


def test_the_verdict_names_fixed_broken_and_stale_marks() -> None:
    base = {"cases": [_case("testcases/test_a.py::fixed", "xfailed"),
                      _case("testcases/test_a.py::broken", "passed"),
                      _case("testcases/test_a.py::stale", "xfailed"),
                      _case("testcases/test_a.py::same", "passed"),
                      _case("testcases/test_other.py::unselected", "passed")]}
    patched = {"cases": [_case("testcases/test_a.py::fixed", "passed"),
                         _case("testcases/test_a.py::broken", "failed"),
                         _case("testcases/test_a.py::stale", "failed",
                               "[XPASS(strict)] the known bug 'x' is expected"),
                         _case("testcases/test_a.py::same", "passed")]}
    added = {"fs/erofs/a.c": {"executed": [3], "not_executed": [4]}}
    verdict = judge(base, patched, ["test_a.py"], added)
    assert verdict.status is Status.REGRESSIONS
    assert verdict.fixed == [("testcases/test_a.py::fixed", "xfailed")]
    assert verdict.broken == [("testcases/test_a.py::broken", "failed")]
    assert verdict.marks_stale == ["testcases/test_a.py::stale"]
    assert verdict.missing == [] and verdict.added_counts == (1, 2)
    clean = judge(base, {"cases": patched["cases"][:1]}, ["test_a.py"], {})
    assert clean.status is Status.NO_REGRESSIONS
    assert judge(base, {"cases": []}, ["test_a.py"], {}).status is Status.NO_VERDICT


def test_the_reply_and_a_valid_kcidb_json(tmp_path: Path) -> None:
    series = read_mbox(_mbox(tmp_path))
    base = Base("tree:", tmp_path, None, "Debian's linux-source-7.3 (no KERNEL_TREE given)",
                ("base-commit 0123456789ab could not be used: no KERNEL_TREE was given",))
    checks = [PatchCheck(1, series.patches[0].subject, builds=True,
                         checkpatch=["WARNING: line length of 101 exceeds 100 columns"],
                         checkpatch_totals=(0, 1, 0)),
              PatchCheck(2, series.patches[1].subject, builds=False,
                         build_error="fs/erofs/a.c:3: error: expected ';'")]
    review = Review(series, base, checks, "make review MBOX=series.mbox")
    text = reply_text(review)
    assert "[1/2] [PATCH 3/2] erofs: change line 3" in text
    assert "applies, builds; checkpatch --strict: 0 errors, 1 warning, 0 checks" in text
    assert "does NOT build" in text and "No verdict" in text
    assert "Not honoured: base-commit 0123456789ab" in text
    data = kcidb(review)
    assert [b["status"] for b in data["builds"]] == ["PASS", "FAIL"]
    assert data["checkouts"][0]["patchset_hash"] == series.patchset_hash
    review.patched_cases = [{"nodeid": "testcases/test_a.py::test_x[loop-sharing]",
                             "outcome": "xfailed"}]
    test = kcidb(review)["tests"][0]
    assert test["path"] == "erofs_harness.testcases_test_a.test_x_loop-sharing"
    assert test["status"] == "FAIL"
    assert write_outputs(review, tmp_path) == int(Status.NO_VERDICT)
    assert json.loads((tmp_path / "review.json").read_text())["verdict"]["status"] == \
        "no_verdict"
    assert (tmp_path / "reply.txt").read_text() == text or "Hi," in text


def test_checkpatch_totals_are_read_with_and_without_checks() -> None:
    match = CHECKPATCH_TOTAL.search("total: 1 errors, 2 warnings, 3 checks, 40 lines checked")
    assert match is not None and match.groups() == ("1", "2", "3")
    match = CHECKPATCH_TOTAL.search("total: 0 errors, 0 warnings, 12 lines checked")
    assert match is not None and match.group(3) is None


def test_a_tree_that_is_not_a_kernel_is_named(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=f"KERNEL_TREE={tmp_path}: not a kernel source tree"):
        choose_base(tmp_path, None)


def test_the_whole_suites_run_stands_in_for_the_base_of_a_narrower_selection() -> None:
    from harness.review.run import cases_run
    base = {"config": {"kernel": "k"}, "cases": [
        {"nodeid": "testcases/test_fiemap.py::test_a[x]", "outcome": "xfailed"},
        {"nodeid": "testcases/test_fiemap.py::test_b", "outcome": "passed"},
        {"nodeid": "testcases/test_lifecycle.py::test_c", "outcome": "passed"}]}
    patched = {"cases": [{"nodeid": "testcases/test_fiemap.py::test_a[x]", "outcome": "passed"}]}
    narrowed = cases_run(base, patched)
    assert narrowed["config"] == {"kernel": "k"}
    assert [c["nodeid"] for c in narrowed["cases"]] == ["testcases/test_fiemap.py::test_a[x]"]
    verdict = judge(narrowed, patched, ["test_fiemap.py"], {})
    assert verdict.fixed == [("testcases/test_fiemap.py::test_a[x]", "xfailed")]
    assert verdict.missing == []  # the cases -k left out are not "run on one side only"


@pytest.mark.parametrize(("args", "only"), [
    (["-k", "fiemap or fsoffset"], True), (["-kfiemap"], True), (["-m", "fast"], True),
    (["--deselect=testcases/test_a.py::t", "-k", "x"], True), (["-k"], False),
    (["-x", "-k", "fiemap"], False), (["--ignore-known-bugs"], False),
    (["--kernel-debug"], False)])
def test_only_a_pure_selection_lets_the_whole_suites_run_answer_for_the_base(
        args: list[str], only: bool) -> None:
    from harness.review.run import selects_only
    assert selects_only(args) is only
