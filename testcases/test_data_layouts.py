"""Every mkfs variant on every mount source: all files read back byte for byte, and the
fingerprinted variants share with a differently built image of the same contents."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable

import pytest

from conftest import (
    BIG,
    PARTIAL_META_PAGE_BUG,
    SHARE,
    SUBPAGE_WARNING_SIGNATURE,
    mount_twins,
    read_and_look,
    read_then_mincore,
    twin_of,
    wrong_files,
)
from harness.erofs.images import BuiltImage
from harness.erofs.tools import ErofsUtils
from harness.guest.mounts import Mounter
from harness.guest.probe import Probe, Residency

Images = Callable[[str], BuiltImage]
VARIANTS = ["", "-nofp", "-customfp", "-lz4", "-lz4hc", "-lzma", "-deflate", "-zstd",
            "-lz4hc-packed", "-lz4-legacy", "-bs1k-lz4hc-packed", "-chunk64k", "-blob", "-bs1k",
            "-tar"]
NEEDS = {"-lz4": "lz4", "-lz4hc": "lz4", "-lz4hc-packed": "lz4", "-lz4-legacy": "lz4",
         "-bs1k-lz4hc-packed": "lz4", "-lzma": "lzma", "-deflate": "deflate", "-zstd": "zstd"}


def _needs(variant: str, kernel_features: dict[str, bool]) -> None:
    feature = NEEDS.get(variant)
    if feature and not kernel_features.get(feature):
        pytest.skip(f"kernel lacks the {feature} decompressor for sizes{variant}")


def _check_all_files(image: BuiltImage, root: str, pagecache: Probe) -> None:
    wrong = wrong_files(pagecache, image, root)
    assert not wrong, f"{image.spec.name}: wrong bytes in {wrong}"


@pytest.mark.requires_kernel("erofs")
# mkfs ends this image inside a page (1 KiB blocks), its packed tails last.
@pytest.mark.known_bug(**PARTIAL_META_PAGE_BUG, params=["file-*-sizes-bs1k-lz4hc-packed"])
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


# Found by make layouts (reports/ishare-subpage-tail.yaml): a shared inode keeps the ishare
# pseudo filesystem's block size (a page), so iomap keeps no per-block state for a page
# that holds both mapped blocks and tail-packed data of an image with smaller blocks, and
# puts the tail into the next page.
SUBPAGE_TAIL_BUG = dict(
    reason="a shared inode reads with the page as its block size: the tail-packed data of an "
           "image with smaller blocks lands in the wrong page (reports/ishare-subpage-tail.yaml)",
    signature=r"wrong bytes in \[|" + SUBPAGE_WARNING_SIGNATURE,
    releases=">=7.0",
    unless_patched="keep the block size of the real inode in its shared inode",
    params=["loop-sharing-*", "block-sharing-*"])
# The same cause through chunk-based files in chunks of one block (make layouts, 7.2.13,
# seed 72): on 7.2 readahead of a file whose pages hold null chunks (holes) beside mapped
# ones leaves a page unread, and the read that follows gets EIO, or goes through
# ->read_folio, where iomap goes on with the folio it already handed off: a NULL pointer
# dereference in iomap_read_folio_iter, the reader killed.
SUBPAGE_CHUNKS_BUG = dict(
    SUBPAGE_TAIL_BUG, releases=">=7.3",
    reason="a shared inode reads with the page as its block size: a page of an image with "
           "smaller blocks that holds several mappings (chunks of one block) reads wrong "
           "(reports/ishare-subpage-tail.yaml)")
SUBPAGE_CHUNKS_BUG_7_2 = dict(
    SUBPAGE_TAIL_BUG, releases="<7.3",
    reason="a shared inode reads with the page as its block size: on 7.2 a chunk-based file "
           "with holes inside its pages reads EIO or oopses in iomap_read_folio_iter "
           "(reports/ishare-subpage-tail.yaml)",
    signature=SUBPAGE_TAIL_BUG["signature"] + r"|reads failed: .*Input/output error"
    r"|Oops: [\s\S]*?RIP: 0010:iomap_read_folio_iter[\s\S]*?erofs_ishare_file_read_iter")
TAILS = ["five-thousand", "six-thousand", "ten-k-plus-1", "big-tail", "page-aligned-tail",
         "holes-inside-pages"]


@pytest.mark.requires_kernel("erofs")
@pytest.mark.known_bug(**SUBPAGE_TAIL_BUG)
@pytest.mark.known_bug(**PARTIAL_META_PAGE_BUG, params=["file-*"])
@pytest.mark.parametrize("block_size", [512, 1024, 2048])
@pytest.mark.parametrize("options", ["", SHARE], ids=["plain", "sharing"])
def test_tail_packed_files_of_sub_page_blocks_read_back_exactly(
        erofs_image: Images, erofs_tools: ErofsUtils, source: str, options: str,
        block_size: int, mount: Mounter, pagecache: Probe) -> None:
    # The precondition that lets this fail: mkfs tail-packed every file (FLAT_INLINE), so
    # the last page of each holds mapped blocks and inline data at once.
    _sub_page_files_read_back_exactly(erofs_image(f"tails-bs{block_size}"), FLAT_INLINE,
                                      erofs_tools, options, source, mount, pagecache)


@pytest.mark.requires_kernel("erofs")
@pytest.mark.known_bug(**SUBPAGE_CHUNKS_BUG)
@pytest.mark.known_bug(**SUBPAGE_CHUNKS_BUG_7_2)
@pytest.mark.parametrize("block_size", [512, 1024, 2048])
@pytest.mark.parametrize("options", ["", SHARE], ids=["plain", "sharing"])
def test_chunk_based_files_of_sub_page_chunks_read_back_exactly(
        erofs_image: Images, erofs_tools: ErofsUtils, source: str, options: str,
        block_size: int, mount: Mounter, pagecache: Probe) -> None:
    """The same bug through another layout (make layouts, 7.2.13, seed 72): chunk-based
    files in chunks of one block, so that every page holds a mapping per block, and null
    chunks (holes) inside pages: wrong bytes through sharing on 7.3.4, an Oops on 7.2.13."""
    _sub_page_files_read_back_exactly(erofs_image(f"chunks-bs{block_size}"), CHUNK_BASED,
                                      erofs_tools, options, source, mount, pagecache)


FLAT_INLINE, CHUNK_BASED = 2, 4  # EROFS_INODE_FLAT_INLINE, EROFS_INODE_CHUNK_BASED


def _sub_page_files_read_back_exactly(image: BuiltImage, layout: int, erofs_tools: ErofsUtils,
                                      options: str, source: str, mount: Mounter,
                                      pagecache: Probe) -> None:
    kernel = pagecache.vm.kernel
    if options and not kernel.features["page_cache_share"]:
        pytest.skip(f"kernel {kernel.release} lacks page_cache_share")
    assert tools_layouts(image, erofs_tools, TAILS) == {path: layout for path in TAILS}
    m = mount(image, options, source)
    wrong: list[str] = []
    # read(2) first: a read error is an errno here, where through a mapping it would be a
    # SIGBUS; the mapping (the fault path's readahead) only once the reads went through.
    for method in ("read", "mmap_shared"):
        with pagecache.batch() as batch:
            reads = [(path, batch.read(m.path(path), method, may_fail=True)) for path in TAILS]
        errors = [f"{path} ({method}): {got.error}" for path, got in reads if got.failed]
        assert not errors, f"{image.spec.name}: reads failed: {errors}"
        wrong += [f"{path} ({method})" for path, got in reads
                  if got.value.sha256 != image.file(path)["sha256"]]
    assert not wrong, f"{image.spec.name}: wrong bytes in {wrong}"


def tools_layouts(image: BuiltImage, tools: ErofsUtils, paths: list[str]) -> dict[str, int]:
    """Each file's on-disk data layout as dump.erofs reports it."""
    assert tools.dump is not None, "dump.erofs is needed to check the images' layouts"
    found = {}
    for path in paths:
        out = subprocess.run([str(tools.dump), f"--path=/{path}", str(image.path)],
                             capture_output=True, text=True, check=True).stdout
        match = re.search(r"Layout:\s*(\d+)", out)
        assert match, f"dump.erofs --path=/{path}: {out}"
        found[path] = int(match.group(1))
    return found
