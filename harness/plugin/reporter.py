"""The suite report as a registered plugin object: it collects every test's outcome and the
VM tests' measurements and timings, and writes the table, JSON and HTML at the end of a
session that used a VM.

It is an object, not module globals, so that each pytest session (pytester runs several in
one process, xdist has a controller and workers) has its own results.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from harness.core.cache import content_key
from harness.core.errors import HarnessError
from harness.plugin.state import VMPool, options_key, pool_key
from harness.results.report import CaseResult, Report


def _skip_reason(report: pytest.TestReport) -> str:
    """Why a case was skipped or xfailed: a matrix cell lists it beside an unexpected
    skip, which says nothing without it."""
    if hasattr(report, "wasxfail"):
        return str(report.wasxfail)
    longrepr = report.longrepr
    return str(longrepr[2]) if isinstance(longrepr, tuple) else str(longrepr)


class SuiteReporter:
    NAME = "erofs-harness-reporter"

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.results: list[CaseResult] = []
        self.accels: list[str] = []
        self.timings: dict[str, dict[str, float]] = {}
        self.started = time.monotonic()
        # A session without a VM test (the harness's unit tests) writes no report.
        self.used_vm = False

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        self.started = time.monotonic()

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Collect every test's outcome, and the measurements and timing of those that used
        a VM (on the xdist controller too: the workers' reports carry their
        user_properties). The tests without a VM (image builds, fsck) are outcomes too: a
        matrix cell judges its tests by this report, and one missing from it could fail
        unseen."""
        props = dict(report.user_properties)
        self.used_vm = self.used_vm or "harness_vm" in props
        timing = props.get("harness_timing")
        if isinstance(timing, dict):  # on the teardown report: the case is complete
            self.timings[report.nodeid] = {str(k): float(v) for k, v in timing.items()}
        outcome: str | None = None
        reason = ""
        if report.when == "call":
            outcome = "xfailed" if hasattr(report, "wasxfail") and report.skipped else (
                "xpassed" if hasattr(report, "wasxfail") else report.outcome)
            if report.failed:
                # Kept for make compare: the failure's message, with any splat's first line.
                reason = report.longreprtext[-3000:]
            elif report.skipped:  # pytest.skip() or a known bug inside the test body
                reason = _skip_reason(report)
        elif report.skipped and report.when == "setup":
            outcome = "skipped"
            reason = _skip_reason(report)
        elif report.failed:
            outcome = "error"
            reason = report.longreprtext[-3000:]
        if outcome is None:
            return
        measurements = {k[len("measure:"):]: v for k, v in props.items()
                        if str(k).startswith("measure:")}
        self.results.append(CaseResult(report.nodeid, outcome, report.duration, measurements,
                                       reason, worker=str(props.get("harness_worker", ""))))
        if "harness_accel" in props:
            self.accels.append(str(props["harness_accel"]))

    def report(self) -> Report | None:
        if not self.used_vm or hasattr(self.config, "workerinput"):
            return None
        pool = self.config.stash[pool_key]
        options = self.config.stash[options_key]
        kernel = (pool.kernel_error is None and pool.kernel) or None
        settings = {"kernel": kernel.release if kernel else "?",
                    "kernel_spec": options.kernel or "default (pinned)",
                    "kernel_config_hash": content_key(f"{k}={v}" for k, v in
                                                      sorted(kernel.config.items()))
                    if kernel and kernel.config else "?",
                    "kernel_patches": list(kernel.series) if kernel else [],
                    "guest_image": _guest_image_key(pool) if kernel else "?",
                    "accel": max(set(self.accels), key=self.accels.count) if self.accels
                    else options.vm.accel,
                    "mkfs": _mkfs_version()}
        for case in self.results:
            case.timing = self.timings.get(case.nodeid, {})
        report = Report(settings, list(self.results))
        report.seconds = time.monotonic() - self.started
        return report

    def pytest_terminal_summary(self, terminalreporter: Any, exitstatus: int,
                                config: pytest.Config) -> None:
        report = self.report()
        if report is None:
            return
        folder = config.stash[options_key].artifacts / (
            f"report-{report.config['kernel']}-{report.config['accel']}")
        json_path, html_path = report.write(folder)
        terminalreporter.write_sep("=", "EROFS page cache sharing report")
        terminalreporter.write_line(report.table())
        terminalreporter.write_line(f"report: {html_path} and {json_path}")


def _guest_image_key(pool: VMPool) -> str:
    # Under xdist the controller booted nothing: the image the workers built is in the
    # cache by then, so asking for it only looks it up.
    try:
        return pool.image_key or pool.image.key
    except HarnessError:
        return "?"


def _mkfs_version() -> str:
    # Only what is at hand: a summary must not fetch or build anything.
    from harness.erofs.tools import known_version
    return known_version() or "not used"
