"""EROFS image specs: trees of files with deterministic content, mkfs variants, manifests.

A catalog (YAML, rendered with jinja2 first so that families of images come from loops)
names trees and images. A file's content is fixed by (seed, size, holes): two files with the
same triple hold the same bytes, in whatever image, path, owner or mode, and that is what
the manifest records as ``content`` so that tests know what should share. Images are built
with mkfs.erofs on the host (never mounted there) and cached by a key over the tree, the
options and the mkfs version.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tarfile
import tempfile
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import jinja2

from harness.core import cache
from harness.core.errors import HarnessError, SpecError, ToolMissing
from harness.core.yamlconf import check_keys, load_yaml, where
from harness.erofs.tools import ErofsUtils
from harness.erofs.xattrs import copy_missing_fingerprint, forge_fingerprint, strip_fingerprint

PAGE = 4096
COMPRESSORS = ("lz4", "lz4hc", "lzma", "deflate", "zstd")
FILE_KEYS = {"path", "size", "seed", "holes", "mode", "uid", "gid", "mtime", "xattrs",
             "symlink", "hardlink"}
IMAGE_KEYS = {"tree", "fingerprint", "own_fingerprints", "compressor", "block_size",
              "chunksize", "extended", "blobdev", "tar", "unfingerprinted", "forged",
              "xattr_prefixes", "merged", "metabox"}


def parse_size(value: Any, origin: str) -> int:
    if isinstance(value, int):
        return value
    text = str(value).strip()
    units = {"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "K": 1 << 10, "M": 1 << 20}
    for unit, factor in units.items():
        if text.endswith(unit):
            return int(float(text[: -len(unit)]) * factor)
    try:
        return int(text, 0)
    except ValueError:
        raise SpecError(f"{origin}: {value!r} is not a size (bytes, or N KiB/MiB)") from None


def parse_int(value: Any, origin: str, what: str) -> int:
    """An integer written as YAML reads it or as a string in any base (``0o600``)."""
    if isinstance(value, int):
        return value
    try:
        return int(str(value), 0)
    except ValueError:
        raise SpecError(f"{origin}: {what} {value!r} is not an integer") from None


def content_bytes(seed: int, size: int) -> bytes:
    """Deterministic bytes, half random and half repeated so that compressors compress."""
    if size == 0:
        return b""
    noise = hashlib.shake_256(f"harness-content-{seed}".encode()).digest(size // 2 + PAGE)
    out = bytearray()
    pattern = (f"seed {seed} ".encode() * 512)[: PAGE // 2]
    for offset in range(0, size, PAGE):
        half = noise[offset // 2: offset // 2 + PAGE // 2]
        out += half + pattern
    return bytes(out[:size])


@dataclass(frozen=True)
class FileSpec:
    path: str
    size: int = 0
    seed: int = 0
    holes: tuple[tuple[int, int], ...] = ()  # (offset, length) ranges left as holes
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    mtime: int = 1_700_000_000
    xattrs: tuple[tuple[str, str], ...] = ()
    symlink: str | None = None
    hardlink: str | None = None

    @property
    def regular(self) -> bool:
        return self.symlink is None and self.hardlink is None

    def data(self) -> bytes:
        raw = bytearray(content_bytes(self.seed, self.size))
        for offset, length in self.holes:
            raw[offset:offset + length] = bytes(min(length, max(0, self.size - offset)))
        return bytes(raw)

    @property
    def content(self) -> str:
        """Equal for files whose bytes are equal by construction."""
        return cache.content_key(["content", str(self.seed), str(self.size), repr(self.holes)])


@dataclass(frozen=True)
class ImageSpec:
    name: str
    tree: str
    files: tuple[FileSpec, ...]
    fingerprint: bool | str = True  # True: default xattr name; a string: that name
    compressor: str | None = None  # e.g. "lz4hc" or "lzma,level=6"
    block_size: int | None = None
    chunksize: int | None = None
    extended: tuple[str, ...] = ()  # -E options
    blobdev: bool = False
    tar: bool = False  # build from a tar archive of the tree (--tar=f) instead of the directory
    # Paths built without a fingerprint while the rest of the image has one. mkfs has no
    # per-file switch, so the image is merged from two (rebuild mode, --clean=data).
    unfingerprinted: tuple[str, ...] = ()
    # Paths whose fingerprint claims other content (seed, size): a forged image. The
    # fingerprint is the SHA-256 of the content, written over the genuine one after mkfs.
    forged: tuple[tuple[str, int, int], ...] = ()
    # Long xattr name prefixes (mkfs --xattr-prefix), as overlay or composefs images have.
    xattr_prefixes: tuple[str, ...] = ()
    # Files whose source carries the fingerprint xattr (a custom name) keep that value as
    # their only fingerprint: mkfs adds its digest as a second entry of the same name, which
    # is stripped. Fingerprints of any length, empty or oversized, or chosen to collide.
    own_fingerprints: bool = False
    # Rebuilt (mkfs.erofs rebuild mode) from these images, which become its extra devices
    # in this order: a metadata-only image over several blobs.
    merged: tuple[ImageSpec, ...] = ()
    # mkfs -m<size>: the inodes go into the metabox inode (metadata compression; with no
    # algorithm named, stored as they are), read through its page cache.
    metabox: int | None = None

    def fingerprinted(self, path: str) -> bool:
        return bool(self.fingerprint) and path not in self.unfingerprinted

    def mkfs_args(self) -> list[str]:
        # mkfs numbers long xattr prefixes in option order: the extra ones first puts the
        # fingerprint's prefix after them (superblock ishare_xattr_prefix_id = their count).
        args = [f"--xattr-prefix={prefix}" for prefix in self.xattr_prefixes]
        if self.fingerprint is True:
            args.append("--xattr-inode-digest")
        elif self.fingerprint:
            args.append(f"--xattr-inode-digest={self.fingerprint}")
        if self.compressor:
            args.append(f"-z{self.compressor}")
        if self.block_size:
            args.append(f"-b{self.block_size}")
        if self.chunksize:
            args.append(f"--chunksize={self.chunksize}")
        if self.extended:
            args.append("-E" + ",".join(self.extended))
        if self.tar:
            args.append("--tar=f")
        if self.metabox:
            args.append(f"-m{self.metabox}")
        return args


def _file_spec(raw: Any, origin: str) -> FileSpec:
    check_keys(raw, FILE_KEYS, {"path"}, "a file entry")
    loc = where(raw, "path") if hasattr(raw, "lines") else origin
    holes = tuple((parse_size(h[0], loc), parse_size(h[1], loc)) for h in raw.get("holes", []))
    def num(key: str, default: int) -> int:
        return parse_int(raw.get(key, default), loc, key)
    return FileSpec(path=str(raw["path"]), size=parse_size(raw.get("size", 0), loc),
                    seed=num("seed", 0), holes=holes, mode=num("mode", 0o644),
                    uid=num("uid", 0), gid=num("gid", 0), mtime=num("mtime", 1_700_000_000),
                    xattrs=tuple(sorted((str(k), str(v))
                                        for k, v in (raw.get("xattrs") or {}).items())),
                    symlink=raw.get("symlink"), hardlink=raw.get("hardlink"))


@dataclass
class Catalog:
    path: Path
    trees: dict[str, tuple[FileSpec, ...]] = field(default_factory=dict)
    images: dict[str, ImageSpec] = field(default_factory=dict)

    def image(self, name: str) -> ImageSpec:
        if name not in self.images:
            raise SpecError(f"{self.path}: no image named {name!r} (there are "
                            f"{len(self.images)}: {', '.join(sorted(self.images)[:10])}...)")
        return self.images[name]


def load_catalog(path: Path) -> Catalog:
    """Render the catalog with jinja2 (StrictUndefined), then read it strictly."""
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    try:
        text = env.from_string(path.read_text()).render(compressors=COMPRESSORS)
    except jinja2.TemplateError as exc:
        line = getattr(exc, "lineno", None)
        raise SpecError(f"{path}:{line or '?'}: template error: {exc}") from exc
    data = load_yaml(path, text)
    check_keys(data, {"trees", "images"}, {"trees", "images"}, "the image catalog")
    catalog = Catalog(path)
    for name, tree in data["trees"].items():
        check_keys(tree, {"files"}, {"files"}, f"tree {name!r}")
        files = tuple(_file_spec(f, where(data["trees"], name)) for f in tree["files"])
        paths = [f.path for f in files]
        if len(set(paths)) != len(paths):
            raise SpecError(f"{where(data['trees'], name)}: tree {name!r} lists a path twice")
        catalog.trees[name] = files
    for name, raw in data["images"].items():
        if isinstance(raw, dict) and "merged" in raw:
            catalog.images[name] = _merged(name, raw, catalog)
            continue
        check_keys(raw, IMAGE_KEYS, {"tree"}, f"image {name!r}")
        if raw["tree"] not in catalog.trees:
            raise SpecError(f"{where(raw, 'tree')}: image {name!r} uses unknown tree "
                            f"{raw['tree']!r}")
        compressor = raw.get("compressor")
        if compressor and str(compressor).split(",")[0] not in COMPRESSORS:
            raise SpecError(f"{where(raw, 'compressor')}: unknown compressor {compressor!r} "
                            f"(known: {', '.join(COMPRESSORS)})")
        catalog.images[name] = ImageSpec(
            name=name, tree=raw["tree"], files=catalog.trees[raw["tree"]],
            fingerprint=raw.get("fingerprint", True), compressor=compressor,
            block_size=raw.get("block_size"),
            chunksize=parse_size(raw["chunksize"], where(raw, "chunksize"))
            if raw.get("chunksize") else None,
            extended=tuple(raw.get("extended") or ()), blobdev=bool(raw.get("blobdev")),
            tar=bool(raw.get("tar")), unfingerprinted=_unfingerprinted(raw, catalog),
            forged=_forged(raw, catalog), own_fingerprints=_own(raw),
            xattr_prefixes=tuple(str(p) for p in raw.get("xattr_prefixes") or ()),
            metabox=parse_size(raw["metabox"], where(raw, "metabox"))
            if raw.get("metabox") else None)
    return catalog


def _own(raw: Any) -> bool:
    own = raw.get("own_fingerprints", False)
    if own is not False and (own is not True or not isinstance(raw.get("fingerprint"), str)):
        raise SpecError(f"{where(raw, 'own_fingerprints')}: own_fingerprints: true needs "
                        f"fingerprint: <xattr name> (the name the tree's files carry)")
    return own


def _merged(name: str, raw: Any, catalog: Catalog) -> ImageSpec:
    """An image rebuilt from images listed before it (their files side by side)."""
    check_keys(raw, {"merged", "fingerprint"}, {"merged"}, f"image {name!r}")
    loc = where(raw, "merged")
    names = raw["merged"]
    if not isinstance(names, list) or len(names) < 1:
        raise SpecError(f"{loc}: 'merged' lists the images (defined above) to rebuild from")
    sources = []
    for source in names:
        if source not in catalog.images:
            raise SpecError(f"{loc}: {source!r} is not an image defined before {name!r}")
        spec = catalog.images[source]
        if not spec.chunksize or spec.merged or spec.blobdev or spec.compressor:
            raise SpecError(f"{loc}: {source!r} must be a plain chunked image (chunksize, no "
                            f"compressor, blob or merge) to be a device of {name!r}")
        sources.append(spec)
    files = tuple(f for spec in sources for f in spec.files)
    paths = [f.path for f in files]
    if len(set(paths)) != len(paths):
        raise SpecError(f"{loc}: the images merged into {name!r} share a path")
    return ImageSpec(name=name, tree="+".join(s.tree for s in sources), files=files,
                     fingerprint=raw.get("fingerprint", True), merged=tuple(sources))


def _forged(raw: Any, catalog: Catalog) -> tuple[tuple[str, int, int], ...]:
    forged = raw.get("forged") or {}
    loc = where(raw, "forged")
    if not isinstance(forged, dict):
        raise SpecError(f"{loc}: 'forged' maps a path to the content it claims: "
                        f"{{path: {{seed: S, size: N}}}}")
    regular = {f.path for f in catalog.trees[raw["tree"]] if f.regular}
    out = []
    for path, claim in forged.items():
        if path not in regular:
            raise SpecError(f"{loc}: forged {path!r} is not a regular file of tree "
                            f"{raw['tree']!r}")
        check_keys(claim, {"seed", "size"}, {"seed", "size"}, f"the claim forged for {path!r}")
        out.append((str(path), parse_int(claim["seed"], loc, "seed"),
                    parse_size(claim["size"], loc)))
    if out and raw.get("fingerprint") is False:
        raise SpecError(f"{loc}: an image without fingerprints has none to forge")
    return tuple(sorted(out))


def _unfingerprinted(raw: Any, catalog: Catalog) -> tuple[str, ...]:
    paths = tuple(str(p) for p in raw.get("unfingerprinted") or ())
    files = {f.path: f for f in catalog.trees[raw["tree"]]}
    for path in paths:
        spec = files.get(path)
        if spec is None or not spec.regular:
            raise SpecError(f"{where(raw, 'unfingerprinted')}: {path!r} is not a regular file "
                            f"of tree {raw['tree']!r}")
        if any(f.hardlink == path for f in files.values()):
            raise SpecError(f"{where(raw, 'unfingerprinted')}: {path!r} has hard links; the "
                            f"merge that builds partial images cannot keep them")
    if paths and (raw.get("fingerprint") is False or raw.get("blobdev") or raw.get("tar")):
        raise SpecError(f"{where(raw, 'unfingerprinted')}: only for a fingerprinted image "
                        f"built from a directory without a blob device")
    return paths


# ---- building ---------------------------------------------------------------------------

@dataclass(frozen=True)
class BuiltImage:
    spec: ImageSpec
    path: Path
    blob: Path | None
    manifest: dict[str, Any]
    key: str
    devices: tuple[BuiltImage, ...] = ()  # a merged image's source images, in device order

    def extra_devices(self) -> list[tuple[Path, str]]:
        """The files behind its device= devices, each with a name to upload it under."""
        if self.blob is not None:
            return [(self.blob, f"{self.key}.blob")]
        return [(d.path, f"{d.key}.erofs") for d in self.devices]

    def files(self) -> list[dict[str, Any]]:
        return list(self.manifest["files"])

    def file(self, path: str) -> dict[str, Any]:
        for entry in self.manifest["files"]:
            if entry["path"] == path:
                return dict(entry)
        raise KeyError(path)


def write_tree(files: tuple[FileSpec, ...], root: Path) -> None:
    for spec in files:
        target = root / spec.path
        target.parent.mkdir(parents=True, exist_ok=True)
        if spec.symlink is not None:
            os.symlink(spec.symlink, target)
            continue
        if spec.hardlink is not None:
            os.link(root / spec.hardlink, target)
            continue
        data = spec.data()
        with target.open("wb") as fh:
            # Write only the data ranges so that holes stay holes in the source tree.
            fh.truncate(spec.size)
            position = 0
            for offset, length in [*sorted(spec.holes), (spec.size, 0)]:
                if offset > position:
                    fh.seek(position)
                    fh.write(data[position:offset])
                position = max(position, offset + length)
        for name, value in spec.xattrs:
            os.setxattr(target, name, value.encode())
        os.chown(target, spec.uid, spec.gid)
        os.chmod(target, spec.mode)
        os.utime(target, (spec.mtime, spec.mtime))
    for spec in files:
        if spec.symlink is None:
            os.utime(root / spec.path, (spec.mtime, spec.mtime), follow_symlinks=False)
    # Directories 0755 whatever the umask, the root included (a temporary directory is
    # 0700): tests read as an unprivileged user through the mount.
    for directory in [root, *(p for p in root.rglob("*") if p.is_dir() and not p.is_symlink())]:
        directory.chmod(0o755)


def manifest_for(spec: ImageSpec, tools: ErofsUtils) -> dict[str, Any]:
    files = []
    for f in spec.files:
        if not f.regular:
            continue
        files.append({"path": f.path, "size": f.size, "content": f.content,
                      "sha256": hashlib.sha256(f.data()).hexdigest(),
                      "pages": (f.size + PAGE - 1) // PAGE, "holes": [list(h) for h in f.holes],
                      "fingerprinted": spec.fingerprinted(f.path)})
    return {"image": spec.name, "mkfs_args": spec.mkfs_args(), "mkfs": tools.version,
            "spec": asdict(spec), "files": files}


def _mkfs(spec: ImageSpec, argv: list[str]) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise HarnessError(f"mkfs.erofs failed for image {spec.name!r} "
                           f"(exit {proc.returncode}): {' '.join(argv)}\n"
                           f"{proc.stderr.strip()[-2000:]}")


def _build_partial(spec: ImageSpec, tools: ErofsUtils, argv: list[str], tree: Path,
                   out: Path) -> None:
    """A fingerprinted image whose listed files then lose their fingerprint (erofs_xattrs):
    mkfs has no per-file switch, and merging a fingerprinted image with a plain one makes
    mkfs either fingerprint everything or drop the feature."""
    if tools.dump is None:
        raise ToolMissing("dump.erofs is needed to build images with unfingerprinted files")
    _mkfs(spec, [*argv, str(out / "image.erofs"), str(tree)])
    for path in spec.unfingerprinted:
        strip_fingerprint(out / "image.erofs", path, tools.dump)


def _keep_own_fingerprints(spec: ImageSpec, tools: ErofsUtils, image: Path) -> None:
    if tools.dump is None:
        raise ToolMissing("dump.erofs is needed to build images with their own fingerprints")
    for f in spec.files:
        if any(name == spec.fingerprint for name, _ in f.xattrs):
            strip_fingerprint(image, f.path, tools.dump)


def _fill_merged_fingerprints(spec: ImageSpec, devices: tuple[BuiltImage, ...], image: Path,
                              tools: ErofsUtils) -> None:
    """Work around mkfs.erofs rebuild mode leaving the fingerprint entries out (see
    copy_missing_fingerprint); test_image_builds records whether mkfs still does."""
    if tools.dump is None:
        raise ToolMissing("dump.erofs is needed to build merged images with fingerprints")
    for device in devices:
        for f in device.spec.files:
            if f.regular and f.hardlink is None and f.size > 0:
                copy_missing_fingerprint(device.path, image, f.path, tools.dump)


def build_image(spec: ImageSpec, tools: ErofsUtils) -> BuiltImage:
    key = cache.content_key(["erofs-image-v7", tools.version, json.dumps(asdict(spec),
                                                                        sort_keys=True)])

    devices = tuple(build_image(source, tools) for source in spec.merged)

    def build(out: Path) -> dict[str, object]:
        if devices:
            _mkfs(spec, [str(tools.mkfs), *spec.mkfs_args(), "-T0",
                         f"-U{uuid.UUID(hex=key.ljust(32, '0')[:32])}",
                         str(out / "image.erofs"), *(str(d.path) for d in devices)])
            if spec.fingerprint:
                _fill_merged_fingerprints(spec, devices, out / "image.erofs", tools)
            (out / "manifest.json").write_text(json.dumps(manifest_for(spec, tools), indent=1))
            return {"name": spec.name}
        with tempfile.TemporaryDirectory(prefix="erofs-tree.") as tmp:
            write_tree(spec.files, Path(tmp))
            # -T/-U make the image reproducible: the same spec gives the same bytes.
            argv = [str(tools.mkfs), *spec.mkfs_args(), "-T0",
                    f"-U{uuid.UUID(hex=key.ljust(32, '0')[:32])}"]
            if spec.blobdev:
                argv.append(f"--blobdev={out / 'blob.img'}")
            source = tmp
            if spec.tar:
                source = str(Path(tmp).with_suffix(".tar"))
                with tarfile.open(source, "w", format=tarfile.PAX_FORMAT) as archive:
                    for entry in sorted(Path(tmp).iterdir()):
                        archive.add(entry, arcname=entry.name)
            if spec.unfingerprinted:
                _build_partial(spec, tools, argv, Path(tmp), out)
            else:
                _mkfs(spec, [*argv, str(out / "image.erofs"), source])
            if spec.own_fingerprints:
                _keep_own_fingerprints(spec, tools, out / "image.erofs")
            for path, seed, size in spec.forged:
                if tools.dump is None:
                    raise ToolMissing("dump.erofs is needed to forge fingerprints")
                claim = b"sha256:" + hashlib.sha256(content_bytes(seed, size)).digest()
                forge_fingerprint(out / "image.erofs", path, claim, tools.dump)
            if spec.tar:
                Path(source).unlink()
        (out / "manifest.json").write_text(json.dumps(manifest_for(spec, tools), indent=1))
        return {"name": spec.name}

    entry = cache.get_or_build("erofs-images", key, build)
    blob = entry / "blob.img"
    return BuiltImage(spec, entry / "image.erofs", blob if blob.exists() else None,
                      json.loads((entry / "manifest.json").read_text()), key, devices)


@dataclass(frozen=True)
class HeldFile:
    """A file an image holds as given (not generated from a FileSpec)."""
    path: str
    data: bytes
    content: str  # what the manifest says it is (the sharing model compares this)
    mode: int = 0o644


def build_image_of(name: str, origin: str, files: list[HeldFile], tools: ErofsUtils
                   ) -> BuiltImage:
    """A fingerprinted image of ``files`` as given, its manifest listing them; cached like
    every image (by content)."""
    key = cache.content_key(["erofs-image-of-v1", tools.version, name, origin, *(
        f"{f.path}:{f.mode:o}:{hashlib.sha256(f.data).hexdigest()}" for f in files)])
    spec = ImageSpec(name, origin, ())

    def build(out: Path) -> dict[str, object]:
        with tempfile.TemporaryDirectory(prefix="erofs-tree.") as tmp:
            tree = Path(tmp)
            for held in files:
                where = tree / held.path
                where.parent.mkdir(parents=True, exist_ok=True)
                where.write_bytes(held.data)
                where.chmod(held.mode)
            for folder in [tree, *(p for p in tree.rglob("*") if p.is_dir())]:
                folder.chmod(0o755)
            _mkfs(spec, [str(tools.mkfs), "--xattr-inode-digest", "-T0",
                         f"-U{uuid.UUID(hex=key.ljust(32, '0')[:32])}",
                         str(out / "image.erofs"), tmp])
        manifest = {"image": name, "mkfs": tools.version, "files": [
            {"path": f.path, "size": len(f.data), "sha256": hashlib.sha256(f.data).hexdigest(),
             "pages": (len(f.data) + PAGE - 1) // PAGE, "content": f.content, "holes": [],
             "fingerprinted": True} for f in files]}
        (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
        return {"name": name}

    entry = cache.get_or_build("erofs-images", key, build)
    return BuiltImage(spec, entry / "image.erofs", None,
                      json.loads((entry / "manifest.json").read_text()), key)


def build_image_holding(inner: BuiltImage, name: str, own: bytes,
                        tools: ErofsUtils) -> BuiltImage:
    """A fingerprinted image that holds ``inner``'s image file as ``inner.erofs`` beside a
    one-page file ``own`` filled with ``own`` (so that two such images differ): an image of
    images. Its manifest lists ``inner.erofs``; cached like every image."""
    held = HeldFile("inner.erofs", inner.path.read_bytes(), f"image:{inner.key}")
    return build_image_of(name, f"holding:{inner.spec.name}",
                          [held, HeldFile("own", own * (PAGE // len(own)), f"own:{own.hex()}")],
                          tools)
