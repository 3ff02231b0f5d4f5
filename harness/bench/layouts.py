"""make layouts' speed: generated images fully checked per minute (every source, plain and
sharing) in one guest, for a fixed seed and a fixed time, and where the checking time goes."""

from __future__ import annotations

from harness.bench.campaign import BenchCampaign
from harness.campaign.found import known_finds, which_known
from harness.campaign.runner import CampaignRun, Outcome, Verdict
from harness.erofs.tools import provide
from harness.guest.session import GuestSession
from harness.layouts.search import Search

BENCH_SECONDS = 180.0
TARGET = 20.0  # images per minute


class LayoutsBench(BenchCampaign):
    name = "bench-layouts"
    help = "make layouts' generated images fully checked per minute"
    seed = 3

    def prepare(self, run: CampaignRun) -> None:
        self.tools = provide()
        run.say(f"make layouts, seed {self.seed}, {BENCH_SECONDS:g} s")

    def run(self, run: CampaignRun, session: GuestSession) -> Outcome:
        vm, kernel = session.vm, run.kernel
        # The known bugs count, as in make layouts: else the first one stops the clock.
        known = known_finds(kernel, "layout")
        search = Search(session, self.tools,
                        sharing=bool(kernel.features.get("page_cache_share")),
                        seed=self.seed, seconds=BENCH_SECONDS, max_examples=1_000_000,
                        io_uring=bool(kernel.features.get("io_uring", True)),
                        known=lambda failure: which_known(failure, known))
        try:
            findings = search.run()
        finally:
            search.close()
        tally = search.tally
        rate = tally.images * 60 / BENCH_SECONDS
        print(f"| make layouts: generated images fully checked per minute (one guest, "
              f"{vm.accel.name if vm.accel else '?'}) | {rate:.1f} ({tally.images} images, "
              f"{tally.mounts} mounts, {tally.examples} examples drawn in {BENCH_SECONDS:g} s)"
              f" | target >= {TARGET:g} | {rate / TARGET:.2f}x of target |")
        per_step = {k: round(v / max(tally.checked, 1), 2)
                    for k, v in tally.step_seconds.most_common()}
        print(f"| make layouts: seconds per example, by step | "
              f"{', '.join(f'{k} {v:.2f}' for k, v in per_step.items())} | | |", flush=True)
        results = {"images": tally.images, "mounts": tally.mounts,
                   "examples": tally.examples, "images_per_minute": round(rate, 1),
                   "target": TARGET, "seconds_per_example_by_step": per_step}
        if findings:
            return Outcome(Verdict.FOUND, results, [
                f"the run found {len(findings)} problems (make layouts SEED={self.seed} "
                "shows them)"])
        return Outcome(Verdict.CLEAN, results)
