"""The suite reporter keeps every test's outcome, not only the VM tests'."""

import pytest

from harness.plugin.reporter import SuiteReporter


def _report(nodeid: str, when: str, outcome: str, vm: bool) -> pytest.TestReport:
    props = [("harness_vm", 1)] if vm else []
    return pytest.TestReport(nodeid, ("t.py", 0, nodeid), {}, outcome, None, when,
                             user_properties=props)


def test_tests_without_a_vm_are_outcomes_too(pytestconfig: pytest.Config) -> None:
    """A matrix cell judges its tests by this report: a host-only test (an image build
    check) that failed and was left out would fail unseen."""
    reporter = SuiteReporter(pytestconfig)
    reporter.pytest_runtest_logreport(_report("t.py::host", "call", "failed", vm=False))
    assert not reporter.used_vm and reporter.report() is None  # no VM: no suite report
    reporter.pytest_runtest_logreport(_report("t.py::guest", "call", "passed", vm=True))
    assert reporter.used_vm
    assert [(c.nodeid, c.outcome) for c in reporter.results] == [("t.py::host", "failed"),
                                                                  ("t.py::guest", "passed")]


def test_a_skip_inside_the_test_keeps_its_reason(pytestconfig: pytest.Config) -> None:
    """A matrix cell lists its unexpected skips with their reasons: a skip raised in the
    test body (a kernel that cannot do what the test needs) must carry its reason as a
    skip at setup (a missing kernel option) does."""
    reporter = SuiteReporter(pytestconfig)
    for when in ("setup", "call"):
        report = _report(f"t.py::{when}", when, "skipped", vm=True)
        report.longrepr = ("t.py", 1, "Skipped: this kernel collapses no EROFS file")
        reporter.pytest_runtest_logreport(report)
    assert [(c.outcome, c.reason) for c in reporter.results] == [
        ("skipped", "Skipped: this kernel collapses no EROFS file")] * 2
