"""`make fuzz`: seeded random damage to the hostile images, each tried as the corpus tests do
(harness/hostile/trial.py) in one guest, for a time budget, with progress shown.

A trial that splats, kills or hangs the guest, or breaks a rule of the trial, is written as
a ready report, ``reports/found/fuzz-<id>.yaml``, carrying the damage itself (edits and
truncation over the image the catalog builds), so that ``make repro`` replays it through
``testcases/test_hostile_images.py::test_found_damage_replays``. The fuzzer stops at the
first find: after a crash the guest is gone, and a damage that broke a rule is worth a
look before more of the same. A find that is a known bug again (the signature of an
earlier find's ``known_bug:`` that applies to this kernel) is counted and the fuzzer goes
on, so that a nightly campaign is not ended each night by the bug it already reported.
"""

from __future__ import annotations

import hashlib
import json
import random
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from harness.campaign.found import found_report, known_finds, save_found, which_known
from harness.campaign.runner import FOUND, Campaign, CampaignRun, Outcome, Verdict
from harness.core.errors import HarnessError, ToolMissing
from harness.core.names import SOURCES
from harness.core.paths import CATALOG
from harness.erofs.damage import Damage, random_damage
from harness.erofs.images import BuiltImage, build_image, load_catalog
from harness.erofs.layout import ImageLayout, image_layout
from harness.erofs.tools import provide
from harness.guest.handle import Guest
from harness.guest.mounts import Mounter
from harness.guest.session import GuestSession
from harness.hostile.trial import Trial, damaged_copy, run_trial
from harness.kernel.kernel import Kernel
from harness.kernel.spec import KernelSpec
from harness.vm.machine import VM, VMState
from harness.vm.splats import splats_seen

IMAGES = ("hostile", "hostile-lz4")
REPLAY_TEST = "testcases/test_hostile_images.py::test_found_damage_replays"


@dataclass
class FuzzOutcome:
    seed: int
    trials: int = 0
    seconds: float = 0.0
    refused: int = 0
    read_errors: int = 0
    foreign: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    found: str | None = None  # what went wrong, if anything
    known: Counter[str] = field(default_factory=Counter)  # known bugs met again, by report
    damage: Damage | None = None
    image: str = ""
    source: str = ""
    sharing: bool = True

    def as_dict(self) -> dict[str, object]:
        return {"seed": self.seed, "trials": self.trials, "seconds": round(self.seconds, 1),
                "trials_per_second": round(self.trials / self.seconds, 2) if self.seconds else 0,
                "mounts_refused": self.refused, "read_errors": self.read_errors,
                "twins_served_damaged_bytes": self.foreign, "kinds": dict(self.kinds),
                "found": self.found, "known_bugs_again": dict(self.known)}


def found_id(kernel: str, image: str, damage: Damage, source: str, sharing: bool) -> str:
    blob = json.dumps([kernel, image, damage.as_dict(), source, sharing], sort_keys=True)
    return f"fuzz-{hashlib.sha256(blob.encode()).hexdigest()[:10]}"


def write_found(spec: KernelSpec, outcome: FuzzOutcome, directory: Path = FOUND) -> Path:
    kernel = str(spec)
    assert outcome.damage is not None and outcome.found is not None
    ident = found_id(kernel, outcome.image, outcome.damage, outcome.source, outcome.sharing)
    report = found_report(spec, f"fuzz: {outcome.found.splitlines()[0][:150]}",
                          f"make fuzz KERNEL={kernel} SEED={outcome.seed} "
                          f"(trial {outcome.trials})", f"{REPLAY_TEST}[{ident}]", 600,
                          directory)
    report["damage"] = {"image": outcome.image, "source": outcome.source,
                        "sharing": outcome.sharing, **outcome.damage.as_dict(),
                        "failure": outcome.found}
    return save_found(directory, ident,
                      "# Found by `make fuzz`: the damage below, applied to the catalog's "
                      "image,\n# mounted beside the healthy one. `make repro REPORT=<this "
                      "file>` replays it.\n", report)


def _splats(vm: VM, probe_log: str, console_from: int) -> str:
    found = splats_seen(vm.console.since(console_from) if vm.console else "", probe_log)
    return "\n\n".join(map(str, found))


def _one(guest: Guest, vm: VM, healthy: BuiltImage, layout: ImageLayout, damage: Damage,
         workdir: Path, source: str, sharing: bool) -> tuple[Trial | None, str | None]:
    """Run one trial in a fresh work directory: (trial, what went wrong or None)."""
    probe = guest.session.probe
    mark = probe.kernel_log_mark()
    console_from = vm.console_offset()
    mount = Mounter(guest)
    trial: Trial | None = None
    problem: str | None = None
    try:
        trial = run_trial(mount, probe, healthy, damaged_copy(healthy, damage, workdir),
                          damage, layout, source, sharing)
        if trial.violations:
            problem = f"{trial.summary()}\n" + "\n".join(trial.violations)
    except HarnessError as exc:
        problem = f"the trial broke off: {exc}"
    log = ""
    if vm.state is VMState.RUNNING:
        try:
            log = probe.kernel_log_since(mark).text
            guest.cleanup()
        except HarnessError as exc:
            problem = (problem or "") + f"\nthe guest did not answer after the trial: {exc}"
    splats = _splats(vm, log, console_from)
    if splats:
        problem = f"kernel report: {splats}" + (f"\n{problem}" if problem else "")
    return trial, problem


class FuzzCampaign(Campaign):
    name = "fuzz"
    help = "seeded random damage to images, mounted beside their healthy twins"

    def unmet(self, kernel: Kernel) -> str | None:
        return None

    def prepare(self, run: CampaignRun) -> None:
        catalog, tools = load_catalog(CATALOG), provide()
        if tools.dump is None:
            raise ToolMissing("fuzz: dump.erofs is needed to map the images")
        self.sharing_ok = bool(run.kernel.features.get("page_cache_share"))
        self.images = {name: build_image(catalog.image(name), tools) for name in IMAGES}
        self.layouts = {name: image_layout(image, tools.dump)
                        for name, image in self.images.items()}
        run.say(f"images: {', '.join(IMAGES)}; sharing "
                f"{'on and off' if self.sharing_ok else 'off (no support)'}")

    def run(self, run: CampaignRun, session: GuestSession) -> Outcome:
        vm = session.vm
        rng = random.Random(run.seed)
        outcome = FuzzOutcome(run.seed)
        known = known_finds(run.kernel, "fuzz")
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="erofs-fuzz.") as tmp:
            data = {name: image.path.read_bytes() for name, image in self.images.items()}
            while run.time_left() > 0:
                name = rng.choice(IMAGES)
                damage = random_damage(self.layouts[name], data[name], rng)
                source = rng.choice(SOURCES)
                sharing = self.sharing_ok and rng.random() < 0.75
                guest = Guest(session, f"fuzz{outcome.trials}")
                trial, problem = _one(guest, vm, self.images[name], self.layouts[name],
                                      damage, Path(tmp), source, sharing)
                outcome.trials += 1
                outcome.kinds[damage.name.split(":")[1]] += 1
                if trial is not None:
                    outcome.refused += not trial.mount_ok
                    outcome.read_errors += trial.read_errors
                    outcome.foreign += len(trial.foreign)
                # The damaged copy is used once: keep the temporary directory small.
                for stale in Path(tmp).glob("*.erofs"):
                    stale.unlink()
                again = which_known(problem, known) if problem is not None else None
                if again is not None and vm.state is VMState.RUNNING:
                    outcome.known[again] += 1
                    run.say(f"trial {outcome.trials}: the known bug of {again} again "
                            f"({damage.name}, {source}); going on")
                    continue
                if problem is not None:
                    outcome.found, outcome.damage = problem, damage
                    outcome.image, outcome.source, outcome.sharing = name, source, sharing
                    break
                run.progress.tick(lambda: (
                    f"{outcome.trials} trials in {time.monotonic() - started:.0f} s "
                    f"({outcome.trials / (time.monotonic() - started):.2f}/s); refused "
                    f"{outcome.refused}, read errors {outcome.read_errors}, twins served "
                    f"damaged bytes {outcome.foreign}"))
        outcome.seconds = time.monotonic() - started
        again = ", ".join(f"{name} x{n}" for name, n in sorted(outcome.known.items()))
        lines = [f"{outcome.trials} trials in {outcome.seconds:.0f} s; refused "
                 f"{outcome.refused}, read errors {outcome.read_errors}, twins served damaged "
                 f"bytes {outcome.foreign}; known bugs again: {again or 'none'}"]
        if outcome.found is None:
            lines.append(f"nothing {'new ' if outcome.known else ''}found (seed {run.seed})")
            return Outcome(Verdict.CLEAN, outcome.as_dict(), lines)
        path = write_found(run.kernel.spec, outcome, run.settings.found or FOUND)
        lines += [f"FOUND (seed {run.seed}, trial {outcome.trials}): {outcome.found}",
                  f"written to {path}", f"replay with: make repro REPORT={path}"]
        return Outcome(Verdict.FOUND, outcome.as_dict(), lines)
