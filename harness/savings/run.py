"""``make savings``: what page cache sharing saves on real container-image pairs, beside
no sharing, composefs and plain overlayfs, all measured in one guest in one run.

Host: build (or reuse from the cache) each pair's two trees, EROFS and composefs images
and store disk. Guest: for each pair and configuration, the helper
(harness/guest/helpers/savings.py) reads every file of both images, then starts 1..N
containers, reporting memory at each count. The ideal is computed here: for reading every
file, the pages of the distinct file contents of both trees; for containers, the pages the
no-sharing containers touched, each distinct content counted once.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from harness.core.errors import HarnessError
from harness.erofs.tools import provide as provide_erofs
from harness.guest.probe import PROBE_SOURCE
from harness.guest.session import GuestSession
from harness.pipeline import kernel_for, open_guest
from harness.savings import composefs, pairs, store
from harness.savings.report import write_report
from harness.vm.machine import VMConfig

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
                  configs: tuple[str, ...]) -> dict[str, Any]:
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
            print(f"savings: {pair.name}: {config}: {line['containers']} containers "
                  f"({elapsed:.0f} s)", file=sys.stderr, flush=True)
        elif kind == "read_all":
            out["read_all"][config] = line
            print(f"savings: {pair.name}: {config}: read every file of both images: "
                  f"{line['memcg_bytes'] / 2**20:.1f} MiB charged ({elapsed:.0f} s)",
                  file=sys.stderr, flush=True)
        elif kind == "containers":
            out["containers"][config] = line
        elif kind == "error":
            out["errors"][config] = line["error"]
            print(f"savings: {pair.name}: {config}: FAILED: {line['error']}",
                  file=sys.stderr, flush=True)
    if not done:
        raise HarnessError(f"the savings helper for pair {pair.name} ended before it was done")
    return out


def run_savings(kernel_spec: str | None, out: Path, *, only: list[str] | None = None,
                counts: tuple[int, ...] = CONTAINERS, configs: tuple[str, ...] = CONFIGS,
                memory_mb: int = 4096, accel: str = "auto") -> int:
    started = time.monotonic()
    spec_file = pairs.load_pairs()
    chosen = only or list(spec_file.pairs)
    unknown = [name for name in chosen if name not in spec_file.pairs]
    if unknown:
        raise HarnessError(f"no pair {', '.join(unknown)} in {pairs.PAIRS_FILE} (known: "
                           f"{', '.join(spec_file.pairs)})")
    pairs.environment_ok()
    erofs_tools, cfs_tools = provide_erofs(), composefs.provide()
    apt, index = pairs.open_index()
    prepared = []
    for name in chosen:
        spec = spec_file.pairs[name]
        old, new = pairs.build_pair(spec, spec_file, index, apt)
        disk = store.build_store((old, new), erofs_tools, cfs_tools)
        same = pairs.identity(old, new)
        print(f"savings: {name}: {same.files_new} files, {same.bytes_new / 2**20:.0f} MiB; "
              f"identical: {same.files_pct:.1f}% of files, {same.bytes_pct:.1f}% of bytes",
              file=sys.stderr, flush=True)
        prepared.append((spec, old, new, disk, same))
    kernel = kernel_for(kernel_spec)
    results: dict[str, Any] = {"kernel": str(kernel.spec), "release": kernel.release,
                               "mkfs": erofs_tools.describe(),
                               "composefs": cfs_tools.version, "containers": list(counts),
                               "configs": list(configs), "pairs": {}}
    config = VMConfig(memory_mb=memory_mb, accel=accel, command_timeout=3600)
    with open_guest(kernel, config, name="savings", artifacts=out) as session:
        vm = session.vm
        # composefs and plain overlayfs need overlayfs (a tree kernel may lack it).
        overlay = ("overlay",) if {"composefs", "overlay"} & set(configs) else ()
        session.need_modules("erofs", "loop", *overlay)
        for spec, old, new, disk, same in prepared:
            attached = vm.attach_disk(disk.path, read_only=True)
            try:
                measured = _measure_pair(session, spec, attached.device, counts, configs)
            finally:
                vm.detach_disk(attached)
            ideal_containers = _ideal_containers(
                measured["containers"].get("erofs", {}).get("touched", {}),
                {"old": old, "new": new}, counts)
            for entry in measured["read_all"].values():
                entry["census"] = sharing_census(entry.pop("preshared", {}), old, new)
            results["pairs"][spec.name] = {
                "packages": {"old": old.packages, "new": new.packages},
                "identity": same.as_dict(),
                "ideal": {"read_all": same.unique_pages * pairs.PAGE,
                          "containers": ideal_containers},
                **measured}
    results["seconds"] = round(time.monotonic() - started, 1)
    out.mkdir(parents=True, exist_ok=True)
    (out / "savings.json").write_text(json.dumps(results, indent=1) + "\n")
    write_report(results, out)
    failed = [f"{pair}/{config}: {error}" for pair, r in results["pairs"].items()
              for config, error in r["errors"].items()]
    failed += [problem for pair, r in results["pairs"].items()
               for problem in census_problems(pair, r["read_all"])]
    if failed:
        print("savings: FAILED:\n  " + "\n  ".join(failed), file=sys.stderr)
        return 1
    return 0
