"""Matrices with known spectra and the Weyl check shared by tests/test_inertia*.py.

Every matrix is M = Q diag(λ) Qᵀ with a random orthogonal Q in float64, so the spectrum is known.
The reference is a float64 eigvalsh of the very matrix the kernel reads; its error is at most
e_ref = 8·d·u·‖M‖₂ (backward stability of the symmetric eigensolver, generous constant).
"""

from __future__ import annotations

import math

import torch

from effrank_fast.ops.inertia import InertiaResult

U = 2.0**-53
F64 = torch.float64


def spectrum_matrix(lam: torch.Tensor, seed: int = 0, device: str = "cpu") -> torch.Tensor:
    """Q diag(λ) Qᵀ, Q Haar-random orthogonal (QR of a Gaussian), exactly symmetric, float64.

    Built on ``device`` (a CUDA generator there: QR of a 16384² Gaussian on the CPU would take minutes).
    """
    d = lam.shape[0]
    g = torch.Generator(device=device).manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=F64, device=device))
    q = q * torch.sign(torch.diagonal(r))
    m = (q * lam.to(device=device, dtype=F64)) @ q.T
    return (m + m.T) / 2


def power_law(d: int, alpha: float = 1.2) -> torch.Tensor:
    return torch.arange(1, d + 1, dtype=F64) ** -alpha


def between(lam_desc: torch.Tensor, k: int) -> float:
    """A threshold halfway (geometrically) between the k-th and (k+1)-th largest eigenvalues."""
    return math.sqrt(float(lam_desc[k - 1]) * float(lam_desc[k]))


def check_weyl(res: InertiaResult, m: torch.Tensor, tau: torch.Tensor) -> None:
    """count ∈ [#{λ̂ > τ + δ + e}, #{λ̂ > τ − δ − e}] for each threshold (raw counts)."""
    lam = torch.linalg.eigvalsh(m.double()).cpu()
    e_ref = 8 * m.shape[0] * U * float(lam.abs().max())
    assert res.error_bound is not None
    for c, t, delta in zip(res.counts.cpu().tolist(), tau.cpu().tolist(), res.error_bound.cpu().tolist(), strict=True):
        w = delta + e_ref  # inf is fine: then the bracket is trivially wide
        lo = int((lam > t + w).sum()) if math.isfinite(w) else 0
        hi = int((lam > t - w).sum()) if math.isfinite(w) else m.shape[0]
        assert lo <= c <= hi, f"count {c} outside [{lo}, {hi}] at τ={t:.6e}, δ={delta:.3e}"


def check_verdicts(
    res: InertiaResult, lam: torch.Tensor, tau: torch.Tensor, exact_true: torch.Tensor, what: str
) -> None:
    """The contract, against the known spectrum: exact where the gap at τ exceeds δ; every count
    called reliable is exact; float64 M is certified wherever the gap clearly exceeds the bracket
    τ ± 2δ (8δ: the ends' own δ± ≈ δ, plus room)."""
    assert res.error_bound is not None and res.certified is not None
    lam, tau, exact_true = lam.to(res.counts.device), tau.to(res.counts.device), exact_true.to(res.counts.device)
    gap = (lam.unsqueeze(0) - tau.unsqueeze(1)).abs().amin(1)
    delta = res.error_bound
    clear = gap > delta
    assert torch.equal(res.counts[clear], exact_true[clear]), f"{what}: wrong count with gap > δ"
    assert torch.equal(res.counts[res.reliable], exact_true[res.reliable]), f"{what}: a reliable count is wrong"
    wide = gap > 8 * delta
    assert bool(res.certified[wide].all()), f"{what}: not certified, gap {gap[wide]} vs δ {delta[wide]}"
    assert bool((res.reliable | ~res.certified).all())


def adversarial_cases(d: int) -> list[tuple[str, torch.Tensor, list[float]]]:
    """(name, λ ascending-agnostic [d], thresholds) with every threshold ≥ 1e-7 relative from λ."""
    cases = []
    pl = power_law(d)  # descending
    taus = [between(pl, k) for k in sorted({1, max(1, d // 2), max(1, d - 1)}) if k < d]
    k = max(1, (3 * d) // 4)
    taus += [float(pl[k - 1]) * (1 + 1e-7), float(pl[k - 1]) * (1 - 1e-7)]  # ε at an eigenvalue ± 1e-7
    cases.append(("power-law tail, ε in the dense part", pl, taus))
    # A cluster straddling ε: eigenvalues ε(1 + s(j + ½)), s = 1e-7, j = −n/2 … n/2 − 1, so ε and
    # ε(1 ± 3s) sit halfway between neighbours; the rest log-spaced away from ε.
    eps, s = 1e-3, 1e-7
    n_cl = max(1, d // 3)
    j = torch.arange(n_cl, dtype=F64) - n_cl // 2
    expo = torch.linspace(0, 6, d - n_cl, dtype=F64)
    rest = 10.0 ** -torch.where(expo < 2.5, expo, expo + 1)  # skips 10^-2.5 … 10^-3.5
    cl = torch.cat([eps * (1 + s * (j + 0.5)), rest])
    cases.append(("cluster straddling ε", cl, [eps, eps * (1 + 3 * s), eps * (1 - 3 * s)]))
    # Rank deficient: r live eigenvalues in [1e-3, 1], the rest exactly 0.
    r = max(1, d // 3)
    rd = torch.cat([torch.logspace(0, -3, r, dtype=F64), torch.zeros(d - r, dtype=F64)])
    cases.append(("rank deficient", rd, [1e-6, 5e-4 if r > 1 else 0.5, 2.0]))
    return cases


def crafted_growth(d: int = 120) -> tuple[torch.Tensor, torch.Tensor]:
    """τ a hair (1e-12 relative) below M_00: the first pivot M_00 − τ is tiny, L's first column huge."""
    lam = torch.logspace(0, -4, d, dtype=F64)
    m = spectrum_matrix(lam, seed=17)
    tau = m[0, 0] - 1e-12 * m[0, 0]
    return m, tau.reshape(1)


def near_miss(seed: int, s: float, g: float, d: int = 200) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(M, τ [1], λ) with both failure causes at once: τ = M_00(1 − s) makes the first pivot s·M_00
    (growth ~1/s), and one eigenvalue is placed g away from τ (g ≪ δ), so the pivot-free count can
    be off by one while its Weyl bracket still holds."""
    gen = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=F64))
    q = q * torch.sign(torch.diagonal(r))
    lam = torch.logspace(0, -4, d, dtype=F64)
    j = d // 2
    others = lam.clone()
    others[j] = 0
    # M_00 = Σ q_0i² λ_i; solve λ_j so that λ_j − τ = g with τ = M_00 (1 − s)
    c, qj2 = float((q[0] ** 2 * others).sum()), float(q[0, j] ** 2)
    lam[j] = (c * (1 - s) + g) / (1 - qj2 * (1 - s))
    m = (q * lam) @ q.T
    m = (m + m.T) / 2
    return m, torch.tensor([float(m[0, 0]) * (1 - s)], dtype=F64), lam
