"""RankMonitor's cost at the widths it exists for, against plain training and hand-written hooks.

    PYTHONPATH=$PWD python benchmarks/bench_monitor.py [--scenarios demo,gpt2,mlp-2048x512] [--rounds 6]
    PYTHONPATH=$PWD python benchmarks/bench_monitor.py --smoke    # tiny sizes, one round (the test)
    PYTHONPATH=$PWD python benchmarks/bench_monitor.py --device cuda --scenarios gpt2   # on a GPU

On CUDA every timed window ends with ``torch.cuda.synchronize()`` (the monitor itself adds no host
sync to a step; its rows are copied at the flush).

Scenarios (each variant trains its own copy of the same model, same seed):

- ``demo``: the staircase demo (tanh MLP 1-64-64-64-1, Adam 1e-3, 1000 full-batch points), the
  monitor on every hidden layer with the 2000-point probe, every step, run files (no TensorBoard,
  as the demo writes them). A round is ``--steps`` × 125 steps: with an even ``--steps`` every
  round holds whole flushes (one per 250 steps), so the rounds measure the amortised cost.
- ``gpt2``: ``transformers.GPT2Config(n_layer=2, n_embd=512, n_head=8, vocab_size=8192,
  n_positions=128)`` built from the config, AdamW, batch 8 × seq 128 (N = 1024 tokens), random ids.
- ``mlp-{d}x{N}``: Linear(64, d)-GELU-Linear(d, d)-GELU-Linear(d, 10), AdamW, batch N.

Variants: ``plain``; ``monitor`` (the layer of interest: ``transformer.h.0.mlp.act`` at d = 2048
for gpt2, the second GELU for the MLPs); ``monitor default`` (``RankMonitor(model)``: last
hidden); ``monitor all hidden``; ``svdvals hook`` (``torch.linalg.svdvals`` of the activation
every step); ``gram+eigvalsh hook`` (float32 ΦᵀΦ, float64 eigvalsh); for a scenario with a probe
(the demo) also ``probe+gram+eigvalsh by hand`` (every step a no-grad probe forward, each hidden
layer's float64 Gram, one batched eigvalsh and the counts: the monitor's measurement without its
certificate, measures or files). Rounds are interleaved (the
order rotates every round) after warm-up rounds; the table gives the median ms/step and the ratio
to plain from the same rounds. After the rounds every monitor variant runs one more step whose
features are captured, and its counts are checked against the float64 reference of those
features (``effrank_fast.rank.reference``): certified counts must match.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

import effrank_fast as ef
from effrank_fast.paper.demo import build_model, target
from effrank_fast.quadrature import trapezoid
from effrank_fast.rank import reference

EPS = [1e-2, 1e-3, 1e-4]


DEVICE = torch.device("cpu")  # --device


@dataclass
class Scenario:
    name: str
    build: Callable[[], tuple[nn.Module, Callable[[nn.Module], torch.Tensor], torch.optim.Optimizer]]
    layer: str  # the module whose output is the layer of interest
    monitor_kw: dict[str, Any]
    all_hidden: object = "all_hidden"  # the "monitor all hidden" layers


def _gpt2(n_embd: int, n_layer: int, vocab: int, seq: int, batch: int) -> Scenario:
    from transformers import GPT2Config, GPT2LMHeadModel

    def build():
        torch.manual_seed(0)
        cfg = GPT2Config(n_layer=n_layer, n_embd=n_embd, n_head=8, vocab_size=vocab, n_positions=seq)
        model = GPT2LMHeadModel(cfg).to(DEVICE)
        ids = torch.randint(0, vocab, (batch, seq), generator=torch.Generator().manual_seed(1)).to(DEVICE)

        def loss(m: nn.Module) -> torch.Tensor:
            return m(input_ids=ids, labels=ids).loss

        return model, loss, torch.optim.AdamW(model.parameters(), lr=1e-4)

    # GPT-2's blocks use Conv1D, not nn.Linear: "all hidden" = every block's MLP activation and output
    blocks = [f"transformer.h.{i}.mlp.act" for i in range(n_layer)] + [f"transformer.h.{i}" for i in range(n_layer)]
    return Scenario("gpt2", build, "transformer.h.0.mlp.act", {}, blocks)


def _mlp(d: int, n: int) -> Scenario:
    def build():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(64, d), nn.GELU(), nn.Linear(d, d), nn.GELU(), nn.Linear(d, 10)).to(DEVICE)
        x = torch.randn(n, 64, generator=torch.Generator().manual_seed(1)).to(DEVICE)
        y = torch.randint(0, 10, (n,), generator=torch.Generator().manual_seed(2)).to(DEVICE)

        def loss(m: nn.Module) -> torch.Tensor:
            return nn.functional.cross_entropy(m(x), y)

        return model, loss, torch.optim.AdamW(model.parameters(), lr=1e-4)

    return Scenario(f"mlp-{d}x{n}", build, "3", {})


def _demo(points: int, probe: int) -> Scenario:
    def build():
        torch.manual_seed(0)
        model = build_model(64, 3, "tanh").to(DEVICE)
        x = torch.linspace(-1, 1, points, device=DEVICE).unsqueeze(1)
        y = target(x, 8)

        def loss(m: nn.Module) -> torch.Tensor:
            return torch.mean((m(x) - y) ** 2)

        return model, loss, torch.optim.Adam(model.parameters(), lr=1e-3)

    xq, wq = trapezoid(-1, 1, probe)
    xq, wq = xq.to(DEVICE), wq.to(DEVICE)
    # the demo's own monitor settings (effrank_fast.paper.demo): run files, no TensorBoard
    kw = {"probe": xq, "weights": wq, "spectrum_every": 10, "flush_every": 250, "tensorboard": False}
    return Scenario("demo", build, "5", kw)


# The demo's steps per round per --steps: half its flush_every (250), so that with an even --steps
# every round holds the same number of flushes. A flush writes 250 steps' rows at once (≈ 35 ms);
# rounds of 150 steps held one in three of five rounds, and the median round was a flush round.
DEMO_ROUND = 125


def scenarios(smoke: bool) -> dict[str, Scenario]:
    if smoke:
        return {"gpt2": _gpt2(32, 1, 64, 8, 2), "mlp-48x16": _mlp(48, 16), "demo": _demo(100, 100)}
    out = {"gpt2": _gpt2(512, 2, 8192, 128, 8), "demo": _demo(1000, 2000)}
    for d in (1024, 2048, 4096):
        for n in (512, 4096):
            out[f"mlp-{d}x{n}"] = _mlp(d, n)
    return out


def _hook(model: nn.Module, layer: str, fn: Callable[[torch.Tensor], torch.Tensor]) -> list[torch.Tensor]:
    """A hand-written forward hook on ``layer``'s output; keeps its result tensor like a logger would."""
    out: list[torch.Tensor] = []
    mod = model.get_submodule(layer)

    def hook(_m: nn.Module, _a: object, h: torch.Tensor) -> None:
        if torch.is_grad_enabled():
            x = h.detach().reshape(-1, h.shape[-1])
            out[:] = [fn(x)]

    mod.register_forward_hook(hook)
    return out


def _gram_eigvalsh(x: torch.Tensor) -> torch.Tensor:
    g = x.float().T @ x.float() / x.shape[0]
    return torch.linalg.eigvalsh(g.double())


VARIANTS = ("plain", "monitor", "monitor default", "monitor all hidden", "svdvals hook", "gram+eigvalsh hook")
# Scenarios with a probe (the demo) also time what the monitor's measurement is, written by hand.
PROBE_BY_HAND = "probe+gram+eigvalsh by hand"


def _probe_by_hand(model: nn.Module, probe: torch.Tensor, weights: torch.Tensor) -> Callable[[], None]:
    """What a user writes for the demo's measurement: every step, a no-grad eval forward on the
    probe, the float64 Gram Φᵀ diag(w) Φ of every hidden Linear's input, one batched ``eigvalsh``
    and the ε-counts (no certificate, no files)."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)][1:]
    feats: list[torch.Tensor] = []
    for m in linears:
        m.register_forward_pre_hook(lambda _m, a: feats.append(a[0]) if not torch.is_grad_enabled() else None)
    w64 = weights.double()[:, None]
    eps = torch.tensor(EPS, dtype=torch.float64)
    out: list[torch.Tensor] = []

    def measure() -> None:
        feats.clear()
        with torch.no_grad():
            model.eval()
            model(probe)
            model.train()
            grams = torch.stack([(h.double() * w64).T @ h.double() for h in feats])
            lam = torch.linalg.eigvalsh(grams)
            out[:] = [(lam.unsqueeze(-2) > eps.unsqueeze(-1)).sum(-1)]

    return measure


class Run:
    """One variant: its own model copy, optimizer and monitor or hook."""

    def __init__(self, sc: Scenario, variant: str, tmp: str) -> None:
        self.model, self.loss, self.opt = sc.build()
        self.mon: ef.RankMonitor | None = None
        self.by_hand: Callable[[], None] | None = None
        self.layer = sc.layer
        kw = {"eps": EPS, **sc.monitor_kw}
        if "log_dir" not in kw and sc.name == "demo":
            kw["log_dir"] = os.path.join(tmp, variant.replace(" ", "_"))
        if variant == "monitor":
            self.mon = ef.RankMonitor(self.model, [sc.layer], **kw)
        elif variant == "monitor default":
            self.mon = ef.RankMonitor(self.model, **kw)
        elif variant == "monitor all hidden":
            self.mon = ef.RankMonitor(self.model, sc.all_hidden, **kw)
        elif variant == "svdvals hook":
            _hook(self.model, sc.layer, torch.linalg.svdvals)
        elif variant == "gram+eigvalsh hook":
            _hook(self.model, sc.layer, _gram_eigvalsh)
        elif variant == PROBE_BY_HAND:
            self.by_hand = _probe_by_hand(self.model, sc.monitor_kw["probe"], sc.monitor_kw["weights"])

    def step(self) -> None:
        loss = self.loss(self.model)
        self.opt.zero_grad()
        loss.backward()
        if self.by_hand is not None:  # at the parameters the loss was taken at, as the monitor's probe
            self.by_hand()
        self.opt.step()
        if self.mon is not None:
            self.mon.step(loss=loss.detach())

    def timed(self, steps: int) -> float:
        _sync()
        t0 = time.perf_counter()
        for _ in range(steps):
            self.step()
        _sync()
        return (time.perf_counter() - t0) / steps * 1e3

    def check(self) -> dict[str, int]:
        """One more step with each monitored layer's features captured; counts against the float64
        reference: {checked, certified, certified_mismatch, outside_bounds}."""
        assert self.mon is not None
        self.mon.flush()
        feats: dict[int, torch.Tensor] = {}
        handles = []
        probe = self.mon.probe is not None
        for i, layer in enumerate(self.mon.layers):

            def grab(_m, args, out, i=i, where=layer.where):
                if probe == torch.is_grad_enabled():
                    return
                t = args[0] if where == "input" else out
                feats[i] = t.detach().reshape(-1, t.shape[-1]).double()

            handles.append(layer.module.register_forward_hook(grab))
        n = len(self.mon.history)
        self.step()
        for h in handles:
            h.remove()
        rows = self.mon.history[n:]
        w = None if self.mon.probe is None else self.mon.probe.weights
        mode = "integral" if w is not None else "mean"
        res = {"checked": 0, "certified": 0, "certified_mismatch": 0, "outside_bounds": 0}
        for i, row in enumerate(rows):
            ref = reference.eps_rank(feats[i], EPS, weights=w, mode=mode).tolist()
            for e, r in zip(EPS, ref, strict=True):
                res["checked"] += 1
                cert = bool(row[f"eps_rank_certified@{e:g}"])
                res["certified"] += cert
                res["certified_mismatch"] += cert and row[f"eps_rank@{e:g}"] != r
                res["outside_bounds"] += not row[f"eps_rank_lower@{e:g}"] <= r <= row[f"eps_rank_upper@{e:g}"]
        return res


def _sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def bench(sc: Scenario, rounds: int, warmup: int, steps: int, variants: tuple[str, ...]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        runs = {v: Run(sc, v, tmp) for v in variants}
        times: dict[str, list[float]] = {v: [] for v in variants}
        names = list(variants)
        for r in range(warmup + rounds):
            order = names[r % len(names) :] + names[: r % len(names)]  # rotate: no variant always first
            for v in order:
                ms = runs[v].timed(steps)
                if r >= warmup:
                    times[v].append(ms)
        checks = {v: run.check() for v, run in runs.items() if run.mon is not None}
        for run in runs.values():
            if run.mon is not None:
                run.mon.close()
    med = {v: statistics.median(t) for v, t in times.items()}
    # a shared machine's slow phases hit a whole round: the ratio within each round, then the median
    per_round = {v: statistics.median(a / b for a, b in zip(t, times["plain"], strict=True)) for v, t in times.items()}
    return {
        "ms": times,
        "median_ms": med,
        "ratio": {v: med[v] / med["plain"] for v in med},
        "ratio_per_round": per_round,
        "checks": checks,
    }


def parts(sc: Scenario, steps: int) -> dict[str, list[float]]:
    """ms of the training step and of each monitor's ``step()`` (the default layers and the layer of
    interest, both on one model), step by step: the monitor's own cost without another run's noise."""
    model, loss_fn, opt = sc.build()
    mons = {
        "monitor": ef.RankMonitor(model, [sc.layer], eps=EPS, **sc.monitor_kw),
        "monitor default": ef.RankMonitor(model, eps=EPS, **sc.monitor_kw),
    }
    out: dict[str, list[float]] = {"training step": [], **{k: [] for k in mons}}
    for _ in range(steps):
        _sync()
        t0 = time.perf_counter()
        loss = loss_fn(model)
        opt.zero_grad()
        loss.backward()
        opt.step()
        _sync()
        out["training step"].append((time.perf_counter() - t0) * 1e3)
        for name, mon in mons.items():
            t0 = time.perf_counter()
            mon.step(loss=loss.detach())
            _sync()
            out[name].append((time.perf_counter() - t0) * 1e3)
    for mon in mons.values():
        mon.close()
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenarios", default="demo,gpt2,mlp-2048x512", help="comma list (see --list)")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=2, help=f"steps per variant per round (demo: x{DEMO_ROUND})")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--smoke", action="store_true", help="tiny sizes, one round (the test)")
    p.add_argument("--list", action="store_true")
    p.add_argument("--parts", type=int, default=0, help="instead: time N steps' parts directly")
    p.add_argument("--json", default=None)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    args = p.parse_args(argv)
    global DEVICE
    DEVICE = torch.device(args.device)
    torch.set_num_threads(args.threads)
    table = scenarios(args.smoke)
    if args.list:
        print("\n".join(table))
        return {}
    names = list(table) if args.smoke else args.scenarios.split(",")
    rounds, warmup = (1, 0) if args.smoke else (args.rounds, args.warmup)
    out: dict[str, Any] = {
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip()
        + f", {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"
        + (f", {torch.cuda.get_device_name(DEVICE)}" if DEVICE.type == "cuda" else ""),
        "date": datetime.datetime.now().isoformat(timespec="minutes"),
        "load": os.getloadavg(),
        "results": {},
    }
    print(f"# {out['machine']}; {out['date']}; load {out['load'][0]:.2f}")
    variants = tuple(args.variants.split(","))
    if args.parts:
        for name in names:
            ms = parts(table[name], args.parts)
            out["results"][name] = {"parts_ms": ms}
            print(f"\n## {name}: parts, {args.parts} steps (step 0 is the warm-up)")
            print("| part | best | median | mean after step 0 |\n|---|---|---|---|")
            for k, v in ms.items():
                rest = v[1:] or v
                print(f"| {k} | {min(v):.1f} | {statistics.median(v):.1f} | {sum(rest) / len(rest):.1f} |")
        if args.json:
            with open(args.json, "w") as f:
                json.dump(out, f, indent=2)
        return out
    for name in names:
        sc = table[name]
        steps = 1 if args.smoke else args.steps * (DEMO_ROUND if name == "demo" else 1)
        has_probe = "probe" in sc.monitor_kw
        variants_run = tuple(v for v in variants if v != PROBE_BY_HAND or has_probe)
        if has_probe and args.variants == ",".join(VARIANTS):  # the default list: add it where it applies
            variants_run += (PROBE_BY_HAND,)
        res = bench(sc, rounds, warmup, steps, variants_run)
        out["results"][name] = res
        print(f"\n## {name} ({steps} steps per round, {rounds} rounds)")
        print("| variant | ms/step (median) | × plain (medians) | × plain (median of per-round ratios) |")
        print("|---|---|---|---|")
        for v in variants_run:
            r = res["ratio_per_round"][v]
            print(f"| {v} | {res['median_ms'][v]:.1f} | {res['ratio'][v]:.2f} | {r:.2f} |")
        print("counts vs float64 reference:", json.dumps(res["checks"]))
    out["load_after"] = os.getloadavg()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    return out


if __name__ == "__main__":
    main()
