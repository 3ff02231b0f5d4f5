"""Drawing examples with hypothesis, running each in the guest, shrinking what fails.

hypothesis draws an example (a tree, an overlapping twin, a layout for each, ranges and read
methods); the host builds both images at once; the guest checks them (check.py). A failure
is raised so that hypothesis shrinks it to the smallest tree and the fewest options that
still fail *the same way* (the failure's signature: its first line with numbers and names
taken out); a different failure met while shrinking is kept as a finding of its own.

Runs are rounds of a fixed number of examples, each round with its own seed (seed, seed+1,
...), until the budget is spent: the same seed draws the same examples, on any machine.
Shrinking has a budget of its own: past it, the smallest failing example so far is the
finding.
"""

from __future__ import annotations

import re
import secrets
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import hypothesis
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.errors import Flaky

from harness.core.draws import seed_alone
from harness.erofs.tools import ErofsUtils
from harness.guest.handle import Guest
from harness.guest.session import GuestSession
from harness.layouts.build import Built, build
from harness.layouts.check import Example, ExampleResult, check_example, content_digest
from harness.layouts.mkfs import layouts
from harness.layouts.trees import cuts, trees, variants
from harness.vm.machine import VMState
from harness.vm.splats import splats_seen

# The probe's read methods but copy_file_range: EROFS -> ext4 is EXDEV by the VFS's own rule
# (testcases/test_access_paths.py), whatever the layout.
READ_METHODS = ("read", "pread", "readv", "mmap_shared", "mmap_private", "splice",
                "sendfile", "fadvise_willneed", "readahead", "seek_data", "io_uring")
EXAMPLES_PER_ROUND = 20
SHRINK_SECONDS = 600.0


@st.composite
def examples(draw: st.DrawFn) -> Example:
    tree = draw(trees())
    twin = draw(variants(tree))
    paths = [n.path for n in tree.files()]
    return Example(tree, draw(layouts(paths)), twin, draw(layouts(paths)), draw(cuts(tree)),
                   draw(cuts(twin)),
                   tuple(draw(st.lists(st.sampled_from(READ_METHODS), min_size=1, max_size=2,
                                       unique=True))),
                   draw(st.integers(0, 5)), draw(st.integers(0, 3)) == 0)


PROBLEM = re.compile(r"^(?P<phase>\w+): [ab]-(?P<source>\w+): (?P<rest>.*)$")
NOT_A_PATH = ("the kernel refused", "/proc/mounts shows", "umount:")


def signature(problems: list[str]) -> str:
    """What makes two failures the same: the first problem that a replay can show again,
    without the image (a or b), the path, and the sizes, hashes and names that vary from
    one example to the next. A kernel report is that only when nothing else went wrong:
    WARN_ON_ONCE and its kind fire once per boot, so a replay in the same guest never
    shows them again."""
    lasting = [p for p in problems if not p.startswith("kernel report")]
    first = (lasting or problems or [""])[0].splitlines()[0]
    # The reader's name and lists of names change as hypothesis shrinks: not the failure.
    first = re.sub(r"\b[ab]-(loop|file|block)\b(?=\)|;|$)", "<mount>", first)
    first = re.sub(r"of [ab]-(loop|file|block)\b", "of <mount>", first)
    first = re.sub(r"\[[^\]]*\]", "[...]", first)
    match = PROBLEM.match(first)
    if match:
        rest = match.group("rest")
        if rest.startswith("lookup "):
            rest = "lookup: " + rest.split(": ", 1)[-1]
        elif not rest.startswith(NOT_A_PATH) and ": " in rest:
            rest = rest.split(": ", 1)[1]
        first = f"{match.group('phase')}: <{match.group('source')}>: {rest}"
    first = re.sub(r"[0-9a-f]{12,}", "<hash>", first)
    return re.sub(r"\d+", "N", first)


BYTES_WRONG = re.compile(r"^\w+: (?P<image>[ab])-\w+: (?P<path>[^:]+): [^:]+: \d+ bytes(?: "
                         r"(?P<got>[0-9a-f]{16}), want \d+ bytes [0-9a-f]{16}|, not the tree's)$")


def _content(image: Built, path: str) -> bytes | None:
    """content_digest, or None for a path the image's tree does not have."""
    try:
        return content_digest(image, path)
    except KeyError:
        return None


def mkfs_wrote_it(line: str, built: list[Built]) -> Built | None:
    """The image whose mkfs.erofs wrote the wrong bytes a problem line reports, when
    erofs-utils' own reader reads that content wrong too: the very bytes it reads, where
    the line says what the kernel read (through a sharing mount the bytes may come from a
    twin with the same content in the other image, whose cache served them); else None,
    and the line stays the kernel's."""
    match = BYTES_WRONG.match(line)
    if match is None:
        return None
    own = next((i for i in built if i.name == match["image"]), None)
    content = _content(own, match["path"]) if own is not None else None
    if content is None:
        return None
    for image in built:
        for path, wrong in image.misread.items():
            if _content(image, path) == content and match["got"] in (None, wrong):
                return image
    return None


class ExampleFailed(Exception):
    """An example the kernel got wrong (raised for hypothesis to shrink)."""


# A kernel report after which the kernel is not what the next example assumes: an oops or a
# BUG() kills the task in it, holding what it held.
TASK_KILLED = re.compile(r"kernel report: kernel oops report|kernel report: [^\n]*"
                         r"kernel BUG at ")
# What such a killed task leaves behind in the rest of its example: the reader's death (or
# the probe's, when the probe itself was reading), its files still busy, the unmount that
# finds them (and BUGs on them), a clean-up that fails.
AFTERMATH = re.compile(r"killed by signal|Busy inodes after unmount|kernel BUG at fs/super\.c"
                       r"|did not clean up|Device or resource busy|EBUSY|umount"
                       r"|the check broke off: the guest probe ended")


class GuestGone(BaseException):
    """The guest died or stopped answering: nothing more can run (a BaseException, so that
    hypothesis does not try to shrink on a dead guest)."""


class SearchBroke(BaseException):
    """The harness or the host failed mid-search: stop (``Search.broke`` says why)."""


class ShrinkSpent(BaseException):
    """Shrinking ran past its budget: stop with the smallest example so far."""


@dataclass
class Finding:
    example: Example
    failure: str
    signature: str
    after_examples: int
    after_seconds: float
    shrunk: bool = False


@dataclass
class Tally:
    """What a run did, for progress lines and the results JSON."""
    examples: int = 0  # drawn
    checked: int = 0  # both images reached the kernel
    images: int = 0  # images built and checked in the guest
    mounts: int = 0
    mkfs_refused: Counter[str] = field(default_factory=Counter)  # by mkfs's last words
    utils_bugs: list[dict[str, Any]] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)  # kernel lacks what an image needs
    options: Counter[str] = field(default_factory=Counter)  # per image checked
    options_drawn: Counter[str] = field(default_factory=Counter)  # per image drawn
    reads: Counter[str] = field(default_factory=Counter)
    files_mapped: int = 0  # files whose FIEMAP extents were judged, one per mount
    known: Counter[str] = field(default_factory=Counter)
    digestless: int = 0  # images with the ishare_xattrs feature and no digest (--tar=i)
    misread: int = 0  # images with files fsck.erofs --extract reads other than the tree
    findings: list[Finding] = field(default_factory=list)
    step_seconds: Counter[str] = field(default_factory=Counter)  # checking, by step
    seconds_building: float = 0.0
    seconds_checking: float = 0.0


class Search:
    """One guest, one budget: draw, build, check, shrink."""

    def __init__(self, session: GuestSession, tools: ErofsUtils, *, sharing: bool,
                 seed: int, seconds: float, max_examples: int, io_uring: bool = True,
                 known: Callable[[str], str | None] = lambda failure: None,
                 say: Callable[[str], None] = lambda line: None,
                 tick: Callable[[Callable[[], str]], None] = lambda line: None,
                 renew: Callable[[GuestSession, str], GuestSession | None] | None = None
                 ) -> None:
        self.session, self.tools, self.sharing = session, tools, sharing
        # A new guest after a known bug's oops (the old one and why; None once the run may
        # take no more): its kernel is tainted and a task died in it holding what it held.
        # None: the search goes on in the same guest.
        self.renew = renew
        self.seed, self.seconds, self.max_examples = seed, seconds, max_examples
        self.known, self.say, self.tick = known, say, tick
        # A kernel without io_uring reads those examples with read(2) instead.
        self.unsupported = set() if io_uring else {"io_uring"}
        self.tally = Tally()
        self.started = time.monotonic()
        self.target: str | None = None  # the signature being shrunk
        self.smallest: Finding | None = None
        self.shrink_started = 0.0
        self.pool = ThreadPoolExecutor(2, thread_name_prefix="layouts-mkfs")
        # Domains of this search alone: nothing an earlier search (a test before, in the
        # same guest) left in the ishare cache can decide who makes a shared inode here.
        self.domain = f"l{secrets.token_hex(3)}-"
        self.broke: str | None = None  # why the search could not go on (no verdict)
        self.workdir = Path(tempfile.mkdtemp(prefix="erofs-layouts."))

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def _time_left(self) -> bool:
        return time.monotonic() - self.started < self.seconds and \
            self.tally.examples < self.max_examples

    # ---- one example ---------------------------------------------------------------------

    def _build(self, example: Example, number: int) -> list[Built]:
        started = time.monotonic()
        jobs = [self.pool.submit(build, name, tree, layout, self.tools,
                                 self.workdir / f"{number}-{name}")
                for name, tree, layout in (("a", example.tree_a, example.layout_a),
                                           ("b", example.tree_b, example.layout_b))]
        built = [job.result() for job in jobs]
        self.tally.seconds_building += time.monotonic() - started
        for image in built:
            self.tally.options_drawn.update(image.layout.exercised())
            if image.refused is not None:
                self.tally.mkfs_refused[re.sub(r"\d+", "N", image.refused)[:160]] += 1
            if image.digestless:
                self.tally.digestless += 1
            if image.misread:
                self.tally.misread += 1
            if image.utils_bug is not None:
                self._utils_bug(image, image.utils_bug, number)
        return built

    def _utils_bug(self, image: Built, what: str, number: int) -> None:
        kind = re.sub(r"\d+", "N", what)
        first = all(bug["kind"] != kind for bug in self.tally.utils_bugs)
        self.tally.utils_bugs.append({"what": what, "kind": kind,
                                      "mkfs": " ".join(image.argv[1:]),
                                      "seed": self.seed, "example": number})
        if first:  # each kind once; the results JSON has every one
            self.say(f"erofs-utils bug (not the kernel's): {what}\n"
                     f"  mkfs.erofs {' '.join(image.argv[1:])}")

    def _drop_what_mkfs_wrote_wrong(self, result: ExampleResult, built: list[Built],
                                    number: int) -> None:
        """A kernel that reads a file's bytes exactly as wrong as erofs-utils' own reader
        does reads what mkfs.erofs wrote: that is an erofs-utils bug, counted apart."""
        kept, blamed = [], set()
        for line in result.problems:
            image = mkfs_wrote_it(line, built)
            if image is None:
                kept.append(line)
            else:
                blamed.add(image.name)
        result.problems[:] = kept
        for image in built:
            if image.name in blamed:
                self._utils_bug(image, f"mkfs.erofs wrote other bytes than it was given: the "
                                f"kernel and fsck.erofs --extract read {len(image.misread)} "
                                f"file(s) back alike and wrong", number)

    def run_one(self, example: Example) -> ExampleResult | None:
        """Build and check one example: its result, or None when it never reached the
        kernel (mkfs refused it, or erofs-utils contradicted itself)."""
        self.tally.examples += 1
        number = self.tally.examples
        built = self._build(example, number)
        try:
            if any(b.image is None for b in built):
                return None
            result = self._check(example, built, number)
            self._drop_what_mkfs_wrote_wrong(result, built, number)
            return result
        finally:
            # A guest that died in the example cannot delete anything: its death is the
            # example's verdict ("the guest died"), not a broken search.
            if self.session.vm.state is VMState.RUNNING:
                self.session.discard(*[p for b in built if b.image is not None
                                       for p in (b.image.path, b.image.blob) if p is not None])
            for b in built:
                shutil.rmtree(self.workdir / f"{number}-{b.name}", ignore_errors=True)

    def _check(self, example: Example, built: list[Built], number: int) -> ExampleResult:
        vm = self.session.vm
        probe = self.session.probe
        started = time.monotonic()
        guest = Guest(self.session, f"layout{number}")
        mark = probe.kernel_log_mark()
        console_from = vm.console_offset()
        if self.unsupported & set(example.methods):
            example = replace(example, methods=tuple(
                "read" if m in self.unsupported else m for m in example.methods))
        # While shrinking, only the phase that failed: the other proves nothing about it.
        phases = (False, True) if self.sharing else (False,)
        if self.target is not None and self.target.startswith(("plain:", "sharing:")):
            phases = (self.target.startswith("sharing:"),)
        result = check_example(guest, built, example, f"{self.domain}{number}", phases)
        log = ""
        if vm.state is VMState.RUNNING and vm.responsive():
            try:
                log = probe.kernel_log_since(mark).text
                with result.timed("cleanup"):
                    guest.cleanup()
            except Exception as exc:  # the guest is judged below; keep what it said
                result.problems.append(f"the guest did not clean up after the example: {exc}")
        splats = splats_seen(vm.console.since(console_from) if vm.console else "", log)
        # One problem per report: a known warning must not carry another report with it.
        result.problems[:0] = [f"kernel report: {splat}" for splat in splats]
        self.tally.seconds_checking += time.monotonic() - started
        self.tally.checked += 1
        self.tally.step_seconds.update({k: v for k, v in result.seconds.items()})
        self.tally.images += len(built)
        self.tally.mounts += result.mounts
        for image in built:
            self.tally.options.update(image.layout.exercised())
        self.tally.reads.update(example.methods)
        self.tally.files_mapped += result.counts.get("fiemap", 0)
        for line in result.skipped:
            self.tally.skipped[re.sub(r"\d+", "N", line.split(": ", 1)[-1])[:200]] += 1
        if vm.state is not VMState.RUNNING or not vm.responsive():
            result.problems.append("the guest died")
        return result

    # ---- the hypothesis test -------------------------------------------------------------

    def _test(self, example: Example) -> None:
        if self.target is None and not self._time_left():
            return  # the budget is spent: the round's remaining examples are no-ops
        if self.target is not None and \
                time.monotonic() - self.shrink_started > SHRINK_SECONDS:
            raise ShrinkSpent()
        try:
            result = self.run_one(example)
        except (GuestGone, ShrinkSpent):
            raise
        except Exception as exc:
            # The harness or the host failed (a tool timed out, the probe broke off): not an
            # example that failed, so nothing to shrink. Stop with what was found so far.
            self.broke = f"{type(exc).__name__}: {exc}"
            raise SearchBroke() from exc
        self.tick(self.progress)
        if result is None or not result.problems:
            return
        # A problem that is a known bug (its report's signature matches the line) is
        # counted, and the rest decide: a known bug must not hide a new one beside it.
        known_lines = {line: self.known(line) for line in result.problems}
        known_here = {k for k in known_lines.values() if k is not None}
        # A known bug's oops kills the task it hit: what that leaves (the reader's death,
        # its busy files, the unmount that finds them) is its aftermath, not a finding.
        # Anything else, before or after it, still counts; so does a dead guest.
        oopsed = any(known is not None and TASK_KILLED.match(line)
                     for line, known in known_lines.items())
        problems = [line for line, known in known_lines.items() if known is None and not
                    (oopsed and AFTERMATH.search(line) and "the guest died" not in line)]
        if self.target is None:
            self.tally.known.update(known_here)  # examples that met each known bug
        if oopsed and self.renew is not None:
            fresh = self.renew(self.session, f"a known bug oopsed the kernel at example "
                                             f"{self.tally.examples}")
            if fresh is None and not problems:
                self.broke = "every new guest the run may take was taken by known oopses"
                raise SearchBroke()
            # With no new guest left, a new problem beside the oops is still recorded
            # below, and shrunk in this guest, tainted as it is.
            if fresh is not None:
                self.session = fresh
        if not problems:
            return
        failure = "\n".join(problems)
        sig = signature(problems)
        dead = any("the guest died" in p for p in problems)
        finding = Finding(example, failure, sig, self.tally.examples,
                          time.monotonic() - self.started)
        if dead and self.target is not None:
            raise GuestGone()  # nothing more can run, whatever shrinking was after
        if self.target is None:
            self.target, self.smallest = sig, finding
            self.shrink_started = time.monotonic()
            self.say(f"example {self.tally.examples} FAILED: {failure.splitlines()[0][:300]}"
                     + ("" if dead else "\n  shrinking it (same failure: " + sig[:120] + ")"))
        elif sig == self.target:
            assert self.smallest is not None
            # Smaller, same failure; when it was first met stays the first example's.
            finding.shrunk = True
            finding.after_examples = self.smallest.after_examples
            finding.after_seconds = self.smallest.after_seconds
            self.smallest = finding
        else:
            if all(f.signature != sig for f in self.tally.findings):
                self.tally.findings.append(finding)  # another failure met on the way
            return
        if dead:
            raise GuestGone()
        raise ExampleFailed(failure)

    def progress(self) -> str:
        elapsed = max(time.monotonic() - self.started, 0.1)
        t = self.tally
        distinct = len(t.options)
        return (f"{t.examples} examples, {t.images} images checked in {elapsed:.0f} s "
                f"({t.images * 60 / elapsed:.1f} images/min); mounts {t.mounts}; "
                f"{distinct} options exercised; mkfs refused {sum(t.mkfs_refused.values())}; "
                f"erofs-utils bugs {len(t.utils_bugs)}; kernel skips "
                f"{sum(t.skipped.values())}; findings {len(t.findings)}"
                + (f"; known bugs again {sum(t.known.values())}" if t.known else ""))

    def run(self) -> list[Finding]:
        """Rounds until the budget is spent or a failure is found (then shrunk)."""
        round_seed = self.seed
        while self._time_left() and self.smallest is None:
            config = settings(max_examples=EXAMPLES_PER_ROUND, deadline=None, database=None,
                              derandomize=False, phases=(Phase.generate, Phase.shrink),
                              suppress_health_check=list(HealthCheck), print_blob=False,
                              report_multiple_bugs=False)
            @hypothesis.seed(round_seed)
            @config
            @hypothesis.given(examples())
            def test(example: Example) -> None:
                self._test(example)

            try:
                with seed_alone():
                    test()
            except (ExampleFailed, ShrinkSpent, GuestGone, Flaky):
                pass  # what failed is in self.smallest (a replay that did not fail: Flaky)
            except SearchBroke:
                break
            round_seed += 1
        if self.smallest is not None:
            self.tally.findings.insert(0, self.smallest)
        return self.tally.findings
