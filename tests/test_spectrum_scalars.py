"""spectrum_scalars (rank/formulas.py; the kernel in ops/spectrum_scalars): the native kernel against
its PyTorch path, and both against independent
float64 definitions (numpy on a real Gram's spectrum; the per-measure formulas).

Tolerances: every output is a sum (or exp of a sum) over d float64 terms, taken left to right by
the kernel and pairwise/vectorised by PyTorch; reassociation moves a sum of d non-negative
terms by ≤ d·u₆₄ relative, so 8·d·u₆₄ (≤ 4e-12 at d = 4096) covers the outputs and the
sensitivity's two sums. The numpy reference is an independent eigensolve of the same Gram: its
eigenvalues differ by ~d·u₆₄·λ_max, which moves the entropy rank by ‖∇‖·that, far below 1e-9.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from effrank_fast.ops import native
from effrank_fast.ops.backends import BackendUnavailableError
from effrank_fast.ops.spectrum_scalars import COLUMNS, why_not_native
from effrank_fast.rank import formulas
from effrank_fast.rank.formulas import spectrum_scalars


def spectrum_scalars_ref(lam, floor, fro):
    """The kernel's reference: the PyTorch path."""
    return spectrum_scalars(lam, floor, fro, backend="torch")


U64 = torch.finfo(torch.float64).eps / 2
needs_native = pytest.mark.skipif(
    native.kernel_missing_reason("spectrum_scalars", "cpu") is not None, reason="native spectrum_scalars not built"
)


def _spectra(shape: tuple[int, ...], d: int, seed: int) -> torch.Tensor:
    """Descending float64 spectra: a power law with a tail down to 1e-14 of λ_max, a few rounding
    negatives at the bottom (as eigvalsh returns them)."""
    gen = torch.Generator().manual_seed(seed)
    i = torch.arange(1, d + 1, dtype=torch.float64)
    decay = 0.5 + 3 * torch.rand((*shape, 1), dtype=torch.float64, generator=gen)
    lam = (i**-decay) * (1 + 0.1 * torch.rand((*shape, d), dtype=torch.float64, generator=gen))
    lam = lam.clamp_min(1e-14)
    lam[..., -1] = -1e-16
    return lam.sort(-1, descending=True).values


def _close(a: torch.Tensor, b: torch.Tensor, d: int) -> None:
    torch.testing.assert_close(
        a, b, rtol=8 * d * U64, atol=8 * d * U64 * b.abs().nan_to_num().max().item(), equal_nan=True
    )


@needs_native
@pytest.mark.parametrize(("shape", "d"), [((), 1), ((), 64), ((3,), 64), ((2, 3), 200), ((1,), 4096)])
def test_native_equals_reference(shape, d):
    lam = _spectra(shape, d, seed=d)
    floor = torch.full(shape, 1e-9, dtype=torch.float64)
    fro = torch.full(shape, 3e-12, dtype=torch.float64)
    got = spectrum_scalars(lam, floor, fro, backend="native")
    assert got.shape == (*shape, len(COLUMNS)) and got.dtype == torch.float64
    _close(got, spectrum_scalars_ref(lam, floor, fro), d)


@needs_native
def test_native_edge_cases_equal_reference():
    d = 16
    lam = _spectra((7,), d, seed=1)
    lam[0] = 0.0  # a numerically zero matrix
    lam[1, 3] = float("nan")  # a non-converged solve
    lam[2] = torch.linspace(1e-3, 1e-4, d, dtype=torch.float64)  # everything under the floor below
    lam[3, 1:] = 0.0  # rank one
    floor = torch.tensor([1e-9, 1e-9, 1.0, 0.0, 0.0, 1e-3, 5.0], dtype=torch.float64)
    fro = torch.tensor([1e-12, 1e-12, 1e-12, 0.0, math.inf, 1e-3, 1e-12], dtype=torch.float64)
    got = spectrum_scalars(lam, floor, fro, backend="native")
    _close(got, spectrum_scalars_ref(lam, floor, fro), d)
    assert got[1].isnan().all()  # NaN anywhere: the whole row
    assert (got[0, :3] == 0).all() and (got[2, :3] == 0).all()  # nothing above the floor: every rank 0
    assert got[3, 0].item() == pytest.approx(1.0) and got[3, 2].item() == pytest.approx(1.0)


@pytest.mark.parametrize("backend", ["torch", pytest.param("native", marks=needs_native)])
def test_each_column_is_its_formula(backend):
    """The fused pass returns what each measure's own formula gives (rank/formulas.py)."""
    d = 96
    lam = _spectra((4,), d, seed=3)
    floor = torch.tensor([0.0, 1e-12, 1e-6, 1e-2], dtype=torch.float64)
    fro = torch.tensor([1e-13, 1e-10, 1e-8, 1e-4], dtype=torch.float64)
    got = spectrum_scalars(lam, floor, fro, backend=backend)
    want = torch.stack(
        [
            formulas.entropy_rank_from_eigenvalues(lam, floor),
            formulas.stable_rank_from_eigenvalues(lam, floor),
            formulas.participation_ratio_from_eigenvalues(lam, floor),
            lam[:, 0],
            lam.sum(-1),
            formulas.entropy_rank_sensitivity(lam, floor, fro),
        ],
        -1,
    )
    _close(got, want, d)


@pytest.mark.parametrize("backend", ["torch", pytest.param("native", marks=needs_native)])
def test_against_numpy_on_a_real_gram(backend):
    """Entropy, stable and participation rank of a Gram's spectrum, defined here in numpy from
    np.linalg.eigvalsh (floor 0: every positive eigenvalue counts)."""
    rng = np.random.default_rng(0)
    phi = np.tanh(rng.standard_normal((500, 1)) * rng.standard_normal((1, 48)) * 3 + rng.standard_normal(48))
    gram = phi.T @ phi / 500
    ev = np.sort(np.linalg.eigvalsh(gram))[::-1].copy()
    pos = ev[ev > 0]
    p = np.sqrt(pos) / np.sqrt(pos).sum()
    entropy = math.exp(-(p * np.log(p)).sum())
    stable, pr = ev.sum() / ev[0], ev.sum() ** 2 / (ev**2).sum()
    got = spectrum_scalars(torch.from_numpy(ev), 0.0, 0.0, backend=backend)
    assert got[0].item() == pytest.approx(entropy, rel=1e-12)
    assert got[1].item() == pytest.approx(stable, rel=1e-12)
    assert got[2].item() == pytest.approx(pr, rel=1e-12)
    assert got[3].item() == ev[0] and got[4].item() == pytest.approx(ev.sum(), rel=1e-13)


def test_sensitivity_bounds_a_real_perturbation():
    """entropy_rank_err ≥ how far a perturbation of Frobenius size error_fro moves the entropy rank."""
    gen = torch.Generator().manual_seed(5)
    d = 40
    q, _ = torch.linalg.qr(torch.randn(d, d, dtype=torch.float64, generator=gen))
    lam = torch.arange(1, d + 1, dtype=torch.float64) ** -2.0
    m = q @ torch.diag(lam) @ q.T
    e = torch.randn(d, d, dtype=torch.float64, generator=gen)
    e = (e + e.T) * (1e-6 / torch.linalg.matrix_norm(e + e.T))
    moved = torch.linalg.eigvalsh(m + e).flip(0)
    out = spectrum_scalars(lam, 0.0, 1e-6)
    shift = abs(formulas.entropy_rank_from_eigenvalues(moved, 0.0) - out[0]).item()
    assert 0 < shift <= out[5].item()


def test_refusals_name_the_reason():
    lam = _spectra((), 8, seed=0)
    assert "float64" in (why_not_native(lam.float()) or "")
    with pytest.raises(BackendUnavailableError, match="float64"):
        spectrum_scalars(lam.float(), 0.0, 0.0, backend="native")
    with pytest.raises(ValueError, match="backend"):
        spectrum_scalars(lam, 0.0, 0.0, backend="cuda")
    grad = lam.clone().requires_grad_()
    assert "backward" in (why_not_native(grad) or "")
    out = spectrum_scalars(grad, 0.0, 0.0)  # auto: the differentiable reference
    out[0].backward()
    assert grad.grad is not None and torch.isfinite(grad.grad).all()


@needs_native
def test_kernel_checks_name_the_argument():
    lam = _spectra((3,), 8, seed=0)
    with pytest.raises(RuntimeError, match="floor"):
        torch.ops.effrank_fast.spectrum_scalars(
            lam, torch.zeros(2, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)
        )
    with pytest.raises(RuntimeError, match="lam must be float64"):
        torch.ops.effrank_fast.spectrum_scalars(lam.float(), torch.zeros(3), torch.zeros(3))


@needs_native
def test_opcheck():
    lam = _spectra((2, 3), 10, seed=2)
    args = (lam, torch.full((2, 3), 1e-9, dtype=torch.float64), torch.zeros(2, 3, dtype=torch.float64))
    torch.library.opcheck(torch.ops.effrank_fast.spectrum_scalars.default, args)
