"""Images nobody picked: generated trees built with generated mkfs.erofs layouts read back as
their trees on every source, plain and sharing, and share exactly as the model says
(harness/layouts/); every example `make layouts` ever shrank a finding to
(reports/found/layout-*.yaml) replays.

The smoke here is a fixed seed of a few examples; `make layouts` runs for as long as it is
given.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import SUBPAGE_WARNING, found_params
from harness.campaign.found import known_finds, other_known_finds, which_known
from harness.erofs.tools import ErofsUtils
from harness.guest.session import GuestSession
from harness.layouts.found import found_reports, load_found
from harness.layouts.search import Search

SMOKE_SEED = 20261206
SMOKE_EXAMPLES = 6


def _search(session: GuestSession, tools: ErofsUtils, seed: int, examples: int,
            known: Callable[[str], str | None] = lambda failure: None) -> Search:
    kernel = session.vm.kernel
    return Search(session, tools, sharing=bool(kernel.features.get("page_cache_share")),
                  seed=seed, seconds=1e9, max_examples=examples,
                  io_uring=bool(kernel.features.get("io_uring", True)), known=known)


@pytest.mark.fast
@pytest.mark.known_bug(**SUBPAGE_WARNING)
def test_generated_layouts_read_back_and_share_as_the_model_says(
        guest_session: GuestSession, erofs_tools: ErofsUtils,
        measure: Callable[..., None]) -> None:
    kernel = guest_session.vm.kernel
    known = known_finds(kernel, "layout")
    search = _search(guest_session, erofs_tools, SMOKE_SEED, SMOKE_EXAMPLES,
                     lambda failure: which_known(failure, known))
    try:
        findings = search.run()
    finally:
        search.close()
    tally = search.tally
    measure(layout_examples=tally.examples, layout_images=tally.images,
            layout_mounts=tally.mounts, layout_options=len(tally.options))
    assert not findings, f"seed {SMOKE_SEED}: " + "\n\n".join(
        f"{f.failure}" for f in findings)
    # The seed is fixed, so these are facts about the seed, not luck: an example that no
    # longer reaches the kernel means mkfs or the generator changed.
    assert tally.checked >= 3, (f"only {tally.checked} of {tally.examples} examples reached "
                                f"the kernel; mkfs refused {dict(tally.mkfs_refused)}, "
                                f"erofs-utils bugs {tally.utils_bugs}")
    assert tally.mounts >= 6 * tally.checked, f"{tally.mounts} mounts for {tally.checked}"


def _found() -> list[object]:
    return found_params(found_reports(), pytest.mark.known_bug(**SUBPAGE_WARNING))


FOUND_REPORTS = _found()
if FOUND_REPORTS:  # no replay test at all, rather than one skipped for an empty set
    @pytest.mark.parametrize("report", FOUND_REPORTS)
    def test_found_layout_replays(report: Path, guest_session: GuestSession,
                                  erofs_tools: ErofsUtils) -> None:
        example, _ = load_found(report)
        # Other reports' known bugs may show beside this one's: only this report's bug (or
        # a new one) fails the replay.
        others = other_known_finds(guest_session.vm.kernel, report)
        search = _search(guest_session, erofs_tools, 0, 1)
        try:
            result = search.run_one(example)
        finally:
            search.close()
        tally = search.tally
        assert result is not None, (f"{report.name}: the example no longer reaches the "
                                    f"kernel: {tally.mkfs_refused or tally.utils_bugs}")
        problems = [p for p in result.problems if which_known(p, others) is None]
        assert not problems, "\n".join(problems)
