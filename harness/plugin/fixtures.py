"""Fixtures named for what they give: ``kernel``, ``guest_image``, ``vm``, ``guest``."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from harness.core.errors import HarnessError
from harness.core.names import safe_name
from harness.core.paths import CATALOG
from harness.erofs.images import BuiltImage, Catalog, build_image, load_catalog
from harness.erofs.tools import ErofsUtils, provide
from harness.guest.handle import Guest
from harness.guest.mounts import Mounter
from harness.guest.probe import Probe
from harness.guest.session import GuestSession
from harness.guestimage.build import GuestImage
from harness.kernel.kernel import Kernel
from harness.plugin.state import VMPool, pool_key
from harness.vm.machine import VM, VMState


@pytest.fixture(scope="session")
def vm_pool(request: pytest.FixtureRequest) -> Iterator[VMPool]:
    """This worker's VM pool (one VM at a time, replaced when broken)."""
    pool = request.config.stash[pool_key]
    yield pool
    try:
        _check_images_unchanged(pool)
    finally:
        pool.close()


def _check_images_unchanged(pool: VMPool) -> None:
    """After the worker's last test: every image uploaded to its guest still has the bytes
    it was uploaded with (EROFS never writes its images and blobs; a test that changes one
    works on a private copy)."""
    vm, session = pool.current, pool.session
    if vm is None or session is None or vm.state is not VMState.RUNNING:
        return
    changed = session.changed_uploads()
    if changed:
        raise HarnessError(f"images changed in the guest during the session: {changed}")


@pytest.fixture
def kernel(vm_pool: VMPool) -> Kernel:
    """The kernel under test (--kernel), fetched or located once per session by the pool;
    after a boot, with the config the booted kernel gave back if it came without one."""
    return vm_pool.kernel


@pytest.fixture(scope="session")
def guest_image(vm_pool: VMPool) -> GuestImage:
    return vm_pool.image


@pytest.fixture
def vm(vm_pool: VMPool) -> VM:
    """The running VM of this worker; a fresh one if the previous test broke it."""
    return vm_pool.get()


@pytest.fixture
def guest_session(vm: VM, vm_pool: VMPool) -> GuestSession:
    """What the harness keeps about the running guest: modules, uploads, probe, log mark."""
    return vm_pool.guest_session()


@pytest.fixture
def guest(guest_session: GuestSession, request: pytest.FixtureRequest) -> Iterator[Guest]:
    """A work directory in the guest and everything the test attaches, undone afterwards."""
    handle = Guest(guest_session, safe_name(request.node.name)[:60])
    yield handle
    # A VM the test broke (a splat, a dead guest) is replaced before the next test: there
    # is nothing to clean up in it, and trying would only add an error to the failure.
    if guest_session.vm.state == VMState.RUNNING and guest_session.vm.responsive():
        handle.cleanup()


@pytest.fixture(scope="session")
def erofs_tools() -> ErofsUtils:
    """mkfs.erofs >= 1.9 (built from Debian's source once, or $MKFS_EROFS)."""
    return provide()


@pytest.fixture(scope="session")
def image_catalog() -> Catalog:
    return load_catalog(CATALOG)


@pytest.fixture(scope="session")
def erofs_image(erofs_tools: ErofsUtils, image_catalog: Catalog) -> Callable[[str], BuiltImage]:
    """``erofs_image(name)``: the built image of that name from testcases/images.yaml."""
    built: dict[str, BuiltImage] = {}

    def get(name: str) -> BuiltImage:
        if name not in built:
            built[name] = build_image(image_catalog.image(name), erofs_tools)
        return built[name]
    return get


@pytest.fixture
def pagecache(guest: Guest) -> Probe:
    """The page cache probe in the guest, caches dropped so that every test starts cold."""
    probe = guest.session.probe
    probe.drop_caches()
    return probe


@pytest.fixture
def mount(guest: Guest, pagecache: Probe) -> Mounter:
    """``mount(image, options, source)`` in the guest; undone by the guest's cleanup."""
    return Mounter(guest)


@pytest.fixture
def measure(request: pytest.FixtureRequest) -> Callable[..., None]:
    """``measure(name=value, ...)``: numbers for the suite report (and JUnit properties)."""
    def record(**values: float | int | str) -> None:
        for name, value in values.items():
            request.node.user_properties.append((f"measure:{name}", value))
    return record
