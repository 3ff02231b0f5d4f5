"""Generated mkfs.erofs commands: every option of the pinned erofs-utils that changes the
on-disk layout, as data hypothesis draws and shrinks (``Layout``), rendered to argv.

What is left out, and why: options that change what the tree *is* rather than how it is laid
out (``--all-root``, ``--force-uid/gid``, ``--uid/gid-offset``, ``--exclude-*``, ``-x-1``,
which drops xattrs), options about the input stream (``--ungzip``, ``--unxz``,
``--aufs``, ``--ovlfs-strip``, ``--sort``, ``--tar=headerball``), incremental builds,
``--offset`` (an image not at byte 0 needs a partition), and ``--vmdk-desc``/``--gzinfo``
(side files the kernel never reads).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

BLOCK_SIZES = (512, 1024, 2048, 4096)  # mkfs refuses > the host's page size (4 KiB)
# Each algorithm with its level range and whether it takes a dictionary size (with its max).
ALGORITHMS: dict[str, tuple[tuple[int, ...], int | None]] = {
    "lz4": ((), None),
    "lz4hc": (tuple(range(0, 13)), None),
    "lzma": (tuple(range(0, 10)) + tuple(range(100, 110)), 8 << 20),
    "deflate": (tuple(range(0, 10)), 32768),
    "zstd": (tuple(range(0, 23)), 1 << 20),
}
EXTENDED = ("ztailpacking", "fragments", "all-fragments", "dedupe", "noinline_data",
            "force-inode-compact", "force-inode-extended", "force-inode-blockmap",
            "force-chunk-indexes", "legacy-compress", "48bit", "dot-omitted",
            "plain-xattr-prefixes", "xattr-name-filter", "nosbcrc")
METADATA_ZONE = ("", "i", "id", "0")
FINGERPRINT_NAMES = ("user.fingerprint-layouts", "trusted.layouts.fingerprint", "security.fp.v2")
XATTR_PREFIXES = ("trusted.overlay.", "user." + "x" * 40, "trusted.overlay.metacopy")


@dataclass(frozen=True)
class Algorithm:
    name: str
    level: int | None = None
    dictsize: int | None = None

    def render(self) -> str:
        parts = [self.name]
        if self.level is not None:
            parts.append(f"level={self.level}")
        if self.dictsize is not None:
            parts.append(f"dictsize={self.dictsize}")
        return ",".join(parts)


@dataclass(frozen=True)
class Hint:
    """A --compress-hints line: files matching ``pattern`` use ``pcluster`` byte clusters
    (and the ``algorithm``-th alternative of -z, when given)."""
    pcluster: int
    pattern: str
    algorithm: int | None = None

    def line(self) -> str:
        return " ".join(str(p) for p in (self.pcluster, self.pattern, self.algorithm)
                        if p is not None)


@dataclass(frozen=True)
class Layout:
    block_size: int | None = None
    compress: tuple[Algorithm, ...] = ()  # alternatives, -za:b
    pcluster: int | None = None  # -C
    extended: tuple[str, ...] = ()  # -E
    fragments_size: int | None = None  # -Efragments=<size>
    metadata: str | None = None  # -m<pcluster>[:algorithm]
    dir_compress: bool = False  # --zD=1
    metadata_zone: str | None = None  # --MZ[=...]
    chunksize: int | None = None
    blobdev: bool = False
    dsunit: int | None = None
    max_extent: int | None = None
    hints: tuple[Hint, ...] = ()
    tar: str | None = None  # "f" full, "i" index (the tar is then the image's extra device)
    fingerprint: str | bool = True  # False: none; True: the default name; else that name
    xattr_prefixes: tuple[str, ...] = ()
    xattr_tolerance: int | None = None  # -x
    label: str | None = None  # -L

    @property
    def compressed(self) -> bool:
        return bool(self.compress)

    def argv(self, hints_file: Path | None, blob: Path | None) -> list[str]:
        """The options (without -T/-U, output and source), in a fixed order."""
        args = [f"--xattr-prefix={p}" for p in self.xattr_prefixes]
        if self.fingerprint is True:
            args.append("--xattr-inode-digest")
        elif self.fingerprint:
            args.append(f"--xattr-inode-digest={self.fingerprint}")
        if self.block_size:
            args.append(f"-b{self.block_size}")
        if self.compress:
            args.append("-z" + ":".join(a.render() for a in self.compress))
        if self.pcluster:
            args.append(f"-C{self.pcluster}")
        ext = [e if e != "fragments" or self.fragments_size is None
               else f"fragments={self.fragments_size}" for e in self.extended]
        if ext:
            args.append("-E" + ",".join(ext))
        if self.metadata:
            args.append(f"-m{self.metadata}")
        if self.dir_compress:
            args.append("--zD=1")
        if self.metadata_zone is not None:
            args.append("--MZ" + (f"={self.metadata_zone}" if self.metadata_zone else ""))
        if self.chunksize:
            args.append(f"--chunksize={self.chunksize}")
        if self.blobdev and blob is not None:
            args.append(f"--blobdev={blob}")
        if self.dsunit:
            args.append(f"--dsunit={self.dsunit}")
        if self.max_extent:
            args.append(f"--max-extent-bytes={self.max_extent}")
        if self.hints and hints_file is not None:
            args.append(f"--compress-hints={hints_file}")
        if self.tar:
            args.append(f"--tar={self.tar}")
        if self.xattr_tolerance is not None:
            args.append(f"-x{self.xattr_tolerance}")
        if self.label is not None:
            args += ["-L", self.label]
        return args

    def exercised(self) -> list[str]:
        """The option names this layout uses, for the campaign's option table: every
        option (and value class) should appear there after a run."""
        used = [f"-b{self.block_size or 4096}"]
        used += [f"-z{a.name}" for a in self.compress]
        used += [f"-z{a.name},level" for a in self.compress if a.level is not None]
        used += [f"-z{a.name},dictsize" for a in self.compress if a.dictsize is not None]
        if len(self.compress) > 1:
            used.append("-z<a>:<b>")
        used += [f"-E{e}" for e in self.extended]
        if self.fragments_size is not None:
            used.append("-Efragments=<size>")
        flags = {"-C": self.pcluster, "-m": self.metadata, "--zD": self.dir_compress,
                 "--chunksize": self.chunksize, "--blobdev": self.blobdev,
                 "--dsunit": self.dsunit, "--max-extent-bytes": self.max_extent,
                 "--compress-hints": self.hints, "-x": self.xattr_tolerance is not None,
                 "-L": self.label is not None, "--xattr-prefix": self.xattr_prefixes}
        used += [name for name, value in flags.items() if value]
        if self.metadata_zone is not None:
            used.append(f"--MZ={self.metadata_zone or '(default)'}")
        if self.tar:
            used.append(f"--tar={self.tar}")
        used.append("--xattr-inode-digest" if self.fingerprint is True else
                    "--xattr-inode-digest=<name>" if self.fingerprint else "no fingerprints")
        return used

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in self.__dict__.items():
            empty = value is None or value is False or value == ()
            if empty and key != "fingerprint":
                continue
            if key == "compress":
                value = [a.render() for a in value]
            elif key == "hints":
                value = [h.line() for h in value]
            elif isinstance(value, tuple):
                value = list(value)
            out[key] = value
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Layout:
        values = dict(raw)
        if "compress" in values:
            algos = []
            for text in values["compress"]:
                name, *opts = str(text).split(",")
                kv = dict(o.split("=", 1) for o in opts)
                algos.append(Algorithm(name, int(kv["level"]) if "level" in kv else None,
                                       int(kv["dictsize"]) if "dictsize" in kv else None))
            values["compress"] = tuple(algos)
        if "hints" in values:
            hints = []
            for line in values["hints"]:
                parts = str(line).split()
                hints.append(Hint(int(parts[0]), parts[1],
                                  int(parts[2]) if len(parts) > 2 else None))
            values["hints"] = tuple(hints)
        for key in ("extended", "xattr_prefixes"):
            if key in values:
                values[key] = tuple(values[key])
        known = set(cls.__dataclass_fields__)
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown layout keys {sorted(unknown)} (known: {sorted(known)})")
        return cls(**values)


# ---- hypothesis strategies --------------------------------------------------------------

@st.composite
def algorithms(draw: st.DrawFn) -> Algorithm:
    name = draw(st.sampled_from(sorted(ALGORITHMS)))
    levels, dict_max = ALGORITHMS[name]
    level = draw(st.one_of(st.none(), st.sampled_from(levels))) if levels else None
    dictsize = None
    if dict_max is not None and draw(st.integers(0, 3)) == 0:
        dictsize = draw(st.sampled_from([1 << k for k in range(12, dict_max.bit_length())]))
    return Algorithm(name, level, dictsize)


def _power_of_two(low: int, high: int) -> st.SearchStrategy[int]:
    return st.sampled_from([1 << k for k in range(low.bit_length() - 1, high.bit_length())])


@st.composite
def layouts(draw: st.DrawFn, tree_paths: list[str]) -> Layout:
    """A mkfs.erofs layout. Options are drawn independently, so that combinations nobody
    would pick come up; those mkfs refuses are counted as refused, not as findings."""
    block = draw(st.sampled_from((None, *BLOCK_SIZES)))
    bs = block or 4096
    compress: tuple[Algorithm, ...] = ()
    if draw(st.integers(0, 9)) < 6:
        compress = tuple(draw(st.lists(algorithms(), min_size=1, max_size=2)))
    def maybe() -> bool:
        """An option one time in five."""
        return draw(st.integers(0, 4)) == 0

    pcluster = bs * draw(st.sampled_from((1, 2, 4, 16, 64))) if compress and maybe() else None
    extended = tuple(sorted(set(draw(st.lists(st.sampled_from(EXTENDED), max_size=3)))))
    fragments_size = (bs * draw(st.sampled_from((1, 2, 8))) if "fragments" in extended
                      and maybe() else None)
    metadata = None
    if maybe():
        metadata = str(bs * draw(st.sampled_from((1, 4))))
        if draw(st.booleans()):
            metadata += ":" + draw(st.sampled_from(sorted(ALGORITHMS)))
    chunksize = draw(_power_of_two(bs, 1 << 20)) if maybe() else None
    hints: tuple[Hint, ...] = ()
    if compress and maybe() and tree_paths:
        hints = tuple(Hint(bs * draw(st.sampled_from((1, 4, 16))),
                           draw(st.sampled_from(tree_paths)).split("/")[-1][:8] or ".*",
                           draw(st.one_of(st.none(), st.integers(0, len(compress) - 1))))
                      for _ in range(draw(st.integers(1, 2))))
    tar = draw(st.sampled_from((None, None, None, None, "f", "i")))
    fingerprint: str | bool = draw(st.sampled_from((True, True, False)))
    if fingerprint and maybe():
        fingerprint = draw(st.sampled_from(FINGERPRINT_NAMES))
    return Layout(
        block_size=block, compress=compress, pcluster=pcluster, extended=extended,
        fragments_size=fragments_size, metadata=metadata,
        dir_compress=bool(compress) and maybe(),
        metadata_zone=draw(st.sampled_from(METADATA_ZONE)) if maybe() else None,
        chunksize=chunksize, blobdev=bool(chunksize) and tar is None and maybe(),
        dsunit=draw(st.sampled_from((1, 2, 4, 16))) if maybe() else None,
        max_extent=bs * draw(st.sampled_from((1, 4, 32))) if compress and maybe() else None,
        hints=hints, tar=tar, fingerprint=fingerprint,
        xattr_prefixes=tuple(sorted(set(draw(st.lists(st.sampled_from(XATTR_PREFIXES),
                                                      max_size=2))))) if maybe() else (),
        xattr_tolerance=draw(st.sampled_from((0, 1, 4))) if maybe() else None,
        label=draw(st.sampled_from(("layouts", "x" * 15))) if maybe() else None)


def all_options() -> list[str]:
    """Every name ``Layout.exercised`` can give: the option table of a run lists them all,
    so that one no example used shows as 0."""
    names = [f"-b{b}" for b in BLOCK_SIZES]
    for algo, (levels, dict_max) in ALGORITHMS.items():
        names.append(f"-z{algo}")
        if levels:
            names.append(f"-z{algo},level")
        if dict_max is not None:
            names.append(f"-z{algo},dictsize")
    names += ["-z<a>:<b>", "-C", *(f"-E{e}" for e in EXTENDED), "-Efragments=<size>", "-m",
              "--zD", *(f"--MZ={z or '(default)'}" for z in METADATA_ZONE), "--chunksize",
              "--blobdev", "--dsunit", "--max-extent-bytes", "--compress-hints", "--tar=f",
              "--tar=i", "--xattr-inode-digest", "--xattr-inode-digest=<name>",
              "no fingerprints", "--xattr-prefix", "-x", "-L"]
    return names
