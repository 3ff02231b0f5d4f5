"""Patch series: reading mboxes, and a patch that does not apply (git and plain trees)."""

import subprocess
from pathlib import Path

import pytest

from harness.core import cache
from harness.core.errors import SpecError
from harness.kernel.patches import PatchDoesNotApply, PatchedTree, prepared_tree, read_series

ROOT = Path(__file__).resolve().parents[2]


def _mail(number: int, subject: str, hunks: str) -> str:
    """One message of an mbox as git format-patch writes it (with the '-- ' signature)."""
    return (f"From {str(number) * 40} Mon Sep 17 00:00:00 2001\nFrom: A <a@localhost>\n"
            f"Subject: [PATCH {number}/2] {subject}\n\n---\n"
            f"diff --git a/fs/a.c b/fs/a.c\n--- a/fs/a.c\n+++ b/fs/a.c\n{hunks}"
            f"-- \n2.39.5\n\n")


GOOD = _mail(1, "fs: say hello", "@@ -1,3 +1,3 @@\n one\n-two\n+hello\n three\n")
BAD = _mail(2, "fs: change a line that is not there",
            "@@ -1,3 +1,3 @@\n one\n-two\n+bye\n three\n"
            "@@ -10,3 +10,3 @@\n ten\n-eleven\n+ELEVEN\n twelve\n")


def prepare_tree(tree: Path, patches: Path, upto: int | None = None) -> PatchedTree:
    with prepared_tree(tree, patches, upto=upto) as patched:
        return patched


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cache, "cache_root", lambda: tmp_path / "cache")


def _tree(root: Path, git: bool) -> Path:
    (root / "fs").mkdir(parents=True)
    (root / "fs" / "a.c").write_text("".join(f"{w}\n" for w in (
        "one two three four five six seven eight nine ten eleven twelve".split())))
    (root / "fs" / "b.c").write_text("no patch touches this file\n")
    if git:
        for args in (["init", "-q"], ["add", "."],
                     ["-c", "user.name=t", "-c", "user.email=t@localhost", "commit", "-qm",
                      "base"]):
            subprocess.run(["git", "-C", str(root), *args], check=True)
    return root


def test_shipped_mbox_has_the_planting_and_the_fixing_patch() -> None:
    series = read_series(ROOT / "reports" / "patches" / "ishare-size-check.mbox")
    assert [p.subject for p in series] == [
        "[PATCH 1/2] erofs: ishare: trust the fingerprint for the file size",
        "[PATCH 2/2] erofs: ishare: refuse to share inodes whose sizes differ"]


@pytest.mark.parametrize("git", [True, False], ids=["git-am", "patch-p1"])
def test_series_applies_onto_a_copy_and_leaves_the_tree_alone(tmp_path: Path,
                                                              git: bool) -> None:
    tree = _tree(tmp_path / "linux", git)
    (tmp_path / "s.mbox").write_text(GOOD)
    patched = prepare_tree(tree, tmp_path / "s.mbox")
    assert (patched.path / "fs" / "a.c").read_text().splitlines()[1] == "hello"
    assert (tree / "fs" / "a.c").read_text().splitlines()[1] == "two"
    assert [p.subject for p in patched.series] == ["[PATCH 1/2] fs: say hello"]


@pytest.mark.parametrize("git", [True, False], ids=["git-am", "patch-p1"])
def test_patch_that_does_not_apply_names_subject_and_first_rejected_hunk(
        tmp_path: Path, git: bool) -> None:
    tree = _tree(tmp_path / "linux", git)
    (tmp_path / "s.mbox").write_text(GOOD + BAD)
    with pytest.raises(PatchDoesNotApply) as info:
        prepare_tree(tree, tmp_path / "s.mbox")
    text = str(info.value)
    assert 'patch 2/2 "[PATCH 2/2] fs: change a line that is not there"' in text
    assert "First rejected hunk in fs/a.c:\n@@ -1,3 +1,3 @@\n one\n-two\n+bye" in text
    # The work tree is back at the pristine base, and the user's tree is untouched.
    (work,) = (tmp_path / "cache" / "worktrees").glob("*/tree")
    assert (work / "fs" / "a.c").read_text().splitlines()[1] == "two"
    assert (tree / "fs" / "a.c").read_text().splitlines()[1] == "two"


@pytest.mark.parametrize("git", [True, False], ids=["git-am", "patch-p1"])
def test_switching_between_checkpoints_reuses_one_work_tree(tmp_path: Path, git: bool) -> None:
    tree = _tree(tmp_path / "linux", git)
    second = _mail(2, "fs: say tres", "@@ -2,3 +2,3 @@\n hello\n-three\n+tres\n four\n")
    (tmp_path / "s.mbox").write_text(GOOD + second)
    both = prepare_tree(tree, tmp_path / "s.mbox")
    assert (both.path / "fs" / "a.c").read_text().splitlines()[1:3] == ["hello", "tres"]
    # What make decides by: a file no patch touches keeps its mtime across the switch,
    # so its object in the build directory stays valid.
    untouched = (both.path / "fs" / "b.c").stat().st_mtime_ns
    first = prepare_tree(tree, tmp_path / "s.mbox", upto=1)
    assert first.path == both.path
    assert (first.path / "fs" / "a.c").read_text().splitlines()[1:3] == ["hello", "three"]
    assert (first.path / "fs" / "b.c").stat().st_mtime_ns == untouched


def test_upto_takes_a_prefix_of_the_series(tmp_path: Path) -> None:
    tree = _tree(tmp_path / "linux", True)
    (tmp_path / "s.mbox").write_text(GOOD + BAD)
    assert len(prepare_tree(tree, tmp_path / "s.mbox", upto=1).series) == 1
    with pytest.raises(SpecError, match=r"upto=3: the series .* has 2 patch"):
        prepare_tree(tree, tmp_path / "s.mbox", upto=3)


def test_a_file_that_is_not_a_patch_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello\n")
    with pytest.raises(SpecError, match=r"neither an mbox .* nor a patch"):
        read_series(tmp_path / "notes.txt")


def test_an_immutable_tree_is_built_in_the_work_tree_even_without_patches(
        tmp_path: Path) -> None:
    tree = _tree(tmp_path / "src", git=False)
    mbox = tmp_path / "good.mbox"
    mbox.write_text(GOOD)
    with prepared_tree(tree, immutable=True) as bare:
        bare_path = bare.path
        assert bare.series == () and (bare_path / "fs" / "a.c").read_text().startswith("one\ntwo")
    patched = prepare_tree(tree, mbox)
    assert patched.path == bare_path  # one build directory for both
    with prepared_tree(tree, immutable=True) as again:
        assert "two" in (again.path / "fs" / "a.c").read_text()  # the patch was taken back
    with prepared_tree(tree) as mutable:
        assert mutable.path == tree  # a tree the user edits is built where it is


def _commit(tree: Path, message: str) -> str:
    subprocess.run(["git", "-C", str(tree), "-c", "user.name=t", "-c", "user.email=t@localhost",
                    "commit", "-qam", message], check=True)
    return subprocess.run(["git", "-C", str(tree), "rev-parse", "HEAD"], check=True,
                          capture_output=True, text=True).stdout.strip()


def test_ref_builds_the_tree_at_that_commit_and_leaves_the_users_checkout_alone(
        tmp_path: Path) -> None:
    tree = _tree(tmp_path / "linux", True)
    base = subprocess.run(["git", "-C", str(tree), "rev-parse", "HEAD"], check=True,
                          capture_output=True, text=True).stdout.strip()
    (tree / "fs" / "a.c").write_text((tree / "fs" / "a.c").read_text().replace("two", "TWO"))
    later = _commit(tree, "later")
    (tmp_path / "good.mbox").write_text(GOOD)
    with prepared_tree(tree, ref=base) as at_base:
        assert at_base.base == base and at_base.series == ()
        assert (at_base.path / "fs" / "a.c").read_text().splitlines()[1] == "two"
    # The patch applies onto the older commit it was written for, not onto the checkout.
    with prepared_tree(tree, tmp_path / "good.mbox", ref=base[:12]) as patched:
        assert patched.base == base
        assert (patched.path / "fs" / "a.c").read_text().splitlines()[1] == "hello"
    with prepared_tree(tree, ref="HEAD") as at_head:
        assert at_head.base == later
        assert (at_head.path / "fs" / "a.c").read_text().splitlines()[1] == "TWO"
    assert (tree / "fs" / "a.c").read_text().splitlines()[1] == "TWO"
    assert subprocess.run(["git", "-C", str(tree), "status", "--porcelain"], check=True,
                          capture_output=True, text=True).stdout == ""


def test_a_ref_the_tree_lacks_or_a_tree_without_git_is_named_in_the_error(
        tmp_path: Path) -> None:
    tree = _tree(tmp_path / "linux", True)
    with pytest.raises(SpecError, match=r"ref 'v9\.9' is not a commit in .*linux"):
        prepare_ref(tree, "v9.9")
    plain = _tree(tmp_path / "plain", False)
    with pytest.raises(SpecError, match=r"ref=HEAD: .*plain is not a git checkout"):
        prepare_ref(plain, "HEAD")


def prepare_ref(tree: Path, ref: str) -> PatchedTree:
    with prepared_tree(tree, ref=ref) as at_ref:
        return at_ref
