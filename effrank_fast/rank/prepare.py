"""Input → matrix for every measure: validation, weights, the Gram (or the N×N kernel) and its spectrum.

Shared by :mod:`effrank_fast.rank` (gram, eigenvalues, eps_rank) and
:mod:`effrank_fast.rank.spectrum` (entropy rank, stable rank, participation ratio, measures).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from effrank_fast.ops import backends, validation
from effrank_fast.ops.gram import compute_gram, compute_grams, default_acc_dtype, weighted_mean
from effrank_fast.ops.gram.error import KINDS, gram_error
from effrank_fast.ops.inertia.lanczos import lambda_max_bounds

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
class BoundedGram:
    """The matrix S whose spectrum is measured, with its formation-error bound: a symmetric [dim, dim]
    matrix whose non-zero eigenvalues are those of M (d × d, or the N × N kernel when N < d).

    ``gram_error``: δ_G ≥ ‖Ŝ − S‖₂, the error made forming S from the given values (0-d float64
    on S's device, ``effrank_fast.ops.gram.error``), or None when S was given (``gram=``).
    ``acc_dtype``: the accumulation dtype S was formed in. ``recompute(acc_dtype)``: forms S again
    from the same features in another accumulation dtype (the promotion of ``eps_rank``), None for
    a given S.

    ``scale``: ``matrix`` and ``gram_error`` are ``scale``·(the matrix of the given values), scale
    a power of 4 (Φ·2^k, exact). Features or a ``gram=`` so small or large that their Gram would
    underflow or overflow (or its error bound would) are formed at a safe scale (:func:`safe_scale`);
    ε-counts are scale-free once τ is scaled too, and the σ-measures are scale-free outright.
    Values reported to the user (eigenvalues, τ, δ_G) are divided by it. ``certificate``: the kind
    of ``gram_error`` (ops/gram/error.py ``KINDS``), None for a given S.
    """

    matrix: torch.Tensor
    dim: int
    backend: str
    n: int | None
    gram_error: torch.Tensor | None = None
    acc_dtype: torch.dtype | None = None
    recompute: Callable[[torch.dtype], BoundedGram] | None = field(default=None, repr=False)
    scale: float = 1.0
    certificate: str | None = None


# The largest diagonal entry of a formed Gram outside which it is formed again at scale ~1: inside,
# no product or partial sum under- or overflows the accumulation dtype beyond the error model's
# absolute term (≪ u·max D), and squares of entries (‖M‖_F, LDLᵀ growth, δ_G) stay finite in float64.
SAFE_DIAG = {torch.float32: (2.0**-100, 2.0**100), torch.float64: (2.0**-400, 2.0**400)}
# For a given gram= (any dtype; everything downstream runs in float64 on it): max |M| outside this.
SAFE_GIVEN = (2.0**-400, 2.0**400)
# Lanczos steps for the λ_max of the tight Gram error estimate: its upper end (Ritz value + residual)
TIGHT_LANCZOS_STEPS = 8
# |k| of the shift 2^k: 4^k stays a finite float64 (any fp32 scale and float64 down to ~1e-150 fit).
MAX_SHIFT = 500


def safe_scale(top: float, safe: tuple[float, float], amax: Callable[[], float]) -> int:
    """k such that the data ·2^k lie at a safe scale, 0 when ``top`` (max D, or max |M|) already does.

    ``amax()`` (read only when needed: one pass and a host sync) is the largest |entry| of the data;
    k brings it into [½, 1). A zero matrix of zero data stays as it is.
    """
    if safe[0] <= top <= safe[1]:
        return 0
    a = amax()
    if not math.isfinite(a) or a == 0:
        return 0
    return max(-MAX_SHIFT, min(MAX_SHIFT, -math.frexp(a)[1]))


def scaled_features(phi: torch.Tensor, k: int) -> torch.Tensor:
    """Φ·2^k in Φ's dtype, exact (a power of two; 2^k itself need not fit Φ's dtype)."""
    return (phi.double() * 2.0**k).to(phi.dtype)


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
    unscale: bool = False,
    certificate: str = "tight",
    lanczos: bool = True,
) -> BoundedGram:
    """Validate, then form M [d, d] (or the N×N kernel when N < d) with its error bound δ_G.

    ``check=True`` validates the values without a separate pass over Φ: a NaN or Inf anywhere in
    column i makes M_ii non-finite (w ≥ 0), so one look at M's diagonal (one host sync) decides,
    and Φ is read again only to count the bad entries for the message. A finite Φ whose Gram
    overflows the accumulation dtype is formed again in float64 (``promote_overflow``; float32,
    bf16 and fp16 values then cannot overflow), else it is a ValueError naming ``phi``.

    Scale: with ``check=True`` the same look at the diagonal finds a Gram that under- or overflowed
    (or sits outside :data:`SAFE_DIAG`); it is formed again from Φ·2^k (exact) and carried with
    ``scale`` = 4^k (:class:`BoundedGram`). ``unscale=True`` (:func:`effrank_fast.rank.gram`) returns
    the matrix in the given units instead: a ValueError naming ``phi`` when it is not representable
    in ``acc_dtype`` there. ``check=False`` does neither (no host sync).

    ``lanczos=False`` takes tr M ≥ λ_max in the tight δ_G instead of a few Lanczos steps: looser,
    still valid, and negligible for a float64 Gram (the monitor's small layers).
    """
    plan = _plan(phi, weights, mode, acc_dtype, allow_kernel, check)
    n, d = phi.shape
    acc_dtype, w, kernel, total_weight = plan.acc_dtype, plan.w, plan.kernel, plan.total_weight
    post_scale = plan.post_scale

    def form(x: torch.Tensor) -> tuple[torch.Tensor, str]:
        return plan.form(x, center, backend)

    m, used = form(phi)
    k = 0
    if check:
        top = float(m.diagonal().detach().abs().max())  # host sync (validation and scale)
        if not math.isfinite(top):
            validation.check_features(phi, check_finite=True)  # raises with the count of bad entries
        k = safe_scale(top, SAFE_DIAG[acc_dtype], lambda: float(phi.detach().abs().max()))
        if k:
            m, used = form(scaled_features(phi, k))
            top = float(m.diagonal().detach().abs().max())  # host sync (rare path)
        if not math.isfinite(top):
            if acc_dtype == torch.float32 and promote_overflow:
                return features_to_matrix(phi, weights, mode, center, backend, torch.float64, check, allow_kernel)
            hint = "; pass acc_dtype=torch.float64" if acc_dtype == torch.float32 else "; rescale phi"
            raise ValueError(
                f"phi is finite but its {'kernel' if kernel else 'Gram'} matrix overflows {acc_dtype} "
                f"(max |phi| = {float(phi.abs().max()):.3e}, shape {tuple(phi.shape)}){hint}"
            )
        if k and unscale:
            m = _unscaled(m, k, top, acc_dtype, phi)
            k = 0
    mean_sq = None
    if center:
        mu = weighted_mean(scaled_features(phi, k) if k else phi, w, acc_dtype).double()
        weight_sum = total_weight if total_weight is not None else w.double().sum()  # type: ignore[union-attr]
        mean_sq = weight_sum * mu.square().sum()
    # the tight estimate scales with λ_max: a few Lanczos steps on M̂ (O(k·d²), no host sync); under
    # torch.compile (a generator in the graph) it takes tr M ≥ λ_max instead: looser, still valid
    lam_top = None
    if lanczos and certificate == "tight" and not torch.compiler.is_compiling():
        lam_top = lambda_max_bounds(m.detach(), steps=TIGHT_LANCZOS_STEPS).upper
    delta = _formation_error(
        m, certificate, d if kernel else n, acc_dtype, phi.dtype, used, w, center, post_scale, mean_sq, lam_top
    )

    def recompute(acc: torch.dtype) -> BoundedGram:
        return features_to_matrix(
            phi, weights, mode, center, backend, acc, check, allow_kernel, promote_overflow, certificate=certificate
        )

    return BoundedGram(m, d, used, n, delta, acc_dtype, recompute, scale=4.0**k, certificate=certificate)


@dataclass
class _Plan:
    """How features of one shape become their matrix: the accumulation dtype, the per-row weights w
    (or None), a uniform weight applied after the sum (or None), W = Σw where known, and whether
    the N×N kernel is formed instead of the d×d Gram."""

    acc_dtype: torch.dtype
    w: torch.Tensor | None
    post_scale: float | None
    total_weight: float | None
    kernel: bool

    def form(self, x: torch.Tensor, center: bool, backend: str) -> tuple[torch.Tensor, str]:
        """(the matrix of x [N, d], the backend that formed it)."""
        if self.kernel:
            out, name = kernel_matrix(x, self.w, center, self.acc_dtype, backend)
        else:
            out, name = compute_gram(x, self.w, center, self.acc_dtype, backend)
        return (out * self.post_scale if self.post_scale is not None else out), name

    def form_many(self, xs: list[torch.Tensor], backend: str) -> tuple[torch.Tensor, str]:
        """(the uncentred matrices of L features xs [N, d] of one shape, stacked [L, n, n]; the backend)."""
        if self.kernel:
            formed = [self.form(x, False, backend) for x in xs]
            return torch.stack([m for m, _ in formed]), formed[0][1]
        out, name = compute_grams(xs, self.w, self.acc_dtype, backend)
        return (out * self.post_scale if self.post_scale is not None else out), name


def _plan(
    phi: torch.Tensor,
    weights: torch.Tensor | None,
    mode: str,
    acc_dtype: torch.dtype | None,
    allow_kernel: bool,
    check: bool,
) -> _Plan:
    """Validate ``phi`` [N, d], ``weights``, ``mode`` and ``acc_dtype`` (values only with ``check``),
    and decide how the matrix is formed."""
    validation.check_features(phi, check_finite=False)
    n, d = phi.shape
    if weights is not None:
        validation.check_weights(weights, n, phi.device, check_values=check)
    validation.check_mode(mode, weights)
    if acc_dtype is None:
        acc_dtype = default_acc_dtype(phi.dtype)
    validation.check_acc_dtype(acc_dtype)
    w, post_scale, total_weight = _effective_weights(weights, mode, n, phi.device)
    kernel = allow_kernel and n < d
    if kernel and post_scale is not None:  # the N×N kernel is cheap to scale by rows: keep w = 1/N there
        w, post_scale = validation.resolve_weights(None, mode, n, phi.device), None
    return _Plan(acc_dtype, w, post_scale, total_weight, kernel)


def _formation_error(
    m: torch.Tensor,
    certificate: str,
    n: int,
    acc_dtype: torch.dtype,
    input_dtype: torch.dtype,
    used: str,
    w: torch.Tensor | None,
    center: bool,
    post_scale: float | None,
    mean_sq: torch.Tensor | None,
    lam_top: torch.Tensor | None,
) -> torch.Tensor:
    """δ_G of the formed ``m`` [n', n'] (or of L of them, [L, n', n']: δ_G [L]), ``n`` products per entry."""
    return gram_error(
        certificate,
        m.diagonal(dim1=-2, dim2=-1),
        n,
        acc_dtype,
        input_dtype=input_dtype,
        backend=used if used in ("torch", "native", "triton") else "torch",
        weighted=w is not None,
        centered=center,
        post_scale=post_scale,
        mean_sq_norm=mean_sq,
        lambda_max=lam_top,
    )


def features_to_matrices(
    phis: list[torch.Tensor], weights: torch.Tensor | None, mode: str, backend: str, acc_dtype: torch.dtype
) -> tuple[torch.Tensor, list[BoundedGram]]:
    """:func:`features_to_matrix` (``center=False, check=False, lanczos=False``) of L features
    ``phis`` [N, d] of one shape, dtype and device, sharing ``weights`` [N]: the matrices stacked
    [L, n, n] (the N×N kernels when N < d) and one BoundedGram per layer viewing its slice, their
    δ_G evaluated together (what the monitor forms for all its probed layers every step)."""
    first = phis[0]
    for phi in phis:
        if phi.shape != first.shape or phi.dtype != first.dtype or phi.device != first.device:
            raise ValueError(
                f"phis must share one shape, dtype and device, got {tuple(phi.shape)} and {tuple(first.shape)}"
            )
    plan = _plan(first, weights, mode, acc_dtype, allow_kernel=True, check=False)
    for phi in phis[1:]:
        validation.check_features(phi, check_finite=False)
    n, d = first.shape
    stacked, used = plan.form_many(phis, backend)
    delta = _formation_error(
        stacked,
        "tight",
        d if plan.kernel else n,
        acc_dtype,
        first.dtype,
        used,
        plan.w,
        False,
        plan.post_scale,
        None,
        None,
    )

    def recompute_for(phi: torch.Tensor) -> Callable[[torch.dtype], BoundedGram]:
        return lambda acc: features_to_matrix(phi, weights, mode, False, backend, acc, False)

    sps = [
        BoundedGram(stacked[k], d, used, n, delta[k], acc_dtype, recompute_for(phi), certificate="tight")
        for k, phi in enumerate(phis)
    ]
    return stacked, sps


def _unscaled(m: torch.Tensor, k: int, top: float, acc_dtype: torch.dtype, phi: torch.Tensor) -> torch.Tensor:
    """M = M_s·4^-k in ``acc_dtype``, or a ValueError naming ``phi`` when its diagonal would leave
    the dtype's normal range (silent zeros, subnormal garbage or inf otherwise)."""
    info = torch.finfo(acc_dtype)
    log2_top = math.log2(top) - 2 * k if top > 0 else -math.inf  # in logs: 2^-2k may not be a float
    if not math.log2(info.smallest_normal) <= log2_top <= math.log2(info.max):
        true_top = f"2^{log2_top:.1f}"
        raise ValueError(
            f"the Gram matrix of phi is not representable in {acc_dtype}: its largest entry is "
            f"≈ {true_top} (max |phi| = {float(phi.detach().abs().max()):.3e}); pass "
            f"acc_dtype=torch.float64 or rescale phi (every rank measure accepts phi at any finite scale)"
        )
    return (m.double() * 4.0**-k).to(acc_dtype)


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
    certificate: str = "tight",
) -> BoundedGram:
    """The matrix of ``phi`` (with δ_G of kind ``certificate``, ops/gram/error.py) or the given ``gram_``."""
    if certificate not in KINDS:
        raise ValueError(f"certificate must be one of {KINDS}, got {certificate!r}")
    if gram_ is None:
        if phi is None:
            raise ValueError("give the features phi [N, d] or a precomputed gram= [d, d]")
        return features_to_matrix(phi, weights, mode, center, backend, acc_dtype, check, certificate=certificate)
    if phi is not None:
        raise ValueError("give either phi or gram=, not both")
    if weights is not None:
        raise ValueError("weights apply to phi; a precomputed gram= is already weighted")
    if center:
        raise ValueError("center=True applies to phi; center the features before forming gram=")
    validation.check_gram(gram_, check_values=check)
    backends.requested_backend(backend)  # validates the name even though no Gram is formed
    k = 0
    if check:  # one more host sync on a path that already synchronised to validate
        amax = float(gram_.detach().abs().max())
        k = safe_scale(amax, SAFE_GIVEN, lambda: amax)
    matrix = scaled_features(gram_, k) if k else gram_
    return BoundedGram(matrix, gram_.shape[0], "given", None, acc_dtype=gram_.dtype, scale=2.0**k)


def eigenvalues_desc(sp: BoundedGram, solve_dtype: torch.dtype = torch.float64) -> torch.Tensor:
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
