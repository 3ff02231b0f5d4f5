"""``make savings``: what page cache sharing saves on real container-image pairs, beside
no sharing, composefs and plain overlayfs, all measured in one guest in one run.

Host: build (or reuse from the cache) each pair's two trees, EROFS and composefs images
and store disk. Guest: for each pair and configuration, the helper
(harness/guest/helpers/savings.py) reads every file of both images, then starts 1..N
containers, reporting memory at each count. The ideal is computed here: for reading every
file, the pages of the distinct file contents of both trees; for containers, the pages the
no-sharing containers touched, each distinct content counted once.

A campaign (harness/campaign/runner.py), one without a time budget. Exit status: 0 when
every byte-identical file was shared with inode_share and nothing was without it, 1 when
the kernel shared otherwise or a configuration failed, 2 no verdict.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.campaign.runner import Campaign, CampaignRun, Outcome, Verdict
from harness.core.errors import HarnessError
from harness.erofs.tools import provide as provide_erofs
from harness.guest.probe import PROBE_SOURCE
from harness.guest.session import GuestSession
from harness.savings import composefs, pairs, store
from harness.savings.report import write_report

CONFIGS = ("erofs", "inode_share", "inode_share_buffered", "composefs", "overlay")
CONTAINERS = (1, 2, 4, 8, 16)
HELPER_SOURCE = PROBE_SOURCE.parent / "savings.py"
# The file every container opens first: time to its first byte is the cost to start.
PROBE_FILE = "/usr/bin/python3.11"


def _ideal_containers(touched: dict[str, dict[str, int]], trees: dict[str, pairs.Tree],
                      counts: tuple[int, ...]) -> dict[str, int]:
    """Bytes of the pages containers touched, each distinct content once: container 0 runs
    the old image, 1 the new, so one container needs only old's pages."""
    out = {}
    for count in counts:
        distinct: dict[str, int] = {}
        for side in pairs.SIDES[:min(count, 2)]:
            for path, resident in touched.get(side, {}).items():
                digest = trees[side].files.get(path, (0, path))[1]
                distinct[digest] = max(distinct.get(digest, 0), resident)
        # Keyed as savings.json keys it: by the count as text.
        out[str(count)] = sum(distinct.values()) * pairs.PAGE
    return out


def sharing_census(preshared: dict[str, int], old: pairs.Tree,
                   new: pairs.Tree) -> dict[str, Any]:
    """Which files of the new image were resident before it was read (the old one was read
    whole): those with a byte-identical file in the old image should all be, whole; no
    other file may be."""
    old_contents = {digest for _, digest in old.files.values()}
    identical = {path: size for path, (size, digest) in new.files.items()
                 if size and digest in old_contents}
    whole = [p for p, size in identical.items() if preshared.get(p, 0) >= pairs.pages(size)]
    unshared = sorted(((size, p) for p, size in identical.items()
                       if preshared.get(p, 0) < pairs.pages(size)), reverse=True)
    foreign = sorted(p for p in preshared if p not in identical)
    return {"identical_files": len(identical), "shared_files": len(whole),
            "shared_bytes": sum(identical[p] for p in whole),
            "unshared_files": len(unshared), "unshared_bytes": sum(s for s, _ in unshared),
            "unshared_largest": [{"path": p, "size": s} for s, p in unshared[:10]],
            "resident_without_twin": foreign[:20], "resident_without_twin_count": len(foreign)}


def census_problems(pair: str, read_all: dict[str, Any]) -> list[str]:
    """What the census says the kernel got wrong: with inode_share every identical file is
    shared and no other; without it, nothing is."""
    problems = []
    for config, entry in read_all.items():
        census = entry["census"]
        if config.startswith("inode_share"):
            if census["unshared_files"]:
                largest = ", ".join(u["path"] for u in census["unshared_largest"][:3])
                problems.append(f"{pair}/{config}: {census['unshared_files']} byte-identical "
                                f"files not shared ({largest})")
            if census["resident_without_twin_count"]:
                problems.append(f"{pair}/{config}: {census['resident_without_twin_count']} "
                                "files without an identical twin resident before they were "
                                f"read ({', '.join(census['resident_without_twin'][:3])})")
        elif config == "erofs" and census["shared_files"]:
            problems.append(f"{pair}/erofs: {census['shared_files']} files resident before "
                            "they were read, without inode_share")
    return problems


def _measure_pair(session: GuestSession, pair: pairs.PairSpec, disk: str, counts: tuple[int, ...],
                  configs: tuple[str, ...], say: Callable[[str], None]) -> dict[str, Any]:
    cfg = {"pair": pair.name, "store": disk, "configs": list(configs),
           "containers": list(counts), "run": list(pair.run), "probe": PROBE_FILE}
    out: dict[str, Any] = {"read_all": {}, "containers": {}, "errors": {}}
    started = time.monotonic()
    done = False
    for line in session.agent.stream(HELPER_SOURCE, [json.dumps(cfg)], 3600):
        kind = line.pop("kind")
        elapsed = time.monotonic() - started
        if kind == "done":
            done = True
            break
        config = line.pop("config")
        if kind == "progress":
            say(f"{pair.name}: {config}: {line['containers']} containers ({elapsed:.0f} s)")
        elif kind == "read_all":
            out["read_all"][config] = line
            say(f"{pair.name}: {config}: read every file of both images: "
                f"{line['memcg_bytes'] / 2**20:.1f} MiB charged ({elapsed:.0f} s)")
        elif kind == "containers":
            out["containers"][config] = line
        elif kind == "error":
            out["errors"][config] = line["error"]
            say(f"{pair.name}: {config}: FAILED: {line['error']}")
    if not done:
        raise HarnessError(f"the savings helper for pair {pair.name} ended before it was done")
    return out


def _counts(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(sorted({int(c) for c in text.split(",") if c.strip()}))
    except ValueError:
        raise HarnessError(f"--containers={text!r}: give counts like 1,2,4,8,16") from None
    if not counts or counts[0] < 1:
        raise HarnessError(f"--containers={text!r}: counts must be 1 or more")
    return counts


def _configs(text: str) -> tuple[str, ...]:
    configs = tuple(c.strip() for c in text.split(",") if c.strip()) or CONFIGS
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        raise HarnessError(f"--configs: no configuration {', '.join(unknown)} (known: "
                           f"{', '.join(CONFIGS)})")
    return configs


@dataclass(frozen=True)
class _Pair:
    """One pair as the host prepared it: its two trees, the store disk and their identity."""
    spec: pairs.PairSpec
    old: pairs.Tree
    new: pairs.Tree
    disk: store.Store
    same: pairs.Identity


class SavingsCampaign(Campaign):
    """A campaign without a clock: it measures every chosen pair once, however long that
    takes (--minutes is not read). Its finding is a kernel that shares what it must not, or
    fails to share what it must (census_problems), or a configuration that failed."""
    name = "savings"
    help = ("memory saved on real container-image pairs: no sharing, inode_share, composefs, "
            "overlayfs")
    finds = False
    timed = False
    # Sixteen containers without sharing hold sixteen copies: more than the suite's guest.
    memory_mb = 4096

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--pairs", default="", help="comma-separated pair names of "
                                                        "savings/pairs.yaml (default: all)")
        parser.add_argument("--containers", default=",".join(map(str, CONTAINERS)),
                            help="container counts to measure at (comma-separated)")
        parser.add_argument("--configs", default="", help="comma-separated configurations "
                                                          f"of {', '.join(CONFIGS)} (default: all)")

    def prepare(self, run: CampaignRun) -> None:
        """Check the options, then build (or take from the cache) each pair's trees, images
        and store disk, before anything boots."""
        self.counts = _counts(run.options.containers)
        self.configs = _configs(run.options.configs)
        spec_file = pairs.load_pairs()
        chosen = [p.strip() for p in run.options.pairs.split(",") if p.strip()] \
            or list(spec_file.pairs)
        unknown = [name for name in chosen if name not in spec_file.pairs]
        if unknown:
            raise HarnessError(f"--pairs: no pair {', '.join(unknown)} in {pairs.PAIRS_FILE} "
                               f"(known: {', '.join(spec_file.pairs)})")
        pairs.environment_ok()
        erofs_tools, cfs_tools = provide_erofs(), composefs.provide()
        self.tools = {"mkfs": erofs_tools.describe(), "composefs": cfs_tools.version}
        apt, index = pairs.open_index()
        self.pairs: list[_Pair] = []
        for name in chosen:
            spec = spec_file.pairs[name]
            old, new = pairs.build_pair(spec, spec_file, index, apt)
            disk = store.build_store((old, new), erofs_tools, cfs_tools)
            same = pairs.identity(old, new)
            run.say(f"{name}: {same.files_new} files, {same.bytes_new / 2**20:.0f} MiB; "
                    f"identical: {same.files_pct:.1f}% of files, {same.bytes_pct:.1f}% of "
                    "bytes")
            self.pairs.append(_Pair(spec, old, new, disk, same))

    def run(self, run: CampaignRun, session: GuestSession) -> Outcome:
        vm = session.vm
        results: dict[str, Any] = {**self.tools, "containers": list(self.counts),
                                   "configs": list(self.configs), "pairs": {}}
        # composefs and plain overlayfs need overlayfs (a tree kernel may lack it).
        overlay = ("overlay",) if {"composefs", "overlay"} & set(self.configs) else ()
        session.need_modules("erofs", "loop", *overlay)
        for pair in self.pairs:
            attached = vm.attach_disk(pair.disk.path, read_only=True)
            try:
                measured = _measure_pair(session, pair.spec, attached.device, self.counts,
                                         self.configs, run.say)
            finally:
                vm.detach_disk(attached)
            ideal_containers = _ideal_containers(
                measured["containers"].get("erofs", {}).get("touched", {}),
                {"old": pair.old, "new": pair.new}, self.counts)
            for entry in measured["read_all"].values():
                entry["census"] = sharing_census(entry.pop("preshared", {}), pair.old,
                                                 pair.new)
            results["pairs"][pair.spec.name] = {
                "packages": {"old": pair.old.packages, "new": pair.new.packages},
                "identity": pair.same.as_dict(),
                "ideal": {"read_all": pair.same.unique_pages * pairs.PAGE,
                          "containers": ideal_containers},
                **measured}
        failed = [f"{name}/{config}: {error}" for name, r in results["pairs"].items()
                  for config, error in r["errors"].items()]
        failed += [problem for name, r in results["pairs"].items()
                   for problem in census_problems(name, r["read_all"])]
        if failed:
            return Outcome(Verdict.FOUND, results, ["FAILED:\n  " + "\n  ".join(failed)])
        return Outcome(Verdict.CLEAN, results, [
            f"{len(self.pairs)} pairs measured; every byte-identical file shared, no other"])

    def write_report(self, results: dict[str, Any], out: Path) -> Path | None:
        return write_report(results, out)
