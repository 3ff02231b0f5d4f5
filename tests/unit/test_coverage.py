"""make coverage: the kernel spec it measures, the build switch, and the report's table,
from gcovr's own JSON formats (no VM, no gcov here)."""

import os
from pathlib import Path

import pytest

from harness.core.errors import HarnessError, SpecError
from harness.coverage.run import coverage_spec
from harness.kernel.kbuild import coverage_make_args, fragments_for
from harness.kernel.kernel import Kernel
from harness.kernel.spec import TreeSpec, parse_kernel_spec
from harness.results.coverage import notes_of, summarize, table
from harness.vm.sshclient import CommandResult


def test_the_coverage_option_round_trips_and_is_added_when_missing() -> None:
    spec = parse_kernel_spec("tree:/src/linux,patches=/p/fix.mbox,coverage")
    assert isinstance(spec, TreeSpec) and spec.coverage and str(spec).endswith(",coverage")
    assert coverage_spec("tree:/src/linux").coverage
    assert str(coverage_spec(None)) == "tree:,coverage"
    assert any(f.name == "coverage.config" for f in fragments_for(coverage_spec(None)))
    assert not any(f.name == "coverage.config"
                   for f in fragments_for(TreeSpec(tree=None)))


@pytest.mark.parametrize("text", ["debian:7.3", "path:/boot/vmlinuz"])
def test_a_kernel_without_a_gcov_build_is_refused_by_name(text: str) -> None:
    with pytest.raises(SpecError, match=f"kernel '{text}' is not a tree: kernel"):
        coverage_spec(text)


def test_only_the_files_of_fs_erofs_get_counters(tmp_path: Path) -> None:
    (tmp_path / "fs" / "erofs").mkdir(parents=True)
    for name in ("ishare.c", "super.c", "internal.h"):
        (tmp_path / "fs" / "erofs" / name).write_text("")
    (tmp_path / "fs" / "namei.c").write_text("")
    assert coverage_make_args(tmp_path) == ["GCOV_PROFILE_ishare.o=y", "GCOV_PROFILE_super.o=y"]


def test_a_kernel_built_without_coverage_is_named_in_the_error(tmp_path: Path) -> None:
    kernel = Kernel(spec=parse_kernel_spec("tree:"), release="7.3.4", vmlinuz=tmp_path / "bzImage",
                    modules_dir=None)
    with pytest.raises(HarnessError, match=r"tree: \(7.3.4\) was not built for coverage"):
        notes_of(kernel)


def test_the_table_gives_lines_branches_and_what_was_not_executed() -> None:
    summary = {"files": [
        {"filename": "fs/erofs/ishare.c", "line_total": 10, "line_covered": 9,
         "branch_total": 4, "branch_covered": 1},
        {"filename": "fs/erofs/zdata.c", "line_total": 30, "line_covered": 3,
         "branch_total": 0, "branch_covered": 0}]}
    details = {"files": [
        {"file": "fs/erofs/ishare.c", "lines": [
            {"line_number": n, "count": 0 if n in (5, 6, 7, 12) else 1} for n in range(1, 14)]},
        {"file": "fs/erofs/zdata.c", "lines": [{"line_number": 3, "count": 0}]}]}
    files = summarize(summary, details)
    assert [f.name for f in files] == ["ishare.c", "zdata.c"]
    assert files[0].uncovered == (5, 6, 7, 12) and files[0].line_percent == 90.0
    text = table(files)
    assert "ishare.c                  9/10      90.0%      1/4       25.0%" in text
    assert "total                    12/40      30.0%      1/4       25.0%" in text
    # Uncovered lines are listed for the sharing feature's files only.
    assert "not executed in ishare.c: lines 5-7, 12" in text and "zdata.c: lines" not in text


class _FakeVM:
    """The seam save_counters talks to: a kernel config, a state, and run()."""

    def __init__(self, config: dict[str, str], stdout: str, status: int = 0) -> None:
        from harness.vm.machine import VMState
        self.kernel = Kernel(spec=parse_kernel_spec("tree:,coverage"), release="7.3.4",
                             vmlinuz=Path("/nonexistent"), modules_dir=None, config=config)
        self.state = VMState.RUNNING
        self.name = "gw0-boot1"
        self.commands: list[str] = []
        self._stdout, self._status = stdout, status
        self.answers = True

    def run(self, command: str, timeout: float | None = None,
            forensic: bool = False) -> CommandResult:
        from harness.vm.machine import VMState
        assert forensic == (self.state is VMState.BROKEN)  # a broken VM runs nothing else
        self.commands.append(command)
        return CommandResult(command, self._status, self._stdout, "", 0.1)

    def responsive(self) -> bool:
        return self.answers


def _counters_blob(names: list[str]) -> str:
    import base64
    import io
    import tarfile
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name in names:
            info = tarfile.TarInfo(f"fs/erofs/{name}")
            info.size = 4
            tar.addfile(info, io.BytesIO(b"gcda"))
    return base64.b64encode(buf.getvalue()).decode()


def test_a_coverage_guest_saves_its_counters_and_others_save_nothing(tmp_path: Path) -> None:
    from harness.guest.coverage import label_of, save_counters
    vm = _FakeVM({"CONFIG_GCOV_KERNEL": "y"}, _counters_blob(["ishare.gcda", "super.gcda"]))
    assert save_counters(vm, tmp_path) == 2  # type: ignore[arg-type]
    assert (tmp_path / "boot@gw0-boot1-0.tar.gz").is_file()
    assert "/sys/kernel/debug/gcov" in vm.commands[0] and not vm.commands[0].endswith("reset")
    # Before a test that may crash the guest: saved beside the first, and zeroed after.
    # Each set is named for the test file whose tests it counted.
    assert save_counters(vm, tmp_path, reset=True,  # type: ignore[arg-type]
                         label="test_lifecycle.py") == 2
    saved = tmp_path / "test_lifecycle.py@gw0-boot1-1.tar.gz"
    assert saved.is_file() and vm.commands[1].endswith(" reset")
    assert label_of(saved) == "test_lifecycle.py" and label_of(Path("gw0-3.tar.gz")) == "boot"
    plain = _FakeVM({}, "")
    assert save_counters(plain, tmp_path / "plain") == 0  # type: ignore[arg-type]
    assert plain.commands == [] and not (tmp_path / "plain").exists()
    garbled = _FakeVM({"CONFIG_GCOV_KERNEL": "y"}, "not base64 at all!")
    assert save_counters(garbled, tmp_path / "garbled") == 0  # type: ignore[arg-type]


def test_a_guest_a_test_broke_gives_its_counters_if_it_still_answers(tmp_path: Path) -> None:
    """A splat marks the VM broken and the pool replaces it: what it counted since the last
    save (the whole test file, up to the splat) is read first, not lost with it."""
    from harness.guest.coverage import save_counters
    from harness.vm.machine import VMState
    vm = _FakeVM({"CONFIG_GCOV_KERNEL": "y"}, _counters_blob(["zmap.gcda"]))
    vm.state = VMState.BROKEN
    assert save_counters(vm, tmp_path, reset=True,  # type: ignore[arg-type]
                         label="test_hostile_images.py") == 1
    assert (tmp_path / "test_hostile_images.py@gw0-boot1-0.tar.gz").is_file()
    vm.answers = False
    assert save_counters(vm, tmp_path) == 0  # type: ignore[arg-type]
    vm.state = VMState.STOPPED
    vm.answers = True
    assert save_counters(vm, tmp_path) == 0  # type: ignore[arg-type]
    assert len(vm.commands) == 1


def test_the_lines_of_each_test_file_merge_its_sets_and_skip_what_ran_nothing() -> None:
    from harness.results.coverage import lines_by_test_file
    trace = {"files": [{"file": "fs/erofs/ishare.c", "lines": [
        {"line_number": 10, "count": 2}, {"line_number": 11, "count": 0}]},
        {"file": "fs/erofs/zmap.c", "lines": [{"line_number": 5, "count": 0}]}]}
    other = {"files": [{"file": "fs/erofs/ishare.c", "lines": [
        {"line_number": 12, "count": 1}, {"line_number": 10, "count": 1}]}]}
    got = lines_by_test_file([("test_a.py", trace), ("test_a.py", other), ("boot", other)])
    assert got == {"test_a.py": {"fs/erofs/ishare.c": [10, 12]},
                   "boot": {"fs/erofs/ishare.c": [10, 12]}}


def test_a_review_base_run_is_kept_under_one_key_for_every_spelling_of_its_kernel(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.core import cache
    from harness.coverage.kept import is_kept, is_review_base, keep, kept_dir
    monkeypatch.setattr(cache, "cache_root", lambda: tmp_path / "cache")
    vmlinuz = tmp_path / "vmlinuz"
    vmlinuz.write_bytes(b"k")
    one, other = (coverage_spec(t) for t in ("tree:,faults", "tree:,coverage,faults"))
    assert is_review_base(one) and kept_dir(one, vmlinuz, []) == kept_dir(other, vmlinuz, [])
    assert kept_dir(one, vmlinuz, []) != kept_dir(one, vmlinuz, ["-k", "fiemap"])
    for text in ("tree:,coverage", "tree:,coverage,faults,debug",
                 "tree:,coverage,faults,patches=/p/fix.mbox"):
        assert not is_review_base(coverage_spec(text)), text
    run = tmp_path / "run"
    (run / "report").mkdir(parents=True)
    (run / "report" / "by_test_file.json").write_text("{}")
    (run / "artifacts" / "report-k-tcg").mkdir(parents=True)
    (run / "artifacts" / "gcov").mkdir()
    # A run without its coverage.json or its results is no kept run.
    kept = keep(run, kept_dir(one, vmlinuz, []), 1)
    assert not is_kept(kept)
    (run / "report" / "coverage.json").write_text("{}")
    (run / "artifacts" / "report-k-tcg" / "results.json").write_text("{}")
    kept = keep(run, kept_dir(one, vmlinuz, []), 1)  # replaces the incomplete one
    assert is_kept(kept) and (kept / "artifacts" / "report-k-tcg" / "results.json").is_file()
    assert (kept / "status").read_text() == "1\n"
    assert not (kept / "artifacts" / "gcov").exists()  # the counters stay behind
    assert sorted(p.name for p in kept.parent.iterdir()) == [kept.name]  # no tmp, no old
    from harness.coverage.kept import worth_keeping
    assert worth_keeping(0) and worth_keeping(1)
    assert not any(worth_keeping(s) for s in (2, 3, 4, 5))
    vmlinuz.write_bytes(b"rebuilt")  # another build of the kernel: another key
    os.utime(vmlinuz, ns=(1, 1))
    assert not is_kept(kept_dir(one, vmlinuz, []))


def test_the_report_says_which_lines_only_the_fault_tests_executed() -> None:
    from harness.results.coverage import FileCoverage, added_table, only_by
    by_test_file = {"boot": {"fs/erofs/super.c": [1, 2]},
                    "test_sharing_semantics.py": {"fs/erofs/ishare.c": [10, 11, 12]},
                    "test_failing_allocations.py": {"fs/erofs/ishare.c": [11, 120, 121, 226],
                                                    "fs/erofs/super.c": [2]},
                    "test_module_life.py": {"fs/erofs/ishare.c": [236]}}
    assert only_by(by_test_file, ["test_failing_allocations.py", "test_module_life.py"]) == {
        "fs/erofs/ishare.c": [120, 121, 226, 236]}
    files = [FileCoverage("ishare.c", 97, 10, 40, 30, ()),
             FileCoverage("super.c", 50, 2, 10, 1, ())]
    text = added_table(files, by_test_file)
    assert "ishare.c                  6    6.2%     10   10.3%  +4: 120-121, 226, 236" in text
    assert "super.c" not in text  # nothing only the fault tests ran
    assert text.splitlines()[-1].split() == ["total", "8", "5.4%", "12", "8.2%"]
    assert added_table(files, {"test_sharing_semantics.py": {}}) == ""


def test_the_pool_reads_a_broken_guest_once_and_replaces_it_even_if_reading_fails(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from harness.plugin import state
    from harness.vm.machine import VMState
    calls: list[str] = []

    def flaky_save(vm: object, into: Path, *, reset: bool = False, label: str = "boot") -> int:
        calls.append(label)
        raise RuntimeError("the SSH library gave up")

    monkeypatch.setattr(state, "save_counters", flaky_save)
    pool = state.VMPool(options=SimpleNamespace(artifacts=tmp_path),  # type: ignore[arg-type]
                        name="gw0")
    broken = SimpleNamespace(name="gw0-boot1", state=VMState.BROKEN)
    pool.current = broken  # type: ignore[assignment]
    pool.covering = "test_hostile_images.py"
    pool.save_coverage()  # the known-bug hook, say: read once
    pool.save_coverage()  # and not again
    assert calls == ["test_hostile_images.py"]
    stopped: list[bool] = []
    monkeypatch.setattr(pool, "_stop", lambda: stopped.append(True))
    pool.boot_error = state.HarnessError("no boot here")  # get() stops before booting anew
    with pytest.raises(state.HarnessError, match="no boot here"):
        pool.get()
    assert stopped == [True] and calls == ["test_hostile_images.py"]


def test_every_set_of_counters_gets_a_tracefile_of_its_own(tmp_path: Path) -> None:
    """Sets are named <test file>@<vm>-<n>: two sets of one test file must not share a
    tracefile (with_suffix took ".py@vm-gw0-boot1-0" for a suffix, and of 244 sets of a
    whole-suite run 30 were merged)."""
    from harness.results.coverage import set_paths
    names = ["test_data_layouts.py@vm-gw1-boot1-3.tar.gz",
             "test_data_layouts.py@vm-gw1-boot4-0.tar.gz", "boot@vm-gw0-boot1-0.tar.gz"]
    paths = [set_paths(tmp_path / n, tmp_path / "work") for n in names]
    assert len({out for _, out in paths}) == 3 and len({d for d, _ in paths}) == 3
    assert paths[0][1].name == "test_data_layouts.py@vm-gw1-boot1-3.json"
