"""Floating-point constants and error factors shared by every op and measure (one home).

- :func:`unit_roundoff`: u = 2^-p of a storage dtype (half its machine epsilon): every correctly
  rounded operation on such numbers errs by a factor (1 + δ), |δ| ≤ u.
- :func:`matmul_unit_roundoff`: u of the arithmetic a float32 *matrix product* uses under PyTorch's
  current matmul precision (TF32 → 2^-11, bf16 passes → 2^-8). Used where the GEMMs run through
  ``torch.matmul`` with the user's global setting (the warm tracker); the Gram ops never use TF32.
- :func:`gamma`: γ_n = n·u / (1 − n·u), the bound on |Π(1 + δ_i)^{±1} − 1| over n roundings
  (Higham, *Accuracy and Stability of Numerical Algorithms*, Lemma 3.1); inf once n·u ≥ 1.
- ``U64`` = 2^-53, float64's unit roundoff.
"""

from __future__ import annotations

import math

import torch

__all__ = ["U64", "gamma", "matmul_unit_roundoff", "unit_roundoff"]

U64 = 2.0**-53


def unit_roundoff(dtype: torch.dtype) -> float:
    """u = ε_mach / 2 of a floating ``dtype`` (2^-24 float32, 2^-53 float64, 2^-8 bf16, 2^-11 fp16)."""
    return torch.finfo(dtype).eps / 2


def matmul_unit_roundoff(dtype: torch.dtype) -> float:
    """u of a ``torch.matmul`` in ``dtype`` under the current float32 matmul precision.

    float32 with ``torch.get_float32_matmul_precision() == "high"`` (or TF32 allowed on CUDA)
    multiplies in TF32 (u = 2^-11); ``"medium"`` in bf16 (2^-8); otherwise :func:`unit_roundoff`.
    """
    if dtype == torch.float32:
        precision = torch.get_float32_matmul_precision()
        if precision == "high" or torch.backends.cuda.matmul.allow_tf32:
            return 2.0**-11
        if precision == "medium":
            return 2.0**-8
    return unit_roundoff(dtype)


def gamma(n: float, u: float = U64) -> float:
    """γ_n = n·u / (1 − n·u) for n roundings of unit roundoff ``u``; inf when n·u ≥ 1."""
    nu = n * u
    return math.inf if nu >= 1 else nu / (1 - nu)
