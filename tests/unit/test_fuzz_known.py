"""A fuzz find that is a known bug again (an earlier find's known_bug signature, on a kernel
it applies to) is counted, not reported: the nightly's fuzz cells go on past it."""

from __future__ import annotations

from pathlib import Path

from harness.campaign.found import known_finds, which_known
from harness.campaign.runner import FOUND
from harness.kernel.kernel import Kernel
from harness.kernel.spec import parse_kernel_spec

PCLUSTER = ("healthy mount after the damaged one was read: data/plain (read(2)) gave "
            "75b01bf0e249, not 9ba0bbac2b3c; the damaged twin served read: Operation not "
            "supported")


def kernel(release: str, series: tuple[str, ...] = ()) -> Kernel:
    return Kernel(spec=parse_kernel_spec("debian:7.3"),
                  release=release, vmlinuz=Path("/k"), modules_dir=None,
                  series=series)


def test_the_shipped_finds_know_the_pcluster_reuse_on_debian_kernels_only_unfixed() -> None:
    known = known_finds(kernel("7.3.4+deb13-cloud-amd64"), "fuzz", FOUND)
    assert which_known(PCLUSTER, known) is not None
    assert which_known("kernel report: BUG: KASAN: slab-use-after-free", known) is None
    fixed = known_finds(kernel("7.3.4", ("erofs: refuse to reuse a pcluster the map "
                                         "describes differently",)), "fuzz", FOUND)
    assert which_known(PCLUSTER, fixed) is None  # on the fixed tree it is a find again
    assert which_known(PCLUSTER, known_finds(kernel("6.12.117"), "fuzz", FOUND)) is None


def test_finds_without_a_known_bug_or_for_other_releases_are_not_known(tmp_path: Path) -> None:
    (tmp_path / "fuzz-a.yaml").write_text("title: no known bug here\n")
    (tmp_path / "fuzz-b.yaml").write_text(
        "known_bug: {reason: r, signature: 'gave [0-9a-f]+', releases: '==7.2'}\n")
    assert known_finds(kernel("7.3.4"), "fuzz", tmp_path) == {}
    assert set(known_finds(kernel("7.2.13"), "fuzz", tmp_path)) == {"fuzz-b"}
