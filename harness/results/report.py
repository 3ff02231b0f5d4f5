"""Results of a suite run: per-test outcomes and measurements, as a terminal table, JSON
and HTML (one report per configuration: kernel release and accelerator)."""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import jinja2

from harness.core.paths import TEMPLATES


@dataclass
class CaseResult:
    nodeid: str
    outcome: str  # passed | failed | skipped | xfailed | xpassed | error
    duration: float
    measurements: dict[str, Any] = field(default_factory=dict)
    reason: str = ""
    # Seconds from setup to the end of teardown: total, and what of it went to the guest
    # (guest, hotplug), to boots, and to the harness itself (the rest).
    timing: dict[str, float] = field(default_factory=dict)
    worker: str = ""

    @property
    def function(self) -> str:
        return self.nodeid.split("[", 1)[0]

    @property
    def params(self) -> str:
        match = re.search(r"\[(.*)\]$", self.nodeid)
        return match.group(1) if match else ""


@dataclass
class Report:
    config: dict[str, Any]
    cases: list[CaseResult] = field(default_factory=list)
    seconds: float = 0.0

    def counts(self) -> Counter[str]:
        return Counter(case.outcome for case in self.cases)

    def measured(self) -> list[CaseResult]:
        return [case for case in self.cases if case.measurements]

    def savings(self) -> list[dict[str, Any]]:
        """Memory saved by sharing, from tests that measured a first and a second reader.

        Without sharing a second reader of the same content costs what the first did; with
        ideal sharing it costs nothing, so N readers cost 1/N of the baseline.
        """
        rows = []
        for case in self.measured():
            m = case.measurements
            for unit, first_key, second_key in (("Cached KiB", "cached_first_kib",
                                                 "cached_second_kib"),
                                                ("memcg KiB", "memcg_first_kib",
                                                 "memcg_second_kib")):
                if first_key in m and second_key in m and m[first_key] > 0:
                    first, second = m[first_key], m[second_key]
                    baseline, actual = 2 * first, first + second
                    rows.append({"case": case.nodeid, "what": unit, "readers": 2,
                                 "baseline": baseline, "actual": actual,
                                 "ideal": first, "saving": 1 - actual / baseline})
            if "readers" in m and "cached_all_kib" in m:
                baseline = m["readers"] * m["file_kib"]
                rows.append({"case": case.nodeid, "what": "Cached KiB", "readers": m["readers"],
                             "baseline": baseline, "actual": m["file_kib"] + m["cached_all_kib"],
                             "ideal": m["file_kib"],
                             "saving": 1 - (m["file_kib"] + m["cached_all_kib"]) / baseline})
        return rows

    def exploration(self) -> list[dict[str, Any]]:
        """Runs of the stateful explorer: steps, steps per second, how often each rule ran."""
        rows = []
        for case in self.measured():
            m = case.measurements
            if "explore_steps" in m:
                rules = {k[len("explore_rule_"):]: v for k, v in m.items()
                         if k.startswith("explore_rule_")}
                rows.append({"case": case.nodeid, "steps": m["explore_steps"],
                             "seconds": m.get("explore_seconds", 0),
                             "steps_per_second": m.get("explore_steps_per_second", 0),
                             "sequences": m.get("explore_sequences", 0), "rules": rules})
        return rows

    def robustness(self) -> dict[str, Any]:
        """Hostile-image trials (damaged before or under a live mount): inputs tried, mounts
        refused, read errors, crashes and wrong bytes (failed trials), twins that served a
        damaged twin's bytes (the documented same-fingerprint case), images unchanged."""
        ran = [c for c in self.cases if "test_hostile_images.py" in c.nodeid
               and c.outcome not in ("skipped", "deselected")]
        if not ran:
            return {}
        # A trial that crashed the guest measured nothing: it still counts as failed.
        trials = [c for c in ran if "hostile_refused" in c.measurements]
        broken = [c for c in ran if c.outcome in ("failed", "error")]
        return {
            "inputs": len(ran),
            "mounts_refused": sum(int(c.measurements["hostile_refused"]) for c in trials),
            "read_errors": sum(int(c.measurements["hostile_read_errors"]) for c in trials),
            "twins_served_damaged_bytes": sum(int(c.measurements["hostile_foreign"])
                                              for c in trials),
            "failed": len(broken),
            "images_unchanged": sum(bool(c.measurements.get("hostile_images_unchanged"))
                                    for c in trials),
        }

    def time_split(self) -> dict[str, Any]:
        """Where the cases' time went: per kind, the sum over all cases, and the mean and
        median per case; with the workers that ran them, so that the harness's own time
        per case per worker can be judged against the run's wall time."""
        timed = [c.timing for c in self.cases if c.timing]
        if not timed:
            return {}
        split: dict[str, Any] = {"cases": len(timed), "wall_seconds": round(self.seconds, 1),
                                 "workers": len({c.worker for c in self.cases if c.worker})
                                 or 1}
        for kind in ("total", "guest", "hotplug", "boot", "harness"):
            values = sorted(t.get(kind, 0.0) for t in timed)
            split[kind] = {"sum": round(sum(values), 1),
                           "mean": round(sum(values) / len(values), 3),
                           "median": round(values[len(values) // 2], 3)}
        return split

    def table(self) -> str:
        counts = self.counts()
        lines = [f"EROFS page cache sharing: kernel {self.config.get('kernel')} "
                 f"accel {self.config.get('accel')}: {len(self.cases)} cases, "
                 + ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
                 + f" in {self.seconds:.0f} s"]
        by_function: dict[str, Counter[str]] = defaultdict(Counter)
        for case in self.cases:
            by_function[case.function.split("::")[-1]][case.outcome] += 1
        width = max((len(name) for name in by_function), default=10)
        for name, outcome in sorted(by_function.items()):
            lines.append(f"  {name:<{width}}  " + "  ".join(f"{k} {n}" for k, n
                                                           in sorted(outcome.items())))
        savings = self.savings()
        if savings:
            lines.append("  memory saved by sharing (baseline: no sharing; ideal: one copy):")
            lines.append(f"    {'case':<72} {'what':<10} {'N':>3} {'baseline':>9} "
                         f"{'actual':>9} {'ideal':>9} {'saving':>7}")
            for row in savings:
                case = row["case"].split("::")[-1]
                lines.append(f"    {case[:72]:<72} {row['what']:<10} {row['readers']:>3} "
                             f"{row['baseline']:>9} {row['actual']:>9} {row['ideal']:>9} "
                             f"{row['saving']:>6.0%}")
        robust = self.robustness()
        if robust:
            lines.append("  hostile images: " + ", ".join(f"{k.replace('_', ' ')} {v}"
                                                          for k, v in robust.items()))
        split = self.time_split()
        if split:
            lines.append(f"  time per case ({split['cases']} cases, {split['workers']} "
                         f"worker(s), {split['wall_seconds']:.0f} s wall), mean/median: "
                         + ", ".join(f"{k} {split[k]['mean']:.2f}/{split[k]['median']:.2f} s"
                                     for k in ("total", "guest", "hotplug", "boot",
                                               "harness")))
        for row in self.exploration():
            rules = " ".join(f"{k}={v}" for k, v in sorted(row["rules"].items()))
            lines.append(f"  exploration: {row['steps']} steps, {row['sequences']} sequences, "
                         f"{row['steps_per_second']} steps/s; rules: {rules}")
        return "\n".join(lines)

    def write(self, folder: Path) -> tuple[Path, Path]:
        folder.mkdir(parents=True, exist_ok=True)
        data = {"config": self.config, "seconds": self.seconds, "counts": dict(self.counts()),
                "savings": self.savings(), "exploration": self.exploration(),
                "robustness": self.robustness(), "time_split": self.time_split(),
                "cases": [asdict(c) for c in self.cases]}
        json_path = folder / "results.json"
        json_path.write_text(json.dumps(data, indent=1))
        env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)),
                                 undefined=jinja2.StrictUndefined, autoescape=True)
        html_path = folder / "report.html"
        html_path.write_text(env.get_template("report.html.j2").render(report=self, data=data))
        return json_path, html_path
