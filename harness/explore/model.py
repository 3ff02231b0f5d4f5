"""What the kernel should do, step by step: the explorer's model of EROFS page cache sharing.

The model knows the images of the pool file by file (bytes, fingerprint, layout) and follows
every mount, unmount, lookup, read, hint, mapping and cache drop the explorer makes, in the
order the guest makes them. From that it predicts:

- the errno of each mount and unmount;
- the page cache each file reads from. Files join one shared cache when both mounts have
  sharing in effect with the same domain and the fingerprints are equal; the first file
  looked up makes the shared inode, and a later one with another size or other address
  space operations is refused and keeps a private cache, as ``erofs_ishare_fill_inode``
  does. The operations follow the data layout and, for uncompressed data, the mount's
  backing: compressed files read through one set whatever the source, uncompressed ones
  through one for a file-backed mount and another for a block device (loop, virtio), so
  a file-backed and a block-backed twin never share;
- which bytes a read may return. That is the file's own bytes, or, in a shared cache, the
  bytes of any file that joined it since it was last empty. A same-size forgery within a
  domain serves its bytes to its twins: that is documented, not a bug;
- how much of a cache is resident when that is known (``cold``: none, ``full``: all);
- the mount table: which mounts exist and which show ``inode_share``.

The model is the kernel's documented behaviour, not a copy of its code: a divergence is a
finding (or a model error, which the shrunk sequence makes easy to judge).
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, field

COLD, FULL, UNKNOWN = "cold", "full", "unknown"


@dataclass(frozen=True)
class PoolFile:
    """One file of a pool image, as the kernel will see it."""
    path: str
    size: int
    sha256: str
    fingerprint: str | None  # the content its fingerprint claims; None: no fingerprint
    layout: str  # "plain" or "compressed": files of other layouts never join one cache

    @property
    def pages(self) -> int:
        return (self.size + 4095) // 4096


@dataclass(frozen=True)
class PoolImage:
    name: str
    files: tuple[PoolFile, ...]

    @property
    def fingerprinted(self) -> bool:
        return any(f.fingerprint for f in self.files)

    def file(self, path: str) -> PoolFile:
        for entry in self.files:
            if entry.path == path:
                return entry
        raise KeyError(f"{self.name} has no pool file {path}")


CacheKey = tuple[str, ...]


@dataclass
class Cache:
    key: CacheKey
    size: int
    layout: str
    pages: int
    members: list[tuple[str, str]] = field(default_factory=list)  # (mount, path), in order
    sources: set[str] = field(default_factory=set)  # sha256 of every member since it was empty
    state: str = COLD


@dataclass
class MountState:
    name: str
    image: PoolImage
    source: str
    options: str
    share: bool  # sharing in effect (asked for, and the image has fingerprints)
    domain: str | None
    detached: bool = False  # lazily unmounted, kept alive by a mapping
    looked_up: dict[str, CacheKey] = field(default_factory=dict)


def parse_options(options: str) -> tuple[bool, str | None]:
    share, domain = False, None
    for item in filter(None, options.split(",")):
        if item == "inode_share":
            share = True
        elif item.startswith("domain_id="):
            domain = item.split("=", 1)[1]
    return share, domain


class World:
    """The model's state; every method is one thing the explorer did, in guest order."""

    def __init__(self, pool: dict[str, PoolImage]) -> None:
        self.pool = pool
        self.mounts: dict[str, MountState] = {}
        self.caches: dict[CacheKey, Cache] = {}
        self.holders: dict[str, tuple[str, str]] = {}  # tag -> (mount, path)
        # Holders a collapse may have unmapped (the holder would fault the new pages in,
        # but it sleeps): whether it did cannot be seen from here (see collapsed()).
        self.maybe_unmapped: set[str] = set()

    # ---- mounts --------------------------------------------------------------------------

    def mount(self, name: str, image: str, source: str, options: str) -> int:
        """Expected errno of mounting (0: success, and the mount now exists)."""
        share, domain = parse_options(options)
        if share and domain is None:
            return errno.EINVAL  # "domain_id is needed when inode_share is on"
        pool_image = self.pool[image]
        self.mounts[name] = MountState(name, pool_image, source, options,
                                       share and pool_image.fingerprinted, domain)
        return 0

    def live_mounts(self) -> list[MountState]:
        return [m for m in self.mounts.values() if not m.detached]

    def held_paths(self, mount: str) -> list[str]:
        return [path for m, path in self.holders.values() if m == mount]

    def umount(self, name: str, lazy: bool) -> int:
        """Expected errno of unmounting; a plain unmount of a mount with a mapped file is
        busy, a lazy one detaches it until the last mapping goes."""
        held = self.held_paths(name)
        if held and not lazy:
            return errno.EBUSY
        if held:
            self.mounts[name].detached = True
        else:
            self._gone(name)
        return 0

    def _gone(self, name: str) -> None:
        """The superblock is shut down: its inodes leave their caches."""
        mount = self.mounts.pop(name)
        for path, key in mount.looked_up.items():
            cache = self.caches.get(key)
            if cache is None:
                continue
            cache.members = [m for m in cache.members if m != (name, path)]
            if not cache.members:
                del self.caches[key]

    def mount_table(self) -> dict[str, bool]:
        """Mount name -> whether /proc/mounts shows inode_share, for mounts still visible."""
        return {m.name: m.share for m in self.live_mounts()}

    # ---- files ---------------------------------------------------------------------------

    def lookup(self, mount: str, path: str) -> Cache:
        """The cache the file reads from; its first lookup decides, as the kernel does."""
        state = self.mounts[mount]
        key = state.looked_up.get(path)
        if key is not None:
            return self.caches[key]
        facts = state.image.file(path)
        layout = facts.layout if facts.layout == "compressed" else \
            f"{facts.layout}-{'file' if state.source == 'file' else 'bdev'}"
        cache = None
        if state.share and facts.fingerprint:
            key = ("shared", str(state.domain), facts.fingerprint)
            cache = self.caches.get(key)
            if cache is None:
                cache = self.caches[key] = Cache(key, facts.size, layout, facts.pages)
            elif cache.size != facts.size or cache.layout != layout:
                cache = None  # refused: another size or aops under the same fingerprint
        if cache is None:
            key = ("private", mount, path)
            cache = self.caches[key] = Cache(key, facts.size, layout, facts.pages)
        cache.members.append((mount, path))
        cache.sources.add(facts.sha256)
        state.looked_up[path] = cache.key
        return cache

    def pinned(self, cache: Cache) -> bool | None:
        """Whether a holder's mapping keeps every page of the cache (None: maybe)."""
        tags = {tag for tag, (m, p) in self.holders.items()
                if self.mounts[m].looked_up.get(p) == cache.key}
        if tags - self.maybe_unmapped:
            return True
        return None if tags else False

    def collapsed(self, mount: str, path: str, err: int) -> None:
        """MADV_COLLAPSE over a mapping of the file. 0: every page of the cache is in huge
        pages now (missing ones were read), and every mapping of the old small pages is
        gone; but where the pages were huge already, nothing happened to any mapping, and
        the model cannot tell which: a collapse since the cache was last empty made them
        huge, or the fill itself did (a mapping with large folios may be read into huge
        ones; seen on 7.3: hold, collapse and drop left all 512 pages of a held 2 MiB file
        resident, not reproduced on replay). So holders are only maybe unmapped.
        Any failure may come after the kernel read missing pages in (collapse_file reads
        ahead, then gives up on a page: EAGAIN when it is locked or off the LRU, EINVAL on
        SCAN_FAIL), so a cache that was not full is open; a failure puts the small pages
        back, so a full one stays full. Only EAGAIN can come after mappings were zapped."""
        cache = self.lookup(mount, path)
        if err == 0 or cache.state == FULL:
            cache.state = FULL
        else:
            cache.state = UNKNOWN
        if err == errno.EINVAL:
            return
        for tag, (m, p) in self.holders.items():
            if self.mounts[m].looked_up.get(p) == cache.key:
                self.maybe_unmapped.add(tag)

    def acceptable(self, mount: str, path: str) -> set[str]:
        """The hashes a whole read of the file may return."""
        return set(self.lookup(mount, path).sources)

    def read(self, mount: str, path: str) -> set[str]:
        cache = self.lookup(mount, path)
        cache.state = FULL
        return set(cache.sources)

    def pressured_read(self, mount: str, path: str) -> set[str]:
        """A read in a memory cgroup too small for the file: right bytes, residency open."""
        cache = self.lookup(mount, path)
        cache.state = UNKNOWN
        return set(cache.sources)

    def hold(self, tag: str, mount: str, path: str) -> None:
        cache = self.lookup(mount, path)
        cache.state = FULL
        self.holders[tag] = (mount, path)

    def release(self, tag: str) -> set[str]:
        mount, path = self.holders.pop(tag)
        self.maybe_unmapped.discard(tag)
        cache = self.caches[self.mounts[mount].looked_up[path]]
        # The holder hashes its whole mapping before it exits: that faults back in any
        # page a drop took after a collapse unmapped it.
        cache.state = FULL
        sources = set(cache.sources)
        if self.mounts[mount].detached and not self.held_paths(mount):
            self._gone(mount)
        return sources

    def dontneed(self, mount: str, path: str) -> None:
        cache = self.lookup(mount, path)
        self._emptied(cache)

    def willneed(self, mount: str, path: str) -> None:
        self.lookup(mount, path).state = UNKNOWN

    def drop_caches(self) -> None:
        for cache in self.caches.values():
            self._emptied(cache)

    def _emptied(self, cache: Cache) -> None:
        """DONTNEED or drop_caches: all of it goes, unless a mapping holds every page."""
        pinned = self.pinned(cache)
        if pinned:
            return
        own = {self.mounts[m].image.file(p).sha256 for m, p in cache.members}
        if pinned is None:
            cache.state = UNKNOWN
            cache.sources |= own
            return
        cache.state = COLD
        cache.sources = own

    def expected_residency(self, mount: str, path: str) -> int | None:
        """Pages mincore() must show for the file, or None when the model cannot say."""
        cache = self.lookup(mount, path)
        if cache.state == COLD:
            return 0
        if cache.state == FULL:
            return cache.pages
        return None
