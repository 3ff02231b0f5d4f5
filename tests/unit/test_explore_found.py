"""Where the explorer writes what it found, and whether `make repro` can read it back."""

from __future__ import annotations

from pathlib import Path

import yaml

from harness.core.paths import PROJECT
from harness.explore.found import found_id, load_steps, write_found
from harness.kernel.spec import parse_kernel_spec
from harness.repro.spec import load_report

STEPS = [{"do": "mount", "mount": "m1", "image": "sizes", "source": "loop", "options": ""},
         {"do": "drop_caches"}]


def test_a_find_on_a_distribution_kernel_is_a_bug_report(tmp_path: Path) -> None:
    path = write_found(parse_kernel_spec("debian:7.3"), 7, "step 2: boom", STEPS, tmp_path,
                       after_steps=120, after_seconds=33.33)
    data = yaml.safe_load(path.read_text())
    assert path.name == f"{found_id('debian:7.3', STEPS)}.yaml"
    assert data["expect_verdicts"] == {"base": "reproduced"}
    assert "patches" not in data
    assert data["explore"]["after_steps"] == 120 and data["explore"]["after_seconds"] == 33.3
    assert load_steps(path) == STEPS
    load_report(path, set())  # make repro accepts it


def test_a_find_on_a_patched_tree_names_the_break_and_expects_the_tree_to_agree(
        tmp_path: Path) -> None:
    patch = PROJECT / "reports" / "patches" / "mutations" / "domain-ignored.patch"
    kernel = f"tree:,patches={patch}"
    path = write_found(parse_kernel_spec(kernel), 7, "step 2: boom", STEPS, tmp_path)
    data = yaml.safe_load(path.read_text())
    assert data["kernel"] == "tree:"
    assert (tmp_path / data["patches"]).resolve() == patch.resolve()
    assert data["expect_verdicts"] == {"base": "not reproduced", "patched": "reproduced"}
    load_report(path, set())
