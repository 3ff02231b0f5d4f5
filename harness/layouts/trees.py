"""Generated trees: what a layout example puts into its images, and what must read back.

A tree is data (``Tree``: nodes with content recipes), so that hypothesis can draw and shrink
it and a report can carry it as YAML. A file's bytes are a list of segments (random, zeros,
a repeated short pattern, text-like words, or a hole left unwritten in the source), so the
generator reaches compressible and incompressible data, zero runs and sparse files, and
sizes at every block and page boundary, without storing megabytes of literal bytes.

``expectations`` is the oracle: for every path, what lstat, readdir, readlink, getxattr and
every read must give through any mount of any image built from the tree.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

PAGE = 4096
MAX_TREE_BYTES = 3 << 20  # per example: keeps an example's images a few MiB
SEGMENT_KINDS = ("random", "zeros", "repeat", "text", "hole")


@dataclass(frozen=True)
class Segment:
    kind: str  # one of SEGMENT_KINDS
    length: int
    seed: int = 0

    def data(self) -> bytes:
        if self.kind in ("zeros", "hole"):
            return bytes(self.length)
        if self.kind == "random":
            return hashlib.shake_256(f"layout-{self.seed}".encode()).digest(self.length)
        if self.kind == "repeat":
            unit = hashlib.sha256(f"unit-{self.seed}".encode()).digest()[: 1 + self.seed % 31]
            return (unit * (self.length // len(unit) + 1))[: self.length]
        if self.kind == "text":
            words = [b"erofs", b"page", b"cache", b"share", b"inode", b"domain", b"block",
                     b"folio", b"mount", b"extent", b"cluster", b"\n"]
            digest = hashlib.shake_256(f"text-{self.seed}".encode()).digest(self.length // 4 + 8)
            out = bytearray()
            for byte in digest:
                out += words[byte % len(words)] + b" "
                if len(out) >= self.length:
                    break
            return bytes(out[: self.length]).ljust(self.length, b" ")
        raise ValueError(f"unknown segment kind {self.kind!r}")


@dataclass(frozen=True)
class Node:
    path: str
    kind: str  # "file", "dir", "symlink", "hardlink"
    segments: tuple[Segment, ...] = ()
    target: str = ""  # symlink: its text; hardlink: the path of the file it links to
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    xattrs: tuple[tuple[str, bytes], ...] = ()

    @property
    def size(self) -> int:
        return sum(s.length for s in self.segments)

    def data(self) -> bytes:
        return b"".join(s.data() for s in self.segments)


@dataclass(frozen=True)
class Tree:
    nodes: tuple[Node, ...]
    _by_path: dict[str, Node] = field(default_factory=dict, compare=False, repr=False)

    def node(self, path: str) -> Node:
        if not self._by_path:
            self._by_path.update({n.path: n for n in self.nodes})
        return self._by_path[path]

    def files(self) -> list[Node]:
        return [n for n in self.nodes if n.kind == "file"]

    def total_bytes(self) -> int:
        return sum(n.size for n in self.files())

    def as_dict(self) -> list[dict[str, Any]]:
        """YAML-ready: what a report carries so that the tree can be made again."""
        out = []
        for n in self.nodes:
            entry: dict[str, Any] = {"path": n.path, "kind": n.kind, "mode": oct(n.mode),
                                     "uid": n.uid, "gid": n.gid}
            if n.segments:
                entry["segments"] = [[s.kind, s.length, s.seed] for s in n.segments]
            if n.target:
                entry["target"] = n.target
            if n.xattrs:
                entry["xattrs"] = {k: v.hex() for k, v in n.xattrs}
            out.append(entry)
        return out

    @classmethod
    def from_dict(cls, raw: list[dict[str, Any]]) -> Tree:
        return cls(tuple(Node(
            path=str(e["path"]), kind=str(e["kind"]),
            segments=tuple(Segment(str(k), int(n), int(s)) for k, n, s in e.get("segments", [])),
            target=str(e.get("target", "")), mode=int(str(e.get("mode", "0o644")), 0),
            uid=int(e.get("uid", 0)), gid=int(e.get("gid", 0)),
            xattrs=tuple((str(k), bytes.fromhex(v)) for k, v in (e.get("xattrs") or {}).items()))
            for e in raw))


# ---- writing a tree on the host (never mounting anything) --------------------------------

def _write_file(path: Path, node: Node) -> None:
    with path.open("wb") as fh:
        position = 0
        for segment in node.segments:
            if segment.kind != "hole":
                fh.seek(position)
                fh.write(segment.data())
            position += segment.length
        fh.truncate(position)  # a trailing hole stays a hole


def write_tree(tree: Tree, root: Path) -> None:
    """Make the tree under ``root`` (which exists); directories are listed before what they
    hold, links after what they point at."""
    for node in tree.nodes:
        target = root / node.path if node.path else root
        if node.kind == "dir":
            target.mkdir(exist_ok=True)
        elif node.kind == "file":
            _write_file(target, node)
        elif node.kind == "symlink":
            os.symlink(node.target, target)
            continue
        elif node.kind == "hardlink":
            os.link(root / node.target, target)
            continue
        for name, value in node.xattrs:
            os.setxattr(target, name, value)
        os.chown(target, node.uid, node.gid)
        os.chmod(target, node.mode)


def write_tar(tree: Tree, root: Path, out: Path) -> None:
    """A tar of the tree written at ``root``, with xattrs as PAX SCHILY.xattr records (which
    mkfs.erofs --tar reads) and hard links as links."""
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as archive:
        for node in tree.nodes:
            # The root goes in as "." (mkfs.erofs then takes its owner and mode; without
            # it the root of a tar image is 0777 root:root).
            info = archive.gettarinfo(str(root / node.path) if node.path else str(root),
                                      arcname=node.path or ".")
            # Values that are not UTF-8 go as raw bytes (tarfile's hdrcharset=BINARY).
            info.pax_headers = {**info.pax_headers, **{
                f"SCHILY.xattr.{name}": value.decode("utf-8", "surrogateescape")
                for name, value in node.xattrs}}
            if info.isreg():
                with (root / node.path).open("rb") as fh:
                    archive.addfile(info, fh)
            else:
                archive.addfile(info)


# ---- the oracle -------------------------------------------------------------------------

def _ranges(data: bytes, cuts: list[tuple[int, int]]) -> list[list[Any]]:
    return [[offset, length, hashlib.sha256(data[offset:offset + length]).hexdigest()]
            for offset, length in cuts]


def expectations(tree: Tree, cuts: dict[str, list[tuple[int, int]]],
                 xattrs: bool = True) -> list[dict[str, Any]]:
    """What every entry must look like through a mount, in the tree's order (the root
    first). ``cuts``: (offset, length) ranges to read of each file with pread. ``xattrs``
    False: the image was built without xattrs (mkfs -x-1), so none may show."""
    links: dict[str, int] = {}
    for node in tree.nodes:
        if node.kind in ("file", "hardlink"):
            first = node.target if node.kind == "hardlink" else node.path
            links[first] = links.get(first, 0) + 1
    children: dict[str, list[str]] = {}
    for node in tree.nodes:
        if node.path:
            parent, _, name = node.path.rpartition("/")
            children.setdefault(parent, []).append(name)
    out = []
    for node in tree.nodes:
        real = tree.node(node.target) if node.kind == "hardlink" else node
        kind = {"hardlink": "file"}.get(node.kind, node.kind)
        entry: dict[str, Any] = {"path": node.path, "kind": kind}
        if kind != "symlink":
            entry.update(mode=real.mode, uid=real.uid, gid=real.gid)
            entry["xattrs"] = {k: v.hex() for k, v in real.xattrs} if xattrs else {}
        if kind == "dir":
            entry["children"] = sorted(children.get(node.path, []))
        elif kind == "symlink":
            entry["target"] = node.target
        else:
            data = real.data()
            entry.update(size=len(data), sha256=hashlib.sha256(data).hexdigest(),
                         nlink=links[real.path],
                         ranges=_ranges(data, cuts.get(real.path, [])))
        out.append(entry)
    return out


# ---- hypothesis strategies --------------------------------------------------------------

NAME_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789._-"
# Sizes cluster where layouts change: 0, 1, each block size and the page size +-1, their
# multiples, and a few larger ones up to several MiB.
BOUNDARIES = sorted({b + d for b in (512, 1024, 2048, 4096, 8192, 16384, 65536, 131072)
                     for d in (-1, 0, 1)} | {0, 1, 2, 100, 3 * 4096 + 7, 1 << 20, (1 << 20) + 1})


def names() -> st.SearchStrategy[str]:
    short = st.text(NAME_CHARS, min_size=1, max_size=12)
    long = st.integers(100, 255).map(lambda n: ("long-" + "n" * 255)[:n])
    return st.one_of(short, short, short, long).filter(lambda n: n not in (".", ".."))


def sizes() -> st.SearchStrategy[int]:
    boundary = st.sampled_from(BOUNDARIES)
    multiple = st.builds(lambda k, d: max(0, k * 4096 + d), st.integers(1, 64),
                         st.sampled_from((-1, 0, 1)))
    anything = st.integers(0, 3 << 20)
    return st.one_of(boundary, boundary, boundary, multiple, multiple, anything)


@st.composite
def contents(draw: st.DrawFn, size: int) -> tuple[Segment, ...]:
    """``size`` bytes as 1-4 segments of generated kinds."""
    if size == 0:
        return ()
    count = draw(st.integers(1, min(4, size)))
    cuts = sorted(draw(st.lists(st.integers(1, size - 1), min_size=count - 1,
                                max_size=count - 1, unique=True))) if count > 1 else []
    bounds = [0, *cuts, size]
    return tuple(Segment(draw(st.sampled_from(SEGMENT_KINDS)), bounds[i + 1] - bounds[i],
                         draw(st.integers(0, 50))) for i in range(len(bounds) - 1))


def xattr_lists() -> st.SearchStrategy[tuple[tuple[str, bytes], ...]]:
    name = st.one_of(st.text(NAME_CHARS, min_size=1, max_size=8).map(lambda n: f"user.{n}"),
                     st.integers(20, 200).map(lambda n: "user." + "x" * n),
                     st.text(NAME_CHARS, min_size=1, max_size=8)
                     .map(lambda n: f"trusted.overlay.{n}"))
    value = st.one_of(st.binary(max_size=16), st.binary(min_size=100, max_size=1000))
    return st.lists(st.tuples(name, value), max_size=3,
                    unique_by=lambda kv: kv[0]).map(tuple)


MODES = (0o644, 0o600, 0o755, 0o444, 0o4755, 0o2711, 0o000, 0o777)
IDS = (0, 0, 1, 1000, 65534, 65535, 65536, 4_000_000_000)


@st.composite
def trees(draw: st.DrawFn) -> Tree:
    """A tree: directories deep and wide, files of generated sizes and contents (some of
    them duplicates of others), holes, hard links, symlinks, xattrs, owners and modes."""
    dirs = [""]
    for _ in range(draw(st.integers(0, 6))):
        parent = draw(st.sampled_from(dirs))
        name = draw(names())
        path = f"{parent}/{name}" if parent else name
        if path not in dirs and len(path) < 1000:
            dirs.append(path)
    taken = set(dirs)
    nodes: list[Node] = [Node("", "dir", mode=0o755)]
    for path in dirs[1:]:
        nodes.append(Node(path, "dir", mode=draw(st.sampled_from((0o755, 0o700, 0o1777))),
                          uid=draw(st.sampled_from(IDS)), gid=draw(st.sampled_from(IDS)),
                          xattrs=draw(xattr_lists())))

    def fresh(parent: str) -> str | None:
        name = draw(names())
        path = f"{parent}/{name}" if parent else name
        if path in taken or len(path) > 2000:
            return None
        taken.add(path)
        return path

    files: list[Node] = []
    budget = MAX_TREE_BYTES
    for _ in range(draw(st.integers(1, 10))):
        new = fresh(draw(st.sampled_from(dirs)))
        if new is None:
            continue
        if files and draw(st.integers(0, 4)) == 0:
            segments = draw(st.sampled_from(files)).segments  # a duplicate of another file
        else:
            segments = draw(contents(min(draw(sizes()), max(budget, 0))))
        if sum(s.length for s in segments) > budget:
            segments = ()
        budget -= sum(s.length for s in segments)
        files.append(Node(new, "file", segments, mode=draw(st.sampled_from(MODES)),
                          uid=draw(st.sampled_from(IDS)), gid=draw(st.sampled_from(IDS)),
                          xattrs=draw(xattr_lists())))
    # A wide directory: many small entries, so directory blocks split and readdir pages.
    wide = draw(st.sampled_from((0, 0, 0, 40, 300)))
    if wide:
        parent = draw(st.sampled_from(dirs))
        for index in range(wide):
            path = f"{parent}/w{index:04d}" if parent else f"w{index:04d}"
            if path not in taken:
                taken.add(path)
                files.append(Node(path, "file", (Segment("text", index % 9, index),)
                                  if index % 9 else ()))
    nodes += files
    regular = [f for f in files if f.size > 0] or files
    for _ in range(draw(st.integers(0, 2))):
        if not regular:
            break
        new = fresh(draw(st.sampled_from(dirs)))
        if new is not None:
            nodes.append(Node(new, "hardlink", target=draw(st.sampled_from(regular)).path))
    for _ in range(draw(st.integers(0, 3))):
        new = fresh(draw(st.sampled_from(dirs)))
        if new is not None:
            text = draw(st.one_of(st.sampled_from([n.path for n in nodes if n.path] or ["x"]),
                                  st.integers(1, 3000).map(lambda n: "t" * n)))
            nodes.append(Node(new, "symlink", target=text))
    return Tree(tuple(nodes))


@st.composite
def cuts(draw: st.DrawFn, tree: Tree) -> dict[str, list[tuple[int, int]]]:
    """pread ranges of each file: around block and page boundaries, and anywhere."""
    out: dict[str, list[tuple[int, int]]] = {}
    for node in tree.files():
        if node.size == 0:
            continue
        ranges = []
        for _ in range(draw(st.integers(0, 3))):
            offset = draw(st.one_of(
                st.integers(0, node.size),
                st.sampled_from([b + d for b in (512, 1024, 2048, 4096, 8192, 65536)
                                 for d in (-1, 0, 1) if 0 <= b + d <= node.size])
                if node.size > 512 else st.just(0)))
            ranges.append((offset, draw(st.sampled_from((1, 511, 4096, 4097, 70000)))))
        if ranges:
            out[node.path] = ranges
    return out


@st.composite
def variants(draw: st.DrawFn, tree: Tree) -> Tree:
    """The same tree, or one that overlaps it: some files with other contents or gone."""
    files = tree.files()
    if not files or draw(st.booleans()):
        return tree
    changed = set(draw(st.lists(st.sampled_from([f.path for f in files]), max_size=3)))
    linked = {n.target for n in tree.nodes if n.kind == "hardlink"}
    nodes = []
    for node in tree.nodes:
        if node.path in changed and node.kind == "file":
            if node.path not in linked and draw(st.booleans()):
                continue  # gone from the variant
            node = Node(node.path, "file", tuple(Segment(s.kind, s.length, s.seed + 1000)
                                                 for s in node.segments),
                        node.target, node.mode, node.uid, node.gid, node.xattrs)
        nodes.append(node)
    return Tree(tuple(nodes))
