"""The VM options, declared once for both front ends: ``python -m harness`` (argparse) and
pytest (``addoption``), which take the same keywords. A new option goes in VM_OPTIONS and
in :func:`vm_config`; both front ends then have it, with one help text."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from harness.kernel.spec import FORMS
from harness.vm.machine import ACCELS, COLD_BOOT_HELP, TCG_THREADS, VM_DEFAULTS, VMConfig

# (flag, argparse keywords); dest is the flag's name in snake case unless given.
VM_OPTIONS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("--kernel", {"default": None,
                  "help": f"the kernel to boot (default: the pinned default kernel); {FORMS}"}),
    ("--accel", {"default": VM_DEFAULTS.accel, "choices": ACCELS,
                 "help": "accelerator: auto (KVM when a probe shows it works), kvm, tcg"}),
    ("--vm-memory", {"type": int, "default": VM_DEFAULTS.memory_mb, "metavar": "MB",
                     "help": f"guest memory in MiB (default {VM_DEFAULTS.memory_mb})"}),
    ("--vm-cpus", {"type": int, "default": VM_DEFAULTS.cpus, "metavar": "N",
                   "help": f"guest CPUs (default {VM_DEFAULTS.cpus})"}),
    ("--vm-tcg-threads", {"default": VM_DEFAULTS.tcg_threads, "choices": TCG_THREADS,
                          "help": "TCG with more than one guest CPU: single (one host thread "
                                  "runs them in turn; the default) or multi (one each, so "
                                  "they run at once; the guest boots on one CPU and brings "
                                  "the others up after)"}),
    ("--vm-keep", {"action": "store_true", "default": VM_DEFAULTS.keep,
                   "help": "keep each VM's work directory (disks, sockets) after it stops"}),
    ("--vm-cold-boot", {"action": "store_false", "dest": "vm_restore",
                        "default": VM_DEFAULTS.restore, "help": COLD_BOOT_HELP}),
    ("--vm-boot-timeout", {"type": float, "default": VM_DEFAULTS.boot_timeout, "metavar": "S",
                           "help": f"seconds a boot may take before it fails (default "
                                   f"{VM_DEFAULTS.boot_timeout:.0f})"}),
)


def dest_of(flag: str, settings: dict[str, Any]) -> str:
    return str(settings.get("dest", flag.removeprefix("--").replace("-", "_")))


def add_vm_options(add: Callable[..., object], **defaults: object) -> None:
    """Declare every VM option with ``add`` (``parser.add_argument`` or pytest's
    ``group.addoption``); ``defaults`` by dest replace the table's (a campaign that needs
    more memory, pytest's kernel from the environment)."""
    for flag, settings in VM_OPTIONS:
        dest = dest_of(flag, settings)
        add(flag, **(settings | ({"default": defaults[dest]} if dest in defaults else {})))


VM_DESTS = frozenset(dest_of(flag, settings) for flag, settings in VM_OPTIONS)


def vm_config(get: Callable[[str], Any]) -> VMConfig:
    """The VMConfig the options ask for; ``get`` reads an option by dest."""
    return VMConfig(memory_mb=int(get("vm_memory")), cpus=int(get("vm_cpus")),
                    accel=str(get("accel")), tcg_threads=str(get("vm_tcg_threads")),
                    keep=bool(get("vm_keep")),
                    restore=bool(get("vm_restore")), boot_timeout=float(get("vm_boot_timeout")))
