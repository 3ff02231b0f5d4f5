"""Fixtures named for what they give: ``kernel``, ``guest_image``, ``vm``, ``guest``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ..guest import Guest
from ..guestimage import GuestImage
from ..kernels import Kernel
from ..vm import VM
from .state import VMPool, pool_key, safe_name


@pytest.fixture(scope="session")
def vm_pool(request: pytest.FixtureRequest) -> Iterator[VMPool]:
    """This worker's VM pool (one VM at a time, replaced when broken)."""
    pool = request.config.stash[pool_key]
    yield pool
    pool.close()


@pytest.fixture(scope="session")
def kernel(vm_pool: VMPool) -> Kernel:
    """The kernel under test (--kernel), fetched or located once per session."""
    return vm_pool.kernel


@pytest.fixture(scope="session")
def guest_image(vm_pool: VMPool) -> GuestImage:
    return vm_pool.image


@pytest.fixture
def vm(vm_pool: VMPool) -> VM:
    """The running VM of this worker; a fresh one if the previous test broke it."""
    return vm_pool.get()


@pytest.fixture
def guest(vm: VM, request: pytest.FixtureRequest) -> Iterator[Guest]:
    """A work directory in the guest and everything the test attaches, undone afterwards."""
    handle = Guest(vm, safe_name(request.node.name)[:60])
    yield handle
    if vm.responsive():
        handle.cleanup()
