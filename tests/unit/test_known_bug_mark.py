"""Where a known_bug mark applies: release bounds, patches, parametrizations, kernel specs."""

import pytest

from harness.plugin.markers import check_known_bug_mark


def test_kernels_selects_builds_of_a_source_and_not_the_distributions_binary() -> None:
    """A bug that shows on tree builds of 7.3.4 and not on Debian's binary of the same
    release: the mark names the specs, and a fix patch in the series lifts it."""
    mark = pytest.mark.known_bug(reason="r", signature="s", releases="==7.3",
                                 kernels=["tree:*"], unless_patched="the fix").mark
    bug = check_known_bug_mark(mark, "t")
    assert bug.applies("7.3.4", (), "", "tree:,debug")
    assert not bug.applies("7.3.4+deb13-cloud-amd64", (), "", "debian:7.3")
    assert not bug.applies("7.3.4", ("erofs: the fix",), "", "tree:,patches=x.mbox")
    assert not bug.applies("7.2.13", (), "", "tree:")


def test_kernels_must_be_a_list_of_patterns() -> None:
    mark = pytest.mark.known_bug(reason="r", signature="s", kernels="tree:*").mark
    with pytest.raises(pytest.UsageError, match=r"kernels= is a list of shell patterns"):
        check_known_bug_mark(mark, "t")


def test_without_config_expects_the_bug_only_where_the_kernel_lacks_the_options() -> None:
    """A bug that order-0 page cache folios show and transparent huge pages hide: expected
    on a build without THP, not on one with it, whatever its spec."""
    mark = pytest.mark.known_bug(reason="r", signature="s", releases="==7.3",
                                 without_config=["TRANSPARENT_HUGEPAGE"]).mark
    bug = check_known_bug_mark(mark, "t")
    assert bug.applies("7.3.4", (), "", "tree:", lambda option: False)
    assert not bug.applies("7.3.4", (), "", "tree:",
                           lambda option: option == "TRANSPARENT_HUGEPAGE")
    assert not bug.applies("7.3.4+deb13-cloud-amd64", (), "", "debian:7.3",
                           lambda option: option == "TRANSPARENT_HUGEPAGE")


def test_without_config_must_be_a_list_of_option_names() -> None:
    for bad in ("TRANSPARENT_HUGEPAGE", ["CONFIG_X=y"]):
        mark = pytest.mark.known_bug(reason="r", signature="s", without_config=bad).mark
        with pytest.raises(pytest.UsageError, match=r"without_config= is a list"):
            check_known_bug_mark(mark, "t")


def _report(outcome: str, text: str = "") -> pytest.TestReport:
    return pytest.TestReport("t", ("f", 1, "t"), {}, outcome,  # type: ignore[arg-type]
                             text or None, "call")


def test_a_case_may_meet_several_known_bugs_and_a_once_per_boot_one_need_not_show() -> None:
    from harness.plugin.hooks import _judge_known_bugs
    strict = check_known_bug_mark(pytest.mark.known_bug(reason="tail",
                                                        signature="wrong bytes").mark, "t")
    once = check_known_bug_mark(pytest.mark.known_bug(reason="warn", signature="WARNING: x",
                                                      strict=False).mark, "t")
    warned = _report("failed", "kernel reported a problem: WARNING: x at f")
    _judge_known_bugs(warned, ((strict, "7.3.4"), (once, "7.3.4")))
    assert warned.outcome == "skipped" and "warn" in warned.wasxfail
    passed = _report("passed")
    _judge_known_bugs(passed, ((once, "7.3.4"),))
    assert passed.outcome == "passed"  # the warning went to an earlier case of the boot
    _judge_known_bugs(passed, ((once, "7.3.4"), (strict, "7.3.4")))
    assert passed.outcome == "failed"  # the strict one had to show
    other = _report("failed", "AssertionError: mode 600, want 640")
    _judge_known_bugs(other, ((once, "7.3.4"),))
    assert other.outcome == "failed"
    with pytest.raises(pytest.UsageError, match="strict= is True or False"):
        check_known_bug_mark(pytest.mark.known_bug(reason="r", signature="s",
                                                   strict="no").mark, "t")


def test_with_config_expects_the_failure_only_on_builds_with_every_option() -> None:
    """EROFS's own assertions BUG() on damaged images only on a build with
    EROFS_FS_DEBUG: expected there, a failure anywhere else."""
    mark = pytest.mark.known_bug(reason="r", signature=r"kernel BUG at fs/erofs/",
                                 with_config=["EROFS_FS_DEBUG"], strict=False).mark
    bug = check_known_bug_mark(mark, "t")
    assert bug.applies("7.3.4", (), "", "tree:,debug", lambda option: option == "EROFS_FS_DEBUG")
    assert not bug.applies("7.3.4", (), "", "tree:,faults", lambda option: False)
    assert not bug.applies("7.3.4+deb13-cloud-amd64", (), "", "debian:7.3")  # no config known
    bad = pytest.mark.known_bug(reason="r", signature="s", with_config="EROFS_FS_DEBUG").mark
    with pytest.raises(pytest.UsageError, match=r"with_config= is a list"):
        check_known_bug_mark(bad, "t")
