"""`make explore`: explore for a budget of steps and minutes, show progress, and on a
divergence write the shrunk sequence as reports/found/<id>.yaml. A campaign: the runner
(harness/campaign/runner.py) does the kernel, the guest, the JSON and the exit status."""

from __future__ import annotations

import argparse
import time
from collections import Counter

from harness.campaign.runner import Campaign, CampaignRun, Outcome, Progress, Verdict
from harness.core.errors import HarnessError
from harness.core.paths import CATALOG
from harness.erofs.images import BuiltImage, build_image, load_catalog
from harness.erofs.tools import provide
from harness.explore.driver import Driver
from harness.explore.found import write_found
from harness.explore.generated import GeneratedPool, generated_pool
from harness.explore.machine import KNOWN_BUG_GUARDS, Budget, explore
from harness.explore.pool import pool_names
from harness.guest.handle import Guest
from harness.guest.session import GuestSession
from harness.kernel.kernel import Kernel
from harness.vm.machine import VMState
from harness.vm.splats import find_splats


class _Progress:
    def __init__(self, progress: Progress) -> None:
        self.progress = progress

    def __call__(self, budget: Budget, stats: Counter[str]) -> None:
        def line() -> str:
            elapsed = time.monotonic() - budget.started
            rate = budget.done / elapsed if elapsed else 0.0
            rules = " ".join(f"{rule}={count}" for rule, count in sorted(stats.items()))
            return f"{budget.done} steps in {elapsed:.0f} s ({rate:.1f}/s); {rules}"
        self.progress.tick(line)


class ExploreCampaign(Campaign):
    name = "explore"
    help = "random sequences of mounts, reads, mappings and unmounts checked against a model"

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--steps", type=int, default=100000, help="step budget")
        parser.add_argument("--known-bugs", action="store_true",
                            help="do not steer around known bugs (they may be found again)")
        parser.add_argument("--generated", type=int, default=0, metavar="N",
                            help="add the images of N generated layouts examples (two each, "
                                 "drawn with the run's seed) to the pool")

    def unmet(self, kernel: Kernel) -> str | None:
        return None if kernel.features.get("page_cache_share") else \
            "has no EROFS page cache sharing"

    def prepare(self, run: CampaignRun) -> None:
        catalog, tools = load_catalog(CATALOG), provide()
        self.names = pool_names(run.kernel.features)
        self.images: dict[str, BuiltImage] = {
            name: build_image(catalog.image(name), tools) for name in self.names}
        if not run.options.known_bugs:
            for report, guard in KNOWN_BUG_GUARDS.items():
                run.say(f"steering around a known bug ({report}): {guard}")
        self.generated: GeneratedPool | None = None
        if run.options.generated < 0:
            raise HarnessError(f"--generated={run.options.generated}: a number of examples, "
                               f"0 or more")
        if run.options.generated:
            self.generated = generated_pool(run.seed, run.options.generated, tools,
                                            run.options.known_bugs, run.say)
            for name, why in self.generated.left_out.items():
                run.say(f"generated image {name} left out: {why[:160]}")
            self.images.update(self.generated.images)
            self.names += list(self.generated.images)
        run.say(f"up to {run.options.steps} steps; images: {', '.join(self.names)}")

    def run(self, run: CampaignRun, session: GuestSession) -> Outcome:
        vm = session.vm
        guest = Guest(session, "explore")
        try:
            views = self.generated.pool if self.generated is not None else None
            with Driver(guest, self.images, views) as driver:
                outcome = explore(driver, self.names, seed=run.seed, steps=run.options.steps,
                                  seconds=run.settings.minutes * 60,
                                  progress=_Progress(run.progress),
                                  known_bugs=run.options.known_bugs)
                if outcome.failure is not None and not driver.alive():
                    # The probe only saw its connection go: the console has the kernel's words.
                    splats = find_splats(vm.console.since(0)) if vm.console else []
                    if splats:
                        outcome.failure += f"\nconsole: {splats[0]}"
        finally:
            if vm.state is VMState.RUNNING:
                guest.cleanup()
            if self.generated is not None:
                if vm.state is VMState.RUNNING:
                    session.discard(*(i.path for i in self.generated.images.values()))
                self.generated.close()
        lines = [f"{outcome.steps} steps, {outcome.sequences} sequences in "
                 f"{outcome.seconds:.0f} s ({outcome.steps_per_second:.1f} steps/s); rules: "
                 f"{dict(sorted(outcome.rules.items()))}"]
        if outcome.failure is None:
            lines.append(f"no divergence from the model (seed {run.seed})")
            return Outcome(Verdict.CLEAN, outcome.as_dict(), lines)
        after_steps, after_seconds = outcome.found_after or (outcome.steps, outcome.seconds)
        path = write_found(run.kernel.spec, run.seed, outcome.failure, outcome.shrunk or [],
                           run.settings.found, after_steps=after_steps,
                           after_seconds=after_seconds,
                           generated=run.options.generated or None)
        lines += [f"first diverged after {after_steps} steps, {after_seconds / 60:.1f} min "
                  f"(then shrinking)",
                  f"DIVERGENCE (seed {run.seed}): {outcome.failure}",
                  f"shrunk to {len(outcome.shrunk or [])} steps: {path}",
                  f"replay with: make repro REPORT={path}"]
        return Outcome(Verdict.FOUND, outcome.as_dict(), lines)
