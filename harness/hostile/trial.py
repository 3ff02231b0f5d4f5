"""One hostile-image trial: a damaged copy of an image is mounted beside the healthy image
(in one sharing domain, or both without sharing), both are walked as a reader would, and
what the kernel did is judged against what the damage may change.

The judgement (``Trial.violations``), in order:

1. the mount answer: a damage under the superblock checksum that was not re-signed must be
   refused; damage only to bytes EROFS never reads must mount;
2. the damaged mount: a file the damage cannot reach reads its own bytes through read(2)
   and mmap, or fails with an errno; it is never missing and never wrong. With ``intact``
   damage nothing may fail at all;
3. the healthy mount, walked after the damaged one: every file right. Under sharing, the
   twin of a file the damage reaches may serve what the damaged one served (same
   fingerprint, other content: the documented forgery) or fail;
4. once the damaged mount is gone and the caches dropped, the healthy mount reads every file
   right, sharing or not: nothing of the damaged image may outlive its mount;
5. neither image file changed (sha256 and mtime in the guest, or on the host for a disk).

With ``live=True`` the damage is written in place into a private copy of the healthy image
while it is mounted and after it was walked, and the caches are dropped: the same rules
then hold, except that nothing can be refused any more (the checksum is read at mount).

A kernel splat or a dead guest is judged by whoever runs the trial (the test hooks, or the
fuzzer's own check of the kernel log).
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from harness.core.errors import HarnessError
from harness.erofs.damage import Damage
from harness.erofs.images import BuiltImage
from harness.erofs.layout import ImageLayout
from harness.guest.mounts import Mount, Mounter
from harness.guest.probe import FileState, Outcome, Probe, ReadResult, Walk, WalkEntry

SHARING = "inode_share,domain_id=hostile"


def damaged_copy(image: BuiltImage, damage: Damage, directory: Path) -> BuiltImage:
    """``image`` with ``damage`` applied, as a file of its own (never the cached original)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{image.key}-{damage.ident}.erofs"
    if not path.exists():
        path.write_bytes(damage.apply(image.path.read_bytes()))
    return dataclasses.replace(image, path=path, blob=None, key=f"{image.key}-{damage.ident}")


@dataclass
class Trial:
    damage: Damage
    expect: str
    source: str
    sharing: bool
    mount_ok: bool = False
    mount_errno: int = 0
    read_errors: int = 0  # looks at the damaged mount that failed with an errno
    foreign: list[str] = field(default_factory=list)  # healthy twins that served other bytes
    violations: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)  # per phase, for the summary
    _last: float = field(default_factory=time.monotonic, repr=False)

    def record(self, measure: Callable[..., None]) -> None:
        """Print the summary and hand the counts to the suite report (its hostile-images
        section)."""
        print(self.summary())
        measure(hostile_refused=int(not self.mount_ok), hostile_read_errors=self.read_errors,
                hostile_foreign=len(self.foreign),
                hostile_images_unchanged=int(not any("changed" in v for v in self.violations)))

    def lap(self, phase: str) -> None:
        now = time.monotonic()
        self.seconds[phase] = now - self._last
        self._last = now

    def summary(self) -> str:
        mount = "mounted" if self.mount_ok else f"refused (errno {self.mount_errno})"
        return (f"{self.damage.name} [{self.source}, {'sharing' if self.sharing else 'no sharing'}"
                f", expect {self.expect}]: {mount}, {self.read_errors} read errors, "
                f"{len(self.foreign)} twins served the damaged bytes; seconds: "
                + " ".join(f"{k}={v:.1f}" for k, v in self.seconds.items()))


def _looks(entry: WalkEntry) -> list[tuple[str, Outcome | None]]:
    return [("read(2)", entry.read), ("mmap", entry.mapped)]


def _judge_damaged(trial: Trial, walk: Walk, image: BuiltImage, unreachable: frozenset[str]
                   ) -> dict[str, str]:
    """Check the damaged mount's walk; what it served per file (sha256 or error)."""
    served: dict[str, str] = {}
    for entry in walk.entries.values():
        for _, look in _looks(entry):
            if look is not None and look.read is None:
                trial.read_errors += 1
        if entry.error is not None:
            trial.read_errors += 1
    for meta in image.files():
        path, want = meta["path"], meta["sha256"]
        found = walk.entries.get(path)
        if found is not None and found.read is not None:
            served[path] = found.read.read.sha256 if found.read.read else found.read.error
        if path in unreachable:
            continue
        if found is None:
            if walk.complete:
                trial.violations.append(f"damaged mount: {path} is missing from its directory, "
                                        f"which the damage does not reach")
            continue
        for how, look in [("lstat", found.error), *_looks(found)]:
            if look is None:
                continue
            if look.read is not None and look.read.sha256 != want:
                trial.violations.append(f"damaged mount: {path} ({how}) read wrong bytes "
                                        f"{look}, not {want[:12]}: the damage does not reach it")
            elif look.read is None and trial.expect == "intact":
                trial.violations.append(f"damaged mount: {path} ({how}) failed: {look}; the "
                                        f"damage is in bytes EROFS never reads")
    return served


def _judge_healthy(trial: Trial, walk: Walk, image: BuiltImage, when: str,
                   forgeable: frozenset[str], served: dict[str, str]) -> None:
    for meta in image.files():
        path, want = meta["path"], meta["sha256"]
        entry = walk.entries.get(path)
        if entry is None or entry.error is not None:
            trial.violations.append(f"healthy mount {when}: {path} is "
                                    f"{'missing' if entry is None else entry.error}")
            continue
        for how, look in _looks(entry):
            if look is None or (look.read is not None and look.read.sha256 == want):
                continue
            if path in forgeable:
                # Same fingerprint, other content: whichever reader came first filled the
                # one shared cache (or its failure is now everyone's).
                trial.foreign.append(f"{path} ({how}): {look}")
                continue
            origin = [p for p, sha in served.items() if look.read and sha == look.read.sha256]
            trial.violations.append(f"healthy mount {when}: {path} ({how}) gave {look}, not "
                                    f"{want[:12]}" + (f"; the damaged twin served "
                                                      f"{served[path][:40]}" if path in served
                                                      else "")
                                    + (f"; these are the bytes the damaged mount served for "
                                       f"{', '.join(origin)}" if origin else ""))


def _state(probe: Probe, mount: Mount) -> FileState | None:
    return probe.file_state(mount.backing) if mount.backing else None


def _host_state(path: Path) -> FileState:
    data = path.read_bytes()
    return FileState(ReadResult(len(data), hashlib.sha256(data).hexdigest()),
                     path.stat().st_mtime_ns)


def _mount_damaged(trial: Trial, mount: Mounter, probe: Probe, healthy: BuiltImage,
                   damaged: BuiltImage, options: str, live: bool) -> Mount:
    if not live:
        return mount.attempt(damaged, options, trial.source)
    # A private copy of the healthy image, mounted and walked (every file right, every
    # inode looked up and cached), then changed in place under the live mount and the
    # caches dropped, so that EROFS reads the changed blocks again.
    md = mount.attempt(healthy, options, trial.source, private=True)
    if md.result.ok and md.backing is not None:
        before = probe.walk(md.target)
        _judge_healthy(trial, before, healthy, "before its image was changed", frozenset(), {})
        probe.patch_file(md.backing, list(trial.damage.edits), trial.damage.truncate)
        probe.drop_caches()
    return md


def run_trial(mount: Mounter, probe: Probe, healthy: BuiltImage, damaged: BuiltImage,
              damage: Damage, layout: ImageLayout, source: str, sharing: bool,
              live: bool = False) -> Trial:
    """``live``: the damage is written into a private copy of the healthy image while it is
    mounted (``damaged`` is then unused); the checksum is only checked at mount time, so
    nothing is expected to be refused."""
    options = SHARING if sharing else ""
    if not damage.changes(healthy.path.read_bytes()):
        raise HarnessError(f"damage {damage.name} changes no byte of {healthy.spec.name}: "
                           f"what it expects of the kernel would be wrong")
    expect = damage.expect(layout)
    trial = Trial(damage, "contained" if live and expect == "refused" else expect, source,
                  sharing)
    images = (healthy,) if live else (healthy, damaged)
    host_before = {image.key: _host_state(image.path) for image in images}
    mh = mount(healthy, options, source)
    md = _mount_damaged(trial, mount, probe, healthy, damaged, options, live)
    trial.mount_ok, trial.mount_errno = md.result.ok, md.result.errno
    unchanged = (mh,) if live else (mh, md)
    guest_before = {m.target: _state(probe, m) for m in unchanged}
    trial.lap("mount")
    if trial.expect == "refused" and md.result.ok:
        trial.violations.append("the damage is under the superblock checksum and was not "
                                "re-signed, yet the image mounted")
    if (trial.expect == "intact" or live) and not md.result.ok:
        trial.violations.append(f"the image did not mount: {md.result.errname} "
                                f"{md.result.kmsg}" + ("" if live else
                                                       " (damage to bytes EROFS never reads)"))
    unreachable = damage.affected(layout)
    served: dict[str, str] = {}
    if md.result.ok:
        served = _judge_damaged(trial, probe.walk(md.target), md.image, unreachable)
    trial.lap("walk-damaged")
    forgeable = unreachable if sharing and md.result.ok else frozenset()
    _judge_healthy(trial, probe.walk(mh.target), healthy, "after the damaged one was read",
                   forgeable, served)
    trial.lap("walk-healthy")
    if md.result.ok:
        gone = mount.umount(md)
        if not gone.ok:
            trial.violations.append(f"umount of the damaged image: {gone.errname} {gone.kmsg}")
    probe.drop_caches()
    _judge_healthy(trial, probe.walk(mh.target), healthy,
                   "after the damaged one was unmounted and the caches dropped", frozenset(), {})
    trial.lap("walk-after-unmount")
    for m in unchanged:
        after, before = _state(probe, m), guest_before[m.target]
        want = host_before[m.image.key]
        if after is not None and before is not None and (
                after.read != want.read or after.mtime_ns != before.mtime_ns):
            trial.violations.append(f"{m.backing}: the image file behind the mount changed: "
                                    f"{after} (uploaded {want.read}, then {before})")
    for image in images:
        if _host_state(image.path) != host_before[image.key]:
            trial.violations.append(f"{image.path} changed on the host during the trial")
    trial.lap("images-unchanged")
    return trial
