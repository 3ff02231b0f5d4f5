"""`make stress`: concurrency in one guest for a time budget. Readers on many mounts of twin
images (plain and lz4, loop and file-backed, two domains and no sharing) read whole files
through every access path and verify every byte, while a churner mounts, unmounts plainly
and lazily, remounts, drops caches and reads under a tight memory.max
(harness/guest/helpers/stress.py). Progress every 10 s; the figures go to
``<out>/stress.json``.

Exit status: 0 when every read was right, no read failed but for a mount that had gone, the
kernel reported nothing and the guest lived; 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from harness.campaign.runner import Campaign, CampaignRun, Outcome, Verdict
from harness.core.paths import CATALOG
from harness.erofs.images import build_image, load_catalog
from harness.erofs.tools import provide
from harness.guest.probe import PROBE_SOURCE
from harness.guest.session import GuestSession
from harness.vm.machine import VMState
from harness.vm.splats import splats_seen

IMAGES = ("sizes", "renamed", "sizes-lz4", "renamed-lz4")
STRESS_SOURCE = PROBE_SOURCE.parent / "stress.py"


def _progress(total: dict[str, Any]) -> str:
    seconds = max(float(total["seconds"]), 0.1)
    churn = " ".join(f"{k}={v}" for k, v in sorted(total.get("churn", {}).items()))
    return (f"{total['seconds']:.0f} s: {total['reads']} reads "
            f"({total['reads'] / seconds:.1f}/s), {total['bytes'] / 2**20:.0f} MiB verified, "
            f"{len(total['wrong'])} wrong, {len(total['errors'])} errors, "
            f"{len(total.get('stuck', []))} stuck, {total['gone']} "
            f"reads of a mount that had gone; churn: {churn}")


class StressCampaign(Campaign):
    name = "stress"
    help = "parallel readers verifying every byte while mounts churn"
    finds = False

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--readers", type=int, default=4, help="reader processes")

    def prepare(self, run: CampaignRun) -> None:
        catalog, tools = load_catalog(CATALOG), provide()
        self.images = {name: build_image(catalog.image(name), tools) for name in IMAGES}
        run.say(f"{run.options.readers} readers; images {', '.join(IMAGES)}")

    def run(self, run: CampaignRun, session: GuestSession) -> Outcome:
        vm = session.vm
        minutes = run.settings.minutes
        result: dict[str, Any] = {"readers": run.options.readers}
        session.need_modules("erofs", "loop")
        uploads = {name: session.upload(image.path, f"{image.key}.erofs")
                   for name, image in self.images.items()}
        cfg = {"seed": run.seed, "seconds": minutes * 60, "readers": run.options.readers,
               "max_mounts": 8, "churn_pause": 0.2, "progress": 10, "uploads": uploads,
               "images": {name: {f["path"]: f["sha256"] for f in image.files()}
                          for name, image in self.images.items()}}
        console_from = vm.console_offset()
        total: dict[str, Any] | None = None
        try:
            for total in session.agent.stream(STRESS_SOURCE, [json.dumps(cfg)],
                                              minutes * 60 + 600):
                run.say(_progress(total))
                if total.get("done"):
                    break
        except (OSError, TimeoutError, ValueError) as exc:
            result["lost"] = f"the stress run in the guest ended: {exc!r}"
        alive = vm.state is VMState.RUNNING and vm.responsive()
        log = vm.run("dmesg", check=False).stdout if alive else ""
        splats = splats_seen(vm.console.since(console_from) if vm.console else "", log)
        result.update(total or {})
        result["splats"] = [str(s) for s in splats]
        result["guest_alive"] = alive
        problems = [*(f"wrong bytes: {w}" for w in result.get("wrong", [])),
                    *(f"error: {e}" for e in result.get("errors", [])),
                    *(f"stuck: {e}" for e in result.get("stuck", [])), *result["splats"]]
        if "lost" in result:
            problems.append(result["lost"])
        if not result["guest_alive"]:
            problems.append("the guest died")
        if total is None or not total.get("done"):
            problems.append("the stress run did not finish")
        lines = [f"{result.get('reads', 0)} reads, {result.get('bytes', 0) / 2**20:.0f} MiB "
                 f"verified in {result.get('seconds', 0):.0f} s, {len(result['splats'])} "
                 f"kernel reports"]
        if problems:
            lines.append(f"FAILED (seed {run.seed}):\n  " + "\n  ".join(problems[:40]))
            return Outcome(Verdict.FOUND, result, lines)
        lines.append("every byte right, no kernel report")
        return Outcome(Verdict.CLEAN, result, lines)
