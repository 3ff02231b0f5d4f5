"""Markers for kernel requirements and regressions; bad arguments are usage errors."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from harness.kernel.kernel import FEATURES, Kernel
from harness.kernel.knownbugs import known_bug_applies, release_tuple

MARKERS = [
    "requires_kernel(*needs, reason=None): skip, with the reason, unless the kernel under test "
    "has every listed feature (" + ", ".join(FEATURES) + "), config option (CONFIG_...) or "
    "minimum release ('>=6.16')",
    "regression(report, fix, fixed_in=None): a regression test for the bug report at URL "
    "`report`, fixed by commit `fix`; skipped with that reason on kernels older than fixed_in",
    "known_bug(reason, signature, releases=None, when_patched=None, unless_patched=None, "
    "params=None, kernels=None, without_config=None, with_config=None, strict=True): a known "
    "kernel bug, expected on kernels whose release is in "
    "`releases` (e.g. '>=7.2,<7.4'), whose spec matches one of the shell patterns `kernels` "
    "if given (e.g. ['tree:*']: a bug that shows on builds of a source and not on the "
    "distribution's binary of it), and, if given, that carry a patch whose subject contains "
    "`when_patched` and none containing `unless_patched`, for the parametrizations whose id "
    "matches one of the shell patterns `params` (default: all). There the test is xfailed "
    "only when its failure matches the regular expression `signature` (splat text, errno, "
    "wrong bytes); any other failure stays a failure, and a pass is an error (strict)",
    "fast: part of the fast slice that `make test` runs",
]


@dataclass(frozen=True)
class KnownBug:
    reason: str
    signature: re.Pattern[str]
    releases: tuple[str, ...]
    when_patched: str | None
    unless_patched: str | None
    params: tuple[str, ...] = ()
    kernels: tuple[str, ...] = ()
    # Kernel options whose presence hides the bug (its failure needs a kernel built
    # without them), e.g. TRANSPARENT_HUGEPAGE for a bug that only order-0 page cache
    # folios show.
    without_config: tuple[str, ...] = ()
    # Kernel options the failure needs (all of them), e.g. EROFS_FS_DEBUG for EROFS's own
    # assertions, which only a debug build turns into BUG().
    with_config: tuple[str, ...] = ()
    # False: the bug may not show in a given case (a once-per-boot warning that an earlier
    # case may have taken), so a pass is no error; a failure still needs the signature.
    strict: bool = True

    def applies(self, release: str, series: tuple[str, ...], param_id: str = "",
                spec: str = "", has: Callable[[str], bool] | None = None) -> bool:
        if self.params and not any(fnmatch.fnmatchcase(param_id, p) for p in self.params):
            return False
        if self.kernels and not any(fnmatch.fnmatchcase(spec, k) for k in self.kernels):
            return False
        if has is not None and any(has(option) for option in self.without_config):
            return False
        if self.with_config and (has is None or not all(has(o) for o in self.with_config)):
            return False
        return known_bug_applies(release, series, list(self.releases), self.when_patched,
                                 self.unless_patched)


def check_known_bug_mark(mark: pytest.Mark, where: str) -> KnownBug:
    reason = mark.kwargs.get("reason", mark.args[0] if mark.args else None)
    if not reason:
        raise pytest.UsageError(f"{where}: @known_bug needs a reason")
    signature = mark.kwargs.get("signature", mark.args[1] if len(mark.args) > 1 else None)
    if not signature:
        raise pytest.UsageError(f"{where}: @known_bug needs a signature: a regular expression "
                                f"that the bug's failure matches (splat text, errno, bytes), so "
                                f"that no other failure passes for it")
    try:
        pattern = re.compile(str(signature))
    except re.error as exc:
        raise pytest.UsageError(f"{where}: @known_bug signature {signature!r} is not a "
                                f"regular expression: {exc}") from None
    releases = [r.strip() for r in str(mark.kwargs.get("releases") or "").split(",") if r.strip()]
    for bound in releases:
        if not re.fullmatch(r"(>=|<=|<|>|==)\d+(\.\d+)*", bound):
            raise pytest.UsageError(f"{where}: @known_bug releases={bound!r}: expected bounds "
                                    f"such as '>=7.2,<7.4'")
    unknown = set(mark.kwargs) - {"reason", "signature", "releases", "when_patched",
                                  "unless_patched", "params", "kernels", "without_config",
                                  "with_config", "strict"}
    if unknown:
        raise pytest.UsageError(f"{where}: @known_bug got unknown arguments {sorted(unknown)}")
    params = mark.kwargs.get("params") or ()
    if isinstance(params, str) or not all(isinstance(p, str) for p in params):
        raise pytest.UsageError(f"{where}: @known_bug params= is a list of shell patterns "
                                f"over parametrization ids, e.g. ['loop-*', 'block-*']")
    kernels = mark.kwargs.get("kernels") or ()
    if isinstance(kernels, str) or not all(isinstance(k, str) for k in kernels):
        raise pytest.UsageError(f"{where}: @known_bug kernels= is a list of shell patterns "
                                f"over kernel specs, e.g. ['tree:*']")
    options = {}
    for name in ("without_config", "with_config"):
        given = mark.kwargs.get(name) or ()
        if isinstance(given, str) or not all(re.fullmatch(r"[A-Z0-9_]+", o) for o in given):
            raise pytest.UsageError(f"{where}: @known_bug {name}= is a list of kernel option "
                                    f"names without CONFIG_, e.g. ['TRANSPARENT_HUGEPAGE']")
        options[name] = tuple(given)
    strict = mark.kwargs.get("strict", True)
    if not isinstance(strict, bool):
        raise pytest.UsageError(f"{where}: @known_bug strict= is True or False")
    return KnownBug(str(reason), pattern, tuple(releases), mark.kwargs.get("when_patched"),
                    mark.kwargs.get("unless_patched"), tuple(params), tuple(kernels),
                    without_config=options["without_config"],
                    with_config=options["with_config"], strict=strict)


def requirement_names(mark: pytest.Mark, where: str) -> list[str]:
    if not mark.args:
        raise pytest.UsageError(f"{where}: @requires_kernel needs at least one feature or "
                                f"CONFIG_ option")
    names = []
    for arg in mark.args:
        if not isinstance(arg, str) or not (arg in FEATURES or arg.startswith("CONFIG_")
                                            or re.fullmatch(r">=\d+(\.\d+)*", arg)):
            raise pytest.UsageError(f"{where}: @requires_kernel({arg!r}): not a known feature "
                                    f"({', '.join(FEATURES)}), a CONFIG_ option name nor a "
                                    f"minimum release such as '>=6.16'")
        names.append(arg)
    unknown = set(mark.kwargs) - {"reason"}
    if unknown:
        raise pytest.UsageError(f"{where}: @requires_kernel got unknown arguments "
                                f"{sorted(unknown)}")
    return names


def missing_requirements(kernel: Kernel, names: list[str]) -> list[str]:
    missing = []
    for name in names:
        if name.startswith(">="):
            if release_tuple(kernel.release) < release_tuple(name[2:]):
                missing.append(f"release {name} (it is {kernel.release})")
            continue
        ok = kernel.features.get(name) if name in FEATURES else kernel.has(name)
        if not ok:
            detail = " / ".join(FEATURES[name]) if name in FEATURES else name
            missing.append(f"{name} ({detail})" if name in FEATURES else detail)
    return missing


def check_regression_mark(mark: pytest.Mark, where: str) -> tuple[str, str, str | None]:
    report = mark.kwargs.get("report", mark.args[0] if mark.args else None)
    fix = mark.kwargs.get("fix", mark.args[1] if len(mark.args) > 1 else None)
    if not report or not fix:
        raise pytest.UsageError(f"{where}: @regression needs report=<URL> and fix=<commit>")
    fixed_in = mark.kwargs.get("fixed_in")
    if fixed_in is not None and not re.fullmatch(r"\d+(\.\d+)*", str(fixed_in)):
        raise pytest.UsageError(f"{where}: @regression fixed_in={fixed_in!r} is not a version")
    return str(report), str(fix), fixed_in
