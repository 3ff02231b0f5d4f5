"""The explorer's speed: steps per second in one guest, and where the time of a step goes."""

from __future__ import annotations

from harness.bench.campaign import BenchCampaign
from harness.campaign.runner import CampaignRun, Outcome, Verdict
from harness.core.paths import CATALOG
from harness.erofs.images import build_image, load_catalog
from harness.erofs.tools import provide
from harness.explore.driver import Driver
from harness.explore.machine import explore
from harness.explore.pool import pool_names
from harness.guest.handle import Guest
from harness.guest.session import GuestSession

BENCH_STEPS = 300
TARGET = 20.0  # steps per second


class ExploreBench(BenchCampaign):
    name = "bench-explore"
    help = "the explorer's steps per second in one guest"

    def prepare(self, run: CampaignRun) -> None:
        catalog, tools = load_catalog(CATALOG), provide()
        self.names = pool_names(run.kernel.features)
        self.images = {name: build_image(catalog.image(name), tools) for name in self.names}
        run.say(f"explorer, seed {self.seed}, {BENCH_STEPS} steps")

    def run(self, run: CampaignRun, session: GuestSession) -> Outcome:
        vm = session.vm
        guest = Guest(session, self.name)
        try:
            with Driver(guest, self.images) as driver:
                outcome = explore(driver, self.names, seed=self.seed, steps=BENCH_STEPS,
                                  seconds=1e9)
        finally:
            guest.cleanup()
        rate = outcome.steps_per_second
        print(f"| explorer steps per second (one guest, {vm.accel.name if vm.accel else '?'})"
              f" | {rate:.1f} ({outcome.steps} steps in {outcome.seconds:.0f} s) "
              f"| target >= {TARGET:g} | {rate / TARGET:.2f}x of target |")
        print(f"| explorer ms per step, by rule | {outcome.ms_per_step()} | | |", flush=True)
        results = {"steps": outcome.steps, "steps_per_second": round(rate, 2),
                   "target": TARGET, "ms_per_step": outcome.ms_per_step()}
        if outcome.failure:
            results["diverged"] = outcome.failure
            return Outcome(Verdict.FOUND, results, [
                f"the run diverged (make explore SEED={self.seed} shows it): "
                f"{outcome.failure}"])
        return Outcome(Verdict.CLEAN, results)
