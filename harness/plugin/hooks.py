"""Hooks: options, markers, kernel-requirement skips, splat and liveness checks around each
test that uses the VM, artifacts of failed tests."""

from __future__ import annotations

import time
from collections.abc import Generator

import pytest

from harness.core.errors import HarnessError
from harness.core.names import safe_name
from harness.core.signals import install_sigterm_cleanup
from harness.kernel.kernel import Kernel
from harness.kernel.knownbugs import release_tuple
from harness.plugin.markers import (
    MARKERS,
    KnownBug,
    check_known_bug_mark,
    check_regression_mark,
    missing_requirements,
    requirement_names,
)
from harness.plugin.reporter import SuiteReporter
from harness.plugin.state import (
    Options,
    VMPool,
    env_default,
    options_key,
    pool_key,
    worker_id,
)
from harness.vm.machine import VM, VMState
from harness.vm.options import add_vm_options
from harness.vm.splats import splats_seen

VM_FIXTURES = {"vm", "guest"}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("erofs-harness", "EROFS page cache sharing harness")
    add_vm_options(group.addoption, kernel=env_default("HARNESS_KERNEL", None))
    group.addoption("--ignore-known-bugs", action="store_true", default=False,
                    help="report tests marked known_bug as plain failures (repro uses it: "
                         "there the bug is the point)")
    group.addoption("--artifacts", default="artifacts", metavar="DIR",
                    help="where console logs and dmesg of failed tests go (default artifacts)")


def pytest_configure(config: pytest.Config) -> None:
    # SIGTERM stops the session the way Ctrl-C does, so the VM pool is closed
    # (harness/core/signals.py says why an ignored SIGINT stays ignored).
    install_sigterm_cleanup()
    for line in MARKERS:
        config.addinivalue_line("markers", line)
    options = Options.from_config(config)
    if options.vm.memory_mb < 256:
        raise pytest.UsageError(f"--vm-memory={options.vm.memory_mb}: at least 256 MiB")
    if options.vm.cpus < 1:
        raise pytest.UsageError(f"--vm-cpus={options.vm.cpus}: at least 1")
    config.stash[options_key] = options
    config.stash[pool_key] = VMPool(options, f"vm-{worker_id(config)}")
    if not config.pluginmanager.has_plugin(SuiteReporter.NAME):
        config.pluginmanager.register(SuiteReporter(config), SuiteReporter.NAME)


def pytest_report_header(config: pytest.Config) -> str:
    opts = config.stash[options_key]
    return (f"erofs-harness: kernel={opts.kernel or 'default (pinned)'} accel={opts.vm.accel} "
            f"vm={opts.vm.memory_mb}MiB/{opts.vm.cpus}cpu artifacts={opts.artifacts}")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Bad marker arguments stop the run before any VM boots (a UsageError names the test)."""
    for item in items:
        for mark in item.iter_markers("requires_kernel"):
            requirement_names(mark, item.nodeid)
        for mark in item.iter_markers("regression"):
            check_regression_mark(mark, item.nodeid)
        for mark in item.iter_markers("known_bug"):
            check_known_bug_mark(mark, item.nodeid)


def _kernel_or_exit(pool: VMPool) -> Kernel:
    try:
        return pool.kernel
    except HarnessError as exc:
        pytest.exit(f"harness: {exc}", returncode=4)
        raise  # unreachable: pytest.exit raises


@pytest.hookimpl(tryfirst=True)  # before pytest's own setup reads the xfail marks
def pytest_runtest_setup(item: pytest.Item) -> None:
    if VM_FIXTURES & set(getattr(item, "fixturenames", ())):
        item.user_properties.append(("harness_vm", 1))  # counted in the suite report
        item.user_properties.append(("harness_worker", worker_id(item.config)))
        item.stash[_timing_key] = (time.monotonic(),
                                   item.config.stash[pool_key].waits.snapshot())
        # A coverage kernel's counters are kept per test file (make review selects by them).
        item.config.stash[pool_key].cover(item.path.name)
    marks = list(item.iter_markers("requires_kernel"))
    regressions = list(item.iter_markers("regression"))
    bugs = list(item.iter_markers("known_bug"))
    if not marks and not regressions and not bugs:
        return
    where = item.nodeid
    names = [n for mark in marks for n in requirement_names(mark, where)]
    checked = [check_regression_mark(m, where) for m in regressions]
    kernel = _kernel_or_exit(item.config.stash[pool_key])
    missing = missing_requirements(kernel, names)
    if missing:
        reasons = [m.kwargs["reason"] for m in marks if m.kwargs.get("reason")]
        why = f" ({'; '.join(reasons)})" if reasons else ""
        pytest.skip(f"kernel {kernel.release} lacks {', '.join(missing)}{why}")
    for report, fix, fixed_in in checked:
        if fixed_in and release_tuple(kernel.release) < release_tuple(fixed_in):
            pytest.skip(f"kernel {kernel.release} predates the fix {fix} (in {fixed_in}) for "
                        f"{report}")
    for mark in bugs:
        bug = check_known_bug_mark(mark, where)
        if item.config.getoption("ignore_known_bugs"):
            continue
        callspec = getattr(item, "callspec", None)
        if bug.applies(kernel.release, kernel.series, callspec.id if callspec else "",
                       str(kernel.spec), kernel.has):
            item.stash[known_bug_key] = (*item.stash.get(known_bug_key, ()),
                                         (bug, kernel.release))
            # A known bug may crash the guest: keep the coverage counters gathered so far.
            item.config.stash[pool_key].save_coverage()


def _vm_of(item: pytest.Item) -> VM | None:
    funcargs = getattr(item, "funcargs", {})
    vm = funcargs.get("vm")
    if vm is None and "guest" in funcargs:
        vm = funcargs["guest"].vm
    return vm if isinstance(vm, VM) else None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    vm = _vm_of(item) if VM_FIXTURES & set(getattr(item, "fixturenames", ())) else None
    if vm is None:
        return (yield)
    start = vm.console_offset()
    if vm.accel is not None:
        item.user_properties.append(("harness_accel", vm.accel.name))
    item.stash[_start_key] = (vm, start)
    try:
        outcome = yield
    except (Exception, pytest.fail.Exception) as exc:
        # pytest.fail() raises a BaseException: a test that fails that way (a race replay
        # that met another known bug) must have its guest judged, and retired, all the same.
        # A splat is the cause, whatever the test saw of it (a lost probe, an EIO, a wrong
        # byte): report it first, with what the test raised after it.
        problem = _after_test(item, vm, start)
        if problem:
            pytest.fail(f"{problem}\n\nthe test itself then failed with: "
                        f"{str(exc).strip()[:2000] or type(exc).__name__}", pytrace=False)
        raise
    problem = _after_test(item, vm, start)
    if problem:
        pytest.fail(problem, pytrace=False)
    return outcome


def _after_test(item: pytest.Item, vm: VM, start: int) -> str | None:
    """A splat or a dead guest fails the test that caused it and retires the VM."""
    if vm.console is not None and vm.console.ended:
        vm.mark_broken()
        return (f"the guest died during this test (QEMU exit status "
                f"{vm.console.exitstatus()}); last console lines:\n{vm.console.tail(40)}")
    if not vm.responsive():
        vm.mark_broken()
        return (f"the guest stopped answering during this test; last console lines:\n"
                f"{vm.console.tail(40) if vm.console else ''}")
    log = ""
    session = item.config.stash[pool_key].session
    if session is not None and session.vm is vm and vm.state == VMState.RUNNING:
        # From where the previous test's check stopped: sequence numbers, not line counts.
        try:
            since = session.probe.kernel_log_since(session.kernel_log_seen)
            session.kernel_log_seen = since.mark
            log = since.text
        except HarnessError as exc:  # the console below still tells what happened
            log = f"(the kernel log could not be read: {exc})"
            # A guest that cannot show its log cannot vouch for itself to the next test.
            vm.mark_broken()
    splats = splats_seen(vm.console.since(start) if vm.console else "", log)
    if splats:
        vm.mark_broken()
        return "kernel reported a problem during this test:\n" + "\n\n".join(map(str, splats))
    return None


_start_key = pytest.StashKey[tuple[VM, int]]()
_timing_key = pytest.StashKey[tuple[float, dict[str, float]]]()
# Every known bug that applies to the case on its kernel (a case may meet more than one).
known_bug_key = pytest.StashKey[tuple[tuple[KnownBug, str], ...]]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item,
                              call: pytest.CallInfo[None]) -> Generator[None, pytest.TestReport,
                                                                        pytest.TestReport]:
    report = yield
    if report.when == "teardown" and _timing_key in item.stash:
        report.user_properties.append(("harness_timing", _case_timing(item)))
    if report.when == "call" and report.failed and _start_key in item.stash:
        vm, start = item.stash[_start_key]
        _save_artifacts(item, vm, start, report)
    if report.when == "call" and known_bug_key in item.stash:
        _judge_known_bugs(report, item.stash[known_bug_key])
    return report


def _case_timing(item: pytest.Item) -> dict[str, float]:
    """The case's wall time from setup to the end of teardown, and what of it was spent
    waiting on the guest (commands and probe calls), on disk hot-plug and on boots; the
    rest ("harness") is the harness's and pytest's own work."""
    started, before = item.stash[_timing_key]
    timing = {"total": time.monotonic() - started,
              **item.config.stash[pool_key].waits.since(before)}
    timing["harness"] = timing["total"] - sum(v for k, v in timing.items() if k != "total")
    return {k: round(v, 4) for k, v in timing.items()}


def _judge_known_bugs(report: pytest.TestReport,
                      bugs: tuple[tuple[KnownBug, str], ...]) -> None:
    """On a kernel that carries known bugs: a failure with one's signature is an expected
    one; another failure stays a failure; a pass is an error (the bug did not show) unless
    every bug that applies is one that may not show in a given case (strict=False: a
    WARN_ON_ONCE, say, which only the first case of a boot to meet it reports)."""
    if report.failed:
        for bug, release in bugs:
            if bug.signature.search(report.longreprtext):
                report.outcome = "skipped"
                report.wasxfail = f"known kernel bug on {release}: {bug.reason}"
                return
        for bug, release in bugs:
            report.sections.append(("known bug", f"this test expects the known bug "
                                    f"'{bug.reason}' on {release}, but it failed without the "
                                    f"bug's signature /{bug.signature.pattern}/: another "
                                    f"failure"))
    elif report.passed:
        strict = [(bug, release) for bug, release in bugs if bug.strict]
        if strict:
            bug, release = strict[0]
            report.outcome = "failed"
            report.longrepr = (f"[XPASS(strict)] the known bug '{bug.reason}' is expected on "
                               f"{release}, but the test passed: is it fixed there?")


def _save_artifacts(item: pytest.Item, vm: VM, start: int, report: pytest.TestReport) -> None:
    opts = item.config.stash[options_key]
    folder = opts.artifacts / safe_name(item.nodeid)
    folder.mkdir(parents=True, exist_ok=True)
    console = vm.console.since(start) if vm.console else ""
    (folder / "console.log").write_text(console)
    report.sections.append(("console during the test", console[-8000:]))
    if vm.responsive(5):
        try:
            dmesg = vm.run("dmesg", timeout=30, forensic=True).stdout
        except HarnessError as exc:  # evidence is best effort; the failure is reported anyway
            dmesg = f"(dmesg could not be read: {exc})"
        (folder / "dmesg.txt").write_text(dmesg)
        report.sections.append(("dmesg (tail)", "\n".join(dmesg.splitlines()[-60:])))
    report.sections.append(("artifacts", str(folder)))


def pytest_sessionfinish(session: pytest.Session) -> None:
    pool: VMPool | None = session.config.stash.get(pool_key, None)
    if pool is not None:
        pool.close()
