"""Every mkfs variant on every mount source: all files read back byte for byte, and the
fingerprinted variants share with a differently built image of the same contents."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from conftest import BIG, SHARE, mount_twins, read_and_look, read_then_mincore, twin_of
from harness.erofs.images import BuiltImage
from harness.guest.mounts import Mounter
from harness.guest.probe import Probe, Residency

Images = Callable[[str], BuiltImage]
VARIANTS = ["", "-nofp", "-customfp", "-lz4", "-lz4hc", "-lzma", "-deflate", "-zstd",
            "-lz4hc-packed", "-chunk64k", "-blob", "-bs1k", "-tar"]
NEEDS = {"-lz4": "lz4", "-lz4hc": "lz4", "-lz4hc-packed": "lz4", "-lzma": "lzma",
         "-deflate": "deflate", "-zstd": "zstd"}


def _needs(variant: str, kernel_features: dict[str, bool]) -> None:
    feature = NEEDS.get(variant)
    if feature and not kernel_features.get(feature):
        pytest.skip(f"kernel lacks the {feature} decompressor for sizes{variant}")


def _check_all_files(image: BuiltImage, root: str, pagecache: Probe) -> None:
    files = image.files()
    with pagecache.batch() as batch:
        reads = [batch.read(f"{root}/{f['path']}") for f in files]
    wrong = [f["path"] for f, got in zip(files, reads, strict=True)
             if got.value.sha256 != f["sha256"]]
    assert not wrong, f"{image.spec.name}: wrong bytes in {wrong}"


@pytest.mark.requires_kernel("erofs")
@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: f"sizes{v}")
@pytest.mark.parametrize("options", ["", SHARE], ids=["plain", "sharing"])
def test_every_file_reads_back_exactly(erofs_image: Images, source: str, variant: str,
                                       options: str, mount: Mounter, pagecache: Probe) -> None:
    kernel = pagecache.vm.kernel
    _needs(variant, kernel.features)
    if options and not kernel.features["page_cache_share"]:
        pytest.skip(f"kernel {kernel.release} lacks page_cache_share")
    image = erofs_image(f"sizes{variant}")
    m = mount(image, options, source)
    _check_all_files(image, m.target, pagecache)


@pytest.mark.requires_kernel("page_cache_share")
@pytest.mark.parametrize("variant", [v for v in VARIANTS if v != "-nofp"],
                         ids=lambda v: f"sizes{v}")
def test_fingerprinted_variant_shares_with_its_twin(erofs_image: Images, source: str,
                                                    variant: str, mount: Mounter,
                                                    pagecache: Probe) -> None:
    _needs(variant, pagecache.vm.kernel.features)
    a, b = erofs_image(f"sizes{variant}"), erofs_image(f"renamed{variant}")
    ma, mb = mount(a, SHARE, source), mount(b, SHARE, source)
    _, mine, [other] = read_and_look(pagecache, ma.path(BIG), mb.path(twin_of(a, b, BIG)))
    assert other.resident == mine.resident == mine.pages, (
        f"{a.spec.name} vs {b.spec.name}: reader {mine}, other {other}")


def _other_side(pagecache: Probe, mount: Mounter, a: BuiltImage, b: BuiltImage,
                source: str) -> Residency:
    return read_then_mincore(pagecache, *mount_twins(mount, a, b, source)[2:])


@pytest.mark.requires_kernel("page_cache_share", "lz4", "lzma", "zstd", "deflate")
@pytest.mark.parametrize("names", [("sizes-lz4", "renamed-lz4hc"), ("sizes-lz4", "renamed-lzma"),
                                   ("sizes-zstd", "renamed-deflate"),
                                   ("sizes-lz4hc-packed", "renamed-lz4hc")],
                         ids=lambda n: "~".join(n))
def test_images_with_different_compressors_share(erofs_image: Images, source: str,
                                                 names: tuple[str, str], mount: Mounter,
                                                 pagecache: Probe) -> None:
    other = _other_side(pagecache, mount, erofs_image(names[0]), erofs_image(names[1]), source)
    assert other.resident == other.pages, f"{names}: {other}"


@pytest.mark.requires_kernel("page_cache_share")
@pytest.mark.parametrize("names", [("sizes-chunk64k", "renamed"), ("sizes-bs1k", "renamed"),
                                   ("sizes-blob", "renamed-chunk64k")],
                         ids=lambda n: "~".join(n))
def test_uncompressed_layouts_share(erofs_image: Images, source: str, names: tuple[str, str],
                                    mount: Mounter, pagecache: Probe) -> None:
    other = _other_side(pagecache, mount, erofs_image(names[0]), erofs_image(names[1]), source)
    assert other.resident == other.pages, f"{names}: {other}"


@pytest.mark.requires_kernel("page_cache_share", "lz4", "lzma")
@pytest.mark.parametrize("compressed", ["sizes-lz4", "sizes-lzma"])
def test_compressed_and_uncompressed_images_do_not_share(erofs_image: Images, source: str,
                                                         compressed: str, mount: Mounter,
                                                         pagecache: Probe) -> None:
    """Measured on Debian 7.3.4: the same content compressed (any compressor) and stored
    plain is cached twice, although the fingerprints are equal. Recorded as behaviour; a
    kernel that starts sharing here turns this red on purpose."""
    other = _other_side(pagecache, mount, erofs_image(compressed), erofs_image("renamed"),
                        source)
    assert other.resident == 0, f"{compressed} vs renamed: {other}"
