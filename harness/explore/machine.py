"""Random sequences of mounts, reads, mappings, hints, drops and unmounts, from hypothesis.

hypothesis's stateful testing generates the sequences (a ``RuleBasedStateMachine``: each
rule is one kind of step), and on a divergence from the model shrinks it to the shortest
sequence that still diverges. The rules only choose; the Driver runs and checks, so a
sequence read back from a report replays through the very same code.

Remounts send the options the mount was made with again, as mount(8) does. Remounts that
change sharing are known kernel bugs with tests of their own
(testcases/test_remount_transitions.py).

Known bugs the explorer has already found are steered around by default (KNOWN_BUG_GUARDS:
a precondition per bug, named by its report), or every run would stop at the same place
and find nothing else; ``known_bugs=True`` (``make explore KNOWN=1``) lifts the guards.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, ClassVar

import hypothesis
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.errors import Flaky
from hypothesis.stateful import RuleBasedStateMachine, get_state_machine_test, precondition, rule

from harness.core.draws import seed_alone
from harness.explore.driver import MAX_MOUNTS, Divergence, Driver, Step
from harness.kernel.knownbugs import release_tuple

OPTIONS = ("", "inode_share,domain_id=d1", "inode_share,domain_id=d2", "inode_share")
READ_METHODS = ("read", "mmap_shared", "pread", "splice", "sendfile")
MAX_HOLDERS = 3
SEQUENCES_PER_RUN = 10
HUGE_PAGE = 2 << 20


@dataclass
class Budget:
    steps: int
    seconds: float
    started: float = field(default_factory=time.monotonic)
    done: int = 0

    def left(self) -> bool:
        return self.done < self.steps and time.monotonic() - self.started < self.seconds


@dataclass
class Outcome:
    seed: int
    steps: int
    seconds: float
    rules: Counter[str]
    sequences: int
    failure: str | None = None
    shrunk: list[Step] | None = None  # the shortest diverging sequence, when one was found
    timing: dict[str, float] = field(default_factory=dict)  # seconds per rule
    # When the first divergence was seen (before shrinking): steps run and seconds spent.
    found_after: tuple[int, float] | None = None

    def ms_per_step(self) -> dict[str, float]:
        return {rule: round(1000 * self.timing.get(rule, 0.0) / count, 1)
                for rule, count in sorted(self.rules.items()) if count}

    @property
    def steps_per_second(self) -> float:
        return self.steps / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "steps": self.steps, "seconds": round(self.seconds, 1),
                "steps_per_second": round(self.steps_per_second, 2),
                "sequences": self.sequences, "rules": dict(sorted(self.rules.items())),
                "ms_per_step": self.ms_per_step(),
                "failure": self.failure, "shrunk": self.shrunk,
                "found_after_steps": self.found_after[0] if self.found_after else None,
                "found_after_seconds": (round(self.found_after[1], 1) if self.found_after
                                        else None)}


class GuestDied(BaseException):
    """The guest crashed or hung during a step. A BaseException, so that hypothesis stops at
    once rather than shrinking on a VM that can no longer run anything."""


# report -> what the guard keeps the explorer from doing on kernels with that bug.
KNOWN_BUG_GUARDS = {
    "reports/remount-reenables-inode-share.yaml":
        "no remount of a mount whose mount turned inode_share off (image without fingerprints)",
    "reports/splice-bypasses-shared-cache.yaml":
        "on 7.2 only: files on sharing mounts are read with read/pread where the draw said "
        "splice/sendfile",
    "reports/file-backed-read-oom-under-memory-max.yaml":
        "reads under memory.max only from loop and virtio mounts, not file-backed ones",
}
# On 7.2 (most likely no splice_read of its own for shared files) splice and sendfile fill the
# file's private page cache. Substitutes that leave the rest of the sequence as drawn.
SPLICE_SUBSTITUTES = {"splice": "read", "sendfile": "pread"}


def splice_bypasses_sharing(release: str) -> bool:
    return release_tuple(release)[:2] == (7, 2)


class ExploreMachine(RuleBasedStateMachine):
    """One sequence per instance; the class-level driver and statistics are set by explore()."""

    driver: ClassVar[Driver]
    images: ClassVar[list[str]]
    stats: ClassVar[Counter[str]]
    timing: ClassVar[defaultdict[str, float]]  # seconds spent per rule, for the benchmark
    budget: ClassVar[Budget]
    progress: ClassVar[Any]
    last: ClassVar[list[Step]] = []
    known_bugs: ClassVar[bool] = False  # True: no guards, known bugs may be found again
    first: ClassVar[tuple[str, list[Step]] | None] = None  # the first divergence seen
    first_at: ClassVar[tuple[int, float] | None] = None  # (steps, seconds) when it was seen

    def __init__(self) -> None:
        super().__init__()
        self.driver.reset()
        self.serial = 0
        ExploreMachine.last = self.driver.steps
        ExploreMachine.sequences += 1

    sequences: ClassVar[int] = 0

    def _run(self, step: Step) -> None:
        self.stats[step["do"]] += 1
        self.budget.done += 1
        ExploreMachine.progress(self.budget, self.stats)
        started = time.monotonic()
        try:
            self.driver.step(step)
        except Exception as exc:
            if ExploreMachine.first is None:  # hypothesis may replace it by its own errors
                what = str(exc) if isinstance(exc, Divergence) else \
                    f"{type(exc).__name__}: {exc}"
                ExploreMachine.first = (what, list(self.driver.steps))
                ExploreMachine.first_at = (self.budget.done,
                                           time.monotonic() - self.budget.started)
            if not self.driver.alive():
                # Nothing can replay on a dead guest: stop hypothesis (it lets a
                # BaseException through) instead of letting it shrink against failures
                # that are only "the VM is broken".
                raise GuestDied(ExploreMachine.first[0]) from exc
            raise
        finally:
            ExploreMachine.timing[step["do"]] += time.monotonic() - started

    def _name(self, prefix: str) -> str:
        self.serial += 1
        return f"{prefix}{self.serial}"

    def _file(self, data: st.DataObject) -> tuple[str, str]:
        return data.draw(st.sampled_from(self.driver.visible_files()), label="file")

    def _live(self) -> bool:
        return bool(self.driver.world.live_mounts())

    # ---- rules ---------------------------------------------------------------------------

    @precondition(lambda self: len(self.driver.world.mounts) < MAX_MOUNTS)
    @rule(data=st.data(), options=st.sampled_from(OPTIONS))
    def mount(self, data: st.DataObject, options: str) -> None:
        image = data.draw(st.sampled_from(self.images), label="image")
        source = data.draw(st.sampled_from(self.driver.free_sources(image)), label="source")
        self._run({"do": "mount", "mount": self._name("m"), "image": image, "source": source,
                   "options": options})

    @precondition(_live)
    @rule(data=st.data(), lazy=st.booleans())
    def umount(self, data: st.DataObject, lazy: bool) -> None:
        names = sorted(m.name for m in self.driver.world.live_mounts())
        self._run({"do": "umount", "mount": data.draw(st.sampled_from(names), label="mount"),
                   "lazy": lazy})

    def _remountable(self) -> list[str]:
        return sorted(m.name for m in self.driver.world.live_mounts()
                      if self.known_bugs or m.share or "inode_share" not in m.options)

    @precondition(lambda self: bool(self._remountable()))
    @rule(data=st.data())
    def remount(self, data: st.DataObject) -> None:
        names = self._remountable()
        self._run({"do": "remount", "mount": data.draw(st.sampled_from(names), label="mount")})

    @precondition(_live)
    @rule(data=st.data(), method=st.sampled_from(READ_METHODS))
    def read(self, data: st.DataObject, method: str) -> None:
        mount, path = self._file(data)
        if (not self.known_bugs and self.driver.world.mounts[mount].share
                and splice_bypasses_sharing(self.driver.release)):
            method = SPLICE_SUBSTITUTES.get(method, method)
        self._run({"do": "read", "mount": mount, "path": path, "method": method})

    def _pressurable(self) -> list[tuple[str, str]]:
        """Files a read under memory.max may take: on a file-backed mount such a reader is
        OOM-killed (a known bug) unless the guards are lifted."""
        world = self.driver.world
        return [(m, p) for m, p in self.driver.visible_files()
                if self.known_bugs or world.mounts[m].source != "file"]

    @precondition(lambda self: bool(self._pressurable()))
    @rule(data=st.data())
    def pressured_read(self, data: st.DataObject) -> None:
        mount, path = data.draw(st.sampled_from(self._pressurable()), label="file")
        self._run({"do": "pressured_read", "mount": mount, "path": path})

    @precondition(lambda self: self._live() and len(self.driver.world.holders) < MAX_HOLDERS)
    @rule(data=st.data())
    def hold(self, data: st.DataObject) -> None:
        mount, path = self._file(data)
        self._run({"do": "hold", "tag": self._name("h"), "mount": mount, "path": path})

    @precondition(lambda self: bool(self.driver.world.holders))
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        tag = data.draw(st.sampled_from(sorted(self.driver.world.holders)), label="holder")
        self._run({"do": "release", "tag": tag})

    @precondition(lambda self: self.driver.huge_pages and bool(self._big_files()))
    @rule(data=st.data())
    def collapse(self, data: st.DataObject) -> None:
        mount, path = data.draw(st.sampled_from(self._big_files()), label="file")
        self._run({"do": "collapse", "mount": mount, "path": path})

    def _big_files(self) -> list[tuple[str, str]]:
        """Files with at least one huge page's worth of pages."""
        return [(m.name, f.path) for m in self.driver.world.live_mounts()
                for f in m.image.files if f.size >= HUGE_PAGE]

    @precondition(_live)
    @rule(data=st.data(), advice=st.sampled_from(("dontneed", "willneed")))
    def advise(self, data: st.DataObject, advice: str) -> None:
        mount, path = self._file(data)
        self._run({"do": advice, "mount": mount, "path": path})

    # hypothesis orders rules by name and starts each run with its simplest sequence: the
    # first allowed rule, over and over. With no mount yet that must be `mount`, not this.
    @precondition(_live)
    @rule()
    def uncache_everything(self) -> None:
        self._run({"do": "drop_caches"})


def _quiet(budget: Budget, stats: Counter[str]) -> None:
    return None


def explore(driver: Driver, images: list[str], *, seed: int, steps: int, seconds: float,
            progress: Any = _quiet, steps_per_sequence: int = 30,
            known_bugs: bool = False) -> Outcome:
    """Generate and run sequences until ``steps`` steps or ``seconds`` have gone, or the
    kernel diverges from the model; then the shrunk sequence is in the Outcome."""
    budget = Budget(steps, seconds)
    stats: Counter[str] = Counter()
    ExploreMachine.driver, ExploreMachine.images = driver, images
    ExploreMachine.stats, ExploreMachine.budget = stats, budget
    ExploreMachine.timing = defaultdict(float)
    ExploreMachine.progress, ExploreMachine.sequences = progress, 0
    ExploreMachine.known_bugs = known_bugs
    ExploreMachine.first = ExploreMachine.first_at = None
    failure: str | None = None
    shrunk: list[Step] | None = None
    # Runs of a fixed number of sequences, each with its own seed (seed, seed+1, ...), until
    # the budget is spent. A run cannot be stopped from inside: whatever a sequence does must
    # follow from hypothesis's choices alone, or it rejects the run as inconsistent.
    round_seed = seed
    while budget.left() and failure is None:
        config = settings(max_examples=SEQUENCES_PER_RUN, stateful_step_count=steps_per_sequence,
                          deadline=None, database=None, derandomize=False,
                          phases=(Phase.generate, Phase.shrink),
                          suppress_health_check=list(HealthCheck), print_blob=False,
                          report_multiple_bugs=False)
        test = hypothesis.seed(round_seed)(get_state_machine_test(ExploreMachine,
                                                                  settings=config))
        try:
            with seed_alone():
                test()
        except GuestDied:
            seen, steps_seen = ExploreMachine.first or ("the guest died", list[Step]())
            failure = f"{seen}\n(the guest died; a dead guest replays nothing, so not shrunk)"
            shrunk = steps_seen
        except Divergence as exc:
            failure, shrunk = str(exc), list(ExploreMachine.last)
        except Flaky as exc:
            # The divergence did not come back when hypothesis replayed the sequence: a race,
            # or state the model does not see. Report the first one as it was seen.
            seen, steps_seen = ExploreMachine.first or (str(exc), list(ExploreMachine.last))
            failure = f"{seen}\n(not reproduced when replayed, so not shrunk: {exc})"
            shrunk = steps_seen
        except Exception as exc:  # the guest died, the probe failed: shrunk all the same
            failure = f"{type(exc).__name__}: {exc}"
            shrunk = list(ExploreMachine.last)
        round_seed += 1
    return Outcome(seed, budget.done, time.monotonic() - budget.started, stats,
                   ExploreMachine.sequences, failure, shrunk, ExploreMachine.timing,
                   ExploreMachine.first_at if failure is not None else None)
