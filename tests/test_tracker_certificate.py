"""The tracker's certificate and reported values on adversarial inputs, against float64 eigvalsh.

No tolerance is added anywhere here: every bound must hold for the matrix exactly as given to the
code under test (float64 eigvalsh of it is exact to ~1e-16·‖M‖, far below the certificate's own
rounding margin δ = 2(d + q)·u·‖M‖_F, which is what covers the rounding of the working precision).
The inputs are the ones that break a wrong bound:

* subspaces built to miss the top eigenvectors (near-invariant for the smallest eigenvalues) or
  tilted at a chosen angle from them: the complement then holds λ_max and ‖B‖ is large, which is
  where ‖C_j‖_F² = ‖M‖_F² − ‖V_jᵀMV_j‖_F² − 2‖B_j‖_F² is tight (a 3 instead of the 2 undercounts);
* Rayleigh–Ritz eigensolves stopped after one Jacobi sweep, so E_q (the off-diagonal of VᵀMV)
  is large: dropping ‖E_q‖_F from the lower bound overcounts;
* τ exactly on an eigenvalue and 1e-9 (relative) beside it, in float64 and float32 working
  precision (where δ is ~1e-5·‖M‖_F and the intervals are wide).
"""

from __future__ import annotations

import math

import pytest
import torch

import effrank_fast as ef
from effrank_fast import TrackPath
from effrank_fast.tracker import certify, count_bounds, orthonormalize, rayleigh_ritz
from effrank_fast.tracker.certify import unit_roundoff
from tests.test_tracker import check_result, drift_sequence

SPECTRA = ("power", "indefinite", "dominant", "cluster", "graded")


def _spectrum(kind: str, d: int, gen: torch.Generator) -> torch.Tensor:
    i = torch.arange(d, dtype=torch.float64)
    if kind == "power":
        return (i + 1) ** -1.2
    if kind == "indefinite":
        return torch.randn(d, dtype=torch.float64, generator=gen)
    if kind == "dominant":  # three equal top eigenvalues over a floor: λ_max sits in a multiple one
        return torch.where(i < 3, 1.0, 1e-8).double()
    if kind == "cluster":
        return 1.0 + 1e-12 * torch.randn(d, dtype=torch.float64, generator=gen)
    return torch.logspace(0, -14, d, dtype=torch.float64)


def _subspace(style: int, lam: torch.Tensor, q_mat: torch.Tensor, q: int, gen: torch.Generator) -> torch.Tensor:
    """[d, q] orthonormal (float64): 0 random, 1 missing the top eigenvectors, 2 tilted from them
    (which needs q orthonormal directions outside them: q ≤ d − q; else random)."""
    d = lam.shape[0]
    order = torch.argsort(lam, descending=True)
    if style == 1 and q < d:  # span of the q smallest eigenvectors, slightly perturbed
        v = q_mat[:, order[d - q :]] + 1e-6 * torch.randn(d, q, dtype=torch.float64, generator=gen)
    elif style == 2 and q <= d - q:  # the top-q eigenvectors, each rotated by an angle φ ∈ (0, π/2) out of them
        phi = torch.rand(q, dtype=torch.float64, generator=gen) * (math.pi / 2)
        top, rest = q_mat[:, order[:q]], q_mat[:, order[q:]]
        mix = rest @ torch.randn(d - q, q, dtype=torch.float64, generator=gen)
        v = top * phi.cos() + orthonormalize(mix) * phi.sin()
    else:
        v = torch.randn(d, q, dtype=torch.float64, generator=gen)
    return orthonormalize(v)


def _taus(ev: torch.Tensor) -> torch.Tensor:
    scale = float(ev.abs().max())
    return torch.cat(
        [ev, ev * (1 + 1e-9), ev * (1 - 1e-9), ev + 1e-12 * scale, torch.logspace(-10, 1, 24, dtype=torch.float64)]
    )


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_certificate_on_adversarial_subspaces(dtype):
    gen = torch.Generator().manual_seed(0)
    u = unit_roundoff(dtype)
    checked = 0
    for trial in range(180):
        d = int(torch.randint(4, 48, (1,), generator=gen))
        q = int(torch.randint(1, d + 1, (1,), generator=gen))
        kind = SPECTRA[trial % len(SPECTRA)]
        q_mat, _ = torch.linalg.qr(torch.randn(d, d, dtype=torch.float64, generator=gen))
        lam = _spectrum(kind, d, gen)
        m = ((q_mat * lam) @ q_mat.T).to(dtype)
        m = (m + m.T) / 2
        v = _subspace(trial % 3, lam, q_mat, q, gen).to(dtype)
        # A solve stopped after one sweep (native Jacobi) leaves a large E_q; eigh leaves rounding.
        sweeps, backend = (1, "native") if trial % 4 == 3 else (30, "eigh")
        ritz = rayleigh_ritz(v, m @ v, max_sweeps=sweeps, backend=backend)
        fro_sq = torch.linalg.vector_norm(m, dtype=torch.float64).square()
        cert = certify(ritz.theta, ritz.hp, ritz.resid, fro_sq, d, u)
        ev = torch.linalg.eigvalsh(m.double())
        taus = _taus(ev)
        lower, upper = count_bounds(cert, taus, taus)
        ref = (ev.unsqueeze(0) > taus.unsqueeze(1)).sum(1)
        where = f"trial {trial} ({kind}, d={d}, q={q}, {dtype})"
        bad = (lower > ref) | (ref > upper)
        assert not bool(bad.any()), f"{where}: count outside [lower, upper] at τ = {taus[bad][:3].tolist()}"
        assert float(cert.lam_lo) <= float(ev[-1]) <= float(cert.lam_hi), where
        # Value by value (what the tracker reports): sorted θ − ‖E_q‖_F ≤ λ_i, up to δ.
        low = ritz.theta - cert.off
        top = ev.flip(0)[:q]
        assert torch.all(low <= top + cert.margin), f"{where}: θ_i − ‖E‖ > λ_i"
        checked += len(taus)
    assert checked > 180 * 24


def _tracker_values_ok(res: ef.TrackResult, g: torch.Tensor) -> float:
    """Assert the value guarantees of TrackResult; return max_i (θ_i − λ_i)/λ_max, θ_i = v_iᵀMv_i."""
    lam = torch.linalg.eigvalsh(g.double()).flip(0)
    k = res.eigenvalues.shape[0]
    margin = float(res.margin)
    assert torch.all(res.eigenvalues[1:] <= res.eigenvalues[:-1]), "descending"
    assert torch.all(res.eigenvalues <= lam[:k] + margin), "eigenvalues_i ≤ λ_i"
    gap = (res.eigenvalues.unsqueeze(1) - lam.unsqueeze(0)).abs().amin(1)
    assert torch.all(gap <= res.residuals + margin), "an eigenvalue within residuals_i"
    v = res.eigenvectors.double()
    rayleigh = ((g.double() @ v) * v).sum(0)
    return float(((rayleigh - lam[:k]) / lam[0]).max())


def test_reported_values_are_lower_bounds_when_the_eigensolve_stops_early():
    """jacobi_sweeps=1 with auto-grow: right after k grows, VᵀMV is far from diagonal and one
    sweep leaves a large E. The Rayleigh quotients then exceed λ_i (measured: up to 7e-7·λ_max),
    yet the step is accepted; the reported θ_i − ‖E‖_F must not."""
    d = 72
    eps = [0.5, 1e-2, 1e-3, 1e-5]
    tr = ef.SpectrumTracker(
        k=6, oversample=4, eps=eps, relative="max", eigensolver="jacobi", jacobi_sweeps=1, max_iters=2, slq_probes=0
    )
    worst = -1.0
    for g in drift_sequence(d, 2 * d, steps=6, rho=0.05, seed=51):
        res = tr.update(g)
        check_result(res, g, eps, "max", exact_only=True)
        worst = max(worst, _tracker_values_ok(res, g))
    assert worst > 1e-9, "the case must exercise a solve that stopped early (θ_i > λ_i)"


@pytest.mark.filterwarnings("ignore::effrank_fast.ops.inertia.InertiaFallbackWarning")
@pytest.mark.parametrize("relative", [None, "trace"])
@pytest.mark.parametrize("sync", ["step", "deferred"])
def test_exact_count_is_taken_at_tau(relative, sync, monkeypatch):
    """τ = ε (or ε·tr M as computed) is exact, so #{λ > τ} must not count an eigenvalue in
    (τ − s, τ], s = 4d·u₆₄·τ the slack of the trace's rounding (the old count at τ − s did).
    λ_j lies within the LDLᵀ's own error bound of τ, so the inertia count is not trusted: in step
    mode its eigvalsh fallback settles it; deferred mode never falls back (that would sync), so it
    is checked on its other exact path, eigvalsh where no inertia kernel is built."""
    if sync == "deferred":
        monkeypatch.setattr(ef.ops.native, "has_kernel", lambda op, device_type: False)
    d = 40
    gen = torch.Generator().manual_seed(3)
    lam = torch.logspace(0, -4, d, dtype=torch.float64)
    q_mat, _ = torch.linalg.qr(torch.randn(d, d, dtype=torch.float64, generator=gen))
    g = (q_mat * lam) @ q_mat.T
    g = (g + g.T) / 2
    ev = torch.linalg.eigvalsh(g)
    j = d - 9  # an eigenvalue inside the tracked top 12, so the interval around it is narrow
    slack = 4 * d * torch.finfo(torch.float64).eps * float(ev[j])
    tau = float(ev[j]) + 0.5 * slack
    trace = float(torch.diagonal(g).sum(dtype=torch.float64))  # as the tracker computes it
    eps = [tau if relative is None else tau / trace]
    tr = ef.SpectrumTracker(k=12, oversample=6, eps=eps, relative=relative, sync=sync, slq_probes=0)
    for _ in range(3):  # deferred: the exact count follows one step after the interval opened
        res = tr.update(g)
    t = float(res.thresholds[0])
    assert float(ev[j]) <= t < float(ev[j]) + slack, "the case must put λ_j in (τ − s, τ]"
    assert int(res.eps_rank_lower[0]) < int(res.eps_rank_upper[0]), "the interval must be open"
    assert int(res.path[0]) in (int(TrackPath.INERTIA), int(TrackPath.EIGH))
    assert int(res.eps_rank[0]) == int((ev > t).sum()) == d - 1 - j


@pytest.mark.parametrize("sync", ["step", "deferred"])
def test_asymmetric_gram_tracks_its_symmetric_part(sync):
    """The GEMMs read all of M, the exact counts one triangle: for M ≠ Mᵀ they would measure
    different matrices. The tracker measures (M + Mᵀ)/2 throughout (like jacobi_eigh)."""
    d = 64
    eps = [0.3, 1e-2, 2e-3]
    gen = torch.Generator().manual_seed(8)
    tr = ef.SpectrumTracker(k=10, oversample=6, eps=eps, relative="max", sync=sync, slq_probes=0)
    for g in drift_sequence(d, 4 * d, steps=5, rho=0.01, seed=21):
        skew = torch.randn(d, d, dtype=torch.float64, generator=gen)
        m = g + 1e-3 * float(g.abs().max()) * (skew - skew.T)  # ‖M − Mᵀ‖ ≈ 0.1 % of M
        if sync == "step":  # validated like eps_rank(gram=...): an asymmetric M is refused by default
            with pytest.raises(ValueError, match="not symmetric"):
                tr.update(m)
        res = tr.update(m, check=False)
        sym = (m + m.T) / 2
        check_result(res, sym, eps, "max", exact_only=(sync == "step"))
        _tracker_values_ok(res, sym)
        lower_only = torch.tril(m) + torch.tril(m, -1).T  # what a one-triangle reader would see
        assert not torch.equal(torch.linalg.eigvalsh(lower_only), torch.linalg.eigvalsh(sym)), (
            "the asymmetry must matter"
        )


def test_cold_start_on_a_numerically_singular_gram_is_finite_and_certified():
    """A tracker whose subspace spans the whole space (q = k + 16 oversampled = d = 24) iterates on
    M·V of rank ~10 when M's spectrum is 10 graded values over 14 at rounding level, as a float64
    Gram of tanh features is. Its first update must give finite Ritz values and count intervals
    that hold (the orthonormalisation once returned NaN there, and the NaN made [0, 0])."""
    graded = torch.tensor([5.05, 0.32, 1.3e-2, 2.1e-4, 5.8e-6, 3.9e-7, 3.4e-9, 5.0e-10, 1.1e-11, 2.4e-13])
    for seed in range(30):
        gen = torch.Generator().manual_seed(seed)
        d = 24
        noise = 1e-15 * torch.rand(d - graded.numel(), generator=gen)
        lam = torch.cat([graded, noise]).double()
        q_mat, _ = torch.linalg.qr(torch.randn(d, d, dtype=torch.float64, generator=gen))
        m = (q_mat * lam) @ q_mat.T
        m = (m + m.T) / 2
        tracker = ef.SpectrumTracker(k=8, eps=[1e-2, 1e-4], sync="deferred", refresh_every=10)
        res = tracker.update(m, check=False)
        assert torch.isfinite(res.eigenvalues).all(), seed
        truth = (torch.linalg.eigvalsh(m).unsqueeze(0) > torch.tensor([[1e-2], [1e-4]], dtype=torch.float64)).sum(1)
        assert bool(((res.eps_rank_lower <= truth) & (truth <= res.eps_rank_upper)).all()), (seed, truth)


def test_non_finite_ritz_data_prove_nothing():
    """A failed solve (NaN Ritz values or residuals) gives the interval [0, d] at every τ, never a
    point built from NaN comparisons."""
    d, q = 24, 8
    theta = torch.full((q,), float("nan"), dtype=torch.float64)
    hp = torch.full((q, q), float("nan"), dtype=torch.float64)
    resid = torch.full((q,), float("nan"), dtype=torch.float64)
    for fro_sq in (torch.tensor(25.6, dtype=torch.float64), torch.tensor(float("nan"), dtype=torch.float64)):
        cert = certify(theta, hp, resid, fro_sq, d, 2.0**-53)
        taus = torch.tensor([1e-2, 1e-4], dtype=torch.float64)
        lower, upper = count_bounds(cert, taus, taus)
        assert lower.tolist() == [0, 0] and upper.tolist() == [d, d]
    finite = torch.linspace(5, 1, q, dtype=torch.float64)  # one NaN residual is enough
    resid = torch.zeros(q, dtype=torch.float64)
    resid[3] = float("nan")
    cert = certify(finite, torch.diag(finite), resid, finite.square().sum(), d, 2.0**-53)
    lower, upper = count_bounds(cert, taus, taus)
    assert lower.tolist() == [0, 0] and upper.tolist() == [d, d]
