"""Finding kernel splats (Oops, BUG, WARNING, KASAN, UBSAN, lockdep, hung task, panic)."""

from __future__ import annotations

import re
from dataclasses import dataclass

# The first line of each report kind as the kernel prints it; the kind is the group name.
_PATTERNS = [
    ("panic", r"Kernel panic - not syncing"),
    ("kasan", r"BUG: KASAN: "),
    ("kfence", r"BUG: KFENCE: "),
    ("ubsan", r"UBSAN: "),
    ("lockdep", r"WARNING: (?:possible (?:circular|recursive) locking|inconsistent lock state|"
                r"suspicious RCU usage|bad unlock balance)"),
    ("hung_task", r"INFO: task \S+ blocked for more than \d+ seconds"),
    ("rcu_stall", r"rcu: INFO: \S+ (?:self-)?detected stalls?"),
    ("soft_lockup", r"watchdog: BUG: soft lockup"),
    ("bug", r"kernel BUG at |BUG: (?:unable to handle|scheduling while atomic|sleeping function|"
            r"Bad page|Bad rss|workqueue lockup|spinlock)"),
    ("oops", r"Oops: |general protection fault|Unable to handle kernel"),
    # Up to 7.2: "WARNING: CPU: 1 PID: 93 at fs/x.c:75 f+0x1/0x2"; 7.3 puts the place first:
    # "WARNING: fs/x.c:75 at f+0x1/0x2, CPU#1: cat/93".
    ("warning", r"WARNING: CPU: \d+ PID: \d+ at |WARNING: \S+:\d+ at \S+, CPU#\d+|"
                r"------------\[ cut here \]------------"),
    ("kmemleak", r"unreferenced object 0x"),
]
KINDS = tuple(kind for kind, _ in _PATTERNS)
SPLAT = re.compile("|".join(f"(?P<{kind}>{rx})" for kind, rx in _PATTERNS))
EXCERPT_LINES = 40


@dataclass(frozen=True)
class Splat:
    kind: str
    first_line: str
    excerpt: str

    def __str__(self) -> str:
        return f"kernel {self.kind} report: {self.first_line}\n{self.excerpt}"


def find_splats(text: str) -> list[Splat]:
    """Every report in ``text``, each with up to 40 lines from its first line on."""
    lines = text.splitlines()
    found: list[Splat] = []
    skip_until = -1
    for number, line in enumerate(lines):
        if number <= skip_until:
            continue
        match = SPLAT.search(line)
        if not match:
            continue
        kind = match.lastgroup or "unknown"
        excerpt = lines[max(0, number - 2):number + EXCERPT_LINES]
        found.append(Splat(kind, line.strip(), "\n".join(excerpt)))
        # A WARNING's "cut here" line and its "WARNING: CPU" line are one report.
        skip_until = number + 3 if kind == "warning" else number
    return found


def splats_seen(console: str, kernel_log: str) -> list[Splat]:
    """The reports in a stretch of console output and of the kernel log, each once.

    Both are read because either can miss one: the console lags behind the log under TCG
    (and a dead guest leaves only its console), while the log keeps what a low console
    loglevel does not print.
    """
    found = find_splats(console)
    seen = {splat.first_line for splat in found}
    return found + [s for s in find_splats(kernel_log) if s.first_line not in seen]
