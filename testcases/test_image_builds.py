"""Image builds on the host: reproducible, fingerprinted when asked, checked by fsck."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from harness.core import cache
from harness.erofs.images import Catalog, build_image
from harness.erofs.tools import ErofsUtils

NAMES = ["sizes", "sizes-lz4hc", "sizes-tar", "sizes-chunk64k"]


@pytest.mark.parametrize("name", NAMES)
def test_same_spec_builds_the_same_bytes(image_catalog: Catalog, erofs_tools: ErofsUtils,
                                         name: str, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    images = []
    for attempt in ("one", "two"):
        monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / attempt))
        images.append(build_image(image_catalog.image(name), erofs_tools))
    assert images[0].path != images[1].path
    assert cache.file_sha256(images[0].path) == cache.file_sha256(images[1].path), (
        f"{name} built twice differs: -T/-U do not make it reproducible")


@pytest.mark.parametrize("name", ["sizes", "sizes-nofp", "sizes-tar"])
def test_fingerprint_feature_follows_the_spec(image_catalog: Catalog, erofs_tools: ErofsUtils,
                                              name: str) -> None:
    assert erofs_tools.dump is not None
    image = build_image(image_catalog.image(name), erofs_tools)
    out = subprocess.run([str(erofs_tools.dump), str(image.path)], capture_output=True,
                         text=True, check=True).stdout
    features = next(line for line in out.splitlines() if "compatible features" in line
                    and "incompatible" not in line.lower())
    assert ("ishare_xattrs" in features) == bool(image.spec.fingerprint), features


@pytest.mark.parametrize("name", ["sizes", "sizes-lzma", "sizes-tar"])
def test_fsck_verifies_fingerprints(image_catalog: Catalog, erofs_tools: ErofsUtils,
                                    name: str) -> None:
    assert erofs_tools.fsck is not None
    image = build_image(image_catalog.image(name), erofs_tools)
    proc = subprocess.run([str(erofs_tools.fsck), "--xattr-inode-digest", str(image.path)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_fsck_detects_the_forged_fingerprint(erofs_tools: ErofsUtils, forged_renamed) -> None:
    """The same check passes on genuine images above; a page changed under its fingerprint
    must make it fail, or the check proves nothing."""
    assert erofs_tools.fsck is not None
    proc = subprocess.run([str(erofs_tools.fsck), "--xattr-inode-digest",
                           str(forged_renamed.path)], capture_output=True, text=True,
                          check=False)
    assert proc.returncode != 0, f"fsck accepted the forged image: {proc.stdout}{proc.stderr}"
