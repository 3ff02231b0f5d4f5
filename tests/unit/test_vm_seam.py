"""The VM's failure paths against a fake QEMU (console + QMP peer), no real guest."""

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from harness.core import procs
from harness.core.deadline import Deadline
from harness.core.errors import BootTimeout, VMError
from harness.guestimage.build import GuestImage
from harness.kernel.kernel import Kernel
from harness.vm.console import Console
from harness.vm.machine import VM, VMConfig, VMState

FAKE = Path(__file__).with_name("fake_qemu.py")


@pytest.fixture
def fake_qemu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "qemu-system-x86_64").symlink_to(FAKE)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))  # saved guests go here
    return tmp_path


def _vm(tmp_path: Path, boot_timeout: float = 5.0, restore: bool = True) -> VM:
    kernel = Kernel("path:fake", "0.0-fake", tmp_path / "vmlinuz", None,
                    config={"CONFIG_EROFS_FS": "m"})
    image = GuestImage(tmp_path / "initrd", "k", "0.0-fake")
    return VM(kernel, image, VMConfig(accel="tcg", scratch_mb=0, boot_timeout=boot_timeout,
                                      restore=restore),
              artifacts=tmp_path / "art", name="fake")


def _saved(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "cache" / "booted-guests").glob("*/memory.bin"))


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"


def _leftovers(tmp_path: Path) -> list[str]:
    return [p.name for p in tmp_path.iterdir() if p.name.startswith("harness-")]


def test_boot_panic_reports_the_panic_line_and_console_tail(fake_qemu: Path,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    monkeypatch.setenv("FAKE_QEMU_MODE", "panic")
    vm = _vm(fake_qemu)
    with pytest.raises(VMError) as info:
        vm.start()
    message = str(info.value)
    assert "the guest failed to boot: Kernel panic - not syncing: VFS" in message
    assert "Last console lines:" in message and "Linux version 0.0-fake" in message
    assert "Command: " in message and vm.state == VMState.STOPPED
    assert _leftovers(fake_qemu) == [] and not procs.owned()


def test_guest_that_never_gets_ready_times_out_with_its_deadline(fake_qemu: Path,
                                                                  monkeypatch: pytest.MonkeyPatch
                                                                  ) -> None:
    monkeypatch.setenv("FAKE_QEMU_MODE", "silent")
    vm = _vm(fake_qemu, boot_timeout=2.0)
    started = time.monotonic()
    with pytest.raises(BootTimeout, match="not ready after 2 s"):
        vm.start()
    assert time.monotonic() - started < 10
    assert vm.pid is not None and _gone(vm.pid)
    assert _leftovers(fake_qemu) == [] and not procs.owned()


def test_qemu_that_exits_at_once_reports_its_status_and_message(fake_qemu: Path,
                                                                monkeypatch: pytest.MonkeyPatch
                                                                ) -> None:
    monkeypatch.setenv("FAKE_QEMU_MODE", "exit")
    with pytest.raises(VMError) as info:
        _vm(fake_qemu).start()
    assert "could not load kernel" in str(info.value)
    assert _leftovers(fake_qemu) == [] and not procs.owned()


def test_ready_guest_reports_forwarded_port_and_quits_through_qmp(fake_qemu: Path,
                                                                  monkeypatch: pytest.MonkeyPatch
                                                                  ) -> None:
    # SSH to the fake cannot succeed, so stop at the console marker: patch the SSH step out.
    monkeypatch.setattr("harness.vm.machine.GuestSSH.connect", lambda self, deadline: None)
    vm = _vm(fake_qemu)
    with vm:
        assert vm.ssh_port == 1 and vm.state == VMState.RUNNING
        pid = vm.pid
    assert pid is not None and _gone(pid) and vm.state == VMState.STOPPED
    assert vm.console is not None and vm.console.exitstatus() == 0  # left through QMP quit


def test_calls_in_the_wrong_state_raise_a_readable_error(fake_qemu: Path) -> None:
    from harness.core.errors import StateError
    vm = _vm(fake_qemu)
    with pytest.raises(StateError, match="needs the VM running, but it is new"):
        vm.run("true")


def test_sshd_that_never_answers_is_a_boot_timeout(fake_qemu: Path) -> None:
    # The fake prints the ready marker but nothing listens on the forwarded port.
    vm = _vm(fake_qemu, boot_timeout=3.0)
    with pytest.raises(BootTimeout, match=r"SSH on 127\.0\.0\.1:1 never answered"):
        vm.start()
    assert vm.pid is not None and _gone(vm.pid) and not procs.owned()


@pytest.fixture
def no_ssh(monkeypatch: pytest.MonkeyPatch) -> None:
    # SSH to the fake cannot succeed: the VM is taken as up once SSH would be tried.
    monkeypatch.setattr("harness.vm.machine.GuestSSH.connect", lambda self, deadline: None)


def test_first_vm_of_a_kind_is_saved_and_the_next_is_restored_from_it(
        fake_qemu: Path, no_ssh: None) -> None:
    with _vm(fake_qemu) as first:
        assert not first.restored and "-incoming" not in first.argv
    assert len(_saved(fake_qemu)) == 1, "the first boot did not save the guest"
    with _vm(fake_qemu) as second:
        assert second.restored and second.argv[-2:] == [
            "-incoming", f"exec:cat {_saved(fake_qemu)[0]}"]
        # A restored guest does not boot again: its console never shows the ready marker.
        assert second.console is not None and "ready" not in second.console.tail()
    assert len(_saved(fake_qemu)) == 1 and not procs.owned()


@pytest.mark.parametrize(("mode", "said"), [
    ("badrestore", "(QEMU: qemu-system-x86_64: load of migration failed: Invalid argument)"),
    ("oopsrestore", "the restored guest never answered SSH (no answer); its console: Oops: "
                    "Oops: 0010"),
], ids=["qemu-cannot-load-it", "the-guest-oopses-after-it"])
def test_a_saved_guest_that_does_not_come_back_is_forgotten_and_the_vm_boots_cold(
        fake_qemu: Path, no_ssh: None, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture, mode: str, said: str) -> None:
    with _vm(fake_qemu):
        pass
    [saved] = _saved(fake_qemu)
    saved.write_bytes(b"a stream this QEMU cannot load, or a state that oopses")
    monkeypatch.setenv("FAKE_QEMU_MODE", mode)
    # SSH is tried only once QEMU took the stream: the oopsed guest never answers it.
    refusals = [TimeoutError("no answer")] if mode == "oopsrestore" else []

    consoles: list[Console] = []

    class RecordedConsole(Console):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            consoles.append(self)

    def connect(self: object, deadline: object) -> None:
        if refusals:
            # A real SSH timeout lasts its whole deadline, by when the console has read
            # the oops; this one fails at once, so it first waits for the console to.
            consoles[-1].wait_for([r"Oops"], Deadline(10.0))
            raise refusals.pop(0)

    monkeypatch.setattr("harness.vm.machine.Console", RecordedConsole)
    monkeypatch.setattr("harness.vm.machine.GuestSSH.connect", connect)
    with _vm(fake_qemu) as vm:
        assert not vm.restored and "-incoming" not in vm.argv
        assert vm.console is not None and "HARNESS-GUEST: ready" in vm.console.tail()
    [warning] = [r.getMessage() for r in caplog.records if "booting it cold" in r.getMessage()]
    assert said in warning, warning
    assert refusals == [], "SSH was not tried on the restored guest"
    # The cold boot saved a good one in its place.
    assert [p.read_bytes() for p in _saved(fake_qemu)] == [b"fake guest memory"]
    assert _leftovers(fake_qemu) == [] and not procs.owned()


def test_cold_boot_neither_restores_nor_saves(fake_qemu: Path, no_ssh: None) -> None:
    with _vm(fake_qemu, restore=False) as vm:
        assert not vm.restored
    assert _saved(fake_qemu) == []
    with _vm(fake_qemu):
        pass
    with _vm(fake_qemu, restore=False) as vm:
        assert not vm.restored and "-incoming" not in vm.argv


def test_ctrl_c_held_in_qemu_qmp_tasks_still_stops_qemu_and_removes_the_folder(
        fake_qemu: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Ctrl-C that lands while qemu.qmp runs its reader task is stored in that task and
    raised again by every QMP call after it: quit and close in stop() must not cut the
    clean-up short (it left a VM's work folder behind once in CI), nor wait for a QEMU
    that was never told to quit."""
    from qemu.qmp.legacy import QEMUMonitorProtocol
    monkeypatch.setenv("FAKE_QEMU_MODE", "silent")
    vm = _vm(fake_qemu, boot_timeout=30.0, restore=False)

    def interrupted(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(VM, "_wait_ready", interrupted)
    real_close = QEMUMonitorProtocol.close

    def close_raising_the_stored_interrupt(self: QEMUMonitorProtocol) -> None:
        real_close(self)
        raise KeyboardInterrupt

    monkeypatch.setattr(QEMUMonitorProtocol, "cmd", interrupted)
    monkeypatch.setattr(QEMUMonitorProtocol, "close", close_raising_the_stored_interrupt)
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        vm.start()
    assert time.monotonic() - started < 5, "stop() waited for a QEMU never told to quit"
    assert vm.state == VMState.STOPPED
    assert vm.console is not None and _gone(vm.console.pid)
    assert _leftovers(fake_qemu) == [] and not procs.owned()
