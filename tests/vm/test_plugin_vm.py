"""The plugin with real VMs: a splat or a dead guest fails the test that caused it, the
next test gets a fresh VM, requirements skip with reasons, xdist gives a VM per worker,
and an interrupted run leaves no QEMU behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from vmhelpers import harness_leftovers, qemu_processes

ACCEL = "--accel=tcg"


def _run(pytester: pytest.Pytester, tmp: Path, *args: str) -> pytest.RunResult:
    """An inner pytest run; TMPDIR (set by isolated_tmp) puts its VMs under tmp."""
    return pytester.runpytest_subprocess(ACCEL, "-p", "no:cacheprovider", *args, timeout=600)


def test_panic_mid_test_fails_that_test_and_the_next_gets_a_fresh_vm(
        pytester: pytest.Pytester, isolated_tmp: Path) -> None:
    pytester.makepyfile("""
        def test_a_crashes_the_kernel(vm):
            vm.run("echo c > /proc/sysrq-trigger", timeout=30)

        def test_b_runs_on_a_new_vm(vm):
            assert vm.name.endswith("boot2"), vm.name
            assert vm.run("true").ok
    """)
    result = _run(pytester, isolated_tmp)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*lost the guest*", "*Kernel panic - not syncing*"])
    assert qemu_processes(str(isolated_tmp)) == []


def test_a_splat_only_in_a_full_kernel_log_still_fails_its_test(
        pytester: pytest.Pytester, isolated_tmp: Path) -> None:
    """After hundreds of tests the ring buffer is full and a line count stays the same as
    lines arrive; the check reads by sequence number. The report goes to the log at level 6,
    below the console's loglevel, so only the kernel log carries it."""
    pytester.makepyfile("""
        FILL = ("i=0; while [ $i -lt 6000 ]; do echo \\"<6>filler $i of a full ring buffer\\" "
                "> /dev/kmsg; i=$((i+1)); done")

        def test_fills_the_log(vm):
            vm.run(FILL, timeout=300)

        def test_warns_in_a_full_log(vm):
            vm.run(FILL, timeout=300)
            vm.run("echo '<6>WARNING: CPU: 0 PID: 1 at fs/erofs/selftest.c:2 selftest+0x0/0x1'"
                   " > /dev/kmsg", timeout=30)
            vm.run("echo '<6>filler after the report' > /dev/kmsg", timeout=30)
    """)
    result = _run(pytester, isolated_tmp)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*test_warns_in_a_full_log*",
                                 "*kernel warning report*fs/erofs/selftest.c:2*"])


def test_kernel_warning_fails_the_test_with_the_excerpt_and_artifacts(
        pytester: pytest.Pytester, isolated_tmp: Path) -> None:
    pytester.makepyfile("""
        def test_provokes_a_warning(vm):
            # A report line in the kernel log, as a real WARN() prints it.
            vm.run("echo '<4>WARNING: CPU: 0 PID: 1 at fs/erofs/selftest.c:1 selftest+0x0/0x1'"
                   " > /dev/kmsg", timeout=30)

        def test_after_it(vm):
            assert vm.name.endswith("boot2")
    """)
    junit = pytester.path / "junit.xml"
    result = _run(pytester, isolated_tmp, f"--junitxml={junit}", "--artifacts=art")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*kernel reported a problem during this test*",
                                 "*kernel warning report*fs/erofs/selftest.c:1*"])
    [art] = [p for p in (pytester.path / "art").iterdir() if p.name.endswith("_a_warning")]
    assert (art / "console.log").is_file() and (art / "dmesg.txt").is_file()
    xml = junit.read_text()
    assert 'failures="1"' in xml and "selftest.c:1" in xml


def test_a_test_that_fails_by_pytest_fail_after_a_splat_still_retires_its_guest(
        pytester: pytest.Pytester, isolated_tmp: Path) -> None:
    """pytest.fail() raises a BaseException; the after-test check must judge the guest of a
    test that fails that way too (a race replay once handed an oopsed guest on like this,
    and the next test hung in drop_caches)."""
    pytester.makepyfile("""
        import pytest

        def test_warns_then_fails(vm):
            vm.run("echo '<4>WARNING: CPU: 0 PID: 1 at fs/erofs/selftest.c:3 selftest+0x0/0x1'"
                   " > /dev/kmsg", timeout=30)
            pytest.fail("the test's own words", pytrace=False)

        def test_after_it(vm):
            assert vm.name.endswith("boot2"), vm.name
    """)
    result = _run(pytester, isolated_tmp)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*kernel reported a problem during this test*",
                                 "*the test itself then failed with: the test's own words*"])


def test_missing_kernel_option_skips_with_the_reason(pytester: pytest.Pytester,
                                                     isolated_tmp: Path) -> None:
    pytester.makepyfile("""
        import pytest

        @pytest.mark.requires_kernel("CONFIG_HARNESS_DOES_NOT_EXIST", reason="needs a unicorn")
        def test_needs_unicorn(vm):
            pass
    """)
    result = _run(pytester, isolated_tmp, "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*lacks CONFIG_HARNESS_DOES_NOT_EXIST (needs a unicorn)*"])


def test_xdist_gives_each_worker_its_own_vm(pytester: pytest.Pytester, isolated_tmp: Path) -> None:
    pytester.makepyfile("""
        import pytest

        @pytest.mark.parametrize("n", range(4))
        def test_where(vm, n, worker_id):
            (vm_dir := __import__("pathlib").Path("pids")).mkdir(exist_ok=True)
            (vm_dir / f"{worker_id}-{n}").write_text(str(vm.pid))
            vm.run("sleep 0.5", check=True)
    """)
    result = _run(pytester, isolated_tmp, "-n", "2", "--artifacts=art")
    result.assert_outcomes(passed=4)
    pids = {p.name.split("-")[0]: p.read_text() for p in (pytester.path / "pids").iterdir()}
    assert len(pids) == 2 and len(set(pids.values())) == 2, pids
    assert qemu_processes(str(isolated_tmp)) == []
    # The report splits each case's time: the guest's half second shows as guest time in
    # every case, each worker's one boot in its first case, and the rest is the harness's.
    (results,) = (pytester.path / "art").glob("report-*/results.json")
    split = json.loads(results.read_text())["time_split"]
    assert split["cases"] == 4 and split["workers"] == 2, split
    assert split["guest"]["median"] >= 0.5 and split["boot"]["sum"] > 0.1, split
    cases = json.loads(results.read_text())["cases"]
    # A boot's length depends on whether the worker's VM was restored from a saved guest
    # (under a second) or booted cold; what must hold is where it is booked: two cases
    # carry a boot, the other two none.
    boots = sorted(c["timing"]["boot"] for c in cases)
    assert boots[:2] == [0.0, 0.0] and boots[2] > 0.05, cases
    for case in cases:
        parts = sum(case["timing"][k] for k in ("guest", "hotplug", "boot", "harness"))
        assert abs(parts - case["timing"]["total"]) < 0.01, case


def test_ctrl_c_during_a_test_leaves_no_qemu(pytester: pytest.Pytester,
                                             isolated_tmp: Path) -> None:
    pytester.makepyfile("""
        from pathlib import Path

        def test_long(vm):
            Path("booted").write_text("1")
            vm.run("sleep 120", timeout=300)
    """)
    proc = subprocess.Popen([sys.executable, "-m", "pytest", ACCEL, "-p", "no:cacheprovider"],
                            cwd=pytester.path, env={**os.environ, "TMPDIR": str(isolated_tmp)},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            preexec_fn=sigint_default)
    deadline = time.monotonic() + 300
    while not (pytester.path / "booted").exists() and time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        time.sleep(0.2)
    assert qemu_processes(str(isolated_tmp)), "the VM should be running now"
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert b"KeyboardInterrupt" in out
    assert qemu_processes(str(isolated_tmp)) == []
    assert harness_leftovers(isolated_tmp) == {}


def test_ctrl_c_during_boot_leaves_no_qemu(isolated_tmp: Path) -> None:
    proc = _exec_booting(isolated_tmp, sigint_default)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out
    assert b"interrupted" in out
    assert qemu_processes(str(isolated_tmp)) == []
    assert harness_leftovers(isolated_tmp) == {}


def test_sigterm_cleans_up_when_started_with_sigint_ignored(isolated_tmp: Path) -> None:
    """A background job's SIGINT is ignored, and the harness keeps it so (Ctrl-C at the
    terminal is not for it); SIGTERM still ends it cleanly, as it does CI timeouts."""
    proc = _exec_booting(isolated_tmp, sigint_ignored)
    proc.send_signal(signal.SIGINT)
    time.sleep(2.0)
    assert proc.poll() is None, "SIGINT was ignored by the parent, yet it ended the harness"
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 143, out
    assert b"terminated" in out
    assert qemu_processes(str(isolated_tmp)) == []
    assert harness_leftovers(isolated_tmp) == {}


def _exec_booting(tmp: Path, preexec: Callable[[], None]) -> subprocess.Popen[bytes]:
    """``harness exec`` of a long command, returned once its QEMU runs and boots."""
    proc = subprocess.Popen([sys.executable, "-m", "harness", "exec", "--accel=tcg", "--",
                             "sleep 300"], env={**os.environ, "TMPDIR": str(tmp)},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            preexec_fn=preexec)
    deadline = time.monotonic() + 120
    while not qemu_processes(str(tmp)) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        time.sleep(0.05)
    assert qemu_processes(str(tmp)), "QEMU never started"
    time.sleep(1.0)  # inside the boot, before the guest is ready
    return proc


# Each test sets the SIGINT disposition its child starts with: inherited from whatever ran
# pytest (a background job, nohup, a CI runner), it may be ignored.
def sigint_default() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def sigint_ignored() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def test_a_disk_a_superblock_still_holds_is_reported_busy_to_the_kept_disks(
        pytester: pytest.Pytester, isolated_tmp: Path) -> None:
    """Read-only disks go back to the guest's kept disks after a test only when the guest
    can open them exclusively: a lazily unmounted filesystem that a process still holds
    makes its disk busy (it is unplugged instead), and once the process is gone it is free."""
    pytester.makepyfile("""
        def test_busy_while_held(erofs_image, mount, pagecache, guest):
            m = mount(erofs_image("sizes"), "", "block")
            guest.check(f"sleep 60 < {m.path('four-mib')} > /dev/null 2>&1 & "
                        "echo $! > /run/sleeper")
            assert mount.umount(m, lazy=True).ok
            _, busy = pagecache.cleanup("/nonexistent", [], [m.device])
            assert busy == {m.device}
            guest.check("kill $(cat /run/sleeper) && sleep 0.5")
            _, busy = pagecache.cleanup("/nonexistent", [], [m.device])
            assert busy == set()
    """)
    result = _run(pytester, isolated_tmp)
    result.assert_outcomes(passed=1)
    assert qemu_processes(str(isolated_tmp)) == []
