"""E1: 1-D multi-frequency regression, u(x) = Σ_{k=1..K} sin(kπx) on Ω = [−1, 1].

Full batch on ``train_points`` equispaced points, MSE; the monitor's probe is a
``probe_points``-point trapezoid grid (weights summing to |Ω| = 2, M ≈ ∫_Ω φφᵀ dx). Variants:
``--optimizer adam|sgd|lbfgs``, ``--activation tanh|relu|sin``, ``--width 64|128`` (any value works).
"""

from __future__ import annotations

from typing import Any

import torch

from effrank_fast.paper.demo import target
from effrank_fast.paper.experiments.common import Problem, RunConfig, linear_ends, mlp
from effrank_fast.quadrature import trapezoid

NAME = "e1"
TITLE = "1-D multi-frequency regression Σ sin(kπx) on [−1, 1]"
DEFAULTS: dict[str, Any] = {"steps": 5000, "optimizer": "adam", "activation": "tanh", "width": 64, "depth": 3}
LBFGS_STEPS = 3000  # L-BFGS iterations (one per opt.step) when --optimizer lbfgs and no --steps
OPTIONS: dict[str, Any] = {"frequencies": 8, "train_points": 1000, "probe_points": 2000}
BOUNDS = [(-1.0, 1.0)]


def build(cfg: RunConfig, device: torch.device) -> Problem:
    o = {**OPTIONS, **cfg.options}
    torch.manual_seed(cfg.seed)
    model = mlp(1, cfg.width, cfg.depth, cfg.activation).to(device)
    first, last = linear_ends(model)
    x = torch.linspace(-1.0, 1.0, int(o["train_points"]), device=device).unsqueeze(1)
    y = target(x, int(o["frequencies"]))
    xq, wq = trapezoid(-1.0, 1.0, int(o["probe_points"]))
    xq, wq = xq.to(device), wq.to(device)

    def loss() -> torch.Tensor:
        return torch.mean((model(x) - y) ** 2)

    arch = "-".join(["1", *[str(cfg.width)] * cfg.depth, "1"])
    return Problem(
        model=model,
        loss=loss,
        probe=xq,
        weights=wq,
        readout=last,
        first_layer=first,
        bounds=BOUNDS,
        target=target(xq, int(o["frequencies"]))[:, 0],
        info={
            "task": f"E1: fit Σₖ sin(kπx), k ≤ {o['frequencies']}, on [−1, 1] ({o['train_points']} points, MSE)",
            "model": f"{cfg.activation} MLP {arch}",
            "loss_name": "MSE",
        },
    )
