"""Row t pairs loss(θ_t) with the ranks of θ_t, whichever way the loop is written.

The model's λ₁ changes every step; the expected λ₁ of θ_t is recomputed here in float64 with numpy
from a copy of the parameters taken when the loss was computed (before the update).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from effrank_fast import RankMonitor
from effrank_fast.quadrature import trapezoid

STEPS = 6


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(1, 12), nn.Tanh(), nn.Linear(12, 12), nn.Tanh(), nn.Linear(12, 1)).double()


def _data():
    x = torch.linspace(-1, 1, 128, dtype=torch.float64).unsqueeze(1)
    return x, torch.sin(3 * math.pi * x)


def _snapshot(model: nn.Module) -> nn.Module:
    """A hook-free copy of the current parameters."""
    snap = _model()
    snap.load_state_dict(model.state_dict())
    return snap


XQ, WQ = trapezoid(-1.0, 1.0, 200, dtype=torch.float64)


def _lambda1(snapshot: nn.Module, points: torch.Tensor, weights: np.ndarray | None) -> float:
    """λ₁ of M = Σ w φφᵀ of the last hidden layer (the input of the final Linear), numpy float64."""
    with torch.no_grad():
        phi = snapshot[:4](points).numpy()
    w = np.full(len(phi), 1.0 / len(phi)) if weights is None else weights
    return float(np.linalg.eigvalsh((phi * w[:, None]).T @ phi)[-1])


def _probe_monitor(model, **kw):
    return RankMonitor(model, "last_hidden", [1e-3], probe=XQ, weights=WQ, flush_every=1000, **kw)


def _check(rows, expected, every=1):
    """rows[t] holds θ_t's λ₁ and loss; consecutive θ differ clearly (so a one-step shift would fail)."""
    assert [r["step"] for r in rows] == list(range(0, STEPS, every))
    for r, (lam, loss) in zip(rows, expected[::every], strict=True):
        assert r["lambda_1"] == pytest.approx(lam, rel=1e-10)
        assert r["loss"] == pytest.approx(loss, rel=1e-12)
    lams = [lam for lam, _ in expected]
    assert min(abs(a - b) / a for a, b in zip(lams, lams[1:], strict=False)) > 1e-6  # λ₁ moves every step


@pytest.mark.parametrize("order", ["readme", "monitor_first"])
def test_probe_rows_hold_the_parameters_of_their_loss(order):
    model = _model()
    x, y = _data()
    opt = torch.optim.Adam(model.parameters(), lr=2e-2)
    initial = _lambda1(_snapshot(model), XQ, WQ.numpy())
    expected = []
    with _probe_monitor(model) as mon:
        for _ in range(STEPS):
            loss = ((model(x) - y) ** 2).mean()
            expected.append((_lambda1(_snapshot(model), XQ, WQ.numpy()), float(loss.detach())))
            opt.zero_grad()
            loss.backward()
            if order == "readme":  # loss.backward(); opt.step(); mon.step(loss=loss)
                opt.step()
                mon.step(loss=loss)
            else:
                mon.step(loss=loss)
                opt.step()
    _check(mon.history, expected)
    assert mon.history[0]["lambda_1"] == pytest.approx(initial, rel=1e-10)  # step 0: the initial network


def test_every_second_step_and_two_optimizers():
    model = _model()
    x, y = _data()
    params = list(model.parameters())
    opts = [torch.optim.SGD(params[:2], lr=0.5), torch.optim.Adam(params[2:], lr=2e-2)]
    expected = []
    with _probe_monitor(model, every=2) as mon:
        for _ in range(STEPS):
            loss = ((model(x) - y) ** 2).mean()
            expected.append((_lambda1(_snapshot(model), XQ, WQ.numpy()), float(loss.detach())))
            for o in opts:
                o.zero_grad()
            loss.backward()
            for o in opts:  # the first one's pre-hook probes; the second sees a half-updated model
                o.step()
            mon.step(loss=loss)
    _check(mon.history, expected, every=2)


def test_lbfgs_closure_rows_hold_the_parameters_before_the_step():
    model = _model()
    x, y = _data()
    opt = torch.optim.LBFGS(model.parameters(), lr=1, max_iter=5, line_search_fn="strong_wolfe")
    expected = []

    def closure():
        opt.zero_grad()
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        return loss

    with _probe_monitor(model) as mon:
        for _ in range(STEPS):
            expected.append((_lambda1(_snapshot(model), XQ, WQ.numpy()), None))
            first = opt.step(closure)  # the loss of the first closure call: θ_t
            expected[-1] = (expected[-1][0], float(first.detach()))
            mon.step(loss=first)
    _check(mon.history, expected)


def test_batch_rows_hold_the_features_of_the_loss_forward():
    model = _model()
    x, y = _data()
    opt = torch.optim.Adam(model.parameters(), lr=2e-2)
    expected = []
    with RankMonitor(model, "last_hidden", [1e-3], flush_every=1000) as mon:
        for _ in range(STEPS):
            loss = ((model(x) - y) ** 2).mean()
            expected.append((_lambda1(_snapshot(model), x, None), float(loss.detach())))
            opt.zero_grad()
            loss.backward()
            opt.step()
            mon.step(loss=loss)
    _check(mon.history, expected)
