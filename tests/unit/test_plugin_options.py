"""The plugin's options and markers, in-process with pytester (no VM)."""

from pathlib import Path

import pytest


def test_options_live_in_one_group(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    result.stdout.fnmatch_lines(["*EROFS page cache sharing harness*", "*--kernel=KERNEL*",
                                 "*--accel=*", "*--vm-memory=MB*", "*--vm-cpus=N*",
                                 "*--vm-tcg-threads=*",
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


def _fake_bzimage(path: Path, release: str) -> Path:
    """Just enough of an x86 setup header for the release to be read (nothing boots it)."""
    image = bytearray(0x1000)
    image[0x202:0x206] = b"HdrS"
    image[0x20E:0x210] = (0x300).to_bytes(2, "little")
    text = f"{release} (root@host) #1 SMP\0".encode()
    image[0x500:0x500 + len(text)] = text
    path.write_bytes(bytes(image))
    return path


def test_known_bug_is_expected_only_with_its_signature(pytester: pytest.Pytester,
                                                       tmp_path: Path) -> None:
    kernel = _fake_bzimage(tmp_path / "bzImage", "7.3.4-test")
    pytester.makepyfile("""
        import pytest
        BUG = dict(reason="demo", signature=r"wrong bytes: 42", releases=">=7.3")

        @pytest.mark.known_bug(**BUG)
        def test_fails_with_the_signature():
            assert False, "wrong bytes: 42"

        @pytest.mark.known_bug(**BUG)
        def test_fails_otherwise():
            assert False, "something else broke"

        @pytest.mark.known_bug(**BUG)
        def test_passes_where_the_bug_is_expected():
            pass

        @pytest.mark.known_bug(reason="old", signature="x", releases="<7.0")
        def test_on_a_kernel_without_the_bug():
            pass

        @pytest.mark.known_bug(**BUG, params=["loop-*"])
        @pytest.mark.parametrize("where", ["loop-a", "file-a"])
        def test_only_some_parametrizations_carry_it(where):
            assert where == "file-a", "wrong bytes: 42"
    """)
    result = pytester.runpytest(f"--kernel=path:{kernel}", "-rxXf")
    result.assert_outcomes(passed=2, failed=2, xfailed=2)
    ignored = pytester.runpytest(f"--kernel=path:{kernel}", "--ignore-known-bugs")
    ignored.assert_outcomes(passed=3, failed=3)
    result.stdout.fnmatch_lines(["*failed without the bug's signature*",
                                 "*XPASS(strict)*the known bug 'demo'*"])


def test_known_bug_without_signature_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import pytest
        @pytest.mark.known_bug("no signature")
        def test_x():
            pass
    """)
    result = pytester.runpytest()
    result.stderr.fnmatch_lines(["*@known_bug needs a signature*"])
    assert result.ret == pytest.ExitCode.USAGE_ERROR


def test_the_command_line_and_pytest_take_the_same_vm_options(
        pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str]) -> None:
    """One table (harness/vm/options.py) feeds both: every VM option, with the tree: form in
    the --kernel help, on both sides."""
    from harness.cli.main import build_parser
    from harness.vm.options import VM_OPTIONS
    with pytest.raises(SystemExit):
        build_parser().parse_args(["layouts", "--help"])
    cli = capsys.readouterr().out
    result = pytester.runpytest("--help")
    for flag, _ in VM_OPTIONS:
        assert flag in cli, f"python -m harness layouts lacks {flag}"
        result.stdout.fnmatch_lines([f"*{flag}*"])
    assert "tree:" in cli
    result.stdout.fnmatch_lines(["*tree:*"])
