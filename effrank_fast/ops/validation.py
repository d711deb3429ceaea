"""Input checks shared by every public entry point.

Each check raises ``ValueError`` or ``TypeError`` naming the offending argument. Checks that
must read tensor data (NaN/Inf, negative weights, symmetry) synchronise with the device; the
monitor's hot path calls the measures with ``check=False`` and records a device-side flag instead.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from effrank_fast.ops import native

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
MODES = ("mean", "sum", "integral")


def check_features(phi: object, name: str = "phi", *, check_finite: bool = True) -> torch.Tensor:
    """Check a feature matrix of shape [N, d]; return it unchanged."""
    if not isinstance(phi, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape [N, d], got {type(phi).__name__}")
    if phi.dim() != 2:
        raise ValueError(
            f"{name} must have shape [N, d] (2 dimensions), got {phi.dim()} dimensions "
            f"with shape {tuple(phi.shape)}; make it [N, d] with effrank_fast.feature_matrix({name}, axis=...): "
            "axis='channels' for convolution outputs [B, C, H, W], axis='last' for sequences [B, T, d]"
        )
    if phi.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float16, bfloat16, float32 or float64, got {phi.dtype}")
    n, d = phi.shape
    if n == 0:
        raise ValueError(f"{name} is an empty batch: N = 0 samples (shape {tuple(phi.shape)})")
    if d == 0:
        raise ValueError(f"{name} has no features: d = 0 (shape {tuple(phi.shape)})")
    if check_finite:
        bad = int((~torch.isfinite(phi)).sum())
        if bad:
            raise ValueError(f"{name} contains {bad} NaN/Inf entries (of {phi.numel()}); shape {tuple(phi.shape)}")
    return phi


def check_weights(weights: object, n: int, device: torch.device, *, check_values: bool = True) -> torch.Tensor:
    """Check quadrature weights of shape [N]: finite and non-negative."""
    if not isinstance(weights, torch.Tensor):
        raise TypeError(f"weights must be a torch.Tensor of shape [N], got {type(weights).__name__}")
    if weights.dim() != 1 or weights.shape[0] != n:
        raise ValueError(f"weights must have shape [N] = [{n}] to match phi, got {tuple(weights.shape)}")
    if not weights.is_floating_point():
        raise TypeError(f"weights must be a floating-point tensor, got {weights.dtype}")
    if weights.device != device:
        raise ValueError(f"weights is on {weights.device} but phi is on {device}")
    if check_values:
        bad = int((~torch.isfinite(weights)).sum())
        if bad:
            raise ValueError(f"weights contains {bad} NaN/Inf entries (of {n})")
        neg = int((weights < 0).sum())
        if neg:
            raise ValueError(f"weights must be non-negative; {neg} of {n} entries are negative")
    return weights


def check_mode(mode: object, weights: torch.Tensor | None) -> str:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if mode == "integral" and weights is None:
        raise ValueError(
            "mode='integral' needs weights= (quadrature weights that sum to |Ω|, e.g. from "
            "effrank_fast.quadrature.trapezoid)"
        )
    return str(mode)


def resolve_weights(weights: torch.Tensor | None, mode: str, n: int, device: torch.device) -> torch.Tensor | None:
    """The effective weight vector, or None for unit weights (mode 'sum').

    Conventions: given weights are used as they are, whatever the mode; without weights,
    mode 'mean' gives w = 1/N (the empirical measure) and 'sum' gives w = 1.
    """
    if weights is not None:
        return weights
    if mode == "mean":
        return torch.full((n,), 1.0 / n, dtype=torch.float64, device=device)
    return None


def check_gram(gram: object, name: str = "gram", *, check_values: bool = True) -> torch.Tensor:
    """Check a precomputed Gram matrix [d, d]: square, float, finite, symmetric."""
    if not isinstance(gram, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape [d, d], got {type(gram).__name__}")
    if gram.dim() != 2 or gram.shape[0] != gram.shape[1]:
        raise ValueError(f"{name} must be square [d, d], got shape {tuple(gram.shape)}")
    if gram.shape[0] == 0:
        raise ValueError(f"{name} is empty: d = 0")
    if gram.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be a floating-point tensor, got {gram.dtype}")
    if check_values:
        bad, asym, scale = _nonfinite_asymmetry_scale(gram)
        if bad:
            raise ValueError(f"{name} contains {bad} NaN/Inf entries")
        # fp32 Grams mirrored from one triangle are exactly symmetric; accumulation in another
        # order differs by a few ulps of the largest entry.
        tol = 64 * torch.finfo(gram.dtype).eps * max(scale, 1e-300)
        if asym > tol:
            raise ValueError(
                f"{name} is not symmetric: max |M - Mᵀ| = {asym:.3e} exceeds {tol:.3e} "
                f"(64 ulps of max |M| = {scale:.3e})"
            )
    return gram


def _nonfinite_asymmetry_scale(gram: torch.Tensor) -> tuple[int, float, float]:
    """(#non-finite entries, max |M − Mᵀ|, max |M|): one pass in C++ on the CPU, else torch."""
    if gram.device.type == "cpu" and native.kernel_missing_reason("gram_check", gram.device) is None:
        bad, asym, scale = torch.ops.effrank_fast.gram_check(gram.detach())
        return int(bad), float(asym), float(scale)
    g = gram.detach().double()
    bad = int((~torch.isfinite(g)).sum())
    if bad:
        return bad, math.nan, math.nan
    return 0, float((g - g.T).abs().max()), float(g.abs().max())


def check_eps(eps: object) -> tuple[torch.Tensor, bool]:
    """ε as a float64 1-D CPU tensor, and whether the caller passed a scalar.

    Numbers and lists are checked in plain Python (so ``torch.compile`` can trace a call with a
    constant ε); a tensor ε is read once (a host sync when it lives on a GPU).
    """
    if eps is None:
        raise ValueError("eps is required: the threshold(s) ε > 0")
    if isinstance(eps, torch.Tensor):
        if eps.dim() > 1:
            raise ValueError(f"eps must be a scalar, a list or a 1-D tensor, got shape {tuple(eps.shape)}")
        scalar = eps.dim() == 0
        values = [float(v) for v in eps.detach().double().cpu().reshape(-1).tolist()]
    elif isinstance(eps, (int, float)) and not isinstance(eps, bool):
        scalar, values = True, [float(eps)]
    elif isinstance(eps, Sequence) and not isinstance(eps, str):
        scalar = False
        try:
            values = [float(e) for e in eps]
        except (TypeError, ValueError) as exc:
            raise TypeError(f"eps must contain numbers, got {eps!r}") from exc
    else:
        raise TypeError(f"eps must be a number, a list of numbers or a tensor, got {type(eps).__name__}")
    if not values:
        raise ValueError("eps is empty; give at least one threshold")
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"eps must be finite, got {values}")
    if not all(v > 0 for v in values):
        raise ValueError(f"eps must be > 0, got {values}")
    return torch.tensor(values, dtype=torch.float64), scalar


def check_relative(relative: object) -> str | None:
    if relative is None:
        return None
    if relative not in ("max", "trace"):
        raise ValueError(f"relative must be None, 'max' or 'trace', got {relative!r}")
    return str(relative)
