"""Which kernels boot with acpi=noirq: the ones that keep both CPUs (MP table) and the
interrupts of hot-plugged virtio disks (MSI-X) without ACPI's routing, and the KASAN ones
that cannot boot through ACPI's routing AML at all."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.kernel.kernel import Kernel
from harness.vm.machine import BASE_APPEND, boot_append


def _kernel(**options: str) -> Kernel:
    return Kernel("debian:7.3", "7.3.4", Path("/nonexistent/vmlinuz"), None,
                  config={f"CONFIG_{k}": v for k, v in options.items()})


@pytest.mark.parametrize("options, noirq", [
    ({"X86_MPPARSE": "y", "PCI_MSI": "y"}, True),  # tree: builds, plain and debug
    ({"X86_MPPARSE": "y", "PCI_MSI": "y", "KASAN": "y"}, True),
    # Debian's kernels: without the MP table, acpi=noirq would leave one CPU and no MSI.
    ({"PCI_MSI": "y"}, False),
    ({"PCI_MSI": "y", "KASAN": "y"}, False),
    ({"X86_MPPARSE": "y"}, False),  # legacy interrupts only: keep ACPI's routing
    ({"KASAN": "y"}, True),  # boots only this way; hot-plugged disks get no interrupt
    ({}, False),  # a kernel whose config is unknown keeps ACPI's routing
])
def test_acpi_noirq_only_where_cpus_and_interrupts_survive_it(options: dict[str, str],
                                                              noirq: bool) -> None:
    append = boot_append(_kernel(**options))
    assert append.startswith(BASE_APPEND)
    assert ("acpi=noirq" in append.split()) is noirq
    assert "acpi=noirq" not in BASE_APPEND
