"""``make bench``: boot and command round-trip numbers, printed as a table, never asserted.

Compared: the harness's boot-to-ready (QEMU start until SSH answers a command) against a
bare ``qemu-system-x86_64 -kernel <same vmlinuz> -initrd <busybox initramfs>`` boot until
its /init prints, on the same accelerator, memory and CPUs; and that bare boot again with
a payload as large as the harness's image is beyond it, which says how much of the
difference is the image's size alone.
"""

from __future__ import annotations

import dataclasses
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness.core import cache, procs
from harness.core.deadline import Deadline, poll
from harness.core.errors import HarnessError
from harness.guestimage.build import READY_MARKER, GuestImage, build_guest_image
from harness.guestimage.cpio import CpioWriter
from harness.kernel.kernel import Kernel
from harness.pipeline import kernel_for, vm_for
from harness.vm import snapshot
from harness.vm.accel import choose_accel
from harness.vm.machine import VMConfig, boot_append
from harness.vm.qemu_cmd import DirectKernelBoot, Machine, QemuCommand, qemu_binary

BARE_MARKER = "BARE-INIT-REACHED"


def bare_initramfs(payload: int = 0) -> Path:
    """Busybox and an /init that prints a marker; with ``payload`` bytes more in one file,
    to weigh what the size of the harness's image alone costs a boot."""
    def build(out: Path) -> dict[str, object]:
        with (out / "bare.cpio").open("wb") as fh:
            cpio = CpioWriter(fh)
            for name in ("dev", "bin", "proc"):
                cpio.directory(name)
            cpio.chardev("dev/console", 5, 1)
            cpio.file("bin/busybox", Path("/bin/busybox").read_bytes(), 0o755)
            cpio.symlink("bin/sh", "busybox")
            cpio.file("init", f"#!/bin/sh\necho {BARE_MARKER}\n/bin/busybox poweroff -f\n"
                      .encode(), 0o755)
            if payload:
                cpio.file("payload", bytes(payload))
            cpio.trailer()
        return {}
    key = cache.content_key(["bare-v1", Path("/bin/busybox").read_bytes(), str(payload)])
    return cache.get_or_build("bench-bare", key, build) / "bare.cpio"


def bare_boot_seconds(vmlinuz: Path, append: str, accel: str, memory_mb: int,
                      cpus: int, payload: int = 0) -> float:
    """Seconds from QEMU's start to a busybox /init, with the harness's command line
    (``append``) so that the ratio counts only what the harness adds."""
    argv = QemuCommand(qemu_binary(), Machine(accel, memory_mb, cpus),
                       DirectKernelBoot(vmlinuz, bare_initramfs(payload), append)).argv()
    with tempfile.TemporaryFile() as out:
        start = time.monotonic()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, preexec_fn=procs.die_with_parent)
        procs.register(proc.pid, "bench bare qemu")
        try:
            def reached() -> float | None:
                out.seek(0)
                return time.monotonic() - start if BARE_MARKER.encode() in out.read() else None
            seconds = poll(reached, Deadline(120), first=0.005, most=0.02)
        finally:
            proc.kill()
            proc.wait()
            procs.unregister(proc.pid)
    if seconds is None:
        raise HarnessError(f"the bare busybox boot of {vmlinuz} did not reach /init in 120 s")
    return seconds


PHASES = ("QEMU start to kernel (firmware, decompression)", "kernel to /init",
          "/init to ready (modules, network, scratch disk)", "ready to SSH answering")


def boot_phases(total: float, uptime_at_answer: float, console: str) -> dict[str, float]:
    """A boot split at the guest's own clock: /init prints the uptime when it starts and
    when it is ready, and the first command over SSH reads it; what the host waited beyond
    that uptime came before the kernel's clock started."""
    out = {PHASES[0]: max(total - uptime_at_answer, 0.0)}
    started = re.search(rf"{READY_MARKER}: init started at ([\d.]+)", console)
    ready = re.search(rf"{READY_MARKER}: ready at ([\d.]+)", console)
    if started and ready:
        out[PHASES[1]] = float(started.group(1))
        out[PHASES[2]] = float(ready.group(1)) - float(started.group(1))
        out[PHASES[3]] = uptime_at_answer - float(ready.group(1))
    return out


def _row(name: str, value: str, target: str = "") -> str:
    return f"| {name:<44} | {value:>16} | {target:<10} |"


def restored_starts(kernel: Kernel, image: GuestImage, config: VMConfig,
                    count: int) -> tuple[list[float], float]:
    """Seconds from QEMU's start to the first answer over SSH for ``count`` VMs restored
    from the saved guest of this kind, and how long saving it paused the VM that made it
    (saved afresh here: a guest saved by an earlier run is replaced)."""
    config = dataclasses.replace(config, restore=True)
    for attempt in ("bench-save", "bench-save-again"):
        with vm_for(kernel, config, image=image, name=attempt, announce=False) as vm:
            entry, restored = vm.saved_guest, vm.restored
        if entry is None:
            raise HarnessError("the guest could not be saved: see the log for why")
        if not restored:
            break
        snapshot.forget(entry.name, "the benchmark measures a save of its own")
    if entry is None or restored:
        raise HarnessError("the benchmark could not save a guest of its own")
    times = []
    for number in range(count):
        print(f"bench: restored start {number + 1}/{count}", file=sys.stderr, flush=True)
        vm = vm_for(kernel, config, image=image, name=f"bench-restored{number}",
                    announce=False)
        started = time.monotonic()
        with vm:
            vm.run("true", check=True)
            times.append(time.monotonic() - started)
            if not vm.restored:
                raise HarnessError("a VM of a kind already saved booted cold: see the log "
                                   "for why its restore failed")
    return times, snapshot.seconds_to_save(entry)


def run_boot_bench(spec: str | None, vm_config: VMConfig, boots: int = 5,
                   round_trips: int = 50) -> None:
    warm_start = time.monotonic()
    kernel = kernel_for(spec)
    image = build_guest_image(kernel)
    accel = choose_accel(vm_config.accel, kernel.vmlinuz)
    # Warm start: spec resolution and cache verification now, plus the first boot below
    # (the bare baseline boots in between are not part of it).
    prepare = time.monotonic() - warm_start
    # Cold boots for the boot figures; restored starts (vm/snapshot.py) measured after them.
    config = dataclasses.replace(vm_config, accel=accel.name, restore=False)
    print(f"bench: kernel {kernel.release}, accel {accel.name} ({accel.reason}), "
          f"{config.memory_mb} MiB, {config.cpus} CPUs, {boots} boots each", file=sys.stderr)
    warm = None
    harness_times, bare_times, packed_times, heavy_times = [], [], [], []
    # The bare boot again with as many bytes more as the harness's image has over it.
    payload = max(image.initramfs.stat().st_size - bare_initramfs().stat().st_size, 0)
    phases: list[dict[str, float]] = []
    rtts: list[float] = []
    append = boot_append(kernel)
    for number in range(boots):
        print(f"bench: boot {number + 1}/{boots}", file=sys.stderr, flush=True)
        bare_times.append(bare_boot_seconds(kernel.vmlinuz, append, accel.name,
                                            config.memory_mb, config.cpus))
        heavy_times.append(bare_boot_seconds(kernel.vmlinuz, append, accel.name,
                                             config.memory_mb, config.cpus, payload))
        if kernel.bzimage is not None:  # what booting unpacked (PVH) saves over the bzImage
            packed_times.append(bare_boot_seconds(kernel.bzimage, append, accel.name,
                                                  config.memory_mb, config.cpus))
        vm = vm_for(kernel, config, image=image, name=f"bench{number}", announce=False)
        started = time.monotonic()
        with vm:
            uptime = float(vm.run("cut -d' ' -f1 /proc/uptime", check=True).stdout)
            harness_times.append(time.monotonic() - started)
            phases.append(boot_phases(harness_times[-1], uptime,
                                      vm.console.since(0) if vm.console else ""))
            if warm is None:
                warm = prepare + harness_times[-1]
            if number == 0:
                for _ in range(round_trips):
                    t0 = time.monotonic()
                    vm.run("true", check=True)
                    rtts.append(time.monotonic() - t0)
        # A kernel given without its config has it read back by its first boot; the later
        # boots start from that one, so that none but the first spends time on it.
        kernel = vm.kernel
    restored_times, saved_in = restored_starts(kernel, image, config, boots)
    h, b = statistics.median(harness_times), statistics.median(bare_times)
    r = statistics.median(restored_times)
    rows = [
        _row("median harness boot-to-ready (SSH answers)", f"{h:.2f} s"),
        _row("median bare boot-to-init (busybox initramfs)", f"{b:.2f} s"),
        _row("ratio harness / bare", f"{h / b:.2f}x", "<= 1.3x"),
        _row("harness boot minus bare boot", f"{h - b:.2f} s"),
        _row(f"  of which the image's size ({payload >> 20} MiB more)",
             f"{statistics.median(heavy_times) - b:.2f} s"),
        _row("median restored start-to-ready (saved guest)", f"{r:.2f} s"),
        _row("ratio restored start / bare boot", f"{r / b:.2f}x", "<= 1.3x"),
        _row("  saving the guest (first VM of a kind)", f"{saved_in:.2f} s"),
        _row(f"guest command round trip (median of {round_trips})",
             f"{statistics.median(rtts) * 1000:.1f} ms", "<= 30 ms"),
        _row("warm start: spec -> cached kernel/image -> ready", f"{warm or 0:.2f} s"),
        _row("guest image size", f"{image.initramfs.stat().st_size >> 20} MiB"),
    ]
    if packed_times:
        p = statistics.median(packed_times)
        rows.insert(2, _row("median bare boot-to-init of the bzImage", f"{p:.2f} s"))
        rows.insert(3, _row("  bare boot unpacked (PVH) / bzImage", f"{b / p:.2f}x"))
    for name in PHASES:
        values = [p[name] for p in phases if name in p]
        if values:
            rows.append(_row(f"  phase: {name}", f"{statistics.median(values):.2f} s"))
    line = "+" + "-" * 46 + "+" + "-" * 18 + "+" + "-" * 12 + "+"
    print(line)
    print(_row("boot benchmark (" + accel.name + ")", "value", "target"))
    print(line)
    print("\n".join(rows))
    print(line)
    print("all harness boots: " + ", ".join(f"{t:.2f}" for t in harness_times) + " s; "
          "restored starts: " + ", ".join(f"{t:.2f}" for t in restored_times) + " s; "
          "bare: " + ", ".join(f"{t:.2f}" for t in bare_times) + " s; "
          "bare with the payload: " + ", ".join(f"{t:.2f}" for t in heavy_times) + " s"
          + ("; bare bzImage: " + ", ".join(f"{t:.2f}" for t in packed_times) + " s"
             if packed_times else ""))


def run_suite_throughput(spec: str | None, vm_config: VMConfig,
                         selection: str = "testcases/test_access_paths.py") -> None:
    """Cases per minute of a slice of the suite, one worker, as `make run` would run it."""
    argv = [sys.executable, "-m", "pytest", selection, "-q", "-p", "no:cacheprovider",
            f"--accel={vm_config.accel}"] + ([f"--kernel={spec}"] if spec
                                           else [])
    print(f"bench: suite throughput on {selection}", file=sys.stderr, flush=True)
    started = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    seconds = time.monotonic() - started
    import re
    counts = {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|skipped)", proc.stdout)}
    cases = sum(counts.values())
    print(f"| suite throughput ({selection}) | {cases} cases in {seconds:.0f} s | "
          f"{60 * cases / seconds:.0f} cases/min | {counts} |")
