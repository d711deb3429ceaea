"""The staircase demo: ``effrank-fast demo``.

Fits u(x) = Σ_{k=1..K} sin(kπx) on [−1, 1] (1000 equispaced points, full batch, MSE) with an MLP
1 → width × depth → 1 (Adam or SGD for 5000 steps; L-BFGS for 200 steps of up to 20 iterations
with a strong-Wolfe line search) and records, at every step, the ε-rank of every hidden layer on a 2000-point
trapezoid grid (weights summing to |Ω| = 2, i.e. M = ∫_Ω φφᵀ dx, ``mode="integral"``) with a
:class:`~effrank_fast.RankMonitor`. The run folder then gets the history, the figures and a
summary (:func:`effrank_fast.report.report`).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from effrank_fast.monitor import Engine, Features, Probe, RankMonitor, RunLog
from effrank_fast.quadrature import trapezoid

ACTIVATIONS = ("tanh", "relu", "gelu", "sin")
OPTIMIZERS = {"adam": 1e-3, "sgd": 1e-2, "lbfgs": 1.0}  # name → default learning rate
DEFAULT_STEPS = {"adam": 5000, "sgd": 5000, "lbfgs": 200}  # an L-BFGS step is up to 20 iterations
LBFGS_MAX_ITER = 20


class DemoConfigError(ValueError):
    """A bad demo setting; ``field`` names it (the CLI prints it as ``--field``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


class Sin(nn.Module):
    """sin as a module (the fused Gram kernel recognises it by name)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(x)


@dataclass
class DemoConfig:
    width: int = 64
    depth: int = 3
    activation: str = "tanh"
    optimizer: str = "adam"
    lr: float | None = None
    steps: int | None = None  # None: DEFAULT_STEPS of the optimizer
    eps: list[float] = field(default_factory=lambda: [1e-2, 1e-3, 1e-4])
    seed: int = 0
    device: str = "cpu"
    out: str | None = None
    frequencies: int = 8
    train_points: int = 1000
    probe_points: int = 2000
    every: int = 1
    flush_every: int = 250
    spectrum_every: int = 10
    threads: int | None = 1
    progress: bool = True

    @property
    def n_steps(self) -> int:
        return DEFAULT_STEPS.get(self.optimizer, 5000) if self.steps is None else self.steps

    @property
    def learning_rate(self) -> float:
        return OPTIMIZERS[self.optimizer] if self.lr is None else self.lr

    def check(self) -> None:
        """Raise :class:`DemoConfigError` naming the first bad setting."""
        if self.activation not in ACTIVATIONS:
            raise DemoConfigError("activation", f"must be one of {ACTIVATIONS}, got {self.activation!r}")
        if self.optimizer not in OPTIMIZERS:
            raise DemoConfigError("optimizer", f"must be one of {tuple(OPTIMIZERS)}, got {self.optimizer!r}")
        minimum = {"width": 1, "depth": 1, "steps": 1, "frequencies": 1, "train_points": 1, "probe_points": 2}
        minimum |= {"every": 1, "flush_every": 1, "spectrum_every": 0, "threads": 0}
        for name, low in minimum.items():
            v = getattr(self, name)
            if v is None and name in ("steps", "threads"):
                continue
            if not isinstance(v, int) or isinstance(v, bool) or v < low:
                raise DemoConfigError(name, f"must be an integer >= {low}, got {v!r}")
        if self.lr is not None and not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise DemoConfigError("lr", f"must be a finite number > 0, got {self.lr!r}")
        if not self.eps or not all(isinstance(e, (int, float)) and math.isfinite(e) and e > 0 for e in self.eps):
            raise DemoConfigError("eps", f"every threshold must be a finite number > 0, got {self.eps!r}")
        _check_device(self.device)
        if self.out is not None:
            _check_out(Path(self.out))


def _check_device(name: str) -> None:
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise DemoConfigError("device", f"{name!r} is not a torch device ({exc})") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DemoConfigError("device", f"{name!r}: no CUDA device is available here (use --device cpu)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DemoConfigError("device", f"{name!r}: only {torch.cuda.device_count()} CUDA device(s)")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise DemoConfigError("device", f"{name!r}: MPS is not available here (use --device cpu)")
    elif device.type != "cpu":
        raise DemoConfigError("device", f"{name!r}: the demo runs on cpu, cuda or mps")


def _check_out(out: Path) -> None:
    """The run folder must be a folder (or creatable) and writable."""
    if out.exists() and not out.is_dir():
        raise DemoConfigError("out", f"{out} exists and is not a folder")
    parent = out
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise DemoConfigError("out", f"cannot create {out}: {parent} is a file")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise DemoConfigError("out", f"{parent} is not writable")


def build_model(width: int, depth: int, activation: str) -> nn.Sequential:
    """1 → [Linear(width) → act] × depth → Linear(1)."""
    act = {"tanh": nn.Tanh, "relu": nn.ReLU, "gelu": nn.GELU, "sin": Sin}[activation]
    mods: list[nn.Module] = []
    fan_in = 1
    for _ in range(depth):
        mods += [nn.Linear(fan_in, width), act()]
        fan_in = width
    mods.append(nn.Linear(fan_in, 1))
    return nn.Sequential(*mods)


def target(x: torch.Tensor, k: int) -> torch.Tensor:
    return sum((torch.sin(j * math.pi * x) for j in range(1, k + 1)), torch.zeros_like(x))


def _optimizer(cfg: DemoConfig, params: Any) -> torch.optim.Optimizer:
    lr = cfg.learning_rate
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr)
    # Up to 20 iterations per step: with a single iteration per opt.step(), L-BFGS restarts its
    # line search from a unit step every time and stalls on the loss plateau (loss frozen at 3.76).
    return torch.optim.LBFGS(params, lr=lr, max_iter=LBFGS_MAX_ITER, history_size=50, line_search_fn="strong_wolfe")


def default_out() -> Path:
    return Path("runs") / time.strftime("demo-%Y%m%d-%H%M%S")


def run_demo(cfg: DemoConfig) -> Path:
    """Train with the monitor on; returns the run folder (not yet summarised)."""
    cfg.check()
    threads = torch.get_num_threads()
    if cfg.threads:  # None or 0: torch's default
        torch.set_num_threads(cfg.threads)
    try:
        return _run(cfg)
    finally:
        torch.set_num_threads(threads)


def _run(cfg: DemoConfig) -> Path:
    device = torch.device(cfg.device)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.width, cfg.depth, cfg.activation).to(device)
    x = torch.linspace(-1, 1, cfg.train_points, device=device).unsqueeze(1)
    y = target(x, cfg.frequencies)
    xq, wq = trapezoid(-1.0, 1.0, cfg.probe_points)
    opt = _optimizer(cfg, model.parameters())
    out = Path(cfg.out) if cfg.out else default_out()
    lr = cfg.learning_rate
    arch = "-".join(["1", *[str(cfg.width)] * cfg.depth, "1"])
    run = {
        **asdict(cfg),
        "steps": cfg.n_steps,
        "out": str(out),
        "task": f"fit Σₖ sin(kπx), k ≤ {cfg.frequencies}, on [−1, 1] ({cfg.train_points} points, full batch, MSE)",
        "model": f"{cfg.activation} MLP {arch}",
        "optimizer": f"{cfg.optimizer} lr {lr:g}"
        + (f", up to {LBFGS_MAX_ITER} iterations per step" if cfg.optimizer == "lbfgs" else ""),
        "loss_name": "MSE",
        "finished": False,
    }
    mon = RankMonitor(
        model,
        layers="all_hidden",
        eps=cfg.eps,
        probe=Probe(xq.to(device), weights=wq.to(device)),
        every=cfg.every,
        features=Features(
            mode="integral",
            acc_dtype=torch.float64,  # ε down to 1e-4 against λ_max ≈ 1e2: keep the Gram exact to ~1e-12
            backend="torch",  # BLAS: as fast as the native kernel at N=2000, d=64 (benchmarks/RESULTS.md)
        ),
        engine=Engine(spectrum_every=cfg.spectrum_every),
        log=RunLog(out, tensorboard=False, flush_every=cfg.flush_every, meta=run),
    )
    bar = _progress(cfg)
    last = mon.layers[-1].label
    t0 = time.perf_counter()
    try:
        for step in range(cfg.n_steps):
            loss = _train_step(cfg, model, opt, x, y)
            mon.step(loss=loss)
            if bar is not None:
                bar.update(1)
                if (step + 1) % cfg.flush_every == 0 and mon.history:
                    row = [r for r in mon.history[-len(mon.layers) :] if r["layer"] == last][0]
                    e0 = f"eps_rank@{max(cfg.eps):g}"
                    bar.set_postfix(loss=f"{row['loss']:.3g}", rank=row.get(e0), refresh=False)
        mon.run_meta.update(finished=True, wall_time_s=time.perf_counter() - t0)
    finally:
        if bar is not None:
            bar.close()
        mon.close()
    return out


def _train_step(
    cfg: DemoConfig, model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor
) -> torch.Tensor:
    if cfg.optimizer == "lbfgs":

        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss = torch.mean((model(x) - y) ** 2)
            loss.backward()
            return loss

        first = opt.step(closure)  # type: ignore[arg-type]  # L-BFGS returns the closure's first loss
        assert isinstance(first, torch.Tensor)
        return first.detach()
    loss = torch.mean((model(x) - y) ** 2)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss.detach()


def _progress(cfg: DemoConfig) -> Any:
    if not cfg.progress:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=cfg.n_steps, desc="training (rank monitored)", unit="step", mininterval=0.5, dynamic_ncols=True)
