"""Mounting EROFS images in the guest: from a loop device, a file (file-backed mount, the
image path passed to mount(2) itself) or a hot-plugged virtio disk.

Every attempt returns what mount(2) said (errno) and the kernel log lines it caused; the
Guest's cleanup unmounts, detaches loops and unplugs disks after the test.
"""

from __future__ import annotations

import re
import secrets
import shlex
from dataclasses import dataclass, field

from harness.core.errors import HarnessError
from harness.core.names import SOURCES
from harness.erofs.images import BuiltImage
from harness.guest.handle import Guest


@dataclass
class MountResult:
    ok: bool
    errno: int
    errname: str
    kmsg: list[str]
    target: str
    options: str
    source: str

    def says(self, text: str) -> bool:
        return any(text in line for line in self.kmsg)

    def matches(self, pattern: str) -> bool:
        return any(re.search(pattern, line) for line in self.kmsg)


@dataclass
class Mount:
    target: str
    image: BuiltImage
    source_kind: str
    device: str
    options: str
    result: MountResult
    extra: list[str] = field(default_factory=list)
    # The image file in the guest behind a loop or file-backed mount (None for a virtio
    # disk): its own page cache on the scratch ext4 counts in Cached and in memcg charges,
    # so measurements of EROFS pages subtract it.
    backing: str | None = None
    # The files in the guest behind the device= devices, likewise (loop, file-backed).
    backing_extra: list[str] = field(default_factory=list)
    # A mount made to fail (Mounter.failing): the device mapper device it is mounted from
    # and the loop or virtio device under it.
    dm: str | None = None
    under: str | None = None
    # A failing mount made with ``stacked``: the device mapper device it is mounted from,
    # over ``dm`` (whose /dev path is ``middle``), to hold its I/O (``Mounter.hold_io``).
    upper: str | None = None
    middle: str | None = None

    def path(self, rel: str) -> str:
        return f"{self.target}/{rel}"


class Mounter:
    """Mounts for one test; images are uploaded to the guest's scratch disk once per guest."""

    def __init__(self, guest: Guest) -> None:
        self.guest = guest
        self.session = guest.session
        self.probe = guest.session.probe
        self.count = 0
        self.mounted: list[Mount] = []
        self.session.need_modules("erofs", "loop")

    def _loop(self, path: str) -> str:
        return self.probe.loop_attach(path)

    def _private(self, remote: str) -> str:
        """A copy of an uploaded file that this test alone uses (to delete or change it under
        a live mount without touching what other tests mount)."""
        copy = f"{self.guest.scratch}/{self.count}-{remote.rsplit('/', 1)[-1]}"
        self.guest.check(f"mkdir -p {shlex.quote(self.guest.scratch)} && "
                         f"cp {shlex.quote(remote)} {shlex.quote(copy)}")
        return copy

    def attempt(self, image: BuiltImage, options: str = "", source: str = "loop",
                private: bool = False, settle: bool = True) -> Mount:
        """Mount and return the Mount with its result, whether or not mount(2) succeeded.
        ``private``: mount a copy of the image (and blob) of this test's own (loop, file)."""
        if source not in SOURCES:
            raise HarnessError(f"mount source {source!r} is not one of {', '.join(SOURCES)}")
        if private and source == "block":
            raise HarnessError("a private copy is for loop and file-backed mounts; a virtio "
                               "disk is the host's file")
        self.count += 1
        target = f"{self.guest.workdir}/mnt{self.count}"
        extra: list[str] = []
        remote: str | None = None
        if source == "block":
            device = self.guest.attach_disk(image.path)
        else:
            remote = self.session.upload(image.path, f"{image.key}.erofs")
            if private:
                remote = self._private(remote)
            device = self._loop(remote) if source == "loop" else remote
        # The extra devices (a blob, or the images a merged image was rebuilt from) hold
        # the chunk data; each is named with device=, in the image's device-table order.
        extra_files: list[str] = []
        for local, name in image.extra_devices():
            if source == "block":
                extra.append(self.guest.attach_disk(local))
                continue
            file = self.session.upload(local, name)
            if private:
                file = self._private(file)
            extra_files.append(file)
            extra.append(self._loop(file) if source == "loop" else file)
        opts = ",".join([o for o in (options,) if o] + [f"device={d}" for d in extra])
        return self._mount(target, image, source, device, opts, extra, remote, extra_files,
                           settle)

    def _mount(self, target: str, image: BuiltImage, source: str, device: str, options: str,
               extra: list[str], backing: str | None, backing_extra: list[str],
               settle: bool = True) -> Mount:
        """mount(2) at ``target``; the Mount with its result, kept for the cleanup when it
        succeeded."""
        answer = self.probe.mount(device, target, options, settle)
        result = MountResult(answer.ok, answer.errno, answer.errname, answer.kmsg, target,
                             options, device)
        mount = Mount(target, image, source, device, options, result, extra, backing,
                      backing_extra)
        if result.ok:
            self.mounted.append(mount)
        return mount

    @staticmethod
    def _succeeded(mount: Mount, inside: str = "") -> Mount:
        """``mount``, or an error with errno and the kernel's words."""
        if not mount.result.ok:
            raise HarnessError(f"mounting {mount.image.spec.name} from {mount.source_kind} "
                               f"({mount.device}){inside} with -o {mount.options or '(none)'} "
                               f"failed: {mount.result.errname} (errno {mount.result.errno}); "
                               f"kernel said: {' | '.join(mount.result.kmsg) or 'nothing'}")
        return mount

    def attempt_nested(self, outer: Mount, rel: str, image: BuiltImage, options: str = "",
                       source: str = "file") -> Mount:
        """Mount ``image``, whose file is ``rel`` inside the mount ``outer`` (an image
        stored in an image), from a loop device over that file or from the file itself;
        the Mount with its result, whether or not mount(2) succeeded. The cleanup unmounts
        it before ``outer`` (newest first)."""
        if source not in ("loop", "file"):
            raise HarnessError(f"an image inside a mount is mounted from a loop device or the "
                               f"file itself, not from {source!r}")
        if image.extra_devices():
            raise HarnessError(f"{image.spec.name} needs extra devices; an image inside a "
                               f"mount is mounted alone")
        self.count += 1
        file = outer.path(rel)
        device = self._loop(file) if source == "loop" else file
        return self._mount(f"{self.guest.workdir}/mnt{self.count}", image, source, device,
                           options, [], file, [])

    def nested(self, outer: Mount, rel: str, image: BuiltImage, options: str = "",
               source: str = "file") -> Mount:
        """attempt_nested, or fail with errno and the kernel's words."""
        return self._succeeded(self.attempt_nested(outer, rel, image, options, source),
                               f" inside {outer.target}")

    def __call__(self, image: BuiltImage, options: str = "", source: str = "loop",
                 private: bool = False) -> Mount:
        """Mount, or fail with errno and the kernel's words."""
        return self._succeeded(self.attempt(image, options, source, private))

    def failing(self, image: BuiltImage, options: str = "", source: str = "loop",
                stacked: bool = False) -> Mount:
        """Mount ``image`` from a device mapper device over its loop or virtio device, whose
        I/O ``fail`` and ``recover`` turn off and on under the mount. File-backed mounts
        have no device of their own to fail. ``stacked``: mounted from a second device
        over that one, whose I/O ``hold_io`` can hold, so that what is in flight when the
        device fails is still held above it and fails when it comes down."""
        if source == "file":
            raise HarnessError("a failing mount needs a block device (loop or block): a "
                               "file-backed mount reads its image file, not a device")
        self.session.need_modules("dm_mod")
        self.count += 1
        target = f"{self.guest.workdir}/mnt{self.count}"
        if source == "block":
            under = self.guest.attach_disk(image.path)
        else:
            under = self._loop(self.session.upload(image.path, f"{image.key}.erofs"))
        if image.extra_devices():
            raise HarnessError(f"{image.spec.name}: a failing mount of an image with extra "
                               f"devices is not supported")
        # Unique in the guest: a device an earlier test could not remove keeps its name.
        name = f"{secrets.token_hex(4)}-{self.count}"
        device = middle = self.probe.dm_create(name, under)
        if stacked:
            device = self.probe.dm_create(f"{name}-held", middle)
        mount = self._succeeded(self._mount(target, image, source, device, options, [], None,
                                            []))
        mount.dm, mount.under = name, under
        if stacked:
            mount.upper, mount.middle = f"{name}-held", middle
        return mount

    def hold_io(self, mount: Mount, delay_ms: int) -> None:
        """From now on every I/O of a ``stacked`` failing mount waits ``delay_ms`` before it
        reaches the device that ``fail`` fails (0: passes at once)."""
        assert mount.upper and mount.middle, f"{mount.target} is not a stacked failing mount"
        self.probe.dm_swap(mount.upper, "delay" if delay_ms else "linear", mount.middle,
                           delay_ms)

    def fail(self, mount: Mount) -> None:
        """From now on every I/O to the mount's device fails (EIO), cached pages stay."""
        assert mount.dm and mount.under, f"{mount.target} is not a failing mount"
        self.probe.dm_swap(mount.dm, "error", mount.under)

    def recover(self, mount: Mount) -> None:
        """The mount's device reads its image again."""
        assert mount.dm and mount.under, f"{mount.target} is not a failing mount"
        self.probe.dm_swap(mount.dm, "linear", mount.under)

    def umount(self, mount: Mount, lazy: bool = False) -> MountResult:
        answer = self.probe.umount(mount.target, lazy)
        if answer.ok and mount in self.mounted:
            self.mounted.remove(mount)
        return MountResult(answer.ok, answer.errno, answer.errname, answer.kmsg, mount.target,
                           mount.options, mount.device)
