"""Guest side of the generated-layout checks: a mounted tree against what it was built from.

``tree_check(root, entries, methods)`` looks at every expected entry under ``root`` the way
readers do (lstat, readdir, readlink, listxattr and getxattr, the whole file through each
read method, and ranges of it with pread) and returns only what differs, so one round trip
checks a whole mount. Entries are visited in the order given: that order is the order of
first lookups, which decides which file of a fingerprint group makes the shared inode.

``residency(paths)`` gives mincore's resident page count of each file without faulting
any page in (mmap without touching). Runs inside the probe server (pcprobe/).
"""

import errno
import hashlib
import json
import os
import stat


def _pcprobe():
    """The probe's package beside this file (already loaded when its server imported us)."""
    import pcprobe
    return pcprobe


KIND = {"file": stat.S_IFREG, "dir": stat.S_IFDIR, "symlink": stat.S_IFLNK}


def _xattrs(path):
    names = os.listxattr(path, follow_symlinks=False)
    return {name: os.getxattr(path, name, follow_symlinks=False).hex() for name in names}


def _check_entry(root, entry, methods, out, counts):
    rel = entry["path"]
    path = os.path.join(root, rel) if rel else root
    where = rel or "/"
    try:
        st = os.lstat(path)
    except OSError as exc:
        out.append(f"{where}: lstat: {exc.strerror} (errno {exc.errno})")
        return
    want_kind = KIND[entry["kind"]]
    if stat.S_IFMT(st.st_mode) != want_kind:
        out.append(f"{where}: type {stat.S_IFMT(st.st_mode):o}, want {want_kind:o}")
        return
    for field, got in (("mode", stat.S_IMODE(st.st_mode)), ("uid", st.st_uid),
                       ("gid", st.st_gid), ("nlink", st.st_nlink), ("size", st.st_size)):
        want = entry.get(field)
        if want is not None and got != want:
            shown = (f"{got:o}, want {want:o}" if field == "mode" else f"{got}, want {want}")
            out.append(f"{where}: {field} {shown}")
    if "xattrs" in entry:
        try:
            got = _xattrs(path)
        except OSError as exc:
            out.append(f"{where}: listxattr/getxattr: {exc.strerror} (errno {exc.errno})")
        else:
            ignore = entry.get("ignore_xattrs", [])
            got = {k: v for k, v in got.items() if k not in ignore}
            if got != entry["xattrs"]:
                missing = sorted(set(entry["xattrs"]) - set(got))
                extra = sorted(set(got) - set(entry["xattrs"]))
                wrong = sorted(k for k in set(got) & set(entry["xattrs"])
                               if got[k] != entry["xattrs"][k])
                out.append(f"{where}: xattrs differ: missing {missing}, unexpected {extra}, "
                           f"other values {wrong}")
    if entry["kind"] == "symlink":
        try:
            target = os.readlink(path)
        except OSError as exc:
            out.append(f"{where}: readlink: {exc.strerror} (errno {exc.errno})")
        else:
            if target != entry["target"]:
                out.append(f"{where}: readlink {target[:80]!r}, want {entry['target'][:80]!r}")
        return
    if entry["kind"] == "dir":
        try:
            names = sorted(os.listdir(path))
        except OSError as exc:
            out.append(f"{where}: readdir: {exc.strerror} (errno {exc.errno})")
            return
        if names != entry["children"]:
            missing = sorted(set(entry["children"]) - set(names))
            extra = sorted(set(names) - set(entry["children"]))
            out.append(f"{where}: readdir: {len(names)} names, want {len(entry['children'])}; "
                       f"missing {missing[:5]}, unexpected {extra[:5]}")
        counts["dirs"] += 1
        return
    for method in methods:
        try:
            got = _read(path, method)
        except OSError as exc:
            out.append(f"{where}: {method}: {exc.strerror} (errno {exc.errno})")
            continue
        except _Killed as exc:
            out.append(f"{where}: {method}: {exc}")
            continue
        counts["reads"] += 1
        counts["bytes"] += got["bytes"]
        if got["bytes"] != entry["size"] or got["sha256"] != entry["sha256"]:
            out.append(f"{where}: {method}: {got['bytes']} bytes {got['sha256'][:16]}, want "
                       f"{entry['size']} bytes {entry['sha256'][:16]}")
    if entry.get("ranges"):
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as exc:
            out.append(f"{where}: open: {exc.strerror} (errno {exc.errno})")
            return
        try:
            for offset, length, want in entry["ranges"]:
                try:
                    data = os.pread(fd, length, offset)
                except OSError as exc:
                    out.append(f"{where}: pread({offset}, {length}): {exc.strerror} "
                               f"(errno {exc.errno})")
                    continue
                counts["ranges"] += 1
                if hashlib.sha256(data).hexdigest() != want:
                    out.append(f"{where}: pread({offset}, {length}): {len(data)} bytes, "
                               f"not the tree's")
        finally:
            os.close(fd)
    counts["files"] += 1


class _Killed(Exception):
    """A read through a mapping whose fault failed: the kernel sent SIGBUS."""


def _read(path, method):
    """The probe's read; through a mapping in a child of its own, so that a fault the kernel
    answers with SIGBUS (an I/O error behind the mapping) is a finding, not the probe's
    end."""
    probe = _pcprobe()
    if not method.startswith("mmap"):
        return probe.read_file(path, method)
    pid, pipe = probe.in_child(lambda: probe.read_file(path, method))
    with os.fdopen(pipe, "rb") as fh:
        raw = fh.read()
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        raise _Killed(f"the reader was killed by signal {os.WTERMSIG(status)}"
                      f"{' (SIGBUS)' if os.WTERMSIG(status) == 7 else ''}")
    answer = json.loads(raw)
    if "error" in answer:
        raise OSError(answer["errno"], answer["error"])
    return answer


def tree_check(root, entries, methods, limit=50):
    """What under ``root`` differs from ``entries`` (at most ``limit`` lines), and counts."""
    out = []
    counts = {"files": 0, "dirs": 0, "reads": 0, "bytes": 0, "ranges": 0}
    for entry in entries:
        _check_entry(root, entry, methods, out, counts)
        if len(out) >= limit:
            out.append(f"(stopped after {limit} differences)")
            break
    return {"differences": out, "counts": counts}


def residency(paths):
    """Resident pages of each file by mincore, without faulting any in: [resident, pages],
    or the error text."""
    probe = _pcprobe()
    found = {}
    for path in paths:
        try:
            got = probe.mincore(path)
        except OSError as exc:
            found[path] = f"{exc.strerror} (errno {exc.errno or errno.EIO})"
            continue
        found[path] = [got["resident"], got["pages"]]
    return found


def lookup(paths):
    """lstat each path in order (the first lookups, which make the shared inodes): the
    error text of each that failed."""
    failed = {}
    for path in paths:
        try:
            os.lstat(path)
        except OSError as exc:
            failed[path] = f"{exc.strerror} (errno {exc.errno})"
    return failed

