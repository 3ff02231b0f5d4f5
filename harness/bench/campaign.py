"""What the benchmarks that measure inside one guest share: they are campaigns on the one
runner (harness/campaign/runner.py), so the kernel, the guest and the results JSON
(``<out>/<name>.json``) are handled as for every other campaign. Their table rows are
printed on stdout, ratios measured in this run, never asserted.

The boot benchmark (it measures the boots themselves, many of them), the kernel build
benchmark (no guest) and the suite's throughput (a pytest run with its own pool) are not
campaigns: none of them is one guest doing one piece of work.
"""

from __future__ import annotations

from pathlib import Path

from harness.campaign.runner import Campaign, Settings, run_campaign
from harness.vm.machine import VMConfig


class BenchCampaign(Campaign):
    finds = False
    timed = False  # each bench fixes its own seed and length, so runs compare
    seed: int = 1


def run_bench(bench: BenchCampaign, kernel: str | None, config: VMConfig, out: Path) -> int:
    """Run one bench: its exit status (0 measured, 1 it measured something wrong, 2 it could
    not measure)."""
    return run_campaign(bench, Settings(kernel=kernel, vm=config, seed=bench.seed, minutes=0,
                                        out=out))
