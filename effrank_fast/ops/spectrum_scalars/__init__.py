"""Every scalar measure of a spectrum in one pass: ``spectrum_scalars(lam, floor, error_fro)``.

What the rank monitor takes from each solved layer every measured step: the entropy rank, stable
rank, participation ratio, λ_max, trace and the entropy rank's sensitivity to the matrix's
rounding, all under the noise-floor rule of :mod:`effrank_fast.rank.formulas`. Through PyTorch
that is ~50 small ops per call (≈ 0.1–0.2 ms on a CPU whatever the size, the monitor's largest
share of small-op time at the demo's widths); the native CPU kernel is one pass per spectrum.

Backends (the vocabulary of :mod:`effrank_fast.ops.backends`): ``native`` (C++, CPU, float64)
and ``torch`` (:func:`spectrum_scalars_ref`, any device, differentiable). ``auto`` takes native
where it runs and nothing needs a gradient, else torch. Math, files and tests: README.md here.
"""

from __future__ import annotations

import torch

from effrank_fast.ops import native
from effrank_fast.ops.backends import BackendUnavailableError, canonical_name
from effrank_fast.ops.spectrum_scalars.reference import COLUMNS, spectrum_scalars_ref

__all__ = ["BACKENDS", "COLUMNS", "spectrum_scalars", "spectrum_scalars_ref", "why_not_native"]

BACKENDS = ("native", "torch")


def why_not_native(lam: torch.Tensor, *others: torch.Tensor) -> str | None:
    """Why the native kernel does not take these inputs, or None."""
    if lam.dtype != torch.float64:
        return f"lam is {lam.dtype}; the native kernel takes float64 spectra"
    if lam.dim() == 0 or lam.shape[-1] == 0:
        return "lam has no eigenvalues"
    if torch.is_grad_enabled() and any(t.requires_grad for t in (lam, *others)):
        return "the native kernel has no backward (an input requires grad)"
    return native.kernel_missing_reason("spectrum_scalars", lam.device)


def spectrum_scalars(
    lam: torch.Tensor, floor: torch.Tensor | float, error_fro: torch.Tensor | float, *, backend: str = "auto"
) -> torch.Tensor:
    """[..., 6] laid out as :data:`COLUMNS`, float64, on ``lam``'s device (no host sync).

    Args:
        lam: spectra [..., d], float64, each descending (λ_max first).
        floor: the noise floor δ of each spectrum, [...] or a scalar: eigenvalues ≤ δ count as 0.
        error_fro: the estimate of ‖M̂ − M‖_F each spectrum's matrix carries, [...] or a scalar.
        backend: "auto", "native" or "torch".
    """
    name = canonical_name("spectrum_scalars", backend, BACKENDS)
    batch = lam.shape[:-1]
    floor_t = torch.as_tensor(floor, dtype=torch.float64, device=lam.device).expand(batch)
    error_t = torch.as_tensor(error_fro, dtype=torch.float64, device=lam.device).expand(batch)
    why = why_not_native(lam, floor_t, error_t) if name in ("auto", "native") else "backend='torch'"
    if why is None:
        return torch.ops.effrank_fast.spectrum_scalars(lam.contiguous(), floor_t.contiguous(), error_t.contiguous())
    if name == "native":
        raise BackendUnavailableError(f"backend='native' for spectrum_scalars: {why}")
    return spectrum_scalars_ref(lam, floor_t, error_t)
