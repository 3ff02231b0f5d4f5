"""The files behind a mount, as the feature's design promises them: EROFS holds a reference
to its image and blob files for the mount's lifetime, so deleting them changes nothing a
reader sees (bytes, sharing) until the unmount, which gives their space back; and only a
privileged mounter can mount at all, with or without `inode_share`.

Loop and file-backed mounts only: a virtio disk is a file on the host, not in the guest.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from conftest import BIG, SHARE, read_and_look, twin_of
from harness.erofs.images import BuiltImage
from harness.guest.handle import Guest
from harness.guest.mounts import Mounter
from harness.guest.probe import Probe

FILE_SOURCES = ("loop", "file")


@pytest.mark.requires_kernel("page_cache_share")
@pytest.mark.parametrize("source", FILE_SOURCES)
@pytest.mark.parametrize("images", [("sizes", "renamed"), ("sizes-blob", "renamed-blob")],
                         ids=["image", "image-and-blob"])
def test_deleted_image_files_stay_readable_and_shared_until_unmount(
        erofs_image: Callable[[str], BuiltImage], images: tuple[str, str], source: str,
        guest: Guest, mount: Mounter, pagecache: Probe) -> None:
    a, b = erofs_image(images[0]), erofs_image(images[1])
    ma = mount(a, SHARE, source)
    mb = mount(b, SHARE, source, private=True)
    files = [f for f in (mb.backing, *mb.backing_extra) if f]
    assert len(files) == 1 + len(b.extra_devices()), f"no private files behind {mb}"
    size = sum(int(guest.check(f"stat -c %s {f}")) for f in files)
    guest.check("rm -f " + " ".join(files))
    free_deleted = pagecache.free_bytes(guest.scratch)

    # Every file of b, read through its deleted image, is right.
    for meta in b.files():
        got = pagecache.read(mb.path(meta["path"]))
        assert got.sha256 == meta["sha256"], (
            f"{meta['path']} read {got.sha256[:12]} after its image file was deleted")
    pagecache.drop_caches()
    # Sharing is unaffected: a's read fills b's twin, from a cold start.
    pa = ma.path(BIG)
    _, _, [twin] = read_and_look(pagecache, pa, mb.path(twin_of(a, b, BIG)))
    assert twin.resident == twin.pages, f"after deleting b's image, b's twin shows {twin}"

    gone = mount.umount(mb)
    assert gone.ok, f"umount after deleting the image: {gone.errname} {gone.kmsg}"
    if source == "loop":
        guest.check(f"losetup -d {mb.device}" + "".join(f" && losetup -d {d}"
                                                         for d in mb.extra))
    freed = pagecache.free_bytes(guest.scratch) - free_deleted
    # ext4 frees the blocks of an unlinked file when its last reference goes.
    assert freed >= size - (64 << 10), (
        f"unmounting gave back {freed} bytes of the {size} the deleted files held: something "
        f"still holds them")


@pytest.mark.requires_kernel("user_namespaces", reason="an unprivileged user in a user "
                             "namespace of its own is the mounter")
@pytest.mark.parametrize("options", ["", pytest.param(SHARE, marks=pytest.mark.requires_kernel(
    "page_cache_share", reason="a kernel without it refuses the unknown option with EINVAL "
    "before it gets to the namespace"))], ids=["plain", "inode_share"])
def test_an_unprivileged_user_cannot_mount(erofs_image: Callable[[str], BuiltImage],
                                           options: str, guest: Guest, mount: Mounter,
                                           pagecache: Probe) -> None:
    """nobody, root of a user and mount namespace of its own, asks mount(2) for an image
    file it can read. EROFS is not mountable in user namespaces: EROFS parses the options
    (an unknown one is EINVAL), then the VFS refuses the superblock with EPERM. An EROFS
    that became mountable there would have to refuse `inode_share` itself (a shared cache
    crosses the namespace's trust boundary), and this test would tell."""
    image = erofs_image("sizes")
    probe_mount = mount(image, "", "file")  # uploads it, and shows root can mount it
    assert probe_mount.backing is not None
    guest.check(f"chmod 0644 {probe_mount.backing}")
    answer = pagecache.mount_unprivileged(probe_mount.backing, f"{guest.workdir}/userns",
                                          options)
    assert not answer.ok, f"nobody in a user namespace mounted EROFS with -o {options!r}"
    assert answer.errno == 1, f"refused with {answer.errname} (errno {answer.errno}), not EPERM"
