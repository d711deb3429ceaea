"""The accuracy contract of the Triton Gram kernels and the helpers its tests share.

Contract: every Triton path errs (relative Frobenius, vs float64) by at most 2× an fp32 SIMT Gram
of the same inputs (fp32 matmul without TF32), plus a floor of 4 fp32 roundings of the output
(uniform weights are applied as one extra product, which the SIMT Gram spreads over √w).
"""

from __future__ import annotations

import torch

from effrank_fast.ops.gram import triton as gt

DEV = "cuda" if torch.cuda.is_available() else "cpu"
U32 = 2.0**-24
U64 = 2.0**-53
FLOOR = 4 * U32


def features64(phi, w, center):
    """diag(√w)(Φ − 1μᵀ) in float64 (on the CPU)."""
    x = phi.detach().double().cpu()
    w64 = None if w is None else w.detach().double().cpu()
    if center:
        ww = torch.ones(x.shape[0], dtype=torch.float64) if w64 is None else w64
        x = x - (ww @ x) / ww.sum()
    return x if w64 is None else x * w64.sqrt()[:, None]


def simt32(phi, w, center):
    """fp32 SIMT Gram of the same inputs: fp32 centring and √w scaling, one fp32 matmul, no TF32."""
    x = phi.float()
    if center:
        ww = torch.ones(x.shape[0], device=x.device) if w is None else w.float()
        x = x - (ww @ x) / ww.sum()
    if w is not None:
        x = x * w.float().sqrt()[:, None]
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        return x.T @ x
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old


def relerr(m, ref):
    return float((m.detach().double().cpu() - ref).norm() / ref.norm().clamp_min(1e-300))


def fp64_tol(phi, w, center):
    """Relative Frobenius bound of a float64-accumulated Gram against ``_features64``'s, itself float64.

    Each side sums N products (any order: γ_N ≤ N·u₆₄) after a few more roundings per term (w·v,
    √w, the centring subtraction, streamed adds: 8 is ample), and μ carries γ_N·Σw|φ|/Σw. First
    order, per entry: (N + 8)·u₆₄·(Aᵀ diag(w) A) with A = |Φ − 1μᵀ| + m, m = Σw|φ|/Σw if centred;
    both sides err, hence the 2.
    """
    x = phi.detach().double().cpu()
    ww = torch.ones(x.shape[0], dtype=torch.float64) if w is None else w.detach().double().cpu()
    a = x.abs()
    if center:
        a = (x - (ww @ x) / ww.sum()).abs() + (ww @ x.abs()) / ww.sum()
    bound = 2 * (x.shape[0] + 8) * U64 * (a.T @ (a * ww[:, None]))
    ref = features64(phi, w, center)
    return float(bound.norm() / (ref.T @ ref).norm())


def spy_splits(monkeypatch):
    """The split factor of every SYRK launch from now on (1: one program per tile, no atomics)."""
    used = []
    real = gt._launch_syrk
    monkeypatch.setattr(gt, "_launch_syrk", lambda *a, **k: used.append(real(*a, **k)) or used[-1])
    return used


def atomic_tol(m, splits):
    """How far two runs may differ when s programs add PSD partial Grams P_k with atomics.

    Two orders of the same s + 1 fp32 terms (the old value too) differ by ≤ 2·s·u₃₂·Σ|P_k,ij|
    (first order), and Σ_k |P_k,ij| ≤ Σ_k √(P_k,ii P_k,jj) ≤ √(M_ii M_jj) ≤ max|M| (Cauchy–Schwarz).
    """
    return 2 * (max(splits) + 1) * U32 * float(m.abs().max())


def weights_of(kind, n, device=DEV):
    if kind is None:
        return None
    if kind == "uniform":
        return torch.full((n,), 1.0 / n, dtype=torch.float64, device=device)
    return torch.rand(n, device=device) + 0.05


def check_contract(phi, w, center, m):
    x = features64(phi, w, center)
    ref = x.T @ x
    err, base = relerr(m, ref), relerr(simt32(phi, w, center), ref)
    assert err <= 2 * base + FLOOR, f"triton {err:.3e} vs fp32 SIMT {base:.3e}"
    assert torch.equal(m, m.T), "the Gram must be exactly symmetric (upper triangle mirrored)"
