"""`make explore`: boot the kernel, explore for a budget of steps and minutes, show progress,
write the results (JSON) and, on a divergence, the shrunk sequence as reports/found/<id>.yaml.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from pathlib import Path

from harness.core.paths import CATALOG
from harness.erofs.images import build_image, load_catalog
from harness.erofs.tools import provide
from harness.explore.driver import Driver
from harness.explore.found import write_found
from harness.explore.machine import KNOWN_BUG_GUARDS, Budget, explore
from harness.explore.pool import pool_names
from harness.guest.handle import Guest
from harness.guest.session import GuestSession
from harness.pipeline import kernel_for, vm_for
from harness.vm.machine import VMConfig, VMState
from harness.vm.splats import find_splats

PROGRESS_EVERY = 10.0  # seconds between progress lines


class _Progress:
    def __init__(self) -> None:
        self.last = 0.0

    def __call__(self, budget: Budget, stats: Counter[str]) -> None:
        now = time.monotonic()
        if now - self.last < PROGRESS_EVERY:
            return
        self.last = now
        elapsed = now - budget.started
        rate = budget.done / elapsed if elapsed else 0.0
        rules = " ".join(f"{rule}={count}" for rule, count in sorted(stats.items()))
        print(f"explore: {budget.done} steps in {elapsed:.0f} s ({rate:.1f}/s); {rules}",
              file=sys.stderr, flush=True)


def run_explore(kernel_spec: str | None, config: VMConfig, *, seed: int, steps: int,
                minutes: float, out: Path, known_bugs: bool, found: Path | None = None) -> int:
    """0: no divergence within the budget; 1: a divergence, written as a found report (into
    ``found``, by default reports/found)."""
    kernel = kernel_for(kernel_spec)
    catalog, tools = load_catalog(CATALOG), provide()
    names = pool_names(kernel.features)
    if not kernel.features.get("page_cache_share"):
        print(f"explore: {kernel.describe()} has no EROFS page cache sharing", file=sys.stderr)
        return 2
    images = {name: build_image(catalog.image(name), tools) for name in names}
    if not known_bugs:
        for report, guard in KNOWN_BUG_GUARDS.items():
            print(f"explore: steering around a known bug ({report}): {guard}",
                  file=sys.stderr)
    print(f"explore: seed {seed}, up to {steps} steps or {minutes:g} min on {kernel.spec} "
          f"({kernel.release}); images: {', '.join(names)}", file=sys.stderr, flush=True)
    with vm_for(kernel, config, name="explore", artifacts=out) as vm:
        session = GuestSession(vm)
        guest = Guest(session, "explore")
        try:
            with Driver(guest, images) as driver:
                outcome = explore(driver, names, seed=seed, steps=steps, seconds=minutes * 60,
                                  progress=_Progress(), known_bugs=known_bugs)
                if outcome.failure is not None and not driver.alive():
                    # The probe only saw its connection go: the console has the kernel's words.
                    splats = find_splats(vm.console.since(0)) if vm.console else []
                    if splats:
                        outcome.failure += f"\nconsole: {splats[0]}"
        finally:
            if vm.state is VMState.RUNNING:
                guest.cleanup()
    out.mkdir(parents=True, exist_ok=True)
    result = {"kernel": kernel.spec, "release": kernel.release, **outcome.as_dict()}
    (out / "explore.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"explore: {outcome.steps} steps, {outcome.sequences} sequences in "
          f"{outcome.seconds:.0f} s ({outcome.steps_per_second:.1f} steps/s); rules: "
          f"{dict(sorted(outcome.rules.items()))}; results in {out / 'explore.json'}",
          file=sys.stderr)
    if outcome.failure is None:
        print(f"explore: no divergence from the model (seed {seed})", file=sys.stderr)
        return 0
    after_steps, after_seconds = outcome.found_after or (outcome.steps, outcome.seconds)
    path = write_found(kernel.spec, seed, outcome.failure, outcome.shrunk or [], found,
                       after_steps=after_steps, after_seconds=after_seconds)
    print(f"explore: first diverged after {after_steps} steps, {after_seconds / 60:.1f} min "
          f"(then shrinking)", file=sys.stderr)
    print(f"explore: DIVERGENCE (seed {seed}): {outcome.failure}\n"
          f"explore: shrunk to {len(outcome.shrunk or [])} steps: {path}\n"
          f"explore: replay with: make repro REPORT={path}", file=sys.stderr)
    return 1
