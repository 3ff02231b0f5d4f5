"""The VM's failure paths against a fake QEMU (console + QMP peer), no real guest."""

import os
import tempfile
import time
from pathlib import Path

import pytest

from harness.core import procs
from harness.core.errors import BootTimeout, VMError
from harness.guestimage.build import GuestImage
from harness.kernel.kernel import Kernel
from harness.vm.machine import VM, VMConfig, VMState

FAKE = Path(__file__).with_name("fake_qemu.py")


@pytest.fixture
def fake_qemu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "qemu-system-x86_64").symlink_to(FAKE)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def _vm(tmp_path: Path, boot_timeout: float = 5.0) -> VM:
    kernel = Kernel("path:fake", "0.0-fake", tmp_path / "vmlinuz", None,
                    config={"CONFIG_EROFS_FS": "m"})
    image = GuestImage(tmp_path / "initrd", "k", "0.0-fake")
    return VM(kernel, image, VMConfig(accel="tcg", scratch_mb=0, boot_timeout=boot_timeout),
              artifacts=tmp_path / "art", name="fake")


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
