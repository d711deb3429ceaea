"""SpectrumTracker on drifting Gram sequences, against float64 eigvalsh of every Gram.

Invariants checked at every step by :func:`check_result` (the issue's acceptance tests; exactly
what ``TrackResult`` guarantees):
* eps_rank_lower ≤ eps_rank ≤ eps_rank_upper, and the interval contains the float64 reference count;
* counts made by an exact path (CERTIFIED, INERTIA, EIGH) equal the reference;
* the reported top-k values are certified lower values, eigenvalues_i ≤ λ_i (interlacing of the
  Ritz values, less the ‖E‖_F the small eigensolve left), and some eigenvalue lies within
  residuals_i of eigenvalues_i; λ_max lies in [lambda_max, lambda_max_upper].
Slack in these comparisons is the tracker's own rounding margin δ (float64: ~1e-12·‖M‖_F) plus
1e-14·λ_max for the reference eigvalsh. Adversarial inputs for the certificate alone, early-stopped
eigensolves, thresholds on an eigenvalue and asymmetric Grams: test_tracker_certificate.py.
"""

from __future__ import annotations

import math

import pytest
import torch

import effrank_fast as ef
from effrank_fast import TrackPath
from tests.conftest import devices

EXACT = (int(TrackPath.CERTIFIED), int(TrackPath.INERTIA), int(TrackPath.EIGH))


def ref_counts(gram: torch.Tensor, eps: list[float], relative: str | None) -> torch.Tensor:
    lam = torch.linalg.eigvalsh(gram.detach().cpu().double())
    scale = {None: 1.0, "max": lam[-1], "trace": lam.sum()}[relative]
    return (lam.unsqueeze(0) > torch.tensor(eps, dtype=torch.float64).unsqueeze(1) * scale).sum(1)


def check_result(
    res: ef.TrackResult, gram: torch.Tensor, eps: list[float], relative: str | None, exact_only: bool
) -> None:
    ref = ref_counts(gram, eps, relative)
    lo, hi, cnt, path = (t.cpu() for t in (res.eps_rank_lower, res.eps_rank_upper, res.eps_rank, res.path))
    assert torch.all(lo <= cnt) and torch.all(cnt <= hi), (lo, cnt, hi)
    assert torch.all(lo <= ref) and torch.all(ref <= hi), (lo, ref, hi)
    exact = torch.isin(path, torch.tensor(EXACT))
    assert torch.equal(cnt[exact], ref[exact]), (cnt, ref, path)
    if exact_only:
        assert bool(exact.all()), path
    lam = torch.linalg.eigvalsh(gram.detach().cpu().double()).flip(0)
    theta, resid = res.eigenvalues.cpu(), res.residuals.cpu()
    k = theta.shape[0]
    margin = float(res.margin) + 1e-14 * float(lam.abs().max())
    assert torch.all(theta <= lam[:k] + margin), "certified lower values: eigenvalues_i ≤ λ_i"
    gap = (theta.unsqueeze(1) - lam.unsqueeze(0)).abs().amin(1)
    assert torch.all(gap <= resid + margin), "residual bound: an eigenvalue within residuals_i"
    assert float(res.lambda_max) <= lam[0] + margin <= float(res.lambda_max_upper) + 2 * margin
    assert math.isclose(float(res.trace), float(lam.sum()), rel_tol=1e-12, abs_tol=1e-12)
    pr = lam.sum() ** 2 / lam.square().sum()
    assert math.isclose(float(res.participation_ratio), float(pr), rel_tol=1e-10)
    assert float(res.stable_rank) >= float(lam.sum() / (lam[0] + margin)) * (1 - 1e-12)  # θ_1 ≤ λ_1


def _erank_rounding_tol(g: torch.Tensor) -> float:
    """σ = √λ: rounding-level eigenvalues (|Δλ| ≲ u·λ_max between two float64 solvers) move each σ
    by up to s = √(u·λ_max) and each σ·log σ by s·(1 + |log s|), so entropy ranks agree only to
    ~d·s·(1 + |log s|)/Σσ (relative)."""
    lam = torch.linalg.eigvalsh(g.double()).clamp_min(0)
    s = math.sqrt(2.2e-16 * float(lam[-1]))
    return 2 * g.shape[0] * s * (1 + abs(math.log(s))) / float(lam.sqrt().sum())


def drift_sequence(d: int, n: int, steps: int, rho: float, seed: int, dtype=torch.float64):
    """Φ ← Φ + ρ·ΦR (R Gaussian / √d): docs/tracker.md's synthetic training step, power-law start."""
    gen = torch.Generator().manual_seed(seed)
    lam = torch.arange(1, d + 1, dtype=torch.float64) ** -1.2
    phi = torch.randn(n, d, dtype=torch.float64, generator=gen) * lam.sqrt()
    r = torch.randn(d, d, dtype=torch.float64, generator=gen) / d**0.5
    for _ in range(steps):
        phi = phi + rho * phi @ r
        yield (phi.T @ phi / n).to(dtype)


@pytest.mark.parametrize(
    "relative, sync, solver",
    [
        (None, "step", "eigh"),
        ("max", "step", "jacobi"),
        ("trace", "step", "eigh"),
        (None, "deferred", "eigh"),
        ("max", "deferred", "jacobi"),
        ("trace", "deferred", "eigh"),
    ],
)
def test_synthetic_drift_counts_certified_and_exact(relative, sync, solver):
    d = 96
    grams = list(drift_sequence(d, 4 * d, steps=8, rho=0.01, seed=1))
    lam0 = torch.linalg.eigvalsh(grams[0]).flip(0)
    scale = {None: float(lam0[0]), "max": 1.0, "trace": float(lam0[0] / lam0.sum())}[relative]
    eps = [0.3 * scale, 1e-2 * scale, 2e-3 * scale]
    tr = ef.SpectrumTracker(
        k=12, oversample=8, eps=eps, relative=relative, sync=sync, auto_grow=False, slq_probes=0, eigensolver=solver
    )
    paths = []
    for g in grams:
        res = tr.update(g)
        # deferred: the exact count follows one step after an interval opens (UNRESOLVED meanwhile)
        check_result(res, g, eps, relative, exact_only=(sync == "step"))
        paths.append(res.path.tolist())
    assert any(int(TrackPath.CERTIFIED) in p for p in paths)
    assert all(int(TrackPath.INERTIA) in p for p in paths[1:])


def test_topk_values_converge_to_eigvalsh():
    d = 80
    g = next(drift_sequence(d, 320, steps=1, rho=0.0, seed=2))
    tr = ef.SpectrumTracker(k=10, oversample=10, tol=1e-8, max_iters=50, slq_probes=0)
    res = tr.update(g)
    lam = torch.linalg.eigvalsh(g).flip(0)[:10]
    assert bool(res.accepted)
    assert torch.all(res.residuals <= 1e-8 * lam[0])
    # Ritz values converge with the square of the residual: |θ − λ| ≲ r²/gap, far below tol.
    assert torch.allclose(res.eigenvalues, lam, rtol=0, atol=1e-10 * float(lam[0]))
    v = res.eigenvectors
    assert torch.allclose(v.T @ v, torch.eye(10, dtype=v.dtype), atol=1e-12)


def _tanh_mlp_grams(steps: int, width: int = 48, n: int = 256, seed: int = 3):
    """A real (short) training run: 1-D regression with a tanh MLP; Gram of the last hidden layer."""
    torch.manual_seed(seed)
    x, w = ef.quadrature.trapezoid(-1.0, 1.0, n, dtype=torch.float64)  # x [n, 1]; M_ij = ∫ φ_i φ_j dx
    y = torch.sin(3 * math.pi * x) + 0.5 * torch.sign(x)
    body = torch.nn.Sequential(
        torch.nn.Linear(1, width), torch.nn.Tanh(), torch.nn.Linear(width, width), torch.nn.Tanh()
    ).double()
    head = torch.nn.Linear(width, 1).double()
    opt = torch.optim.Adam([*body.parameters(), *head.parameters()], lr=3e-3)
    for _ in range(steps):
        phi = body(x)
        loss = (head(phi) - y).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        phi = phi.detach()
        yield phi.T @ (phi * w.unsqueeze(1))


def test_training_run_tanh_mlp():
    eps = [1e-1, 1e-2, 1e-3, 1e-4, 1e-6]
    tr = ef.SpectrumTracker(k=8, oversample=6, eps=eps, relative="max", refresh_every=10, slq_probes=6, slq_steps=12)
    refreshed = 0
    for g in _tanh_mlp_grams(steps=25):
        res = tr.update(g)
        check_result(res, g, eps, "max", exact_only=True)
        refreshed += res.refreshed
        if res.refreshed:
            assert torch.all(res.path == int(TrackPath.EIGH))
            exact = float(ef.reference.entropy_rank(gram=g))
            assert math.isclose(float(res.entropy_rank), exact, rel_tol=_erank_rounding_tol(g))
    assert refreshed == 2


def test_auto_grow_and_cap():
    d = 64
    grams = list(drift_sequence(d, 256, steps=6, rho=0.005, seed=4))
    eps = [1e-3]  # relative to λ_max: about 40 eigenvalues above it
    tr = ef.SpectrumTracker(k=8, oversample=4, eps=eps, relative="max", max_k=24, slq_probes=0)
    ks = []
    for g in grams:
        res = tr.update(g)
        ks.append(res.k)
        check_result(res, g, eps, "max", exact_only=True)
    assert ks[0] == 8 and ks[-1] == 24 and ks == sorted(ks)


@pytest.mark.parametrize("sync", ["step", "deferred"])
def test_cold_restart_after_a_jump(sync):
    d = 60
    g1 = next(drift_sequence(d, 240, steps=1, rho=0.0, seed=5))
    q, _ = torch.linalg.qr(torch.randn(d, d, dtype=torch.float64, generator=torch.Generator().manual_seed(6)))
    g2 = q @ g1 @ q.T  # same spectrum, unrelated eigenvectors
    eps = [1e-2]
    tr = ef.SpectrumTracker(
        k=6, oversample=4, eps=eps, relative="max", max_iters=1, sync=sync, auto_grow=False, slq_probes=0
    )
    tr.update(g1)
    restarted = False
    for _ in range(4):
        res = tr.update(g2)
        check_result(res, g2, eps, "max", exact_only=(sync == "step"))
        restarted |= res.restarted
    assert restarted


def test_low_rank_gram_with_exact_zero_eigenvalues():
    # N < q: M has d − N exact zero eigenvalues inside the Ritz basis (orthonormalisation fallback,
    # a multiple eigenvalue in the Rayleigh–Ritz matrix).
    d, n = 40, 10
    phi = torch.randn(n, d, dtype=torch.float64)
    g = phi.T @ phi / n
    eps = [1e-1, 1e-3, 1e-9]
    tr = ef.SpectrumTracker(k=12, oversample=4, eps=eps, relative="max", slq_probes=8)
    for _ in range(3):
        res = tr.update(g)
        check_result(res, g, eps, "max", exact_only=True)
    assert res.eps_rank.tolist() == [int(c) for c in ref_counts(g, eps, "max")]
    # The remainder after deflating the top 12 is zero: the entropy rank is exact up to rounding.
    exact = float(ef.reference.entropy_rank(gram=g))
    assert math.isclose(float(res.entropy_rank), exact, rel_tol=_erank_rounding_tol(g))
    assert float(res.entropy_rank_err) <= _erank_rounding_tol(g) * exact


def test_entropy_rank_estimate_within_its_error():
    d = 128
    grams = list(drift_sequence(d, 512, steps=5, rho=0.01, seed=7))
    tr = ef.SpectrumTracker(k=16, oversample=8, slq_probes=24, slq_steps=24, seed=11)
    for g in grams:
        res = tr.update(g)
        exact = float(ef.reference.entropy_rank(gram=g))
        est, err = float(res.entropy_rank), float(res.entropy_rank_err)
        # SLQ with 24 probes: Hutchinson std ≈ 0.3 % here; err is a jackknife estimate of it.
        assert 0 < err < 0.05 * exact
        assert abs(est - exact) <= max(5 * err, 1e-3 * exact), (est, exact, err)


def test_escalate_false_reports_unresolved_inside_the_interval():
    d = 80
    eps = [1e-2, 2e-3]
    tr = ef.SpectrumTracker(k=8, oversample=4, eps=eps, relative="max", escalate=False, slq_probes=0)
    seen = set()
    for g in drift_sequence(d, 320, steps=3, rho=0.01, seed=8):
        res = tr.update(g)
        check_result(res, g, eps, "max", exact_only=False)
        seen |= set(res.path.tolist())
    assert int(TrackPath.UNRESOLVED) in seen and int(TrackPath.INERTIA) not in seen


def test_float32_working_precision():
    d = 96
    eps = [0.3, 1e-2, 2e-3]
    tr = ef.SpectrumTracker(k=12, oversample=8, eps=eps, relative="max", dtype=torch.float32, slq_probes=0)
    for g in drift_sequence(d, 384, steps=4, rho=0.01, seed=9, dtype=torch.float32):
        res = tr.update(g)
        assert res.eigenvectors.dtype == torch.float32
        check_result(res, g, eps, "max", exact_only=True)


class _NoSync:
    """Make every host-reading Tensor method (and eigh, which syncs on CUDA) raise."""

    NAMES = ("item", "tolist", "__bool__", "__int__", "__float__", "cpu")

    def __enter__(self):
        def boom(*args, **kwargs):
            raise AssertionError("host sync in the hot path")

        self.saved = {n: getattr(torch.Tensor, n) for n in self.NAMES}
        self.linalg = (torch.linalg.eigh, torch.linalg.eigvalsh)
        for n in self.NAMES:
            setattr(torch.Tensor, n, boom)
        torch.linalg.eigh = torch.linalg.eigvalsh = boom
        return self

    def __exit__(self, *exc):
        for n, f in self.saved.items():
            setattr(torch.Tensor, n, f)
        torch.linalg.eigh, torch.linalg.eigvalsh = self.linalg
        return False


def test_deferred_mode_reads_nothing_from_the_device():
    d = 64
    eps = [0.3, 1e-2, 2e-3]
    grams = list(drift_sequence(d, 256, steps=5, rho=0.02, seed=10))
    tr = ef.SpectrumTracker(
        k=8, oversample=6, eps=eps, relative="max", sync="deferred", slq_probes=6, slq_steps=10, eigensolver="jacobi"
    )
    results = []
    with _NoSync():
        for g in grams:
            results.append(tr.update(g))
    for g, res in zip(grams, results, strict=True):
        check_result(res, g, eps, "max", exact_only=False)
    assert any(int(TrackPath.INERTIA) in r.path.tolist() for r in results[1:])


def test_step_mode_syncs_once_per_rayleigh_ritz():
    # Documented sync point: one flags read per Rayleigh–Ritz (tolist), nothing else.
    d = 64
    calls = []
    orig = torch.Tensor.tolist

    def counting(self):
        calls.append(self.numel())
        return orig(self)

    grams = list(drift_sequence(d, 256, steps=3, rho=0.002, seed=12))
    tr = ef.SpectrumTracker(k=8, oversample=6, eps=[0.3], relative="max", slq_probes=0)
    tr.update(grams[0])
    torch.Tensor.tolist = counting
    try:
        res = tr.update(grams[1])
    finally:
        torch.Tensor.tolist = orig
    assert not res.restarted and len(calls) == res.iterations + 1


@pytest.mark.parametrize("sync", ["step", "deferred"])
def test_nan_gram_is_flagged_and_the_tracker_recovers(sync):
    d = 48
    grams = list(drift_sequence(d, 192, steps=6, rho=0.01, seed=17))
    eps = [0.3, 1e-2]
    tr = ef.SpectrumTracker(k=6, oversample=4, eps=eps, relative="max", sync=sync, slq_probes=4, slq_steps=6)
    tr.update(grams[0])
    bad = grams[1].clone()
    bad[3, 7] = bad[7, 3] = float("nan")
    if sync == "step":  # validated like eps_rank(gram=...): the same message
        with pytest.raises(ValueError, match="gram contains 2 NaN/Inf entries"):
            tr.update(bad)
    res = tr.update(bad, check=False)  # unchecked (deferred: never read): a device-side flag
    assert not bool(res.accepted) and not torch.isfinite(res.eigenvalues).all()
    assert (res.path == int(TrackPath.UNRESOLVED)).all(), "a non-finite Gram must never be certified"
    restarted = False
    for g in grams[2:]:
        res = tr.update(g)
        restarted |= res.restarted
    assert restarted and bool(res.accepted)
    check_result(res, grams[-1], eps, "max", exact_only=(sync == "step"))


def test_validation_errors():
    with pytest.raises(ValueError, match="k must"):
        ef.SpectrumTracker(k=0)
    with pytest.raises(ValueError, match="eps"):
        ef.SpectrumTracker(eps=[-1.0])
    with pytest.raises(ValueError, match="relative"):
        ef.SpectrumTracker(relative="min")
    with pytest.raises(ValueError, match="sync"):
        ef.SpectrumTracker(sync="sometimes")
    with pytest.raises(ValueError, match="side_stream"):
        ef.SpectrumTracker(side_stream=True)
    with pytest.raises(ValueError, match="slq_probes"):
        ef.SpectrumTracker(slq_probes=1)
    with pytest.raises(TypeError, match="dtype"):
        ef.SpectrumTracker(dtype=torch.float16)
    with pytest.raises(ValueError, match="tol"):
        ef.SpectrumTracker(tol=0)
    tr = ef.SpectrumTracker(k=4, slq_probes=0)
    with pytest.raises(ValueError, match="square"):
        tr.update(torch.zeros(3, 4))
    with pytest.raises(TypeError, match="gram"):
        tr.update([[1.0]])
    with pytest.raises(ValueError, match="exceeds"):
        ef.SpectrumTracker(k=5).update(torch.eye(3))
    tr.update(torch.eye(6, dtype=torch.float64))
    with pytest.raises(ValueError, match="reset"):
        tr.update(torch.eye(7, dtype=torch.float64))
    tr.reset()
    tr.update(torch.eye(7, dtype=torch.float64))


@pytest.mark.gpu
@pytest.mark.parametrize("relative", [None, "max"])
def test_cuda_tracker_matches_reference(relative):
    d = 256
    grams = list(drift_sequence(d, 4 * d, steps=6, rho=0.01, seed=13))
    lam0 = torch.linalg.eigvalsh(grams[0]).flip(0)
    scale = float(lam0[0]) if relative is None else 1.0
    eps = [0.3 * scale, 1e-2 * scale, 2e-3 * scale]
    tr = ef.SpectrumTracker(k=32, oversample=16, eps=eps, relative=relative, refresh_every=4)
    for g in grams:
        res = tr.update(g.cuda())
        assert res.eps_rank.device.type == "cuda"
        check_result(res, g, eps, relative, exact_only=True)


@pytest.mark.gpu
def test_cuda_deferred_mode_has_no_host_sync():
    d = 256
    eps = [0.3, 1e-2]
    grams = [g.cuda() for g in drift_sequence(d, 4 * d, steps=5, rho=0.01, seed=14)]
    escalate = ef.ops.native.has_kernel("inertia", "cuda")
    tr = ef.SpectrumTracker(k=32, oversample=16, eps=eps, relative="max", sync="deferred", escalate=escalate)
    tr.update(grams[0])  # first call: lazy CUDA init, generator creation
    torch.cuda.synchronize()
    results = []
    torch.cuda.set_sync_debug_mode("error")
    try:
        for g in grams[1:]:
            results.append(tr.update(g))
    finally:
        torch.cuda.set_sync_debug_mode(0)
    for g, res in zip(grams[1:], results, strict=True):
        check_result(res, g, eps, "max", exact_only=False)


@pytest.mark.gpu
def test_cuda_side_stream_results_one_step_late():
    d = 192
    eps = [1e-2]
    grams = [g.cuda() for g in drift_sequence(d, 4 * d, steps=4, rho=0.01, seed=15)]
    kw = {"k": 16, "oversample": 8, "eps": eps, "relative": "max", "sync": "deferred", "slq_probes": 0, "seed": 3}
    side = ef.SpectrumTracker(side_stream=True, **kw)
    plain = ef.SpectrumTracker(**kw)

    def stepped(tr, g):
        out = tr.update(g)
        torch.cuda.synchronize()  # deferred decisions depend on whether last step's flags arrived
        return out

    got = [stepped(side, g) for g in grams] + [side.flush()]
    want = [stepped(plain, g) for g in grams]
    assert got[0] is None
    for a, b in zip(got[1:], want, strict=True):
        assert a.step == b.step
        assert torch.allclose(a.eigenvalues, b.eigenvalues, rtol=1e-12, atol=0)
        assert torch.equal(a.eps_rank_lower, b.eps_rank_lower)


@pytest.mark.parametrize("device", devices())
def test_certificate_rejects_nothing_true(device):
    # Property test of the bounds alone: random subspaces (not converged), many thresholds.
    from effrank_fast.tracker import certify, count_bounds, orthonormalize, rayleigh_ritz

    gen = torch.Generator().manual_seed(16)
    for trial in range(6):
        d, q = 50, 12
        x = torch.randn(d, d, dtype=torch.float64, generator=gen) * torch.logspace(0, -3, d, dtype=torch.float64)
        m = (x @ x.T).to(device)
        v = orthonormalize(torch.randn(d, q, dtype=torch.float64, generator=gen).to(device))
        for _ in range(trial):
            v = orthonormalize(m @ v, fallback=v)
        ritz = rayleigh_ritz(v, m @ v)
        fro_sq = torch.linalg.matrix_norm(m).square().double()
        cert = certify(ritz.theta, ritz.hp, ritz.resid, fro_sq, d, 2.0**-53)
        lam = torch.linalg.eigvalsh(m.cpu())
        taus = torch.logspace(-7, 0.5, 40, dtype=torch.float64) * lam[-1]
        lower, upper = count_bounds(cert, taus.to(device), taus.to(device))
        ref = (lam.unsqueeze(0) > taus.unsqueeze(1)).sum(1)
        assert torch.all(lower.cpu() <= ref) and torch.all(ref <= upper.cpu())
        assert float(cert.lam_lo) <= float(lam[-1]) <= float(cert.lam_hi)


@pytest.mark.parametrize("sync", ["step", "deferred"])
def test_nan_gram_is_never_certified_from_the_first_step(sync):
    """The issue's case: a NaN Gram once came back as rank 0, path CERTIFIED. Also on a refresh step."""
    d = 32
    m = next(iter(drift_sequence(d, 4 * d, steps=1, rho=0.0, seed=5))).clone()
    m[0, 0] = float("nan")
    for refresh in (None, 1):
        tr = ef.SpectrumTracker(k=4, oversample=4, eps=[1e-2, 1e-6], sync=sync, refresh_every=refresh, slq_probes=0)
        res = tr.update(m, check=False)
        assert (res.path == int(TrackPath.UNRESOLVED)).all() and not bool(res.accepted)


def test_update_validates_like_eps_rank():
    d = 16
    m = next(iter(drift_sequence(d, 4 * d, steps=1, rho=0.0, seed=6)))
    tr = ef.SpectrumTracker(k=2, oversample=2, eps=1e-2, slq_probes=0)
    asym = m.clone()
    asym[0, 1] += 1e-3 * float(m.abs().max())
    for bad, msg in ((asym, "not symmetric"), (m[:, :-1], "square"), (m.int(), "floating-point")):
        with pytest.raises((ValueError, TypeError), match=msg):
            ef.eps_rank(gram=bad, eps=1e-2)
        with pytest.raises((ValueError, TypeError), match=msg):
            tr.update(bad)
    for bad_err in (-1.0, float("nan"), torch.zeros(2, dtype=torch.float64), "x"):
        with pytest.raises((ValueError, TypeError), match="gram_error"):
            tr.update(m, gram_error=bad_err)
    with pytest.raises(ValueError, match="gram_error"):
        tr.update(m, gram_error=torch.tensor(-1.0, dtype=torch.float64))


@pytest.mark.parametrize("sync", ["step", "deferred"])
@pytest.mark.parametrize("refresh", [None, 1])
def test_gram_error_widens_the_certificate_to_the_exact_matrix(sync, refresh):
    """M̂ = M + E with ‖E‖₂ = δ; given gram_error=δ the intervals hold for M, and a count near τ
    (an eigenvalue of M within δ of τ) is never reported as exact with the wrong value."""
    d, delta, tau = 40, 1e-3, 0.05
    g = torch.Generator().manual_seed(9)
    q = torch.linalg.qr(torch.randn(d, d, dtype=torch.float64, generator=g))[0]
    lam = torch.logspace(0, -4, d, dtype=torch.float64)
    lam[10] = tau + 0.5 * delta  # ambiguous in M̂: its counts at τ ± δ differ
    exact = (q * lam) @ q.T
    v = torch.randn(d, 1, dtype=torch.float64, generator=g)
    e = -delta * (v @ v.T) / (v.T @ v)  # ‖E‖₂ = δ, pushes the ambiguous eigenvalue down
    m_hat = exact + e
    want = int((torch.linalg.eigvalsh(exact) > tau).sum())
    tr = ef.SpectrumTracker(k=16, oversample=8, eps=[tau, 0.5], sync=sync, refresh_every=refresh, slq_probes=0)
    for _ in range(3):  # deferred settles an open interval on the step after it opened
        res = tr.update(m_hat, gram_error=delta)
    lo, hi, path, got = (
        res.eps_rank_lower.tolist(),
        res.eps_rank_upper.tolist(),
        res.path.tolist(),
        res.eps_rank.tolist(),
    )
    want_half = int((torch.linalg.eigvalsh(exact) > 0.5).sum())
    assert lo[0] <= want <= hi[0] and lo[1] <= want_half <= hi[1]
    assert path[0] == int(TrackPath.UNRESOLVED) or got[0] == want
    assert path[1] != int(TrackPath.UNRESOLVED) and got[1] == want_half
    lam_max = float(lam.max())
    assert float(res.lambda_max) - float(res.margin) <= lam_max <= float(res.lambda_max_upper) + float(res.margin)
