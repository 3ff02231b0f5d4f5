"""``python -m harness <subcommand>``: the command line the Make targets wrap.

Errors meant for people (HarnessError) print as one paragraph and exit 2; Ctrl-C exits 130
and SIGTERM 143, after the VM and everything it made are gone (harness/core/signals.py:
a SIGINT the parent ignored stays ignored).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from harness.core.errors import HarnessError, SpecError
from harness.core.signals import Terminated, install_sigterm_cleanup
from harness.vm.machine import VMConfig
from harness.vm.options import VM_DESTS, add_vm_options, vm_config


def _vm_options(parser: argparse.ArgumentParser) -> None:
    add_vm_options(parser.add_argument)


def _campaign_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """A subcommand per campaign (harness/campaign/registry.py): the options every campaign
    shares are declared here once, then the campaign adds its own."""
    from harness.campaign.registry import CAMPAIGNS, campaign
    for name in CAMPAIGNS:
        made = campaign(name)
        parser = sub.add_parser(name, help=made.help)
        _vm_options(parser)
        if made.memory_mb is not None:
            parser.set_defaults(vm_memory=made.memory_mb)
        parser.add_argument("--seed", type=int, default=None,
                            help="random seed (default: from the clock, printed)")
        parser.add_argument("--minutes", type=float, default=made.minutes,
                            help=f"time budget (default {made.minutes:g})" if made.timed else
                            "not read: this campaign does its whole work once")
        parser.add_argument("--out", type=Path, default=Path("artifacts") / name,
                            help=f"results directory ({name}.json goes there)")
        if made.finds:
            parser.add_argument("--found", type=Path, default=None, metavar="DIR",
                                help="where a finding's report goes (default reports/found)")
        made.add_options(parser)
        parser.set_defaults(campaign=name)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m harness",
                                     description="EROFS page cache sharing harness")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what is run")
    sub = parser.add_subparsers(dest="command", required=True)
    p_exec = sub.add_parser("exec", help="boot, run one command, print its output, exit "
                                         "with its status")
    _vm_options(p_exec)
    p_exec.add_argument("cmd", nargs=argparse.REMAINDER, help="the command (shell syntax)")
    p_shell = sub.add_parser("shell", help="an interactive shell in a guest")
    _vm_options(p_shell)
    p_bench = sub.add_parser("bench", help="boot and round-trip benchmarks, printed")
    _vm_options(p_bench)
    p_bench.add_argument("--boots", type=int, default=5, help="cold boots to take the "
                                                             "median of (default 5)")
    p_bench.add_argument("--round-trips", type=int, default=50)
    p_bench.add_argument("--parts", default="boot,sharing,suite,kbuild,explore,layouts",
                         type=lambda s: set(s.split(",")),
                         help="which benchmarks: boot,sharing,suite,kbuild,explore,layouts "
                              "(default all), and kbuild-debug: the kernel build figures "
                              "with the debug fragment (a clean KASAN build takes long)")
    p_bench.add_argument("--out", type=Path, default=Path("artifacts") / "bench",
                         help="results directory (bench-<name>.json of each guest bench)")
    _campaign_parsers(sub)
    p_kernel = sub.add_parser("kernel", help="fetch, locate or build a kernel and describe it")
    p_kernel.add_argument("--kernel", default=None)
    p_repro = sub.add_parser("repro", help="run a bug report (reports/*.yaml) on its kernels")
    p_repro.add_argument("report", type=Path, nargs="?",
                         help="the report file (or give --mbox)")
    p_repro.add_argument("--mbox", type=Path, default=None,
                         help="a mail with the reporter's image attached and a shell script "
                              "or C program: derive a report from it (written beside the "
                              "verdicts) and run that")
    p_repro.add_argument("--syzbot", type=Path, default=None,
                         help="a folder with a syzbot report's repro.c, .config and text "
                              "(HEAD commit:): derive a report and run that")
    p_repro.add_argument("--tree", type=Path, default=None,
                         help="with --syzbot: the git tree to build at the report's commit")
    p_repro.add_argument("--patches", type=Path, default=None,
                         help="with --syzbot: patches to try as a second kernel")
    p_repro.add_argument("--kernel", default=None,
                         help="run on this kernel only, without the report's patches")
    p_repro.add_argument("--accel", default="auto", choices=("auto", "kvm", "tcg"))
    p_repro.add_argument("--bisect", action="store_true",
                         help="exit 125 when the kernel does not build or boot")
    p_bisect = sub.add_parser("bisect", help="git bisect run with build + boot + repro")
    p_bisect.add_argument("--tree", type=Path, required=True)
    p_bisect.add_argument("--good", required=True)
    p_bisect.add_argument("--bad", required=True)
    p_bisect.add_argument("--report", type=Path, required=True)
    p_bisect.add_argument("--accel", default="auto", choices=("auto", "kvm", "tcg"))
    p_cov = sub.add_parser("coverage", help="the suite (or a selection) on a tree: kernel "
                                            "built with gcov for fs/erofs; an HTML report "
                                            "and a per-file table")
    _vm_options(p_cov)
    p_cov.add_argument("--jobs", type=int, default=2, help="pytest-xdist workers")
    p_cov.add_argument("--out", type=Path, default=Path("artifacts") / "coverage")
    p_cov.add_argument("pytest_args", nargs=argparse.REMAINDER,
                       help="after --: pytest arguments (a selection: -k, -m, files)")
    p_review = sub.add_parser("review", help="a patch series judged for page cache sharing: "
                                             "per patch apply, checkpatch and build; the "
                                             "tests that execute its lines on base and "
                                             "patched kernels; a reply, JSON, HTML, KCIDB")
    source = p_review.add_mutually_exclusive_group(required=True)
    source.add_argument("--mbox", type=Path, help="the series as b4 am writes it")
    source.add_argument("--msgid", help="a message-id: b4 am fetches the series (online)")
    p_review.add_argument("--tree", type=Path, default=None,
                          help="the kernel tree (default: Debian's linux-source)")
    p_review.add_argument("--base", default=None,
                          help="the base commit (default: the series' base-commit)")
    p_review.add_argument("--accel", default="auto", choices=("auto", "kvm", "tcg"))
    p_review.add_argument("--jobs", type=int, default=2, help="pytest-xdist workers")
    p_review.add_argument("--out", type=Path, default=Path("artifacts") / "review")
    p_review.add_argument("pytest_args", nargs=argparse.REMAINDER,
                          help="after --: pytest arguments that narrow the suite")
    p_matrix = sub.add_parser("matrix", help="run the cells of a matrix file")
    p_matrix.add_argument("matrix", type=Path)
    p_matrix.add_argument("--jobs", type=int, default=1, help="cells at a time")
    p_matrix.add_argument("--out", type=Path, default=None,
                          help="results directory (default results/<matrix name>)")
    p_matrix.add_argument("--cell", action="append", default=None,
                          help="run only this cell (repeatable); what a CI job does")
    p_mreport = sub.add_parser("matrix-report", help="combine cell results into index.html")
    p_mreport.add_argument("results", type=Path)
    p_ci = sub.add_parser("ci-config", help="generate the CI files from a matrix file")
    p_ci.add_argument("matrix", type=Path)
    p_ci.add_argument("--check", action="store_true",
                      help="exit 1 if the committed files differ from what would be generated")
    p_cmp = sub.add_parser("compare", help="what changed between two result directories")
    p_cmp.add_argument("a", type=Path)
    p_cmp.add_argument("b", type=Path)
    p_cmp.add_argument("--tolerance", type=float, default=0.10,
                       help="relative change of a measurement that counts (default 0.10)")
    return parser


def _vm_config(args: argparse.Namespace) -> VMConfig:
    return vm_config(lambda dest: getattr(args, dest))


def cmd_exec(args: argparse.Namespace) -> int:
    from harness.pipeline import vm_for
    parts = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    command = " ".join(parts).strip()
    if not command:
        raise HarnessError("exec needs a command: python -m harness exec -- uname -r "
                           "(make exec CMD='uname -r')")
    with vm_for(args.kernel, _vm_config(args), name="exec") as vm:
        result = vm.run(command)
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    return result.status


def cmd_shell(args: argparse.Namespace) -> int:
    from harness.pipeline import vm_for
    from harness.vm.interactive import interactive_shell
    with vm_for(args.kernel, _vm_config(args), name="shell") as vm:
        assert vm.ssh is not None and vm.ssh.client is not None
        print(f"harness: guest {vm.kernel.release} ready in {vm.boot_seconds:.1f} s "
              f"(accel {vm.accel.name if vm.accel else '?'}); exit the shell to stop it",
              file=sys.stderr, flush=True)
        return interactive_shell(vm.ssh.client)


def cmd_bench(args: argparse.Namespace) -> int:
    """The benches asked for, in order; the worst exit status of those that are campaigns
    (a bench that measured something wrong, or could not measure, says so)."""
    from harness.bench.boot import run_boot_bench, run_suite_throughput
    from harness.bench.campaign import BenchCampaign, run_bench
    kernel, config = args.kernel, _vm_config(args)
    status = 0

    def bench(made: BenchCampaign) -> None:
        nonlocal status
        status = max(status, run_bench(made, kernel, config, args.out))

    if "boot" in args.parts:
        run_boot_bench(kernel, config, boots=args.boots, round_trips=args.round_trips)
    if "sharing" in args.parts:
        from harness.bench.sharing import SharingBench
        bench(SharingBench())
    if "kbuild" in args.parts:
        from harness.bench.kbuild import run_kbuild_bench
        run_kbuild_bench(config)
    if "kbuild-debug" in args.parts:
        from harness.bench.kbuild import run_kbuild_bench
        run_kbuild_bench(config, debug=True)
    if "suite" in args.parts:
        run_suite_throughput(kernel, config)
    if "explore" in args.parts:
        from harness.bench.explore import ExploreBench
        bench(ExploreBench())
    if "layouts" in args.parts:
        from harness.bench.layouts import LayoutsBench
        bench(LayoutsBench())
    return status


def cmd_campaign(args: argparse.Namespace) -> int:
    import time

    from harness.campaign.registry import campaign
    from harness.campaign.runner import Settings, run_campaign
    shared = VM_DESTS | {"seed", "minutes", "out", "found", "campaign", "command", "verbose"}
    own = argparse.Namespace(**{k: v for k, v in vars(args).items() if k not in shared})
    seed = args.seed if args.seed is not None else int(time.time()) % 1_000_000
    settings = Settings(kernel=args.kernel, vm=_vm_config(args), seed=seed,
                        minutes=args.minutes, out=args.out, found=getattr(args, "found", None),
                        options=own)
    return run_campaign(campaign(args.campaign), settings)


def cmd_coverage(args: argparse.Namespace) -> int:
    from harness.coverage.run import run_coverage
    extra = args.pytest_args[1:] if args.pytest_args[:1] == ["--"] else args.pytest_args
    return run_coverage(args.kernel, args.accel, jobs=args.jobs, out=args.out.resolve(),
                        pytest_args=extra)


def cmd_review(args: argparse.Namespace) -> int:
    from harness.review.fetch import fetch_series
    from harness.review.run import run_review
    out = args.out.resolve()
    mbox = args.mbox if args.mbox is not None else fetch_series(args.msgid, out / "series")
    extra = args.pytest_args[1:] if args.pytest_args[:1] == ["--"] else args.pytest_args
    return run_review(mbox, tree=args.tree, base_commit=args.base, accel=args.accel,
                      jobs=args.jobs, pytest_args=extra, out=out)


def cmd_kernel(args: argparse.Namespace) -> int:
    from harness.kernel.resolve import resolve_kernel
    kernel = resolve_kernel(args.kernel)
    print(kernel.describe())
    print(f"vmlinuz: {kernel.vmlinuz}")
    print(f"modules: {kernel.modules_dir}")
    return 0


def cmd_repro(args: argparse.Namespace) -> int:
    from harness.core.paths import ARTIFACTS
    from harness.repro.run import EXIT_SKIP, run_report
    given = [x for x in (args.report, args.mbox, args.syzbot) if x is not None]
    if len(given) != 1:
        raise SpecError("repro needs one of: a report file, --mbox <mail>, --syzbot <folder>")
    if args.syzbot is None and (args.tree or args.patches):
        raise SpecError("--tree and --patches go with --syzbot (a report names its own)")
    if args.syzbot is not None:
        from harness.repro.syzbot import derive_syzbot
        if args.kernel:
            raise SpecError("--kernel with --syzbot: the kernel is the report's config at its "
                            "commit; give the git tree with --tree (KERNEL_TREE=)")
        folder = args.syzbot.resolve()
        args.report = derive_syzbot(folder, ARTIFACTS / f"repro-{folder.name}", args.tree,
                                    args.patches)
        print(f"repro: derived {args.report} from {args.syzbot}", file=sys.stderr)
    if args.mbox is not None:
        from harness.kernel.debian import default_spec
        from harness.repro.mbox import derive_report, read_mail
        # The derived report names the kernel it was asked for; run as any report then.
        args.report = derive_report(read_mail(args.mbox), args.mbox,
                                    ARTIFACTS / f"repro-{args.mbox.stem}",
                                    args.kernel or default_spec())
        args.kernel = None
        print(f"repro: derived {args.report} from {args.mbox}", file=sys.stderr)
    try:
        return run_report(args.report, override=args.kernel, accel=args.accel,
                          bisect=args.bisect)
    except HarnessError as exc:
        if not args.bisect:
            raise
        # bisect() checked the report before starting, so an error here is about this
        # revision (its build, its boot): skip it.
        print(f"harness: error: {exc}", file=sys.stderr)
        return EXIT_SKIP


def cmd_bisect(args: argparse.Namespace) -> int:
    from harness.repro.bisect import bisect
    bisect(args.tree, args.good, args.bad, args.report, args.accel)
    return 0


def cmd_matrix(args: argparse.Namespace) -> int:
    from harness.matrix.run import run_matrix
    out = args.out or Path("results") / args.matrix.stem
    return run_matrix(args.matrix, out, args.jobs, args.cell)


def cmd_matrix_report(args: argparse.Namespace) -> int:
    from harness.results.matrix_report import write_matrix_report
    print(write_matrix_report(args.results, args.results.name))
    return 0


def cmd_ci_config(args: argparse.Namespace) -> int:
    from harness.matrix.ciconfig import check_ci_files, write_ci_files
    if args.check:
        stale = check_ci_files(args.matrix)
        for path in stale:
            print(f"{path} is out of date with {args.matrix}: run make ci-config")
        return 1 if stale else 0
    for path in write_ci_files(args.matrix):
        print(f"wrote {path}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from harness.results.compare import compare
    return compare(args.a, args.b, args.tolerance)


COMMANDS = {"matrix": cmd_matrix, "matrix-report": cmd_matrix_report,
            "ci-config": cmd_ci_config, "compare": cmd_compare, "exec": cmd_exec,
            "shell": cmd_shell, "bench": cmd_bench, "kernel": cmd_kernel,
            "repro": cmd_repro, "bisect": cmd_bisect, "coverage": cmd_coverage,
            "review": cmd_review}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="harness: %(message)s")
    install_sigterm_cleanup()
    try:
        if getattr(args, "campaign", None):
            return cmd_campaign(args)
        return COMMANDS[args.command](args)
    except HarnessError as exc:
        print(f"harness: error: {exc}", file=sys.stderr)
        return 2
    except Terminated:
        print("harness: terminated; the VM was stopped", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("harness: interrupted; the VM was stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
