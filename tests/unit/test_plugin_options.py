"""The plugin's options and markers, in-process with pytester (no VM)."""

import pytest


def test_options_live_in_one_group(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    result.stdout.fnmatch_lines(["*EROFS page cache sharing harness*", "*--kernel=KERNEL*",
                                 "*--accel=*", "*--vm-memory=MB*", "*--vm-cpus=N*",
                                 "*--vm-keep*", "*--artifacts=DIR*"])


def test_markers_are_registered(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--markers")
    result.stdout.fnmatch_lines(["*requires_kernel(*needs*", "*regression(report, fix*"])


def test_bad_requires_kernel_argument_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import pytest
        @pytest.mark.requires_kernel("warp_drive")
        def test_x():
            pass
    """)
    result = pytester.runpytest()
    result.stderr.fnmatch_lines(["*requires_kernel('warp_drive'): not a known feature*"])
    assert result.ret == pytest.ExitCode.USAGE_ERROR


def test_bad_vm_memory_is_a_usage_error(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--vm-memory=16")
    result.stderr.fnmatch_lines(["*--vm-memory=16: at least 256 MiB*"])
    assert result.ret == pytest.ExitCode.USAGE_ERROR


def test_unknown_kernel_spec_stops_the_run_with_one_message(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        def test_x(kernel):
            pass
    """)
    result = pytester.runpytest("--kernel=ubuntu:24.04")
    result.stdout.fnmatch_lines(["*unknown kernel spec kind 'ubuntu'*"])
    assert "Traceback" not in result.stdout.str()
    assert result.ret != 0


def test_minimum_release_requirement_skips_older_kernels() -> None:
    from pathlib import Path

    from harness.kernel.kernel import Kernel
    from harness.plugin.markers import missing_requirements
    old = Kernel("debian:6.12", "6.12.117+deb12-cloud-amd64", Path("/k"), None,
                 config={"CONFIG_EROFS_FS": "m"})
    assert missing_requirements(old, [">=6.16"]) == [
        "release >=6.16 (it is 6.12.117+deb12-cloud-amd64)"]
    assert missing_requirements(old, [">=6.12", "erofs"]) == []
