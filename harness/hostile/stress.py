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

import json
import shlex
import sys
from pathlib import Path
from typing import Any

from harness.core.paths import CATALOG
from harness.erofs.images import build_image, load_catalog
from harness.erofs.tools import provide
from harness.guest.probe import PROBE_SOURCE
from harness.guest.session import GuestSession
from harness.pipeline import kernel_for, vm_for
from harness.vm.machine import VMConfig, VMState
from harness.vm.splats import splats_seen

IMAGES = ("sizes", "renamed", "sizes-lz4", "renamed-lz4")
HELPERS = "/run/harness-helpers"
STRESS_SOURCE = PROBE_SOURCE.parent / "stress.py"


def _progress(total: dict[str, Any]) -> str:
    seconds = max(float(total["seconds"]), 0.1)
    churn = " ".join(f"{k}={v}" for k, v in sorted(total.get("churn", {}).items()))
    return (f"stress: {total['seconds']:.0f} s: {total['reads']} reads "
            f"({total['reads'] / seconds:.1f}/s), {total['bytes'] / 2**20:.0f} MiB verified, "
            f"{len(total['wrong'])} wrong, {len(total['errors'])} errors, "
            f"{len(total.get('stuck', []))} stuck, {total['gone']} "
            f"reads of a mount that had gone; churn: {churn}")


def run_stress(kernel_spec: str | None, config: VMConfig, *, seed: int, minutes: float,
               readers: int, out: Path) -> int:
    kernel = kernel_for(kernel_spec)
    catalog, tools = load_catalog(CATALOG), provide()
    images = {name: build_image(catalog.image(name), tools) for name in IMAGES}
    print(f"stress: seed {seed}, {minutes:g} min, {readers} readers on {kernel.spec} "
          f"({kernel.release}); images {', '.join(IMAGES)}", file=sys.stderr, flush=True)
    result: dict[str, Any] = {"kernel": kernel.spec, "release": kernel.release, "seed": seed,
                              "readers": readers}
    with vm_for(kernel, config, name="stress", artifacts=out) as vm:
        session = GuestSession(vm)
        session.need_modules("erofs", "loop")
        uploads = {name: session.upload(image.path, f"{image.key}.erofs")
                   for name, image in images.items()}
        vm.run(f"mkdir -p {HELPERS}", check=True)
        for source in (PROBE_SOURCE, STRESS_SOURCE):
            vm.run(f"cat > {HELPERS}/{source.name}", stdin=source.read_bytes(), check=True)
        cfg = {"seed": seed, "seconds": minutes * 60, "readers": readers, "max_mounts": 8,
               "churn_pause": 0.2, "progress": 10,
               "uploads": uploads,
               "images": {name: {f["path"]: f["sha256"] for f in image.files()}
                          for name, image in images.items()}}
        console_from = vm.console_offset()
        assert vm.ssh is not None
        channel = vm.ssh.open_stream(f"exec python3 {HELPERS}/stress.py "
                                     f"{shlex.quote(json.dumps(cfg))}", minutes * 60 + 600)
        total: dict[str, Any] | None = None
        try:
            for line in channel.makefile("rb"):
                total = json.loads(line)
                print(_progress(total), file=sys.stderr, flush=True)
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
    out.mkdir(parents=True, exist_ok=True)
    (out / "stress.json").write_text(json.dumps(result, indent=2) + "\n")
    problems = [*(f"wrong bytes: {w}" for w in result.get("wrong", [])),
                *(f"error: {e}" for e in result.get("errors", [])),
                *(f"stuck: {e}" for e in result.get("stuck", [])), *result["splats"]]
    if "lost" in result:
        problems.append(result["lost"])
    if not result["guest_alive"]:
        problems.append("the guest died")
    if total is None or not total.get("done"):
        problems.append("the stress run did not finish")
    print(f"stress: {result.get('reads', 0)} reads, {result.get('bytes', 0) / 2**20:.0f} MiB "
          f"verified in {result.get('seconds', 0):.0f} s, {len(result['splats'])} kernel "
          f"reports; results in {out / 'stress.json'}", file=sys.stderr)
    if problems:
        print(f"stress: FAILED (seed {seed}):\n  " + "\n  ".join(problems[:40]),
              file=sys.stderr)
        return 1
    print("stress: every byte right, no kernel report", file=sys.stderr)
    return 0
