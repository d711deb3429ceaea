"""When the inertia count beats an eigensolver: the cost model behind ``method="auto"``.

An ε-count by inertia costs one float64 LDLᵀ (d³/3 flops) per threshold end it factors; an
``eigh`` count costs one float64 eigvalsh (≈ 4/3·d³ plus a memory-bound tridiagonalisation) for any
number of thresholds. :data:`INERTIA_BUDGET` says how many factorisations cost less than one
eigvalsh, by device and size; :func:`inertia_factorisations` how many a call needs. The model and
its measurements are explained in docs/inertia.md ("Cost model").
"""

from __future__ import annotations

import torch

from effrank_fast.ops import native
from effrank_fast.ops.backends import BackendUnavailableError, constant_result

__all__ = [
    "COUNT_METHODS",
    "INERTIA_BUDGET",
    "inertia_budget",
    "inertia_factorisations",
    "inertia_why_not",
    "select_count_method",
]

COUNT_METHODS = ("eigh", "inertia")

# ((minimum d, factorisations), ...): the last row whose d ≤ dim applies.
# - cpu: measured on the 2-core Zen 5 EPYC of CI (torch 2.13, 2 threads, the trailing updates
#   through MKL's per-ISA AVX-512 dgemm; benchmarks/RESULTS.md "The CPU kernels at AVX-512 width"):
#   k thresholds of the op against one float64 eigvalsh break even at k ≈ 8 for d = 64…2048
#   (d = 128: 6; 1024: 12; 2048: 8). The rows keep ≥ 1.4× below that; where torch's addmm serves
#   (EFFRANK_FAST_CPU_GEMM=blas, or no per-ISA kernel) a factorisation costs up to ~1.4× more, so
#   the budget overshoots there by at most that. Below d = 64 one spectrum serves all thresholds.
# - cuda: PROVISIONAL, not yet measured with this kernel. From H100 measurements of an unfused
#   Python prototype of the same algorithm (eigvalsh fp64 / LDLᵀ fp64 ≈ 3 at d = 2048, 3.6–6.5 at
#   4096, 10 at 8192 and 16384; docs/inertia.md), which the fused kernel should only improve on;
#   below 2048 one factorisation (a few dozen launches) against cuSOLVER syevd's millisecond floor.
#   Re-derive from benchmarks/bench_inertia.py on the GPU.
INERTIA_BUDGET: dict[str, tuple[tuple[int, int], ...]] = {
    "cpu": ((1, 0), (64, 2), (128, 4), (256, 5), (512, 6), (1024, 7), (2048, 6)),
    "cuda": ((1, 1), (2048, 2), (4096, 4), (8192, 8)),
}


def inertia_why_not(device: torch.device | str) -> str | None:
    """None when the native inertia kernel runs on ``device``, else why not."""
    return native.kernel_missing_reason("inertia", device)


def inertia_factorisations(
    n_thresholds: int, relative: str | None, certify: bool = False, gram_error: bool = False
) -> int:
    """Factorisations an inertia ε-count costs.

    Without ``gram_error`` (M taken as exact): one per threshold, three when ``certify`` (as for a
    float64 M: ops/inertia); ε·λ_max costs both ends of the λ_max bracket per ε, one to prove the
    bracket and about one more for the Lanczos steps. With ``gram_error`` (eps_rank: δ_G in the
    certificate, ops/inertia/certificate.py): two per threshold, the ends τ ± (δ_G + m), for an
    absolute ε and for ε times the λ_max bracket alike, plus the bracket's two for ``"max"``.
    """
    if gram_error:
        return 2 * n_thresholds + (2 if relative == "max" else 0)
    per = 3 if certify else 1
    return 2 * per * n_thresholds + 2 if relative == "max" else per * n_thresholds


def inertia_budget(device: torch.device, dim: int) -> int:
    """Factorisations that cost less than one float64 eigvalsh of a [dim, dim] matrix on ``device``."""
    budget = 0
    for min_dim, factorisations in INERTIA_BUDGET.get(device.type, ()):
        if dim >= min_dim:
            budget = factorisations
    return budget


@constant_result
def select_count_method(
    method: str,
    device: torch.device,
    n_thresholds: int,
    gram_backend: str,
    dim: int | None = None,
    relative: str | None = None,
    dtype: torch.dtype | None = None,
    gram_error: bool = True,
) -> str:
    """``eigh`` or ``inertia`` for an ε-count.

    ``auto`` takes inertia when the native kernel exists, the torch backend was not forced, and the
    factorisations it needs (:func:`inertia_factorisations`) cost less than one eigvalsh on this
    device at this size (:data:`INERTIA_BUDGET`; without ``dim``: at most 3 thresholds). With
    ``gram_error`` (eps_rank's certificate, the default) two per threshold; without it a float64
    M (``dtype``) is certified, three factorisations per threshold. Both are exact; eigvalsh serves
    any number of thresholds from one spectrum, the inertia count pays d³/3 per threshold but no
    tridiagonalisation.
    """
    if method not in ("auto", *COUNT_METHODS):
        raise ValueError(f"method must be 'auto', 'eigh' or 'inertia', got {method!r}")
    if method == "eigh":
        return "eigh"
    reason = inertia_why_not(device)
    if method == "inertia":
        if reason is not None:
            raise BackendUnavailableError(f"method='inertia' cannot run on {device.type}: {reason}")
        return "inertia"
    if reason is not None or gram_backend == "torch":
        return "eigh"
    needed = inertia_factorisations(n_thresholds, relative, certify=dtype == torch.float64, gram_error=gram_error)
    budget = 3 if dim is None else inertia_budget(device, dim)
    return "inertia" if needed <= budget else "eigh"
