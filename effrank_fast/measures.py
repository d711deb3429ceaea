"""The public rank measures of a feature matrix Φ [N, d] (or a precomputed Gram M [d, d]).

Every function takes ``phi`` (or ``gram=``), ``weights=None`` [N], ``mode="mean"|"sum"|"integral"``,
``center=False`` and ``backend="auto"``. The Gram matrix is

    M = (Φ − 1μᵀ)ᵀ diag(w) (Φ − 1μᵀ),   μ = Σ w_k φ_k / Σ w_k  (only when ``center=True``)

with w the given weights, or 1/N (``mode="mean"``) or 1 (``mode="sum"``) when none are given.
``mode="integral"`` requires weights: quadrature weights summing to |Ω| give the paper's
M_ij = ∫_Ω φ_i φ_j dx. When N < d the N×N matrix diag(√w)ΦΦᵀdiag(√w) is used instead: it has
the same non-zero eigenvalues at a fraction of the cost.

Results stay on the input's device as tensors (counts are int64), so nothing synchronises unless
``check=True`` validation reads the data, or a fallback decision does (documented per function).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import torch

from effrank_fast import _backends, _validate, spectral
from effrank_fast.ops.gram import compute_gram, default_acc_dtype, weighted_mean
from effrank_fast.ops.inertia import InertiaFallbackWarning, inertia_count, inertia_count_relative

__all__ = [
    "Measures",
    "eigenvalues",
    "entropy_rank",
    "eps_rank",
    "gram",
    "measures",
    "participation_ratio",
    "stable_rank",
]


@dataclass
class _Spectral:
    """S: a symmetric matrix whose non-zero eigenvalues are those of M; ``dim`` = d."""

    matrix: torch.Tensor
    dim: int
    backend: str
    n: int | None


def _features_to_matrix(
    phi: torch.Tensor,
    weights: torch.Tensor | None,
    mode: str,
    center: bool,
    backend: str,
    acc_dtype: torch.dtype | None,
    check: bool,
    allow_kernel: bool = True,
) -> _Spectral:
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
        return _Spectral(_kernel_matrix(phi, w, center, acc_dtype, backend), d, backend, n)
    m, used = compute_gram(phi, w, center, acc_dtype, backend)
    return _Spectral(m, d, used, n)


def _kernel_matrix(
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


def _prepare(
    phi: torch.Tensor | None,
    gram_: torch.Tensor | None,
    weights: torch.Tensor | None,
    mode: str,
    center: bool,
    backend: str,
    acc_dtype: torch.dtype | None,
    check: bool,
) -> _Spectral:
    if gram_ is None:
        if phi is None:
            raise ValueError("give the features phi [N, d] or a precomputed gram= [d, d]")
        return _features_to_matrix(phi, weights, mode, center, backend, acc_dtype, check)
    if phi is not None:
        raise ValueError("give either phi or gram=, not both")
    if weights is not None:
        raise ValueError("weights apply to phi; a precomputed gram= is already weighted")
    if center:
        raise ValueError("center=True applies to phi; center the features before forming gram=")
    _validate.check_gram(gram_, check_values=check)
    _backends.requested_backend(backend)  # validates the name even though no Gram is formed
    return _Spectral(gram_, gram_.shape[0], "given", None)


def _eigenvalues_desc(sp: _Spectral) -> torch.Tensor:
    """All d eigenvalues of M, descending, float64 (zeros appended for the N×N kernel)."""
    lam = torch.linalg.eigvalsh(sp.matrix.double()).flip(0)
    pad = sp.dim - lam.shape[0]
    if pad > 0:
        lam = torch.cat([lam, lam.new_zeros(pad)])
    return lam


def gram(
    phi: torch.Tensor,
    weights: torch.Tensor | None = None,
    *,
    mode: str = "mean",
    center: bool = False,
    backend: str = "auto",
    acc_dtype: torch.dtype | None = None,
    check: bool = True,
) -> torch.Tensor:
    """The Gram (mass) matrix M = Φᵀ diag(w) Φ.

    Args:
        phi: features [N, d] (fp16, bf16, fp32 or fp64).
        weights: quadrature weights [N], non-negative; None uses ``mode``.
        mode: "mean" (w = 1/N), "sum" (w = 1) or "integral" (weights required).
        center: remove the w-weighted mean of each feature first.
        backend: "auto", "torch", "native" or "triton".
        acc_dtype: accumulation/output dtype; float64 for fp64 input, else float32.
        check: validate values (NaN/Inf, negative weights); this reads the data (host sync).

    Returns:
        M: [d, d] symmetric, in ``acc_dtype``.

    Example:
        >>> M = effrank_fast.gram(torch.randn(1000, 64))  # [64, 64], ≈ identity
    """
    sp = _features_to_matrix(phi, weights, mode, center, backend, acc_dtype, check, allow_kernel=False)
    return sp.matrix


def eigenvalues(
    phi: torch.Tensor | None = None,
    *,
    weights: torch.Tensor | None = None,
    gram: torch.Tensor | None = None,
    k: int | None = None,
    mode: str = "mean",
    center: bool = False,
    backend: str = "auto",
    acc_dtype: torch.dtype | None = None,
    check: bool = True,
) -> torch.Tensor:
    """Eigenvalues of M in descending order, float64: all d, or the top ``k``.

    λ_i(M) = σ_i(diag(√w)Φ)²; for N < d the trailing d − N are exact zeros.
    """
    sp = _prepare(phi, gram, weights, mode, center, backend, acc_dtype, check)
    lam = _eigenvalues_desc(sp)
    if k is not None:
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise ValueError(f"k must be a positive int, got {k!r}")
        lam = lam[: min(k, lam.shape[0])]
    return lam


def eps_rank(
    phi: torch.Tensor | None = None,
    eps: float | list[float] | torch.Tensor | None = None,
    *,
    weights: torch.Tensor | None = None,
    gram: torch.Tensor | None = None,
    relative: str | None = None,
    mode: str = "mean",
    center: bool = False,
    backend: str = "auto",
    method: str = "auto",
    acc_dtype: torch.dtype | None = None,
    check: bool = True,
) -> torch.Tensor:
    """The ε-rank #{λ(M) > τ}, τ = ε, ε·λ_max (``relative="max"``) or ε·tr M (``"trace"``).

    Args:
        phi: features [N, d], or pass ``gram=`` [d, d].
        eps: ε > 0, a scalar, a list or a 1-D tensor; several ε share one computation.
        method: "auto", "eigh" (float64 eigvalsh) or "inertia" (float64 LDLᵀ of M − τI,
            no eigensolver; exact to M's own rounding, and proven exact for a float64 M by two
            extra counts at τ ± 2δ; an unreliable count falls back to eigvalsh, which reads one
            flag from the device and warns with ``InertiaFallbackWarning``). ``relative="max"``
            with inertia brackets λ_max by Lanczos and counts at both ends. "auto" picks inertia
            where it is measured to be faster (``effrank_fast._backends.INERTIA_BUDGET``).

    Returns:
        int64 tensor on the input's device: 0-d for a scalar ε, else [E].
    """
    eps_vals, scalar = _validate.check_eps(eps)
    relative = _validate.check_relative(relative)
    sp = _prepare(phi, gram, weights, mode, center, backend, acc_dtype, check)
    device = sp.matrix.device
    eps_dev = eps_vals.to(device)
    chosen = _backends.select_count_method(
        method, device, eps_vals.numel(), sp.backend, dim=sp.matrix.shape[0], relative=relative, dtype=sp.matrix.dtype
    )
    if chosen == "eigh":
        lam = _eigenvalues_desc(sp)
        tau = spectral.thresholds_for(eps_dev, relative, lam[0], lam.sum())
        counts = spectral.eps_counts(lam, tau)
    else:
        if relative == "max":  # λ_max bracketed by Lanczos, proven, counted at both ends
            res = inertia_count_relative(sp.matrix, eps_dev)
        else:
            trace = sp.matrix.diagonal().double().sum()
            res = inertia_count(sp.matrix, spectral.thresholds_for(eps_dev, relative, trace, trace))
        if res.fallback_method is not None:  # known on the host already: the fallback decision synced
            warnings.warn(
                f"eps_rank: the inertia count was not reliable for some ε (an eigenvalue within its "
                f"error bound of the threshold, or pivot growth); those were recounted by "
                f"{res.fallback_method}. effrank_fast.ops.inertia.inertia_count returns the diagnostics.",
                InertiaFallbackWarning,
                stacklevel=2,
            )
        counts = res.counts
    return counts[0] if scalar else counts


def entropy_rank(
    phi: torch.Tensor | None = None,
    *,
    weights: torch.Tensor | None = None,
    gram: torch.Tensor | None = None,
    mode: str = "mean",
    center: bool = False,
    backend: str = "auto",
    acc_dtype: torch.dtype | None = None,
    check: bool = True,
) -> torch.Tensor:
    """Entropy effective rank exp(−Σ p log p), p = σ/Σσ, σ = √λ(M) (Roy–Vetterli; RankMe). 0-d float64."""
    sp = _prepare(phi, gram, weights, mode, center, backend, acc_dtype, check)
    return spectral.entropy_rank_from_eigenvalues(_eigenvalues_desc(sp))


def stable_rank(
    phi: torch.Tensor | None = None,
    *,
    weights: torch.Tensor | None = None,
    gram: torch.Tensor | None = None,
    mode: str = "mean",
    center: bool = False,
    backend: str = "auto",
    acc_dtype: torch.dtype | None = None,
    check: bool = True,
) -> torch.Tensor:
    """Stable rank tr M / λ_max (= ‖Φ_w‖_F² / ‖Φ_w‖₂²). 0-d float64."""
    sp = _prepare(phi, gram, weights, mode, center, backend, acc_dtype, check)
    return spectral.stable_rank_from_eigenvalues(_eigenvalues_desc(sp))


def participation_ratio(
    phi: torch.Tensor | None = None,
    *,
    weights: torch.Tensor | None = None,
    gram: torch.Tensor | None = None,
    mode: str = "mean",
    center: bool = False,
    backend: str = "auto",
    acc_dtype: torch.dtype | None = None,
    check: bool = True,
) -> torch.Tensor:
    """Participation ratio (tr M)² / ‖M‖_F², from the matrix entries (no eigensolver). 0-d float64."""
    sp = _prepare(phi, gram, weights, mode, center, backend, acc_dtype, check)
    m = sp.matrix.double()
    return spectral.participation_ratio_from_moments(m.diagonal().sum(), m.square().sum())


@dataclass
class Measures:
    """All measures from one spectrum. Tensors stay on the input's device.

    Attributes:
        eps: ε values [E] (float64) as given; ``relative`` says how they were scaled.
        thresholds: the absolute thresholds τ [E] that were applied.
        eps_rank: #{λ > τ_e} [E] int64.
        entropy_rank, stable_rank, participation_ratio, lambda_max, trace: 0-d float64.
        eigenvalues: all d eigenvalues, descending, float64.
        mode, center, n, d: the conventions and sizes used (n is None for gram= input).
    """

    eps: torch.Tensor
    relative: str | None
    thresholds: torch.Tensor
    eps_rank: torch.Tensor
    entropy_rank: torch.Tensor
    stable_rank: torch.Tensor
    participation_ratio: torch.Tensor
    lambda_max: torch.Tensor
    trace: torch.Tensor
    eigenvalues: torch.Tensor
    mode: str
    center: bool
    n: int | None
    d: int
    backend: str = field(default="torch")

    def topk(self, k: int) -> torch.Tensor:
        """The k largest eigenvalues [min(k, d)], descending."""
        return self.eigenvalues[:k]

    def to_dict(self) -> dict[str, object]:
        """Plain Python numbers (this synchronises with the device)."""
        return {
            "eps": self.eps.tolist(),
            "relative": self.relative,
            "thresholds": self.thresholds.tolist(),
            "eps_rank": self.eps_rank.tolist(),
            "entropy_rank": float(self.entropy_rank),
            "stable_rank": float(self.stable_rank),
            "participation_ratio": float(self.participation_ratio),
            "lambda_max": float(self.lambda_max),
            "trace": float(self.trace),
            "mode": self.mode,
            "center": self.center,
            "n": self.n,
            "d": self.d,
            "backend": self.backend,
        }


def measures_from_eigenvalues(
    lam: torch.Tensor,
    eps: torch.Tensor,
    relative: str | None,
    *,
    mode: str,
    center: bool,
    n: int | None,
    backend: str,
) -> Measures:
    """Every measure from one descending float64 spectrum ``lam`` [d] (no host sync)."""
    lam_max, trace = lam[0], lam.sum()
    eps = eps.to(lam.device)
    tau = spectral.thresholds_for(eps, relative, lam_max, trace)
    return Measures(
        eps=eps,
        relative=relative,
        thresholds=tau,
        eps_rank=spectral.eps_counts(lam, tau),
        entropy_rank=spectral.entropy_rank_from_eigenvalues(lam),
        stable_rank=spectral.stable_rank_from_eigenvalues(lam),
        participation_ratio=spectral.participation_ratio_from_eigenvalues(lam),
        lambda_max=lam_max,
        trace=trace,
        eigenvalues=lam,
        mode=mode,
        center=center,
        n=n,
        d=lam.shape[0],
        backend=backend,
    )


def measures(
    phi: torch.Tensor | None = None,
    eps: float | list[float] | torch.Tensor | None = None,
    *,
    weights: torch.Tensor | None = None,
    gram: torch.Tensor | None = None,
    relative: str | None = None,
    mode: str = "mean",
    center: bool = False,
    backend: str = "auto",
    acc_dtype: torch.dtype | None = None,
    check: bool = True,
) -> Measures:
    """Every measure from one float64 eigendecomposition; see :class:`Measures`."""
    eps_vals, _ = _validate.check_eps(eps)
    relative = _validate.check_relative(relative)
    sp = _prepare(phi, gram, weights, mode, center, backend, acc_dtype, check)
    return measures_from_eigenvalues(
        _eigenvalues_desc(sp), eps_vals, relative, mode=mode, center=center, n=sp.n, backend=sp.backend
    )
