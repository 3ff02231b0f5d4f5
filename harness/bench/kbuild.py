"""``make bench`` (part kbuild): clean build time, incremental rebuild after touching
fs/erofs/ishare.c, the time from that touch to a guest answering over SSH, and edit to
verdict: from the touch to the sharing-semantics tests' verdict on the rebuilt kernel, the
way a developer does: ``make check``.

The clean time is the one measured when the build directory was made (a clean build on
the 2-core machine takes minutes; re-running it on every bench would be the bench). With
no build directory yet, this bench makes it, and that is the clean time printed.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

from harness.kernel.kbuild import build_tree, fragments_for
from harness.kernel.spec import TreeSpec
from harness.pipeline import vm_for
from harness.vm.machine import VMConfig

TOUCHED = "fs/erofs/ishare.c"
PROJECT = Path(__file__).resolve().parents[2]


def edit_to_verdict(target: Path, vm_config: VMConfig) -> tuple[float, str]:
    """Touch ``target``, then run ``make check`` (the default tree, its default selection);
    seconds to its exit, and pytest's outcome line."""
    os.utime(target)
    started = time.monotonic()
    proc = subprocess.run(["make", "-s", "--no-print-directory", "check",
                           f"ACCEL={vm_config.accel}"], cwd=PROJECT, capture_output=True,
                          text=True, check=False)
    seconds = time.monotonic() - started
    outcome = re.findall(r"^=*\s*(\d+ (?:passed|failed|error).*?) in [\d.]+s", proc.stdout,
                         re.MULTILINE)
    return seconds, (outcome[-1] if outcome else f"make check exit {proc.returncode}")


def run_kbuild_bench(vm_config: VMConfig, debug: bool = False) -> None:
    """The figures of the default tree; with ``debug``, of its build with the debug
    fragment (KASAN, lockdep and friends), without edit to verdict (``make check`` runs the
    plain build)."""
    tree_request = TreeSpec(None, debug=debug)
    first = build_tree(tree_request)
    stamp = json.loads((first.build_dir / "harness-stamp.json").read_text())
    clean = stamp.get("clean_seconds") or stamp.get("build_seconds", 0.0)
    source = first.kernel.origin.split(",")[0]
    # The default tree is the cache's unpacked Debian source; touching a file there is what
    # a developer's edit does to their tree.
    target = first.tree.path / TOUCHED
    started = time.monotonic()
    os.utime(target)
    rebuilt = build_tree(tree_request)
    built_at = time.monotonic()
    vm = vm_for(rebuilt.kernel, vm_config, name="kbuild-bench", announce=False)
    imaged_at = time.monotonic()  # the guest image for the new kernel is made by now
    with vm:
        ready = time.monotonic()
        release = vm.run("uname -r", check=True).stdout.strip()
    config = "tinyconfig + " + " + ".join(f.name for f in fragments_for(tree_request))
    print(f"\nkernel build ({source}; {config}; {vm_config.cpus}-CPU guest, "
          f"{os.cpu_count()} host cores)")
    # Where touch-to-booted goes: make's rebuild, make modules_install, the harness's own
    # part of the build (tree fingerprint, copying the kernel out), then the boot.
    own = built_at - started - rebuilt.build_seconds - rebuilt.install_seconds
    rows = [("clean build (boot image + modules)", f"{clean:.0f} s", "<= 300 s"),
            (f"rebuild after touching {TOUCHED}", f"{rebuilt.build_seconds:.1f} s", ""),
            ("touch to booted guest (rebuild, guest image, boot to SSH)",
             f"{ready - started:.1f} s", "<= 8 s"),
            ("  of which make (rebuild)", f"{rebuilt.build_seconds:.1f} s", ""),
            ("  of which make modules_install", f"{rebuilt.install_seconds:.1f} s", ""),
            ("  of which the harness (tree state, kernel copied out)", f"{own:.1f} s", ""),
            ("  of which the guest image for the new kernel", f"{imaged_at - built_at:.1f} s",
             ""),
            ("  of which boot to SSH", f"{ready - imaged_at:.1f} s", "")]
    if not debug:
        verdict_seconds, verdict = edit_to_verdict(target, vm_config)
        rows += [("edit to verdict (make check: sharing semantics, 2 workers)",
                  f"{verdict_seconds:.1f} s", "<= 60 s"),
                 ("  verdict", verdict, "")]
    rows.append(("guest says", release, ""))
    for name, value, target_text in rows:
        print(f"  {name:<60} {value:>10}  {target_text}")
