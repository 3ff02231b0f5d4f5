"""A seeded draw of make layouts' strategy is the same whatever modules are imported: the
generated-layouts smoke must check the same layouts in every run of the suite, whichever
tests a worker ran before it."""

from __future__ import annotations

import subprocess
import sys

from harness.core.paths import PROJECT

DRAW = """
import sys
for name in sys.argv[1:]:
    __import__(name)
from harness.explore.generated import draw_examples
for example in draw_examples(20261206, 6):
    print(repr(example))
"""
# Modules full of string and integer literals, as a worker imports them after collection.
MORE = ["harness.campaign.found", "harness.explore.machine", "harness.guest.probe",
        "harness.erofs.superblock", "harness.kernel.kernel", "harness.races.ops"]


def _draw(*imports: str) -> str:
    return subprocess.run([sys.executable, "-c", DRAW, *imports], cwd=PROJECT, check=True,
                          capture_output=True, text=True, timeout=120).stdout


def test_a_seeded_draw_does_not_depend_on_the_modules_imported() -> None:
    alone, among_more = _draw(), _draw(*MORE)
    assert alone.count("\n") == 6
    assert among_more == alone, "the same seed drew other examples with more modules imported"
