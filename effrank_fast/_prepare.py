"""Input → matrix for every measure: validation, weights, the Gram (or the N×N kernel) and its spectrum.

Shared by :mod:`effrank_fast.measures` (gram, eigenvalues, eps_rank) and
:mod:`effrank_fast.spectrum_measures` (entropy rank, stable rank, participation ratio, measures).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from effrank_fast import _backends, _validate
from effrank_fast.ops.gram import compute_gram, default_acc_dtype, weighted_mean


@dataclass
class Spectral:
    """S: a symmetric matrix whose non-zero eigenvalues are those of M; ``dim`` = d.

    ``gram_error``: a bound on ‖Ŝ − S‖₂, the error made forming S from the given values (0-d float64
    on S's device), or None when S was given (``gram=``) or no bound is known yet.
    """

    matrix: torch.Tensor
    dim: int
    backend: str
    n: int | None
    gram_error: torch.Tensor | None = None


def features_to_matrix(
    phi: torch.Tensor,
    weights: torch.Tensor | None,
    mode: str,
    center: bool,
    backend: str,
    acc_dtype: torch.dtype | None,
    check: bool,
    allow_kernel: bool = True,
) -> Spectral:
    _validate.check_features(phi, check_finite=check)
    n, d = phi.shape
    if weights is not None:
        _validate.check_weights(weights, n, phi.device, check_values=check)
    _validate.check_mode(mode, weights)
    if acc_dtype is None:
        acc_dtype = default_acc_dtype(phi.dtype)
    if acc_dtype not in (torch.float32, torch.float64):
        raise TypeError(f"acc_dtype must be torch.float32 or torch.float64, got {acc_dtype}")
    w = _validate.resolve_weights(weights, mode, n, phi.device)
    if allow_kernel and n < d:
        return Spectral(kernel_matrix(phi, w, center, acc_dtype, backend), d, backend, n)
    m, used = compute_gram(phi, w, center, acc_dtype, backend)
    return Spectral(m, d, used, n)


def kernel_matrix(
    phi: torch.Tensor, w: torch.Tensor | None, center: bool, acc_dtype: torch.dtype, backend: str
) -> torch.Tensor:
    """K = diag(√w)(Φ − 1μᵀ)(Φ − 1μᵀ)ᵀdiag(√w) [N, N] for N < d."""
    name = _backends.select_gram_backend(backend, phi.device, phi.dtype)
    if name == "triton":
        from effrank_fast.ops.gram.triton import kernel_triton

        return kernel_triton(phi, w, center, acc_dtype)
    x = phi.to(acc_dtype)
    if center:
        x = x - weighted_mean(phi, w, acc_dtype)
    if w is not None:
        x = x * w.to(acc_dtype).sqrt().unsqueeze(1)
    k, _ = compute_gram(x.T.contiguous(), None, False, acc_dtype, name)
    return k


def prepare(
    phi: torch.Tensor | None,
    gram_: torch.Tensor | None,
    weights: torch.Tensor | None,
    mode: str,
    center: bool,
    backend: str,
    acc_dtype: torch.dtype | None,
    check: bool,
) -> Spectral:
    if gram_ is None:
        if phi is None:
            raise ValueError("give the features phi [N, d] or a precomputed gram= [d, d]")
        return features_to_matrix(phi, weights, mode, center, backend, acc_dtype, check)
    if phi is not None:
        raise ValueError("give either phi or gram=, not both")
    if weights is not None:
        raise ValueError("weights apply to phi; a precomputed gram= is already weighted")
    if center:
        raise ValueError("center=True applies to phi; center the features before forming gram=")
    _validate.check_gram(gram_, check_values=check)
    _backends.requested_backend(backend)  # validates the name even though no Gram is formed
    return Spectral(gram_, gram_.shape[0], "given", None)


def eigenvalues_desc(sp: Spectral, solve_dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """All d eigenvalues of M, descending, float64 (zeros appended for the N×N kernel).

    ``solve_dtype``: float64 (default: backward error ~d·u₆₄·λ_max, negligible) or float32 for a
    float32 M (about half the time at d = 1024; backward error measured up to ~50·u₃₂·λ_max at
    d = 2048, so callers widen their noise floor by ``spectral.noise_floor(solve_dtype=...)``).
    """
    if solve_dtype == torch.float32 and sp.matrix.dtype == torch.float32:
        lam = torch.linalg.eigvalsh(sp.matrix).double().flip(0)
    else:
        lam = torch.linalg.eigvalsh(sp.matrix.double()).flip(0)
    pad = sp.dim - lam.shape[0]
    if pad > 0:
        lam = torch.cat([lam, lam.new_zeros(pad)])
    return lam
