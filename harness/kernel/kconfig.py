"""Kernel config fragments: parse them, merge them, and prove the result kept every request.

``merge_config.sh`` only warns when ``olddefconfig`` drops an option whose dependencies are
unmet (seen with 7.3: ``CONFIG_EROFS_FS=y`` without ``CONFIG_MISC_FILESYSTEMS=y`` silently
loses every EROFS option). So every requested option is checked in the final ``.config``,
and a dropped one is reported with the ``depends on`` expressions that are false, found by
walking the tree's Kconfig files.

Fragment lines are ``CONFIG_X=value  # why`` or ``# CONFIG_X is not set  # why``; other
``#`` lines are comments. The trailing reason is stripped before kconfig sees the line.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from harness.core.errors import HarnessError, SpecError

_SET = re.compile(r"^(CONFIG_[A-Za-z0-9_]+)=(\"(?:[^\"\\]|\\.)*\"|[^\s#]*)\s*(?:#\s*(.*))?$")
_UNSET = re.compile(r"^#\s*(CONFIG_[A-Za-z0-9_]+) is not set\s*(?:#\s*(.*))?$")


class KconfigDropped(HarnessError):
    """Options requested by fragments that the final .config does not have."""


@dataclass(frozen=True)
class Request:
    name: str  # CONFIG_FOO
    value: str  # "y", "m", "n" (not set), or the literal value (strings keep their quotes)
    where: str  # file:line
    why: str

    def line(self) -> str:
        return f"# {self.name} is not set" if self.value == "n" else f"{self.name}={self.value}"


def parse_fragment(path: Path) -> list[Request]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise SpecError(f"kernel config fragment {path}: cannot read it ({exc.strerror})") \
            from exc
    out = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        where = f"{path}:{number}"
        if match := _UNSET.match(line):
            out.append(Request(match.group(1), "n", where, (match.group(2) or "").strip()))
        elif match := _SET.match(line):
            out.append(Request(match.group(1), match.group(2), where,
                               (match.group(3) or "").strip()))
        elif line and not line.startswith("#"):
            raise SpecError(f"{where}: not a kernel config line: {raw.strip()!r} (expected "
                            f"CONFIG_NAME=value or '# CONFIG_NAME is not set', each optionally "
                            f"followed by '# why')")
    return out


def merge_requests(fragments: list[Path]) -> list[Request]:
    """Requests of all fragments, a later fragment overriding an earlier one (as
    merge_config.sh does), in first-seen order."""
    merged: dict[str, Request] = {}
    for fragment in fragments:
        for req in parse_fragment(fragment):
            merged[req.name] = req
    return list(merged.values())


def write_clean_fragment(requests: list[Request], path: Path) -> None:
    """One fragment without the reasons, for merge_config.sh and kconfig's parser."""
    path.write_text("".join(req.line() + "\n" for req in requests))


def read_config(path: Path) -> dict[str, str]:
    """A .config as name -> value, with ``n`` for ``is not set`` lines."""
    out: dict[str, str] = {}
    for line in path.read_text(errors="replace").splitlines():
        if match := _UNSET.match(line):
            out[match.group(1)] = "n"
        elif "=" in line and line.startswith("CONFIG_"):
            name, _, value = line.partition("=")
            out[name] = value
    return out


# ---- why an option was dropped: the Kconfig dependencies that are false -------------------

@dataclass(frozen=True)
class Dependency:
    expression: str
    where: str


def _kconfig_lines(tree: Path, rel: str, arch: str) -> list[tuple[str, int, str]]:
    """Lines of a Kconfig file with every ``source`` expanded in place: (file, line, text)."""
    path = tree / rel.replace("$(SRCARCH)", arch).replace("$(ARCH)", arch)
    out: list[tuple[str, int, str]] = []
    paths = sorted(tree.glob(str(path.relative_to(tree)))) if "*" in str(path) else [path]
    for one in paths:
        if not one.is_file():
            continue
        name = str(one.relative_to(tree))
        lines = one.read_text(errors="replace").splitlines()
        index = 0
        while index < len(lines):
            number, line = index + 1, lines[index]
            index += 1
            while line.endswith("\\") and index < len(lines):  # continuation lines
                line = line[:-1] + " " + lines[index].strip()
                index += 1
            stripped = line.strip()
            if stripped in ("help", "---help---"):
                # Help text is prose: skip it, or its words read as 'if' and 'depends on'.
                indent = None
                while index < len(lines):
                    text = lines[index].expandtabs()
                    if text.strip():
                        width = len(text) - len(text.lstrip())
                        if indent is None:
                            indent = width
                        if width < indent:
                            break
                    index += 1
                continue
            stripped = stripped.split("#", 1)[0].strip() if not stripped.startswith(
                ("prompt", "bool", "tristate", "string", "menu", "comment")) else stripped
            match = re.match(r'^(o?r?source)\s+"([^"]+)"', stripped)
            if match:
                target = match.group(2)
                if match.group(1) in ("rsource", "orsource"):  # relative to this file
                    target = str(Path(name).parent / target)
                out += _kconfig_lines(tree, target, arch)
            else:
                out.append((name, number, stripped))
    return out


@functools.lru_cache(maxsize=4)
def _all_kconfig_lines(tree: Path, arch: str) -> tuple[tuple[str, int, str], ...]:
    return tuple(_kconfig_lines(tree, "Kconfig", arch))


def dependencies(tree: Path, symbol: str, arch: str = "x86") -> list[Dependency] | None:
    """Every ``depends on`` that guards ``symbol``: its own and those of enclosing if/menu;
    None when no Kconfig file of the tree defines the symbol."""
    name = symbol.removeprefix("CONFIG_")
    frames: list[list[Dependency]] = []  # one per open if/menu/choice
    found: list[Dependency] = []
    in_target = False
    defined = False
    block_opener = ""  # the keyword of the block whose 'depends on' lines we are reading
    for file, number, text in _all_kconfig_lines(tree, arch):
        where = f"{file}:{number}"
        word = text.split(None, 1)[0] if text else ""
        if word in ("config", "menuconfig", "if", "menu", "choice", "endif", "endmenu",
                    "endchoice", "comment", "source", "mainmenu"):
            in_target = False
        if word in ("config", "menuconfig"):
            block_opener = word
            if text.split()[1:2] == [name]:
                in_target = defined = True
                found += [dep for frame in frames for dep in frame]
        elif word == "if":
            frames.append([Dependency(text[2:].strip(), where)])
            block_opener = "if"
        elif word in ("menu", "choice"):
            frames.append([])
            block_opener = word
        elif word in ("endif", "endmenu", "endchoice"):
            if frames:
                frames.pop()
        elif text.startswith("depends on"):
            dep = Dependency(text[len("depends on"):].strip(), where)
            if in_target:
                found.append(dep)
            elif block_opener in ("menu", "choice") and frames:
                frames[-1].append(dep)
    return found if defined else None


_TOKEN = re.compile(r"\s*(\|\||&&|!=|=|!|\(|\)|\"[^\"]*\"|[A-Za-z0-9_]+)")


def evaluate(expression: str, config: dict[str, str]) -> str:
    """Kconfig's tristate value (y, m, n) of an expression over a .config."""
    tokens = _TOKEN.findall(expression)
    pos = 0
    order = {"n": 0, "m": 1, "y": 2}

    def value(tok: str) -> str:
        if tok in ("y", "m", "n"):
            return tok
        if tok.startswith('"'):
            return tok.strip('"')
        return config.get("CONFIG_" + tok, "n").strip('"')

    def primary() -> str:
        nonlocal pos
        tok = tokens[pos]
        pos += 1
        if tok == "!":
            inner = primary()
            return {"y": "n", "m": "m", "n": "y"}.get(inner, "n")
        if tok == "(":
            inner = disjunction()
            pos += 1  # ")"
            return inner
        left = value(tok)
        if pos < len(tokens) and tokens[pos] in ("=", "!="):
            op = tokens[pos]
            right = value(tokens[pos + 1])
            pos += 2
            return "y" if (left == right) == (op == "=") else "n"
        return left if left in order else ("y" if left else "n")

    def chain(operator: str, operand: Callable[[], str],
              pick: Callable[..., str]) -> str:
        """operand (operator operand)*: && keeps the lowest tristate, || the highest."""
        nonlocal pos
        result = operand()
        while pos < len(tokens) and tokens[pos] == operator:
            pos += 1
            result = pick(result, operand(), key=lambda v: order[v])
        return result

    def conjunction() -> str:
        return chain("&&", primary, min)

    def disjunction() -> str:
        return chain("||", conjunction, max)

    try:
        return disjunction()
    except IndexError:
        return "y"  # an expression we cannot read is not blamed


def _symbols(expression: str) -> list[str]:
    return [tok for tok in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", expression)
            if tok not in ("y", "m", "n")]


def explain_drop(tree: Path, req: Request, config: dict[str, str]) -> str:
    got = config.get(req.name)
    have = "not set" if got in (None, "n") else got
    text = f"{req.name}={req.value} ({req.where}) is {have} after olddefconfig"
    if req.value == "n":
        return text + "; something selects it (grep the tree for 'select " \
            f"{req.name.removeprefix('CONFIG_')}')"
    deps = dependencies(tree, req.name)
    if deps is None:
        return text + f"; no Kconfig file in {tree} defines it (misspelt, or removed in " \
            "this version)"
    unmet = [dep for dep in deps if evaluate(dep.expression, config) == "n"]
    if not unmet:
        return text + "; its dependencies are met, so a choice or a range overrides it"
    parts = []
    for dep in unmet:
        values = ", ".join(f"{s}={config.get('CONFIG_' + s, 'n')}"
                           for s in dict.fromkeys(_symbols(dep.expression)))
        parts.append(f"depends on {dep.expression} ({dep.where}; here {values})")
    return text + "; missing dependency: " + "; ".join(parts)


def check_config(tree: Path, requests: list[Request], config_path: Path) -> None:
    """Raise KconfigDropped naming every requested option the final .config lacks."""
    config = read_config(config_path)
    dropped = []
    for req in requests:
        got = config.get(req.name, "n")
        if got != req.value:
            dropped.append(explain_drop(tree, req, config))
    if dropped:
        raise KconfigDropped(f"{len(dropped)} requested kernel option(s) were dropped from "
                             f"{config_path}:\n  " + "\n  ".join(dropped))
