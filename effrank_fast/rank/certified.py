"""The certified ε-count behind :func:`effrank_fast.eps_rank` (and its promotion of precision).

A count of a computed Gram M̂ is a count of the features' exact M when no eigenvalue of M̂ lies
within δ = δ_G + δ_solver of τ (Weyl), δ_G the formation error (``ops/gram/error.py``). Each pass
counts with that certificate:

- ``inertia``: equal LDLᵀ counts at τ ± (δ_G + m) prove it (``ops/inertia/certificate.py``), two
  factorisations per ε; ``relative="max"`` proves it over ε times the bracket of λ_max(M).
- ``eigh``: the float64 spectrum of M̂ has no eigenvalue in [τ_lo − δ, τ_hi + δ], with
  δ_solver = 4·d·u₆₄·max|λ| (backward stability of the symmetric eigensolver).

When a count is not proven and the Gram was accumulated in float32, the Gram is formed again in
float64 (**promotion**) and counted again; an unproven float64 count is the float64 spectrum's
(an eigenvalue then lies within ~1e-12 relative of τ: inside the contract's 1e-9 band). A matrix
whose every eigenvalue lies within a finite δ_G of 0 after that (constant centred features, say)
is numerically zero: its relative counts are 0. A count whose bound is not finite is never
certified.

Scale: a :class:`BoundedGram` formed at ``scale`` ≠ 1 (features or a ``gram=`` near the ends of the
dtype's range) is counted at τ·scale; ``thresholds`` and ``gram_error`` are reported in the given
units.

Deciding to promote reads one flag from the device (**a host sync**), so it happens only with
``check=True``; ``check=False`` returns the first pass as it is, proven or not (see
:class:`EpsRankResult`), and never synchronises on the inertia path.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from effrank_fast.ops.inertia import InertiaFallbackWarning, inertia_count, inertia_count_relative
from effrank_fast.ops.inertia.cost import select_count_method
from effrank_fast.ops.numerics import U64, unit_roundoff
from effrank_fast.rank import formulas
from effrank_fast.rank.prepare import BoundedGram, eigenvalues_desc


@dataclass
class EpsRankResult:
    """An ε-count with its certificate; tensors on the input's device, shape [E].

    Attributes:
        counts: #{λ(M) > τ_e}, int64.
        certified: the count is proven for the exact M of the given values (δ_G included).
        lower, upper: proven bounds on the exact count (equal to ``counts`` where certified).
        thresholds: the absolute τ_e of the final pass (ε·λ̂_max or ε·tr M̂ for relative ε).
        gram_error: δ_G of the final Gram (0-d float64); for a given ``gram=``, u·‖M‖_F (the
            exact matrix rounded to its dtype).
        acc_dtype: the accumulation dtype of the final Gram.
        method: "eigh" or "inertia".
        promoted: a float64 Gram was formed because a float32 count was not proven.
        fell_back: the final counts of unproven thresholds came from the float64 spectrum.
        zero: the matrix was within δ_G of zero (relative counts reported as 0).
        certificate: the kind of δ_G the counts were proven with ("tight", "probabilistic",
            "rigorous"; docs/certificate.md), None for a given ``gram=`` (its own rounding).
    """

    counts: torch.Tensor
    certified: torch.Tensor
    lower: torch.Tensor
    upper: torch.Tensor
    thresholds: torch.Tensor
    gram_error: torch.Tensor | None
    acc_dtype: torch.dtype | None
    method: str
    promoted: bool = False
    fell_back: bool = False
    zero: torch.Tensor | None = None
    certificate: str | None = None


def _gram_error(sp: BoundedGram) -> torch.Tensor:
    """δ_G of a formed Gram; a given one is the exact matrix rounded to its dtype: u·‖M‖_F."""
    if sp.gram_error is not None:
        return sp.gram_error
    return unit_roundoff(sp.matrix.dtype) * torch.linalg.matrix_norm(sp.matrix.detach().double())


def _eigh_pass(
    sp: BoundedGram, eps: torch.Tensor, relative: str | None, lam: torch.Tensor | None = None
) -> EpsRankResult:
    lam = eigenvalues_desc(sp) if lam is None else lam
    trace = sp.matrix.diagonal().double().sum()
    return eigh_certificate(lam, _gram_error(sp), trace, sp.matrix.shape[0], sp.dim, eps, relative, sp.acc_dtype)


def eigh_certificate(
    lam: torch.Tensor,
    g: torch.Tensor,
    trace: torch.Tensor,
    n: int,
    dim: int,
    eps: torch.Tensor,
    relative: str | None,
    acc_dtype: torch.dtype | None,
) -> EpsRankResult:
    """The eigh pass on λ [..., dim] (descending float64) of [n, n] matrices with δ_G ``g`` [...] and
    trace [...]; ε [E]. Batched: the result's fields gain the leading dims. The one home of the
    eigh certificate (the native ``spectrum_rows`` kernel mirrors it, tests/test_spectrum_rows.py)."""
    top = lam.abs().amax(-1)
    delta = (g + 4 * n * U64 * top).unsqueeze(-1)  # [..., 1]
    lam_max, g_col = lam[..., :1], g.unsqueeze(-1)
    tau = formulas.thresholds_for(eps, relative, lam_max, trace.unsqueeze(-1))
    if relative == "max":  # the exact λ_max lies within δ of λ̂_max
        lo, hi = eps * (lam_max - delta), eps * (lam_max + delta)
    elif relative == "trace":  # |tr ΔM| ≤ d·‖ΔM‖₂
        spread = eps * dim * g_col
        lo, hi = tau - spread, tau + spread
    else:
        lo, hi = tau, tau
    E = eps.shape[-1]
    tau = torch.broadcast_to(tau, (*lam.shape[:-1], E))
    # the count and its proven bounds in one comparison: thresholds τ, lo − δ, hi + δ side by side
    sides = torch.cat([tau, torch.broadcast_to(lo - delta, tau.shape), torch.broadcast_to(hi + delta, tau.shape)], -1)
    counts, upper, lower = formulas.eps_counts(lam, sides).split(E, -1)
    certified = torch.isfinite(delta) & (upper == lower)
    zero = torch.isfinite(g) & (top <= g)
    return EpsRankResult(counts, certified, lower, upper, tau, g, acc_dtype, "eigh", zero=zero)


def _inertia_pass(sp: BoundedGram, eps: torch.Tensor, relative: str | None) -> EpsRankResult:
    m = sp.matrix
    g = _gram_error(sp)
    diag = m.diagonal().double()
    if relative == "max":
        res = inertia_count_relative(m, eps, gram_error=g, fallback=False, check=False)
        assert res.lambda_max is not None
        top = res.lambda_max[1]
    else:
        trace = diag.sum()
        tau = formulas.thresholds_for(eps, relative, trace, trace)
        # a relative-to-trace τ is uncertain by ε·d·δ_G (|tr ΔM| ≤ d‖ΔM‖₂): widen the margin
        widen = eps * sp.dim * g if relative == "trace" else torch.zeros_like(eps)
        res = inertia_count(m, tau, gram_error=g + widen.max(), fallback=False, check=False)
        top = diag.abs().sum()  # ≥ λ_max for a PSD M
    assert res.count_bounds is not None and res.thresholds is not None
    lower, upper = res.count_bounds
    zero = torch.isfinite(g) & (top <= g)
    return EpsRankResult(res.counts, res.reliable, lower, upper, res.thresholds, g, sp.acc_dtype, "inertia", zero=zero)


def _given_units(res: EpsRankResult, sp: BoundedGram) -> EpsRankResult:
    if sp.scale != 1.0:
        res.thresholds = res.thresholds / sp.scale
        res.gram_error = None if res.gram_error is None else res.gram_error / sp.scale
    return res


def _scaled_eps(sp: BoundedGram, eps: torch.Tensor, relative: str | None) -> torch.Tensor:
    return eps * sp.scale if relative is None and sp.scale != 1.0 else eps


def count_pass(sp: BoundedGram, eps: torch.Tensor, relative: str | None, method: str) -> EpsRankResult:
    """One certified count of ``sp`` (no host sync on the inertia path); τ and δ_G in the given units."""
    res = _given_units(_count_scaled(sp, _scaled_eps(sp, eps, relative), relative, method), sp)
    res.certificate = sp.certificate
    return res


def count_from_eigenvalues(
    sp: BoundedGram, eps: torch.Tensor, relative: str | None, lam: torch.Tensor
) -> EpsRankResult:
    """The ``eigh`` pass of ``count_pass`` on ``lam`` [sp.dim] descending float64, the eigenvalues
    of ``sp.matrix`` (as :func:`eigenvalues_desc` returns them) that a caller solved already."""
    res = _given_units(_eigh_pass(sp, _scaled_eps(sp, eps, relative), relative, lam), sp)
    res.certificate = sp.certificate
    return res


def count_from_eigenvalues_many(
    sps: list[BoundedGram], eps: torch.Tensor, relative: str | None, lam: torch.Tensor, matrices: torch.Tensor
) -> EpsRankResult | None:
    """:func:`count_from_eigenvalues` for L matrices of one size at once: ``matrices`` [L, n, n] the
    stacked ``sp.matrix``, ``lam`` [L, dim] their spectra; the fields gain the leading L (δ_G [L]).
    None when they differ in scale, accumulation dtype or certificate kind (count one by one)."""
    first = sps[0]
    if any(sp.scale != 1.0 or sp.acc_dtype != first.acc_dtype or sp.certificate != first.certificate for sp in sps):
        return None
    g = torch.stack([_gram_error(sp) for sp in sps])
    trace = matrices.diagonal(dim1=-2, dim2=-1).double().sum(-1)
    res = eigh_certificate(lam, g, trace, matrices.shape[-1], first.dim, eps, relative, first.acc_dtype)
    res.certificate = first.certificate
    return res


def _count_scaled(sp: BoundedGram, eps: torch.Tensor, relative: str | None, method: str) -> EpsRankResult:
    chosen = select_count_method(
        method,
        sp.matrix.device,
        eps.numel(),
        sp.backend,
        dim=sp.matrix.shape[0],
        relative=relative,
        dtype=sp.matrix.dtype,
    )
    if chosen == "eigh":
        return _eigh_pass(sp, eps, relative)
    return _inertia_pass(sp, eps, relative)


def certified_count(
    sp: BoundedGram, eps: torch.Tensor, relative: str | None, method: str, check: bool
) -> EpsRankResult:
    """The count with promotion and fallback (module docstring); host syncs only with ``check``."""
    res = count_pass(sp, eps, relative, method)
    if not check:
        return res
    promoted = False
    if not bool(res.certified.all()) and sp.recompute is not None and sp.acc_dtype == torch.float32:  # host sync
        sp = sp.recompute(torch.float64)
        res = count_pass(sp, eps, relative, method)
        promoted = True
    res.promoted = promoted
    if relative is not None and res.zero is not None and bool(res.zero) and sp.acc_dtype == torch.float64:
        zeros = torch.zeros_like(res.counts)
        res.counts, res.lower, res.upper = zeros, zeros, zeros.clone()
        res.certified = torch.ones_like(res.certified)
        return res
    if not bool(res.certified.all()):
        if res.method == "inertia":
            warnings.warn(
                "eps_rank: an eigenvalue lies within the error bound of the threshold even for a "
                "float64 Gram (or the factorisation grew); those ε were recounted by eigh "
                "(effrank_fast.rank.eps_rank_result returns the certificate).",
                InertiaFallbackWarning,
                stacklevel=3,
            )
            redo = _eigh_pass(sp, _scaled_eps(sp, eps, relative), relative)
            res.counts = torch.where(res.certified, res.counts, redo.counts)
        res.fell_back = True
    return res
