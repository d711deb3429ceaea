"""RankMonitor's own cost on the staircase demo (CPU): wall time with and without the monitor.

    python benchmarks/bench_monitor.py [--blocks 12] [--block-steps 250] [--threads 1]

Trains the demo (tanh MLP 1-64-64-64-1, Adam 1e-3, 1000 full-batch points) in several
configurations side by side, advancing each by one block of steps in turn (round robin), and
prints the median and best ms/step over blocks of each, the monitor's overhead against plain
training, then a breakdown of one measured step's parts. Each block holds one flush.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable

import torch

import effrank_fast as ef
from effrank_fast.paper.demo import build_model, target
from effrank_fast.quadrature import trapezoid


class _Runner:
    """One training run (model, data, optimizer, optional monitor) that can be advanced in blocks."""

    def __init__(self, make_monitor: Callable[[torch.nn.Module], ef.RankMonitor | None]) -> None:
        torch.manual_seed(0)
        self.model = build_model(64, 3, "tanh")
        self.x = torch.linspace(-1, 1, 1000).unsqueeze(1)
        self.y = target(self.x, 8)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        self.mon = make_monitor(self.model)

    def run(self, steps: int) -> float:
        """ms per step over ``steps`` steps."""
        t0 = time.perf_counter()
        for _ in range(steps):
            loss = torch.mean((self.model(self.x) - self.y) ** 2)
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()
            if self.mon is not None:
                self.mon.step(loss=loss)
        return (time.perf_counter() - t0) / steps * 1e3


def configs(tmp: str) -> dict[str, Callable[[torch.nn.Module], ef.RankMonitor | None]]:
    xq, wq = trapezoid(-1, 1, 2000)
    common = {"eps": [1e-2, 1e-3, 1e-4], "acc_dtype": torch.float64, "gram_backend": "torch", "tensorboard": False}
    probe = {"probe": xq, "weights": wq, "mode": "integral", **common}
    return {
        "no monitor": lambda m: None,
        "demo: 3 layers, probe 2000, every step, files": lambda m: ef.RankMonitor(
            m, "all_hidden", **probe, flush_every=250, spectrum_every=10, log_dir=f"{tmp}/a"
        ),
        "3 layers, probe 2000, every 10 steps": lambda m: ef.RankMonitor(m, "all_hidden", **probe, every=10),
        "last hidden, probe 2000, every step": lambda m: ef.RankMonitor(m, "last_hidden", **probe),
        "last hidden, training batch (1000), every step": lambda m: ef.RankMonitor(m, "last_hidden", **common),
    }


def breakdown(repeats: int = 50) -> dict[str, float]:
    """ms per call of the parts of one measured demo step (3 layers, 2000 probe points)."""
    torch.manual_seed(0)
    model = build_model(64, 3, "tanh")
    xq, wq = trapezoid(-1, 1, 2000)
    h = model[:6](xq).detach()
    m = ef.gram(h, wq, mode="integral", backend="torch", acc_dtype=torch.float64)

    def timed(fn: Callable[[], object]) -> float:
        """Best of 5 rounds: on a shared machine noise only ever adds time."""
        fn()
        rounds = []
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(repeats):
                fn()
            rounds.append((time.perf_counter() - t0) / repeats * 1e3)
        return min(rounds)

    with torch.no_grad():
        return {
            "probe forward (2000 points, no_grad)": timed(lambda: model(xq)),
            "Gram 2000x64 float64, torch backend (x3 layers)": timed(
                lambda: ef.gram(h, wq, mode="integral", backend="torch", acc_dtype=torch.float64, check=False)
            ),
            "Gram 2000x64 float64, auto backend (x3 layers)": timed(
                lambda: ef.gram(h, wq, mode="integral", acc_dtype=torch.float64, check=False)
            ),
            "eigvalsh 64x64 float64 (x3 layers)": timed(lambda: torch.linalg.eigvalsh(m)),
        }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--blocks", type=int, default=12, help="blocks per configuration (round robin)")
    p.add_argument("--block-steps", type=int, default=250, help="steps per block (= the demo's flush_every)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    import tempfile

    times: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        runners = {name: _Runner(make) for name, make in configs(tmp).items()}
        # Round robin in blocks: a slow phase of a shared machine hits every configuration alike.
        for _ in range(args.blocks):
            for name, r in runners.items():
                times.setdefault(name, []).append(r.run(args.block_steps))
        for r in runners.values():
            if r.mon is not None:
                r.mon.close()
    med = {k: statistics.median(v) for k, v in times.items()}
    best = {k: min(v) for k, v in times.items()}
    base, base_best = med["no monitor"], best["no monitor"]
    steps = args.blocks * args.block_steps
    print(f"# {platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
          f"{steps} steps per configuration in {args.blocks} round-robin blocks")  # fmt: skip
    print(
        "| configuration | ms/step (median block) | overhead ms/step | × plain | best block ms/step | × plain (best) |"
    )
    print("|---|---|---|---|---|---|")
    for name in med:
        print(
            f"| {name} | {med[name]:.2f} | {med[name] - base:+.2f} | {med[name] / base:.2f} | "
            f"{best[name]:.2f} | {best[name] / base_best:.2f} |"
        )
    parts = breakdown()
    print("\n| part of one measured step | ms |\n|---|---|")
    for name, ms in parts.items():
        print(f"| {name} | {ms:.3f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"block_ms_per_step": times, "breakdown_ms": parts, "args": vars(args)}, f, indent=2)


if __name__ == "__main__":
    main()
