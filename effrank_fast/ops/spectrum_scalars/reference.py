"""Pure-PyTorch ``spectrum_scalars``: the definition, the fallback and the benchmark baseline."""

from __future__ import annotations

import torch

# The columns of spectrum_scalars, in order.
COLUMNS = ("entropy_rank", "stable_rank", "participation_ratio", "lambda_max", "trace", "entropy_rank_err")


def _entropy_rank(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(exp(−Σ p log p) [..., 1], p, log p (0 where p = 0), Σx or 1) of x ≥ 0 [..., d], p = x/Σx."""
    total = x.sum(-1, keepdim=True)
    positive = total > 0
    s = torch.where(positive, total, 1.0)
    p = x / s
    log_p = torch.where(p > 0, p, 1.0).log()
    h = -(p * log_p).sum(-1, keepdim=True)
    return torch.where(positive, h.exp(), 0.0), p, log_p, s


def spectrum_scalars_ref(lam: torch.Tensor, floor: torch.Tensor, error_fro: torch.Tensor) -> torch.Tensor:
    """[..., 6] (:data:`COLUMNS`) of the spectra ``lam`` [..., d] (float64, descending), with the
    noise floors ``floor`` [...] and the Frobenius error estimates ``error_fro`` [...]; README.md."""
    f = floor.to(lam)[..., None]
    live = lam > f
    root = torch.where(live, lam, 1.0).sqrt()
    x = torch.where(live, root, 0.0)
    erank, p, log_p, s = _entropy_rank(x)
    # ∂erank/∂λ in closed form (formulas.entropy_rank_gradient), for the first-order sensitivity
    a = torch.where(p > 0, -(log_p + 1), 0.0)
    grad = erank * (a - (a * p).sum(-1, keepdim=True)) / s * torch.where(live, 0.5 / root, 0.0)
    # every floored eigenvalue raised to δ (δ > 0; an unfloored one stays as it is)
    erank_raised = _entropy_rank(torch.where(live, root, torch.where(f > 0, f, 0.0).sqrt()))[0]
    err = grad.norm(dim=-1) * error_fro.to(lam) + (erank_raised - erank).squeeze(-1).abs()
    lam_max = lam.amax(-1)
    trace = lam.sum(-1)
    sq = lam.square().sum(-1)
    nonzero = lam_max > f.squeeze(-1)
    stable = torch.where(nonzero, trace / torch.where(nonzero, lam_max, 1.0), 0.0)
    pr_live = nonzero & (sq > 0)
    pr = torch.where(pr_live, trace.square() / torch.where(pr_live, sq, 1.0), 0.0)
    out = torch.stack([erank.squeeze(-1), stable, pr, lam[..., 0], trace, err], -1)
    return torch.where(trace.isnan()[..., None], float("nan"), out)
