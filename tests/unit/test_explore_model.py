"""The explorer's model predicts what the kernel's sharing rules say, step by step."""

from __future__ import annotations

import errno

from harness.explore.model import COLD, FULL, UNKNOWN, PoolFile, PoolImage, World

SHARE1, SHARE2 = "inode_share,domain_id=d1", "inode_share,domain_id=d2"


def _pool() -> dict[str, PoolImage]:
    def image(name: str, *files: PoolFile) -> PoolImage:
        return PoolImage(name, files)
    return {
        "a": image("a", PoolFile("big", 8192, "A", "cA", "plain"),
                   PoolFile("page", 4096, "P", "cP", "plain")),
        "b": image("b", PoolFile("h", 8192, "A", "cA", "plain"),
                   PoolFile("d", 4096, "P", "cP", "plain")),
        "nofp": image("nofp", PoolFile("big", 8192, "A", None, "plain")),
        "lz": image("lz", PoolFile("big", 8192, "A", "cA", "compressed")),
        "forged": image("forged", PoolFile("page", 4096, "F", "cP", "plain")),
        "resized": image("resized", PoolFile("c", 4095, "R", "cP", "plain")),
    }


def _world(*mounts: tuple[str, str, str], source: str = "loop") -> World:
    world = World(_pool())
    for name, image, options in mounts:
        assert world.mount(name, image, source, options) == 0
    return world


def test_twins_in_one_domain_share_and_other_domains_do_not() -> None:
    world = _world(("m1", "a", SHARE1), ("m2", "b", SHARE1), ("m3", "b", SHARE2))
    assert world.lookup("m1", "big") is world.lookup("m2", "h")
    assert world.lookup("m3", "h") is not world.lookup("m1", "big")
    world.read("m1", "big")
    assert world.expected_residency("m2", "h") == 2
    assert world.expected_residency("m3", "h") == 0


def test_no_fingerprint_or_no_sharing_means_a_private_cache() -> None:
    world = _world(("m1", "a", SHARE1), ("m2", "nofp", SHARE1), ("m3", "b", ""))
    world.read("m1", "big")
    assert world.expected_residency("m2", "big") == 0
    assert world.expected_residency("m3", "h") == 0
    assert world.mount_table() == {"m1": True, "m2": False, "m3": False}


def test_inode_share_without_domain_is_refused() -> None:
    world = World(_pool())
    assert world.mount("m1", "a", "loop", "inode_share") == errno.EINVAL
    assert world.mount_table() == {}


def test_first_lookup_decides_size_and_layout() -> None:
    world = _world(("m1", "resized", SHARE1), ("m2", "a", SHARE1), ("m3", "b", SHARE1))
    world.lookup("m1", "c")  # 4095 bytes under the fingerprint of a 4096-byte page
    page, twin = world.lookup("m2", "page"), world.lookup("m3", "d")
    assert page.key[0] == twin.key[0] == "private"  # both refused: another size
    world = _world(("m1", "lz", SHARE1), ("m2", "a", SHARE1))
    world.lookup("m1", "big")
    assert world.lookup("m2", "big").key[0] == "private"  # another layout


def test_a_same_size_forgery_may_serve_its_bytes_until_the_cache_is_emptied() -> None:
    world = _world(("m1", "forged", SHARE1), ("m2", "a", SHARE1))
    assert world.read("m1", "page") == {"F"}
    assert world.read("m2", "page") == {"F", "P"}
    assert world.umount("m1", lazy=False) == 0
    assert world.acceptable("m2", "page") == {"F", "P"}  # the forged pages may still be cached
    world.drop_caches()
    assert world.acceptable("m2", "page") == {"P"}


def test_a_mapping_pins_its_cache_and_keeps_its_mount_busy() -> None:
    world = _world(("m1", "a", SHARE1), ("m2", "b", SHARE1))
    world.hold("h1", "m1", "big")
    assert world.umount("m1", lazy=False) == errno.EBUSY
    world.drop_caches()
    world.dontneed("m2", "h")
    assert world.expected_residency("m2", "h") == 2  # mapped pages stay
    assert world.umount("m1", lazy=True) == 0
    assert world.mount_table() == {"m2": True}
    assert world.release("h1") == {"A"}
    assert "m1" not in world.mounts  # the detached mount went with its last mapping
    world.drop_caches()
    assert world.expected_residency("m2", "h") == 0


def test_hints_and_pressure_leave_residency_open() -> None:
    world = _world(("m1", "a", SHARE1))
    world.willneed("m1", "big")
    assert world.lookup("m1", "big").state == UNKNOWN
    world.read("m1", "big")
    assert world.lookup("m1", "big").state == FULL
    world.pressured_read("m1", "big")
    assert world.expected_residency("m1", "big") is None
    world.dontneed("m1", "big")
    assert world.lookup("m1", "big").state == COLD


def test_the_last_unmount_ends_a_shared_cache() -> None:
    world = _world(("m1", "a", SHARE1), ("m2", "b", SHARE1))
    world.read("m1", "big")
    world.lookup("m2", "h")
    world.umount("m1", lazy=False)
    assert world.expected_residency("m2", "h") == 2
    world.umount("m2", lazy=False)
    assert world.caches == {}
    assert world.mount("m3", "a", "loop", SHARE1) == 0
    assert world.expected_residency("m3", "big") == 0


def test_file_backed_and_block_backed_twins_share_only_when_compressed() -> None:
    world = World(_pool())
    for name, image, source in (("m1", "a", "loop"), ("m2", "b", "file"), ("m3", "b", "loop"),
                                ("m4", "lz", "file"), ("m5", "lz", "loop")):
        assert world.mount(name, image, source, SHARE1) == 0
    world.lookup("m1", "big")
    assert world.lookup("m2", "h").key[0] == "private"  # other aops: refused
    assert world.lookup("m3", "h") is world.lookup("m1", "big")
    assert world.lookup("m4", "big").key[0] == "private"  # compressed vs the plain creator
    world = World(_pool())
    for name, image, source in (("m4", "lz", "file"), ("m5", "lz", "loop")):
        assert world.mount(name, image, source, SHARE1) == 0
    assert world.lookup("m4", "big") is world.lookup("m5", "big")


def test_a_collapse_may_unmap_the_holders_so_their_pages_may_go() -> None:
    world = _world(("m1", "a", SHARE1))
    world.hold("h1", "m1", "big")
    world.collapsed("m1", "big", errno.EINVAL)  # nothing changed, still pinned
    world.drop_caches()
    assert world.expected_residency("m1", "big") == 2
    world.collapsed("m1", "big", 0)
    assert world.expected_residency("m1", "big") == 2  # all of it, in huge pages
    world.dontneed("m1", "big")
    # Zapped if the collapse replaced small pages, still mapped if they were huge already.
    assert world.expected_residency("m1", "big") is None
    assert world.release("h1") == {"A"}
    assert world.expected_residency("m1", "big") == 2  # its last look faulted it all in


def test_a_transient_collapse_failure_keeps_the_pages_but_not_the_pin() -> None:
    world = _world(("m1", "a", SHARE1))
    world.hold("h1", "m1", "big")
    world.collapsed("m1", "big", errno.EAGAIN)
    assert world.expected_residency("m1", "big") == 2  # the small pages were put back
    world.drop_caches()
    assert world.expected_residency("m1", "big") is None  # the holder may map nothing now
    world.collapsed("m1", "big", 0)
    world.drop_caches()
    assert world.expected_residency("m1", "big") is None  # still open
    world.release("h1")
    assert world.expected_residency("m1", "big") == 2  # its last look faulted it all in
    world.drop_caches()
    assert world.expected_residency("m1", "big") == 0  # no holder left: all of it goes


def test_a_failed_collapse_of_a_cold_file_may_have_read_it() -> None:
    # collapse_file reads missing pages ahead before it can fail on one of them
    for err in (errno.EINVAL, errno.EAGAIN):
        world = _world(("m1", "a", ""))
        world.collapsed("m1", "big", err)
        assert world.expected_residency("m1", "big") is None


def test_collapsing_a_cache_that_is_huge_already_may_leave_its_holders_mapped() -> None:
    world = _world(("m1", "a", SHARE1))
    world.hold("h1", "m1", "big")
    world.collapsed("m1", "big", 0)
    world.hold("h2", "m1", "big")  # maps the huge pages
    world.collapsed("m1", "big", 0)  # nothing to do: succeeds, unmaps nothing
    world.drop_caches()
    assert world.expected_residency("m1", "big") is None
    world.release("h1")
    world.release("h2")
    world.drop_caches()
    assert world.expected_residency("m1", "big") == 0
    # A fresh fill may be huge from the start (large folios), so even the first collapse
    # after the cache was empty may leave its holder mapped.
    world.hold("h3", "m1", "big")
    world.collapsed("m1", "big", 0)
    world.drop_caches()
    assert world.expected_residency("m1", "big") is None
