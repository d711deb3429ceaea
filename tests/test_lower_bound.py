"""The ε-rank loss lower bound (effrank_fast.paper.lower_bound) against independent float64 computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import effrank_fast as ef
from effrank_fast.paper.lower_bound import loss_lower_bound, readout_coefficients, span_distance, weighted_l2_error


def _features(seed: int, n: int = 24, points: int = 800) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x, w = ef.quadrature.trapezoid(-1.0, 1.0, points, dtype=torch.float64)
    phi = torch.tanh(
        x @ (3 * torch.randn(1, n, generator=g, dtype=torch.float64)) + torch.randn(n, generator=g, dtype=torch.float64)
    )
    return x, w, phi


def _numpy_distance(phi: np.ndarray, u: np.ndarray, w: np.ndarray, eps: float) -> tuple[int, float]:
    """Independent: SVD of diag(√w)[Φ 1], least squares of √w u onto the top-r left singular directions."""
    a = np.hstack([phi, np.ones((phi.shape[0], 1))]) * np.sqrt(w)[:, None]
    _, s, vt = np.linalg.svd(a, full_matrices=False)
    r = int((s**2 > eps).sum())
    basis = a @ vt[:r].T
    b = u * np.sqrt(w)
    coef, *_ = np.linalg.lstsq(basis, b, rcond=None)
    return r, float(np.linalg.norm(b - basis @ coef))


def _eps_in_gaps(phi: np.ndarray, w: np.ndarray) -> list[float]:
    """Thresholds halfway (geometrically) between consecutive eigenvalues, so that r is unambiguous."""
    a = np.hstack([phi, np.ones((phi.shape[0], 1))]) * np.sqrt(w)[:, None]
    lam = np.linalg.svd(a, compute_uv=False) ** 2
    return [float(math.sqrt(lam[k] * lam[k + 1])) for k in (1, 4, 8) if lam[k + 1] > 1e-10]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_span_distance_matches_least_squares(seed):
    x, w, phi = _features(seed)
    u = torch.sin(5 * math.pi * x[:, 0]) + x[:, 0] ** 3
    eps = _eps_in_gaps(phi.numpy(), w.numpy())
    got = span_distance(phi, u, w, eps)
    for e, (r, dist) in zip(eps, got, strict=True):
        r_np, d_np = _numpy_distance(phi.numpy(), u.numpy(), w.numpy(), e)
        assert r == r_np
        assert float(dist[0]) == pytest.approx(d_np, rel=1e-8, abs=1e-12)
    dists = [float(d[0]) for _, d in got]
    assert dists == sorted(dists, reverse=True)  # a larger span (smaller ε) is never farther away


def test_bound_is_exact_on_an_orthogonal_example():
    # Features sin(πx), sin(2πx) and the constant are L²(−1, 1)-orthogonal to u = sin(5πx), ‖u‖² = 1.
    x, w = ef.quadrature.trapezoid(-1.0, 1.0, 4001, dtype=torch.float64)
    phi = torch.cat([torch.sin(math.pi * x), torch.sin(2 * math.pi * x)], dim=1)
    u = torch.sin(5 * math.pi * x[:, 0])
    c = torch.tensor([[0.1, -0.2, 0.05]], dtype=torch.float64)
    (lb,) = loss_lower_bound(phi, u, w, c, 1e-2)
    assert lb.rank == 3
    assert lb.dist == pytest.approx(1.0, abs=1e-6)
    assert lb.c_norm == pytest.approx(math.sqrt(0.01 + 0.04 + 0.0025), rel=1e-12)
    assert lb.bound == pytest.approx((1.0 - 0.1 * lb.c_norm) ** 2, abs=1e-6)


def _mlp(seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(1, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 1)).double()


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("train_steps", [0, 150])
def test_bound_is_below_the_observed_probe_loss(seed, train_steps):
    model = _mlp(seed)
    x, w = ef.quadrature.trapezoid(-1.0, 1.0, 1000, dtype=torch.float64)
    u = sum(torch.sin(k * math.pi * x[:, 0]) for k in range(1, 7))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(train_steps):
        loss = torch.mean((model(x)[:, 0] - u) ** 2)
        opt.zero_grad()
        loss.backward()
        opt.step()
    feats: list[torch.Tensor] = []
    hook = model[4].register_forward_hook(lambda m, inp, out: feats.append(inp[0]))
    with torch.no_grad():
        pred = model(x)[:, 0]
    hook.remove()
    observed = float(((pred - u) ** 2 * w).sum())  # ‖u − u_θ‖² in the same trapezoid norm
    assert weighted_l2_error(pred, u, w) == pytest.approx(observed, rel=1e-12)
    bounds = loss_lower_bound(feats[0], u, w, readout_coefficients(model[4]), [1e-1, 1e-2, 1e-3, 1e-4, 1e-6])
    for lb in bounds:
        assert 0.0 <= lb.bound <= observed * (1 + 1e-9)
    assert any(lb.bound > 0 for lb in bounds)  # not vacuous here


def test_vector_valued_outputs_sum_over_outputs():
    x, w, phi = _features(3, n=10)
    u = torch.stack([torch.sin(4 * math.pi * x[:, 0]), torch.cos(7 * math.pi * x[:, 0])], dim=1)
    c = torch.full((2, 11), 0.01, dtype=torch.float64)
    (both,) = loss_lower_bound(phi, u, w, c, 1e-3)
    singles = [loss_lower_bound(phi, u[:, i], w, c[i : i + 1], 1e-3)[0] for i in range(2)]
    assert both.bound == pytest.approx(sum(s.bound for s in singles), rel=1e-12)
    assert both.dist == pytest.approx(math.hypot(*(s.dist for s in singles)), rel=1e-12)


def test_readout_coefficients_include_the_bias():
    lin = nn.Linear(3, 2)
    c = readout_coefficients(lin)
    assert c.shape == (2, 4) and c.dtype == torch.float64
    torch.testing.assert_close(c[:, :3], lin.weight.detach().double())
    torch.testing.assert_close(c[:, 3], lin.bias.detach().double())


@pytest.mark.parametrize(
    ("call", "err"),
    [
        (lambda p, u, w: span_distance(p[0], u, w, 1e-2), ValueError),
        (lambda p, u, w: span_distance(p, u[:-1], w, 1e-2), ValueError),
        (lambda p, u, w: span_distance(p, u, w[:-1], 1e-2), ValueError),
        (lambda p, u, w: span_distance(p, u, -w, 1e-2), ValueError),
        (lambda p, u, w: span_distance(p, u, w, -1.0), ValueError),
        (lambda p, u, w: loss_lower_bound(p, u, w, torch.zeros(1, 3), 1e-2), ValueError),
        (lambda p, u, w: readout_coefficients(nn.Tanh()), TypeError),
    ],
)
def test_bad_arguments(call, err):
    x, w, phi = _features(0, n=6, points=50)
    with pytest.raises(err):
        call(phi, x[:, 0], w)
