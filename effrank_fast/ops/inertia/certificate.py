"""The count certificate that includes the Gram's own error δ_G (``gram_error=``).

An ε-count of a *computed* Gram M̂ is a count of the true M only when no eigenvalue of M̂ lies within
δ_G ≥ ‖M̂ − M‖₂ of τ (Weyl). The factorisation adds its own backward error δ_± (the kernel's rigorous
bound, ops/inertia/schema.py). With a = δ_G + m, m an allotment for δ_± fixed before factoring:

    count_LDL(τ_hi + a) ≤ #{λ(M) > τ'} ≤ count_LDL(τ_lo − a)    for every τ' ∈ [τ_lo, τ_hi]

whenever δ_± ≤ m (Weyl twice: M̂ + E_± is within δ_G + δ_± of M; δ_± taken as δ_p, below). Equal ends prove the count, in
two factorisations. The interval [τ_lo, τ_hi] carries an uncertain threshold: τ_lo = τ_hi = τ for
an absolute ε, the proven bracket of ε·λ_max(M) for ``relative="max"``.

m = max((256·γ_{3d} + u)·(Σ|M_ii| + d·|τ|), δ_G/4), and the check is δ_p,± ≤ m with δ_p the
probabilistic form of the kernel's bound (``probabilistic_bound``: Higham–Mary, the same model as
the tolerance verdict and δ_G). For a PSD M the kernel's δ = γ_{3d}·Σ|D_k|(1 + Σ L²) + u‖A‖_F is
about γ_{3d}·tr M; the indefinite M − τI has larger |L|, growing with d (measured δ_p ≈ 30·γ_{3d}·
(tr M + d|τ|) at d = 256 with max|L| ≈ 940, ≈ 290·… at d = 2048 with max|L| ≈ 2000–13000, τ
mid-spectrum). The growth term alone would fail at d = 2048; a float32 Gram's δ_G is far larger
(≈ 40× that term there), and allotting a quarter of it widens the reach a by at most 25% while
covering any factorisation error up to δ_G/4. Growth beyond m fails the check and leaves the count
uncertified (never wrong). Everything stays on the device: no host sync.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from effrank_fast.ops.numerics import U64, gamma

MARGIN_GROWTH = 256.0
# the share of δ_G allotted to the factorisation at least (module docstring)
GRAM_ERROR_SHARE = 0.25


def ldl_margin(m: torch.Tensor, tau: torch.Tensor, gram_error: torch.Tensor | None = None) -> torch.Tensor:
    """m [E]: the backward error allotted to each end's factorisation (module docstring); at least
    ``gram_error``/4 (a 0-d δ_G) when given."""
    d = m.shape[0]
    g3d = gamma(3 * d)
    trace_abs = m.diagonal().double().abs().sum()
    growth = (MARGIN_GROWTH * g3d + U64) * (trace_abs + d * tau.abs())
    if gram_error is None:
        return growth
    return torch.maximum(growth, GRAM_ERROR_SHARE * gram_error.to(torch.float64))


@dataclass
class IntervalCertificate:
    """Counts at both ends of [τ_lo − a, τ_hi + a] and whether they prove the count (all [E])."""

    certified: torch.Tensor
    at_hi: torch.Tensor
    at_lo: torch.Tensor
    margin: torch.Tensor
    ends: object  # the _Factored outputs of the 2E factorisations (ends[:E] at τ_lo − a)


def certify_interval(
    m: torch.Tensor,
    tau_lo: torch.Tensor,
    tau_hi: torch.Tensor,
    gram_error: torch.Tensor,
    factor,
) -> IntervalCertificate:
    """Prove #{λ(M) > τ'} for all τ' ∈ [τ_lo, τ_hi] (each [E]) given ‖M̂ − M‖₂ ≤ ``gram_error``.

    ``factor(m, thresholds)`` returns the kernel outputs (counts, delta, scale attributes) for the
    thresholds [2E]; ``m`` is M̂ (any float dtype; only its lower triangle and diagonal are read
    here and by the kernel). Non-finite inputs are never certified.
    """
    e = tau_lo.shape[0]
    g = gram_error.to(torch.float64).reshape(())
    mid = 0.5 * (tau_lo + tau_hi)
    margin = ldl_margin(m, mid.abs() + 0.5 * (tau_hi - tau_lo).abs(), g)
    a = g + margin
    finite = torch.isfinite(a) & torch.isfinite(tau_lo) & torch.isfinite(tau_hi)
    a_safe = torch.where(finite, a, torch.zeros_like(a))
    lo = torch.where(finite, tau_lo - a_safe, torch.zeros_like(tau_lo))
    hi = torch.where(finite, tau_hi + a_safe, torch.zeros_like(tau_hi))
    ends = factor(m, torch.cat([lo, hi]))
    at_lo, at_hi = ends.counts[:e], ends.counts[e:]
    covered = (ends.delta_p[:e] <= margin) & (ends.delta_p[e:] <= margin)
    sane = torch.isfinite(ends.scale[:e]) & torch.isfinite(ends.scale[e:])
    certified = finite & covered & sane & (at_lo == at_hi)
    return IntervalCertificate(certified, at_hi, at_lo, torch.where(finite, a, torch.full_like(a, math.inf)), ends)
