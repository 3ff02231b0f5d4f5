"""CI configuration generated from a matrix file: a GitHub Actions workflow and a GitLab CI
pipeline, one job per cell. The generated files are committed; ``check_ci_files`` (run by a
test of the harness) says which ones no longer match the matrix."""

from __future__ import annotations

from pathlib import Path

import jinja2

from harness.core.paths import PROJECT, TEMPLATES
from harness.matrix.run import load_matrix

CI_TEMPLATES = TEMPLATES / "ci"
# The Debian release the CI cells run in: the harness builds erofs-utils and its guest from
# this release's packages, as on a developer's Debian 12 machine.
CONTAINER = "debian:bookworm"
OUTPUTS = {"github-nightly.yml.j2": Path(".github/workflows/nightly.yml"),
           "gitlab-ci.yml.j2": Path(".gitlab-ci.yml")}


def render_ci_files(matrix_path: Path, root: Path = PROJECT) -> dict[Path, str]:
    matrix = load_matrix(matrix_path)
    rel = matrix_path.resolve().relative_to(root)
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(CI_TEMPLATES)),
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                             trim_blocks=True, lstrip_blocks=True)
    return {root / out: env.get_template(name).render(cells=matrix.cells, matrix_path=rel,
                                                         container=CONTAINER)
            for name, out in OUTPUTS.items()}


def write_ci_files(matrix_path: Path, root: Path = PROJECT) -> list[Path]:
    written = []
    for path, text in render_ci_files(matrix_path, root).items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    return written


def check_ci_files(matrix_path: Path, root: Path = PROJECT) -> list[Path]:
    return [path for path, text in render_ci_files(matrix_path, root).items()
            if not path.is_file() or path.read_text() != text]
