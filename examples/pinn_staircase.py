"""A physics-informed network (PINN) with the monitor in its loop: the staircase on a Poisson problem.

    python examples/pinn_staircase.py --steps 3000 --out runs/pinn

Solves −u'' = f on Ω = [−1, 1], u(±1) = 0, with u(x) = Σ_{k=1..K} sin(kπx) (so f = Σ (kπ)² sin(kπx)),
by a tanh MLP trained on the PDE residual at collocation points plus the boundary terms (Adam).
At every step a RankMonitor measures each hidden layer on a trapezoid grid whose weights sum to
|Ω| (M = ∫_Ω φφᵀ dx, the paper's ε-rank), and at the end
:func:`effrank_fast.paper.staircase.detect` finds the plateaus and jumps of the last hidden layer's
ε-rank against the loss. ``effrank-fast report --out`` draws the figures from the run folder.
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

from effrank_fast.monitor import Probe, RankMonitor, RunLog
from effrank_fast.paper import staircase
from effrank_fast.quadrature import trapezoid


def exact(x: torch.Tensor, k_max: int) -> tuple[torch.Tensor, torch.Tensor]:
    """u and f = −u'' at ``x``."""
    ks = torch.arange(1, k_max + 1, dtype=x.dtype) * torch.pi
    s = torch.sin(x * ks)
    return s.sum(1, keepdim=True), (s * ks**2).sum(1, keepdim=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--width", type=int, default=48)
    p.add_argument("--modes", type=int, default=4, help="K: the number of sine modes of u")
    p.add_argument("--points", type=int, default=400, help="collocation points")
    p.add_argument("--out", default="runs/pinn_staircase")
    a = p.parse_args()

    torch.manual_seed(0)
    w = a.width
    model = nn.Sequential(
        nn.Linear(1, w), nn.Tanh(), nn.Linear(w, w), nn.Tanh(), nn.Linear(w, w), nn.Tanh(), nn.Linear(w, 1)
    )
    x_c = torch.linspace(-1, 1, a.points).unsqueeze(1).requires_grad_(True)
    _, f_c = exact(x_c.detach(), a.modes)
    x_b = torch.tensor([[-1.0], [1.0]])
    x_q, w_q = trapezoid(-1.0, 1.0, 1000)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    mon = RankMonitor(
        model,
        layers="all_hidden",
        eps=[1e-2, 1e-3],
        probe=Probe(x_q, weights=w_q),
        log=RunLog(a.out, flush_every=100, meta={"loss_name": "PINN loss"}),
    )
    for _ in range(a.steps):
        u = model(x_c)
        du = torch.autograd.grad(u.sum(), x_c, create_graph=True)[0]
        d2u = torch.autograd.grad(du.sum(), x_c, create_graph=True)[0]
        loss = (-d2u - f_c).square().mean() / a.modes**4 + model(x_b).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()  # the probe runs just before this update: row t pairs θ_t's loss and ranks
        mon.step(loss=loss)
    mon.close()
    last = max(r["layer"] for r in mon.history)
    rows = [r for r in mon.history if r["layer"] == last]
    sc = staircase.detect([r["step"] for r in rows], [r["eps_rank@0.01"] for r in rows], [r["loss"] for r in rows])
    with torch.no_grad():
        u_err = (model(x_q) - exact(x_q, a.modes)[0]).abs().max()
    print(f"{last}: ε-rank@0.01 {rows[0]['eps_rank@0.01']}→{rows[-1]['eps_rank@0.01']}, jumps {len(sc.jumps)}, "
          f"stairs {sc.stairs}, final loss {rows[-1]['loss']:.3g}, max|u − u*| {float(u_err):.3g}")  # fmt: skip


if __name__ == "__main__":
    main()
