"""Mount options around inode_share: what is refused, what turns sharing off, what is shown."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from conftest import BIG, OTHER_DOMAIN, SHARE, read_then_mincore, shown_options, twin_of
from harness.erofs.images import BuiltImage
from harness.guest.mounts import Mounter
from harness.guest.probe import Probe

pytestmark = pytest.mark.requires_kernel("page_cache_share")
Images = Callable[[str], BuiltImage]

REFUSAL_AFTER_A_CHECKSUM_OF_OTHER_MEMORY = dict(
    reason="an fsoffset= off the block size makes erofs_read_superblock() checksum the rest "
           "of the superblock's block past the end of the page it mapped: a block device "
           "mount fails on a checksum of other memory (EBADMSG) before the offset is refused "
           "(reports/fsoffset-superblock-wrong-page.yaml). Not strict: a block device whose "
           "page cache holds a large folio there reaches the refusal",
    signature=r"MountResult\(ok=False, errno=74, errname='EBADMSG', kmsg=\[[^\]]*erofs "
              r"\(device [^)]+\): invalid checksum",
    releases=">=6.16", unless_patched="erofs: read the superblock from the page that holds it",
    params=["loop-*", "block-*"], strict=False)


@pytest.mark.fast
def test_inode_share_without_domain_id_fails_with_einval(erofs_image: Images, source: str,
                                                         mount: Mounter) -> None:
    attempt = mount.attempt(erofs_image("sizes"), "inode_share", source)
    assert not attempt.result.ok and attempt.result.errname == "EINVAL", attempt.result
    # 7.3 says inode_share, 7.2 said inode_ishare (found by the nightly matrix).
    assert attempt.result.matches(r"domain_id is needed when inode_i?share is on"), (
        attempt.result.kmsg)


@pytest.mark.fast
def test_image_without_fingerprints_mounts_with_sharing_off(erofs_image: Images, source: str,
                                                            mount: Mounter,
                                                            pagecache: Probe) -> None:
    a, b = erofs_image("sizes-nofp"), erofs_image("renamed-nofp")
    ma, mb = mount(a, SHARE, source), mount(b, SHARE, source)
    assert ma.result.says("on-disk ishare xattrs not found. Turning off inode_share"), (
        ma.result.kmsg)
    assert not ma.result.says("EXPERIMENTAL EROFS page cache share support in use")
    other = read_then_mincore(pagecache, ma.path(BIG), mb.path(twin_of(a, b, BIG)))
    assert other.resident == 0, f"images without fingerprints shared pages: {other}"
    line = pagecache.vm.run(f"grep ' {ma.target} ' /proc/mounts", check=True).stdout
    assert "inode_share" not in line, f"sharing was turned off, yet /proc/mounts says {line}"


def test_fingerprinted_and_plain_images_do_not_share(erofs_image: Images, source: str,
                                                     mount: Mounter, pagecache: Probe) -> None:
    a, b = erofs_image("sizes"), erofs_image("renamed-nofp")
    ma, mb = mount(a, SHARE, source), mount(b, SHARE, source)
    assert read_then_mincore(pagecache, ma.path(BIG), mb.path(twin_of(a, b, BIG))).resident == 0


def test_sharing_mount_shows_the_experimental_warning(erofs_image: Images, source: str,
                                                      mount: Mounter) -> None:
    m = mount(erofs_image("sizes"), SHARE, source)
    assert m.result.says("EXPERIMENTAL EROFS page cache share support in use"), m.result.kmsg


@pytest.mark.parametrize("table", ["/proc/mounts", "/proc/self/mountinfo"])
def test_domain_id_is_never_visible(erofs_image: Images, source: str, table: str,
                                    mount: Mounter, pagecache: Probe) -> None:
    m = mount(erofs_image("sizes"), "inode_share,domain_id=secret-domain-42", source)
    line = pagecache.vm.run(f"grep ' {m.target} ' {table}", check=True).stdout
    fields = line.split()
    # /proc/mounts: the 4th field; mountinfo: the 6th and the super options after " - ".
    options = [fields[3]] if table == "/proc/mounts" else [fields[5], fields[-1]]
    assert any("inode_share" in o for o in options), f"{table} lacks inode_share: {line}"
    assert not any("secret-domain-42" in o or "domain_id" in o for o in options), (
        f"{table} shows the domain: {line}")


@pytest.mark.parametrize("name", ["sizes-customfp", "sizes"], ids=["both-custom", "mixed-names"])
def test_custom_fingerprint_names_share_by_digest(erofs_image: Images, source: str, name: str,
                                                  mount: Mounter, pagecache: Probe) -> None:
    """Measured: the digest decides, not the xattr name mkfs stored it under (images made
    with --xattr-inode-digest=trusted.harness.fp share with default-name images)."""
    a, b = erofs_image(name), erofs_image("renamed-customfp")
    ma, mb = mount(a, SHARE, source), mount(b, SHARE, source)
    other = read_then_mincore(pagecache, ma.path(BIG), mb.path(twin_of(a, b, BIG)))
    assert other.resident == other.pages, other


@pytest.mark.parametrize("strategy", ["disabled", "readahead", "readaround"])
def test_cache_strategy_keeps_compressed_sharing(erofs_image: Images, source: str,
                                                 strategy: str, mount: Mounter,
                                                 pagecache: Probe) -> None:
    a, b = erofs_image("sizes-lz4"), erofs_image("renamed-lz4")
    options = f"{SHARE},cache_strategy={strategy}"
    ma, mb = mount(a, options, source), mount(b, options, source)
    other = read_then_mincore(pagecache, ma.path(BIG), mb.path(twin_of(a, b, BIG)))
    assert other.resident == other.pages, f"cache_strategy={strategy}: {other}"


def test_remount_with_another_domain_is_ignored(erofs_image: Images, mount: Mounter,
                                               pagecache: Probe) -> None:
    a, b = erofs_image("sizes"), erofs_image("renamed")
    ma = mount(a, SHARE, "loop")
    mark = pagecache.kernel_log_mark()
    result = pagecache.vm.run(f"mount -o remount,{OTHER_DOMAIN} {ma.target}")
    assert result.ok, result.stderr
    log = pagecache.kernel_log_since(mark)
    assert any("ignoring reconfiguration for domain_id" in line for line in log.lines), log
    mb = mount(b, SHARE, "loop")  # domain d1, where a still is
    other = read_then_mincore(pagecache, ma.path(BIG), mb.path(twin_of(a, b, BIG)))
    assert other.resident == other.pages, f"a left domain d1 after the remount: {other}"


@pytest.mark.parametrize("dax", ["dax", "dax=always"])
def test_dax_with_inode_share_is_refused(erofs_image: Images, source: str, dax: str,
                                         mount: Mounter) -> None:
    attempt = mount.attempt(erofs_image("sizes"), f"{SHARE},{dax}", source)
    assert not attempt.result.ok and attempt.result.errname == "EINVAL", attempt.result
    assert attempt.result.matches(r"FSDAX is not allowed when inode_i?share is on"), (
        attempt.result.kmsg)


@pytest.mark.parametrize("option", ["nouser_xattr", "noacl", "user_xattr,acl", "dax=never"])
@pytest.mark.parametrize("when", ["mount", "remount"])
def test_xattr_acl_and_dax_never_options_keep_sharing(erofs_image: Images, source: str,
                                                      option: str, when: str, mount: Mounter,
                                                      pagecache: Probe) -> None:
    """The fingerprint is read by the kernel for itself (erofs_xattr_fill_inode_fingerprint
    calls erofs_getxattr directly), so hiding user xattrs or ACLs from users, or refusing
    DAX, must not stop a mount from sharing, given at mount or by a remount."""
    a, b = erofs_image("sizes"), erofs_image("renamed")
    ma = mount(a, f"{SHARE},{option}" if when == "mount" else SHARE, source)
    if when == "remount":
        # mount(2) with exactly these options: a remount starts from the defaults, so
        # inode_share is given again (the domain cannot change, and is not given).
        answer = pagecache.remount(ma.target, f"inode_share,{option}")
        assert answer.ok, f"remount,{option} of a sharing mount: {answer}"
    shown = shown_options(pagecache, ma)
    assert set(option.split(",")) <= set(shown) and "inode_share" in shown, (
        f"{when} with {option}: /proc/mounts shows {shown}")
    mb = mount(b, SHARE, source)
    other = read_then_mincore(pagecache, ma.path(BIG), mb.path(twin_of(a, b, BIG)))
    assert other.resident == other.pages, (
        f"a sharing mount with {option} (given at {when}) shares nothing with its twin: "
        f"{other}")


@pytest.mark.requires_kernel("erofs")
def test_dax_always_without_sharing_on_a_device_without_dax_mounts_without_it(
        erofs_image: Images, source: str, mount: Mounter, pagecache: Probe) -> None:
    """No device here is DAX-capable: dax=always alone is turned off with a message, where
    with inode_share it is refused (test_dax_with_inode_share_is_refused)."""
    image = erofs_image("sizes")
    m = mount(image, "dax=always", source)
    assert m.result.says("DAX unsupported by block device. Turning off DAX."), m.result.kmsg
    shown = shown_options(pagecache, m)
    assert "dax=always" not in shown, f"DAX was turned off, yet /proc/mounts shows {shown}"
    got = pagecache.read(m.path(BIG))
    assert got.sha256 == image.file(BIG)["sha256"], got


@pytest.mark.known_bug(**REFUSAL_AFTER_A_CHECKSUM_OF_OTHER_MEMORY)
# Before 7.3 file-backed mounts read the superblock as a block device's (test_fsoffset.py).
@pytest.mark.known_bug(**dict(REFUSAL_AFTER_A_CHECKSUM_OF_OTHER_MEMORY, releases=">=6.16,<7.3",
                              params=["file-*"]))
@pytest.mark.parametrize("offset", [1024, 512])
def test_an_fsoffset_off_the_block_size_is_refused(offset_image: Callable[..., BuiltImage],
                                                   source: str, offset: int,
                                                   mount: Mounter) -> None:
    """The image really is ``offset`` bytes into its file, so its superblock is found there;
    the offset is then refused because blocks would not start on block boundaries."""
    attempt = mount.attempt(offset_image("sizes", offset), f"{SHARE},fsoffset={offset}",
                            source)
    assert not attempt.result.ok and attempt.result.errname == "EINVAL", attempt.result
    assert attempt.result.matches(rf"fsoffset {offset} is not aligned to block size 4096"), (
        attempt.result.kmsg)
