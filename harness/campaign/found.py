"""Finds that are known bugs: a campaign that meets one again counts it and goes on, so that
a nightly run is not ended each night by the bug it already reported.

A find's report (``reports/found/<campaign>-<id>.yaml``) may carry ``known_bug:`` with a
``signature`` (a regular expression over the failure text) and the kernels it applies to
(``releases``, ``when_patched``, ``unless_patched``: the rule of the pytest marker).
"""

from __future__ import annotations

import os
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from harness.campaign.runner import FOUND
from harness.kernel.kernel import Kernel
from harness.kernel.knownbugs import known_bug_applies
from harness.kernel.spec import KernelSpec, TreeSpec


def deliberate_break(spec: KernelSpec) -> TreeSpec | None:
    """The tree spec when ``spec`` is a tree built with patches (``tree:,patches=``): what a
    campaign finds there is the patches' deliberate break, not a bug of the kernel."""
    return spec if isinstance(spec, TreeSpec) and spec.patches is not None else None


def found_report(spec: KernelSpec, title: str, reported: str, replay: str, timeout: int,
                 directory: Path) -> dict[str, Any]:
    """The head of every campaign's finding report: what found it, on which kernel, the
    pytest replay that ``make repro`` runs, and the verdict it expects. On a tree with
    patches the report names the base tree and the patches (relative to ``directory``,
    where it is written): the base must not reproduce it, the patched tree must."""
    report: dict[str, Any] = {
        "title": title, "reported": reported, "kernel": str(spec),
        "reproducer": {"test": [replay], "timeout": timeout},
        "bug": {"test_fails": True},
        "expect_verdicts": {"base": "reproduced"},
    }
    broken = deliberate_break(spec)
    if broken is not None and broken.patches is not None:
        report.update(kernel=str(replace(broken, patches=None, upto=None)),
                      patches=os.path.relpath(broken.patches.resolve(), directory.resolve()),
                      expect_verdicts={"base": "not reproduced", "patched": "reproduced"})
    return report


def save_found(directory: Path, ident: str, header: str, report: dict[str, Any]) -> Path:
    """Write ``report`` as ``<directory>/<ident>.yaml`` under the comment ``header``."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{ident}.yaml"
    path.write_text(header + yaml.safe_dump(report, sort_keys=False, width=100))
    return path


def known_finds(kernel: Kernel, prefix: str, directory: Path = FOUND
                ) -> dict[str, re.Pattern[str]]:
    """The signatures of the known bugs that earlier finds of one campaign (reports named
    ``<prefix>-*.yaml``) carry and that apply to ``kernel``, by report name."""
    known: dict[str, re.Pattern[str]] = {}
    for path in sorted(directory.glob(f"{prefix}-*.yaml")):
        bug = (yaml.safe_load(path.read_text()) or {}).get("known_bug")
        if not bug:
            continue
        releases = [r.strip() for r in str(bug.get("releases") or "").split(",") if r.strip()]
        if known_bug_applies(kernel.release, kernel.series, releases, bug.get("when_patched"),
                             bug.get("unless_patched")):
            known[path.stem] = re.compile(bug["signature"])
    return known


def other_known_finds(kernel: Kernel, report: Path) -> dict[str, re.Pattern[str]]:
    """What a replay of ``report`` may meet beside its own bug: the known bugs of the other
    finds of its campaign, less those that are its own bug again (another layout, say, to
    the same bug: the same signature, or the same fix named by ``unless_patched``), which
    its own mark judges. Were they left in, a replay whose every line is its own bug would
    pass as if the bug were gone."""
    prefix = report.stem.split("-", 1)[0]
    own = _known_bug(report)
    same = {path.stem for path in FOUND.glob(f"{prefix}-*.yaml")
            if own.get("unless_patched") and
            _known_bug(path).get("unless_patched") == own["unless_patched"]}
    return {name: signature
            for name, signature in known_finds(kernel, prefix).items()
            if name != report.stem and signature.pattern != own.get("signature")
            and name not in same}


def _known_bug(report: Path) -> dict[str, Any]:
    bug = (yaml.safe_load(report.read_text()) or {}).get("known_bug") or {}
    return dict(bug)


def which_known(problem: str, known: dict[str, re.Pattern[str]]) -> str | None:
    """The report whose known bug ``problem`` is, if it carries one's signature."""
    return next((name for name, signature in known.items() if signature.search(problem)), None)
