"""What the suite's tests share: mount sources, option strings, and the pairs of files that
hold the same content in the `sizes` and `renamed` images."""

from __future__ import annotations

import dataclasses
import errno
import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from harness.core.names import SOURCES
from harness.erofs.images import PAGE, BuiltImage, content_bytes
from harness.guest.mounts import Mount, Mounter
from harness.guest.probe import Probe, ReadResult, Residency

SHARE = "inode_share,domain_id=d1"


def errno_name(number: int) -> str:
    """What a test says of a call's errno: its name, or success for 0."""
    return "success" if number == 0 else errno.errorcode.get(number, str(number))

# One kernel bug, met by tests in two files: file-backed mounts of 7.3 read metadata in the
# last, partial page of an image as EIO (reports/fileio-partial-meta-page.yaml). Each test
# adds the parametrizations (params=) where the bug shows.
PARTIAL_META_PAGE_BUG = dict(
    reason="metadata in the last page of a file-backed image that ends inside that page reads "
           "EIO (reports/fileio-partial-meta-page.yaml): 7.3 reads metadata whole folios at a "
           "time and takes the short read at the end of the image file for an error",
    signature=r"failed to read inode meta block|Input/output error|errno 5\b",
    releases=">=7.3", unless_patched="read metadata in the last partial page")
# The sub-page bug's warning (reports/ishare-subpage-tail.yaml): a shared inode of an image
# with blocks smaller than a page runs iomap_readahead out of folios. WARN_ON_ONCE: only the
# first case of a boot to meet it reports it, so tests whose inputs may meet it in passing
# (generated images) carry it not strictly.
SUBPAGE_WARNING_SIGNATURE = (r"WARNING: (?:CPU: \d+ PID: \d+ at )?\S*fs/iomap/buffered-io\.c:\d+ "
                             r"(?:at )?iomap_readahead")
SUBPAGE_WARNING = dict(
    reason="a shared inode reads with the page as its block size, and iomap_readahead warns "
           "(reports/ishare-subpage-tail.yaml)",
    # 7.2 prints "WARNING: CPU: 0 PID: 9 at fs/...c:700 f+0x1", 7.3 "WARNING: fs/...c:700 at f+0x1"
    signature=SUBPAGE_WARNING_SIGNATURE, releases=">=7.0",
    unless_patched="keep the block size of the real inode in its shared inode", strict=False)
# A reader of the shared cache through one mount borrows the real inode of another mount,
# and unmounting that mount finds the inode busy (reports/ishare-unmount-borrowed-inode.yaml).
# A race: a replay may miss it, so its marks are not strict.
BORROWED_INODE_BUG = dict(
    reason="a read through one mount of a domain is served by the real inode of another "
           "mount, which igrab() keeps without its superblock: unmounting that mount finds "
           "it busy (reports/ishare-unmount-borrowed-inode.yaml)",
    signature=r"Busy inodes after unmount of \S+ \(erofs\)",
    releases=">=7.0", unless_patched="read a shared inode through the real inode of its file",
    strict=False)


def found_params(paths: list[Path], *always: pytest.MarkDecorator) -> list[object]:
    """A replay test's parameters: one per found report; one that names a known bug
    (``known_bug:`` reason, signature, releases) is marked so, and fails as expected only
    with that signature; ``always`` are marks every report gets."""
    params: list[object] = []
    for path in paths:
        known = yaml.safe_load(path.read_text()).get("known_bug")
        marks = [pytest.mark.known_bug(**known)] if known else []
        params.append(pytest.param(path, marks=[*marks, *always], id=path.stem))
    return params


OTHER_DOMAIN = "inode_share,domain_id=d2"
# Files of the `sizes` tree worth checking one by one (every size class, sparse, owned).
SIZES_FILES = ["one-byte", "page-minus-1", "page", "page-plus-1", "dir/sixty-four-k",
               "dir/deeper/one-mib", "four-mib", "sparse", "owned"]
BIG = "four-mib"


def join_options(*options: str) -> str:
    """Mount options joined with commas, the empty ones left out."""
    return ",".join(filter(None, options))


def shown_options(pagecache: Probe, m: Mount) -> list[str]:
    """The mount's options as /proc/mounts shows them (the effective ones)."""
    with pagecache.batch() as batch:
        mounts = batch.erofs_mounts(m.target)
    return mounts.value[m.target]


def twin_of(a: BuiltImage, b: BuiltImage, path: str) -> str:
    """The path in image b holding the same content as ``path`` in image a."""
    content = a.file(path)["content"]
    for entry in b.files():
        if entry["content"] == content:
            return str(entry["path"])
    raise LookupError(f"{b.spec.name} has no file with the content of {a.spec.name}:{path}")


def mount_twins(mount: Mounter, a: BuiltImage, b: BuiltImage, source: str,
                options: tuple[str, str] = (SHARE, SHARE),
                path: str = BIG) -> tuple[Mount, Mount, str, str]:
    """Mount a and b; return both mounts, ``path`` in a and its twin in b."""
    ma, mb = mount(a, options[0], source), mount(b, options[1], source)
    return ma, mb, ma.path(path), mb.path(twin_of(a, b, path))


def read_and_look(pagecache: Probe, reader: str, *others: str, method: str = "read"
                  ) -> tuple[ReadResult, Residency, list[Residency]]:
    """Read ``reader`` whole through ``method`` from a cold cache; then how much of it and
    of each of ``others`` is resident. One round trip, with two controls that make a
    verdict about ``others`` mean something:

    - every file starts cold (0 pages resident): nothing left by an earlier test (a mapping
      still held, a leak) can pass for sharing;
    - the read made all of ``reader``'s own pages resident: "nothing resident through the
      other mount" only says "not shared" when the reader did fill its cache.
    """
    paths = (reader, *others)
    with pagecache.batch() as batch:
        cold = [batch.residency(path) for path in paths]
        read = batch.read(reader, method)
        after = [batch.residency(path) for path in paths]
    warm = {path: view.value for path, view in zip(paths, cold, strict=True)
            if view.value.resident}
    assert not warm, f"files were resident before anything read them: {warm}"
    mine = after[0].value
    assert mine.resident == mine.pages, (
        f"reading {reader} whole through {method} left {mine} in its own cache")
    return read.value, mine, [view.value for view in after[1:]]


def wrong_files(pagecache: Probe, image: BuiltImage, root: str) -> list[str]:
    """The files of ``image`` (mounted at ``root``) whose bytes read back wrong, all read in
    one batch; a read that fails raises."""
    files = image.files()
    with pagecache.batch() as batch:
        reads = [batch.read(f"{root}/{f['path']}") for f in files]
    return [f["path"] for f, got in zip(files, reads, strict=True)
            if got.value.sha256 != f["sha256"]]


def read_then_mincore(pagecache: Probe, reader: str, other: str) -> Residency:
    """Read ``reader`` whole (from a cold cache, filling its own), then how much of
    ``other`` is resident."""
    return read_and_look(pagecache, reader, other)[2][0]


def check_resized_forgery_kept_apart(erofs_image: Callable[[str], BuiltImage], mount: Mounter,
                                     pagecache: Probe, source: str, first: str) -> None:
    """`renamed-resized-forgery:x/c` (4095 bytes) claims the fingerprint of `sizes:page`
    (4096 bytes). The kernel must compare sizes: warn "i_size mismatch ... for the same
    fingerprint" and keep the files apart, each reading its own bytes from its own frame."""
    genuine, forged = erofs_image("sizes"), erofs_image("renamed-resized-forgery")
    mg, mf = mount(genuine, SHARE, source), mount(forged, SHARE, source)
    paths = {"genuine": mg.path("page"), "forged": mf.path("x/c")}
    own = {"genuine": genuine.file("page")["sha256"], "forged": forged.file("x/c")["sha256"]}
    second = "forged" if first == "genuine" else "genuine"
    mark = pagecache.kernel_log_mark()
    with pagecache.batch() as batch:
        read1 = batch.read(paths[first])
        resident = batch.residency(paths[second])
        read2 = batch.read(paths[second])
    assert (read1.value.sha256, read2.value.sha256) == (own[first], own[second]), (
        f"a file read the other's bytes: {read1.value} {read2.value}")
    assert resident.value.resident == 0, (
        f"reading the {first} file made the {second} one resident: the size mismatch did "
        f"not keep them apart ({resident.value})")
    frames = pagecache.pfns(paths[first], paths[second])
    assert not set(frames[paths[first]].pfns) & set(frames[paths[second]].pfns) - {0}, (
        f"the two files share a page frame: {frames}")
    # The warning proves the fingerprints were compared: without it the files could merely
    # have been kept apart by sharing not working at all.
    new = pagecache.kernel_log_since(mark)
    assert any("i_size mismatch" in line and "for the same fingerprint" in line
               for line in new.lines), (
        f"no i_size mismatch warning in the kernel log since the reads ({new.missed} records "
        f"overwritten unread): {new.lines}")


@pytest.fixture(params=SOURCES)
def source(request: pytest.FixtureRequest) -> str:
    """Every test that takes it runs on a loop device, a file-backed mount and a virtio disk."""
    return str(request.param)


@pytest.fixture
def pair(erofs_image: Callable[[str], BuiltImage]) -> tuple[BuiltImage, BuiltImage]:
    """Two different images with the same file contents under other names and owners."""
    return erofs_image("sizes"), erofs_image("renamed")


@pytest.fixture(scope="session")
def forged_renamed(erofs_image: Callable[[str], BuiltImage],
                   tmp_path_factory: pytest.TempPathFactory) -> BuiltImage:
    """`renamed` with the data of x/d (one page, the content of `sizes:page`) replaced by other
    bytes and its fingerprint left as it was: same size, same fingerprint, other content."""
    genuine = erofs_image("renamed")
    raw = bytearray(genuine.path.read_bytes())
    want = content_bytes(4, PAGE)
    if raw.count(want) != 1:
        raise LookupError("x/d's data is not stored once, verbatim, in the renamed image")
    at = raw.find(want)
    raw[at:at + PAGE] = content_bytes(999, PAGE)
    path = tmp_path_factory.mktemp("forged") / "renamed-forged.erofs"
    path.write_bytes(bytes(raw))
    manifest = dict(genuine.manifest)
    manifest["forged"] = {"path": "x/d", "sha256": hashlib.sha256(content_bytes(999, PAGE))
                          .hexdigest()}
    return dataclasses.replace(genuine, path=path, key=f"{genuine.key}-forged",
                               manifest=manifest)


@pytest.fixture(scope="session")
def offset_image(erofs_image: Callable[[str], BuiltImage],
                 tmp_path_factory: pytest.TempPathFactory) -> Callable[..., BuiltImage]:
    """A catalog image stored ``offset`` bytes (FSOFFSET unless told) into its file, for the
    fsoffset= mount option."""
    made: dict[tuple[str, int], BuiltImage] = {}

    def make(name: str, offset: int = FSOFFSET) -> BuiltImage:
        if (name, offset) not in made:
            plain = erofs_image(name)
            path = tmp_path_factory.mktemp("offset") / f"{name}-at-{offset}.erofs"
            path.write_bytes(bytes(offset) + plain.path.read_bytes())
            made[name, offset] = dataclasses.replace(plain, path=path,
                                                     key=f"{plain.key}-at-{offset}")
        return made[name, offset]
    return make


@pytest.fixture(scope="session")
def offset_sizes(offset_image: Callable[..., BuiltImage]) -> BuiltImage:
    """`sizes` stored 64 KiB into its file, for the fsoffset= mount option."""
    return offset_image("sizes")


FSOFFSET = 64 << 10



class LeakWatch:
    """kmemleak over one test, on a kernel that has it (the debug tree); elsewhere every
    call is a no-op, and ``watching`` says so."""

    def __init__(self, pagecache: Probe) -> None:
        self.pagecache = pagecache
        self.watching = bool(pagecache.vm.kernel.features.get("kmemleak"))
        if self.watching:
            started = pagecache.kmemleak_clear()
            assert started.running, f"kmemleak is built in but not running: {started.why}"

    def assert_erofs_leaked_nothing(self) -> int:
        """Nothing EROFS allocated since the start is left unreferenced (a scan waits out
        kmemleak's 5 s minimum age: about 10 s). What kmemleak reported in all (-1: it is
        not watching)."""
        if not self.watching:
            return -1
        leaks = self.pagecache.kmemleak_scan()
        assert leaks.running, f"kmemleak stopped during the test: {leaks.why}"
        found = leaks.erofs()
        assert not found, (f"kmemleak: {len(found)} object(s) that EROFS allocated left "
                           f"unreferenced:\n" + "\n\n".join(found[:3]))
        return len(leaks.records)


@pytest.fixture
def leaks(pagecache: Probe) -> LeakWatch:
    """kmemleak cleared now, for the test to ask at its end what EROFS leaked."""
    return LeakWatch(pagecache)
