"""Patch series from mailing lists, applied onto a clean copy of a kernel tree.

A series is an mbox (as ``b4 am`` or ``git format-patch --stdout`` write it), a directory of
``*.patch`` files (in name order, or in the order of a ``series`` file inside it), or a
quilt-style ``series`` file naming patches relative to itself. A git tree gets a detached
worktree and ``git am``; any other tree is copied and patched with ``patch -p1``. The
user's tree is never modified. A patch that does not apply is reported with its subject and
the first hunk that was rejected.
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import fcntl
import hashlib
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.core import cache
from harness.core.errors import HarnessError, SpecError


class PatchDoesNotApply(HarnessError):
    """A patch of a series failed to apply; the message names it and shows the hunk."""


@dataclass(frozen=True)
class Patch:
    index: int  # 1-based position in the series
    subject: str
    text: str
    origin: str  # file (and message number for an mbox)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()


_FROM_LINE = re.compile(r"^From [0-9a-f]{40} ", re.M)
_MBOX_FROM = re.compile(r"^From \S+ .*\d{4}$", re.M)


def _subject(text: str, fallback: str) -> str:
    message = email.message_from_string(text, policy=email.policy.default)
    subject = str(message.get("Subject") or "").replace("\n", " ").strip()
    if subject:
        return re.sub(r"\s+", " ", subject)
    for line in text.splitlines():
        if line.startswith("Subject:"):
            return line[len("Subject:"):].strip()
    return fallback


def _split_mbox(path: Path, text: str) -> list[Patch]:
    starts = [m.start() for m in _FROM_LINE.finditer(text)] or \
        [m.start() for m in _MBOX_FROM.finditer(text)]
    if not starts:
        if "\n--- " in text and "\n+++ " in text:
            return [Patch(1, _subject(text, path.name), text, str(path))]
        raise SpecError(f"{path}: neither an mbox (no 'From <sha>' separator lines) nor a "
                        f"patch (no '---'/'+++' diff headers)")
    chunks = [text[a:b] for a, b in zip(starts, [*starts[1:], len(text)], strict=True)]
    out: list[Patch] = []
    for number, chunk in enumerate(chunks, 1):
        if "\n+++ " not in chunk:
            continue  # a cover letter: no diff
        out.append(Patch(len(out) + 1, _subject(chunk, f"message {number}"), chunk,
                         f"{path} (message {number})"))
    if not out:
        raise SpecError(f"{path}: the mbox holds {len(chunks)} message(s) and none has a diff")
    return out


def _from_files(files: list[Path]) -> list[Patch]:
    out: list[Patch] = []
    for path in files:
        try:
            text = path.read_text()
        except OSError as exc:
            raise SpecError(f"patch {path}: cannot read it ({exc.strerror})") from exc
        for patch in _split_mbox(path, text):
            out.append(Patch(len(out) + 1, patch.subject, patch.text, patch.origin))
    return out


def _series_file(path: Path) -> list[Path]:
    files = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        name = line.split("#", 1)[0].strip()
        if not name:
            continue
        target = path.parent / name.split()[0]
        if not target.is_file():
            raise SpecError(f"{path}:{number}: patch {name!r} does not exist ({target})")
        files.append(target)
    return files


def read_series(path: Path) -> list[Patch]:
    """The patches of an mbox, a directory or a series file, in order of application."""
    path = path.expanduser()
    if not path.exists():
        raise SpecError(f"--patches {path}: no such file or directory")
    if path.is_dir():
        if (path / "series").is_file():
            return _from_files(_series_file(path / "series"))
        files = sorted(path.glob("*.patch")) + sorted(path.glob("*.mbox"))
        if not files:
            raise SpecError(f"--patches {path}: the directory has no *.patch, *.mbox or "
                            f"series file")
        return _from_files(files)
    if path.name == "series" or path.suffix == ".series":
        return _from_files(_series_file(path))
    return _from_files([path])


# ---- the first rejected hunk -----------------------------------------------------------------

def _hunks(patch_text: str, file: str) -> list[tuple[int, str]]:
    """(old start line, hunk text) for each hunk of ``file`` in a patch."""
    out: list[tuple[int, str]] = []
    current: list[str] | None = None
    in_file = False
    start = 0
    for line in patch_text.splitlines():
        if line.startswith("diff --git ") or line.startswith("--- "):
            if current is not None:
                out.append((start, "\n".join(current)))
                current = None
            if line.startswith("diff --git "):
                in_file = line.endswith(f" b/{file}")
            elif not line.startswith("--- a/") and not line.startswith("--- /dev/null"):
                in_file = in_file or line[4:].split("\t")[0].endswith(file)
            continue
        if line.startswith("+++ "):
            in_file = in_file or line[4:].split("\t")[0].endswith(file)
            continue
        if line.startswith("@@"):
            if current is not None:
                out.append((start, "\n".join(current)))
            current = [line] if in_file else None
            match = re.match(r"@@ -(\d+)", line)
            start = int(match.group(1)) if match else 0
        elif current is not None:
            if line.startswith("-- ") and line.strip() == "--":
                break
            current.append(line)
    if current is not None:
        out.append((start, "\n".join(current)))
    return out


def first_rejected_hunk(patch: Patch, output: str) -> str:
    """The hunk that failed, from git's 'patch failed: F:L' or patch's 'Hunk #N FAILED'."""
    if match := re.search(r"patch failed: (\S+):(\d+)", output):
        file, line = match.group(1), int(match.group(2))
        hunks = _hunks(patch.text, file)
        for start, text in hunks:
            if start == line:
                return f"{file}:\n{text}"
        if hunks:
            return f"{file}:\n{hunks[0][1]}"
    if match := re.search(r"patching file (\S+)\n(?:.*\n)*?Hunk #(\d+) FAILED", output):
        file, number = match.group(1), int(match.group(2))
        hunks = _hunks(patch.text, file)
        if 0 < number <= len(hunks):
            return f"{file}:\n{hunks[number - 1][1]}"
    if match := re.search(r"(?:can't find file to patch|No such file).*?(\S+)", output):
        return f"(a file the patch changes is missing from the tree: {match.group(0)})"
    return "(no hunk could be identified; output: " + output.strip()[-600:] + ")"


# ---- applying ----------------------------------------------------------------------------

def is_git_tree(tree: Path) -> bool:
    return subprocess.run(["git", "-C", str(tree), "rev-parse", "--show-toplevel"],
                          capture_output=True, text=True, check=False).returncode == 0


def git_head(tree: Path, ref: str = "HEAD") -> str:
    proc = subprocess.run(["git", "-C", str(tree), "rev-parse", "--verify", ref + "^{commit}"],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SpecError(f"ref {ref!r} is not a commit in {tree}: {proc.stderr.strip()}")
    return proc.stdout.strip()


def _fail(patch: Patch, total: int, tree: str, output: str) -> PatchDoesNotApply:
    return PatchDoesNotApply(
        f"patch {patch.index}/{total} \"{patch.subject}\" ({patch.origin}) does not apply to "
        f"{tree}.\nFirst rejected hunk in {first_rejected_hunk(patch, output)}")


_GIT_IDENTITY = ["-c", "user.name=erofs-harness", "-c", "user.email=harness@localhost",
                 "-c", "commit.gpgsign=false"]


def _git_run(tree: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *_GIT_IDENTITY, "-C", str(tree), *args], input=stdin,
                          capture_output=True, text=True, check=False)


def _apply_git(work: Path, origin: Path, base: str, series: list[Patch]) -> None:
    """Reset the work clone to ``base`` and ``git am`` the series. ``checkout -f`` rewrites
    only the files that differ, so the build directory's objects of every other file stay
    valid: switching between checkpoints of a series is an incremental build."""
    _git_run(work, "am", "--abort")
    if _git_run(work, "cat-file", "-e", base + "^{commit}").returncode != 0:
        _git_run(work, "fetch", "--quiet", str(origin), base)
    reset = _git_run(work, "checkout", "--quiet", "-f", "--detach", base)
    if reset.returncode != 0:
        raise HarnessError(f"cannot check out {base} in {work}: {reset.stderr.strip()}")
    _git_run(work, "clean", "-fdq")
    for patch in series:
        proc = _git_run(work, "am", "--keep-cr", stdin=patch.text)
        if proc.returncode != 0:
            _git_run(work, "am", "--abort")
            _git_run(work, "checkout", "--quiet", "-f", "--detach", base)
            raise _fail(patch, len(series), f"{origin} at {base[:12]}", proc.stdout + proc.stderr)
        print(f"harness: applied {patch.index}/{len(series)} {patch.subject}",
              file=sys.stderr, flush=True)


def apply_patch(work: Path, text: str, reverse: bool = False
                ) -> subprocess.CompletedProcess[str]:
    """patch -p1 of ``text`` in ``work``, applying all of it or nothing (rejects discarded)."""
    return subprocess.run(["patch", "-p1", "--forward", "--batch", "--no-backup-if-mismatch",
                           "-r", "-", "-d", str(work), *(["-R"] if reverse else [])],
                          input=text, capture_output=True, text=True, check=False)


def _apply_copy(work: Path, origin: Path, applied: list[str], series: list[Patch]) -> None:
    """Revert what the copy carries (patch -R, newest first), then patch -p1 the series."""
    for text in reversed(applied):
        proc = apply_patch(work, text, reverse=True)
        if proc.returncode != 0:
            raise HarnessError(f"cannot revert a patch in {work} to reuse it "
                               f"({proc.stdout.strip()[-300:]}); delete {work.parent}")
    for done, patch in enumerate(series):
        proc = apply_patch(work, patch.text)
        if proc.returncode != 0:
            # The failed patch applied nothing (--forward, rejects discarded to '-'); put
            # the copy back to the pristine tree before reporting.
            for earlier in reversed(series[:done]):
                apply_patch(work, earlier.text, reverse=True)
            raise _fail(patch, len(series), str(origin), proc.stdout + proc.stderr)
        print(f"harness: applied {patch.index}/{len(series)} {patch.subject}",
              file=sys.stderr, flush=True)


@dataclass(frozen=True)
class PatchedTree:
    path: Path
    base: str  # the commit (git) or the tree path it was made from
    series: tuple[Patch, ...]


@contextlib.contextmanager
def prepared_tree(tree: Path, patches: Path | None = None, ref: str | None = None,
                  upto: int | None = None, *, immutable: bool = False
                  ) -> Iterator[PatchedTree]:
    """A tree with ``ref`` checked out and ``patches`` (the first ``upto``) applied, held
    (locked) while the caller builds it. With neither, the tree itself, unless the tree is
    ``immutable`` (the unpacked Debian source): then the work tree with nothing applied, so
    that the unpatched and the patched kernels share one build directory and going from one
    to the other recompiles what the patches touch, not the whole kernel (two trees cannot
    share ccache entries: the compiler sees other paths). A tree the user edits must be
    built where it is, or the edits would not be seen.

    One work tree per source tree lives in the cache (a shared clone for a git checkout, a
    copy otherwise) and is switched between series in place, so that its build directory
    stays valid and each switch is an incremental build. The user's tree is never touched.
    """
    series = read_series(patches) if patches else []
    if upto is not None:
        if not 0 <= upto <= len(series):
            raise SpecError(f"upto={upto}: the series {patches} has {len(series)} patch(es)")
        series = series[:upto]
    if not series and ref is None and not immutable:
        yield PatchedTree(tree, str(tree), ())
        return
    git = is_git_tree(tree)
    if ref is not None and not git:
        raise SpecError(f"ref={ref}: {tree} is not a git checkout, so it has no revisions")
    base = git_head(tree, ref or "HEAD") if git else str(tree.resolve())
    root = cache.cache_root() / "worktrees" / cache.content_key(["worktree",
                                                                 str(tree.resolve())])
    root.mkdir(parents=True, exist_ok=True)
    work, state_file = root / "tree", root / "applied.json"
    with (root / "lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        state: dict[str, Any] = json.loads(state_file.read_text()) if state_file.is_file() \
            else {"base": "?"}
        if state["base"] == "?" and work.exists():
            # A switch was interrupted: what the work tree carries is unknown. Start over.
            shutil.rmtree(work)
        if not work.exists():
            _make_work_tree(tree, git, work)
            state = {"base": base if not git else "", "patches": []}
            state_file.write_text(json.dumps(state))
        wanted = {"base": base, "patches": [p.text for p in series]}
        if state != wanted:
            state_file.write_text(json.dumps({"base": "?", "patches": []}))  # mid-switch
            try:
                if git:
                    _apply_git(work, tree, base, series)
                else:
                    _apply_copy(work, tree, state["patches"], series)
            except PatchDoesNotApply:
                # Both paths put the work tree back at the bare base before raising.
                state_file.write_text(json.dumps({"base": base, "patches": []}))
                raise
            state_file.write_text(json.dumps(wanted))
        yield PatchedTree(work, base, tuple(series))


def _make_work_tree(tree: Path, git: bool, work: Path) -> None:
    tmp = work.with_name("tree.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    if git:
        print(f"harness: cloning {tree} (shared objects) to patch it", file=sys.stderr,
              flush=True)
        subprocess.run(["git", "clone", "--quiet", "--shared", "--no-checkout", str(tree),
                        str(tmp)], check=True)
    else:
        print(f"harness: copying {tree} to patch it (not a git checkout)", file=sys.stderr,
              flush=True)
        subprocess.run(["cp", "-a", "--reflink=auto", str(tree), str(tmp)], check=True)
    tmp.rename(work)
