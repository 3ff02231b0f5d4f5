"""Which test files to run for a series: every one whose tests executed, on the base, a line
the series changes or one of its neighbours, plus a fixed core of sharing semantics; and
the changed lines no test file executed. Coverage is kept per test file (harness/guest/
coverage.py): saving the counters per test would cost a guest round trip per case and a
gcov run per saved set, hours for the whole suite under TCG."""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.review.lines import Changed

NEIGHBOURS = 3  # lines on each side of a changed line that select a test file too
CORE = ("test_sharing_semantics.py",)  # always run: what the feature promises


@dataclass
class Selection:
    files: list[str] = field(default_factory=list)  # test files, core first
    why: dict[str, list[str]] = field(default_factory=dict)  # test file -> "path:line"s
    unexecuted: dict[str, list[int]] = field(default_factory=dict)  # code lines run by none
    unmeasured: list[str] = field(default_factory=list)  # changed files without counters


def select(changed: list[Changed], by_test_file: dict[str, dict[str, list[int]]],
           code: dict[str, set[int]]) -> Selection:
    """``by_test_file``: the lines each test file executed on the base; ``code``: the lines
    of each measured source file that are code (gcov knows them), executed or not."""
    chosen = Selection()
    for one in changed:
        if one.path not in code:
            chosen.unmeasured.append(one.path)
            continue
        near = {n + d for n in one.base for d in range(-NEIGHBOURS, NEIGHBOURS + 1)}
        run_by_any: set[int] = set()
        for test_file, files in sorted(by_test_file.items()):
            executed = set(files.get(one.path, ()))
            run_by_any |= executed
            if test_file == "boot":
                continue  # the boot every test starts with: executed, and selects nothing
            hits = sorted(executed & near)
            if hits:
                chosen.why.setdefault(test_file, []).extend(
                    f"{one.path}:{n}" for n in hits)
        missed = sorted(n for n in one.base if n in code[one.path]
                        and n not in run_by_any)
        if missed:
            chosen.unexecuted[one.path] = missed
    chosen.files = [*CORE, *sorted(f for f in chosen.why if f not in CORE)]
    return chosen
