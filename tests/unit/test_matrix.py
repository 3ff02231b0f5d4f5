"""The matrix file, the CI files generated from it, and make compare."""

import json
from pathlib import Path

import pytest

from harness.core.errors import SpecError
from harness.matrix.ciconfig import check_ci_files, render_ci_files
from harness.matrix.run import cell_state, load_matrix, longest_first, summarize_cell
from harness.results.compare import compare, diff_results, load_side

ROOT = Path(__file__).resolve().parents[2]
NIGHTLY = ROOT / "matrix" / "nightly.yaml"


def test_shipped_matrix_has_the_three_debian_kernels() -> None:
    matrix = load_matrix(NIGHTLY)
    assert {c.kernel for c in matrix.cells} >= {"debian:6.12", "debian:7.2", "debian:7.3"}


def test_generated_ci_files_are_in_sync_with_the_matrix() -> None:
    stale = check_ci_files(NIGHTLY)
    assert not stale, f"{stale} are out of date with {NIGHTLY}: run make ci-config"


def test_every_cell_becomes_one_ci_job() -> None:
    matrix = load_matrix(NIGHTLY)
    for text in render_ci_files(NIGHTLY).values():
        for cell in matrix.cells:
            assert cell.name in text


@pytest.mark.parametrize(("text", "message"), [
    ("kernels: {a: 'debian:x'}\nselections: {s: {}}\n", r"m.yaml:1: kernels.a: kernel spec"),
    ("kernels: {a: 'debian:7.3'}\nselections: {s: {marks: x}}\n",
     r":2: unknown key 'marks' in selection 's'"),
    ("kernels: {a: 'debian:7.3'}\nselections: {s: {}}\nexpectations:\n  - {outcome: [passd]}\n",
     r":4: unknown outcome\(s\) \['passd'\]"),
    ("kernels: {a: 'debian:7.3'}\nselections: {s: {}}\nexpectations:\n"
     "  - {kernel: b, outcome: passed}\n", r":4: kernel 'b' matches none of a"),
    ("kernels: {a: 'debian:7.3'}\n", r"lacks the required key 'selections'"),
])
def test_matrix_errors_name_file_line_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(text)
    with pytest.raises(SpecError, match=message):
        load_matrix(path)


def _results(outcomes: dict[str, str], **measure: float) -> dict:
    return {"config": {"kernel": "k"}, "cases": [
        {"nodeid": n, "outcome": o, "duration": 1.0, "measurements": dict(measure),
         "reason": "kernel warning report: WARNING: CPU: 0 PID: 1 at x" if o == "failed"
         else ""} for n, o in outcomes.items()]}


def test_compare_lists_regressions_splats_and_moved_measurements() -> None:
    a = _results({"t::a": "passed", "t::b": "passed", "t::c": "skipped"}, saving=0.5)
    b = _results({"t::a": "failed", "t::b": "passed", "t::d": "passed"}, saving=0.2)
    diff = diff_results("A", a, "B", b, tolerance=0.1)
    assert diff.regressions == [("t::a", "passed", "failed")]
    assert diff.new_splats and diff.new_splats[0][0] == "t::a"
    assert ("t::b", "saving", 0.5, 0.2) in diff.moved
    assert diff.only_a == ["t::c"] and diff.only_b == ["t::d"]


def test_expectations_decide_what_is_unexpected_in_a_cell(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text("kernels: {old: 'debian:6.12', new: 'debian:7.3'}\nselections: {s: {}}\n"
                    "expectations:\n  - {kernel: old, outcome: [passed, skipped]}\n")
    matrix = load_matrix(path)
    old, new = matrix.cell("old-tcg-s"), matrix.cell("new-tcg-s")
    for cell in (old, new):
        out = tmp_path / cell.name
        (out / "artifacts" / "report-x").mkdir(parents=True)
        (out / "artifacts" / "report-x" / "results.json").write_text(
            json.dumps(_results({"t::a": "skipped"})))
        summary = summarize_cell(matrix, cell, out, 0, 1.0)
        assert summary["ok"] == (cell is old)


def test_compare_of_two_single_cells_pairs_them(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    for name, outcome in (("a", "passed"), ("b", "failed")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "summary.json").write_text(json.dumps(
            {"cell": {"name": f"cell-{name}"}, "results": _results({"t::x": outcome})}))
    assert load_side(tmp_path / "a").keys() == {"cell-a"}
    assert compare(tmp_path / "a", tmp_path / "b") == 1
    assert "passed -> failed   t::x" in capsys.readouterr().out


def test_combined_report_renders_cells_with_and_without_results(tmp_path: Path) -> None:
    from harness.results.matrix_report import write_matrix_report
    for name, results in (("ok", _results({"t::a": "failed"})), ("broken", None)):
        (tmp_path / "cells" / name).mkdir(parents=True)
        (tmp_path / "cells" / name / "summary.json").write_text(json.dumps(
            {"cell": {"name": name, "kernel": "debian:7.3"}, "exit": 1, "seconds": 1.0,
             "ok": False, "unexpected": [], "results": results,
             **({"error": "no results"} if results is None else {})}))
    html = write_matrix_report(tmp_path).read_text()
    assert "cells/ok/artifacts/" in html and "no results" in html


def test_cell_command_runs_pytest_through_the_nonempty_wrapper(tmp_path: Path) -> None:
    from harness.matrix.run import cell_command
    cell = load_matrix(NIGHTLY).cells[0]
    argv = cell_command(cell, tmp_path)
    assert argv[0].endswith("scripts/pytest-nonempty") and argv[2:4] == ["-m", "pytest"]
    assert f"--kernel={cell.kernel}" in argv
    # The nightly's selection is the whole suite: nothing narrows it.
    assert "-k" not in argv and argv[2:].count("-m") == 1 and "testcases" in argv


def test_campaign_cells_run_their_command_with_a_budget_and_no_fixed_seed(
        tmp_path: Path) -> None:
    from harness.matrix.run import cell_command
    matrix = load_matrix(NIGHTLY)
    fuzz = matrix.cell("debian-7.3-tcg-fuzz")
    argv = cell_command(fuzz, tmp_path)
    assert argv[1:4] == ["-m", "harness", "fuzz"] and "--minutes=20" in argv
    assert f"--found={tmp_path / 'found'}" in argv
    assert not any(a.startswith("--seed") for a in argv)
    assert {c.campaign for c in matrix.cells} == {"", "explore", "fuzz", "stress", "layouts",
                                                  "races"}
    layouts = cell_command(matrix.cell("debian-7.2-tcg-layouts"), tmp_path)
    assert layouts[3] == "layouts" and f"--found={tmp_path / 'found'}" in layouts


@pytest.mark.parametrize(("text", "message"), [
    ("campaigns: {crawl: {kernels: [a], minutes: 1}}\n", r":3: unknown campaign 'crawl'"),
    ("campaigns: {fuzz: {kernels: [b], minutes: 1}}\n", r":3: campaign 'fuzz': no kernel 'b'"),
    ("campaigns: {fuzz: {kernels: [a], minutes: 0}}\n", r":3: .*minutes must be a positive"),
    ("campaigns: {fuzz: {kernels: [a]}}\n", r"lacks the required key 'minutes'"),
    ("selections: {fuzz: {}}\ncampaigns: {s: {}}\n", r"unknown campaign 's'"),
])
def test_campaign_errors_name_file_line_and_key(tmp_path: Path, text: str,
                                                message: str) -> None:
    path = tmp_path / "m.yaml"
    head = "kernels: {a: 'debian:7.3'}\n" + ("" if "selections" in text
                                              else "selections: {s: {}}\n")
    path.write_text(head + text)
    with pytest.raises(SpecError, match=message):
        load_matrix(path)


def test_a_cell_name_given_twice_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text("kernels: {a: 'debian:7.3'}\nselections: {fuzz: {}}\n"
                    "campaigns: {fuzz: {kernels: [a], minutes: 1}}\n")
    with pytest.raises(SpecError, match="two cells named a-tcg-fuzz"):
        load_matrix(path)


@pytest.mark.parametrize(("status", "found", "ok"), [(0, False, True), (1, True, False),
                                                     (2, False, False)])
def test_a_campaign_cell_is_as_expected_only_when_it_found_nothing(
        tmp_path: Path, status: int, found: bool, ok: bool) -> None:
    from harness.results.matrix_report import write_matrix_report
    path = tmp_path / "m.yaml"
    path.write_text("kernels: {a: 'debian:7.3'}\nselections: {s: {}}\n"
                    "campaigns: {fuzz: {kernels: [a], minutes: 1}}\n")
    matrix = load_matrix(path)
    cell = matrix.cell("a-tcg-fuzz")
    out = tmp_path / "out" / "cells" / cell.name
    (out / "artifacts").mkdir(parents=True)
    if status != 2:
        (out / "artifacts" / "fuzz.json").write_text(json.dumps({"seed": 7, "trials": 3}))
    if found:
        (out / "found").mkdir()
        (out / "found" / "fuzz-1.yaml").write_text("title: x\n")
    (out / "fuzz.log").write_text("fuzz: the last words\n")
    summary = summarize_cell(matrix, cell, out, status, 1.0)
    assert summary["ok"] is ok
    # The progress line says what a campaign found, never "no results".
    assert cell_state(cell, summary) == {0: "as expected",
                                         1: "fuzz found a problem (exit 1), found/fuzz-1.yaml",
                                         2: "fuzz ended without a verdict (exit 2)"}[status]
    assert summary["found"] == (["found/fuzz-1.yaml"] if found else [])
    if not ok:
        assert "fuzz: the last words" in summary["error"]
    html = write_matrix_report(tmp_path / "out").read_text()
    assert "seed 7: 3 trials" in html or status == 2


def test_cells_start_longest_first_by_their_last_run_else_by_kind(tmp_path: Path) -> None:
    """With N cells at a time, a long cell started last runs alone at the end: the debug
    kernel's suite starts first when nothing is on record, and a recorded run overrides
    the guess."""
    matrix = load_matrix(NIGHTLY)
    first = longest_first(list(matrix.cells), tmp_path)[0]
    assert "debug" in first.kernel and not first.campaign
    quick = next(c for c in matrix.cells if c.kernel == "debian:6.12" and not c.campaign)
    (tmp_path / "cells" / quick.name).mkdir(parents=True)
    (tmp_path / "cells" / quick.name / "summary.json").write_text(json.dumps({"seconds": 1e6}))
    assert longest_first(list(matrix.cells), tmp_path)[0] == quick


@pytest.mark.parametrize(("status", "ok"), [(0, True), (1, True), (2, False), (3, False)])
def test_a_cell_whose_pytest_stopped_short_is_not_as_expected(tmp_path: Path, status: int,
                                                              ok: bool) -> None:
    """Exit 1 is a verdict the expectations judge (an allowed failure); an interrupted or
    crashed session's results are not the whole cell, however good the part is."""
    path = tmp_path / "m.yaml"
    path.write_text("kernels: {a: 'debian:7.3'}\nselections: {s: {}}\n"
                    "expectations:\n  - {kernel: a, outcome: [passed, failed]}\n")
    matrix = load_matrix(path)
    cell = matrix.cell("a-tcg-s")
    out = tmp_path / cell.name
    (out / "artifacts" / "report-x").mkdir(parents=True)
    (out / "artifacts" / "report-x" / "results.json").write_text(
        json.dumps(_results({"t::a": "passed", "t::b": "failed"})))
    summary = summarize_cell(matrix, cell, out, status, 1.0)
    assert summary["ok"] is ok
    if not ok:
        assert f"pytest exit {status}" in summary["error"]
        assert cell_state(cell, summary).startswith(f"pytest exit {status}")
