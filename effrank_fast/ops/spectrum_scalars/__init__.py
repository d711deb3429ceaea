"""Every scalar measure of a spectrum in one native pass: the kernel behind
:func:`effrank_fast.rank.formulas.spectrum_scalars`.

What the rank monitor takes from each solved layer every measured step: the entropy rank, stable
rank, participation ratio, λ_max, trace and the entropy rank's sensitivity to the matrix's
rounding, all under the noise-floor rule of :mod:`effrank_fast.rank.formulas`. Through PyTorch
that is ~50 small ops per call (≈ 0.1–0.2 ms on a CPU whatever the size); the C++ kernel is one pass
per spectrum. Its reference is the PyTorch path of ``formulas.spectrum_scalars`` (``backend="torch"``),
built from the same functions as the per-measure formulas. Math, files and tests: README.md here.
"""

from __future__ import annotations

import torch

from effrank_fast.ops import native
from effrank_fast.ops.backends import BackendUnavailableError

__all__ = ["COLUMNS", "spectrum_scalars_native", "why_not_native"]

# The columns of spectrum_scalars, in order.
COLUMNS = ("entropy_rank", "stable_rank", "participation_ratio", "lambda_max", "trace", "entropy_rank_err")


def why_not_native(lam: torch.Tensor, *others: torch.Tensor) -> str | None:
    """Why the native kernel does not take these inputs, or None."""
    if lam.dtype != torch.float64:
        return f"lam is {lam.dtype}; the native kernel takes float64 spectra"
    if lam.dim() == 0 or lam.shape[-1] == 0:
        return "lam has no eigenvalues"
    if torch.is_grad_enabled() and any(t.requires_grad for t in (lam, *others)):
        return "the native kernel has no backward (an input requires grad)"
    return native.kernel_missing_reason("spectrum_scalars", lam.device)


def spectrum_scalars_native(lam: torch.Tensor, floor: torch.Tensor, error_fro: torch.Tensor) -> torch.Tensor:
    """[..., 6] (:data:`COLUMNS`) of ``lam`` [..., d] float64 descending, ``floor`` and ``error_fro``
    [...] float64; :class:`BackendUnavailableError` naming the reason where the kernel does not run."""
    why = why_not_native(lam, floor, error_fro)
    if why is not None:
        raise BackendUnavailableError(f"spectrum_scalars: backend='native': {why}")
    return torch.ops.effrank_fast.spectrum_scalars(lam.contiguous(), floor.contiguous(), error_fro.contiguous())
