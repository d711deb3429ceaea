"""``effrank-fast``: the command line (demo, report, info).

effrank-fast demo                 # the staircase on CPU in about a minute; writes runs/demo-*/
effrank-fast report RUN_DIR       # re-plot and re-summarise a finished or interrupted run
effrank-fast info                 # versions, devices and available backends

Each subcommand is an argparse sub-parser whose ``set_defaults(func=...)`` names the function that
runs it: ``func(args) -> exit code``. Bad arguments end with a one-line message and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from effrank_fast import report
from effrank_fast.info import report as info_report
from effrank_fast.paper import demo as demo_mod
from effrank_fast.paper.experiments import cli as experiments_cli  # the `experiment` command (docs/staircase.md)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="effrank-fast", description="Effective rank of hidden-layer features.")
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser(
        "demo",
        help="reproduce the staircase phenomenon on CPU",
        description="Fit Σ_k sin(kπx) on [-1, 1] with an MLP and record the ε-rank of every hidden layer at every "
        "step (2000-point trapezoid grid, M = ∫Ω φφᵀ dx). Writes history, figures and summary.json to a run folder.",
    )
    dc = demo_mod.DemoConfig()
    d.add_argument("--width", type=int, default=dc.width, help="hidden width (default %(default)s)")
    d.add_argument("--depth", type=int, default=dc.depth, help="number of hidden layers (default %(default)s)")
    d.add_argument("--activation", choices=demo_mod.ACTIVATIONS, default=dc.activation)
    d.add_argument("--optimizer", choices=tuple(demo_mod.OPTIMIZERS), default=dc.optimizer)
    d.add_argument("--lr", type=float, default=None, help="learning rate (default: adam 1e-3, sgd 1e-2, lbfgs 1)")
    d.add_argument(
        "--steps",
        type=int,
        default=None,
        help="training steps (default: adam and sgd 5000, lbfgs 200 of up to 20 iterations each)",
    )
    d.add_argument("--eps", type=float, nargs="+", default=dc.eps, help="ε thresholds (absolute)")
    d.add_argument("--seed", type=int, default=dc.seed)
    d.add_argument("--device", default=dc.device, help="torch device (default %(default)s)")
    d.add_argument("--out", default=None, help="run folder (default runs/demo-<date>-<time>)")
    d.add_argument("--frequencies", type=int, default=dc.frequencies, help="K in Σ_{k≤K} sin(kπx)")
    d.add_argument("--every", type=int, default=dc.every, help="measure every this many steps")
    d.add_argument("--flush-every", type=int, default=dc.flush_every, help="write the files every this many steps")
    d.add_argument("--spectrum-every", type=int, default=dc.spectrum_every, help="keep the full spectrum this often")
    d.add_argument(
        "--threads",
        type=int,
        default=dc.threads,
        help="torch CPU threads; 0 = torch's default (default %(default)s: the matrices are small, more threads "
        "gain little and suffer most on a shared machine)",
    )
    d.add_argument("--no-progress", action="store_true", help="no progress bar")
    d.add_argument("--no-plots", action="store_true", help="skip the figures")
    d.set_defaults(func=_demo)
    r = sub.add_parser("report", help="summarise and plot a run folder (also an interrupted one)")
    r.add_argument("run_dir", type=Path)
    r.add_argument("--no-plots", action="store_true")
    r.add_argument("--json", action="store_true", help="print summary.json instead of the table")
    r.set_defaults(func=_report)
    sub.add_parser("info", help="versions, devices and available backends").set_defaults(func=_info)
    experiments_cli.register(sub)
    return p


def _print_report(run_dir: Path, plots: bool, as_json: bool = False) -> None:
    summary = report.report(run_dir, plots=plots)
    if as_json:
        print(json.dumps(report.to_jsonable(summary), indent=2))
        return
    print(report.format_table(summary))
    files = [*report.RUN_FILES, *summary.get("figures", []), report.SUMMARY_JSON]
    print("files: " + ", ".join(str(run_dir / f) for f in files if (run_dir / f).exists()))


def _info(args: argparse.Namespace) -> int:
    print(info_report())
    return 0


def _report(args: argparse.Namespace) -> int:
    try:
        _print_report(args.run_dir, plots=not args.no_plots, as_json=args.json)
    except (FileNotFoundError, NotADirectoryError, ValueError) as exc:
        print(f"effrank-fast report: {exc}", file=sys.stderr)
        return 2
    return 0


def _demo(args: argparse.Namespace) -> int:
    cfg = demo_mod.DemoConfig(
        width=args.width,
        depth=args.depth,
        activation=args.activation,
        optimizer=args.optimizer,
        lr=args.lr,
        steps=args.steps,
        eps=list(args.eps),
        seed=args.seed,
        device=args.device,
        out=args.out,
        frequencies=args.frequencies,
        every=args.every,
        flush_every=args.flush_every,
        spectrum_every=args.spectrum_every,
        threads=args.threads,
        progress=not args.no_progress,
    )
    try:
        cfg.check()
    except demo_mod.DemoConfigError as exc:
        print(f"effrank-fast demo: --{exc.field.replace('_', '-')}: {exc.message}", file=sys.stderr)
        return 2
    arch = "-".join(["1", *[str(cfg.width)] * cfg.depth, "1"])
    print(
        f"effrank-fast demo: {cfg.activation} MLP {arch}, {cfg.optimizer}, {cfg.n_steps} steps; ε-rank of every "
        f"hidden layer every {cfg.every} step(s) on a {cfg.probe_points}-point trapezoid grid, ε = {cfg.eps}"
    )
    out = demo_mod.run_demo(cfg)
    _print_report(out, plots=not args.no_plots)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
