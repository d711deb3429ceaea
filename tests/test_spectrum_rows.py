"""spectrum_rows: the native row kernel against its reference, the exact engine's Python path
(ExactEngine.record_many composed of rank/formulas.py and rank/certified.py), and its certified
counts against the independent float64 reference of the features.

Tolerances: the kernel sums left to right, PyTorch pairwise; reassociating d non-negative terms
moves a sum by ≤ d·u₆₄ relative, so floats agree to 8·d·u₆₄ (tests/test_spectrum_scalars.py).
Counts, certificates and bounds are compared exactly: their thresholds are the same float64
expressions evaluated in the same order.
"""

from __future__ import annotations

import math

import pytest
import torch

from effrank_fast.monitor import core, engines
from effrank_fast.ops import native
from effrank_fast.ops.backends import BackendUnavailableError
from effrank_fast.ops.spectrum_rows import spectrum_rows, why_not_native
from effrank_fast.quadrature import trapezoid
from effrank_fast.rank import reference

U64 = torch.finfo(torch.float64).eps / 2
needs_native = pytest.mark.skipif(
    native.kernel_missing_reason("spectrum_rows", "cpu") is not None, reason="native spectrum_rows not built"
)


def _features(layers: int, n: int, d: int, dtype: torch.dtype, seed: int) -> list[torch.Tensor]:
    """tanh features of a random 1-D input, spectra decaying over many decades (the demo's kind)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.linspace(-1, 1, n, dtype=torch.float64)[:, None]
    out = []
    for _ in range(layers):
        w = torch.randn(1, d, dtype=torch.float64, generator=gen) * 3
        b = torch.randn(d, dtype=torch.float64, generator=gen)
        out.append(torch.tanh(x * w + b).to(dtype))
    return out


def _rows(phis, weights, eps, relative, topk, native_on: bool, monkeypatch) -> list[torch.Tensor]:
    inps = core.from_features_many(phis, weights, "integral" if weights is not None else "mean", "auto")
    engine = engines.ExactEngine(torch.tensor(eps, dtype=torch.float64), relative, topk, mode="mean", center=False)
    with monkeypatch.context() as m:
        if not native_on:
            m.setattr(engines, "spectrum_rows_why_not", lambda _: "the Python path (the reference)")
        out = engine.record_many(list(range(len(phis))), inps, True)
    return [torch.cat([row, lam]) for row, lam in out]


def _same(a: list[torch.Tensor], b: list[torch.Tensor], d: int, n_int: int) -> None:
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x[:n_int], y[:n_int]), (x[:n_int], y[:n_int])  # counts, certified, bounds
        torch.testing.assert_close(x[n_int:], y[n_int:], rtol=8 * d * U64, atol=1e-300, equal_nan=True)


@needs_native
@pytest.mark.parametrize("relative", [None, "max", "trace"])
@pytest.mark.parametrize(
    ("n", "d", "dtype"), [(400, 24, torch.float32), (300, 40, torch.bfloat16), (16, 40, torch.float32)]
)
def test_native_rows_equal_the_python_path(monkeypatch, relative, n, d, dtype):
    """The d×d Gram (N ≥ d) and the N×N kernel (N < d: d − N zero eigenvalues appended), every
    relative convention, topk past d."""
    phis = _features(3, n, d, dtype, seed=n + d)
    _, w = trapezoid(-1, 1, n)
    eps = [1e-2, 1e-5, 1e-9]
    topk = d + 3
    a = _rows(phis, w, eps, relative, topk, True, monkeypatch)
    b = _rows(phis, w, eps, relative, topk, False, monkeypatch)
    _same(a, b, d, 4 * len(eps))
    assert math.isnan(a[0][4 * len(eps) + 7 + d].item())  # λ_{d+1} does not exist


@needs_native
def test_uncertified_counts_and_bounds_equal_the_python_path(monkeypatch):
    """τ placed on computed eigenvalues: the counts are not proven there, and the kernel gives the
    Python path's certificate flags and bounds exactly."""
    phis = _features(2, 300, 20, torch.float32, seed=7)
    inps = core.from_features_many(phis, None, "mean", "auto")
    lam = torch.linalg.eigvalsh(inps[0].sp.matrix.double()).flip(0)
    eps = [float(lam[2]), float(lam[5]) * (1 + 1e-15), 1e-3]
    a = _rows(phis, None, eps, None, 4, True, monkeypatch)
    b = _rows(phis, None, eps, None, 4, False, monkeypatch)
    _same(a, b, 20, 12)
    assert a[0][3:5].tolist() == [0.0, 0.0]  # certified@ε on an eigenvalue: no
    assert a[0][6] < a[0][9] and a[0][7] < a[0][10]  # lower < upper there


@needs_native
def test_certified_counts_equal_the_float64_reference(monkeypatch):
    phis = _features(3, 500, 32, torch.float32, seed=3)
    _, w = trapezoid(-1, 1, 500)
    eps = [1e-2, 1e-4, 1e-6, 1e-8]
    for row, phi in zip(_rows(phis, w, eps, None, 4, True, monkeypatch), phis, strict=True):
        ref = reference.eps_rank(phi, eps, weights=w, mode="integral").tolist()
        for e, r in enumerate(ref):
            assert row[2 * 4 + e] <= r <= row[3 * 4 + e]  # within the proven bounds
            if row[4 + e] == 1:
                assert row[e] == r


@needs_native
@pytest.mark.parametrize("d", [24, 160])
def test_solving_inside_agrees_with_a_given_spectrum(d):
    """The kernel's own eigensolves (one LAPACK call per matrix, single-threaded) agree with torch's
    batched eigvalsh within δ_eig = 4·n·u₆₄·max|λ| (MKL's threaded reduction at larger n rounds
    differently); on the same spectrum the rows are the same; the certified counts agree."""
    phis = _features(3, 600, d, torch.float32, seed=1)
    inps = core.from_features_many(phis, None, "mean", "auto")
    stacked = inps[0].stack[0]
    g = torch.stack([i.sp.gram_error for i in inps])
    eps = torch.tensor([1e-3, 1e-6], dtype=torch.float64)
    given = spectrum_rows(stacked, torch.linalg.eigvalsh(stacked), g, eps, None, d, U64, 5)
    inside = spectrum_rows(stacked, None, g, eps, None, d, U64, 5)
    top = float(given[1].abs().max())
    torch.testing.assert_close(inside[1], given[1], rtol=0, atol=4 * d * U64 * top)
    certified = (given[0][:, 2:4] == 1) & (inside[0][:, 2:4] == 1)
    assert certified.any() and torch.equal(given[0][:, :2][certified], inside[0][:, :2][certified])
    again = spectrum_rows(stacked, inside[1][:, :d].flip(-1).contiguous(), g, eps, None, d, U64, 5)
    assert torch.equal(again[0], inside[0])


@needs_native
def test_kernel_checks_name_the_argument():
    m = torch.eye(4, dtype=torch.float64).expand(2, 4, 4).contiguous()
    g, eps = torch.zeros(2, dtype=torch.float64), torch.tensor([0.5], dtype=torch.float64)
    op = torch.ops.effrank_fast.spectrum_rows
    with pytest.raises(RuntimeError, match="lam must be"):
        op(m, torch.zeros(2, 3, dtype=torch.float64), g, eps, 0, 4, U64, 1)
    with pytest.raises(RuntimeError, match="dim must be"):
        op(m, torch.zeros(2, 4, dtype=torch.float64), g, eps, 0, 3, U64, 1)
    with pytest.raises(RuntimeError, match="relative"):
        op(m, torch.zeros(2, 4, dtype=torch.float64), g, eps, 5, 4, U64, 1)
    with pytest.raises(RuntimeError, match="gram_error"):
        op(m, torch.zeros(2, 4, dtype=torch.float64), g[:1], eps, 0, 4, U64, 1)


def test_refusal_names_the_reason():
    m = torch.eye(3, dtype=torch.float16).expand(2, 3, 3)
    assert "float16" in (why_not_native(m) or "")
    with pytest.raises(BackendUnavailableError, match="float16"):
        spectrum_rows(m, None, torch.zeros(2, dtype=torch.float64), torch.ones(1, dtype=torch.float64), None, 3, U64, 1)


@needs_native
def test_opcheck():
    m = torch.randn(2, 5, 5, dtype=torch.float64)
    m = m @ m.mT
    args = (
        m,
        torch.linalg.eigvalsh(m),
        torch.full((2,), 1e-12, dtype=torch.float64),
        torch.tensor([1e-2, 1e-1], dtype=torch.float64),
        1,
        7,
        U64,
        3,
    )
    torch.library.opcheck(torch.ops.effrank_fast.spectrum_rows.default, args)
