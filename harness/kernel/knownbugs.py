"""Whether a known bug applies to a kernel: by its release and the patches it was built with.

One rule for the pytest markers (``known_bug``), the explorer's guards and the fuzzer's
earlier finds, so that all three agree on which kernels carry a bug.
"""

from __future__ import annotations

import re


def release_tuple(release: str) -> tuple[int, ...]:
    """``7.3.4+deb13-cloud-amd64`` -> (7, 3, 4); () when the release has no version."""
    match = re.match(r"(\d+(?:\.\d+)*)", release)
    return tuple(int(x) for x in match.group(1).split(".")) if match else ()


def known_bug_applies(release: str, series: tuple[str, ...], releases: list[str],
                      when_patched: str | None, unless_patched: str | None) -> bool:
    """``releases``: bounds such as ``>=7.2`` or ``<7.4``, all of which must hold;
    ``when_patched``/``unless_patched``: text of a patch subject in the kernel's series."""
    have = release_tuple(release)
    for bound in releases:
        match = re.match(r"(>=|<=|<|>|==)(.*)", bound)
        if match is None:
            raise ValueError(f"release bound {bound!r} is not <op><version> (>=7.2, <7.4)")
        op, version = match.groups()
        want = release_tuple(version)
        ok = {">=": have >= want, "<=": have[:len(want)] <= want, "<": have < want,
              ">": have[:len(want)] > want, "==": have[:len(want)] == want}[op]
        if not ok:
            return False
    if when_patched and not any(when_patched in s for s in series):
        return False
    return not (unless_patched and any(unless_patched in s for s in series))
