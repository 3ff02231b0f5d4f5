"""Runs the explorer's steps in one guest and holds the kernel to the model after each.

One step is one round trip to the guest's probe: the step's own operations, then a check
of every file of every visible mount (mincore), the mount table, and the kernel log since
the last step. The model is told about every lookup in the order the guest makes it, so
the first-come rules of the shared inode hold on both sides.

Devices are set up once per guest, so that a mount is a single mount(2): every image is
uploaded to the scratch disk (file-backed mounts use it directly), each gets two loop
devices, and the two twins get one hot-plugged virtio disk each.
"""

from __future__ import annotations

import errno
import shlex
from dataclasses import dataclass
from typing import Any

from harness.core.errors import HarnessError
from harness.erofs.images import BuiltImage
from harness.explore.model import PoolImage, World
from harness.explore.pool import pool_image
from harness.guest.handle import Guest
from harness.guest.probe import Pending, ReadResult, Residency
from harness.vm.machine import VMState
from harness.vm.splats import find_splats

LOOPS_PER_IMAGE = 2
BLOCK_IMAGES = ("sizes", "renamed")
MAX_MOUNTS = 4
HOLD_SECONDS = 6 * 3600.0
THP_ENABLED = "/sys/kernel/mm/transparent_hugepage/enabled"
# memory.max of the cgroup a pressured read runs in: below the 4 MiB file, so its pages are
# reclaimed while it is read. Each pressured read gets a cgroup of its own, so that no later
# read reclaims pages an earlier one left charged to it.
PRESSURE_LIMIT = 3 << 20
Step = dict[str, Any]


class Divergence(AssertionError):
    """The kernel did something the model says it must not."""


@dataclass
class _Check:
    mount: str
    path: str
    cache: tuple[str, ...]
    view: Pending[Residency]


class Driver:
    """One guest, one model; ``reset`` starts a new sequence, ``step`` runs one step."""

    def __init__(self, guest: Guest, images: dict[str, BuiltImage],
                 views: dict[str, PoolImage] | None = None) -> None:
        self.guest = guest
        self.release = guest.vm.kernel.release  # known bugs are steered around by release
        self.probe = guest.session.probe
        self.images = images
        # ``views``: how the model sees images that are not the catalog's (generated ones).
        self.pool = {name: (views or {}).get(name) or pool_image(built)
                     for name, built in images.items()}
        self.root = f"{guest.workdir}/explore"
        self.devices: dict[tuple[str, str], list[str]] = {}
        self._setup_devices()
        self.world = World(self.pool)
        self.device_of: dict[str, str] = {}
        self.mark = self.probe.kernel_log_mark()
        self.count = 0
        # khugepaged collapses mapped page cache at moments of its own choosing, which zaps
        # the mappings that keep pages resident: no model can follow that. Collapses are a
        # rule of their own instead (MADV_COLLAPSE works whatever this setting says).
        # A kernel without transparent huge pages (the minimal tree build) has neither
        # khugepaged nor MADV_COLLAPSE: the collapse rule is off there.
        thp = self.guest.run(f"cat {THP_ENABLED}")
        self._thp = thp.stdout.split("[")[1].split("]")[0] if thp.status == 0 else None
        self.huge_pages = self._thp is not None
        if self._thp is not None:
            self.guest.check(f"echo never > {THP_ENABLED}")
        self.steps: list[Step] = []

    def _setup_devices(self) -> None:
        session = self.guest.session
        session.need_modules("erofs", "loop")
        for name, built in self.images.items():
            remote = session.upload(built.path, f"{built.key}.erofs")
            self.devices[(name, "file")] = [remote]
            loops = self.guest.check(" && ".join(
                [f"losetup -f --show -r {shlex.quote(remote)}"] * LOOPS_PER_IMAGE))
            self.devices[(name, "loop")] = loops.split()
            if name in BLOCK_IMAGES:
                self.devices[(name, "block")] = [self.guest.attach_disk(built.path)]

    def __enter__(self) -> Driver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def alive(self) -> bool:
        """False once the guest died or hung (the VM is marked broken): nothing more can run
        there, and no sequence can be replayed."""
        return self.guest.vm.state is VMState.RUNNING

    def close(self) -> None:
        """Give the guest back as it was found: no holder, no mount, khugepaged as before.
        A dead guest is left as it is: the VM's owner replaces it."""
        if not self.alive():
            return
        self.reset()
        if self._thp is not None:
            self.guest.check(f"echo {self._thp} > {THP_ENABLED}")

    # ---- what the machine may choose -------------------------------------------------------

    def free_sources(self, image: str) -> list[str]:
        """Sources with a device of ``image`` not in use by a mount (file: always)."""
        return [source for source in ("loop", "file", "block")
                if self._free_device(image, source) is not None]

    def _free_device(self, image: str, source: str) -> str | None:
        if source == "file":
            return self.devices[(image, "file")][0]
        used = set(self.device_of.values())
        free = [d for d in self.devices.get((image, source), []) if d not in used]
        return free[0] if free else None

    def visible_files(self) -> list[tuple[str, str]]:
        return [(m.name, f.path) for m in self.world.live_mounts() for f in m.image.files]

    # ---- sequences -----------------------------------------------------------------------

    def reset(self) -> None:
        """Before a new sequence: no holder, no mount, empty caches, a fresh model."""
        with self.probe.batch() as batch:
            batch.end_holders()
            mounted = batch.erofs_mounts(self.root)
        for target in sorted(mounted.value, key=len, reverse=True):
            with self.probe.batch() as batch:
                batch.umount(target, lazy=True)
        with self.probe.batch() as batch:
            batch.drop_caches(1, sync=False)  # nothing here writes
            mark = batch.kernel_log_mark()
        self.mark = mark.value
        self.world = World(self.pool)
        self.device_of = {}
        self.steps = []

    def step(self, step: Step) -> None:
        """Run one step and check the guest against the model; Divergence if they differ."""
        self.steps.append(step)
        index = len(self.steps)
        with self.probe.batch() as batch:
            outcome = self._queue(step, batch)
            checks = self._queue_checks(batch)
            table = batch.erofs_mounts(self.root)
            log = batch.kernel_log_since(self.mark)
        self.mark = log.value.mark
        where = f"step {index} {step}"
        splats = find_splats(log.value.text)
        if splats:
            raise Divergence(f"{where}: {splats[0]}")
        outcome(where)
        self._check_residency(where, checks)
        self._check_table(where, table.value)
        self._forget_gone_devices()

    def _target(self, mount: str) -> str:
        return f"{self.root}/{mount}"

    def _path(self, mount: str, path: str) -> str:
        return f"{self._target(mount)}/{path}"

    def _queue(self, step: Step, batch: Any) -> Any:
        """Queue the step's operations and tell the model; a function that checks the
        answers once the batch has run."""
        do = step["do"]
        world = self.world
        if do == "mount":
            name, image, source, options = (step["mount"], step["image"], step["source"],
                                            step["options"])
            device = self._free_device(image, source)
            if device is None:
                raise HarnessError(f"no free {source} device for {image}: {step}")
            want = world.mount(name, image, source, options)
            if want == 0:
                self.device_of[name] = device
            # The step's own log read comes last in its batch: no settling per call.
            answer = batch.mount(device, self._target(name), options, settle=False)
            return lambda where: self._expect_errno(where, answer, want)
        if do == "umount":
            want = world.umount(step["mount"], step["lazy"])
            answer = batch.umount(self._target(step["mount"]), step["lazy"], settle=False)
            return lambda where: self._expect_errno(where, answer, want)
        if do == "remount":
            # As mount(8) does it: the options in effect are sent again.
            options = world.mounts[step["mount"]].options
            answer = batch.remount(self._target(step["mount"]), options, settle=False)
            return lambda where: self._expect_errno(where, answer, 0)
        if do in ("read", "pressured_read"):
            mount, path = step["mount"], step["path"]
            if do == "read":
                accept = world.read(mount, path)
                got: Pending[Any] = batch.read(self._path(mount, path), step.get("method", "read"))
            else:
                accept = world.pressured_read(mount, path)
                self.count += 1
                got = batch.cgroup_read(f"harness-explore-{self.count}",
                                        self._path(mount, path), "stream", PRESSURE_LIMIT)
            return lambda where: self._expect_bytes(where, got, accept)
        if do == "hold":
            world.hold(step["tag"], step["mount"], step["path"])
            # A holder must outlive any sequence (it ends at release or reset): one that
            # gave up its mapping on its own would make "pinned" a lie.
            batch.hold(self._path(step["mount"], step["path"]), step["tag"], HOLD_SECONDS)
            return lambda where: None
        if do == "release":
            accept = world.release(step["tag"])
            got = batch.release(step["tag"])
            return lambda where: self._expect_bytes(where, got, accept)
        if do in ("dontneed", "willneed"):
            mount, path = step["mount"], step["path"]
            if do == "dontneed":
                world.dontneed(mount, path)
                batch.fadvise_dontneed(self._path(mount, path))
            else:
                world.willneed(mount, path)
                batch.hint(self._path(mount, path), "willneed")
            return lambda where: None
        if do == "collapse":
            mount, path = step["mount"], step["path"]
            self.world.lookup(mount, path)
            answer = batch.collapse_huge(self._path(mount, path))
            return lambda where: self._collapsed(where, mount, path, answer)
        if do == "drop_caches":
            world.drop_caches()
            batch.drop_caches(1, sync=False)  # nothing here writes
            return lambda where: None
        raise HarnessError(f"unknown explorer step {step!r}")

    def _queue_checks(self, batch: Any) -> list[_Check]:
        checks = []
        for mount, path in self.visible_files():
            cache = self.world.lookup(mount, path).key
            checks.append(_Check(mount, path, cache,
                                 batch.residency(self._path(mount, path), may_fail=True)))
        return checks

    # ---- the checks ----------------------------------------------------------------------

    def _collapsed(self, where: str, mount: str, path: str, answer: Pending[int]) -> None:
        """0, EINVAL (the range cannot be collapsed) and EAGAIN (transient, as the man page
        says) are all answers; the model follows what happened (World.collapsed). Anything
        else is a divergence."""
        err = answer.value
        if err not in (0, errno.EINVAL, errno.EAGAIN):
            raise Divergence(f"{where}: MADV_COLLAPSE failed with errno {err} "
                             f"({errno.errorcode.get(err, '?')})")
        self.world.collapsed(mount, path, err)

    @staticmethod
    def _expect_errno(where: str, answer: Pending[Any], want: int) -> None:
        got = answer.value
        if got.errno != want:
            raise Divergence(f"{where}: errno {got.errname or 0} ({got.errno}), the model "
                             f"expects {want}; kernel said {' | '.join(got.kmsg) or 'nothing'}")

    @staticmethod
    def _expect_bytes(where: str, got: Pending[Any], accept: set[str]) -> None:
        if got.failed:
            raise Divergence(f"{where}: the read failed: {got.error}")
        value = got.value
        if isinstance(value, str):
            raise Divergence(f"{where}: the reader failed: {value}")
        read = value if isinstance(value, ReadResult) else value.read
        if read is None:
            raise Divergence(f"{where}: the pressured reader failed: {value.error}")
        if read.sha256 not in accept:
            raise Divergence(f"{where}: read {read.sha256[:16]}..., the model accepts only "
                             f"{sorted(a[:16] for a in accept)}")

    def _check_residency(self, where: str, checks: list[_Check]) -> None:
        by_cache: dict[tuple[str, ...], list[tuple[str, int]]] = {}
        for check in checks:
            name = f"{check.mount}:{check.path}"
            if check.view.failed:
                raise Divergence(f"{where}: mincore of {name} failed: {check.view.error}")
            resident = check.view.value.resident
            # Asked only now: the model learns some outcomes (a collapse) from the answers.
            expected = self.world.expected_residency(check.mount, check.path)
            if expected is not None and resident != expected:
                raise Divergence(f"{where}: {name} has {resident} pages resident, the model "
                                 f"expects {expected} (cache {check.cache})")
            by_cache.setdefault(check.cache, []).append((name, resident))
        for cache, views in by_cache.items():
            if len({resident for _, resident in views}) > 1:
                raise Divergence(f"{where}: files of one shared cache {cache} differ in "
                                 f"residency: {views}")

    def _check_table(self, where: str, table: dict[str, list[str]]) -> None:
        want = {self._target(name): share for name, share in self.world.mount_table().items()}
        got = {target: "inode_share" in options for target, options in table.items()}
        if got != want:
            raise Divergence(f"{where}: /proc/mounts shows {got} (inode_share per mount), the "
                             f"model expects {want}")

    def _forget_gone_devices(self) -> None:
        for name in list(self.device_of):
            if name not in self.world.mounts:
                del self.device_of[name]

