"""A torchmetrics ``Metric`` of a layer's effective rank, with the Gram matrix as its summed state.

    metric = EffectiveRank(d=256, eps=[1e-2, 1e-3])
    for batch in loader:
        metric.update(features(batch))        # [N, d]
    metric.compute()                          # {"eps_rank@0.01": ..., "entropy_rank": ..., ...}

State (all float64, ``dist_reduce_fx="sum"``): G = Σ w φφᵀ [d, d], s = Σ w φ [d] and W = Σ w
(w = 1 without weights). Under DDP torchmetrics all-reduces these sums, so every rank computes
the measures of the global set of rows: d² + d + 1 numbers, whatever the number of rows.
``compute()`` forms M (centred: G − s sᵀ/W; ``mode="mean"``: divided by W) and returns the
certified ε-counts of :func:`effrank_fast.rank.eps_rank_result` (``eps_rank@ε`` and
``eps_rank_certified@ε``) and the σ-measures of :func:`effrank_fast.measures` on ``gram=M``.
M is summed in float64 from the features' own values, so its rounding (~N·2⁻⁵³ relative) is far
below any ε-gap a count could depend on; the certificate treats the given M as exact.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torchmetrics import Metric

from effrank_fast.monitor.engines import eps_label
from effrank_fast.ops import validation
from effrank_fast.rank import eps_rank_result, gram, measures


class EffectiveRank(Metric):
    """Effective ranks of features Φ [N, d] accumulated over batches (and ranks).

    Args:
        d: the number of features (neurons, channels).
        eps: ε of the ε-rank (one or several).
        relative: None (τ = ε), "max" (τ = ε·λ_max) or "trace" (τ = ε·tr M).
        mode: "mean" (M = G / W, W the number of rows without weights), "sum" (M = G) or
            "integral" (weights required at every update; M = G = Σ w φφᵀ).
        center: subtract the (weighted) mean of each feature over all rows.
        kwargs: torchmetrics ``Metric`` options (``sync_on_compute``, ``process_group``, ...).
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = True

    gram_sum: torch.Tensor
    first_moment: torch.Tensor
    weight_sum: torch.Tensor

    def __init__(
        self,
        d: int,
        eps: float | Sequence[float] = (1e-2, 1e-3, 1e-4),
        *,
        relative: str | None = None,
        mode: str = "mean",
        center: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not isinstance(d, int) or isinstance(d, bool) or d < 1:
            raise ValueError(f"d must be a positive int (the number of features), got {d!r}")
        if mode not in validation.MODES:
            raise ValueError(f"mode must be one of {validation.MODES}, got {mode!r}")
        self.d, self.mode, self.center = d, mode, bool(center)
        self.eps, _ = validation.check_eps(eps)
        self.relative = validation.check_relative(relative)
        f64 = torch.float64
        self.add_state("gram_sum", default=torch.zeros(d, d, dtype=f64), dist_reduce_fx="sum")
        self.add_state("first_moment", default=torch.zeros(d, dtype=f64), dist_reduce_fx="sum")
        self.add_state("weight_sum", default=torch.zeros((), dtype=f64), dist_reduce_fx="sum")

    def update(self, phi: torch.Tensor, weights: torch.Tensor | None = None) -> None:
        """Add rows ``phi`` [N, d] (and their weights [N]) to the sums."""
        if not isinstance(phi, torch.Tensor) or phi.dim() != 2 or phi.shape[1] != self.d:
            shape = tuple(phi.shape) if isinstance(phi, torch.Tensor) else type(phi).__name__
            raise ValueError(
                f"phi must be [N, {self.d}] (rows = samples, columns = features), got {shape}; for "
                "[B, C, H, W] convolution features with channels as features pass phi.movedim(1, -1).flatten(0, -2), "
                "for [B, T, d] sequences phi.flatten(0, -2)"
            )
        validation.check_mode(self.mode, weights)
        if weights is not None:
            validation.check_weights(weights, phi.shape[0], phi.device, check_values=True)
        x = phi.detach().to(torch.float64)
        w = torch.ones(x.shape[0], dtype=torch.float64, device=x.device) if weights is None else weights.double()
        # mode "sum" with explicit weights: Σ w φφᵀ, formed by the package's Gram in float64
        self.gram_sum += gram(x, w, mode="sum", acc_dtype=torch.float64, check=False)
        self.first_moment += w @ x
        self.weight_sum += w.sum()

    def matrix(self) -> torch.Tensor:
        """M [d, d] of the rows seen so far (centred and normalised as configured)."""
        m = self.gram_sum
        if self.center:
            m = m - torch.outer(self.first_moment, self.first_moment) / self.weight_sum.clamp_min(1e-300)
            m = 0.5 * (m + m.T)
        if self.mode == "mean":
            m = m / self.weight_sum.clamp_min(1e-300)
        return m

    def compute(self) -> dict[str, torch.Tensor]:
        """``eps_rank@ε`` (int64), ``eps_rank_certified@ε`` (bool) and the σ-measures (float64)."""
        m = self.matrix()
        res = eps_rank_result(gram=m, eps=self.eps, relative=self.relative)
        meas = measures(gram=m, eps=self.eps, relative=self.relative)
        out: dict[str, torch.Tensor] = {}
        for i, e in enumerate(self.eps.tolist()):
            out[f"eps_rank@{eps_label(e)}"] = res.counts[i]
            out[f"eps_rank_certified@{eps_label(e)}"] = res.certified[i]
        for name in ("entropy_rank", "stable_rank", "participation_ratio", "lambda_max", "trace"):
            out[name] = getattr(meas, name)
        return out
