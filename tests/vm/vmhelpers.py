"""Helpers for the VM-level tests of the harness (real QEMU, real kernel)."""
# Imported by the tests as `vmhelpers` (pytest puts this folder on sys.path).

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from harness.core.cache import cache_root
from harness.vm.machine import VM

RUN_CACHE = cache_root()  # taken at import, before any fixture can change HOME


def hotplug_round_trip(vm: VM, folder: Path, tag: bytes) -> None:
    """Hot-plug a disk of known bytes, read it whole in the guest, unplug it: the bytes
    must match and the device must be gone afterwards."""
    image = folder / "disk.raw"
    payload = tag.ljust(4096, b"\0") * 256
    image.write_bytes(payload)
    disk = vm.attach_disk(image)
    digest = vm.run(f"sha256sum {disk.device}", check=True).stdout.split()[0]
    assert digest == hashlib.sha256(payload).hexdigest(), f"{disk.device} read other bytes"
    vm.detach_disk(disk)
    assert not vm.run(f"test -e {disk.device}").ok, f"{disk.device} still exists after unplug"


def qemu_processes(marker: str) -> list[int]:
    """Pids of live QEMU processes whose command line contains ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (entry / "stat").read_text().split()[2]
        except OSError:
            continue
        if "qemu-system" in cmdline and marker in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


@pytest.fixture
def isolated_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A TMPDIR of its own, so that QEMU processes of an inner run can be found by path."""
    tmp = tmp_path / "inner-tmp"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    # pytester gives inner runs a HOME of their own (and may do so before this fixture
    # runs): keep them on the cache this run started with.
    monkeypatch.setenv("HARNESS_CACHE", str(RUN_CACHE))
    return tmp


def inner_env(tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["TMPDIR"] = str(tmp)
    return env


def harness_leftovers(tmp: Path) -> dict[str, list[str]]:
    """The VM work folders (``harness-*``) left in ``tmp``, each with what it still holds:
    the contents say which part of the VM's clean-up missed it."""
    return {p.name: sorted(str(q.relative_to(p)) for q in p.rglob("*"))
            for p in tmp.iterdir() if p.name.startswith("harness-")}
