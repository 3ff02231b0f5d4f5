"""Bug report files (``reports/*.yaml``): what ``make repro`` reads.

A report names the base kernel, optional patches (with checkpoints: how many patches of
the series make each kernel worth a verdict), the mounts (images from the suite's catalog,
or ``file:`` an image as the reporter gave it), the reproducer (guest commands, a
guest-side script, a C program compiled on the host, or a test id of ``testcases/``; with
``files`` copied into its working directory first), and the signature of the bug: when
every check under ``bug`` holds, the bug is reproduced. Every error names the file, the
line and the key.
"""

from __future__ import annotations

import errno as errno_mod
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.core.errors import SpecError
from harness.core.names import SOURCES
from harness.core.paths import PROJECT
from harness.core.yamlconf import check_keys, load_yaml, where
from harness.kernel.spec import KernelSpec, TreeSpec, parse_kernel_spec
from harness.vm.splats import KINDS

# "explore": the shrunk sequence of a report the explorer wrote (its replay test reads it);
# "known_bug": the marker its replay test carries on kernels with the bug; "damage": the
# damaged image of a `make fuzz` report (its replay test reads it); "layout" and "rebuild":
# the generated example of a `make layouts` report and the commands that make its images.
TOP_KEYS = {"title", "reported", "kernel", "patches", "checkpoints", "expect_verdicts",
            "mounts", "reproducer", "bug", "explore", "known_bug", "damage", "layout",
            "rebuild"}
SPLAT_KINDS = {*KINDS, "any"}
VERDICTS = ("reproduced", "not reproduced")


@dataclass(frozen=True)
class MountStep:
    name: str
    image: str  # a catalog name, or the file's name for a given image
    source: str = "loop"
    options: str = ""
    file: Path | None = None  # an image as the reporter gave it (raw or gzip)
    origin: str = ""  # the report's file and line, for errors about the file


@dataclass(frozen=True)
class Reproducer:
    commands: tuple[str, ...] = ()
    script: Path | None = None
    c: Path | None = None  # a C program, compiled statically on the host, run in the guest
    test: tuple[str, ...] = ()  # test ids of testcases/, run in one pytest session
    files: tuple[Path, ...] = ()  # copied into the working directory before it runs
    timeout: float = 300.0
    origin: str = ""


@dataclass(frozen=True)
class BugSignature:
    splat: str | None = None
    dmesg: str | None = None
    exit_code: int | None = None
    exit_nonzero: bool = False  # exit_code: nonzero
    no_sharing: tuple[str, str] | None = None  # ("mount:path" read, "mount:path" checked)
    wrong_bytes: str | None = None  # "mount:path"
    mount_errno: dict[str, str] = field(default_factory=dict)
    test_fails: bool = False


@dataclass(frozen=True)
class Report:
    path: Path
    title: str
    reported: str
    kernel: KernelSpec
    patches: Path | None
    checkpoints: dict[str, int]  # verdict name -> number of patches applied
    expect_verdicts: dict[str, str]
    mounts: tuple[MountStep, ...]
    reproducer: Reproducer
    bug: BugSignature

    @property
    def name(self) -> str:
        return self.path.stem


def _resolve(path_text: str, report: Path, loc: str) -> Path:
    for candidate in (Path(path_text), PROJECT / path_text, report.parent / path_text):
        if candidate.exists():
            return candidate.resolve()
    raise SpecError(f"{loc}: {path_text} does not exist (looked in the working directory, the "
                    f"project and next to the report)")


def _mount_ref(text: Any, names: set[str], loc: str) -> str:
    if not isinstance(text, str) or ":" not in text or text.split(":", 1)[0] not in names:
        raise SpecError(f"{loc}: expected '<mount name>:<path>' naming one of the mounts "
                        f"({', '.join(sorted(names)) or 'none declared'}), got {text!r}")
    return text


def _mounts(raw: Any, loc: str, images: set[str], report: Path) -> tuple[MountStep, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise SpecError(f"{loc}: 'mounts' must be a list of {{name, image or file, source, "
                        f"options}}")
    out = []
    for item in raw:
        check_keys(item, {"name", "image", "file", "source", "options"}, {"name"}, "a mount")
        if ("image" in item) == ("file" in item):
            raise SpecError(f"{where(item, 'name')}: a mount needs exactly one of image (a "
                            f"catalog name) and file (an image file as the reporter gave it)")
        given = _resolve(str(item["file"]), report, where(item, "file")) \
            if "file" in item else None
        if given is None and item["image"] not in images:
            raise SpecError(f"{where(item, 'image')}: unknown image {item['image']!r} (the "
                            f"catalog testcases/images.yaml has {', '.join(sorted(images))}; "
                            f"an image file of your own goes under file:)")
        source = str(item.get("source", "loop"))
        if source not in SOURCES:
            raise SpecError(f"{where(item, 'source')}: source {source!r} is not one of "
                            f"{', '.join(SOURCES)}")
        if not re.fullmatch(r"[a-z][a-z0-9_]*", str(item["name"])):
            raise SpecError(f"{where(item, 'name')}: a mount name is lower-case letters, digits "
                            f"and _ (it becomes $MNT_<name> in the guest)")
        out.append(MountStep(str(item["name"]),
                             given.name if given is not None else str(item["image"]), source,
                             str(item.get("options", "")), given,
                             where(item, "file" if given is not None else "image")))
    names = [m.name for m in out]
    if len(set(names)) != len(names):
        raise SpecError(f"{loc}: two mounts share a name")
    return tuple(out)


def _reproducer(raw: Any, report: Path) -> Reproducer:
    check_keys(raw, {"commands", "script", "c", "test", "files", "timeout"}, set(),
               "the reproducer")
    kinds = [k for k in ("commands", "script", "c", "test") if k in raw]
    if len(kinds) != 1:
        raise SpecError(f"{where(raw, kinds[1] if len(kinds) > 1 else 'commands')}: the "
                        f"reproducer needs exactly one of commands, script, c, test (got "
                        f"{', '.join(kinds) or 'none'})")
    timeout = float(raw.get("timeout", 300))
    files_raw = raw.get("files") or []
    if not isinstance(files_raw, list) or ("test" in raw and files_raw):
        raise SpecError(f"{where(raw, 'files')}: files is a list of paths (next to the "
                        f"report), for commands, a script or a C program")
    files = tuple(_resolve(str(f), report, where(raw, "files")) for f in files_raw)
    names = [f.name for f in files]
    if len(set(names)) != len(names):
        raise SpecError(f"{where(raw, 'files')}: two files of one name: {sorted(names)}")
    origin = where(raw, kinds[0])
    if "commands" in raw:
        cmds = raw["commands"]
        if not isinstance(cmds, list) or not all(isinstance(c, str) for c in cmds):
            raise SpecError(f"{where(raw, 'commands')}: commands must be a list of strings")
        return Reproducer(commands=tuple(cmds), files=files, timeout=timeout, origin=origin)
    if "script" in raw:
        return Reproducer(script=_resolve(str(raw["script"]), report, where(raw, "script")),
                          files=files, timeout=timeout, origin=origin)
    if "c" in raw:
        return Reproducer(c=_resolve(str(raw["c"]), report, where(raw, "c")), files=files,
                          timeout=timeout, origin=origin)
    tests = raw["test"] if isinstance(raw["test"], list) else [raw["test"]]
    for test in map(str, tests):
        if not test.startswith("testcases/") or "::" not in test:
            raise SpecError(f"{where(raw, 'test')}: a test id looks like "
                            f"testcases/<file>.py::<test>[<params>], got {test!r}")
        _resolve(test.split("::", 1)[0], report, where(raw, "test"))
    return Reproducer(test=tuple(map(str, tests)), timeout=timeout)


def _bug(raw: Any, names: set[str], reproducer: Reproducer) -> BugSignature:
    allowed = {"splat", "dmesg", "exit_code", "no_sharing", "wrong_bytes", "mount_errno",
               "test_fails"}
    check_keys(raw, allowed, set(), "the bug signature")
    if not raw:
        raise SpecError(f"{getattr(raw, 'origin', '<input>')}: 'bug' needs at least one of "
                        f"{', '.join(sorted(allowed))}")
    splat = raw.get("splat")
    if splat is not None and splat not in SPLAT_KINDS:
        raise SpecError(f"{where(raw, 'splat')}: unknown splat kind {splat!r} (known: "
                        f"{', '.join(sorted(SPLAT_KINDS))})")
    dmesg = raw.get("dmesg")
    if dmesg is not None:
        try:
            re.compile(str(dmesg))
        except re.error as exc:
            raise SpecError(f"{where(raw, 'dmesg')}: not a regular expression: {exc}") from exc
    no_sharing = None
    if "no_sharing" in raw:
        pair = raw["no_sharing"]
        if not isinstance(pair, list) or len(pair) != 2:
            raise SpecError(f"{where(raw, 'no_sharing')}: a list of two '<mount>:<path>': the "
                            f"file read, then its twin expected to be resident")
        no_sharing = (_mount_ref(pair[0], names, where(raw, "no_sharing")),
                      _mount_ref(pair[1], names, where(raw, "no_sharing")))
    mount_errno = {}
    for name, err in (raw.get("mount_errno") or {}).items():
        if name not in names or not hasattr(errno_mod, str(err)):
            raise SpecError(f"{where(raw, 'mount_errno')}: {name}: {err} needs a declared "
                            f"mount and an errno name such as EINVAL")
        mount_errno[str(name)] = str(err)
    if raw.get("test_fails") and not reproducer.test:
        raise SpecError(f"{where(raw, 'test_fails')}: test_fails needs a 'test' reproducer")
    exit_code = raw.get("exit_code")
    if exit_code is not None and exit_code != "nonzero" and (
            isinstance(exit_code, bool) or not isinstance(exit_code, int)
            or not 0 <= exit_code <= 255):
        raise SpecError(f"{where(raw, 'exit_code')}: an exit status (0-255) or nonzero, got "
                        f"{exit_code!r}")
    return BugSignature(
        splat=splat, dmesg=None if dmesg is None else str(dmesg),
        exit_code=exit_code if isinstance(exit_code, int) else None,
        exit_nonzero=exit_code == "nonzero",
        no_sharing=no_sharing,
        wrong_bytes=None if raw.get("wrong_bytes") is None else
        _mount_ref(raw["wrong_bytes"], names, where(raw, "wrong_bytes")),
        mount_errno=mount_errno, test_fails=bool(raw.get("test_fails")))


def load_report(path: Path, images: set[str]) -> Report:
    data = load_yaml(path)
    check_keys(data, TOP_KEYS, {"title", "kernel", "reproducer", "bug"}, "a bug report")
    try:
        kernel = parse_kernel_spec(str(data["kernel"]))
    except SpecError as exc:
        raise SpecError(f"{where(data, 'kernel')}: {exc}") from exc
    patches = _resolve(str(data["patches"]), path, where(data, "patches")) \
        if data.get("patches") else None
    checkpoints = {str(k): int(v) for k, v in (data.get("checkpoints") or {}).items()}
    if checkpoints and patches is None:
        raise SpecError(f"{where(data, 'checkpoints')}: checkpoints need patches")
    if patches is not None and not isinstance(kernel, TreeSpec):
        raise SpecError(f"{where(data, 'patches')}: patches apply to a source tree, so the "
                        f"kernel must be a tree: spec (got {data['kernel']})")
    if patches is not None and not checkpoints:
        checkpoints = {"patched": -1}  # the whole series
    expect = {str(k): str(v) for k, v in (data.get("expect_verdicts") or {}).items()}
    for name, verdict in expect.items():
        if verdict not in VERDICTS or (name != "base" and name not in checkpoints):
            raise SpecError(f"{where(data, 'expect_verdicts')}: {name}: {verdict!r} needs a "
                            f"kernel named base or a checkpoint, and one of {VERDICTS}")
    mounts = _mounts(data.get("mounts"), where(data, "mounts"), images, path)
    reproducer = _reproducer(data["reproducer"], path)
    bug = _bug(data["bug"], {m.name for m in mounts}, reproducer)
    given = {m.name for m in mounts if m.file is not None}
    if bug.wrong_bytes is not None and bug.wrong_bytes.split(":", 1)[0] in given:
        raise SpecError(f"{where(data['bug'], 'wrong_bytes')}: wrong_bytes compares with the "
                        f"catalog's record of an image's files; a given image has none (let "
                        f"the reproducer compare, and exit_code say)")
    return Report(path=path, title=str(data["title"]), reported=str(data.get("reported", "")),
                  kernel=kernel, patches=patches, checkpoints=checkpoints,
                  expect_verdicts=expect, mounts=mounts, reproducer=reproducer, bug=bug)
