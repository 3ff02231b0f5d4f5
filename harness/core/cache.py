"""A cache of built things, keyed by a hash of what went into them.

An entry is a directory ``<root>/<kind>/<key>/`` holding the built files and a
``MANIFEST.json`` with the sha256 of every file. Entries are built in a temporary
directory and renamed into place, so a half-built entry is never seen; they are verified
when reused, and a corrupt one is removed and rebuilt with a warning. A lock file per key
lets several pytest-xdist workers ask for the same entry at once: one builds, the others
wait and reuse.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from harness.core.errors import CacheCorrupt

log = logging.getLogger(__name__)

MANIFEST = "MANIFEST.json"


def cache_root() -> Path:
    """The cache directory: ``$HARNESS_CACHE``, else ``$XDG_CACHE_HOME/erofs-harness``."""
    explicit = os.environ.get("HARNESS_CACHE")
    if explicit:
        return Path(explicit).expanduser().resolve()
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "erofs-harness"


def content_key(parts: Iterable[str | bytes]) -> str:
    """A short stable hash over the given inputs, in order."""
    digest = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()[:20]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _walk_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*")
                  if (p.is_file() or p.is_symlink()) and p.name != MANIFEST)


def write_manifest(entry: Path, meta: dict[str, object] | None = None,
                   hash_files: bool = True) -> None:
    files = {}
    for path in (_walk_files(entry) if hash_files else []):
        rel = str(path.relative_to(entry))
        files[rel] = ("link:" + os.readlink(path)) if path.is_symlink() else file_sha256(path)
    (entry / MANIFEST).write_text(json.dumps({"files": files, "meta": meta or {}},
                                             indent=1, sort_keys=True))


def verify(entry: Path) -> None:
    """Raise CacheCorrupt naming the first file that is missing or changed."""
    manifest_path = entry / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text())
        files: dict[str, str] = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CacheCorrupt(f"cache entry {entry} has no readable {MANIFEST} ({exc})") from exc
    for rel, want in files.items():
        path = entry / rel
        if want.startswith("link:"):
            ok = path.is_symlink() and os.readlink(path) == want[5:]
        else:
            ok = path.is_file() and file_sha256(path) == want
        if not ok:
            raise CacheCorrupt(f"cache entry {entry}: {rel} is missing or does not match its "
                               f"recorded sha256")


def read_meta(entry: Path) -> dict[str, object]:
    meta = json.loads((entry / MANIFEST).read_text()).get("meta", {})
    assert isinstance(meta, dict)
    return meta


def get_or_build(kind: str, key: str, build: Callable[[Path], dict[str, object] | None],
                 *, root: Path | None = None, verify_files: bool = True) -> Path:
    """Return the verified entry for (kind, key), building it with ``build(tmpdir)`` if needed.

    ``build`` fills the directory it is given and may return metadata kept in the manifest.
    """
    base = (root or cache_root()) / kind
    base.mkdir(parents=True, exist_ok=True)
    entry = base / key
    with (base / f"{key}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if entry.exists():
            try:
                if verify_files:
                    verify(entry)
                elif not (entry / MANIFEST).is_file():
                    raise CacheCorrupt(f"cache entry {entry} has no {MANIFEST}")
                return entry
            except CacheCorrupt as exc:
                log.warning("%s; removing it and building it again", exc)
                shutil.rmtree(entry)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=base))
        try:
            meta = build(tmp)
            write_manifest(tmp, meta, hash_files=verify_files)
            tmp.rename(entry)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return entry


def forget(kind: str, key: str, *, root: Path | None = None) -> None:
    """Remove the entry for (kind, key), if any, so that the next get_or_build builds it."""
    base = (root or cache_root()) / kind
    if not base.is_dir():
        return
    with (base / f"{key}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        shutil.rmtree(base / key, ignore_errors=True)
