"""E3: regression in d dimensions (default 8) on Ω = [0, 1]^d with Monte Carlo quadrature.

Target u(x) = (1/√d) Σ_i sin(2π x_i) + cos(2π a·x), a = (1, …, 1)/√d: an additive part plus one
ridge, so a few features suffice although the input has d dimensions. Full batch on
``train_points`` uniform random points, MSE. The monitor's probe is ``probe_points`` further uniform
points with weights w = |Ω|/N (= 1/N here), i.e. mode "integral" by Monte Carlo.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from effrank_fast.paper.experiments.common import Problem, RunConfig, linear_ends, mlp

NAME = "e3"
TITLE = "d-dimensional regression with Monte Carlo quadrature (w = |Ω|/N)"
DEFAULTS: dict[str, Any] = {"steps": 2000, "optimizer": "adam", "activation": "tanh", "width": 64, "depth": 3}
LBFGS_STEPS = 2000  # L-BFGS iterations (one per opt.step)
OPTIONS: dict[str, Any] = {"dim": 8, "train_points": 2000, "probe_points": 2000}


def target(x: torch.Tensor) -> torch.Tensor:
    d = x.shape[1]
    return torch.sin(2 * math.pi * x).sum(dim=1) / math.sqrt(d) + torch.cos(2 * math.pi * x.sum(dim=1) / math.sqrt(d))


def build(cfg: RunConfig, device: torch.device) -> Problem:
    o = {**OPTIONS, **cfg.options}
    d = int(o["dim"])
    if d < 1:
        raise ValueError(f"dim must be >= 1, got {d}")
    bounds = [(0.0, 1.0)] * d
    torch.manual_seed(cfg.seed)
    model = mlp(d, cfg.width, cfg.depth, cfg.activation).to(device)
    first, last = linear_ends(model)
    x = torch.rand(int(o["train_points"]), d).to(device)
    y = target(x)[:, None]
    n_probe = int(o["probe_points"])
    xq = torch.rand(n_probe, d).to(device)
    volume = 1.0  # |[0, 1]^d|
    wq = torch.full((n_probe,), volume / n_probe, dtype=torch.float64, device=device)

    def loss() -> torch.Tensor:
        return torch.mean((model(x) - y) ** 2)

    arch = "-".join([str(d), *[str(cfg.width)] * cfg.depth, "1"])
    return Problem(
        model=model,
        loss=loss,
        probe=xq,
        weights=wq,
        readout=last,
        first_layer=first,
        bounds=bounds,
        target=target(xq),
        info={
            "task": f"E3: {d}-D regression on [0, 1]^{d} ({o['train_points']} points, MSE), Monte Carlo probe",
            "model": f"{cfg.activation} MLP {arch}",
            "loss_name": "MSE",
        },
    )
