"""What the plugin keeps per session (in ``config.stash``): options, kernel, VM pool."""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from harness.core.errors import HarnessError
from harness.core.waits import WaitLedger
from harness.guest.coverage import COUNTERS_DIR, has_counters, save_counters
from harness.guest.session import GuestSession
from harness.guestimage.build import GuestImage, build_guest_image
from harness.kernel.kernel import Kernel
from harness.pipeline import Prepared, kernel_for, open_guest
from harness.vm.machine import VM, VMConfig, VMState
from harness.vm.options import vm_config

log = logging.getLogger(__name__)


@dataclass
class Options:
    kernel: str | None
    vm: VMConfig  # from the VM options (harness/vm/options.py)
    artifacts: Path

    @classmethod
    def from_config(cls, config: pytest.Config) -> Options:
        return cls(kernel=config.getoption("kernel"), vm=vm_config(config.getoption),
                   artifacts=Path(config.getoption("artifacts")).resolve())


def worker_id(config: pytest.Config) -> str:
    """``gw0``.. under pytest-xdist, ``main`` otherwise: one VM per worker."""
    return str(getattr(config, "workerinput", {}).get("workerid", "main"))


@dataclass
class VMPool:
    """The one VM of this pytest worker, started on first use and replaced when broken."""

    options: Options
    name: str
    _kernel: Kernel | None = None
    _image: GuestImage | None = None
    current: VM | None = None
    session: GuestSession | None = None  # the state kept about the current VM's guest
    # The open_guest block of the current VM, held open across tests: closing it stops the
    # VM (the pipeline's one way to a guest, as for every other caller).
    _guest: contextlib.ExitStack | None = None
    covering: str = "boot"  # the test file whose coverage counters the guest holds now
    boots: int = 0
    kernel_error: HarnessError | None = None
    boot_error: HarnessError | None = None
    _read_broken: set[str] = field(default_factory=set)  # broken VMs whose counters were read
    # Every VM of this worker counts its waits here: the per-case split of guest and
    # harness time (plugin hooks) reads it around each case.
    waits: WaitLedger = field(default_factory=WaitLedger)

    @property
    def kernel(self) -> Kernel:
        if self.kernel_error:
            raise self.kernel_error
        if self._kernel is None:
            try:
                self._kernel = kernel_for(self.options.kernel)
            except HarnessError as exc:
                self.kernel_error = exc
                raise
        return self._kernel

    @property
    def image(self) -> GuestImage:
        if self._image is None:
            self._image = build_guest_image(self.kernel)
        return self._image

    @property
    def image_key(self) -> str | None:
        """The guest image's cache key, if one was built in this process (no build here)."""
        return self._image.key if self._image is not None else None

    def get(self) -> VM:
        if self.current is not None and self.current.state != VMState.RUNNING:
            log.info("replacing %s: it is %s", self.current.name, self.current.state.value)
            try:
                self.save_coverage()  # what it counted since the last save, if it answers
            finally:
                self._stop()
        if self.boot_error is not None:
            # After a boot failed twice, every later test fails at once with the first cause
            # instead of timing out one by one.
            raise HarnessError(f"not booting again: an earlier boot of this worker failed "
                               f"twice: {self.boot_error}")
        if self.current is None:
            first: HarnessError | None = None
            for _ in range(2):  # one retry: a boot can die of a host hiccup, twice is real
                try:
                    self.session = self._boot()
                    self.current = self.session.vm
                    break
                except HarnessError as exc:
                    log.warning("boot failed: %s", str(exc).splitlines()[0])
                    first = first or exc
            else:
                assert first is not None
                self.boot_error = first
                raise first
        assert self.current is not None
        return self.current

    def _boot(self) -> GuestSession:
        self.boots += 1
        guest = contextlib.ExitStack()
        session = guest.enter_context(open_guest(
            Prepared(self.kernel, self.image), self.options.vm,
            artifacts=self.options.artifacts / "vms", name=f"{self.name}-boot{self.boots}",
            announce=False, waits=self.waits))
        self._guest = guest
        # With the config a booted kernel gave back, if it had none.
        self._kernel = session.vm.kernel
        return session

    def _stop(self) -> None:
        guest, self._guest = self._guest, None
        self.current = self.session = None
        if guest is not None:
            guest.close()

    def guest_session(self) -> GuestSession:
        """The session of the running VM (booting one if needed)."""
        self.get()
        assert self.session is not None
        return self.session

    def save_coverage(self) -> None:
        """Save (and zero) a coverage kernel's counters of the running guest, if any, as
        the counters of the test file that ran since the last save. A guest a test broke is
        read once: after that it runs nothing more, and it is only waiting to be replaced."""
        vm = self.current
        if vm is None or vm.name in self._read_broken:
            return
        if vm.state is VMState.BROKEN:
            self._read_broken.add(vm.name)
        try:
            save_counters(vm, self.options.artifacts / COUNTERS_DIR, reset=True,
                          label=self.covering)
        except Exception as exc:  # counters are a by-product: never the reason a run stops
            log.warning("coverage counters of %s lost: %s", vm.name, exc)

    def cover(self, test_file: str) -> None:
        """The tests of ``test_file`` run next: what the guest counted so far was another
        file's, and is saved as that file's."""
        if test_file != self.covering:
            if self.current is not None and has_counters(self.current):
                self.save_coverage()
            self.covering = test_file

    def close(self) -> None:
        if self.current is not None:
            # A coverage kernel's counters live in the guest: save them before it goes.
            self.save_coverage()
            with contextlib.suppress(Exception):
                self._stop()


def env_default(name: str, fallback: str | None) -> str | None:
    value = os.environ.get(name)
    return value if value else fallback


options_key = pytest.StashKey[Options]()
pool_key = pytest.StashKey[VMPool]()
