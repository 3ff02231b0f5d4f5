"""`make layouts`: generated trees built with generated mkfs.erofs layouts, mounted on every
source, plain and sharing, each checked against its tree and against the sharing model.
A campaign (harness/campaign/runner.py); the search itself is in search.py.

Exit status: 0 nothing found within the budget, 1 a finding (written as
``reports/found/layout-<id>.yaml``, shrunk), 2 no verdict. erofs-utils bugs (mkfs crashes,
fsck rejecting what mkfs wrote) are listed in the results and printed, never reported
against the kernel, and do not change the exit status.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import jinja2

from harness.campaign.found import known_finds, which_known
from harness.campaign.runner import FOUND, Campaign, CampaignRun, Outcome, Verdict
from harness.core.errors import ToolMissing
from harness.core.paths import TEMPLATES
from harness.erofs.tools import ErofsUtils, provide
from harness.guest.session import GuestSession
from harness.kernel.kernel import Kernel
from harness.layouts.found import write_found
from harness.layouts.mkfs import all_options
from harness.layouts.search import Search, Tally


def _results(tally: Tally, seconds: float) -> dict[str, Any]:
    every = all_options()
    return {
        "examples": tally.examples, "checked": tally.checked, "images": tally.images,
        "mounts": tally.mounts,
        "images_per_minute": round(tally.images * 60 / seconds, 1) if seconds else 0,
        "seconds_building": round(tally.seconds_building, 1),
        "seconds_checking": round(tally.seconds_checking, 1),
        "seconds_checking_by_step": {k: round(v, 1) for k, v in tally.step_seconds.items()},
        # Every option there is, with how many checked images used it: a 0 stands out.
        "options": {name: tally.options.get(name, 0) for name in every} | {
            name: n for name, n in tally.options.items() if name not in every},
        "options_drawn": dict(tally.options_drawn),
        "options_never_checked": [name for name in every if not tally.options.get(name)],
        "read_methods": dict(tally.reads),
        "files_mapped_with_fiemap": tally.files_mapped,
        "mkfs_refused": dict(tally.mkfs_refused.most_common()),
        "erofs_utils_bugs": tally.utils_bugs,
        # mkfs.erofs --tar=i --xattr-inode-digest: the feature without a digest (build.py).
        "images_with_the_sharing_feature_and_no_digest": tally.digestless,
        # fsck.erofs --extract read some file other than the tree; the kernel is judged
        # against the tree all the same (build.py, _misread).
        "images_erofs_utils_reads_wrong": tally.misread,
        "kernel_skips": dict(tally.skipped),
        "known_bugs_again": dict(tally.known),
        "findings": [{"failure": f.failure, "signature": f.signature,
                      "after_examples": f.after_examples,
                      "after_seconds": round(f.after_seconds, 1), "shrunk": f.shrunk}
                     for f in tally.findings],
    }


def render_report(results: dict[str, Any], out: Path) -> Path:
    """layouts.html: the run's figures, every option with the images that used it (a 0 in
    red), mkfs refusals, erofs-utils bugs and findings."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)),
                             undefined=jinja2.StrictUndefined, autoescape=True)
    path = out / "layouts.html"
    path.write_text(env.get_template("layouts.html.j2").render(r=results))
    return path


class LayoutsCampaign(Campaign):
    name = "layouts"
    help = ("generated trees and mkfs.erofs layouts, mounted on every source, plain and "
            "sharing, checked against the tree and the sharing model")

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--examples", type=int, default=1_000_000,
                            help="stop after this many examples (default: the time budget)")

    def unmet(self, kernel: Kernel) -> str | None:
        return None if kernel.features.get("erofs", True) else "has no EROFS"

    def write_report(self, results: dict[str, Any], out: Path) -> Path | None:
        return render_report(results, out)

    def prepare(self, run: CampaignRun) -> None:
        self.tools: ErofsUtils = provide()
        if self.tools.dump is None or self.tools.fsck is None:
            raise ToolMissing(f"layouts: {self.tools.describe()} lacks dump.erofs or "
                              f"fsck.erofs, which judge every image before the kernel does")
        self.sharing = bool(run.kernel.features.get("page_cache_share"))
        run.say(f"{self.tools.describe()}; phases: plain"
                + (" and sharing" if self.sharing else " only (no page cache sharing)"))

    def run(self, run: CampaignRun, session: GuestSession) -> Outcome:
        session.need_modules("erofs", "loop")
        # Known bugs come from the project's reports, wherever this run writes its finds.
        known = known_finds(run.kernel, "layout", FOUND)
        search = Search(session, self.tools, sharing=self.sharing, seed=run.seed,
                        seconds=run.time_left(), max_examples=run.options.examples,
                        io_uring=bool(run.kernel.features.get("io_uring", True)),
                        known=lambda failure: which_known(failure, known), say=run.say,
                        tick=run.progress.tick,
                        renew=lambda old, why: run.new_guest(old, why, "erofs", "loop"))
        try:
            findings = search.run()
        finally:
            search.close()
        tally = search.tally
        results = _results(tally, run.elapsed())
        lines = [search.progress()]
        if results["options_never_checked"]:
            lines.append("options no checked image used: "
                         + ", ".join(results["options_never_checked"]))
        kinds: dict[str, list[dict[str, Any]]] = {}
        for bug in tally.utils_bugs:
            kinds.setdefault(bug["kind"], []).append(bug)
        for same in kinds.values():
            lines.append(f"erofs-utils bug (report it to erofs-utils, not the kernel), "
                         f"{len(same)} images: {same[0]['what']}\n  e.g. mkfs.erofs "
                         f"{same[0]['mkfs']}")
        if search.broke is not None:
            results["broke"] = search.broke
            lines.append(f"NO VERDICT: the search broke off: {search.broke}")
        elif not findings and not tally.checked:
            lines.append("NO VERDICT: no example reached the kernel (mkfs refused or erofs-utils "
                         "failed every one, or the budget was spent before the first)")
        if not findings and (search.broke is not None or not tally.checked):
            return Outcome(Verdict.NO_VERDICT, results, lines)
        if not findings:
            lines.append(f"every image read back as its tree and shared as the model says "
                         f"(seed {run.seed})")
            return Outcome(Verdict.CLEAN, results, lines)
        paths = []
        for finding in findings:
            path = write_found(run.kernel.spec, run.seed, finding.example, finding.failure,
                               run.settings.found or FOUND, examples=finding.after_examples,
                               seconds=finding.after_seconds, shrunk=finding.shrunk)
            paths.append(str(path))
            lines.append(f"FOUND after {finding.after_examples} examples, "
                         f"{finding.after_seconds / 60:.1f} min (seed {run.seed}"
                         f"{', shrunk' if finding.shrunk else ''}): "
                         f"{finding.failure.splitlines()[0][:400]}\n  written to {path}\n"
                         f"  replay with: make repro REPORT={path}")
        results["found_reports"] = paths
        return Outcome(Verdict.FOUND, results, lines)
