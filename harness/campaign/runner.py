"""One runner for every campaign.

A campaign (``make explore``, ``make fuzz``, ``make stress``, ``make layouts``, ...) is a
small declaration: its name, its own command-line options, what it needs from the kernel,
the host work done before a guest exists (images), and ``run(run, session) -> Outcome``.
Everything around that is the same for all of them and lives here, once:

- the kernel and its guest image (``pipeline.prepare``), and the campaign's requirements,
  checked before anything boots: an unmet one is no verdict (exit 2) with the reason;
- the seed, drawn from the clock when none was given and printed first, so any run can be
  replayed;
- the guest (``pipeline.open_guest``), stopped however the campaign ends, and the new
  guests a campaign takes when a step left the kernel in doubt (``CampaignRun.new_guest``:
  the old one stopped first, at most MAX_NEW_GUESTS, every one stopped at the end);
- the results JSON (``<out>/<name>.json``: kernel, seed, budget, verdict, and the
  campaign's own figures), the summary lines and the exit status: 0 nothing found,
  1 a finding, 2 no verdict.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Any, ClassVar

from harness.core.paths import PROJECT
from harness.guest.session import GuestSession
from harness.kernel.kernel import Kernel
from harness.pipeline import Prepared, open_guest, prepare
from harness.vm.machine import VMConfig

FOUND = PROJECT / "reports" / "found"
PROGRESS_EVERY = 10.0  # seconds between progress lines
MAX_NEW_GUESTS = 60  # guests a run may take after guests that died, hung or oopsed
OpenGuest = Callable[..., AbstractContextManager[GuestSession]]


class Verdict(IntEnum):
    """A campaign's answer, which is also its exit status."""
    CLEAN = 0  # nothing found within the budget
    FOUND = 1  # a finding, written as a report
    NO_VERDICT = 2  # the campaign could not run (a requirement unmet, an error)


@dataclass
class Outcome:
    verdict: Verdict
    results: dict[str, Any] = field(default_factory=dict)  # the campaign's figures, as JSON
    lines: list[str] = field(default_factory=list)  # the summary, printed last


@dataclass(frozen=True)
class Settings:
    """What every campaign takes from the command line; ``options`` holds its own."""
    kernel: str | None
    vm: VMConfig
    seed: int
    minutes: float
    out: Path
    found: Path | None = None  # where findings go (None: the campaign's default)
    options: argparse.Namespace = field(default_factory=argparse.Namespace)


class Progress:
    """Prints a line at most every ``every`` seconds; the line is only made when due."""

    def __init__(self, say: Callable[[str], None], every: float = PROGRESS_EVERY) -> None:
        self.say = say
        self.every = every
        self.last = time.monotonic()

    def tick(self, line: Callable[[], str], force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self.last >= self.every:
            self.last = now
            self.say(line())


@dataclass
class CampaignRun:
    """One run of a campaign: its settings, the kernel, the clock, its voice, and the guests
    it takes after the first."""
    name: str
    settings: Settings
    kernel: Kernel
    started: float = field(default_factory=time.monotonic)
    prepared: Prepared | None = None  # what new guests boot (None: no guest can be opened)
    open_guest: OpenGuest = open_guest
    new_guests: int = 0
    guests: ExitStack = field(default_factory=ExitStack)  # closed by run_campaign

    def __post_init__(self) -> None:
        self.progress = Progress(self.say)

    def say(self, text: str) -> None:
        for line in text.splitlines() or [""]:
            print(f"{self.name}: {line}", file=sys.stderr, flush=True)

    @property
    def seed(self) -> int:
        return self.settings.seed

    @property
    def options(self) -> argparse.Namespace:
        return self.settings.options

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def time_left(self) -> float:
        return self.settings.minutes * 60 - self.elapsed()

    def new_guest(self, old: GuestSession, why: str, *modules: str) -> GuestSession | None:
        """A fresh guest in place of ``old``, which is stopped first (one VM at a time: the
        machine has two cores), with ``modules`` loaded; None once the run has had
        MAX_NEW_GUESTS (a kernel that dies at every step would otherwise boot forever)."""
        if self.new_guests >= MAX_NEW_GUESTS or self.prepared is None:
            return None
        self.new_guests += 1
        self.say(f"a new guest ({self.new_guests} of at most {MAX_NEW_GUESTS}): {why}")
        old.vm.stop()
        session = self.guests.enter_context(self.open_guest(
            self.prepared, self.settings.vm, name=f"{self.name}-{self.new_guests}",
            artifacts=self.settings.out))
        if modules:
            session.need_modules(*modules)
        return session


class Campaign(ABC):
    """A campaign declaration. Subclasses set ``name`` and ``help`` and write ``run``."""
    name: ClassVar[str]
    help: ClassVar[str]
    minutes: ClassVar[float] = 10.0  # the default time budget
    timed: ClassVar[bool] = True  # False: it does its whole work once, and ignores the budget
    memory_mb: ClassVar[int | None] = None  # a guest memory other than the VM default
    finds: ClassVar[bool] = True  # writes its findings as reports (takes --found)

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        """The campaign's own options (the shared ones are declared by the CLI)."""
        return None

    def unmet(self, kernel: Kernel) -> str | None:
        """Why this kernel cannot run the campaign, or None."""
        return None

    def prepare(self, run: CampaignRun) -> None:
        """Host work before the guest boots (building images)."""
        return None

    @abstractmethod
    def run(self, run: CampaignRun, session: GuestSession) -> Outcome:
        """The campaign itself, in the booted guest."""

    def write_report(self, results: dict[str, Any], out: Path) -> Path | None:
        """A report for people beside the results JSON (``results`` is what the JSON
        holds); its path, or None when the campaign has none."""
        return None


def results_path(name: str, out: Path) -> Path:
    return out / f"{name}.json"


def run_campaign(campaign: Campaign, settings: Settings, *,
                 prepare_: Callable[[str | None], Prepared] = prepare,
                 open_guest_: OpenGuest = open_guest) -> int:
    """Carry out ``campaign``: its exit status (Verdict). ``prepare_`` and ``open_guest_``
    are the pipeline's (the unit tests put fakes there)."""
    prepared = prepare_(settings.kernel)
    kernel = prepared.kernel
    run = CampaignRun(campaign.name, settings, kernel, prepared=prepared,
                      open_guest=open_guest_)
    head = {"campaign": campaign.name, "kernel": str(kernel.spec), "release": kernel.release,
            "seed": settings.seed, "minutes": settings.minutes}
    reason = campaign.unmet(kernel)
    if reason is not None:
        run.say(f"{kernel.describe()}: {reason}")
        outcome = Outcome(Verdict.NO_VERDICT, {"unmet": reason})
    else:
        campaign.prepare(run)
        run.say(f"seed {settings.seed}, {settings.minutes:g} min on {kernel.spec} "
                f"({kernel.release})")
        with open_guest_(prepared, settings.vm, name=campaign.name,
                         artifacts=settings.out) as session, run.guests:
            run.kernel = session.vm.kernel  # with the config a booted kernel gave back
            outcome = campaign.run(run, session)
        if run.new_guests:
            outcome.results.setdefault("new_guests", run.new_guests)
    settings.out.mkdir(parents=True, exist_ok=True)
    path = results_path(campaign.name, settings.out)
    results = {**head, "verdict": outcome.verdict.name.lower(),
               "seconds": round(run.elapsed(), 1), **outcome.results}
    path.write_text(json.dumps(results, indent=2) + "\n")
    report = campaign.write_report(results, settings.out) if reason is None else None
    for line in outcome.lines:
        run.say(line)
    run.say(f"results in {path}" + (f" and {report}" if report else ""))
    return int(outcome.verdict)
