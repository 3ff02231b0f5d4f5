"""One generated example in the guest: both images on every source (loop, file-backed,
virtio), first plain and then sharing one domain, each mount checked against its tree and
the twins' residency against the sharing model.

A phase, in few round trips:
1. mount every image on every source (a refusal whose kernel words say the image needs
   what this kernel lacks is a skip with those words; any other refusal is a finding);
2. look up every path of every mount in a fixed order (that order decides which file of
   a fingerprint group makes the shared inode);
3. read every file of one mount, the reader, through the example's read methods and
   ranges, and at once ask mincore for every file of every other mount: resident exactly
   when the model says it reads from a cache the reader filled, else not at all;
4. check every other mount against its tree (through the first of the read methods: the
   reader, drawn per example, goes through all of them), every file's FIEMAP on every mount
   against the image's bytes (extents.py), and the mount table's ``inode_share`` against
   what is in effect; unmount.
Between examples each phase has a domain of its own, so nothing carries over.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from harness.core.errors import HarnessError
from harness.core.names import SOURCES
from harness.guest.handle import Guest
from harness.guest.mounts import Mount, Mounter
from harness.guest.probe import Residency
from harness.layouts.build import Built, FileFacts, fingerprint_of
from harness.layouts.extents import device_bytes, extent_problems
from harness.layouts.model import FileSide, MountSide, caches, resident_after_reading
from harness.layouts.trees import Tree, expectations

# The words of a refusal for something the kernel lacks. A refusal is a skip only with these
# words *and* a decompressor the image needs that the kernel's config lacks
# (missing_decompressors): a kernel that stops reading what it once read is a finding.
UNSUPPORTED = re.compile(r"unsupported|not supported|isn't supported|unknown feature|"
                         r"compressor.*not available|not enabled|is not compiled",
                         re.IGNORECASE)
BACKING = {"loop": "block", "block": "block", "file": "file"}
PAGE = 4096
PARTIAL_PAGE = "file-backed image ending inside a page"
SUBPAGE_TAIL = "tail-packed file, blocks smaller than a page"
SUBPAGE_CHUNKS = "chunk-based file, chunks smaller than a page"
SUBPAGE_END = "flat file ending inside a page, blocks smaller than a page"
SUBPAGE_TWIN = "its twin is read in blocks smaller than a page"
FLAT_PLAIN, FLAT_INLINE, CHUNK_BASED = 0, 2, 4  # EROFS_INODE_FLAT_*, EROFS_INODE_CHUNK_BASED
IO_SYMPTOM = re.compile(r"Input/output error|errno 5\b|EIO|killed by signal")
# An I/O error as the reader sees it: a read's EIO, or a mapping's SIGBUS.
EIO_SYMPTOM = re.compile(r"Input/output error|errno 5\b|EIO|killed by signal 7 \(SIGBUS\)")
# Whole reads ("N bytes <hash>, want N bytes <hash>") and ranges ("N bytes, not the tree's").
BYTES_SYMPTOM = re.compile(r"\d+ bytes [0-9a-f]+, want \d+ bytes|\d+ bytes, not the tree's")
# A twin that should share the reader's cache and holds less of it: the file-backed mount of
# an image that ends inside a page fails to read the inode's meta block, and its file joins
# no shared inode (reports/fileio-partial-meta-page.yaml).
SHORT_SYMPTOM = re.compile(r"\b0/\d+ pages resident after reading every file of \S+; the model "
                           r"says all")


@dataclass(frozen=True)
class Example:
    """What hypothesis drew: two trees (the second the same, or overlapping), a layout
    for each, the ranges to read of each file, the read methods, which mount reads first,
    and whether the second image's mounts sit in another domain."""
    tree_a: Tree
    layout_a: Any  # harness.layouts.mkfs.Layout
    tree_b: Tree
    layout_b: Any
    cuts_a: dict[str, list[tuple[int, int]]]
    cuts_b: dict[str, list[tuple[int, int]]]
    methods: tuple[str, ...]
    reader: int  # index into the phase's mounts
    other_domain: bool


@dataclass
class ExampleResult:
    problems: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)  # by step, for the bench
    skipped: list[str] = field(default_factory=list)  # mounts the kernel cannot read, why
    counts: dict[str, int] = field(default_factory=dict)
    mounts: int = 0

    @contextmanager
    def timed(self, step: str) -> Iterator[None]:
        started = time.monotonic()
        try:
            yield
        finally:
            self.seconds[step] = self.seconds.get(step, 0.0) + time.monotonic() - started

    def add(self, counts: dict[str, int]) -> None:
        for key, value in counts.items():
            self.counts[key] = self.counts.get(key, 0) + value


def _entries(built: Built, cuts: dict[str, list[tuple[int, int]]]) -> list[dict[str, Any]]:
    """The tree's expectations, plus the fingerprint xattr where mkfs wrote one under a
    name readers can see (the default name is in no xattr namespace, so it never shows)."""
    entries = expectations(built.tree, cuts)
    name = built.layout.fingerprint
    if built.fingerprinted and isinstance(name, str):
        for entry in entries:
            if entry["kind"] == "file" and entry["size"] > 0:
                node = built.tree.node(entry["path"])
                real = node.target if node.kind == "hardlink" else node.path
                entry["xattrs"][name] = fingerprint_of(built.tree, real).hex()
    return entries


def missing_decompressors(built: Built, features: dict[str, bool]) -> list[str]:
    """The decompressors the image's layout uses (-z and -m) that the kernel lacks: the one
    reason a refusal of an image erofs-utils accepts is a skip and not a finding."""
    layout = built.layout
    names = [a.name for a in layout.compress]
    if layout.metadata and ":" in layout.metadata:
        names.append(layout.metadata.split(":", 1)[1])
    needed = {"lz4" if name == "lz4hc" else name for name in names}
    return sorted(name for name in needed if not features.get(name, False))


def _side(mount_name: str, source: str, sharing: bool, domain: str, built: Built
          ) -> MountSide:
    files = []
    for node in built.tree.nodes:
        if node.kind not in ("file", "hardlink"):
            continue
        facts = built.files[node.path]
        real = node.target if node.kind == "hardlink" else node.path
        fingerprint = fingerprint_of(built.tree, real) \
            if built.fingerprinted and facts.size > 0 else None
        files.append(FileSide(node.path, facts.nid, facts.size, facts.compressed, fingerprint))
    # The kernel keeps inode_share on for an image with the feature bit, whatever its files
    # carry; a file shares only with a digest.
    return MountSide(mount_name, BACKING[source], sharing and "ishare_xattrs" in built.features,
                     domain, tuple(files))


def _describe(mount: Mount, built: Built) -> str:
    assert built.image is not None
    files = [built.image.path, *([built.image.blob] if built.image.blob else [])]
    sizes = ", ".join(f"{f.name} {f.stat().st_size} bytes"
                      f"{' (ends inside a page)' if f.stat().st_size % 4096 else ''}"
                      for f in files)
    return (f"{mount.source_kind} -o {mount.result.options or '(none)'}: "
            f"{mount.result.errname} (errno {mount.result.errno}); kernel said: "
            f"{' | '.join(mount.result.kmsg) or 'nothing'}; {sizes}")


def content_digest(built: Built, path: str) -> bytes:
    """The sha256 of a regular file's bytes in the tree (a hard link's: its target's)."""
    node = built.tree.node(path)
    if node.kind == "hardlink":
        node = built.tree.node(node.target)
    return hashlib.sha256(node.data()).digest()


def chunk_size(built: Built) -> int:
    """The chunk size of the image's chunk-based files: --chunksize, else a block (-Ededupe
    stores uncompressed files chunk-based, a block a chunk)."""
    return built.layout.chunksize or built.block_size


def read_in_subpage_extents(built: Built, facts: FileFacts) -> bool:
    """Whether a page of the file holds the end of an extent short of the page's end, in
    an image with blocks smaller than a page: where a shared inode of page-sized blocks
    reads it wrong (reports/ishare-subpage-tail.yaml). A tail-packed file (its last blocks,
    then its inline tail), a chunk-based file of sub-page chunks, and a flat file whose last
    block ends inside a page (past it, the page is EOF)."""
    if built.block_size >= PAGE or facts.size <= 0 or facts.compressed:
        return False
    if facts.layout == FLAT_INLINE:
        return True
    if facts.layout == CHUNK_BASED:
        return chunk_size(built) < PAGE
    end = -(-facts.size // built.block_size) * built.block_size
    return facts.layout == FLAT_PLAIN and end % PAGE != 0


def subpage_readers(images: list[Built]) -> dict[bytes, set[tuple[str, str]]]:
    """For each content, the (image, path)s of fingerprinted files that the sub-page bug
    reads wrong into a shared cache (read_in_subpage_extents)."""
    readers: dict[bytes, set[tuple[str, str]]] = {}
    for b in images:
        if b.fingerprinted:
            for path, f in b.files.items():
                if read_in_subpage_extents(b, f):
                    readers.setdefault(content_digest(b, path), set()).add((b.name, path))
    return readers


def has_subpage_twin(readers: dict[bytes, set[tuple[str, str]]], built: Built, rel: str,
                     other_domain: bool) -> bool:
    """Whether another file that can share ``rel``'s cache (fingerprinted, same content,
    same domain: with ``other_domain`` the two images are in two) is one the sub-page bug
    reads wrong. The file itself does not count: its own reads have tags of their own."""
    if not built.fingerprinted:
        return False
    return any((image, path) != (built.name, rel) and not (other_domain and image != built.name)
               for image, path in readers.get(content_digest(built, rel), ()))


def run_phase(guest: Guest, images: list[Built], example: Example, sharing: bool,
              domain: str, result: ExampleResult) -> None:
    probe = guest.session.probe
    mounter = Mounter(guest)
    cuts = {images[0].name: example.cuts_a, images[-1].name: example.cuts_b}
    phase = "sharing" if sharing else "plain"
    mounted: list[tuple[str, Mount, Built, MountSide]] = []
    partial: set[str] = set()  # file-backed mounts of an image that ends inside a page
    # The contents of files that the sub-page bug reads wrong into a shared cache: a twin
    # of one, in an image of any block size, reads the wrong bytes through that cache.
    subpage = subpage_readers(images) if sharing else {}

    def problem(name: str, text: str, built: Built | None = None, rel: str = "") -> None:
        """A problem line: phase, mount, what; with the facts known bugs turn on, so that
        their signatures can tell them from a new bug: a file-backed image that ends inside
        a page (reports/fileio-partial-meta-page.yaml), a tail-packed file of an image with
        blocks smaller than a page (reports/ishare-subpage-tail.yaml)."""
        if text.startswith("(stopped after"):
            return  # the checker's own note that it stopped listing: the lines before count
        # Only on the symptoms each bug can cause, so that its signature hides no other
        # kind of problem on the same mount or file (a wrong share, a wrong mode, ...).
        io_error = bool(IO_SYMPTOM.search(text))
        wrong_bytes = bool(BYTES_SYMPTOM.search(text))
        notes = [PARTIAL_PAGE] if name in partial and (
            io_error or wrong_bytes or SHORT_SYMPTOM.search(text)) else []
        facts = built.files.get(rel) if built is not None and rel else None
        # A twin read in sub-page blocks made the shared inode: what it reads into the
        # shared cache is wrong, or (chunks, a borrowed real inode) the read fails. So in
        # an image of any block size: seed 1215 on 7.2 met it through a 1 KiB-block file
        # that ends on a page boundary, its twin in 2 KiB chunks (layout-d5117d9024).
        if facts is not None and built is not None and \
                (wrong_bytes or EIO_SYMPTOM.search(text)) and \
                not facts.compressed and rel and \
                has_subpage_twin(subpage, built, rel, example.other_domain):
            notes.append(SUBPAGE_TWIN)
        if facts is not None and built is not None and built.block_size < PAGE:
            if facts.layout == FLAT_INLINE and wrong_bytes:
                notes.append(SUBPAGE_TAIL)
            elif facts.layout == FLAT_PLAIN and wrong_bytes and sharing and \
                    built.fingerprinted and read_in_subpage_extents(built, facts):
                notes.append(SUBPAGE_END)
            # Only a file that joins a shared inode can meet it; 7.2 also fails such a read
            # with EIO (or oopses: the kernel report says, and the killed reader is its
            # aftermath, harness/layouts/search.py).
            elif facts.layout == CHUNK_BASED and chunk_size(built) < PAGE and sharing and \
                    built.fingerprinted and facts.size > 0 and \
                    (wrong_bytes or EIO_SYMPTOM.search(text)):
                notes.append(SUBPAGE_CHUNKS)
        result.problems.append(f"{phase}: {name}: {text}"
                               + "".join(f" [{n}]" for n in notes))

    for built in images:
        assert built.image is not None
        dom = domain + ("x" if example.other_domain and built is images[-1] else "")
        options = f"inode_share,domain_id={dom}" if sharing else ""
        for source in SOURCES:
            name = f"{built.name}-{source}"
            if source == "file" and built.image.path.stat().st_size % PAGE:
                partial.add(name)
            with result.timed(f"mount-{source}"):
                # No settle wait: the example's kernel log is read whole at its end.
                mount = mounter.attempt(built.image, options, source, settle=False)
            result.mounts += 1
            if not mount.result.ok:
                words = " | ".join(mount.result.kmsg)
                lacking = missing_decompressors(built, guest.vm.kernel.features)
                if lacking and UNSUPPORTED.search(words):
                    result.skipped.append(f"{name} ({phase}): needs {', '.join(lacking)}: "
                                          f"{words}")
                else:
                    problem(name, f"the kernel refused the mount of an image erofs-utils "
                                  f"accepts: {_describe(mount, built)}")
                continue
            mounted.append((name, mount, built, _side(name, source, sharing, dom, built)))
    if not mounted:
        return
    reader = mounted[example.reader % len(mounted)]
    paths = {name: [m.path(e["path"]) if e["path"] else m.target
                    for e in _entries(b, cuts[b.name])] for name, m, b, _ in mounted}
    with result.timed("lookup"), probe.batch() as batch:
        looked = batch.lookup([p for name, *_ in mounted for p in paths[name]])
    owner = {p: (name, m) for name, m, *_ in mounted for p in paths[name]}
    for path, error in looked.value.items():
        name, m = owner[path]
        problem(name, f"lookup {path[len(m.target) + 1:] or '/'}: {error}")
    # A file whose lookup failed made no shared inode: the next one of its group did.
    sides = [replace(side, files=tuple(f for f in side.files
                                       if m.path(f.path) not in looked.value))
             for _, m, _, side in mounted]
    expected = resident_after_reading(reader[0], sides)
    others = [(name, m, b) for name, m, b, _ in mounted if name != reader[0]]
    built_of = {name: b for name, _, b, _ in mounted}
    files_of = {name: [n.path for n in b.tree.nodes if n.kind in ("file", "hardlink")]
                for name, _, b, _ in mounted}
    with result.timed("read-first"), probe.batch() as batch:
        # read(2) too, whatever was drawn: SEEK_DATA reads skip holes, and the residency
        # below needs every page of the reader's files filled.
        first = batch.tree_check(reader[1].target, _entries(reader[2], cuts[reader[2].name]),
                                 list(dict.fromkeys([*example.methods, "read"])))
        resident = batch.residencies([m.path(p) for name, m, _ in others
                                      for p in files_of[name]])
    for line in first.value.differences:
        problem(reader[0], line, reader[2], line.split(": ", 1)[0])
    # A file the reader could not read whole filled nothing: its own line says why, and the
    # twins that share its cache are not expected to be resident.
    keys = caches(sides)
    spoiled = {keys.get((reader[0], line.split(": ", 1)[0]))
               for line in first.value.differences if _read_failed(line, example.methods)}
    result.add(first.value.counts)
    for name, m, _ in others:
        for rel in files_of[name]:
            if (name, rel) not in expected:
                continue  # its lookup failed, and that line says so
            got = resident.value[m.path(rel)]
            want = expected[(name, rel)]
            if want and keys[(name, rel)] in spoiled:
                continue
            if isinstance(got, str):
                problem(name, f"{rel}: mincore: {got}", built_of[name], rel)
            elif not _as_expected(got, want):
                problem(name, f"{rel}: {got} after reading every file of {reader[0]}; the "
                              f"model says {'all' if want else 'none'} (it "
                              f"{'shares' if want else 'does not share'} a cache with a file "
                              f"of {reader[0]})", built_of[name], rel)
    with result.timed("check-others"), probe.batch() as batch:
        # One method here: the reader (drawn per example) reads through all of them.
        checks = {name: batch.tree_check(m.target, _entries(b, cuts[b.name]),
                                         list(example.methods[:1])) for name, m, b in others}
        table = batch.erofs_mounts(guest.workdir)
        maps = batch.fiemap([m.path(rel) for name, m, _, _ in mounted for rel in files_of[name]])
    devices = {b.name: device_bytes(b) for b in images if b.image is not None}
    for name, m, b, _ in mounted:
        for rel in files_of[name]:
            for line in extent_problems(b, rel, maps.value[m.path(rel)], devices[b.name]):
                problem(name, line, b, rel)
        result.add({"fiemap": len(files_of[name])})
    for name, pending in checks.items():
        for line in pending.value.differences:
            problem(name, line, built_of[name], line.split(": ", 1)[0])
        result.add(pending.value.counts)
    for name, mount, built, side in mounted:
        shown = "inode_share" in table.value.get(mount.target, [])
        if shown != side.sharing:
            problem(name, f"/proc/mounts shows it {'with' if shown else 'without'} "
                          f"inode_share; in effect: {'yes' if side.sharing else 'no'} (asked: "
                          f"{'yes' if sharing else 'no'}, fingerprints: "
                          f"{'yes' if built.fingerprinted else 'no'})")
    with result.timed("umount"), probe.batch() as batch:
        gone = [batch.umount(m.target, settle=False) for _, m, _, _ in mounted]
    for (name, *_), answer in zip(mounted, gone, strict=True):
        if not answer.value.ok:
            problem(name, f"umount: {answer.value.errname}")
    mounter.mounted.clear()
    # Loop devices detached, virtio disks back to the session's kept disks: the next phase
    # mounts the same images from the same disks instead of hot-plugging new ones.
    with result.timed("cleanup"):
        guest.cleanup()


def _read_failed(line: str, methods: tuple[str, ...]) -> bool:
    """Whether a tree_check line says a read of the file failed or came out wrong (not its
    mode, owner or xattrs): "<path>: <method>[(range)]: ..."."""
    parts = line.split(": ")
    return len(parts) > 2 and parts[1].split("(")[0] in methods


def _as_expected(got: Residency, want: bool) -> bool:
    return got.resident == got.pages if want else got.resident == 0


def check_example(guest: Guest, images: list[Built], example: Example, domain: str,
                  phases: tuple[bool, ...] = (False, True)) -> ExampleResult:
    """The phases of one example (False: plain, True: sharing); the guest's clean-up is the
    caller's."""
    result = ExampleResult()
    try:
        for sharing in phases:
            run_phase(guest, images, example, sharing, domain, result)
    except HarnessError as exc:
        result.problems.append(f"the check broke off: {exc}")
    return result
