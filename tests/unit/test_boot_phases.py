"""make bench splits a boot at the guest's clock: the markers /init prints with its uptime
and the uptime the first SSH command reads."""

import pytest

from harness.bench.boot import PHASES, boot_phases
from harness.guestimage.build import READY_MARKER


def test_a_boot_splits_into_four_phases_that_add_up() -> None:
    console = (f"[    0.000000] Linux version 7.3.4\n{READY_MARKER}: init started at 2.50\n"
               f"{READY_MARKER}: ready at 3.10\n")
    phases = boot_phases(total=5.0, uptime_at_answer=4.0, console=console)
    assert phases == pytest.approx({PHASES[0]: 1.0, PHASES[1]: 2.5, PHASES[2]: 0.6,
                                    PHASES[3]: 0.9})
    assert sum(phases.values()) == pytest.approx(5.0)


def test_without_the_markers_only_the_time_before_the_kernel_is_known() -> None:
    assert boot_phases(total=5.0, uptime_at_answer=4.5, console="") == {PHASES[0]: 0.5}
