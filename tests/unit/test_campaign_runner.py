"""The one campaign runner: requirements before any boot, the seed and budget in the results
JSON, the campaign's verdict as the exit status, the guest stopped however the run ends."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from harness.campaign.runner import (
    Campaign,
    CampaignRun,
    Outcome,
    Settings,
    Verdict,
    run_campaign,
)
from harness.guest.session import GuestSession
from harness.kernel.kernel import Kernel
from harness.kernel.spec import parse_kernel_spec
from harness.vm.machine import VMConfig


class FakePrepared:
    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel


class Fake(Campaign):
    name = "fake"
    help = "a campaign for the runner's tests"

    def __init__(self, outcome: Outcome | Exception, unmet: str | None = None) -> None:
        self.outcome, self.reason = outcome, unmet
        self.prepared = False

    def unmet(self, kernel: Kernel) -> str | None:
        return self.reason

    def prepare(self, run: CampaignRun) -> None:
        self.prepared = True

    def run(self, run: CampaignRun, session: GuestSession) -> Outcome:
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return self.outcome


def _go(campaign: Campaign, tmp_path: Path, log: list[str]) -> int:
    kernel = Kernel(spec=parse_kernel_spec("debian:7.3"),
                    release="7.3.4", vmlinuz=Path("/k"), modules_dir=None)

    @contextmanager
    def fake_guest(prepared: Any, config: VMConfig, **kwargs: Any) -> Iterator[Any]:
        log.append("booted")
        try:
            yield SimpleNamespace(vm=SimpleNamespace(kernel=kernel))
        finally:
            log.append("stopped")

    settings = Settings(kernel="debian:7.3", vm=VMConfig(), seed=42, minutes=0.5,
                        out=tmp_path)
    return run_campaign(campaign, settings, prepare_=lambda spec: FakePrepared(kernel),  # type: ignore[arg-type, return-value]
                        open_guest_=fake_guest)


def test_a_clean_run_exits_0_with_seed_and_figures_in_its_json(tmp_path: Path) -> None:
    log: list[str] = []
    status = _go(Fake(Outcome(Verdict.CLEAN, {"examples": 3}, ["all good"])), tmp_path, log)
    assert status == 0 and log == ["booted", "stopped"]
    result = json.loads((tmp_path / "fake.json").read_text())
    assert result["seed"] == 42 and result["verdict"] == "clean" and result["examples"] == 3
    assert result["kernel"] == "debian:7.3" and result["minutes"] == 0.5


def test_a_finding_exits_1(tmp_path: Path) -> None:
    assert _go(Fake(Outcome(Verdict.FOUND, {}, ["found"])), tmp_path, []) == 1


def test_an_unmet_requirement_is_no_verdict_and_boots_nothing(tmp_path: Path) -> None:
    log: list[str] = []
    campaign = Fake(Outcome(Verdict.CLEAN), unmet="has no EROFS page cache sharing")
    assert _go(campaign, tmp_path, log) == 2
    assert log == [] and not campaign.prepared
    assert json.loads((tmp_path / "fake.json").read_text())["unmet"].startswith("has no")


def test_the_guest_is_stopped_when_the_campaign_raises(tmp_path: Path) -> None:
    log: list[str] = []
    with pytest.raises(RuntimeError):
        _go(Fake(RuntimeError("boom")), tmp_path, log)
    assert log == ["booted", "stopped"]


class _Stoppable:
    def __init__(self, name: str, log: list[str]) -> None:
        self.name, self.log = name, log
        self.vm = self
        self.kernel = None  # the booted kernel as the VM knows it (the runner takes it)

    def stop(self) -> None:
        self.log.append(f"stop {self.name}")

    def need_modules(self, *names: str) -> None:
        self.log.append(f"{self.name} loads {' '.join(names)}")


class Renewing(Campaign):
    """Takes a new guest for every step, as a campaign whose steps all oops would."""
    name = "renewing"
    help = "a campaign that asks for new guests until it gets none"

    def run(self, run: CampaignRun, session: GuestSession) -> Outcome:
        taken = 0
        while (fresh := run.new_guest(session, "the step oopsed", "erofs")) is not None:
            session, taken = fresh, taken + 1
        return Outcome(Verdict.CLEAN, {"taken": taken})


def test_new_guests_stop_the_old_one_first_stop_at_the_cap_and_all_end_with_the_run(
        tmp_path: Path) -> None:
    from harness.campaign.runner import MAX_NEW_GUESTS
    log: list[str] = []
    kernel = Kernel(spec=parse_kernel_spec("debian:7.3"),
                    release="7.3.4", vmlinuz=Path("/k"), modules_dir=None)

    @contextmanager
    def guest(prepared: Any, config: VMConfig, *, name: str, **kwargs: Any) -> Iterator[Any]:
        log.append(f"boot {name}")
        try:
            yield _Stoppable(name, log)
        finally:
            log.append(f"end {name}")

    settings = Settings(kernel="debian:7.3", vm=VMConfig(), seed=1, minutes=1, out=tmp_path)
    status = run_campaign(Renewing(), settings, prepare_=lambda spec: FakePrepared(kernel),  # type: ignore[arg-type, return-value]
                          open_guest_=guest)
    result = json.loads((tmp_path / "renewing.json").read_text())
    assert status == 0 and result["taken"] == MAX_NEW_GUESTS == result["new_guests"]
    # One VM at a time: each new guest boots after the one before it stopped.
    assert log[:5] == ["boot renewing", "stop renewing", "boot renewing-1",
                       "renewing-1 loads erofs", "stop renewing-1"]
    assert sum(line.startswith("boot") for line in log) == MAX_NEW_GUESTS + 1
    assert sum(line.startswith("end") for line in log) == MAX_NEW_GUESTS + 1
