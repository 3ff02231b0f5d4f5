"""The kernel coverage report of a run on a coverage kernel (``make coverage``).

Every VM of the run saved its fs/erofs counters (harness/guest/coverage.py). Each set is put
next to the kernel's own gcov notes and turned into a gcovr JSON tracefile; gcovr then merges
the tracefiles into an HTML report, a JSON summary and a per-file table. Lines that no test
executed are listed for the files of the sharing feature, so a reader sees what is missing.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.core.errors import HarnessError
from harness.guest.coverage import label_of
from harness.kernel.kbuild import COVERAGE_DIR as PART
from harness.kernel.kbuild import GCOV_NOTES
from harness.kernel.kernel import Kernel

BY_TEST_FILE = "by_test_file.json"  # the lines each test file executed (make review)
# The files of the page cache sharing feature: their uncovered lines are listed.
FOCUS = ("ishare.c", "xattr.c", "super.c")
GCOVR = [sys.executable, "-m", "gcovr"]


@dataclass(frozen=True)
class FileCoverage:
    name: str
    lines: int
    lines_covered: int
    branches: int
    branches_covered: int
    uncovered: tuple[int, ...]

    @property
    def line_percent(self) -> float:
        return 100.0 * self.lines_covered / self.lines if self.lines else 0.0

    @property
    def branch_percent(self) -> float:
        return 100.0 * self.branches_covered / self.branches if self.branches else 0.0


def notes_of(kernel: Kernel) -> tuple[Path, Path]:
    """(the kernel's gcov notes directory, the source tree it was built from)."""
    notes = kernel.vmlinuz.parent / GCOV_NOTES
    if not (notes / "source").is_file():
        raise HarnessError(f"kernel {kernel.spec} ({kernel.release}) was not built for "
                           f"coverage: use a tree: kernel with the coverage option, for "
                           f"example KERNEL=tree:,coverage")
    return notes, Path((notes / "source").read_text().strip())


def set_paths(counters: Path, work: Path) -> tuple[Path, Path]:
    """Where one set of counters is unpacked, and its tracefile: one of each per set. (Not
    ``with_suffix``: a set's name holds its test file's ``.py``, and every set of one test
    file would have overwritten the one before.)"""
    objdir = work / counters.name.removesuffix(".tar.gz")
    return objdir, objdir.with_name(objdir.name + ".json")


def _tracefile(counters: Path, notes: Path, source: Path, work: Path) -> Path:
    """One VM's counters beside the notes, through gcov, into a gcovr JSON tracefile."""
    objdir, out = set_paths(counters, work)
    shutil.copytree(notes / PART, objdir / PART)
    with tarfile.open(counters, "r:gz") as tar:
        tar.extractall(objdir, filter="data")
    proc = subprocess.run([*GCOVR, "--root", str(source), "--filter", str(source / PART),
                           "--gcov-ignore-parse-errors=all", "--json", str(out),
                           str(objdir)], capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not out.is_file():
        raise HarnessError(f"gcovr could not read the counters of {counters}: "
                           f"{(proc.stderr or proc.stdout).strip()[-800:]}")
    return out


def summarize(summary: dict[str, Any], details: dict[str, Any]) -> list[FileCoverage]:
    """Per-file figures from gcovr's --json-summary, with the uncovered lines from --json."""
    uncovered: dict[str, tuple[int, ...]] = {}
    for entry in details.get("files", []):
        lines = entry.get("lines", [])
        uncovered[Path(entry["file"]).name] = tuple(sorted(
            ln["line_number"] for ln in lines if ln.get("count", 0) == 0
            and not ln.get("gcovr/noncode", False)))
    out = []
    for entry in summary.get("files", []):
        name = Path(entry["filename"]).name
        out.append(FileCoverage(name, entry["line_total"], entry["line_covered"],
                                entry["branch_total"], entry["branch_covered"],
                                uncovered.get(name, ())))
    return sorted(out, key=lambda f: f.name)


def _ranges(lines: tuple[int, ...]) -> str:
    spans: list[str] = []
    start = prev = None
    for line in [*lines, None]:
        if start is not None and (line is None or prev is None or line != prev + 1):
            spans.append(f"{start}" if start == prev else f"{start}-{prev}")
            start = None
        if line is not None and start is None:
            start = line
        prev = line
    return ", ".join(spans)


def table(files: list[FileCoverage]) -> str:
    """Per-file lines and branches executed, a total, and the lines of the sharing files
    that nothing executed."""
    total = FileCoverage("total", sum(f.lines for f in files),
                         sum(f.lines_covered for f in files), sum(f.branches for f in files),
                         sum(f.branches_covered for f in files), ())
    rows = [f"{'file':<20} {'lines':>13} {'%':>6} {'branches':>13} {'%':>6}"]
    for f in [*files, total]:
        rows.append(f"{f.name:<20} {f.lines_covered:>6}/{f.lines:<6} {f.line_percent:>5.1f}% "
                    f"{f.branches_covered:>6}/{f.branches:<6} {f.branch_percent:>5.1f}%")
    for f in files:
        if f.name in FOCUS and f.uncovered:
            rows.append(f"not executed in {f.name}: lines {_ranges(f.uncovered)}")
    return "\n".join(rows)


def write_coverage_report(kernel: Kernel, counters_dir: Path, out: Path) -> list[FileCoverage]:
    """Merge every VM's counters under ``counters_dir`` into ``out/`` (index.html,
    summary.json, coverage.json, table.txt); the per-file figures."""
    notes, source = notes_of(kernel)
    sets = sorted(counters_dir.glob("*.tar.gz"))
    if not sets:
        raise HarnessError(f"no coverage counters under {counters_dir}: no VM of the run "
                           f"saved any (did every guest die?)")
    shutil.rmtree(out, ignore_errors=True)
    work = out / "tracefiles"
    work.mkdir(parents=True)
    print(f"coverage: reading the counters of {len(sets)} VM(s) with gcov", file=sys.stderr,
          flush=True)
    traces = [_tracefile(s, notes, source, work) for s in sets]
    argv = [*GCOVR, "--root", str(source), *(a for t in traces for a in ("--add-tracefile",
                                                                           str(t))),
            "--html-details", str(out / "index.html"), "--html-title",
            f"fs/erofs coverage: {kernel.spec} ({kernel.release})",
            "--json-summary", str(out / "summary.json"), "--json", str(out / "coverage.json")]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise HarnessError(f"gcovr could not merge the tracefiles in {work}: "
                           f"{(proc.stderr or proc.stdout).strip()[-800:]}")
    files = summarize(json.loads((out / "summary.json").read_text()),
                      json.loads((out / "coverage.json").read_text()))
    by_file = lines_by_test_file({label_of(s): json.loads(t.read_text())
                                  for s, t in zip(sets, traces, strict=True)}.items())
    (out / BY_TEST_FILE).write_text(json.dumps(by_file, indent=1, sort_keys=True) + "\n")
    added = added_table(files, by_file)
    (out / "table.txt").write_text(table(files) + "\n" + (added + "\n" if added else ""))
    return files


def lines_by_test_file(traces: Iterable[tuple[str, dict[str, Any]]]
                       ) -> dict[str, dict[str, list[int]]]:
    """Which lines of which source file the tests of each test file executed: {test file:
    {source path under the tree: [line, ...]}}, from the per-set gcovr tracefiles (one set
    per test file and VM, harness/guest/coverage.py), sets of one test file merged."""
    out: dict[str, dict[str, set[int]]] = {}
    for label, trace in traces:
        executed = out.setdefault(label, {})
        for entry in trace.get("files", []):
            lines = {ln["line_number"] for ln in entry.get("lines", [])
                     if ln.get("count", 0) > 0}
            if lines:
                executed.setdefault(entry["file"], set()).update(lines)
    return {label: {path: sorted(lines) for path, lines in files.items()}
            for label, files in out.items()}


# The test files of failing devices, failing allocations and the module's life: the report
# says what they add to the rest of the suite, since error paths are what they are for.
FAULT_TESTS = ("test_failing_allocations.py", "test_failing_devices.py", "test_module_life.py")


def only_by(by_test_file: dict[str, dict[str, list[int]]], group: Iterable[str]
            ) -> dict[str, list[int]]:
    """The lines, per source file, that the test files of ``group`` executed and no other
    test file (nor the boot) did."""
    group = set(group)
    inside: dict[str, set[int]] = {}
    outside: dict[str, set[int]] = {}
    for label, files in by_test_file.items():
        into = inside if label in group else outside
        for path, lines in files.items():
            into.setdefault(path, set()).update(lines)
    return {path: sorted(lines - outside.get(path, set()))
            for path, lines in sorted(inside.items()) if lines - outside.get(path, set())}


def added_table(files: list[FileCoverage], by_test_file: dict[str, dict[str, list[int]]],
                group: Iterable[str] = FAULT_TESTS, name: str = "the fault tests") -> str:
    """Per source file, lines executed without ``group`` and with it; empty when the run had
    none of the group's test files."""
    group = tuple(group)
    if not any(label in group for label in by_test_file):
        return ""
    added = {Path(path).name: lines for path, lines in only_by(by_test_file, group).items()}
    rows = [f"what {name} ({', '.join(group)}) add, lines executed:",
            f"{'file':<20} {'without':>15} {'with':>15}"]
    total_without = total_with = total = 0
    for f in files:
        extra = len(added.get(f.name, ()))
        without = f.lines_covered - extra
        total_without, total_with, total = (total_without + without,
                                            total_with + f.lines_covered, total + f.lines)
        if extra:
            rows.append(f"{f.name:<20} {without:>6} {_percent(without, f.lines):>7} "
                        f"{f.lines_covered:>6} {_percent(f.lines_covered, f.lines):>7}  "
                        f"+{extra}: {_ranges(tuple(added[f.name]))}")
    rows.append(f"{'total':<20} {total_without:>6} {_percent(total_without, total):>7} "
                f"{total_with:>6} {_percent(total_with, total):>7}")
    return "\n".join(rows)


def _percent(part: int, whole: int) -> str:
    return f"{100.0 * part / whole:.1f}%" if whole else "-"
