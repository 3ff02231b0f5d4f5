"""make layouts' speed: generated images fully checked per minute (every source, plain and
sharing) in one guest, for a fixed seed and a fixed time, and where the checking time goes."""

from __future__ import annotations

import sys

from harness.campaign.found import known_finds, which_known
from harness.erofs.tools import provide
from harness.layouts.search import Search
from harness.pipeline import kernel_for, open_guest
from harness.vm.machine import VMConfig

BENCH_SEED = 3
BENCH_SECONDS = 180.0
TARGET = 20.0  # images per minute


def run_layouts_bench(spec: str | None, config: VMConfig) -> None:
    kernel = kernel_for(spec)
    tools = provide()
    print(f"bench: make layouts, seed {BENCH_SEED}, {BENCH_SECONDS:g} s", file=sys.stderr,
          flush=True)
    with open_guest(kernel, config, name="bench-layouts") as session:
        vm = session.vm
        kernel = vm.kernel  # with the config a booted kernel gave back, if it had none
        # The known bugs count, as in make layouts: else the first one stops the clock.
        known = known_finds(kernel, "layout")
        search = Search(session, tools, sharing=bool(kernel.features.get("page_cache_share")),
                        seed=BENCH_SEED, seconds=BENCH_SECONDS, max_examples=1_000_000,
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
          f"{tally.mounts} mounts, {tally.examples} examples drawn in {BENCH_SECONDS:g} s) | "
          f"target >= {TARGET:g} | {rate / TARGET:.2f}x of target |")
    steps = ", ".join(f"{k} {v / max(tally.checked, 1):.2f}"
                      for k, v in tally.step_seconds.most_common())
    print(f"| make layouts: seconds per example, by step | {steps} | | |")
    if findings:
        print(f"bench: the run found {len(findings)} problems (make layouts SEED="
              f"{BENCH_SEED} shows them)", file=sys.stderr)
