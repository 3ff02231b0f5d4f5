"""``make bench`` (part kbuild): clean build time, and a kernel developer's loop after
touching and after editing fs/erofs/ishare.c: make's rebuild, the time from the change to a
guest answering over SSH, and edit to verdict: from the edit to the sharing-semantics
tests' verdict on the rebuilt kernel, the way a developer does it: ``make check``.

A touch leaves the kernel as it was (builds are reproducible), so its guest may start from
the saved guest of that very kernel; an edit makes another kernel, which boots cold, and
makes the compiler run (ccache cannot have it). The edit is one line of real code, a
string the kernel keeps, appended to the file and taken out again when the bench ends.

The clean time is the one measured when the build directory was made (a clean build on
the 2-core machine takes minutes; re-running it on every bench would be the bench). With
no build directory yet, this bench makes it, and that is the clean time printed.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from harness.kernel.kbuild import build_tree, fragments_for
from harness.kernel.spec import TreeSpec
from harness.pipeline import vm_for
from harness.vm.machine import VMConfig

TOUCHED = "fs/erofs/ishare.c"
PROJECT = Path(__file__).resolve().parents[2]


@contextmanager
def edits_of(target: Path) -> Iterator[Callable[[], None]]:
    """A function that edits ``target`` (one line of code that changes the kernel: a
    string kept in it), and the file's first text put back when the block ends."""
    original = target.read_bytes()

    def edit() -> None:
        line = (f'\nstatic const char harness_bench_edit[] __used = '
                f'"{secrets.token_hex(8)}";\n')
        target.write_bytes(original + line.encode())

    try:
        yield edit
    finally:
        target.write_bytes(original)  # a new mtime: the next build rebuilds it as it was


def edit_to_verdict(vm_config: VMConfig) -> tuple[float, str]:
    """Run ``make check`` (the default tree, its default selection) right after an edit;
    seconds to its exit, and pytest's outcome line."""
    started = time.monotonic()
    proc = subprocess.run(["make", "-s", "--no-print-directory", "check",
                           f"ACCEL={vm_config.accel}"], cwd=PROJECT, capture_output=True,
                          text=True, check=False)
    seconds = time.monotonic() - started
    outcome = re.findall(r"^=*\s*(\d+ (?:passed|failed|error).*?) in [\d.]+s", proc.stdout,
                         re.MULTILINE)
    return seconds, (outcome[-1] if outcome else f"make check exit {proc.returncode}")


def change_to_booted(request: TreeSpec, vm_config: VMConfig, started: float, name: str
                     ) -> tuple[dict[str, float], bool, str]:
    """Rebuild after a change made at ``started``, boot the result, run one command:
    where the time went, whether the guest was restored rather than booted, and the
    release the guest says it runs."""
    rebuilt = build_tree(request)
    built_at = time.monotonic()
    vm = vm_for(rebuilt.kernel, vm_config, name=name, announce=False)
    imaged_at = time.monotonic()  # the guest image for the new kernel is made by now
    with vm:
        release = vm.run("uname -r", check=True).stdout.strip()
        ready = time.monotonic()
        restored = vm.restored
    return {
        "total": ready - started, "make": rebuilt.build_seconds,
        "install": rebuilt.install_seconds,
        # the harness's own part: tree fingerprint, copying the kernel out
        "harness": built_at - started - rebuilt.build_seconds - rebuilt.install_seconds,
        "image": imaged_at - built_at, "boot": ready - imaged_at}, restored, release


def run_kbuild_bench(vm_config: VMConfig, debug: bool = False) -> None:
    """The figures of the default tree; with ``debug``, of its build with the debug
    fragment (KASAN, lockdep and friends), without edit to verdict (``make check`` runs the
    plain build)."""
    tree_request = TreeSpec(None, debug=debug)
    first = build_tree(tree_request)
    stamp = json.loads((first.build_dir / "harness-stamp.json").read_text())
    clean = stamp.get("clean_seconds") or stamp.get("build_seconds", 0.0)
    source = first.kernel.origin.split(",")[0]
    # The default tree is the cache's unpacked Debian source; changing a file there is what
    # a developer's edit does to their tree.
    target = first.tree.path / TOUCHED
    started = time.monotonic()
    os.utime(target)
    touched, touch_restored, _ = change_to_booted(tree_request, vm_config, started,
                                                  "kbuild-touch")
    with edits_of(target) as edit:
        started = time.monotonic()
        edit()
        edited, _, release = change_to_booted(tree_request, vm_config, started,
                                              "kbuild-edit")
        verdict_seconds, verdict = 0.0, ""
        if not debug:
            edit()  # another kernel again: make check's first VM boots cold too
            verdict_seconds, verdict = edit_to_verdict(vm_config)
    config = "tinyconfig + " + " + ".join(f.name for f in fragments_for(tree_request))
    print(f"\nkernel build ({source}; {config}; {vm_config.cpus}-CPU guest, "
          f"{os.cpu_count()} host cores)")
    rows = [("clean build (boot image + modules)", f"{clean:.0f} s", "<= 300 s"),
            (f"rebuild after touching {TOUCHED}", f"{touched['make']:.1f} s", ""),
            ("touch to booted guest (the same kernel, " +
             ("restored)" if touch_restored else "booted cold)"),
             f"{touched['total']:.1f} s", "")]
    rows += [(f"rebuild after a one-line edit of {TOUCHED}", f"{edited['make']:.1f} s", ""),
             ("edit to booted guest (rebuild, guest image, cold boot to SSH)",
              f"{edited['total']:.1f} s", "<= 8 s"),
             ("  of which make (rebuild)", f"{edited['make']:.1f} s", ""),
             ("  of which make modules_install", f"{edited['install']:.1f} s", ""),
             ("  of which the harness (tree state, kernel copied out)",
              f"{edited['harness']:.1f} s", ""),
             ("  of which the guest image for the new kernel", f"{edited['image']:.1f} s",
              ""),
             ("  of which boot to SSH and one command", f"{edited['boot']:.1f} s", "")]
    if not debug:
        rows += [("edit to verdict (make check: sharing semantics, 2 workers)",
                  f"{verdict_seconds:.1f} s", "<= 60 s"),
                 ("  verdict", verdict, "")]
    rows.append(("guest says", release, ""))
    for name, value, target_text in rows:
        print(f"  {name:<64} {value:>10}  {target_text}")
