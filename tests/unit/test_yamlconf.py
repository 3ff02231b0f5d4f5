from pathlib import Path

import pytest

from harness.core.errors import SpecError
from harness.core.yamlconf import check_keys, load_yaml
from harness.guestimage.build import load_recipe


def test_duplicate_key_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text("a: 1\nb: 2\na: 3\n")
    with pytest.raises(SpecError, match=r"m.yaml:3: duplicate key 'a' \(first at line 1\)"):
        load_yaml(path)


def test_unknown_key_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text("kernels: []\nkernals: []\n")
    data = load_yaml(path)
    with pytest.raises(SpecError, match=r"m.yaml:2: unknown key 'kernals'"):
        check_keys(data, {"kernels"}, set(), "the matrix")


def test_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text("a: [1, 2\nb: 3\n")
    with pytest.raises(SpecError, match=r"m.yaml:\d+: invalid YAML"):
        load_yaml(path)


def test_shipped_guest_recipe_is_valid() -> None:
    recipe = load_recipe()
    assert "virtio_net" in recipe.get("boot_modules")


def test_recipe_with_misspelt_key_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "guest.yaml"
    path.write_text("binaries: []\nmodules: []\nboot_modules: []\ntemplates: {}\nbinares: []\n")
    with pytest.raises(SpecError, match=r"guest.yaml:5: unknown key 'binares'"):
        load_recipe(path)
