"""Exact ε-counts by Sylvester inertia of M − τI (float64 pivot-free blocked LDLᵀ, CPU and CUDA).

By Sylvester's law of inertia #{λ(M) > τ} is the number of positive pivots of an LDLᵀ of M − τI:
no eigensolver is needed. The native kernel (csrc/inertia/) returns counts with diagnostics and a
rigorous error bound δ (``effrank_fast/ops/inertia/schema.py``): the count is that of some M + E
with ‖E‖₂ ≤ δ, so it is exact whenever no eigenvalue lies within δ of τ.

When is a count trusted (``reliable``)? Either of two verdicts, both recorded in
:class:`InertiaResult`:

- **tolerance**: δ_p ≤ ``band_rel``·‖M − τI‖_F, δ_p the probabilistic counterpart of δ
  (:func:`probabilistic_bound`). The default ``band_rel`` = 16·u of M's dtype: the factorisation
  then perturbs M by less than storing M in its dtype did (an fp32 Gram carries more than that from
  its accumulation, docs/measures.md), so it is as exact as any count of that M can be.
- **certificate** (default for float64 M, whose rounding is too small for the tolerance to pass):
  two more factorisations at τ ± a, a = 2δ. With δ_± ≤ a, Weyl gives
  count(τ + a) ≤ #{λ(M) > τ} ≤ count(τ − a); equal ends prove the count at τ. This is exact —
  no eigensolver gives more — for 3 factorisations; it fails only when an eigenvalue lies within
  ~3δ of τ, and then the fallback decides.

Robustness ladder (every step is recorded, none is silent):

1. optional random butterfly congruence (``rbt=True``): same inertia, smaller pivot growth;
2. the verdicts above (a tiny or zero pivot, or large growth, makes δ large or infinite);
3. ``fallback="eigh"`` (default) recounts the unreliable thresholds with a float64 eigvalsh,
   ``fallback="ldl"`` with Bunch–Kaufman (``torch.linalg.ldl_factor_ex``, 2×2 pivots honoured).
   Deciding whether to fall back reads one flag from the device: **a host sync**. With
   ``fallback=False`` nothing synchronises and ``reliable`` tells the caller which counts to trust.

Relative thresholds τ = ε·λ_max (:func:`inertia_count_relative`) bracket λ_max by Lanczos
(:mod:`.lanczos`), prove the upper end by one factorisation, count at both ends of the bracket and
fall back when the two counts differ.

The math, the measurements and the cost model (:mod:`.cost`): docs/inertia.md; the files:
README.md in this folder.
"""

from __future__ import annotations

import torch

from effrank_fast.ops import native, validation
from effrank_fast.ops.backends import BackendUnavailableError
from effrank_fast.ops.gram.error import unit_roundoff
from effrank_fast.ops.inertia.certificate import IntervalCertificate, certify_interval
from effrank_fast.ops.inertia.lanczos import DEFAULT_LANCZOS_STEPS, LambdaMaxBounds, lambda_max_bounds
from effrank_fast.ops.inertia.reference import inertia_ref, symmetric_from_lower
from effrank_fast.ops.inertia.result import (
    BAND_ULPS,
    DEFAULT_BLOCK,
    FALLBACKS,
    InertiaFallbackWarning,
    InertiaResult,
    default_band_rel,
    probabilistic_bound,
)
from effrank_fast.ops.inertia.robust import RBT_DEPTH, bunch_kaufman_counts, butterfly_congruence

__all__ = [
    "BAND_ULPS",
    "DEFAULT_BLOCK",
    "DEFAULT_LANCZOS_STEPS",
    "InertiaFallbackWarning",
    "InertiaResult",
    "LambdaMaxBounds",
    "bunch_kaufman_counts",
    "default_band_rel",
    "inertia_count",
    "inertia_count_relative",
    "inertia_ref",
    "lambda_max_bounds",
    "probabilistic_bound",
]


def _check(gram: object, band_rel: object, block_size: object, fallback: object, check: bool = True) -> str | None:
    # the same checks (and messages) as eps_rank's gram=: square, float, finite, symmetric
    validation.check_gram(gram, check_values=check)
    if band_rel is not None and (
        isinstance(band_rel, bool) or not isinstance(band_rel, (int, float)) or not band_rel >= 0
    ):
        raise ValueError(f"band_rel must be None or a non-negative number, got {band_rel!r}")
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 0:
        raise ValueError(f"block_size must be an int >= 0 (0 = default), got {block_size!r}")
    if fallback is True:
        return "eigh"
    if fallback is False or fallback is None:
        return None
    if fallback not in FALLBACKS:
        raise ValueError(f"fallback must be True, False, 'eigh' or 'ldl', got {fallback!r}")
    return str(fallback)


def _verdicts(dtype: torch.dtype, band_rel: float | None, certify: bool | None) -> tuple[float, bool]:
    """(tolerance, certify) with the defaults of M's dtype: 16u, and certify only a float64 M."""
    tol = default_band_rel(dtype) if band_rel is None else float(band_rel)
    return tol, dtype == torch.float64 if certify is None else bool(certify)


def _thresholds(thresholds: object, device: torch.device, check: bool = True) -> torch.Tensor:
    """τ as float64 [E] on ``device``; NaN/Inf rejected (a tensor τ is read for that only with
    ``check``: a host sync)."""
    given_tensor = isinstance(thresholds, torch.Tensor)
    if isinstance(thresholds, torch.Tensor):
        t = thresholds.detach().to(torch.float64)
    else:
        try:
            t = torch.as_tensor(thresholds, dtype=torch.float64)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"thresholds must be a number, a list of numbers or a tensor, got {thresholds!r}") from exc
    if t.dim() > 1:
        raise ValueError(f"thresholds must be a scalar or 1-D [E], got shape {tuple(t.shape)}")
    if (check or not given_tensor) and not bool(torch.isfinite(t).all()):
        raise ValueError(f"thresholds must be finite, got {t.reshape(-1).tolist()}")
    return t.reshape(-1).to(device)


def _require_kernel(device: torch.device) -> None:
    reason = native.kernel_missing_reason("inertia", device)
    if reason is not None:
        raise BackendUnavailableError(f"the inertia count cannot run on {device.type}: {reason}")


def _factor_rbt(gram: torch.Tensor, tau: torch.Tensor, block_size: int, seed: int) -> tuple[torch.Tensor, ...]:
    """The op's outputs for M − τI after a random butterfly congruence, δ mapped back to M − τI: an
    error E in Ã = UᵀAU is the error U⁻ᵀEU⁻¹ in A, ‖U⁻¹‖₂ ≤ inv_norm."""
    m = symmetric_from_lower(gram)
    zero = tau.new_zeros(1)
    outs = []
    for t in range(tau.shape[0]):
        a = m - tau[t] * torch.eye(m.shape[0], dtype=m.dtype, device=m.device)
        at, pad, inv_norm, round_err = butterfly_congruence(a, depth=RBT_DEPTH, seed=seed)
        c, mp, g, band, delta, _, max_l = torch.ops.effrank_fast.inertia(at, zero, block_size)
        scale = torch.linalg.matrix_norm(a).reshape(1)
        # the pad adds exactly `pad` positive eigenvalues (module robust)
        outs.append((c - pad, mp, g, band, inv_norm**2 * (delta + round_err), scale, max_l))
    return tuple(torch.cat(parts) for parts in zip(*outs, strict=True))


class _Factored:
    """The op's outputs for thresholds τ [E] (optionally through the butterfly), plus δ_p."""

    def __init__(self, gram: torch.Tensor, tau: torch.Tensor, block_size: int, rbt: bool, seed: int) -> None:
        if rbt:
            outs = _factor_rbt(gram, tau, block_size, seed)
        else:
            outs = torch.ops.effrank_fast.inertia(gram, tau, block_size)
        self.counts, self.min_piv, self.growth, self.band, self.delta, self.scale, self.max_l = outs
        n = gram.shape[0]
        self.delta_p = probabilistic_bound(self.delta, self.scale, n)


def _certify(
    gram: torch.Tensor, tau: torch.Tensor, delta: torch.Tensor, block_size: int, rbt: bool, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(certified [E] bool, count [E]) from counts at τ ± a, a = 2δ: with δ_± ≤ a, Weyl gives
    count(τ + a) ≤ #{λ(M) > τ} ≤ count(τ − a), so equal ends prove the count. On the device."""
    finite = torch.isfinite(delta)
    a = torch.where(finite, 2 * delta, torch.zeros_like(delta))
    ends = _Factored(gram, torch.cat([tau - a, tau + a]), block_size, rbt, seed)
    e = tau.shape[0]
    lo, hi = ends.counts[:e], ends.counts[e:]
    covered = (ends.delta[:e] <= a) & (ends.delta[e:] <= a)
    return finite & covered & (lo == hi), lo


def _default_gram_error(gram: torch.Tensor, gram_error: torch.Tensor | float | None) -> torch.Tensor | float | None:
    """A float32/bf16/fp16 M without ``gram_error`` is taken as the exact matrix rounded to its dtype:
    δ_G = u·‖M‖_F ≥ ‖fl(M) − M‖₂ (the least error any such M carries; its formation adds more,
    which only the caller knows). A float64 M is taken as exact (the verdicts of the module doc)."""
    if gram_error is not None or gram.dtype == torch.float64:
        return gram_error
    return unit_roundoff(gram.dtype) * torch.linalg.matrix_norm(gram.detach().double())


def _with_gram_error(
    gram: torch.Tensor,
    tau_lo: torch.Tensor,
    tau_hi: torch.Tensor,
    gram_error: torch.Tensor,
    tol: float,
    block_size: int,
    rbt: bool,
    seed: int,
) -> tuple[IntervalCertificate, InertiaResult]:
    """The δ_G certificate (module ``certificate``) over [τ_lo, τ_hi], as an unreliable-unless-proven
    :class:`InertiaResult` whose counts are the lower end (count at τ_hi + a) where not proven."""
    # The kernel reads only the lower triangle and the margin only the diagonal: no mirrored copy.
    cert = certify_interval(gram, tau_lo, tau_hi, gram_error, lambda mm, t: _Factored(mm, t, block_size, rbt, seed))
    ends = cert.ends
    assert isinstance(ends, _Factored)
    e = tau_lo.shape[0]

    def worse(x: torch.Tensor, pick=torch.maximum) -> torch.Tensor:
        return pick(x[:e], x[e:])

    g = gram_error.to(torch.float64).reshape(()).expand(e)
    res = InertiaResult(
        counts=cert.at_hi,
        reliable=cert.certified,
        fell_back=torch.zeros_like(cert.certified),
        min_pivot_rel=worse(ends.min_piv, torch.minimum),
        growth=worse(ends.growth),
        band_counts=worse(ends.band),
        certified=cert.certified,
        max_abs_l=worse(ends.max_l),
        band_rel=tol,
        error_bound=g + worse(ends.delta),
        scale=worse(ends.scale),
        thresholds=tau_hi,
        rbt=rbt,
        count_bounds=(cert.at_hi, cert.at_lo),
        error_estimate=g + worse(ends.delta_p),
        gram_error=g,
    )
    return cert, res


def inertia_count(
    gram: torch.Tensor,
    thresholds: torch.Tensor | float | list[float],
    *,
    band_rel: float | None = None,
    certify: bool | None = None,
    block_size: int = DEFAULT_BLOCK,
    fallback: bool | str | None = "eigh",
    rbt: bool = False,
    rbt_seed: int = 0,
    gram_error: torch.Tensor | float | None = None,
    check: bool = True,
) -> InertiaResult:
    """Counts #{λ(M) > τ_e} for thresholds τ [E] on M [d, d] (lower triangle read).

    Args:
        gram: M [d, d], any float dtype, CPU or CUDA; square, finite and symmetric within 64 ulps
            of max|M| (``validation.check_gram``, the checks and messages of ``eps_rank(gram=)``).
        thresholds: τ, a scalar or [E] (absolute), finite.
        band_rel: tolerance of the one-sided verdict δ_p ≤ band_rel·‖M − τI‖_F; None: 16·u of M's
            dtype (:func:`default_band_rel`). Not used with ``gram_error``.
        certify: prove counts the tolerance does not accept by counting at τ ± 2δ (two more
            factorisations per threshold); None: for float64 M only. Not used with ``gram_error``.
        block_size: panel width of the blocked factorisation; 0 = the device's default.
        fallback: "eigh" (or True), "ldl", or False/None for no fallback and no host sync.
        rbt: apply a random butterfly congruence first (O(d²) per threshold; curbs pivot growth).
        rbt_seed: seed of the butterfly.
        gram_error: δ_G ≥ ‖M − M_true‖₂, the error made forming M (absolute, a number or a 0-d
            tensor, e.g. ``effrank_fast.ops.gram.error.gram_error_bound``). None: a float64 M is
            taken as exact (the verdicts above), any other M as the exact matrix rounded to its
            dtype (δ_G = u·‖M‖_F: pass the formation error if it is known, it is larger). With a
            δ_G the count is ``reliable`` only when proven for the true matrix: equal counts at
            τ ± (δ_G + m), m the allotted factorisation error
            (``certificate.py``): two factorisations per threshold, no factorisation at τ itself.
            Unproven counts are the lower end, count(τ + δ_G + m), with ``count_bounds`` =
            (lower, upper), unless a fallback recounts M at τ. inf/NaN δ_G is never reliable.
        check: validate the values of ``gram`` (finite, symmetric) and of a tensor τ: this reads the
            data, a **host sync**; ``check=False`` for hot paths skips it (shape and dtype are
            still checked). A non-finite M is never reliable either way.

    Returns:
        :class:`InertiaResult`. Cost: one d³/3 factorisation per threshold (three when
        certifying, two with ``gram_error``), plus with a fallback one eigvalsh (or one sytrf per
        unreliable threshold) and one host sync.
    """
    method = _check(gram, band_rel, block_size, fallback, check)
    _require_kernel(gram.device)
    tol, do_certify = _verdicts(gram.dtype, band_rel, certify)
    tau = _thresholds(thresholds, gram.device, check)
    gram_error = _default_gram_error(gram, gram_error)
    if gram_error is not None:
        g = torch.as_tensor(gram_error, dtype=torch.float64).to(gram.device)
        _, res = _with_gram_error(gram, tau, tau, g, tol, block_size, rbt, rbt_seed)
        res.thresholds = tau
        if method is not None and tau.numel() and not bool(res.reliable.all()):  # host sync
            redo = inertia_ref(gram, tau) if method == "eigh" else bunch_kaufman_counts(gram, tau)
            res.counts = torch.where(res.reliable, res.counts, redo)
            res.fell_back = ~res.reliable
            res.fallback_method = method
        return res
    f = _Factored(gram, tau, block_size, rbt, rbt_seed)
    counts = f.counts
    reliable = torch.isfinite(f.delta) & torch.isfinite(f.scale) & (f.delta_p <= tol * f.scale)
    certified = torch.zeros_like(reliable)
    if do_certify and tau.numel():
        certified, proven = _certify(gram, tau, f.delta, block_size, rbt, rbt_seed)
        counts = torch.where(certified, proven, counts)
        reliable = reliable | certified
    fell_back = torch.zeros_like(reliable)
    used = None
    if method is not None and tau.numel() and not bool(reliable.all()):  # host sync
        fell_back = ~reliable
        redo = inertia_ref(gram, tau) if method == "eigh" else bunch_kaufman_counts(gram, tau)
        counts = torch.where(reliable, counts, redo)
        used = method
    return InertiaResult(
        counts=counts,
        reliable=reliable,
        fell_back=fell_back,
        min_pivot_rel=f.min_piv,
        growth=f.growth,
        band_counts=f.band,
        certified=certified,
        max_abs_l=f.max_l,
        band_rel=tol,
        error_bound=f.delta,
        scale=f.scale,
        thresholds=tau,
        fallback_method=used,
        rbt=rbt,
        error_estimate=f.delta_p,
    )


def inertia_count_relative(
    gram: torch.Tensor,
    eps: torch.Tensor | float | list[float],
    *,
    band_rel: float | None = None,
    certify: bool | None = None,
    block_size: int = DEFAULT_BLOCK,
    fallback: bool | str | None = "eigh",
    rbt: bool = False,
    lanczos_steps: int = DEFAULT_LANCZOS_STEPS,
    seed: int = 0,
    gram_error: torch.Tensor | float | None = None,
    check: bool = True,
) -> InertiaResult:
    """#{λ(M) > ε_e·λ_max(M)} without an eigensolver.

    λ_max is bracketed by :func:`lambda_max_bounds`: the lower end is a Ritz value (≤ λ_max), the
    upper end is proven by one factorisation (#{λ > upper} = 0 gives λ_max ≤ upper + δ). Each ε is
    then counted at both ends of the proven bracket with the verdicts of :func:`inertia_count`
    (``band_rel`` and ``certify`` as there, defaults from ``gram``'s dtype). The count is reliable
    when both ends are and agree; otherwise (with a fallback) it is recounted from a float64
    eigvalsh (λ_max needs the spectrum, so the "ldl" fallback also uses eigvalsh here). Cost: 2E + 1
    factorisations (6E + 1 when certifying) and ``lanczos_steps`` + 1 products M·v; the fallback
    decision is one host sync.

    ``gram_error`` (δ_G, as in :func:`inertia_count`) widens the bracket of the true λ_max to
    [lower − δ_G, upper + δ_G] and proves each count over ε times that bracket by two
    factorisations at its ends ± (δ_G + m): 2E + 1 factorisations. ``check`` as there.
    """
    method = _check(gram, band_rel, block_size, fallback, check)
    _require_kernel(gram.device)
    tol, do_certify = _verdicts(gram.dtype, band_rel, certify)
    eps_t = _thresholds(eps, gram.device, check)
    e = eps_t.numel()
    m = symmetric_from_lower(gram)
    bounds = lambda_max_bounds(gram, steps=lanczos_steps, seed=seed, matrix=m)
    top = _Factored(m, bounds.upper.reshape(1), block_size, False, seed)
    upper_ok = ((top.counts == 0) & torch.isfinite(top.delta) & torch.isfinite(top.scale)).reshape(())
    # λ_max ≤ upper + δ is proven when nothing counts above `upper` (Weyl on the factored M + E)
    upper = torch.where(upper_ok, bounds.upper + top.delta.reshape(()), bounds.upper)
    gram_error = _default_gram_error(gram, gram_error)
    if gram_error is not None:
        g = torch.as_tensor(gram_error, dtype=torch.float64).to(gram.device).reshape(())
        lower_true, upper_true = bounds.lower - g, upper + g
        _, res = _with_gram_error(m, eps_t * lower_true, eps_t * upper_true, g, tol, block_size, rbt, seed)
        ok = res.reliable & upper_ok
        res.reliable, res.certified = ok, ok
        res.lambda_max = (bounds.lower, upper)
        res.thresholds = eps_t * upper
        if method is not None and e and not bool(ok.all()):  # host sync
            lam = torch.linalg.eigvalsh(m)
            redo = (lam.unsqueeze(0) > (eps_t * lam[-1]).unsqueeze(1)).sum(1)
            res.counts = torch.where(ok, res.counts, redo)
            res.fell_back = ~ok
            res.fallback_method = "eigh"
        return res
    res = inertia_count(
        m,
        torch.cat([eps_t * bounds.lower, eps_t * upper]),
        band_rel=tol,
        certify=do_certify,
        block_size=block_size,
        fallback=False,
        rbt=rbt,
        check=False,
    )
    at_lo, at_hi = res.counts[:e], res.counts[e : 2 * e]
    ok = (at_lo == at_hi) & res.reliable[:e] & res.reliable[e : 2 * e] & upper_ok
    counts = at_hi
    fell_back = torch.zeros_like(ok)
    used = None
    if method is not None and e and not bool(ok.all()):  # host sync
        lam = torch.linalg.eigvalsh(m)
        redo = (lam.unsqueeze(0) > (eps_t * lam[-1]).unsqueeze(1)).sum(1)
        counts = torch.where(ok, counts, redo)
        fell_back = ~ok
        used = "eigh"

    def worse(x: torch.Tensor, pick=torch.maximum) -> torch.Tensor:
        return pick(x[:e], x[e : 2 * e])

    assert res.error_bound is not None and res.scale is not None and res.error_estimate is not None
    assert res.certified is not None and res.max_abs_l is not None
    return InertiaResult(
        counts=counts,
        reliable=ok,
        fell_back=fell_back,
        min_pivot_rel=worse(res.min_pivot_rel, torch.minimum),
        growth=worse(res.growth),
        band_counts=worse(res.band_counts),
        certified=res.certified[:e] & res.certified[e : 2 * e] & (at_lo == at_hi) & upper_ok,
        max_abs_l=worse(res.max_abs_l),
        band_rel=tol,
        error_bound=worse(res.error_bound),
        scale=res.scale[e : 2 * e],
        thresholds=eps_t * upper,
        fallback_method=used,
        rbt=rbt,
        lambda_max=(bounds.lower, upper),
        count_bounds=(at_hi, at_lo),
        error_estimate=worse(res.error_estimate),
    )
