"""``effrank-fast experiment NAME [options]``: the E1–E5 experiments and the seed comparison.

effrank-fast experiment e1 --seeds 0 1 2                 # the default E1 (Adam, tanh, width 64) over 3 seeds
effrank-fast experiment e1 --optimizer adam sgd lbfgs    # one run per optimizer (a product over list options)
effrank-fast experiment e5 --task e1 --seeds 0 1 2       # SFLI vs default init
effrank-fast experiment e1 --init scaled sfli --sfli-C 0.5 1 2    # SFLI ablations: scale, γ/C sweep
effrank-fast experiment compare runs/e1-*                # re-aggregate finished runs
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path
from typing import Any

from effrank_fast.paper.experiments import compare, e5, runner

NAMES = {
    "e1": "1-D multi-frequency regression Σ sin(kπx) on [−1, 1] (Adam/SGD/L-BFGS; tanh/ReLU/sin; widths)",
    "e2": "2-D Poisson PINN on [−1, 1]² with an autograd Laplacian; monitor on a trapezoid grid",
    "e3": "8-D regression on [0, 1]^8, Monte Carlo quadrature w = |Ω|/N",
    "e4": "classification of scikit-learn's bundled digits; rank on a fixed eval set, mode mean",
    "e5": "SFLI vs default initialisation on E1 and E2",
}
LIST_OPTIONS = ("optimizer", "activation", "width", "init", "sfli_C", "sfli_placement")


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="one run per seed (default: 0)")
    p.add_argument("--steps", type=int, default=None, help="training steps (L-BFGS: opt.step calls)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default adam 1e-3, sgd 1e-2, lbfgs 1)")
    p.add_argument("--depth", type=int, default=None, help="hidden layers")
    p.add_argument("--eps", type=float, nargs="+", default=None, help="ε thresholds (default 1e-2 1e-3 1e-4)")
    p.add_argument("--every", type=int, default=None, help="measure the ranks every this many steps (default 1)")
    p.add_argument("--bound-every", type=int, default=None, help="lower bound and extras every this many steps")
    p.add_argument("--spectrum-every", type=int, default=None, help="keep the full spectrum this often")
    p.add_argument("--lbfgs-max-iter", type=int, default=None, help="L-BFGS iterations per step (default 20)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cuda (default cpu)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default; default 1)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="an experiment option")
    p.add_argument("--out", default=None, help="output folder (default runs/<name>-<date>-<time>)")
    p.add_argument("--no-plots", action="store_true", help="skip the figures")


def register(subparsers: Any) -> None:
    """Add the ``experiment`` command to the ``effrank-fast`` subparsers."""
    p = subparsers.add_parser(
        "experiment",
        help="run the paper's experiments E1–E5 (and compare runs over seeds)",
        description="Experiments of docs/staircase.md. Each run folder is readable by `effrank-fast report`.",
    )
    sub = p.add_subparsers(dest="experiment_name", required=True, metavar="NAME")
    for name, text in NAMES.items():
        q = sub.add_parser(name, help=text, description=text)
        _add_common(q)
        if name == "e5":
            q.add_argument("--task", nargs="+", choices=("e1", "e2"), default=["e1", "e2"])
        else:
            q.add_argument("--optimizer", nargs="+", choices=("adam", "sgd", "lbfgs"), default=None)
            q.add_argument("--activation", nargs="+", choices=("tanh", "relu", "sin", "gelu"), default=None)
            q.add_argument("--width", type=int, nargs="+", default=None)
            q.add_argument("--init", nargs="+", choices=("default", "sfli", "scaled"), default=None)
            q.add_argument("--sfli-C", dest="sfli_C", type=float, nargs="+", default=None, help="SFLI's γ scale C")
            q.add_argument(
                "--sfli-placement",
                nargs="+",
                choices=("uniform", "default"),
                default=None,
                help="SFLI's hyperplanes through U(Ω) points or the default init's transitions",
            )
    c = sub.add_parser("compare", help="aggregate finished runs over seeds", description="Aggregate runs over seeds.")
    c.add_argument("dirs", nargs="+", type=Path, help="run folders, or folders of run folders")
    c.add_argument("--out", type=Path, default=None, help="where comparison.json goes (default: the first folder)")
    c.add_argument("--no-plots", action="store_true")
    c.add_argument(
        "--reanalyse", action="store_true", help="recompute each run's experiment.json first (no run figures)"
    )
    p.set_defaults(func=main)


def _options(pairs: list[str]) -> dict[str, Any]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"--set needs KEY=VALUE, got {pair!r}")
        out[key.replace("-", "_")] = value
    return out


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    keys = ("steps", "lr", "depth", "eps", "every", "bound_every", "spectrum_every", "lbfgs_max_iter", "device")
    out = {k: getattr(args, k) for k in keys}
    out["threads"] = args.threads or None
    return {**out, **_options(args.set)}


def main(args: argparse.Namespace) -> int:
    name = args.experiment_name
    try:
        if name == "compare":
            results = compare.load_results(args.dirs)
            if args.reanalyse:
                results = [runner.analyse(r["run_dir"], plots=False) for r in results]
            compare.compare(args.out or args.dirs[0], results, plots=not args.no_plots)
            return 0
        out = Path(args.out) if args.out else Path("runs") / time.strftime(f"{name}-%Y%m%d-%H%M%S")
        base = _overrides(args)
        if name == "e5":
            e5.run(tasks=args.task, seeds=args.seeds, out=out, overrides=base, plots=not args.no_plots)
            return 0
        lists = {k: getattr(args, k) for k in LIST_OPTIONS if getattr(args, k) is not None}
        variants = [{**base, **dict(zip(lists, combo, strict=True))} for combo in itertools.product(*lists.values())]
        for v in variants:  # validate every configuration before the first run starts
            runner.make_config(name, **{**v, "seed": args.seeds[0]})
        runner.run_grid(name, seeds=args.seeds, variants=variants, out=out, plots=not args.no_plots)
    except (ValueError, FileNotFoundError, ImportError) as exc:
        print(f"effrank-fast experiment {name}: {exc}", file=sys.stderr)
        return 2
    return 0
