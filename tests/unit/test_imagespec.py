from pathlib import Path

import pytest

from harness.core.errors import SpecError, ToolMissing
from harness.erofs.images import FileSpec, content_bytes, load_catalog
from harness.erofs.tools import check
from harness.results.report import CaseResult, Report

ROOT = Path(__file__).resolve().parents[2]


def test_shipped_catalog_loads_with_every_compressor_family() -> None:
    catalog = load_catalog(ROOT / "testcases" / "images.yaml")
    assert {"sizes-lz4", "sizes-lzma", "sizes-zstd", "renamed-deflate"} <= set(catalog.images)
    assert catalog.image("sizes-lz4hc-packed").mkfs_args() == [
        "--xattr-inode-digest", "-zlz4hc", "-Efragments,dedupe,ztailpacking"]
    assert catalog.image("sizes-nofp").mkfs_args() == []
    assert catalog.image("sizes-customfp").mkfs_args() == [
        "--xattr-inode-digest=trusted.harness.fp"]
    assert catalog.image("shared-xattrs-metabox").mkfs_args() == [
        "--xattr-inode-digest", "-m4096"]


def test_same_seed_and_size_means_same_content_whatever_the_name() -> None:
    a = FileSpec("x", size=9000, seed=3, mode=0o600, uid=5)
    b = FileSpec("y/z", size=9000, seed=3)
    assert a.content == b.content and a.data() == b.data()
    assert FileSpec("x", size=9000, seed=4).data() != a.data()


def test_holes_read_as_zeros_and_change_the_content() -> None:
    plain = FileSpec("s", size=16384, seed=1)
    sparse = FileSpec("s", size=16384, seed=1, holes=((4096, 8192),))
    assert sparse.data()[4096:12288] == bytes(8192)
    assert sparse.data()[:4096] == plain.data()[:4096]
    assert sparse.content != plain.content


def test_content_is_compressible_but_not_trivial() -> None:
    import zlib
    data = content_bytes(7, 1 << 20)
    ratio = len(zlib.compress(data)) / len(data)
    assert 0.3 < ratio < 0.8, ratio


def _catalog(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "images.yaml"
    path.write_text(text)
    return path


def test_unknown_file_key_names_file_and_line(tmp_path: Path) -> None:
    path = _catalog(tmp_path, "trees:\n  t:\n    files:\n      - {path: a, szie: 3}\n"
                              "images:\n  i: {tree: t}\n")
    with pytest.raises(SpecError, match=r"images.yaml:4: unknown key 'szie'"):
        load_catalog(path)


def test_image_of_unknown_tree_names_the_line(tmp_path: Path) -> None:
    path = _catalog(tmp_path, "trees:\n  t:\n    files: []\nimages:\n  i: {tree: nope}\n")
    with pytest.raises(SpecError, match=r"images.yaml:5: image 'i' uses unknown tree 'nope'"):
        load_catalog(path)


def test_unknown_compressor_is_refused(tmp_path: Path) -> None:
    path = _catalog(tmp_path, "trees:\n  t:\n    files: []\nimages:\n"
                              "  i: {tree: t, compressor: brotli}\n")
    with pytest.raises(SpecError, match="unknown compressor 'brotli'"):
        load_catalog(path)


def test_template_errors_name_the_catalog(tmp_path: Path) -> None:
    path = _catalog(tmp_path, "trees: {}\nimages: {}\n{{ undefined_thing }}\n")
    with pytest.raises(SpecError, match=r"images.yaml:\S+: template error"):
        load_catalog(path)


def test_old_mkfs_erofs_is_refused_with_its_version(tmp_path: Path) -> None:
    fake = tmp_path / "mkfs.erofs"
    fake.write_text("#!/bin/sh\necho 'mkfs.erofs (erofs-utils) 1.5'\n")
    fake.chmod(0o755)
    with pytest.raises(ToolMissing, match=r"erofs-utils 1\.5; the suite needs >= 1\.9"):
        check(fake, "$MKFS_EROFS")


def test_savings_compare_against_no_sharing_and_ideal() -> None:
    report = Report({"kernel": "k", "accel": "tcg"}, [
        CaseResult("t::cached[loop]", "passed", 1.0,
                   {"cached_first_kib": 4096, "cached_second_kib": 0}),
        CaseResult("t::many[loop]", "passed", 1.0,
                   {"readers": 4, "file_kib": 4096, "cached_all_kib": 4096})])
    rows = {row["case"]: row for row in report.savings()}
    assert rows["t::cached[loop]"]["saving"] == 0.5
    assert rows["t::many[loop]"]["baseline"] == 4 * 4096
    assert rows["t::many[loop]"]["saving"] == 0.5
    assert "2 passed" in report.table()


def test_exploration_rows_carry_steps_per_second_and_rules(tmp_path: Path) -> None:
    report = Report({"kernel": "k", "accel": "tcg", "kernel_spec": "s", "mkfs": "m"}, [
        CaseResult("t::explore", "passed", 30.0,
                   {"explore_steps": 200, "explore_seconds": 40.0,
                    "explore_steps_per_second": 5.0, "explore_sequences": 12,
                    "explore_rule_mount": 30, "explore_rule_read": 20})])
    [row] = report.exploration()
    assert row["steps_per_second"] == 5.0 and row["rules"] == {"mount": 30, "read": 20}
    assert "200 steps, 12 sequences, 5.0 steps/s; rules: mount=30 read=20" in report.table()
    _, html_path = report.write(tmp_path)
    assert "Stateful exploration" in html_path.read_text()


def test_hostile_section_counts_trials_and_a_crashed_one_as_failed(tmp_path: Path) -> None:
    hostile = "testcases/test_hostile_images.py::test_damage_is_refused_or_contained"
    m = {"hostile_refused": 1, "hostile_read_errors": 0, "hostile_foreign": 0,
         "hostile_images_unchanged": 1}
    report = Report({"kernel": "k", "accel": "tcg", "kernel_spec": "s", "mkfs": "m"}, [
        CaseResult(f"{hostile}[a]", "passed", 1.0, m),
        CaseResult(f"{hostile}[b]", "passed", 1.0, {**m, "hostile_refused": 0,
                                                   "hostile_read_errors": 3,
                                                   "hostile_foreign": 2}),
        CaseResult(f"{hostile}[c]", "failed", 1.0, {}),  # the guest died: nothing measured
        CaseResult("t::other", "passed", 1.0, {})])
    assert report.robustness() == {"inputs": 3, "mounts_refused": 1, "read_errors": 3,
                                   "twins_served_damaged_bytes": 2, "failed": 1,
                                   "images_unchanged": 2}
    assert "hostile images: inputs 3, mounts refused 1" in report.table()
    _, html_path = report.write(tmp_path)
    assert "Hostile images" in html_path.read_text()
