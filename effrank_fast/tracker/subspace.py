"""Subspace pieces of the tracker: shifted Cholesky-QR orthonormalisation and Rayleigh–Ritz.

Everything here is a fixed sequence of GEMMs, one small Cholesky per pass and one small
symmetric eigensolve: no data-dependent control flow, so nothing reads the device.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from effrank_fast.ops.jacobi_eigh import default_tol, jacobi_eigh, why_not_native

__all__ = ["Ritz", "orthonormalize", "rayleigh_ritz", "small_solver", "subspace_iterations"]


def small_solver(eigensolver: str, device: torch.device) -> str:
    """jacobi_eigh backend of the small eigensolves for ``eigensolver`` "jacobi", "eigh" or "auto"."""
    if eigensolver == "jacobi":
        return "native" if why_not_native(device) is None else "torch"
    if eigensolver == "eigh" or device.type == "cpu":
        return "eigh"
    return "native" if why_not_native(device) is None else "eigh"


def orthonormalize(z: torch.Tensor, fallback: torch.Tensor | None = None, passes: int = 3) -> torch.Tensor:
    """An orthonormal basis [d, q] of span(z) by shifted Cholesky-QR, without host syncs.

    ``fallback`` [d, q], orthonormal, is the basis z was computed from (z = M·fallback in a
    subspace iteration). z of rank < q has no orthonormal basis of q columns: M·V for a singular
    M once q nears d (a cold start at q = d = 24, M's eigenvalues 5 … 1e-16, made NaN). So
    ``fallback`` is mixed in at √u: z + α·fallback, α = √u·max‖z_i‖, which is (M + αI)·V, with
    σ_min ≳ α for a PSD M, hence κ ≲ u^-½; the iteration then runs on M + αI (the same
    eigenvectors; the Rayleigh–Ritz step uses M itself, and its certificate holds for any
    orthonormal V). Columns are scaled to unit norm (the span is unchanged and the Gram becomes
    well scaled); a column with norm ≤ u·max norm (z = 0, say) becomes ``fallback``'s. Pass 1
    factors zᵀz + sI with Fukaya et al.'s shift s = 11·(d·q + q(q + 1))·u·‖z‖_F² (‖z‖_F² ≥
    ‖z‖₂²), which bounds κ of its output for κ(z) ≲ u^-1; the plain Cholesky-QR of the later passes
    then restores orthogonality to O(u) (shiftedCholeskyQR3, Fukaya, Kannan, Nakatsukasa,
    Yamamoto, Yanagisawa, SISC 2020). A failed Cholesky (non-finite input) gives non-finite
    output, which the tracker detects and answers with a cold restart.

    The arithmetic is float64 whatever z's dtype (the result is cast back): in float32 no shift is
    both large enough for the later passes and small enough to help (Fukaya et al.'s regime needs
    d·q·u ≪ 1). Cost ~3·d·q² float64 flops, small next to d²q.
    """
    d, q = z.shape
    out_dtype = z.dtype
    z = z.double()
    u = torch.finfo(torch.float64).eps
    if fallback is not None:
        z = z + (u**0.5 * torch.linalg.vector_norm(z, dim=0).amax()) * fallback.double()
    norms = torch.linalg.vector_norm(z, dim=0)
    small = norms <= u * norms.amax()
    z = z / torch.where(small, torch.ones_like(norms), norms)
    if fallback is not None:
        z = torch.where(small, fallback.double(), z)
    eye = torch.eye(q, dtype=z.dtype, device=z.device)
    for i in range(passes):
        g = z.mT @ z
        if i == 0:
            shift = 11.0 * (d * q + q * (q + 1)) * u
            g = g + shift * torch.diagonal(g).sum().clamp_min(torch.finfo(z.dtype).tiny) * eye
        chol, _info = torch.linalg.cholesky_ex(g)
        z = torch.linalg.solve_triangular(chol.mT, z, upper=True, left=False)  # z R⁻¹, R = Lᵀ
    return z.to(out_dtype)


def subspace_iterations(g: torch.Tensor, v: torch.Tensor, iters: int) -> torch.Tensor:
    """``iters`` steps of V ← orth(M V) (a null column of M V keeps V's column)."""
    for _ in range(iters):
        v = orthonormalize(g @ v, fallback=v)
    return v


@dataclass
class Ritz:
    """Rayleigh–Ritz data for an orthonormal basis V [d, q] of the current subspace.

    vectors: V Y, the Ritz vectors, in descending order of θ.
    gv: M·vectors (from the one d×d GEMM, rotated).
    hp: vectorsᵀ M vectors [q, q], recomputed after the rotation (its off-diagonal is what the
        eigensolver and rounding left; the certificate uses it).
    theta: diag(hp) [q], the Rayleigh quotients (float64), descending. They equal the Ritz values
        (the eigenvalues of hp) only up to ‖hp − diag(hp)‖_F (Weyl), which is what the solve left.
    resid: ‖M v_i − θ_i v_i‖ [q] (float64).
    sweeps, off: the Jacobi solve's sweep count and relative off-diagonal norm at exit.
    """

    vectors: torch.Tensor
    gv: torch.Tensor
    hp: torch.Tensor
    theta: torch.Tensor
    resid: torch.Tensor
    sweeps: torch.Tensor
    off: torch.Tensor


def rayleigh_ritz(
    v: torch.Tensor, gv: torch.Tensor, *, max_sweeps: int = 8, backend: str = "auto", tol: float | None = None
) -> Ritz:
    """Rayleigh–Ritz on span(V) given V [d, q] orthonormal and GV = M V (no extra d×d GEMM).

    Costs 4 GEMMs of d×q×q plus the q×q Jacobi eigensolve (warm: H is nearly diagonal when V is
    last step's Ritz basis).
    """
    q = v.shape[1]
    h = v.mT @ gv
    # Non-finite input must not stop the solver (LAPACK raises on NaN): solve a zero matrix
    # instead; V and MV carry the NaN on into θ and the residuals, which the caller flags.
    h = torch.where(torch.isfinite(h), (h + h.mT) / 2, torch.zeros_like(h))
    if tol is None:
        tol = default_tol(q, h.dtype)
    res = jacobi_eigh(h, max_sweeps=max_sweeps, tol=tol, backend=backend)
    y = res.eigenvectors.flip(-1)  # descending
    v = v @ y
    gv = gv @ y
    hp = v.mT @ gv
    hp = (hp + hp.mT) / 2
    # A solve stopped by its sweep cap can leave diag(hp) out of order; sorted values are what the
    # Weyl bound θ_(i) − ‖E‖ ≤ λ_i speaks of (a permutation: no data-dependent control flow).
    order = torch.argsort(torch.diagonal(hp), descending=True, stable=True)
    v, gv, hp = v[:, order], gv[:, order], hp[order][:, order]
    theta = torch.diagonal(hp).double()
    resid = torch.linalg.vector_norm((gv - v * torch.diagonal(hp)).double(), dim=0)
    return Ritz(v, gv, hp, theta, resid, res.sweeps, res.off)
