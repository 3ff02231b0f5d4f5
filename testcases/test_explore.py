"""Random sequences of mounts, reads, mappings, hints, cache drops and unmounts agree with
the model of page cache sharing at every step (harness/explore/), and every sequence the
explorer ever shrank a divergence to (reports/found/) replays.

The smoke here is a fixed seed of 200 steps; `make explore` runs for as long as it is given.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import found_params
from harness.erofs.images import BuiltImage
from harness.erofs.tools import ErofsUtils
from harness.explore.driver import Divergence, Driver
from harness.explore.found import found_reports, load_generated, load_steps, write_found
from harness.explore.generated import generated_pool
from harness.explore.machine import explore
from harness.explore.pool import pool_names
from harness.guest.handle import Guest
from harness.vm.machine import VMState

SMOKE_SEED = 20261123
SMOKE_STEPS = 200


def _driver(guest: Guest, erofs_image: Callable[[str], BuiltImage]) -> tuple[Driver, list[str]]:
    names = pool_names(guest.vm.kernel.features)
    return Driver(guest, {name: erofs_image(name) for name in names}), names


@pytest.mark.fast
@pytest.mark.requires_kernel("page_cache_share")
def test_random_sequences_agree_with_the_model(guest: Guest,
                                               erofs_image: Callable[[str], BuiltImage],
                                               measure: Callable[..., None],
                                               request: pytest.FixtureRequest) -> None:
    driver, names = _driver(guest, erofs_image)
    with driver:
        outcome = explore(driver, names, seed=SMOKE_SEED, steps=SMOKE_STEPS, seconds=1e9)
    measure(explore_steps=outcome.steps, explore_seconds=round(outcome.seconds, 1),
            explore_steps_per_second=round(outcome.steps_per_second, 2),
            explore_sequences=outcome.sequences,
            **{f"explore_rule_{rule}": count for rule, count in outcome.rules.items()})
    if outcome.failure is not None:
        artifacts = Path(request.config.getoption("--artifacts")) / "found"
        saved = write_found(guest.vm.kernel.spec, SMOKE_SEED, outcome.failure,
                            outcome.shrunk or [], artifacts)
        pytest.fail(f"seed {SMOKE_SEED}: {outcome.failure}\nshrunk to "
                    f"{len(outcome.shrunk or [])} steps, saved as {saved}")
    assert outcome.steps >= SMOKE_STEPS, f"only {outcome.steps} steps ran"
    assert len(outcome.rules) >= 8, f"rules exercised: {dict(outcome.rules)}"


def driver_alive(guest: Guest) -> bool:
    return guest.vm.state is VMState.RUNNING


def _found() -> list[object]:
    return found_params(found_reports())


@pytest.mark.requires_kernel("page_cache_share")
@pytest.mark.parametrize("report", _found())
def test_found_sequence_replays(report: Path, guest: Guest,
                                erofs_image: Callable[[str], BuiltImage],
                                erofs_tools: ErofsUtils) -> None:
    names = pool_names(guest.vm.kernel.features)
    images = {name: erofs_image(name) for name in names}
    drawn = load_generated(report)
    # A pool with generated images: the same seed and count draw and build them again.
    generated = generated_pool(*drawn, erofs_tools, known_bugs=True, say=lambda line: None) \
        if drawn else None
    try:
        if generated is not None:
            images.update(generated.images)
        driver = Driver(guest, images, generated.pool if generated is not None else None)
        with driver:
            driver.reset()
            for step in load_steps(report):
                try:
                    driver.step(step)
                except Divergence as exc:
                    pytest.fail(f"{report.name}: {exc}")
    finally:
        if generated is not None:
            if driver_alive(guest):
                guest.session.discard(*(image.path for image in generated.images.values()))
            generated.close()
