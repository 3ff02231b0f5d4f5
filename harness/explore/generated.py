"""Generated images in the explorer's pool (``make explore GENERATED=<n>``): the images of
``make layouts`` examples (a generated tree and a variant of it, each built with its own
generated mkfs.erofs layout), so that sequences of mounts, reads and unmounts meet layouts
nobody picked, and twins across two unusual layouts.

The same seed and count draw the same trees and layouts (hypothesis draws them with that
seed), so a found sequence names ``generated: {seed, count}`` and its replay builds the pool
again: what the model knows of each file (size, bytes, fingerprint, compressed or not) is
the same, though mkfs.erofs 1.9.4 does not write the same bytes twice for every layout
(seen with -zlz4hc:lz4 -E48bit --MZ=i --dsunit=4).
Kept out: images the explorer cannot mount from one device (a blob device, an index-only
tar), mkfs refusals and erofs-utils failures, and, unless known bugs are let in, images
with blocks smaller than a page (their sharing mounts meet reports/ishare-subpage-tail.yaml).
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import hypothesis
from hypothesis import HealthCheck, Phase, settings

from harness.core.draws import seed_alone
from harness.erofs.images import BuiltImage
from harness.erofs.tools import ErofsUtils
from harness.explore.model import PoolFile, PoolImage
from harness.layouts.build import Built, build
from harness.layouts.check import Example
from harness.layouts.search import examples

FILES_PER_IMAGE = 3  # the explorer checks every pool file of every mount at each step
PAGE = 4096


@dataclass
class GeneratedPool:
    seed: int
    count: int  # examples drawn (two images each)
    images: dict[str, BuiltImage]
    pool: dict[str, PoolImage]
    left_out: dict[str, str]  # image name -> why it is not in the pool
    workdir: Path

    def close(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)


def draw_examples(seed: int, count: int) -> list[Example]:
    """``count`` examples of ``make layouts``'s strategy, the same for the same seed."""
    drawn: list[Example] = []

    @hypothesis.seed(seed)
    @settings(max_examples=count, deadline=None, database=None, phases=(Phase.generate,),
              suppress_health_check=list(HealthCheck))
    @hypothesis.given(examples())
    def collect(example: Example) -> None:
        drawn.append(example)

    with seed_alone():
        collect()
    return drawn[:count]


def pool_of(built: Built) -> PoolImage | None:
    """The explorer's view of a generated image: up to FILES_PER_IMAGE non-empty regular
    files (the shared-cache candidates), each with its size, bytes and fingerprint."""
    files = []
    for node in sorted(built.tree.files(), key=lambda n: n.path):
        facts = built.files.get(node.path)
        if facts is None or node.size == 0:
            continue
        data = node.data()
        digest = hashlib.sha256(data).hexdigest()
        # mkfs's digest is the sha256 of the bytes: equal bytes, equal fingerprints.
        files.append(PoolFile(node.path, node.size, digest,
                              f"sha256:{digest}" if built.fingerprinted else None,
                              "compressed" if facts.compressed else "plain"))
        if len(files) == FILES_PER_IMAGE:
            break
    return PoolImage(built.name, tuple(files)) if files else None


def why_left_out(built: Built, known_bugs: bool) -> str | None:
    if built.refused is not None:
        return f"mkfs refused it: {built.refused}"
    if built.utils_bug is not None:
        return f"erofs-utils: {built.utils_bug}"
    if built.image is None:
        return "no image"
    if built.layout.blobdev or built.layout.tar == "i":
        return "its data is on an extra device"
    if built.block_size < PAGE and not known_bugs:
        return (f"{built.block_size}-byte blocks (the sub-page bug, "
                f"reports/ishare-subpage-tail.yaml; KNOWN=1 lets it in)")
    return None


def generated_pool(seed: int, count: int, tools: ErofsUtils, known_bugs: bool = False,
                   say: Callable[[str], None] = print) -> GeneratedPool:
    """Draw ``count`` examples, build both images of each, keep those the explorer can use."""
    workdir = Path(tempfile.mkdtemp(prefix="erofs-explore-gen."))
    out = GeneratedPool(seed, count, {}, {}, {}, workdir)
    try:
        for number, example in enumerate(draw_examples(seed, count)):
            for side, tree, layout in (("a", example.tree_a, example.layout_a),
                                       ("b", example.tree_b, example.layout_b)):
                name = f"gen{number}-{side}"
                built = build(name, tree, layout, tools, workdir / name)
                why = why_left_out(built, known_bugs)
                view = pool_of(built) if why is None else None
                if why is None and view is None:
                    why = "no non-empty regular file"
                if why is not None or view is None or built.image is None:
                    out.left_out[name] = why or "no image"
                    continue
                out.images[name], out.pool[name] = built.image, view
            if number % 5 == 4 or number + 1 == count:
                say(f"explore: generated images: {number + 1} of {count} examples drawn, "
                    f"{len(out.images)} images kept")
    except BaseException:
        out.close()
        raise
    return out
