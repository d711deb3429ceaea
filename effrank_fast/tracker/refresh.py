"""The exact step of the tracker: a float64 eigh of M gives every field exactly (``refresh_every``)."""

from __future__ import annotations

import torch

from effrank_fast.rank import formulas
from effrank_fast.tracker.result import TrackPath, TrackResult
from effrank_fast.tracker.slq import entropy_rank_terms, erank_from_terms

__all__ = ["exact_step"]


def exact_step(
    gram: torch.Tensor,
    eps: torch.Tensor,
    relative: str | None,
    k: int,
    q: int,
    trace: torch.Tensor,
    fro_sq: torch.Tensor,
    step: int,
    dtype: torch.dtype,
    gram_error: torch.Tensor | None = None,
) -> tuple[TrackResult, torch.Tensor]:
    """(the exact TrackResult, the top-q eigenvectors [d, q] in ``dtype`` to re-seed the basis).

    ``torch.linalg.eigh`` reads its error flag back to the host on CUDA: a refresh step syncs.
    A non-finite M is decomposed as 0 and reported UNRESOLVED with NaN values; with ``gram_error``
    δ_G the counts are bracketed by #{λ > τ ± δ_G} (EIGH where they agree, else UNRESOLVED).
    """
    finite = torch.isfinite(fro_sq)
    if gram_error is not None:
        finite = finite & torch.isfinite(gram_error)
    m = torch.where(finite, gram.double(), torch.zeros((), dtype=torch.float64, device=gram.device))
    lam, vec = torch.linalg.eigh(m)
    lam, vec = lam.flip(0), vec.flip(1)
    basis = vec[:, :q].to(dtype)
    k = min(k, q)
    resid = torch.linalg.vector_norm(m @ vec[:, :k] - vec[:, :k] * lam[:k], dim=0)
    tau = formulas.thresholds_for(eps, relative, lam[0], lam.sum())
    counts = formulas.eps_counts(lam, tau)
    g = torch.zeros((), dtype=torch.float64, device=gram.device) if gram_error is None else gram_error
    lower, upper = formulas.eps_counts(lam, tau + g), formulas.eps_counts(lam, tau - g)
    code = torch.where((lower == upper) & finite, int(TrackPath.EIGH), int(TrackPath.UNRESOLVED))
    nan = torch.full((), float("nan"), dtype=torch.float64, device=gram.device)
    lam = torch.where(finite, lam, nan)
    zero = torch.zeros((), dtype=torch.float64, device=gram.device)
    result = TrackResult(
        eigenvalues=lam[:k],
        eigenvectors=basis[:, :k],
        residuals=resid,
        eps=eps,
        relative=relative,
        thresholds=tau,
        eps_rank=counts,
        eps_rank_lower=lower,
        eps_rank_upper=upper,
        path=code,
        lambda_max=lam[0] - g,
        lambda_max_upper=lam[0] + g,
        trace=trace,
        fro_sq=fro_sq,
        stable_rank=formulas.stable_rank_from_eigenvalues(lam),
        participation_ratio=formulas.participation_ratio_from_moments(trace, fro_sq),
        entropy_rank=erank_from_terms(*entropy_rank_terms(lam)),
        entropy_rank_err=zero,
        margin=zero,
        accepted=finite,
        iterations=0,
        restarted=False,
        refreshed=True,
        k=k,
        step=step,
    )
    return result, basis
