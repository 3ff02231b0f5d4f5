"""The ledger of waits behind the suite report's split of each case's time."""

from __future__ import annotations

import time

import pytest

from harness.core.waits import WaitLedger
from harness.results.report import CaseResult, Report


def test_nested_waits_count_once_for_the_outermost_kind() -> None:
    ledger = WaitLedger()
    before = ledger.snapshot()
    with ledger.waiting("hotplug"):
        time.sleep(0.02)
        with ledger.waiting("guest"):  # the hot-plug's own guest command
            time.sleep(0.02)
    with ledger.waiting("guest"):
        time.sleep(0.01)
    added = ledger.since(before)
    assert added["hotplug"] >= 0.04 and 0.01 <= added["guest"] < 0.03, added
    assert added["boot"] == 0.0


def test_a_wait_that_raises_still_counts() -> None:
    ledger = WaitLedger()
    with pytest.raises(OSError), ledger.waiting("guest"):
        time.sleep(0.01)
        raise OSError("lost")
    assert ledger.seconds["guest"] >= 0.01
    with ledger.waiting("boot"):  # and the depth is back to 0: the next wait counts
        time.sleep(0.01)
    assert ledger.seconds["boot"] >= 0.01


def test_an_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown kind of wait 'disk'"), \
            WaitLedger().waiting("disk"):
        pass


def test_the_report_splits_case_time_by_kind_and_counts_workers() -> None:
    def case(n: int, worker: str, guest: float, boot: float, total: float) -> CaseResult:
        return CaseResult(f"t.py::test[{n}]", "passed", total, worker=worker,
                          timing={"total": total, "guest": guest, "hotplug": 0.0,
                                  "boot": boot, "harness": total - guest - boot})
    report = Report({"kernel": "k", "accel": "tcg"},
                    [case(0, "gw0", 1.0, 5.0, 7.0), case(1, "gw0", 1.0, 0.0, 1.5),
                     case(2, "gw1", 2.0, 0.0, 2.25), CaseResult("t.py::x", "skipped", 0.0)])
    report.seconds = 9.0
    split = report.time_split()
    assert split["cases"] == 3 and split["workers"] == 2 and split["wall_seconds"] == 9.0
    assert split["boot"] == {"sum": 5.0, "mean": round(5 / 3, 3), "median": 0.0}
    assert split["harness"]["sum"] == 1.8 and split["harness"]["median"] == 0.5
    assert "time per case (3 cases, 2 worker(s), 9 s wall)" in report.table()


def test_a_report_without_timings_has_no_split() -> None:
    assert Report({}, [CaseResult("t.py::x", "passed", 1.0)]).time_split() == {}
