"""The exact engine's row of each of L solved spectra in one native pass: ``spectrum_rows``.

After one batched ``eigvalsh`` of L small matrices, the rank monitor's exact engine takes, per
layer, the noise floor and the Frobenius error estimate (:mod:`effrank_fast.rank.formulas`), the
six scalar measures (:mod:`effrank_fast.ops.spectrum_scalars`), the certified ε-counts of the eigh
pass with their proven bounds (:func:`effrank_fast.rank.certified.eigh_certificate`) and the top
eigenvalues: ~75 small PyTorch ops a step, ≈ 0.2 ms on a CPU at the staircase demo's 3 × 64, about
its eigensolve's time again. The C++ kernel does the same arithmetic in one pass.

The reference is that Python path itself (``ExactEngine.record_many`` without the kernel, composed of
the functions named above, the homes of the rule and the certificate); ``tests/test_spectrum_rows.py``
holds the kernel to it. CPU only; :func:`why_not_native` says why it does not run.
"""

from __future__ import annotations

import torch

from effrank_fast.ops import native
from effrank_fast.ops.backends import BackendUnavailableError

__all__ = ["RELATIVE_CODES", "spectrum_rows", "why_not_native"]

RELATIVE_CODES = {None: 0, "max": 1, "trace": 2}


def why_not_native(matrices: torch.Tensor) -> str | None:
    """Why the kernel does not take these matrices, or None."""
    if matrices.dtype not in (torch.float32, torch.float64):
        return f"matrices are {matrices.dtype}; the kernel takes float32 or float64"
    if torch.is_grad_enabled() and matrices.requires_grad:
        return "the kernel has no backward (matrices require grad)"
    return native.kernel_missing_reason("spectrum_rows", matrices.device)


def spectrum_rows(
    matrices: torch.Tensor,
    lam: torch.Tensor | None,
    gram_error: torch.Tensor,
    eps: torch.Tensor,
    relative: str | None,
    dim: int,
    acc_unit_roundoff: float,
    topk: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows [L, 4E + 7 + topk] float64, λ [L, dim] descending float64); no host sync.

    Args:
        matrices: the L solved matrices [L, n, n] (float32 or float64; only their diagonals are read).
        lam: their eigenvalues [L, n] ascending, float64 (``torch.linalg.eigvalsh``), or None: the
            kernel solves them, one LAPACK ``eigvalsh`` per matrix spread over the threads (the
            same routine as torch's batched call, which solves them one after another).
        gram_error: δ_G of each [L], float64.
        eps: ε [E], float64, in the matrices' units.
        relative: None, "max" or "trace".
        dim: the measured dimension (≥ n: the N×N kernel of a d-wide layer has d − n zero eigenvalues).
        acc_unit_roundoff: u of the dtype the matrices were accumulated in (the noise floor's).
        topk: how many of the largest eigenvalues the row carries (NaN past ``dim``).

    Row layout: counts, certified (0/1), lower, upper bounds (E each); entropy rank, stable rank,
    participation ratio, λ_max, trace, entropy_rank_err; spectrum_solved (1); λ_1..λ_topk.
    Raises :class:`BackendUnavailableError` where the kernel does not run (the caller takes the
    Python path).
    """
    why = why_not_native(matrices)
    if why is not None:
        raise BackendUnavailableError(f"spectrum_rows: {why}")
    solved = lam if lam is not None else torch.empty(0, dtype=torch.float64, device=matrices.device)
    return torch.ops.effrank_fast.spectrum_rows(
        matrices.detach(), solved, gram_error, eps, RELATIVE_CODES[relative], dim, float(acc_unit_roundoff), topk
    )
