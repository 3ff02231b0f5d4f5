"""Fragments and the dropped-option check, on a miniature Kconfig tree."""

from pathlib import Path

import pytest

from harness.core.errors import SpecError
from harness.kernel import kconfig
from harness.kernel.kbuild import KCONFIGS
from harness.kernel.spec import parse_tree_spec

ROOT = Path(__file__).resolve().parents[2]


def _mini_tree(root: Path) -> Path:
    (root / "fs" / "erofs").mkdir(parents=True)
    (root / "Kconfig").write_text('mainmenu "mini"\nsource "fs/Kconfig"\n')
    (root / "fs" / "Kconfig").write_text(
        'config BLOCK\n\tbool "block"\n'
        'menuconfig MISC_FILESYSTEMS\n\tbool "misc"\n\thelp\n\t  if you say N here, depends '
        'on nothing\n\n'
        'if MISC_FILESYSTEMS\nsource "fs/erofs/Kconfig"\nendif # MISC_FILESYSTEMS\n')
    (root / "fs" / "erofs" / "Kconfig").write_text(
        'config EROFS_FS\n\ttristate "erofs"\n\tdepends on BLOCK\n'
        'config EROFS_FS_XATTR\n\tbool "xattr"\n\tdepends on EROFS_FS\n'
        'config EROFS_FS_PAGE_CACHE_SHARE\n\tbool "share"\n'
        '\tdepends on EROFS_FS && EROFS_FS_XATTR\n')
    return root


def test_every_shipped_option_says_why_it_is_there() -> None:
    for fragment in sorted(KCONFIGS.glob("*.config")):
        requests = kconfig.parse_fragment(fragment)
        assert requests, f"{fragment} requests nothing"
        missing = [r.where for r in requests if not r.why]
        assert not missing, f"options without a reason: {missing}"


def test_erofs_fragment_asks_for_the_menu_that_guards_erofs() -> None:
    names = {r.name for r in kconfig.parse_fragment(KCONFIGS / "erofs.config")}
    assert {"CONFIG_MISC_FILESYSTEMS", "CONFIG_EROFS_FS",
            "CONFIG_EROFS_FS_PAGE_CACHE_SHARE"} <= names


def test_reasons_are_stripped_before_kconfig_sees_the_lines(tmp_path: Path) -> None:
    frag = tmp_path / "f.config"
    frag.write_text("CONFIG_A=y  # because\n# CONFIG_B is not set  # off\nCONFIG_C=\"x y\" # s\n")
    reqs = kconfig.parse_fragment(frag)
    kconfig.write_clean_fragment(reqs, tmp_path / "clean")
    assert (tmp_path / "clean").read_text() == \
        'CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C="x y"\n'
    assert [r.why for r in reqs] == ["because", "off", "s"]


def test_a_malformed_fragment_line_names_file_and_line(tmp_path: Path) -> None:
    frag = tmp_path / "bad.config"
    frag.write_text("CONFIG_A=y\nEROFS=y\n")
    with pytest.raises(SpecError, match=r"bad.config:2: not a kernel config line"):
        kconfig.parse_fragment(frag)


def test_later_fragment_overrides_earlier(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("CONFIG_X=y # a\n")
    (tmp_path / "b").write_text("# CONFIG_X is not set # b\n")
    (req,) = kconfig.merge_requests([tmp_path / "a", tmp_path / "b"])
    assert req.value == "n" and req.where.endswith("b:1")


def test_dropped_option_is_named_with_its_missing_dependency(tmp_path: Path) -> None:
    tree = _mini_tree(tmp_path / "linux")
    frag = tmp_path / "erofs.config"
    frag.write_text("CONFIG_EROFS_FS=y # fs\nCONFIG_EROFS_FS_PAGE_CACHE_SHARE=y # share\n")
    config = tmp_path / ".config"
    config.write_text("CONFIG_BLOCK=y\n# CONFIG_MISC_FILESYSTEMS is not set\n")
    with pytest.raises(kconfig.KconfigDropped) as info:
        kconfig.check_config(tree, kconfig.parse_fragment(frag), config)
    text = str(info.value)
    assert "2 requested kernel option(s) were dropped" in text
    assert "CONFIG_EROFS_FS=y (" in text and "erofs.config:1" in text
    assert "depends on MISC_FILESYSTEMS (fs/Kconfig:8; here MISC_FILESYSTEMS=n)" in text
    assert "depends on EROFS_FS && EROFS_FS_XATTR (fs/erofs/Kconfig:9; here EROFS_FS=n, " \
           "EROFS_FS_XATTR=n)" in text


def test_kept_options_pass_and_unknown_ones_are_called_unknown(tmp_path: Path) -> None:
    tree = _mini_tree(tmp_path / "linux")
    config = tmp_path / ".config"
    config.write_text("CONFIG_BLOCK=y\nCONFIG_MISC_FILESYSTEMS=y\nCONFIG_EROFS_FS=y\n")
    frag = tmp_path / "f"
    frag.write_text("CONFIG_EROFS_FS=y # a\n")
    kconfig.check_config(tree, kconfig.parse_fragment(frag), config)
    frag.write_text("CONFIG_EROFS_TYPO=y # a\n")
    with pytest.raises(kconfig.KconfigDropped, match=r"no Kconfig file .* defines it"):
        kconfig.check_config(tree, kconfig.parse_fragment(frag), config)


@pytest.mark.parametrize(("expr", "value"), [
    ("A && B", "n"), ("A || B", "y"), ("!B", "y"), ("A && (B || C)", "m"),
    ("C = m", "y"), ("A != y", "n"), ("(((A && C) || B) && A) || B", "m")])
def test_kconfig_expressions_evaluate_as_tristates(expr: str, value: str) -> None:
    config = {"CONFIG_A": "y", "CONFIG_C": "m"}
    assert kconfig.evaluate(expr, config) == value


def test_tree_specs_parse_and_reject_unknown_options() -> None:
    req = parse_tree_spec("/src/linux,patches=x.mbox,upto=1,kconfig=a.config+b.config,debug")
    assert req.tree == Path("/src/linux") and req.upto == 1 and req.debug
    assert [f.name for f in req.fragments] == ["a.config", "b.config"]
    assert parse_tree_spec("").tree is None
    with pytest.raises(SpecError, match="unknown option 'jobs=3'"):
        parse_tree_spec("/src,jobs=3")
    with pytest.raises(SpecError, match="upto= needs patches="):
        parse_tree_spec("/src,upto=2")


def test_a_tree_spec_may_name_the_debian_source_series_of_the_default_tree() -> None:
    req = parse_tree_spec(",source=7.2,patches=fix.mbox")
    assert req.tree is None and req.source == "7.2" and str(req).startswith("tree:,source=7.2")
    assert parse_tree_spec(str(req)[len("tree:"):]) == req
    with pytest.raises(SpecError, match="for the default tree only"):
        parse_tree_spec("/src/linux,source=7.2")
    with pytest.raises(SpecError, match="unknown option 'source=seven'"):
        parse_tree_spec(",source=seven")
