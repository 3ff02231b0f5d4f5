"""make savings without a guest: the pairs file, the dependency closure, the identity and
ideal figures, the sharing census and the report, on small made-up trees."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from harness.core.errors import HarnessError, SpecError
from harness.savings import pairs
from harness.savings.report import markdown, write_report
from harness.savings.run import (
    CONFIGS,
    _configs,
    _counts,
    _ideal_containers,
    census_problems,
    sharing_census,
)


def _tree(side: str, files: dict[str, tuple[int, str]]) -> pairs.Tree:
    return pairs.Tree("p", side, Path("/nonexistent"), {}, files)


OLD = _tree("old", {"usr/bin/tool": (10000, "a"), "usr/lib/libx.so": (5000, "b"),
                    "etc/conf": (10, "c")})
NEW = _tree("new", {"usr/bin/tool": (10000, "a2"), "usr/lib/libx.so": (5000, "b"),
                    "usr/lib/moved": (10, "c"), "usr/share/new": (0, "e")})


def test_the_shipped_pairs_file_loads() -> None:
    spec = pairs.load_pairs()
    assert {"small", "medium", "large"} <= set(spec.pairs)
    assert spec.suites["old"] == ("bookworm",)


@pytest.mark.parametrize("body, culprit", [
    ("suites: {old: [a], new: [b]}\npairs:\n  x:\n    packages: []\n    run: [true]\n",
     ":4: packages of pair 'x'"),
    ("suites: {old: [a], new: [b]}\npairs:\n  x:\n    packages: [p]\n    run: ['a \"b']\n",
     ":5: pair 'x': cannot split"),
    ("suites: {old: [a], new: [b]}\npairs:\n  x:\n    packages: [p]\n    rnu: [true]\n",
     ":5: unknown key 'rnu'"),
])
def test_a_bad_pairs_file_names_file_and_line(tmp_path: Path, body: str, culprit: str) -> None:
    path = tmp_path / "pairs.yaml"
    path.write_text(body)
    with pytest.raises(SpecError, match=culprit):
        pairs.load_pairs(path)


def _stanza(name: str, version: str, suite: str, depends: str = "",
            provides: str = "") -> dict[str, str]:
    return {"Package": name, "Version": version, "Suite": suite, "Depends": depends,
            "Provides": provides}


def test_the_closure_follows_depends_alternatives_and_virtual_packages() -> None:
    index = pairs.Index([
        _stanza("app", "1.0", "bookworm", "libfoo (>= 1) | libbar, virtual-x, dpkg"),
        _stanza("app", "1.1", "bookworm-security", "libfoo, virtual-x"),
        _stanza("libfoo", "2", "bookworm"),
        _stanza("libbar", "3", "bookworm"),
        _stanza("provider", "4", "bookworm", provides="virtual-x"),
        _stanza("dpkg", "1.21", "bookworm"),
    ])
    old = index.closure(("app",), ("bookworm",), "here")
    assert {n: s["Version"] for n, s in old.items()} == {"app": "1.0", "libfoo": "2",
                                                         "provider": "4"}
    new = index.closure(("app",), ("bookworm", "bookworm-security"), "here")
    assert new["app"]["Version"] == "1.1"
    with pytest.raises(HarnessError, match="here: package 'nope'"):
        index.closure(("nope",), ("bookworm",), "here")


def test_identity_counts_contents_at_any_path() -> None:
    same = pairs.identity(OLD, NEW)
    assert (same.files_new, same.files_identical) == (4, 2)
    assert same.bytes_identical == 5010
    # Distinct contents a, a2, b, c, e: 3 + 3 + 2 + 1 + 0 pages.
    assert same.unique_pages == 9


def test_the_census_finds_unshared_twins_and_pages_without_one() -> None:
    census = sharing_census({"usr/lib/libx.so": 2, "usr/bin/tool": 1}, OLD, NEW)
    assert census["identical_files"] == 2
    assert census["shared_files"] == 1
    assert census["unshared_largest"] == [{"path": "usr/lib/moved", "size": 10}]
    assert census["resident_without_twin"] == ["usr/bin/tool"]


def test_the_containers_ideal_counts_each_content_once() -> None:
    touched = {"old": {"usr/bin/tool": 3, "usr/lib/libx.so": 2},
               "new": {"usr/bin/tool": 3, "usr/lib/libx.so": 1}}
    ideal = _ideal_containers(touched, {"old": OLD, "new": NEW}, (1, 2, 4))
    assert ideal == {"1": 5 * 4096, "2": 8 * 4096, "4": 8 * 4096}


def _results() -> dict[str, object]:
    def point(n: int, mib: float) -> dict[str, float]:
        return {"containers": n, "memcg_bytes": mib * 2**20, "cached_bytes": mib * 2**20}

    def read(mib: float) -> dict[str, object]:
        return {"memcg_bytes": mib * 2**20, "metadata_bytes": 2**20, "ttfb_seconds": 0.05,
                "read_bytes": [2**20], "read_seconds": [0.5],
                "census": sharing_census({}, OLD, NEW)}
    return {"kernel": "debian:7.3", "release": "7.3.4", "mkfs": "mkfs.erofs 1.9",
            "composefs": "1.0.8-3", "containers": [1, 2], "configs": ["erofs", "inode_share"],
            "seconds": 1.0,
            "pairs": {"p": {"packages": {"old": {"a": "1"}, "new": {"a": "2"}},
                            "identity": pairs.identity(OLD, NEW).as_dict(),
                            "ideal": {"read_all": 50 * 2**20, "containers": {"1": 10 * 2**20,
                                                                              "2": 15 * 2**20}},
                            "read_all": {"erofs": read(100), "inode_share": read(51)},
                            "containers": {"erofs": {"points": [point(1, 10), point(2, 20)]},
                                           "inode_share": {"points": [point(1, 10),
                                                                      point(2, 15.3)]}},
                            "errors": {"inode_share": "mount: EINVAL"}}}}


def test_the_table_gives_saving_and_distance_to_the_ideal(tmp_path: Path) -> None:
    table = markdown(_results())
    row = next(line for line in table.splitlines() if line.startswith("| EROFS inode_share"))
    assert "failed: mount: EINVAL" in row
    assert "| 51.0 MiB | 49.0% | +2.0% | +0.0% | 15.3 MiB | 23.5% | +2.0% | - |" in row
    write_report(_results(), tmp_path)
    assert (tmp_path / "savings-p.png").read_bytes().startswith(b"\x89PNG")
    assert "savings-p.png" in (tmp_path / "savings.html").read_text()


def test_each_further_container_is_the_slope_past_two() -> None:
    from harness.savings.report import rows
    results = _results()
    pair = results["pairs"]["p"]  # type: ignore[index]
    pair["containers"]["inode_share"]["points"].append(
        {"containers": 4, "memcg_bytes": 17.3 * 2**20, "cached_bytes": 0})
    row = rows(pair, ["inode_share"], 4)[0]
    assert row["further"] == "1.0 MiB"


def test_the_census_fails_the_run_where_the_kernel_breaks_a_claim() -> None:
    right = {"erofs": {"census": sharing_census({}, OLD, NEW)},
             "inode_share": {"census": sharing_census({"usr/lib/libx.so": 2,
                                                       "usr/lib/moved": 1}, OLD, NEW)},
             "composefs": {"census": sharing_census({"usr/lib/libx.so": 2}, OLD, NEW)}}
    assert census_problems("p", right) == []
    unshared = {"inode_share": {"census": sharing_census({"usr/lib/libx.so": 2}, OLD, NEW)}}
    assert census_problems("p", unshared) == [
        "p/inode_share: 1 byte-identical files not shared (usr/lib/moved)"]
    foreign = {"inode_share_buffered": {"census": sharing_census(
        {"usr/lib/libx.so": 2, "usr/lib/moved": 1, "usr/bin/tool": 1}, OLD, NEW)}}
    assert "without an identical twin" in census_problems("p", foreign)[0]
    private = {"erofs": {"census": sharing_census({"usr/lib/libx.so": 2}, OLD, NEW)}}
    assert census_problems("p", private) == [
        "p/erofs: 1 files resident before they were read, without inode_share"]


def test_savings_options_name_the_culprit() -> None:
    assert _counts("4,1,2,2") == (1, 2, 4)
    assert _configs("") == CONFIGS and _configs("erofs, overlay") == ("erofs", "overlay")
    for bad, culprit in (("1,x", "--containers='1,x'"), ("0,2", "1 or more"), ("", "1 or more")):
        with pytest.raises(HarnessError, match=re.escape(culprit)):
            _counts(bad)
    with pytest.raises(HarnessError, match="no configuration nfs"):
        _configs("erofs,nfs")
