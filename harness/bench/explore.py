"""The explorer's speed: steps per second in one guest, and where the time of a step goes."""

from __future__ import annotations

import sys

from harness.core.paths import CATALOG
from harness.erofs.images import build_image, load_catalog
from harness.erofs.tools import provide
from harness.explore.driver import Driver
from harness.explore.machine import explore
from harness.explore.pool import pool_names
from harness.guest.handle import Guest
from harness.pipeline import kernel_for, open_guest
from harness.vm.machine import VMConfig

BENCH_SEED = 1
BENCH_STEPS = 300
TARGET = 20.0  # steps per second


def run_explore_bench(spec: str | None, config: VMConfig) -> None:
    kernel = kernel_for(spec)
    catalog, tools = load_catalog(CATALOG), provide()
    names = pool_names(kernel.features)
    images = {name: build_image(catalog.image(name), tools) for name in names}
    print(f"bench: explorer, seed {BENCH_SEED}, {BENCH_STEPS} steps", file=sys.stderr,
          flush=True)
    with open_guest(kernel, config, name="bench-explore") as session:
        vm = session.vm
        guest = Guest(session, "bench-explore")
        try:
            with Driver(guest, images) as driver:
                outcome = explore(driver, names, seed=BENCH_SEED, steps=BENCH_STEPS,
                                  seconds=1e9)
        finally:
            guest.cleanup()
    print(f"| explorer steps per second (one guest, {vm.accel.name if vm.accel else '?'}) | "
          f"{outcome.steps_per_second:.1f} ({outcome.steps} steps in {outcome.seconds:.0f} s) "
          f"| target >= {TARGET:g} | {outcome.steps_per_second / TARGET:.2f}x of target |")
    print(f"| explorer ms per step, by rule | {outcome.ms_per_step()} | | |")
    if outcome.failure:
        print(f"bench: the run diverged: {outcome.failure}", file=sys.stderr)
