"""A syzbot report as it comes: a folder with the C reproducer (``repro.c``; a
``repro.syz`` alone is an error that says what it needs), the kernel config (``.config`` or
``config``) and the report's text (a ``*.txt`` or the mail) with its ``HEAD commit:`` line.

``derive_syzbot`` writes a report of the project's format beside the verdicts: its kernel
is the tree at that commit where the tree has it, built from the report's config with what
the guest needs merged on top (``tree:...,config=``); what cannot be honoured (a commit the
tree lacks, options the guest needs changed) is listed in the report's header and printed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from harness.core.errors import SpecError

COMMIT = re.compile(r"^HEAD commit:\s+(\S+)", re.MULTILINE)  # a sha, or any rev git reads
SUBJECT = re.compile(r"^Subject:\s*(?:(?:Re:\s*)?\[[^\]]*\]\s*)*(.+)$", re.MULTILINE)
CRASH_TITLE = re.compile(r"^\s*((?:KASAN|KMSAN|KCSAN|UBSAN|BUG|WARNING|INFO|general protection "
                         r"fault|kernel BUG|possible deadlock)\b.*)$", re.MULTILINE)
# syzbot titles say where it crashed: "KASAN: use-after-free Read in erofs_foo".
CRASH_IN = re.compile(r"\bin ([A-Za-z_][A-Za-z0-9_.]*)\s*$")


def _report_text(folder: Path) -> tuple[str, Path | None]:
    """The report's text: the first text file with a HEAD commit: line (a folder may also
    hold the console log), else the first text file."""
    texts = []
    for path in sorted(folder.iterdir()):
        if path.suffix in (".txt", ".mbox", ".eml") or path.name in ("report", "mail"):
            try:
                texts.append((path.read_text(errors="replace"), path))
            except OSError as exc:
                raise SpecError(f"{path}: {exc.strerror}") from exc
    found = next(((t, p) for t, p in texts if COMMIT.search(t)), None)
    return found or (texts[0] if texts else ("", None))


def _title(text: str) -> str | None:
    """The mail's subject without its tags, else the first line that reads as a crash."""
    for pattern in (SUBJECT, CRASH_TITLE):
        if match := pattern.search(text):
            return match.group(1).strip()
    return None


def _has_commit(tree: Path, commit: str) -> bool:
    if not (tree / ".git").exists() or shutil.which("git") is None:
        return False
    proc = subprocess.run(["git", "-C", str(tree), "cat-file", "-e", f"{commit}^{{commit}}"],
                          capture_output=True, check=False, timeout=60)
    return proc.returncode == 0


def derive_syzbot(folder: Path, outdir: Path, tree: Path | None,
                  patches: Path | None = None) -> Path:
    """Write ``<folder name>.yaml`` into ``outdir`` (with the files it names); its path."""
    if not folder.is_dir():
        raise SpecError(f"SYZBOT={folder}: not a folder (it holds repro.c, .config and the "
                        f"report's text)")
    program = folder / "repro.c"
    if not program.is_file():
        if (folder / "repro.syz").is_file():
            raise SpecError(f"{folder}: only repro.syz, a syzkaller program: running it needs "
                            f"syz-execprog and syz-executor built for the guest's kernel; put "
                            f"the report's repro.c (its 'C reproducer' link) beside it")
        raise SpecError(f"{folder}: no repro.c")
    config = next((folder / n for n in (".config", "config", "kernel.config")
                   if (folder / n).is_file()), None)
    if config is None:
        raise SpecError(f"{folder}: no kernel config (.config, config or kernel.config; the "
                        f"report's 'kernel config' link)")
    text, text_path = _report_text(folder)
    commit_match = COMMIT.search(text)
    commit = commit_match.group(1) if commit_match else None
    unhonoured: list[str] = []
    spec = f"tree:{tree or ''}"
    if commit is None:
        unhonoured.append(f"no 'HEAD commit:' line in {text_path or 'any report text'}: the "
                          f"tree as it is")
    elif tree is not None and _has_commit(tree, commit):
        spec += f",ref={commit}"
    else:
        unhonoured.append(f"commit {commit}: "
                          + (f"{tree} does not have it" if tree is not None else
                             "no KERNEL_TREE given (a git tree that has it)")
                          + "; built from " + (str(tree) if tree is not None else
                                               "Debian's linux-source of the default kernel"))
    outdir.mkdir(parents=True, exist_ok=True)
    shutil.copy2(program, outdir / "repro.c")
    shutil.copy2(config, outdir / "kernel.config")
    spec += f",config={(outdir / 'kernel.config').resolve()}"
    title_line = _title(text) or f"the syzbot report in {folder.name}"
    crash_in = CRASH_IN.search(title_line)
    bug: dict[str, object] = {"splat": "any"}
    if crash_in:
        bug["dmesg"] = re.escape(crash_in.group(1))
    report: dict[str, object] = {
        "title": title_line,
        "reported": f"syzbot ({folder}" + (f", HEAD commit {commit}" if commit else "") + ")",
        "kernel": spec,
    }
    if patches is not None:
        report.update(patches=str(patches.resolve()), checkpoints={"patched": -1})
    report.update(reproducer={"c": "repro.c", "timeout": 300}, bug=bug)
    path = outdir / f"{folder.name}.yaml"
    path.write_text(
        f"# Derived from the syzbot report in {folder}. Edit it and run it again with\n"
        f"#   make repro REPORT={path}\n"
        + "".join(f"# not honoured: {line}\n" for line in unhonoured)
        + "# (options of the config that the guest needs changed are listed when the kernel "
          "is configured)\n"
        + yaml.safe_dump(report, sort_keys=False, width=100))
    for line in unhonoured:
        print(f"repro: not honoured: {line}", file=sys.stderr, flush=True)
    return path
