"""The plugin with real VMs: a splat or a dead guest fails the test that caused it, the
next test gets a fresh VM, requirements skip with reasons, xdist gives a VM per worker,
and an interrupted run leaves no QEMU behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from vmhelpers import qemu_processes

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
    """)
    result = _run(pytester, isolated_tmp, "-n", "2")
    result.assert_outcomes(passed=4)
    pids = {p.name.split("-")[0]: p.read_text() for p in (pytester.path / "pids").iterdir()}
    assert len(pids) == 2 and len(set(pids.values())) == 2, pids
    assert qemu_processes(str(isolated_tmp)) == []


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
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while not (pytester.path / "booted").exists() and time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        time.sleep(0.2)
    assert qemu_processes(str(isolated_tmp)), "the VM should be running now"
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert b"KeyboardInterrupt" in out
    assert qemu_processes(str(isolated_tmp)) == []
    assert [p for p in isolated_tmp.iterdir() if p.name.startswith("harness-")] == []


def test_ctrl_c_during_boot_leaves_no_qemu(isolated_tmp: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "harness", "exec", "--accel=tcg", "--",
                             "true"], env={**os.environ, "TMPDIR": str(isolated_tmp)},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while not qemu_processes(str(isolated_tmp)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert qemu_processes(str(isolated_tmp)), "QEMU never started"
    time.sleep(1.0)  # inside the boot, before the guest is ready
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out
    assert b"interrupted" in out
    assert qemu_processes(str(isolated_tmp)) == []
    assert [p for p in isolated_tmp.iterdir() if p.name.startswith("harness-")] == []
