"""Input → matrix for every measure: validation, weights, the Gram (or the N×N kernel) and its spectrum.

Shared by :mod:`effrank_fast.rank` (gram, eigenvalues, eps_rank) and
:mod:`effrank_fast.rank.spectrum` (entropy rank, stable rank, participation ratio, measures).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from effrank_fast.ops import backends, validation
from effrank_fast.ops.gram import compute_gram, default_acc_dtype, weighted_mean
from effrank_fast.ops.gram.error import gram_error_bound

# ---------------------------------------------------------------------------- activations → [N, d]
# The one home of the feature-axis rule, shared by the functional API (``feature_matrix``) and
# the monitor: the feature axis holds the neurons, every other axis indexes samples.
AXIS_NAMES = {"channels": 1, "last": -1}


def feature_axis(axis: object, ndim: int, name: str = "axis") -> int:
    """``axis`` (an int, "channels" = 1 or "last" = -1) as a non-negative dimension of an ``ndim``-D tensor."""
    if isinstance(axis, str):
        if axis not in AXIS_NAMES:
            raise ValueError(f"{name} must be an int, 'channels' or 'last', got {axis!r}")
        axis = AXIS_NAMES[axis]
    if not isinstance(axis, int) or isinstance(axis, bool):
        raise TypeError(f"{name} must be an int, 'channels' or 'last', got {type(axis).__name__}")
    if not -ndim <= axis < ndim:
        raise ValueError(f"{name}={axis} is out of range for an activation with {ndim} dimensions")
    return axis % ndim


def flatten_features(x: torch.Tensor, axis: int) -> torch.Tensor:
    """x [..., d at ``axis``, ...] → Φ [N, d]: ``axis`` becomes the columns, the other axes (in
    order) the rows. [B, C, H, W] with axis=1 gives [B·H·W, C]; [B, T, d] with axis=2 gives [B·T, d]."""
    if x.dim() == 1:
        return x.unsqueeze(1)
    if axis == x.dim() - 1:
        return x.reshape(-1, x.shape[-1])
    return x.movedim(axis, -1).reshape(-1, x.shape[axis])


def mask_rows(mask: object, shape: torch.Size, axis: int, name: str = "mask") -> torch.Tensor | None:
    """The rows of ``flatten_features`` to keep, as a bool [N]; reads shapes only (no host sync).

    ``mask`` (bool or integer, nonzero = keep, e.g. an attention mask [B, T]) must have the shape of
    the activation without its feature axis, or a leading part of it ([B] keeps or drops whole
    samples). None when the rows are samples only (a pooled [B, d] under a [B, T] mask: no padding
    rows exist there).
    """
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"{name} must be a bool or integer tensor, got {type(mask).__name__}")
    if mask.is_floating_point() or mask.is_complex():
        raise TypeError(f"{name} must be a bool or integer tensor (nonzero = keep), got {mask.dtype}")
    rest = [s for i, s in enumerate(shape) if i != axis] if len(shape) > 1 else [shape[0]]
    k = mask.dim()
    if list(mask.shape) == rest[:k]:
        keep = mask.bool().reshape(*mask.shape, *([1] * (len(rest) - k))).expand(rest)
        return keep.reshape(-1)
    if k > len(rest) and list(mask.shape[: len(rest)]) == rest:
        return None
    raise ValueError(
        f"{name} of shape {tuple(mask.shape)} does not fit an activation of shape {tuple(shape)} with its "
        f"features on axis {axis}: it must have shape {tuple(rest)} or a leading part of it"
    )


def feature_matrix(x: torch.Tensor, axis: int | str | None = None, mask: torch.Tensor | None = None) -> torch.Tensor:
    """An activation of any shape as the feature matrix Φ [N, d] that the measures take.

    Args:
        x: the activation. [N, d] and [N] (one feature) need no ``axis``.
        axis: the feature (neuron) axis, required for 3 or more dimensions: ``"channels"`` (= 1) for
            convolution outputs [B, C, H, W] (→ [B·H·W, C]), ``"last"`` (= -1) for sequences
            [B, T, d] (→ [B·T, d]), or any int.
        mask: rows to keep (e.g. an attention mask [B, T], nonzero = real token), shaped as ``x``
            without its feature axis or a leading part of it. Selecting rows reads the mask (one host sync).

    Example:
        >>> phi = feature_matrix(torch.randn(8, 16, 5, 5), axis="channels")  # [200, 16]
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() == 0:
        raise ValueError("x must have at least one dimension (samples), got a 0-d tensor")
    if axis is None:
        if x.dim() > 2:
            raise ValueError(
                f"axis is required for an activation with {x.dim()} dimensions (shape {tuple(x.shape)}): "
                "axis='channels' for convolution outputs [B, C, ...], axis='last' for sequences [B, T, d]"
            )
        axis = x.dim() - 1
    ax = feature_axis(axis, x.dim())
    phi = flatten_features(x, ax)
    if mask is None:
        return phi
    keep = mask_rows(mask, x.shape, ax)
    return phi if keep is None else phi[keep.to(phi.device)]


@dataclass
class Spectral:
    """S: a symmetric matrix whose non-zero eigenvalues are those of M; ``dim`` = d.

    ``gram_error``: δ_G ≥ ‖Ŝ − S‖₂, the error made forming S from the given values (0-d float64
    on S's device, ``effrank_fast.ops.gram.error``), or None when S was given (``gram=``).
    ``acc_dtype``: the accumulation dtype S was formed in. ``recompute(acc_dtype)``: forms S again
    from the same features in another accumulation dtype (the promotion of ``eps_rank``), None for
    a given S.
    """

    matrix: torch.Tensor
    dim: int
    backend: str
    n: int | None
    gram_error: torch.Tensor | None = None
    acc_dtype: torch.dtype | None = None
    recompute: Callable[[torch.dtype], Spectral] | None = field(default=None, repr=False)


def _effective_weights(
    weights: torch.Tensor | None, mode: str, n: int, device: torch.device
) -> tuple[torch.Tensor | None, float | None, float | None]:
    """(per-row weights or None, a uniform weight applied after the sum or None, W = Σw or None).

    mode="mean" without weights sums the plain products and scales by 1/N once at the end: no
    per-row √w pass over Φ and one rounding per entry instead of three per factor.
    """
    if weights is None:
        return (None, 1.0 / n, 1.0) if mode == "mean" else (None, None, float(n))
    return validation.resolve_weights(weights, mode, n, device), None, None


def features_to_matrix(
    phi: torch.Tensor,
    weights: torch.Tensor | None,
    mode: str,
    center: bool,
    backend: str,
    acc_dtype: torch.dtype | None,
    check: bool,
    allow_kernel: bool = True,
    promote_overflow: bool = True,
) -> Spectral:
    """Validate, then form M [d, d] (or the N×N kernel when N < d) with its error bound δ_G.

    ``check=True`` validates the values without a separate pass over Φ: a NaN or Inf anywhere in
    column i makes M_ii non-finite (w ≥ 0), so one look at M's diagonal (one host sync) decides,
    and Φ is read again only to count the bad entries for the message. A finite Φ whose Gram
    overflows the accumulation dtype is formed again in float64 (``promote_overflow``; float32,
    bf16 and fp16 values then cannot overflow), else it is a ValueError naming ``phi``.
    """
    validation.check_features(phi, check_finite=False)
    n, d = phi.shape
    if weights is not None:
        validation.check_weights(weights, n, phi.device, check_values=check)
    validation.check_mode(mode, weights)
    if acc_dtype is None:
        acc_dtype = default_acc_dtype(phi.dtype)
    if acc_dtype not in (torch.float32, torch.float64):
        raise TypeError(f"acc_dtype must be torch.float32 or torch.float64, got {acc_dtype}")
    w, post_scale, total_weight = _effective_weights(weights, mode, n, phi.device)
    kernel = allow_kernel and n < d
    if kernel:  # the N×N kernel is cheap to scale by rows (N·d next to N²·d): keep w = 1/N there
        if post_scale is not None:
            w, post_scale = validation.resolve_weights(None, mode, n, phi.device), None
        m, used = kernel_matrix(phi, w, center, acc_dtype, backend)
    else:
        m, used = compute_gram(phi, w, center, acc_dtype, backend)
    if post_scale is not None:
        m = m * post_scale
    if check and not bool(torch.isfinite(m.diagonal()).all()):  # host sync (validation)
        validation.check_features(phi, check_finite=True)  # raises with the count of bad entries
        if acc_dtype == torch.float32 and promote_overflow:
            return features_to_matrix(phi, weights, mode, center, backend, torch.float64, check, allow_kernel)
        hint = "; pass acc_dtype=torch.float64" if acc_dtype == torch.float32 else "; rescale phi"
        raise ValueError(
            f"phi is finite but its {'kernel' if kernel else 'Gram'} matrix overflows {acc_dtype} "
            f"(max |phi| = {float(phi.abs().max()):.3e}, shape {tuple(phi.shape)}){hint}"
        )
    mean_sq = None
    if center:
        mu = weighted_mean(phi, w, acc_dtype).double()
        weight_sum = total_weight if total_weight is not None else w.double().sum()  # type: ignore[union-attr]
        mean_sq = weight_sum * mu.square().sum()
    delta = gram_error_bound(
        m.diagonal(),
        d if kernel else n,
        acc_dtype,
        input_dtype=phi.dtype,
        backend=used if used in ("torch", "native", "triton") else "torch",
        weighted=w is not None,
        centered=center,
        post_scale=post_scale,
        mean_sq_norm=mean_sq,
    )

    def recompute(acc: torch.dtype) -> Spectral:
        return features_to_matrix(phi, weights, mode, center, backend, acc, check, allow_kernel, promote_overflow)

    return Spectral(m, d, used, n, delta, acc_dtype, recompute)


def kernel_matrix(
    phi: torch.Tensor, w: torch.Tensor | None, center: bool, acc_dtype: torch.dtype, backend: str
) -> tuple[torch.Tensor, str]:
    """K = diag(√w)(Φ − 1μᵀ)(Φ − 1μᵀ)ᵀdiag(√w) [N, N] for N < d (w None: unit weights), and the
    backend that formed it."""
    name = backends.select_gram_backend(backend, phi.device, phi.dtype)
    if name == "triton":
        from effrank_fast.ops.gram.triton import kernel_triton

        return kernel_triton(phi, w, center, acc_dtype), name
    x = phi.to(acc_dtype)
    if center:
        x = x - weighted_mean(phi, w, acc_dtype)
    if w is not None:
        x = x * w.to(acc_dtype).sqrt().unsqueeze(1)
    k, _ = compute_gram(x.T.contiguous(), None, False, acc_dtype, name)
    return k, name


def prepare(
    phi: torch.Tensor | None,
    gram_: torch.Tensor | None,
    weights: torch.Tensor | None,
    mode: str,
    center: bool,
    backend: str,
    acc_dtype: torch.dtype | None,
    check: bool,
) -> Spectral:
    if gram_ is None:
        if phi is None:
            raise ValueError("give the features phi [N, d] or a precomputed gram= [d, d]")
        return features_to_matrix(phi, weights, mode, center, backend, acc_dtype, check)
    if phi is not None:
        raise ValueError("give either phi or gram=, not both")
    if weights is not None:
        raise ValueError("weights apply to phi; a precomputed gram= is already weighted")
    if center:
        raise ValueError("center=True applies to phi; center the features before forming gram=")
    validation.check_gram(gram_, check_values=check)
    backends.requested_backend(backend)  # validates the name even though no Gram is formed
    return Spectral(gram_, gram_.shape[0], "given", None, acc_dtype=gram_.dtype)


def eigenvalues_desc(sp: Spectral, solve_dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """All d eigenvalues of M, descending, float64 (zeros appended for the N×N kernel).

    ``solve_dtype``: float64 (default: backward error ~d·u₆₄·λ_max, negligible) or float32 for a
    float32 M (about half the time at d = 1024; backward error measured up to ~50·u₃₂·λ_max at
    d = 2048, so callers widen their noise floor by ``formulas.noise_floor(solve_dtype=...)``).
    A non-finite M gives NaN eigenvalues (never a ``LinAlgError``).
    """
    m = sp.matrix if solve_dtype == torch.float32 and sp.matrix.dtype == torch.float32 else sp.matrix.double()
    # NaN/Inf in M (check=False on non-finite data or negative weights) would make eigvalsh raise:
    # solve a zero matrix instead and report NaN eigenvalues, without a host sync
    finite = torch.isfinite(m).all()
    lam = torch.linalg.eigvalsh(torch.where(finite, m, torch.zeros_like(m))).double().flip(0)
    lam = torch.where(finite, lam, torch.full_like(lam, float("nan")))
    pad = sp.dim - lam.shape[0]
    if pad > 0:
        lam = torch.cat([lam, lam.new_zeros(pad)])
    return lam
