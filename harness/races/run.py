"""`make races`: every pair of operations (or the PAIRS= selection) side by side on mounts of
one domain, each cell with the windows held open; a campaign (harness/campaign/runner.py).

Exit status: 0 every cell clean (known bugs met again are counted, not failures), 1 a
finding (written as ``reports/found/race-<id>.yaml``), 2 no verdict. Cells left when the
time budget is spent are listed as not run; the run then has no verdict on them.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path
from typing import Any

from harness.campaign.found import known_finds, which_known
from harness.campaign.runner import FOUND, Campaign, CampaignRun, Outcome, Verdict
from harness.core.errors import HarnessError
from harness.erofs.tools import provide
from harness.guest.session import GuestSession
from harness.kernel.kernel import Kernel
from harness.races.cells import CellResult, CellRunner, build_images
from harness.races.found import write_found
from harness.races.ops import OPS, TARGETS, WIDENERS, parse_choice, parse_pairs, plan

TARGET_OVERLAPS = 100  # measured overlaps a pair should reach within its budget


def pair_table(cells: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per pair: cells run, overlaps and iterations summed over its targets, findings."""
    table: dict[str, dict[str, Any]] = {}
    for row in cells:
        entry = table.setdefault(row["pair"], {"cells": 0, "overlaps": 0, "a_iterations": 0,
                                               "b_iterations": 0, "verdicts": Counter()})
        entry["cells"] += 1
        entry["overlaps"] += row.get("overlaps", 0)
        entry["a_iterations"] += row.get("a_iterations", 0)
        entry["b_iterations"] += row.get("b_iterations", 0)
        entry["verdicts"][row["verdict"]] += 1
    for entry in table.values():
        entry["verdicts"] = dict(entry["verdicts"])
    return table


def render_table(results: dict[str, Any], out: Path) -> Path:
    """races.md: the pair table (overlaps, iterations, verdicts) and each finding."""
    lines = [f"# make races: {results['kernel']} ({results['release']}), seed "
             f"{results['seed']}", "",
             f"{results['cells_run']} of {results['cells_planned']} cells, "
             f"{results['seconds']:.0f} s; wideners: {', '.join(results['wideners'])}", "",
             "| pair | cells | overlaps | iterations a / b | verdicts |",
             "|---|---:|---:|---:|---|"]
    for name, entry in results["pairs"].items():
        mark = "" if entry["overlaps"] >= TARGET_OVERLAPS else " (under 100)"
        verdicts = ", ".join(f"{k} {v}" for k, v in sorted(entry["verdicts"].items()))
        lines.append(f"| {name} | {entry['cells']} | {entry['overlaps']}{mark} | "
                     f"{entry['a_iterations']} / {entry['b_iterations']} | {verdicts} |")
    for finding in results["findings"]:
        lines += ["", f"## {finding['cell']}", "", "```", finding["failure"], "```"]
    path = out / "races.md"
    path.write_text("\n".join(lines) + "\n")
    return path


class RacesCampaign(Campaign):
    name = "races"
    help = ("pairs of operations side by side on mounts of one domain, the windows held "
            "open by dm-delay, large files, cold caches and memory pressure")
    minutes = 120.0  # an upper bound: the run ends when its cells are done

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--pairs", default="",
                            help="comma-separated a+b pairs, or operations for all their "
                                 f"pairs (default every pair); operations: {', '.join(OPS)}")
        parser.add_argument("--seconds", type=float, default=2.0,
                            help="seconds each cell (a pair on a target) runs")
        parser.add_argument("--targets", default="",
                            help=f"comma-separated targets (default all: {', '.join(TARGETS)})")
        parser.add_argument("--wideners", default="",
                            help=f"comma-separated window wideners, or none (default all: "
                                 f"{', '.join(WIDENERS)})")

    def unmet(self, kernel: Kernel) -> str | None:
        if not kernel.features.get("page_cache_share"):
            return "has no EROFS page cache sharing (CONFIG_EROFS_FS_PAGE_CACHE_SHARE)"
        return None

    def prepare(self, run: CampaignRun) -> None:
        options = run.options
        if options.seconds <= 0:
            raise HarnessError(f"SECONDS: {options.seconds:g} is not a positive duration")
        pairs = parse_pairs(options.pairs)
        targets = parse_choice(options.targets, {k: v[0] for k, v in TARGETS.items()},
                               "TARGETS")
        wideners = parse_choice(options.wideners, WIDENERS, "WIDENERS")
        if not pairs or not targets:
            raise HarnessError("PAIRS and TARGETS leave no cell to run")
        self.cells = plan(pairs, targets, options.seconds, run.seed, wideners)
        self.wideners = wideners
        self.images = build_images(provide())
        estimate = sum(c.seconds + 2.5 for c in self.cells) / 60
        run.say(f"{len(pairs)} pairs, {len(self.cells)} cells of {options.seconds:g} s "
                f"(about {estimate:.0f} min under TCG); wideners: "
                f"{', '.join(wideners) or 'none'}")

    def run(self, run: CampaignRun, session: GuestSession) -> Outcome:
        known = known_finds(run.kernel, "race", FOUND)
        runner = CellRunner(session, self.images)
        rows: list[dict[str, Any]] = []
        findings: list[dict[str, Any]] = []
        known_again: Counter[str] = Counter()
        overlaps_total = 0
        planned = len(self.cells)

        def progress() -> str:
            return (f"{len(rows)}/{planned} cells, {len({r['pair'] for r in rows})} pairs, "
                    f"{overlaps_total} overlaps, {len(findings)} findings"
                    + (f", {sum(known_again.values())} known bugs met again"
                       if known_again else ""))

        remaining = list(self.cells)
        unreachable = 0
        while remaining:
            # Only as many cells as the budget still has room for go to the guest.
            fit, room = [], run.time_left()
            for cell in remaining:
                room -= cell.seconds + 3
                if room < 0:
                    break
                fit.append(cell)
            if not fit:
                break
            before, spoilt = len(remaining), False
            for result in runner.run(fit, run.seed,
                                     started=lambda cell: run.progress.tick(progress)):
                remaining.remove(result.cell)
                row = self._row(result)
                overlaps_total += row.get("overlaps", 0)
                if result.raw.get("unreachable"):
                    row["verdict"] = "lost"  # the guest refused a channel: no verdict
                    unreachable += 1
                elif result.problems:
                    self._judge(run, result, row, known, known_again, findings, len(rows))
                rows.append(row)
                run.progress.tick(progress)
                spoilt = result.spoils_guest
                if spoilt:
                    break
            if not spoilt and len(remaining) < before:
                continue
            # The guest died, hung, or its kernel oopsed: the cells left get a new one.
            if not remaining:
                break
            fresh = run.new_guest(runner.session, f"for the {len(remaining)} cells left")
            if fresh is None:
                break
            runner = CellRunner(fresh, self.images)
        run.progress.tick(progress, force=True)
        results: dict[str, Any] = {
            "cells_planned": planned, "cells_run": len(rows),
            "cells_not_run": [c.id for c in remaining],
            "wideners": list(self.wideners),
            "wideners_missing": runner.wideners_missing,
            "pairs": pair_table(rows), "cells": rows, "findings": findings,
            "known_bugs_again": dict(known_again), "guest_restarts": run.new_guests,
            "cells_lost_to_ssh": unreachable,
        }
        under = [name for name, entry in results["pairs"].items()
                 if entry["overlaps"] < TARGET_OVERLAPS]
        results["pairs_under_target"] = under
        lines = [progress()]
        if runner.wideners_missing:
            lines.append("wideners off: " + "; ".join(
                f"{k}: {v}" for k, v in runner.wideners_missing.items()))
        if under:
            lines.append(f"{len(under)} pairs under {TARGET_OVERLAPS} overlaps: "
                         + ", ".join(under[:30]) + (" ..." if len(under) > 30 else ""))
        if remaining:
            lines.append(f"{len(remaining)} cells not run (time budget or a lost guest)")
        if findings:
            for finding in findings:
                lines.append(f"FOUND {finding['cell']} after {finding['minutes']} min: "
                             f"{finding['report']}\n  replay with: make repro "
                             f"REPORT={finding['report']}")
            return Outcome(Verdict.FOUND, results, lines)
        if not rows:
            lines.append("NO VERDICT: no cell ran")
            return Outcome(Verdict.NO_VERDICT, results, lines)
        lines.append(f"every cell clean (seed {run.seed})")
        return Outcome(Verdict.CLEAN, results, lines)

    @staticmethod
    def _judge(run: CampaignRun, result: CellResult, row: dict[str, Any],
               known: dict[str, re.Pattern[str]], known_again: Counter[str],
               findings: list[dict[str, Any]], cells_before: int) -> None:
        """A failed cell: a known bug met again (counted), or a finding (written)."""
        failure = result.failure()
        name = which_known(failure, known)
        if name is not None:
            row["verdict"] = f"known:{name}"
            known_again[name] += 1
            return
        path = write_found(run.kernel.spec, run.seed, result.cell, failure,
                           run.settings.found or FOUND, cells_run=cells_before + 1,
                           seconds=run.elapsed(), raw=result.raw)
        findings.append({"cell": result.cell.id, "failure": failure, "report": str(path),
                         "minutes": round(run.elapsed() / 60, 2)})
        run.say(f"FOUND in {result.cell.id} after {run.elapsed() / 60:.1f} min:\n  "
                + "\n  ".join(result.problems[:6]) + f"\n  written to {path}")

    @staticmethod
    def _row(result: CellResult) -> dict[str, Any]:
        raw, cell = result.raw, result.cell
        keep = ("overlaps", "a_met", "b_met", "a_iterations", "b_iterations", "a_allowed",
                "b_allowed", "methods", "a_seconds", "b_seconds", "slab_before",
                "slab_after", "sharing")
        return {"cell": cell.id, "pair": cell.pair.name, "target": cell.target,
                "layout": cell.layout, "sources": list(cell.sources),
                **{k: raw[k] for k in keep if k in raw},
                "verdict": "clean" if not result.problems else "found",
                "problems": result.problems[:20]}

    def write_report(self, results: dict[str, Any], out: Path) -> Path | None:
        return render_table(results, out)

