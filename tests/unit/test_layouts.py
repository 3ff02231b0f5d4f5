"""The generated-layouts campaign's parts that need no guest: the sharing model, what makes
two failures the same, layouts and trees as report data, and the tree oracle."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.layouts.mkfs import Algorithm, Hint, Layout, all_options, layouts
from harness.layouts.model import FileSide, MountSide, caches, resident_after_reading
from harness.layouts.search import signature
from harness.layouts.trees import Node, Segment, Tree, expectations, trees, write_tree

FP = b"sha256:" + bytes(32)


def side(name: str, backing: str, sharing: bool, domain: str = "d",
         *files: FileSide) -> MountSide:
    return MountSide(name, backing, sharing, domain, files)


def plain(path: str, nid: int = 1, size: int = 8192, fp: bytes | None = FP) -> FileSide:
    return FileSide(path, nid, size, False, fp)


def test_twins_share_only_with_sharing_on_the_same_backing_and_domain() -> None:
    mounts = [side("a-loop", "block", True, "d", plain("f")),
              side("b-block", "block", True, "d", plain("g", 7)),
              side("b-file", "file", True, "d", plain("g", 7)),
              side("c-loop", "block", True, "e", plain("f")),
              side("d-loop", "block", False, "d", plain("f"))]
    got = resident_after_reading("a-loop", mounts)
    assert got == {("b-block", "g"): True, ("b-file", "g"): False, ("c-loop", "f"): False,
                   ("d-loop", "f"): False}


def test_the_first_file_looked_up_decides_the_shared_inode() -> None:
    """A compressed file looked up first makes the shared inode compressed: the plain
    twins after it are refused and keep caches of their own."""
    zipped = FileSide("z", 3, 8192, True, FP)
    mounts = [side("a", "block", True, "d", zipped), side("b", "block", True, "d", plain("p")),
              side("c", "block", True, "d", plain("p"))]
    keys = caches(mounts)
    assert keys[("b", "p")] != keys[("c", "p")]
    assert keys[("a", "z")][0] == "shared"


def test_hard_links_of_one_mount_are_one_cache_and_empty_files_never_share() -> None:
    mounts = [side("a", "block", True, "d", plain("x", 5, fp=None), plain("y", 5, fp=None),
                   plain("e", 6, size=0))]
    keys = caches(mounts)
    assert keys[("a", "x")] == keys[("a", "y")]
    assert keys[("a", "e")][0] == "private"


def test_a_failure_is_known_again_by_its_kind_not_its_paths() -> None:
    one = ["plain: a-file: lookup dir/x: Input/output error (errno 5)"]
    two = ["plain: b-file: lookup other/long-name: Input/output error (errno 5)"]
    assert signature(one) == signature(two)
    wrong = ["sharing: a-loop: f: pread: 10 bytes 0123456789abcdef, want 10 bytes fedcba"]
    assert signature(wrong) == "sharing: <loop>: pread: N bytes <hash>, want N bytes fedcba"
    splat = "kernel report: WARNING: fs/iomap/buffered-io.c:700 at iomap_readahead"
    # A warning fires once per boot: a replay cannot show it again, the bytes can.
    assert signature([splat, *wrong]) == signature(wrong)
    assert signature([splat]).startswith("kernel report")


@settings(max_examples=60, suppress_health_check=list(HealthCheck), deadline=None)
@given(st.data())
def test_layouts_survive_a_report_round_trip(data: st.DataObject) -> None:
    layout = data.draw(layouts(["a/b", "c"]))
    again = Layout.from_dict(layout.as_dict())
    assert again == layout
    assert set(layout.exercised()) <= set(all_options())


def test_a_layout_renders_the_options_mkfs_takes() -> None:
    layout = Layout(block_size=1024, compress=(Algorithm("lzma", 109, 65536), Algorithm("lz4")),
                    pcluster=16384, extended=("fragments", "ztailpacking"), fragments_size=8192,
                    metadata="4096:lz4", hints=(Hint(16384, "c", 1),), tar="i",
                    fingerprint="user.fp", metadata_zone="")
    argv = layout.argv(Path("h"), None)
    assert argv == ["--xattr-inode-digest=user.fp", "-b1024", "-zlzma,level=109,dictsize=65536:lz4",
                    "-C16384", "-Efragments=8192,ztailpacking", "-m4096:lz4", "--MZ",
                    "--compress-hints=h", "--tar=i"]
    with pytest.raises(ValueError, match="unknown layout keys"):
        Layout.from_dict({"block_sise": 1024})


def test_segments_make_the_bytes_they_say() -> None:
    node = Node("f", "file", (Segment("zeros", 3), Segment("repeat", 5, 2), Segment("hole", 2)))
    data = node.data()
    assert len(data) == 10 and data[:3] == bytes(3) and data[-2:] == bytes(2)
    assert Segment("random", 100, 1).data() == Segment("random", 100, 1).data()
    assert Segment("random", 100, 1).data() != Segment("random", 100, 2).data()


@pytest.mark.skipif(os.geteuid() != 0, reason="the tree writer sets owners (root only)")
def test_the_oracle_describes_the_tree_as_written(tmp_path: Path) -> None:
    tree = Tree((Node("", "dir"), Node("d", "dir", mode=0o700),
                 Node("d/f", "file", (Segment("text", 5000, 1),), mode=0o600, uid=7,
                      xattrs=(("user.k", b"v"),)),
                 Node("h", "hardlink", target="d/f"), Node("l", "symlink", target="d/f")))
    write_tree(tree, tmp_path)
    want = {e["path"]: e for e in expectations(tree, {"d/f": [(4095, 2)]})}
    data = (tmp_path / "d/f").read_bytes()
    assert want["d/f"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert want["d/f"]["nlink"] == 2 == os.stat(tmp_path / "h").st_nlink
    assert want["d/f"]["ranges"] == [[4095, 2, hashlib.sha256(data[4095:4097]).hexdigest()]]
    assert want["h"]["mode"] == 0o600 and want["d"]["children"] == ["f"]
    assert want[""]["children"] == ["d", "h", "l"]
    assert os.readlink(tmp_path / "l") == want["l"]["target"]
    assert os.getxattr(tmp_path / "d/f", "user.k") == b"v"


@settings(max_examples=25, suppress_health_check=list(HealthCheck), deadline=None)
@given(trees())
def test_generated_trees_survive_a_report_round_trip(tree: Tree) -> None:
    assert Tree.from_dict(tree.as_dict()) == tree


def test_a_refusal_is_a_skip_only_for_a_decompressor_the_kernel_lacks() -> None:
    from harness.layouts.build import Built
    from harness.layouts.check import missing_decompressors
    tree = Tree((Node("", "dir"),))
    built = Built("a", Layout(compress=(Algorithm("lz4hc"), Algorithm("zstd")),
                              metadata="4096:lzma"), tree)
    assert missing_decompressors(built, {"lz4": True, "zstd": True, "lzma": True}) == []
    assert missing_decompressors(built, {"lz4": True}) == ["lzma", "zstd"]
    assert missing_decompressors(Built("b", Layout(), tree), {}) == []


def test_a_known_oops_hides_its_aftermath_and_renews_the_guest(tmp_path: Path) -> None:
    """After a known bug's oops the example's later problems are its aftermath (the killed
    reader's mount stays busy), and the next example gets a new guest; an unknown problem
    before the oops still counts."""
    from harness.layouts.check import ExampleResult
    from harness.layouts.search import ExampleFailed, Search, SearchBroke

    oops = ("kernel report: kernel oops report: Oops: Oops: 0000 [#1] SMP NOPTI\n"
            "RIP: 0010:iomap_read_folio_iter+0x86/0x410")
    aftermath = ["kernel report: kernel bug report: kernel BUG at fs/super.c:639!",
                 "sharing: a-loop: f: read: killed by signal 9"]
    renewed: list[str] = []
    search = Search(object(), object(), sharing=True, seed=1, seconds=60,  # type: ignore
                    max_examples=10, known=lambda line: "oops" if "iomap_read_folio" in line
                    else None, renew=lambda old, why: renewed.append("new") or object())  # type: ignore
    try:
        search.run_one = lambda example: ExampleResult(problems=[oops, *aftermath])  # type: ignore
        search._test(None)  # type: ignore[arg-type]
        assert renewed == ["new"] and not search.tally.findings and search.smallest is None
        assert search.tally.known == {"oops": 1}
        # Kernel reports come first in an example's problems: a new problem after the oops
        # (another phase's, or another report) still counts.
        new = "plain: a-file: lookup x: Input/output error (errno 5)"
        kasan = "kernel report: kernel kasan report: BUG: KASAN: use-after-free in f"
        search.run_one = lambda example: ExampleResult(  # type: ignore
            problems=[oops, kasan, new, *aftermath])
        with pytest.raises(ExampleFailed):
            search._test(None)  # type: ignore[arg-type]
        assert search.smallest is not None
        assert search.smallest.failure == f"{kasan}\n{new}"
        assert renewed == ["new", "new"]
        # A run that may take no more guests breaks off, saying why, instead of going on
        # in a kernel a known oops left tainted.
        search.renew = lambda old, why: None
        search.run_one = lambda example: ExampleResult(problems=[oops, *aftermath])  # type: ignore
        with pytest.raises(SearchBroke):
            search._test(None)  # type: ignore[arg-type]
        assert search.broke is not None and "new guest" in search.broke
    finally:
        search.close()


def test_generated_pool_images_are_seen_as_the_model_needs_and_drawn_again_alike() -> None:
    """The explorer's view of a generated image: non-empty regular files with the
    fingerprint mkfs writes (sha256 of the bytes), compressed or not as dump.erofs said;
    the same seed draws the same examples; images with sub-page blocks or an extra device
    stay out unless known bugs are let in."""
    from harness.explore.generated import draw_examples, pool_of, why_left_out
    from harness.layouts.build import Built, FileFacts

    tree = Tree((Node("", "dir"), Node("z", "file", (Segment("random", 5000, 1),)),
                 Node("empty", "file"), Node("a", "file", (Segment("zeros", 10, 0),))))
    built = Built("g", Layout(), tree, files={"z": FileFacts(40, 3, 5000),
                                              "empty": FileFacts(41, 0, 0),
                                              "a": FileFacts(42, 2, 10)},
                  features=["ishare_xattrs"])
    view = pool_of(built)
    assert view is not None and [f.path for f in view.files] == ["a", "z"]
    a, z = view.files
    assert (a.layout, z.layout) == ("plain", "compressed")
    assert z.fingerprint == "sha256:" + hashlib.sha256(tree.node("z").data()).hexdigest()
    assert a.sha256 == hashlib.sha256(bytes(10)).hexdigest()
    built.image = object()  # type: ignore[assignment]
    assert why_left_out(built, known_bugs=False) is None
    built.block_size = 1024
    assert "sub-page" in (why_left_out(built, known_bugs=False) or "")
    assert why_left_out(built, known_bugs=True) is None
    assert draw_examples(3, 2) == draw_examples(3, 2)


@pytest.mark.parametrize("block,layout,size,chunk,expected", [
    (512, 0, 1446, None, True),     # flat, its last block ends at 1536: inside a page
    (512, 0, 4000, None, False),    # flat, its last block ends at 4096: the page's end
    (4096, 0, 1446, None, False),   # blocks of a page: one extent a page
    (1024, 2, 6000, None, True),    # tail-packed
    (1024, 4, 8192, None, True),    # chunk-based in chunks of a block
    (1024, 4, 8192, 4096, False),   # chunk-based in chunks of a page
    (512, 3, 5000, None, False),    # compressed: not read through iomap here
    (512, 0, 0, None, False),       # empty: nothing to read
])
def test_files_read_in_sub_page_extents_are_told_by_layout_block_and_end(
        block: int, layout: int, size: int, chunk: int | None, expected: bool) -> None:
    from harness.layouts.build import Built, FileFacts
    from harness.layouts.check import read_in_subpage_extents
    built = Built("a", Layout(block_size=block, chunksize=chunk), Tree(()), block_size=block)
    assert read_in_subpage_extents(built, FileFacts(1, layout, size)) is expected


def test_the_sub_page_and_partial_page_signatures_accept_every_tag_their_bugs_get() -> None:
    """The tags check.py appends and the known_bug signatures of the found reports are two
    halves of one rule: a tag the signature does not name makes a known bug a new find."""
    import re

    import yaml

    from harness.core.paths import PROJECT
    from harness.layouts import check

    def signature_of(report: str) -> re.Pattern[str]:
        path = PROJECT / "reports" / "found" / f"{report}.yaml"
        return re.compile(yaml.safe_load(path.read_text())["known_bug"]["signature"])

    subpage, partial = signature_of("layout-9e2c4b86a2"), signature_of("layout-a72292b711")
    for tag in (check.SUBPAGE_TAIL, check.SUBPAGE_CHUNKS, check.SUBPAGE_END,
                check.SUBPAGE_TWIN):
        assert subpage.search(f"sharing: a-loop: f: read: 1446 bytes 1f, want 1446 bytes e6"
                              f" [{tag}]"), tag
    short = ("sharing: b-file: f: 0/17 pages resident after reading every file of b-loop; "
             "the model says all (it shares a cache with a file of b-loop)")
    assert check.SHORT_SYMPTOM.search(short)
    assert partial.search(f"{short} [{check.PARTIAL_PAGE}]")
    assert not subpage.search("sharing: a-loop: f: read: 1446 bytes 1f, want 1446 bytes e6")


def test_xattrs_of_a_file_with_hard_links_count_as_shared_in_a_metabox_image() -> None:
    """mkfs.erofs -m loses the shared xattrs (reports/erofs-utils.md); it counts an xattr
    once per path, so a file with hard links has its own xattrs shared, and lost: the
    campaign calls that erofs-utils's, not the kernel's (seed 1208 blamed the kernel)."""
    from harness.layouts.build import Built, _shared_xattrs_lost
    xattrs = (("user.0", b"T"), ("user.31_-", b""))
    tree = Tree((Node("", "dir", mode=0o755), Node("a", "file", xattrs=xattrs),
                 Node("b", "hardlink", target="a"), Node("c", "file")))
    built = Built("a", Layout(metadata="1024:lz4hc"), tree, features=["metabox"])
    lost = _shared_xattrs_lost(built)
    assert lost is not None and "user.0" in lost
    alone = Tree((Node("", "dir", mode=0o755), Node("a", "file", xattrs=xattrs)))
    assert _shared_xattrs_lost(Built("a", Layout(metadata="1024"), alone,
                                     features=["metabox"])) is None


def test_a_probe_killed_by_a_known_oops_is_its_aftermath_and_sigbus_is_an_io_error() -> None:
    """make layouts KERNEL=debian:7.2 SEED=72 (2026-12-07): the 7.2 sub-page oops killed the
    probe, which was the reader, and the example's check broke off; and a mapping of a file
    the bug fails to read got SIGBUS, a mapping's EIO. Both are that bug's."""
    from harness.layouts.check import EIO_SYMPTOM
    from harness.layouts.search import AFTERMATH
    assert AFTERMATH.search("the check broke off: the guest probe ended while answering "
                            "['tree_check', 'erofs_mounts']")
    assert not AFTERMATH.search("the check broke off: mount: Invalid argument")
    assert EIO_SYMPTOM.search("sharing: a-loop: 2/f: mmap_shared: the reader was killed by "
                              "signal 7 (SIGBUS)")
    assert not EIO_SYMPTOM.search("sharing: a-loop: 2/f: read: killed by signal 11 (SIGSEGV)")


def test_wrong_bytes_the_kernel_shares_with_erofs_utils_reader_are_mkfs_bugs(
        tmp_path: Path) -> None:
    """mkfs.erofs 1.9.4 -Efragments,ztailpacking writes a file's end wrong, and the kernel
    reads what was written (seed 1209 blamed the kernel). A line is erofs-utils' only where
    fsck.erofs --extract reads that file wrong too, and the same bytes where the line says
    what the kernel read."""
    from harness.layouts.build import Built, _misread
    from harness.layouts.search import mkfs_wrote_it
    tree = Tree((Node("", "dir", mode=0o755), Node("x", "file", (Segment("random", 5, 1),)),
                 Node("y", "file", (Segment("random", 7, 2),))))
    root, out = tmp_path / "tree", tmp_path / "out"
    root.mkdir()
    out.mkdir()
    write_tree(tree, root)
    (out / "x").write_bytes((root / "x").read_bytes())
    (out / "y").write_bytes(b"\0" * 7)
    misread = _misread(tree, root, out)
    wrong = hashlib.sha256(b"\0" * 7).hexdigest()[:16]
    assert misread == {"y": wrong}
    built = [Built("a", Layout(), tree, misread=misread), Built("b", Layout(), tree)]
    right = "0123456789abcdef"
    same = f"plain: a-file: y: mmap_shared: 7 bytes {wrong}, want 7 bytes {right}"
    assert mkfs_wrote_it(same, built) is built[0]
    assert mkfs_wrote_it(f"sharing: b-loop: y: read: 7 bytes {wrong}, want 7 bytes {right}",
                         built) is built[0]  # a twin's cache served a's bytes
    renamed = Tree((Node("", "dir", mode=0o755), Node("z", "file", (Segment("random", 7, 2),))))
    twins = [built[0], Built("b", Layout(), renamed)]
    assert mkfs_wrote_it("sharing: b-file: z: pread(0, 1): 1 bytes, not the tree's",
                         twins) is built[0]  # b's z holds what a's y holds
    assert mkfs_wrote_it(f"sharing: b-file: z: mmap_shared: 7 bytes {wrong}, want 7 bytes "
                         f"{right}", twins) is built[0]
    assert mkfs_wrote_it("plain: a-block: y: pread(0, 4097): 7 bytes, not the tree's",
                         built) is built[0]
    other = f"plain: a-file: y: read: 7 bytes {'f' * 16}, want 7 bytes {right}"
    assert mkfs_wrote_it(other, built) is None  # the kernel read other wrong bytes
    assert mkfs_wrote_it(f"plain: a-file: x: read: 5 bytes {wrong}, want 5 bytes {right}",
                         built) is None  # erofs-utils reads x right
    assert mkfs_wrote_it("plain: a-file: y: mode 0o600, want 0o644", built) is None


def test_a_replay_is_judged_by_its_own_bug_not_by_another_report_of_the_same_fix() -> None:
    """Reports of one bug through different layouts name the same fix: a replay must not
    count another's general signature as 'another bug met on the way', or its every line
    would be filtered out and the replay pass as if the bug were gone."""
    from harness.campaign.found import other_known_finds
    from harness.campaign.runner import FOUND
    from harness.kernel.kernel import Kernel
    from harness.kernel.spec import parse_kernel_spec
    kernel = Kernel(spec=parse_kernel_spec("debian:7.3"), release="7.3.4+deb13-cloud-amd64",
                    vmlinuz=Path("/k"), modules_dir=None)
    others = other_known_finds(kernel, FOUND / "layout-f858ae6ff9.yaml")
    assert "layout-9e2c4b86a2" not in others  # the sub-page bug's general signature
    assert "layout-b80d23d0f9" not in others  # the sub-page bug through another layout
    assert "layout-97ef893dbe" in others  # the partial-page bug: another bug


def test_a_twin_the_sub_page_bug_reads_wrong_tags_only_files_that_can_share_with_it() -> None:
    """Seed 1215 on 7.2: a 1 KiB-block file ending on a page boundary (not itself read in
    sub-page extents) read EIO through sharing because its twin sits in 2 KiB chunks. The
    tag goes to such a file in an image of any block size, and to no file that cannot
    share with the twin: itself, an unfingerprinted one, one in the other domain."""
    from harness.layouts.build import Built, FileFacts
    from harness.layouts.check import has_subpage_twin, subpage_readers
    data = (Segment("random", 8192, 7),)
    a = Built("a", Layout(block_size=1024), Tree((Node("f", "file", data),)),
              features=["ishare_xattrs"], files={"f": FileFacts(1, 0, 8192)}, block_size=1024)
    b = Built("b", Layout(block_size=2048, chunksize=2048), Tree((Node("g", "file", data),)),
              features=["ishare_xattrs"], files={"g": FileFacts(1, 4, 8192)}, block_size=2048)
    readers = subpage_readers([a, b])
    assert has_subpage_twin(readers, a, "f", other_domain=False)
    assert not has_subpage_twin(readers, b, "g", other_domain=False)  # itself only
    assert not has_subpage_twin(readers, a, "f", other_domain=True)   # b in another domain
    plain = Built("a", Layout(block_size=1024), a.tree, files=a.files, block_size=1024)
    assert not has_subpage_twin(readers, plain, "f", other_domain=False)  # no fingerprint
