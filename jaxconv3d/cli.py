"""Command line: `python -m jaxconv3d {check,bench}`, also installed as the `jaxconv3d` console script.

    jaxconv3d check [--suite] [--configs a,b] [--precision fp32,bf16|all] [--json PATH] [-q|-v]
    jaxconv3d bench [--suite] [--configs a,b] [--precision ...] [--reps N] [--json PATH] [--plot PNG] [-q|-v]
    jaxconv3d plot BENCH.json PNG   speedup bars of an earlier bench run (matplotlib)
    jaxconv3d --list       the configurations with their shapes
    jaxconv3d --version
"""

from __future__ import annotations

import os

# Before JAX initialises a GPU backend: by default it reserves 75% of GPU memory, starving torch in this process.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import argparse  # noqa: E402
import sys  # noqa: E402
from typing import Callable, Sequence  # noqa: E402

import torch  # noqa: E402,F401  -- before JAX: JAX first has clashed with torch over the cuDNN library loaded

import jax  # noqa: E402,F401

from . import __version__, report  # noqa: E402
from .bench import run_bench  # noqa: E402
from .check import run_check  # noqa: E402
from .workloads import (  # noqa: E402
    COVERAGE_CASES,
    GPU_PRECISIONS,
    PRECISIONS,
    UsageError,
    load_suite,
    scale_for_cpu,
)


def _comma_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _precision_list(allowed: Sequence[str]) -> Callable[[str], list[str]]:
    """argparse type: 'fp32,bf16' or 'all' (fp32, tf32, bf16, fp16) -> precision names."""

    def parse(text: str) -> list[str]:
        names = list(GPU_PRECISIONS) if text == "all" else _comma_list(text)
        unknown = [name for name in names if name not in allowed]
        if unknown or not names:
            raise argparse.ArgumentTypeError(f"choose from {', '.join(allowed)} or 'all' (got {text!r})")
        return names

    return parse


def _add_output_options(parser: argparse.ArgumentParser, top_level: bool) -> None:
    """--list, -q, -v: accepted before and after the command. After it, their defaults are SUPPRESS, so an option
    given before the command is not reset by the subcommand's defaults."""
    default = (lambda value: value) if top_level else (lambda value: argparse.SUPPRESS)
    parser.add_argument(
        "--list",
        action="store_true",
        default=default(False),
        help="list the configurations (suite and coverage set) with their shapes, and exit",
    )
    loudness = parser.add_mutually_exclusive_group()
    loudness.add_argument(
        "-q",
        "--quiet",
        dest="verbosity",
        action="store_const",
        const=report.QUIET,
        default=default(report.NORMAL),
        help="print only the results table, errors and the verdict (no header, no progress)",
    )
    loudness.add_argument(
        "-v",
        "--verbose",
        dest="verbosity",
        action="store_const",
        const=report.VERBOSE,
        default=default(report.NORMAL),
        help="also log every step on stderr, one line each (instead of a progress bar)",
    )


def list_configurations() -> str:
    """The suite (full size, and as scaled down on a CPU) and the coverage set, one configuration a line."""
    suite, source = load_suite()
    lines = [f"suite ({source}); on a CPU scaled down to the shape after '->':"]
    lines += [f"  {case.name:<18} {case.describe():<36} -> {scale_for_cpu(case).describe()}" for case in suite]
    lines.append("coverage set (check's default on a CPU):")
    lines += [f"  {case.name:<18} {case.describe()}" for case in COVERAGE_CASES]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jaxconv3d",
        description="Check and benchmark jaxconv3d's conv3d kernels (JAX and PyTorch fronts).",
    )
    parser.add_argument("--version", action="version", version=f"jaxconv3d {__version__}")
    _add_output_options(parser, top_level=True)
    commands = parser.add_subparsers(dest="command")  # none needed with --list

    common = argparse.ArgumentParser(add_help=False)
    _add_output_options(common, top_level=False)
    common.add_argument(
        "--suite",
        action="store_true",
        help="every configuration of the suite (jaxconv3d/data/suite.json, shipped with the package; "
        "$JAXCONV3D_SUITE names another file); scaled down on CPU",
    )
    common.add_argument(
        "--configs", type=_comma_list, metavar="NAME,...", help="configurations by name (suite or coverage set)"
    )
    common.add_argument("--seed", type=int, default=0, help="base seed of the random operands (default 0)")

    check = commands.add_parser(
        "check",
        parents=[common],
        help="compare both fronts with a float64 reference",
        description="Forward, grad-input, grad-weight and grad-bias of both fronts against a float64 CPU reference, "
        "and JAX == torch bitwise. Default: a small coverage set in fp32, fp64, bf16 on CPU; the suite in all "
        "precisions on GPU. Exits 1 if anything fails.",
    )
    check.add_argument(
        "--precision",
        type=_precision_list(tuple(PRECISIONS)),
        metavar="LIST",
        help=f"comma-separated, from {', '.join(PRECISIONS)}, or 'all' ({', '.join(GPU_PRECISIONS)})",
    )
    check.add_argument("--json", metavar="PATH", help="also write the results as JSON (its folder is created)")
    check.set_defaults(run=lambda a: run_check(a.configs, a.suite, a.precision, a.json, a.seed))

    bench = commands.add_parser(
        "bench",
        parents=[common],
        help="time ours against torch/cuDNN and XLA",
        description="Time forward and forward+backward of jaxconv3d (torch front in NCDHW and channels_last_3d, JAX "
        "front), torch F.conv3d (NCDHW and channels_last_3d) and jax.lax.conv_general_dilated, all by one timer, "
        "each timed result checked against a float32 reference. Default: the suite (scaled down on CPU), in all "
        "precisions on GPU and fp32 on CPU.",
    )
    bench.add_argument(
        "--precision",
        type=_precision_list(GPU_PRECISIONS),
        metavar="LIST",
        help=f"comma-separated, from {', '.join(GPU_PRECISIONS)}, or 'all'",
    )
    bench.add_argument(
        "--reps",
        type=int,
        default=20,
        help="repetitions; each times one loop of calls per implementation and pass, interleaved; the median is "
        "reported (default: %(default)s)",
    )
    bench.add_argument(
        "--json", default="jaxconv3d_bench.json", metavar="PATH", help="its folder is created (default: %(default)s)"
    )
    bench.add_argument(
        "--plot", metavar="PNG", help="also draw the speedups (best reference / best ours) as bars (needs matplotlib)"
    )
    bench.set_defaults(run=_bench_and_plot)

    plot = commands.add_parser(
        "plot",
        help="speedup bars of a bench JSON",
        description="Draw best reference / best of ours per configuration and precision, one panel per pass, from a "
        "JSON written by `jaxconv3d bench` (needs matplotlib).",
    )
    plot.add_argument("bench_json", metavar="BENCH.json")
    plot.add_argument("png", metavar="PNG")
    plot.set_defaults(run=lambda a: _plot(a.bench_json, a.png), list=False, verbosity=report.NORMAL, json=None)
    return parser


def _plot(bench_json: str, png: str) -> int:
    from .plot import plot_bench

    try:
        written = plot_bench(bench_json, png)
    except (OSError, ValueError) as error:
        raise UsageError(f"plot {bench_json}: {error}") from error
    print(f"wrote {written}")
    return 0


def _bench_and_plot(a: argparse.Namespace) -> int:
    status = run_bench(a.configs, a.suite, a.precision, a.json, a.reps, a.seed)
    if a.plot:
        _plot(a.json, a.plot)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.list and args.command is None:
        parser.error("a command is required: check or bench (or --list, --version)")
    if getattr(args, "reps", 1) < 1:
        parser.error("--reps must be at least 1")
    name = f"jaxconv3d {args.command}" if args.command else "jaxconv3d"
    previous, report.verbosity = report.verbosity, args.verbosity
    try:
        if getattr(args, "plot", None) or args.command == "plot":
            from .plot import PlotUnavailable, require_matplotlib

            try:
                require_matplotlib()  # before a bench run of minutes, not after it
            except PlotUnavailable as error:
                raise UsageError(str(error)) from error
        if args.list:
            print(list_configurations())
            return 0
        if args.json:
            try:
                report.prepare_json_path(args.json)  # now: not a traceback after the whole run
            except OSError as error:
                raise UsageError(f"--json {args.json}: {error}") from error
        return args.run(args)
    except UsageError as error:
        print(f"{name}: error: {error}", file=sys.stderr)
        return 2
    finally:
        report.verbosity = previous
