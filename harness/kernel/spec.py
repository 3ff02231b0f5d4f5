"""Kernel specs: the one text form users write (``make KERNEL=``, ``pytest --kernel=``, report
files, the matrix) parsed once into a typed value, and rendered back by that value alone.

  ``debian:<version-prefix>``         a Debian cloud kernel fetched through a private apt
  ``path:<vmlinuz>[,modules=<dir>]``  a kernel the user built
  ``tree:[<dir>][,ref=<rev>][,patches=<series>][,upto=<n>][,kconfig=<f1>+<f2>][,debug][,coverage]``
                                      a source tree built with the kconfigs/ fragments (an
                                      empty dir: Debian's linux-source of the default kernel)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

from harness.core.errors import SpecError

FORMS = ("accepted forms: debian:<version-prefix> (e.g. debian:7.3), "
         "path:<vmlinuz>[,modules=<dir>], "
         "tree:[<dir>][,ref=<rev>][,patches=<series>][,upto=<n>][,kconfig=<f1>+<f2>][,debug]"
         "[,coverage][,faults][,source=<major.minor>][,config=<.config>]")


@dataclass(frozen=True)
class DebianSpec:
    prefix: str  # "7.3", "6.12", "7.2.13"

    def __str__(self) -> str:
        return f"debian:{self.prefix}"


@dataclass(frozen=True)
class PathSpec:
    vmlinuz: Path
    modules: Path | None = None

    def __str__(self) -> str:
        return f"path:{self.vmlinuz}" + (f",modules={self.modules}" if self.modules else "")


@dataclass(frozen=True)
class TreeSpec:
    tree: Path | None  # None: the default Debian source tree
    ref: str | None = None
    patches: Path | None = None
    upto: int | None = None  # apply only the first N patches of the series
    fragments: tuple[Path, ...] = ()  # the user's, on top of kconfigs/
    debug: bool = False
    coverage: bool = False  # gcov counters for fs/erofs (make coverage)
    faults: bool = False  # fault injection (fail-nth); the debug build has it too
    # With no tree: the Debian source package of this series (e.g. "7.2") instead of the
    # default kernel's, so that a fix can be tried on the release a bug was found on.
    source: str | None = None
    # A whole .config (a syzbot report's) to start from instead of tinyconfig; what the
    # guest needs still goes on top of it.
    config: Path | None = None

    def __str__(self) -> str:
        parts = [f"tree:{self.tree or ''}"]
        if self.source:
            parts.append(f"source={self.source}")
        if self.ref:
            parts.append(f"ref={self.ref}")
        if self.patches:
            parts.append(f"patches={self.patches}")
        if self.upto is not None:
            parts.append(f"upto={self.upto}")
        if self.fragments:
            parts.append("kconfig=" + "+".join(str(f) for f in self.fragments))
        if self.debug:
            parts.append("debug")
        if self.coverage:
            parts.append("coverage")
        if self.faults:
            parts.append("faults")
        if self.config:
            parts.append(f"config={self.config}")
        return ",".join(parts)

    def with_patches(self, patches: Path, upto: int | None = None) -> TreeSpec:
        return replace(self, patches=patches, upto=upto)


KernelSpec = DebianSpec | PathSpec | TreeSpec


def parse_kernel_spec(text: str) -> KernelSpec:
    """Parse a kernel spec; a malformed one is a SpecError that shows the accepted forms."""
    kind, sep, rest = text.strip().partition(":")
    if kind == "tree" and sep:
        return parse_tree_spec(rest)
    if not sep or not rest:
        raise SpecError(f"kernel spec {text!r} has no kind; {FORMS}")
    if kind == "debian":
        if not re.fullmatch(r"\d+(\.\d+)*", rest):
            raise SpecError(f"kernel spec {text!r}: {rest!r} is not a version prefix such as "
                            f"7.3 or 6.12; {FORMS}")
        return DebianSpec(rest)
    if kind == "path":
        image, *opts = rest.split(",")
        modules = None
        for opt in opts:
            name, _, value = opt.partition("=")
            if name != "modules" or not value:
                raise SpecError(f"kernel spec {text!r}: unknown option {opt!r} (only "
                                f"modules=<dir>); {FORMS}")
            modules = Path(value).expanduser()
        return PathSpec(Path(image).expanduser(), modules)
    raise SpecError(f"unknown kernel spec kind {kind!r} in {text!r}; {FORMS}")


def parse_tree_spec(value: str) -> TreeSpec:
    """The part after ``tree:`` of a kernel spec."""
    head, *options = value.split(",")
    tree = Path(head).expanduser() if head else None
    ref = patches = None
    upto: int | None = None
    fragments: tuple[Path, ...] = ()
    debug = coverage = faults = False
    source: str | None = None
    config: Path | None = None
    for option in options:
        name, _, arg = option.partition("=")
        if name == "source" and re.fullmatch(r"\d+\.\d+", arg):
            if tree is not None:
                raise SpecError(f"kernel spec tree:{value}: source= names a Debian source "
                                f"package, for the default tree only (tree:,source={arg})")
            source = arg
        elif name == "ref" and arg:
            ref = arg
        elif name == "patches" and arg:
            patches = Path(arg).expanduser()
        elif name == "upto" and arg.isdigit():
            upto = int(arg)
        elif name == "kconfig" and arg:
            fragments = tuple(Path(f).expanduser() for f in arg.split("+") if f)
        elif name == "debug" and not arg:
            debug = True
        elif name == "coverage" and not arg:
            coverage = True
        elif name == "faults" and not arg:
            faults = True
        elif name == "config" and arg:
            config = Path(arg).expanduser()
        else:
            raise SpecError(f"kernel spec tree:{value}: unknown option {option!r} (accepted: "
                            f"ref=<rev>, patches=<mbox|dir|series>, upto=<n>, "
                            f"kconfig=<f1>+<f2>, debug, coverage, faults, source=<major.minor>, "
                            f"config=<.config>)")
    if upto is not None and patches is None:
        raise SpecError(f"kernel spec tree:{value}: upto= needs patches=")
    return TreeSpec(tree, ref, patches, upto, fragments, debug, coverage, faults, source,
                    config)
