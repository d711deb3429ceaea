"""SFLI (effrank_fast.paper.sfli.sfli_) against its formula: γ, unit/Gaussian directions, hyperplanes that cut Ω."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
import torch
from torch import nn

import effrank_fast as ef
from effrank_fast.paper.sfli import sfli_


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _gamma_formula(n: int, bounds: list[tuple[float, float]], C: float = 1.0) -> float:
    d = len(bounds)
    volume = float(np.prod([hi - lo for lo, hi in bounds]))
    return C * (n ** (1 / d) - 1) / volume ** (1 / d)


@pytest.mark.parametrize(
    ("bounds", "n", "C"),
    [([(-1.0, 1.0)], 64, 1.0), ([(-1.0, 1.0), (0.0, 3.0)], 100, 1.0), ([(0.0, 1.0)] * 5, 128, 2.5)],
)
def test_tanh_rows_have_norm_gamma_and_unit_directions(bounds, n, C):
    lin = sfli_(nn.Linear(len(bounds), n), bounds, C=C, generator=_gen())
    gamma = _gamma_formula(n, bounds, C)
    norms = lin.weight.detach().double().norm(dim=1).numpy()
    np.testing.assert_allclose(norms, gamma, rtol=1e-6)  # W_i = γ α_i with ‖α_i‖ = 1


def test_explicit_gamma_overrides_the_default():
    lin = sfli_(nn.Linear(2, 16), [(-1, 1), (-1, 1)], gamma=7.25, C=100.0, generator=_gen())
    np.testing.assert_allclose(lin.weight.detach().double().norm(dim=1).numpy(), 7.25, rtol=1e-6)


@pytest.mark.parametrize("kind", ["tanh", "cosine", "gaussian"])
@pytest.mark.parametrize("bounds", [[(-1.0, 1.0)], [(-1.0, 1.0), (-1.0, 1.0)], [(0.0, 1.0), (2.0, 5.0), (-3.0, -2.5)]])
def test_every_hyperplane_cuts_the_box(kind, bounds):
    lin = sfli_(nn.Linear(len(bounds), 512), bounds, kind=kind, generator=_gen(1))
    w = lin.weight.detach().double().numpy()
    b = lin.bias.detach().double().numpy()
    lo = np.array([a for a, _ in bounds])
    hi = np.array([c for _, c in bounds])
    # min and max of w·x + b over the box are reached at corners: Σ_j min/max(w_j lo_j, w_j hi_j) + b
    low = np.minimum(w * lo, w * hi).sum(axis=1) + b
    high = np.maximum(w * lo, w * hi).sum(axis=1) + b
    assert np.all(low <= 0) and np.all(high >= 0)


def test_one_d_transition_points_are_uniform_over_the_interval():
    lin = sfli_(nn.Linear(1, 4000), [(-2.0, 3.0)], generator=_gen(2))
    x0 = (-lin.bias.detach().double() / lin.weight.detach().double()[:, 0]).numpy()  # where γ(αx + c) = 0
    assert scipy.stats.kstest(x0, scipy.stats.uniform(loc=-2.0, scale=5.0).cdf).pvalue > 1e-3


def test_cosine_directions_are_standard_gaussian():
    d, n = 3, 4000
    bounds = [(-1.0, 1.0)] * d
    lin = sfli_(nn.Linear(d, n), bounds, kind="cosine", generator=_gen(3))
    alpha = lin.weight.detach().double().numpy() / _gamma_formula(n, bounds)
    assert scipy.stats.kstest((alpha**2).sum(axis=1), scipy.stats.chi2(d).cdf).pvalue > 1e-3
    assert scipy.stats.kstest(alpha[:, 0], scipy.stats.norm.cdf).pvalue > 1e-3


def test_tanh_directions_are_uniform_on_the_sphere():
    lin = sfli_(nn.Linear(3, 6000), [(-1.0, 1.0)] * 3, generator=_gen(4))
    alpha = torch.nn.functional.normalize(lin.weight.detach().double(), dim=1).numpy()
    # On the unit sphere in R^3 each coordinate is uniform on [-1, 1] (Archimedes).
    assert scipy.stats.kstest(alpha[:, 2], scipy.stats.uniform(loc=-1, scale=2).cdf).pvalue > 1e-3


def test_reproducible_and_keeps_dtype():
    a = sfli_(nn.Linear(2, 32), [(-1, 1), (-1, 1)], generator=_gen(5))
    b = sfli_(nn.Linear(2, 32).double(), [(-1, 1), (-1, 1)], generator=_gen(5))
    assert a.weight.dtype == torch.float32 and b.weight.dtype == torch.float64
    torch.testing.assert_close(a.weight.double(), b.weight, rtol=1e-6, atol=0)
    torch.testing.assert_close(a.bias.double(), b.bias, rtol=1e-6, atol=1e-6)


def test_raises_the_first_layer_eps_rank_over_default_init():
    torch.manual_seed(0)
    x, w = ef.quadrature.trapezoid(-1.0, 1.0, 2000)
    default = nn.Linear(1, 64)
    structured = sfli_(nn.Linear(1, 64), [(-1.0, 1.0)], generator=_gen(6))
    with torch.no_grad():
        r_default = int(ef.reference.eps_rank(torch.tanh(default(x)).double(), 1e-3, weights=w, mode="integral"))
        r_sfli = int(ef.reference.eps_rank(torch.tanh(structured(x)).double(), 1e-3, weights=w, mode="integral"))
    assert r_sfli >= 3 * r_default


@pytest.mark.parametrize(
    ("kwargs", "err"),
    [
        ({"linear": nn.Conv1d(1, 1, 1)}, TypeError),
        ({"linear": nn.Linear(1, 8, bias=False)}, ValueError),
        ({"bounds": [(-1, 1), (-1, 1)]}, ValueError),
        ({"bounds": [(1, -1)]}, ValueError),
        ({"bounds": [(0, math.inf)]}, ValueError),
        ({"bounds": 3}, TypeError),
        ({"kind": "relu"}, ValueError),
        ({"C": 0.0}, ValueError),
        ({"gamma": -1.0}, ValueError),
        ({"gamma": math.nan}, ValueError),
        ({"generator": 0}, TypeError),
    ],
)
def test_bad_arguments(kwargs, err):
    args = {"linear": nn.Linear(1, 8), "bounds": [(-1.0, 1.0)], **kwargs}
    linear, bounds = args.pop("linear"), args.pop("bounds")
    with pytest.raises(err):
        sfli_(linear, bounds, **args)
