"""``make repro``: run a bug report on the base kernel and on each patched checkpoint, and
say for each whether the bug reproduced, with the evidence.

Exit status (what ``git bisect run`` expects): 1 when the bug reproduced on the last kernel
run, 0 when it did not, 125 in bisect mode when that kernel did not build or boot (the
revision is skipped), 2 for a report or harness error.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import subprocess
import sys
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path

from harness.core.errors import HarnessError, SpecError, VMError
from harness.core.paths import ARTIFACTS, CATALOG, PROJECT
from harness.erofs.images import BuiltImage, build_image, load_catalog
from harness.erofs.tools import provide
from harness.guest.handle import Guest
from harness.guest.mounts import Mount, Mounter
from harness.guest.session import GuestSession
from harness.kernel.kernel import Kernel
from harness.kernel.resolve import resolve_kernel
from harness.kernel.spec import KernelSpec, TreeSpec, parse_kernel_spec
from harness.pipeline import open_guest
from harness.repro.cprog import compile_static
from harness.repro.given import given_image, is_erofs, unpacked
from harness.repro.spec import Report, load_report
from harness.vm.machine import VMConfig
from harness.vm.splats import splats_seen

EXIT_NOT_REPRODUCED, EXIT_REPRODUCED, EXIT_SKIP, EXIT_ERROR = 0, 1, 125, 2
KILLED = 137  # the shell's status of a program killed by SIGKILL (timeout -s KILL)
# Statuses of a command that never ran: no verdict, whatever the signature says.
NOT_RUN = {126: "not executable", 127: "command not found"}


@dataclass
class Check:
    name: str
    held: bool
    evidence: str


@dataclass
class Verdict:
    name: str  # base, a checkpoint name, or "given" for --kernel
    spec: str
    release: str = ""
    reproduced: bool | None = None  # None: the kernel did not build or boot
    checks: list[Check] = field(default_factory=list)
    error: str = ""
    series: list[str] = field(default_factory=list)
    console: str = ""
    output: str = ""  # the tail of what the reproducer printed

    @property
    def word(self) -> str:
        if self.reproduced is None:
            return "ERROR"
        return "REPRODUCED" if self.reproduced else "NOT REPRODUCED"


def kernels_for(report: Report, override: str | None) -> list[tuple[str, KernelSpec]]:
    """(name, kernel spec) for every kernel the report is run on, in order."""
    if override:
        return [("given", parse_kernel_spec(override))]
    out: list[tuple[str, KernelSpec]] = [("base", report.kernel)]
    for name, count in report.checkpoints.items():
        assert isinstance(report.kernel, TreeSpec) and report.patches is not None  # load_report
        out.append((name, report.kernel.with_patches(report.patches,
                                                     None if count < 0 else count)))
    return out


def _say(text: str) -> None:
    print(f"repro: {text}", file=sys.stderr, flush=True)


class _Run:
    """One kernel: boot, mount, reproduce, check."""

    def __init__(self, report: Report, verdict: Verdict, kernel: Kernel, accel: str,
                 inputs: Inputs) -> None:
        self.report = report
        self.verdict = verdict
        self.kernel = kernel
        self.accel = accel
        self.images = inputs.images
        self.inputs = inputs
        self.mounts: dict[str, Mount] = {}
        self.exit_code: int | None = None
        self.deadline = False  # the C program was killed at the report's timeout
        self.session: GuestSession | None = None

    def go(self) -> None:
        if self.report.reproducer.test:
            self._run_test()
            return
        with ExitStack() as stack:
            try:
                session = stack.enter_context(open_guest(
                    self.kernel, VMConfig(accel=self.accel), name=f"repro-{self.verdict.name}",
                    artifacts=ARTIFACTS / f"repro-{self.report.name}", announce=False))
            except VMError as exc:
                self.verdict.error = f"the kernel did not boot: {exc}"
                return
            vm = session.vm
            offset = vm.console_offset()
            mark = session.probe.kernel_log_mark()
            alive = True
            try:
                self._reproduce(session)
            except VMError as exc:
                alive = False
                self.verdict.checks.append(Check("guest", False, f"the guest died: {exc}"))
            except HarnessError as exc:  # the reproducer could not run: no verdict
                self.verdict.error = str(exc)
                return
            console = vm.console.since(offset) if vm.console else ""
            self.verdict.console = console
            # What the kernel logged since the mark; a dead guest leaves only its console.
            log = session.probe.kernel_log_since(mark).text \
                if alive and vm.responsive() else console
            self._check(console, log, alive)

    def _reproduce(self, session: GuestSession) -> None:
        vm = session.vm
        guest = Guest(session, f"repro-{self.verdict.name}")
        mounter = Mounter(guest)
        for step in self.report.mounts:
            mount = mounter.attempt(self.images[step.name], step.options, step.source)
            self.mounts[step.name] = mount
            _say(f"{self.verdict.name}: mount {step.name} ({step.image}, {step.source}, "
                 f"-o {step.options or '(none)'}): "
                 f"{'ok' if mount.result.ok else mount.result.errname}")
        env = " ".join(f"MNT_{name}={shlex.quote(m.target)}" for name, m in self.mounts.items())
        rep = self.report.reproducer
        # The reporter's files (images among them) go where the program runs, by their names.
        for local in rep.files:
            remote = session.upload(local, f"given-{self.inputs.keys[local]}")
            vm.run(f"cp {shlex.quote(remote)} {guest.workdir}/{shlex.quote(local.name)}",
                   check=True, timeout=300)
        commands = list(rep.commands)
        if rep.script is not None:
            remote = f"{guest.workdir}/{rep.script.name}"
            guest.write_file(remote, rep.script.read_bytes(), 0o755)
            commands = [("python3 " if rep.script.suffix == ".py" else "sh ") + remote]
        if self.inputs.program is not None:
            remote = f"{guest.workdir}/{self.inputs.program.name}"
            guest.write_file(remote, self.inputs.program.read_bytes(), 0o755)
            # The deadline is the guest's own: a program that hangs is killed there, and
            # its kernel log still tells what it met. Its output goes to a file, and what
            # it forked (syzbot's programs fork and loop) is killed after it, so that
            # nothing of it runs, or prints, into the checks.
            out = f"{guest.workdir}/program-output.txt"
            kill_rest = (f"for p in /proc/[0-9]*; do [ \"$(readlink $p/exe)\" = {remote} ] && "
                         f"kill -9 ${{p#/proc/}}; done 2>/dev/null")
            commands = [f"timeout -s KILL {max(1, round(rep.timeout))} {remote} > {out} 2>&1; "
                        f"rc=$?; {kill_rest}; cat {out}; exit $rc"]
        output: list[str] = []
        for command in commands:
            ran = vm.run(f"cd {guest.workdir} && export {env} WORK={guest.workdir}; {command}"
                         if env else f"cd {guest.workdir} && {command}",
                         timeout=rep.timeout + 60)
            self.exit_code = ran.status
            self.deadline = self.inputs.program is not None and ran.status == KILLED
            output += [f"$ {command} (exit {ran.status})", *ran.stdout.splitlines()[-40:],
                       *ran.stderr.splitlines()[-20:]]
            _say(f"{self.verdict.name}: $ {command} -> exit {ran.status}"
                 + (" (killed at the deadline)" if self.deadline else ""))
            if ran.status in NOT_RUN:
                raise HarnessError(f"the reproducer did not run (exit {ran.status}: "
                                   f"{NOT_RUN[ran.status]}): {ran.stderr.strip()[-300:]}")
        self.verdict.output = "\n".join(output)
        self.session = session

    def _ref(self, ref: str) -> tuple[Mount, str]:
        name, path = ref.split(":", 1)
        return self.mounts[name], path.lstrip("/")

    def _check(self, console: str, log: str, alive: bool) -> None:
        bug = self.report.bug
        checks = self.verdict.checks
        if bug.splat:
            # The console can lag behind the kernel log under TCG: look in both.
            splats = [s for s in splats_seen(console, log) if bug.splat in ("any", s.kind)]
            checks.append(Check(f"splat {bug.splat}", bool(splats),
                                splats[0].excerpt if splats else "no such report on the console"))
        if bug.dmesg:
            lines = [ln for ln in log.splitlines() if re.search(bug.dmesg, ln)]
            checks.append(Check(f"dmesg /{bug.dmesg}/", bool(lines),
                                "\n".join(lines[:5]) or "no matching kernel log line"))
        if bug.exit_code is not None:
            checks.append(Check(f"exit code {bug.exit_code}", self.exit_code == bug.exit_code,
                                f"the reproducer exited {self.exit_code}"))
        if bug.exit_nonzero:
            # A program killed at its deadline did not say it saw the bug: it hung.
            checks.append(Check("exit code nonzero",
                                self.exit_code not in (None, 0) and not self.deadline,
                                f"the reproducer exited {self.exit_code}"
                                + (" (killed at the deadline)" if self.deadline else "")))
        for name, want in bug.mount_errno.items():
            result = self.mounts[name].result
            checks.append(Check(f"mount {name} fails with {want}", result.errname == want,
                                f"mount {name}: {result.errname if not result.ok else 'ok'}; "
                                f"kernel said: {' | '.join(result.kmsg) or 'nothing'}"))
        probe = self.session.probe if self.session is not None and alive else None
        if probe is None and (bug.no_sharing or bug.wrong_bytes):
            checks.append(Check("measurements", False, "not taken: the guest died"))
            return
        if bug.no_sharing and probe is not None:
            (ma, pa), (mb, pb) = self._ref(bug.no_sharing[0]), self._ref(bug.no_sharing[1])
            with probe.batch() as batch:
                read = batch.read(ma.path(pa), may_fail=True)
                resident = batch.residency(mb.path(pb))
            held = resident.value.resident == 0
            checks.append(Check(f"no sharing {bug.no_sharing[0]} -> {bug.no_sharing[1]}", held,
                                f"after reading {pa} ({read.error or read.value}), {pb} is "
                                f"{resident.value}"))
        if bug.wrong_bytes and probe is not None:
            mount, path = self._ref(bug.wrong_bytes)
            got = probe.try_read(mount.path(path))
            want = mount.image.file(path)["sha256"]
            checks.append(Check(f"wrong bytes in {bug.wrong_bytes}",
                                not got.failed and got.value.sha256 != want,
                                f"read {got.error or got.value}; the image holds sha256 {want}"))

    def _run_test(self) -> None:
        tests = self.report.reproducer.test
        test = " ".join(tests)
        argv = [sys.executable, "-m", "pytest", *tests, f"--kernel={self.verdict.spec}",
                f"--accel={self.accel}", "-p", "no:cacheprovider", "-q", "-rf",
                "--ignore-known-bugs"]
        proc = subprocess.run(argv, cwd=PROJECT, capture_output=True, text=True, check=False,
                              timeout=self.report.reproducer.timeout + 600)
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        if proc.returncode not in (0, 1):
            self.verdict.error = f"pytest exited {proc.returncode}:\n{tail}"
            return
        self.verdict.checks.append(Check(f"test fails: {test}", proc.returncode == 1, tail))


@dataclass
class Inputs:
    """What a report's runs share, made on the host once before any kernel: the images
    (built from the catalog, or the reporter's, checked), the hash of every file handed to
    the guest, and the compiled C program."""
    images: dict[str, BuiltImage] = field(default_factory=dict)
    keys: dict[Path, str] = field(default_factory=dict)
    program: Path | None = None


def prepare_inputs(report: Report) -> Inputs:
    catalog = load_catalog(CATALOG)
    inputs = Inputs()
    work = ARTIFACTS / f"repro-{report.name}"
    rep = report.reproducer
    tools = provide() if report.mounts or rep.files else None
    for step in report.mounts:
        assert tools is not None
        if step.file is None:
            inputs.images[step.name] = build_image(catalog.image(step.image), tools)
            continue
        image = given_image(step.file, tools, work / "given", step.origin)
        inputs.images[step.name] = image
        _say(f"image {step.file.name} (mount {step.name}): "
             f"{image.path.stat().st_size} bytes, features: "
             f"{' '.join(image.manifest['features']) or 'none'}")
    for local in rep.files:
        assert tools is not None
        data = local.read_bytes()
        inputs.keys[local] = hashlib.sha256(data).hexdigest()[:20]
        try:
            is_image = is_erofs(unpacked(data))
        except SpecError:
            is_image = False
        if is_image:  # an image the program mounts itself: judged like any given image
            image = given_image(local, tools, work / "given", rep.origin)
            _say(f"image {local.name}: {image.path.stat().st_size} bytes, features: "
                 f"{' '.join(image.manifest['features']) or 'none'}")
    if rep.c is not None:
        inputs.program = compile_static(rep.c, work / "bin", rep.origin)
        _say(f"compiled {rep.c.name} (static): {inputs.program}")
    return inputs


def run_report(path: Path, *, override: str | None = None, accel: str = "auto",
               bisect: bool = False) -> int:
    catalog = load_catalog(CATALOG)
    report = load_report(path, set(catalog.images))
    _say(f"{report.title} ({path})")
    # The images and the program do not depend on the kernel: made once for every run.
    inputs = prepare_inputs(report)
    verdicts = []
    for name, spec in kernels_for(report, override):
        verdict = Verdict(name, str(spec))
        verdicts.append(verdict)
        _say(f"{name}: kernel {spec}")
        try:
            kernel = resolve_kernel(spec)
        except HarnessError as exc:
            verdict.error = f"the kernel could not be built or fetched: {exc}"
            continue
        verdict.release, verdict.series = kernel.release, list(kernel.series)
        run = _Run(report, verdict, kernel, accel, inputs)
        run.go()
        if not verdict.error:
            held = [c.held for c in verdict.checks if c.name != "guest"]
            verdict.reproduced = bool(held) and all(held)
            died = [c for c in verdict.checks if c.name == "guest"]
            if died and not verdict.reproduced:
                # A dead guest without the bug's signature says nothing either way.
                verdict.reproduced = None
                verdict.error = "no verdict: " + died[0].evidence.splitlines()[0]
    _print(report, verdicts)
    _save(report, verdicts)
    last = verdicts[-1]
    if last.reproduced is None:
        return EXIT_SKIP if bisect else EXIT_ERROR
    return EXIT_REPRODUCED if last.reproduced else EXIT_NOT_REPRODUCED


def _print(report: Report, verdicts: list[Verdict]) -> None:
    print(f"\n== {report.title}")
    if report.reported:
        print(f"   reported: {report.reported}")
    for v in verdicts:
        expected = report.expect_verdicts.get(v.name)
        note = ""
        if expected:
            note = " (as expected)" if expected == v.word.lower() else \
                f" (UNEXPECTED: the report expects {expected})"
        print(f"{v.name:>8}: {v.word}{note}  [{v.spec} = {v.release or '?'}]")
        if v.series:
            print(f"          patches: {'; '.join(v.series)}")
        if v.error:
            print("          " + v.error.replace("\n", "\n          ")[:3000])
        if v.output:
            print("          output:\n            "
                  + v.output.replace("\n", "\n            ")[-3000:])
        for check in v.checks:
            mark = "yes" if check.held else "no "
            evidence = check.evidence.strip().replace("\n", "\n              ")
            print(f"        - [{mark}] {check.name}\n              {evidence[:2000]}")
    sys.stdout.flush()


def _save(report: Report, verdicts: list[Verdict]) -> None:
    out = ARTIFACTS / f"repro-{report.name}"
    out.mkdir(parents=True, exist_ok=True)
    data = {"report": str(report.path), "title": report.title, "reported": report.reported,
            "verdicts": [{**asdict(v), "verdict": v.word} for v in verdicts]}
    (out / "verdicts.json").write_text(json.dumps(data, indent=1))
    print(f"repro: verdicts and console logs in {out}", file=sys.stderr)

