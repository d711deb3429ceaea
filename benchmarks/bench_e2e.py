"""What every-step rank monitoring costs in a real training loop.

    python benchmarks/bench_e2e.py [--widths 1024,2048,4096,8192] [--batch 16384] [--json out.json]
    python benchmarks/bench_e2e.py --smoke        # CPU, tiny sizes, < 60 s (CI runs it)

Model: an MLP of 4 hidden layers (Linear d→d + ReLU, input d, output 16), bf16 autocast, AdamW,
MSE on a fixed random batch of N rows. Every variant trains its own copy of the same initial model
and measures every step:

- ``none``: no monitor (the reference step time);
- ``svdvals``: the user's baseline, ``torch.linalg.svdvals`` of each monitored activation [N, d]
  (fp32), ε-counts of σ² against σ_max²;
- ``gram_eigvalsh``: fp32 Gram hᵀh, float64 ``eigvalsh``, the same counts;
- ``exact``: ``RankMonitor(tracker="exact")`` (solver "auto");
- ``warm``: ``RankMonitor(tracker="warm")``, k = min(256, d/4), an exact refresh every
  ``--refresh-every`` steps (the timed window is that many steps, so it holds one refresh);
- ``warm_fused``: the same with ``fused=True`` (Gram of ReLU(xWᵀ + b) formed from x);

each for the last hidden layer alone (``last_hidden``) and for all 4 (``all_hidden``). Reported:
ms/step (CUDA-event timed on a GPU) and the overhead in % of ``none``'s step. Counts check: after
timing, the exact monitor (float64 eigvalsh) and the fast ones run side by side on the same model
for a few steps with a short refresh period; their ε-counts must agree at the tracker's refreshed
steps (path EIGH) and are compared at its certified ones. The JSON is rewritten after every
variant, so a run killed at its time cap keeps what it had measured.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

if not torch.cuda.is_available():  # the fused variant's Triton kernel runs in the interpreter on CPU
    os.environ.setdefault("TRITON_INTERPRET", "1")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _timing import machine_line  # noqa: E402

import effrank_fast as ef  # noqa: E402
from effrank_fast.tracker.result import TrackPath  # noqa: E402

EPS = [1e-2, 1e-3]
HIDDEN = 4
VARIANTS = ("none", "svdvals", "gram_eigvalsh", "exact", "warm", "warm_fused")
LAYER_SETS = ("last_hidden", "all_hidden")


def build_mlp(d: int, device: torch.device) -> nn.Sequential:
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for _ in range(HIDDEN):
        layers += [nn.Linear(d, d), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(d, 16)).to(device)


def hidden_linears(model: nn.Sequential, layer_set: str) -> list[nn.Linear]:
    """The Linears whose input is a hidden activation (all but the first), as the monitor picks them."""
    linears = [m for m in model if isinstance(m, nn.Linear)][1:]
    return linears[-1:] if layer_set == "last_hidden" else linears


class BaselineCounter:
    """The user's every-step count without effrank_fast: hooks keep each hidden input, then svdvals
    (or an fp32 Gram + float64 eigvalsh) gives ε-counts relative to the largest eigenvalue."""

    def __init__(self, model: nn.Sequential, layer_set: str, how: str) -> None:
        self.how, self.acts, self.counts = how, [], []
        self.eps = torch.tensor(EPS, dtype=torch.float64)
        self.handles = [
            lin.register_forward_pre_hook(lambda mod, args: self.acts.append(args[0].detach()))
            for lin in hidden_linears(model, layer_set)
        ]

    def step(self) -> None:
        for h in self.acts:
            if self.how == "svdvals":
                lam = torch.linalg.svdvals(h.float()).double() ** 2
            else:
                hf = h.float()
                lam = torch.linalg.eigvalsh((hf.T @ hf).double())
            eps = self.eps.to(lam.device)
            self.counts.append((lam.unsqueeze(0) > eps.unsqueeze(1) * lam.max()).sum(1))
        self.acts = []
        self.counts = self.counts[-8:]  # bounded: a real loop would log them

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


def make_monitor(model: nn.Module, variant: str, layer_set: str, d: int, refresh: int, **kw: Any) -> ef.RankMonitor:
    common: dict[str, Any] = {"eps": EPS, "tensorboard": False, "spectrum_every": 0, **kw}
    if variant == "exact":
        return ef.RankMonitor(model, layer_set, **common)
    opts = {"k": min(256, max(4, d // 4)), "refresh_every": refresh}
    return ef.RankMonitor(
        model, layer_set, tracker="warm", tracker_options=opts, fused=variant == "warm_fused", **common
    )


class Trainer:
    def __init__(self, model: nn.Sequential, x: torch.Tensor, y: torch.Tensor) -> None:
        self.model, self.x, self.y = model, x, y
        self.opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        self.device_type = x.device.type

    def step(self, after: Callable[[torch.Tensor], None] | None) -> None:
        with torch.autocast(self.device_type, dtype=torch.bfloat16):
            loss = torch.nn.functional.mse_loss(self.model(self.x).float(), self.y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        if after is not None:
            after(loss.detach())


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(trainer: Trainer, after, steps: int, device: torch.device) -> float:
    """ms per step over ``steps`` consecutive steps (CUDA events on a GPU, else the wall clock)."""
    _sync(device)
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(steps):
            trainer.step(after)
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / steps
    t0 = time.perf_counter()
    for _ in range(steps):
        trainer.step(after)
    return (time.perf_counter() - t0) * 1e3 / steps


def run_variant(variant: str, layer_set: str, d: int, base: nn.Sequential, x, y, args) -> dict[str, Any]:
    model = copy.deepcopy(base)
    trainer = Trainer(model, x, y)
    mon, counter, after = None, None, None
    if variant in ("svdvals", "gram_eigvalsh"):
        counter = BaselineCounter(model, layer_set, variant)
        after = lambda loss: counter.step()  # noqa: E731
    elif variant != "none":
        mon = make_monitor(model, variant, layer_set, d, args.refresh_every, flush_every=args.refresh_every)
        after = lambda loss: mon.step(loss=loss)  # noqa: E731
    t0 = time.perf_counter()
    for _ in range(args.warmup):
        trainer.step(after)
    _sync(x.device)
    per_step_s = (time.perf_counter() - t0) / max(1, args.warmup)
    if variant in ("warm", "warm_fused"):
        steps = args.refresh_every  # one whole refresh period: the amortised cost, one exact refresh in it
    else:  # the others by the warm-up's step time, at most the budget (svdvals at large d is slow)
        steps = args.steps if variant == "none" else args.steps_slow
        steps = max(3, min(steps, int(args.variant_budget_s / max(per_step_s, 1e-9))))
    ms = time_steps(trainer, after, steps, x.device)
    row: dict[str, Any] = {"d": d, "N": x.shape[0], "variant": variant, "layers": layer_set, "ms_per_step": ms}
    row["steps_timed"] = steps
    if mon is not None:
        mon.flush()
        errors = sorted({r["error"] for r in mon.history if r["error"]})
        row["error_rows"] = sum(1 for r in mon.history if r["error"])
        row["errors"] = errors[:3]
        mon.close()
    if counter is not None:
        counter.close()
    return row


def check_counts(base: nn.Sequential, x, y, d: int, layer_set: str, variants: list[str], refresh: int) -> dict:
    """The fast engines' ε-counts against the exact float64 eigvalsh counts of the same steps."""
    model = copy.deepcopy(base)
    trainer = Trainer(model, x, y)
    oracle = make_monitor(model, "exact", layer_set, d, refresh, tracker_options={"solver": "eigvalsh"})
    fast = {v: make_monitor(model, v, layer_set, d, refresh) for v in variants}
    monitors = [oracle, *fast.values()]
    for _ in range(2 * refresh + 1):
        trainer.step(lambda loss: [m.step(loss=loss) for m in monitors])
    for m in monitors:
        m.close()
    key = {(r["layer"], r["step"]): r for r in oracle.history}
    out = {}
    for v, mon in fast.items():
        refreshed = certified = refreshed_bad = certified_bad = 0
        max_diff = 0.0
        for r in mon.history:
            ref = key[(r["layer"], r["step"])]
            for e in EPS:
                col = f"eps_rank@{e:g}"
                diff = abs(r[col] - ref[col]) if math.isfinite(r[col]) else math.inf
                path = r.get(f"eps_rank_path@{e:g}")
                if v == "exact" or path == TrackPath.EIGH:
                    refreshed += 1
                    refreshed_bad += diff != 0
                elif path in (TrackPath.CERTIFIED, TrackPath.INERTIA):
                    certified += 1
                    certified_bad += diff != 0
                max_diff = max(max_diff, diff)
        out[v] = {
            "refreshed_compared": refreshed,
            "refreshed_mismatches": refreshed_bad,
            "certified_compared": certified,
            "certified_mismatches": certified_bad,
            "max_abs_diff": max_diff,
            "error_rows": sum(1 for r in mon.history if r["error"]),
        }
    return {"d": d, "layers": layer_set, "refresh_every": refresh, "variants": out}


def write_json(path: str | None, doc: dict) -> None:
    """Atomically (a killed run leaves the previous complete file)."""
    if not path:
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=1)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--widths", default="1024,2048,4096,8192")
    p.add_argument("--batch", type=int, default=16384)
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--layers", default=",".join(LAYER_SETS))
    p.add_argument("--steps", type=int, default=100, help="timed steps of the unmonitored reference")
    p.add_argument("--steps-slow", type=int, default=20, help="timed steps of svdvals, gram_eigvalsh, exact")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--refresh-every", type=int, default=100, help="warm tracker's exact refresh period")
    p.add_argument("--check-refresh", type=int, default=4, help="refresh period in the counts check")
    p.add_argument("--variant-budget-s", type=float, default=20.0, help="cap on a non-warm variant's timed steps")
    p.add_argument("--time-budget-s", type=float, default=math.inf, help="start nothing new after this")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--json", default=None)
    p.add_argument("--smoke", action="store_true", help="CPU, tiny sizes (CI)")
    args = p.parse_args(argv)
    if args.smoke:
        args.widths, args.batch, args.steps, args.steps_slow, args.warmup = "24", 128, 3, 3, 1
        args.refresh_every, args.check_refresh = 3, 1
    device = torch.device(args.device)
    widths = [int(w) for w in args.widths.split(",")]
    variants = [v for v in args.variants.split(",") if v]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        p.error(f"--variants: unknown {unknown}; choose from {VARIANTS}")
    layer_sets = [s for s in args.layers.split(",") if s]
    doc: dict[str, Any] = {"machine": machine_line(), "argv": sys.argv[1:], "rows": [], "checks": [], "done": False}
    t_start = time.perf_counter()
    for d in widths:
        torch.manual_seed(1)
        x = torch.randn(args.batch, d, device=device)
        y = torch.randn(args.batch, 16, device=device)
        base = build_mlp(d, device)
        reference_ms = None
        for layer_set in layer_sets:
            for variant in variants:
                if variant == "none" and layer_set != layer_sets[0]:
                    continue  # one reference per width
                if time.perf_counter() - t_start > args.time_budget_s:
                    doc["stopped"] = f"time budget {args.time_budget_s} s reached before d={d} {variant} {layer_set}"
                    write_json(args.json, doc)
                    print(doc["stopped"])
                    return 0
                row = run_variant(variant, "-" if variant == "none" else layer_set, d, base, x, y, args)
                if variant == "none":
                    reference_ms = row["ms_per_step"]
                if reference_ms is not None:
                    row["overhead_pct"] = 100.0 * (row["ms_per_step"] / reference_ms - 1.0)
                doc["rows"].append(row)
                write_json(args.json, doc)
                print(
                    f"d={d:5d} {row['layers']:12s} {variant:14s} {row['ms_per_step']:9.3f} ms/step"
                    + (f"  {row['overhead_pct']:+7.1f} %" if "overhead_pct" in row else ""),
                    flush=True,
                )
            fast = [v for v in ("exact", "warm", "warm_fused") if v in variants]
            if fast:
                check = check_counts(base, x, y, d, layer_set, fast, args.check_refresh)
                doc["checks"].append(check)
                write_json(args.json, doc)
                print(f"d={d:5d} {layer_set:12s} counts check: {json.dumps(check['variants'])}", flush=True)
    doc["done"] = True
    write_json(args.json, doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
