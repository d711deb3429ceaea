"""Symmetric eigen-decomposition by blocked parallel-order Jacobi, for small matrices.

Built for the Rayleigh–Ritz step of :class:`effrank_fast.SpectrumTracker`: the (k+p)×(k+p)
matrix VᵀMV is nearly diagonal when V is last step's eigenbasis, and Jacobi converges
quadratically from there (1–4 sweeps instead of ~10 from scratch), with high relative accuracy.
cuSOLVER's dense ``syevd`` is latency-bound at these sizes and ``torch.linalg.eigh`` reads its
error flag back to the host (a sync); the native kernels decide convergence on the device.

Backends (the shared vocabulary of :mod:`effrank_fast.ops.backends`): ``native`` (C++ on CPU; on
CUDA a cooperative multi-block kernel, or one block per matrix for a batch of small matrices),
``torch`` (pure PyTorch, :func:`jacobi_eigh_ref`: same rotations, fixed work; called ``ref`` before
0.2, still accepted with a ``DeprecationWarning``) and ``eigh`` (``torch.linalg.eigh``, another
algorithm; ``off`` = 0 and ``sweeps`` = 0). ``auto`` picks native when the kernel exists for the
device, else ``eigh``. Math, files and tests: README.md in this folder.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from effrank_fast.ops import native
from effrank_fast.ops.backends import BackendUnavailableError, canonical_name
from effrank_fast.ops.jacobi_eigh.reference import jacobi_eigh_ref

__all__ = ["DEFAULT_MAX_SWEEPS", "JacobiResult", "default_tol", "jacobi_eigh", "jacobi_eigh_ref"]

DEFAULT_MAX_SWEEPS = 30
BACKENDS = ("native", "torch", "eigh")


class JacobiResult(NamedTuple):
    """eigenvalues [..., n] ascending; eigenvectors [..., n, n] (columns); off [...] float64 =
    ‖VᵀAV − diag‖_F / ‖A‖_F at exit (so |λ̂_i − λ_i| ≤ off·‖A‖_F by Weyl); sweeps [...] int64."""

    eigenvalues: torch.Tensor
    eigenvectors: torch.Tensor
    off: torch.Tensor
    sweeps: torch.Tensor


def default_tol(n: int, dtype: torch.dtype) -> float:
    """Stop when off(A) ≤ n·u·‖A‖_F: the rounding floor of a sweep is ~√n·u·‖A‖_F."""
    return max(n, 8) * torch.finfo(dtype).eps


def why_not_native(device: torch.device) -> str | None:
    return native.kernel_missing_reason("jacobi_eigh", device)


def jacobi_eigh(
    a: torch.Tensor,
    *,
    max_sweeps: int = DEFAULT_MAX_SWEEPS,
    tol: float | None = None,
    backend: str = "auto",
) -> JacobiResult:
    """Eigenvalues (ascending) and eigenvectors of the symmetric part of ``a`` [..., n, n].

    Args:
        a: float32 or float64, [..., n, n]; (A + Aᵀ)/2 is decomposed.
        max_sweeps: at most this many sweeps (a warm, nearly diagonal input needs 1–4).
        tol: stop once ‖A − diag A‖_F ≤ tol·‖A‖_F; default ``max(n, 8)·u``.
        backend: "auto", "native", "torch" or "eigh" (see the module docstring).

    Example:
        >>> w, v, off, sweeps = jacobi_eigh(torch.randn(64, 64, dtype=torch.float64))
    """
    if not isinstance(a, torch.Tensor):
        raise TypeError(f"a must be a torch.Tensor [..., n, n], got {type(a).__name__}")
    if a.dim() < 2 or a.shape[-1] != a.shape[-2]:
        raise ValueError(f"a must be [..., n, n] (square in its last two dimensions), got {tuple(a.shape)}")
    if a.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"a must be float32 or float64, got {a.dtype}")
    if not isinstance(max_sweeps, int) or isinstance(max_sweeps, bool) or max_sweeps < 0:
        raise ValueError(f"max_sweeps must be a non-negative int, got {max_sweeps!r}")
    if tol is None:
        tol = default_tol(a.shape[-1], a.dtype)
    if not tol >= 0:
        raise ValueError(f"tol must be >= 0, got {tol!r}")
    backend = canonical_name("jacobi_eigh", backend, BACKENDS)
    if backend == "auto":
        backend = "native" if why_not_native(a.device) is None else "eigh"
    if backend == "native":
        reason = why_not_native(a.device)
        if reason is not None:
            raise BackendUnavailableError(f"jacobi_eigh backend='native' cannot run on {a.device.type}: {reason}")
        return JacobiResult(*torch.ops.effrank_fast.jacobi_eigh(a, max_sweeps, float(tol)))
    if backend == "torch":
        return JacobiResult(*jacobi_eigh_ref(a, max_sweeps, float(tol)))
    w, v = torch.linalg.eigh((a + a.mT) / 2)
    batch = a.shape[:-2]
    off = torch.zeros(batch, dtype=torch.float64, device=a.device)
    return JacobiResult(w, v, off, torch.zeros(batch, dtype=torch.int64, device=a.device))
