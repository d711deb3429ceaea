"""E2: 2-D Poisson PINN, −Δu = f on Ω = [−1, 1]², u = sin(kπx)sin(kπy), f = 2k²π² u, u = 0 on ∂Ω.

The forcing frequency k is the option ``frequency`` (a positive integer, default 1, so that u
vanishes on ∂Ω): ``--set frequency=3``.

Loss = mean residual² at ``interior`` uniform random collocation points (fixed per seed) +
``boundary_weight`` · mean u_θ² at ``boundary`` points spread evenly over the four edges; the
Laplacian comes from autograd (two backward passes, ``create_graph=True``). The monitor's probe is a
``grid``×``grid`` ``trapezoid_grid`` on Ω (weights summing to |Ω| = 4). The lower bound is on the L²
error ‖u − u_θ‖²_w of the exact solution, not on the PINN loss (a residual).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from effrank_fast.paper.experiments.common import Problem, RunConfig, linear_ends, mlp
from effrank_fast.quadrature import trapezoid_grid

NAME = "e2"
TITLE = "2-D Poisson PINN on [−1, 1]² (autograd Laplacian)"
# Ranks every 5 steps (the PINN step with its double backward costs several probe measurements).
DEFAULTS: dict[str, Any] = {
    "steps": 2000,
    "optimizer": "adam",
    "activation": "tanh",
    "width": 64,
    "depth": 3,
    "every": 5,
    "spectrum_every": 50,
    "bound_every": 50,
}
LBFGS_STEPS = 2000  # L-BFGS iterations (one per opt.step)
OPTIONS: dict[str, Any] = {"interior": 1000, "boundary": 200, "boundary_weight": 1.0, "grid": 40, "frequency": 1}
BOUNDS = [(-1.0, 1.0), (-1.0, 1.0)]


def exact(x: torch.Tensor, k: int = 1) -> torch.Tensor:
    """u(x) = sin(kπx₁) sin(kπx₂) on points x [N, 2] → [N]."""
    return torch.sin(k * math.pi * x[:, 0]) * torch.sin(k * math.pi * x[:, 1])


def check_options(options: dict[str, Any]) -> None:
    k = options.get("frequency", OPTIONS["frequency"])
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"frequency must be an integer >= 1 (u must vanish on the boundary), got {k!r}")


def laplacian(model: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(u_θ(x) [N], Δu_θ(x) [N]) by autograd; x must require grad."""
    u = model(x)[:, 0]
    (g,) = torch.autograd.grad(u.sum(), x, create_graph=True)
    lap = sum(torch.autograd.grad(g[:, i].sum(), x, create_graph=True)[0][:, i] for i in range(x.shape[1]))
    assert isinstance(lap, torch.Tensor)
    return u, lap


def _boundary(n: int, device: torch.device) -> torch.Tensor:
    t = torch.linspace(-1.0, 1.0, n // 4 + 1, device=device)[:-1]
    one = torch.ones_like(t)
    edges = [torch.stack(p, dim=1) for p in ((t, -one), (one, t), (-t, one), (-one, -t))]
    return torch.cat(edges)


def build(cfg: RunConfig, device: torch.device) -> Problem:
    o = {**OPTIONS, **cfg.options}
    check_options(o)
    k = int(o["frequency"])
    torch.manual_seed(cfg.seed)
    model = mlp(2, cfg.width, cfg.depth, cfg.activation).to(device)
    first, last = linear_ends(model)
    xi = (2 * torch.rand(int(o["interior"]), 2) - 1).to(device).requires_grad_(True)
    f = 2 * (k * math.pi) ** 2 * exact(xi.detach(), k)
    xb = _boundary(int(o["boundary"]), device)
    lam = float(o["boundary_weight"])
    xq, wq = trapezoid_grid(BOUNDS, int(o["grid"]))
    xq, wq = xq.to(device), wq.to(device)

    def loss() -> torch.Tensor:
        _, lap = laplacian(model, xi)
        return torch.mean((-lap - f) ** 2) + lam * torch.mean(model(xb)[:, 0] ** 2)

    arch = "-".join(["2", *[str(cfg.width)] * cfg.depth, "1"])
    return Problem(
        model=model,
        loss=loss,
        probe=xq,
        weights=wq,
        readout=last,
        first_layer=first,
        bounds=BOUNDS,
        target=exact(xq, k),
        info={
            "task": f"E2: Poisson −Δu = f, u = sin({k}πx)sin({k}πy) on [−1, 1]² "
            f"({o['interior']} + {o['boundary']} points)",
            "model": f"{cfg.activation} MLP {arch}",
            "loss_name": "PINN loss (residual² + boundary²)",
        },
    )
