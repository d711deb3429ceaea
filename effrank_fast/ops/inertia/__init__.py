"""Exact ε-counts by Sylvester inertia of M − τI (float64 pivot-free blocked LDLᵀ).

The native kernel returns counts and diagnostics; this wrapper turns the diagnostics into a
reliability verdict and, when asked, falls back to ``eigvalsh`` for the thresholds it does not
trust. The fallback is recorded in :class:`InertiaResult`, never silent.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from effrank_fast.ops.inertia.reference import inertia_ref

__all__ = ["DEFAULT_BAND_REL", "DEFAULT_BLOCK", "InertiaResult", "inertia_count", "inertia_ref"]

DEFAULT_BLOCK = 64
# Factorisation error allowed relative to ‖M − τI‖_max: about the rounding of an fp32 Gram, so
# the LDLᵀ adds no error the Gram did not already carry.
DEFAULT_BAND_REL = 1e-7
_U64 = 2.0**-53


@dataclass
class InertiaResult:
    """ε-counts with the evidence behind them; every field is a device tensor of shape [E].

    Attributes:
        counts: #{λ > τ_e} (int64); from the LDLᵀ, or from eigvalsh where ``fell_back``.
        reliable: the LDLᵀ error bound d·u·growth·‖A‖ stayed within ``band_rel``·‖A‖.
        fell_back: the count was recomputed by eigvalsh because it was not reliable.
        min_pivot_rel, growth, band_counts: the kernel's diagnostics (see ``effrank_fast._ops``).
    """

    counts: torch.Tensor
    reliable: torch.Tensor
    fell_back: torch.Tensor
    min_pivot_rel: torch.Tensor
    growth: torch.Tensor
    band_counts: torch.Tensor


def inertia_count(
    gram: torch.Tensor,
    thresholds: torch.Tensor,
    *,
    band_rel: float = DEFAULT_BAND_REL,
    block_size: int = DEFAULT_BLOCK,
    fallback: bool = True,
) -> InertiaResult:
    """Counts #{λ(M) > τ_e} for thresholds τ [E] on M [d, d].

    With ``fallback=True`` the unreliable thresholds are recounted by a float64 eigvalsh; that
    decision reads one flag from the device (a host sync). With ``fallback=False`` nothing
    synchronises and ``reliable`` tells the caller which counts to trust.
    """
    d = gram.shape[0]
    thresholds = thresholds.to(device=gram.device, dtype=torch.float64)
    counts, min_piv, growth, band = torch.ops.effrank_fast.inertia(gram, thresholds, band_rel, block_size)
    reliable = torch.isfinite(growth) & (d * _U64 * growth <= band_rel)
    fell_back = torch.zeros_like(reliable)
    if fallback and not bool(reliable.all()):
        fell_back = ~reliable
        counts = torch.where(reliable, counts, inertia_ref(gram, thresholds))
    return InertiaResult(counts, reliable, fell_back, min_piv, growth, band)
