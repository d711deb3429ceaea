"""Measures that summarise the whole spectrum of M: entropy rank, stable rank, participation ratio,
and :func:`measures` (everything from one eigendecomposition). Conventions: :mod:`effrank_fast.rank`,
the noise-floor rule: :mod:`effrank_fast.rank.formulas`, the peers' variants: :mod:`effrank_fast.rank.conventions`.

Exactness of the σ-based measures (entropy rank): eigenvalues at or below the noise floor δ count
as 0 (:mod:`effrank_fast.rank.formulas`). ``entropy_rank`` and ``measures`` decompose a float32 M in
float32 first for d ≥ ``FP32_SOLVE_MIN_DIM`` and accept that when the entropy rank is
insensitive at the float32 floor (:func:`formulas.entropy_rank_sensitivity` ≤ ``PROMOTE_AT``,
relative) and no eigenvalue lies within 2δ of a threshold of ``measures``'s ε; else they
decompose M again in float64. When the entropy rank is still sensitive, and the Gram was formed
here in float32 with default arguments (``acc_dtype=None``), it is formed again in float64 and
everything is taken from that: the result is then within 1e-3 of the float64 reference. Each
decision reads one flag (a host sync; the eigensolver syncs on CUDA anyway); a promotion costs one
float64 Gram. :class:`Measures` records it (``promoted``); ``acc_dtype=torch.float32`` forbids it.

Autograd: entropy rank, stable rank, participation ratio and every float field of
:class:`Measures` are differentiable in ``phi``, ``weights`` and ``gram=`` (float64 eigvalsh
backward; the Gram backends register their own backward). Counts are integers and carry none.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from effrank_fast.ops import validation
from effrank_fast.ops.gram import weighted_mean
from effrank_fast.ops.gram.reference import CHUNK_ROWS
from effrank_fast.rank import formulas
from effrank_fast.rank.prepare import BoundedGram, eigenvalues_desc, prepare
from effrank_fast.rank.presets import preset

__all__ = ["Measures", "entropy_rank", "measures", "measures_from_eigenvalues", "participation_ratio", "stable_rank"]

# Promote to a float64 Gram when the entropy rank could move by more than this (relative): half
# the 1e-3 contract; the sensitivity is a first-order Cauchy–Schwarz bound on an error estimate
# with ≥ 3× margin (formulas.entropy_rank_sensitivity).
PROMOTE_AT = 5e-4
# A float32 eigensolve is ~1.7× faster than float64 (CPU, 2026-12: 72 vs 125 ms at d = 1024), but
# its error model (4√d·u₃₂·λ_max) fails the sensitivity test on long-tailed spectra, which then
# pay both solves; so it is tried only where the float64 solve dominates the Gram's cost.
FP32_SOLVE_MIN_DIM = 2048
# The σ-measures take their floor from formulas.noise_floor, not from the certificate's δ_G: the
# cheapest kind (no Lanczos steps for the tight estimate's λ_max) serves.
NO_COUNTS = "probabilistic"


@dataclass
class _Convention:
    basis: str = "sigma"
    fudge: float = 0.0
    components: str | int = "all"
    center: bool = False

    def keywords(self, n: int | None, d: int) -> dict[str, object]:
        """Keywords of :func:`formulas.entropy_rank_from_eigenvalues` for a matrix of N = n, d."""
        smaller = d if n is None else min(n, d)
        if self.components == "all":
            k = None
        elif self.components == "min":
            k = smaller
        else:
            k = min(int(self.components), smaller)
        return {"basis": self.basis, "fudge": self.fudge, "components": k}


def _convention(
    convention: str | None, basis: str | None, fudge: float | None, components: str | int | None, center: bool | None
) -> _Convention:
    """Resolve the entropy keywords: a named peer preset, or the explicit options, or the defaults."""
    if convention is not None:
        if basis is not None or fudge is not None or components is not None:
            raise ValueError("give convention= or basis=/fudge=/components=, not both")
        p = preset(convention)
        conv = _Convention(p.basis, p.fudge, p.components, p.center)
    else:
        conv = _Convention()
        if basis is not None:
            if basis not in formulas.BASES:
                raise ValueError(f"basis must be one of {formulas.BASES}, got {basis!r}")
            conv.basis = basis
        if fudge is not None:
            if not (isinstance(fudge, (int, float)) and not isinstance(fudge, bool) and 0 <= fudge < 1):
                raise ValueError(f"fudge must be a number in [0, 1), got {fudge!r}")
            conv.fudge = float(fudge)
        if components is not None:
            ok_int = isinstance(components, int) and not isinstance(components, bool) and components >= 1
            if not (ok_int or components in ("all", "min")):
                raise ValueError(f"components must be 'all', 'min' or a positive int, got {components!r}")
            conv.components = components
    if center is not None:
        conv.center = bool(center)
    return conv


def _centring_floor(
    phi: torch.Tensor, weights: torch.Tensor | None, mode: str, acc: torch.dtype, feature_scale: float = 1.0
) -> torch.Tensor:
    """4·Σw·‖r‖², r = Σ_k w_k(φ_k − μ̂)/Σw in float64: the rounded mean μ̂ leaves the rank-one error
    Σw·(μ̂ − μ)(μ̂ − μ)ᵀ in a centred Gram (the cross terms vanish since Σ_k w_k(φ_k − μ) = 0), and r
    measures μ̂ − μ a posteriori (a worst-case bound, n·u·‖μ‖, would call real small-variance data
    zero; constant data rounds systematically, so √n·u is not a bound either). μ̂ is the mean the
    PyTorch and Triton Gram paths use. One pass over Φ, taken as Φ·``feature_scale`` (the scale the
    Gram was formed at, :class:`~effrank_fast.rank.prepare.BoundedGram`)."""
    n = phi.shape[0]
    w = validation.resolve_weights(weights, mode, n, phi.device)
    x = phi.detach().double() * feature_scale if feature_scale != 1.0 else phi.detach()
    wd = None if w is None else w.detach()
    mu = weighted_mean(x, wd, acc).double()
    total = torch.zeros_like(mu)
    for start in range(0, n, CHUNK_ROWS):
        chunk = x[start : start + CHUNK_ROWS].double() - mu
        total += chunk.sum(0) if wd is None else wd[start : start + CHUNK_ROWS].double() @ chunk
    mass = torch.full((), float(n), dtype=torch.float64, device=mu.device) if wd is None else wd.double().sum()
    r = total / mass
    return 4.0 * mass * r.square().sum()


def _floor(
    sp: BoundedGram,
    lam_max: torch.Tensor,
    phi: torch.Tensor | None,
    weights,
    mode: str,
    center: bool,
    solve_dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """The noise floor δ of :mod:`effrank_fast.rank.formulas` for the matrix ``sp`` (0-d float64)."""
    return _floor_and_error(sp, lam_max, phi, weights, mode, center, solve_dtype)[0]


def _floor_and_error(
    sp: BoundedGram,
    lam_max: torch.Tensor,
    phi: torch.Tensor | None,
    weights,
    mode: str,
    center: bool,
    solve_dtype: torch.dtype = torch.float64,
    centring_cache: dict[torch.dtype, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(δ, ‖E‖_F estimate) for the matrix ``sp``: the noise floor, and the typical Frobenius size
    of its rounding (formation + centring + eigensolve), for the sensitivity test. 0-d float64.
    ``centring_cache`` keeps the centring error (a pass over Φ) per accumulation dtype across the
    re-solves of :func:`_spectrum`."""
    dim = sp.matrix.shape[0]
    acc = sp.matrix.dtype if sp.matrix.dtype in (torch.float32, torch.float64) else torch.float32
    # A float32 eigensolve's own δ_eig, taken as its Frobenius error too (float64's is negligible).
    solve_fro = formulas.noise_floor(lam_max, dim, acc, gram_error=0.0, solve_dtype=solve_dtype)
    solve_fro = solve_fro if solve_dtype == torch.float32 else torch.zeros_like(solve_fro)
    if sp.n is None:  # gram= given: its entries are the input, exact by definition
        return formulas.noise_floor(lam_max, dim, acc, gram_error=0.0, solve_dtype=solve_dtype), solve_fro
    # The σ sums need the noise's typical size, not the certificate-grade δ_G in sp.gram_error that
    # the ε-counts are proven with (10²–10³ above what the Gram actually errs by): that bound would
    # floor away real spectrum and promote well-conditioned inputs. So: the estimates of
    # formulas.noise_floor (from max M_ii) and gram_error_frobenius_estimate (from tr M), plus the
    # measured centring error (rank one: its Frobenius and spectral norms agree).
    diag = sp.matrix.detach().diagonal()
    floor = formulas.noise_floor(lam_max, dim, acc, gram_error=None, solve_dtype=solve_dtype, diag_max=diag.max())
    fro = formulas.gram_error_frobenius_estimate(diag.double().sum(), acc) + solve_fro
    if center and phi is not None:
        cache = {} if centring_cache is None else centring_cache
        if acc not in cache:
            cache[acc] = _centring_floor(phi, weights, mode, acc, sp.scale**0.5)
        floor, fro = floor + cache[acc], fro + cache[acc]
    return floor, fro


@dataclass
class _Spectrum:
    sp: BoundedGram
    lam: torch.Tensor  # [d] descending float64
    floor: torch.Tensor  # 0-d
    promoted: bool
    entropy_kw: dict[str, object]  # the convention's keywords for this matrix's N and d


def _spectrum(
    phi,
    gram_,
    weights,
    mode,
    center,
    backend,
    acc_dtype,
    check,
    conv: _Convention | None,
    eps: torch.Tensor | None = None,
    relative: str | None = None,
) -> _Spectrum:
    """Prepare, decompose, take the floor. With ``conv`` (an entropy rank will be reported):

    1. a float32 M of size ≥ ``FP32_SOLVE_MIN_DIM`` is decomposed in float32; if the entropy
       rank is sensitive at that floor, or an eigenvalue lies within 2δ of a threshold of ``eps``
       (the counts of :func:`measures`), it is decomposed again in float64;
    2. if the entropy rank is still sensitive and the Gram was formed here in float32 with
       default arguments, the Gram is formed again in float64 (``promoted``).
    Each decision reads one flag (a host sync). Under ``torch.compile`` (no data-dependent branch
    in a graph) neither is taken: a float64 eigensolve, no promotion, the floor rule alone.
    """
    sp = prepare(phi, gram_, weights, mode, center, backend, acc_dtype, check, NO_COUNTS)
    kw = (conv or _Convention()).keywords(sp.n, sp.dim)
    decide = conv is not None and not torch.compiler.is_compiling()
    promotable = decide and acc_dtype is None and sp.n is not None and sp.matrix.dtype != torch.float64
    fast = decide and sp.matrix.dtype == torch.float32 and sp.matrix.shape[0] >= FP32_SOLVE_MIN_DIM
    solve = torch.float32 if fast else torch.float64
    promoted = False
    centring: dict[torch.dtype, torch.Tensor] = {}
    while True:
        lam = eigenvalues_desc(sp, solve)
        floor, fro = _floor_and_error(sp, lam[0], phi, weights, mode, center, solve, centring)
        if solve == torch.float64 and not promotable:
            break
        ref = lam.detach()
        value = formulas.entropy_rank_from_eigenvalues(ref, floor, **kw)  # type: ignore[arg-type]
        sensitive = formulas.entropy_rank_sensitivity(ref, floor, fro, **kw) > PROMOTE_AT * value
        if solve == torch.float32:
            if eps is not None:
                eps_s = eps * sp.scale if relative is None else eps
                tau = formulas.thresholds_for(eps_s.to(ref.device), relative, ref[0], ref.sum())
                sensitive = sensitive | ((ref.unsqueeze(0) - tau.unsqueeze(1)).abs() <= 2 * floor).any()
            if not bool(sensitive):  # host sync
                break
            solve = torch.float64
            continue
        if not bool(sensitive):  # host sync
            break
        sp = prepare(phi, gram_, weights, mode, center, backend, torch.float64, False, NO_COUNTS)
        promotable, promoted = False, True
    return _Spectrum(sp, lam, floor, promoted, kw)


def entropy_rank(
    phi: torch.Tensor | None = None,
    *,
    weights: torch.Tensor | None = None,
    gram: torch.Tensor | None = None,
    mode: str = "mean",
    center: bool | None = None,
    backend: str = "auto",
    acc_dtype: torch.dtype | None = None,
    check: bool = True,
    convention: str | None = None,
    basis: str | None = None,
    fudge: float | None = None,
    components: str | int | None = None,
) -> torch.Tensor:
    """Entropy effective rank exp(−Σ p log p), p = σ/Σσ, σ = √λ(M) (Roy–Vetterli; RankMe). 0-d float64.

    Eigenvalues at or below the noise floor count as 0 (:mod:`effrank_fast.rank.formulas`); a float32
    Gram is re-formed in float64 when that could matter (module docstring).

    Args:
        convention: a peer's convention by name ("reptrix", "stable-pretraining", "monai",
            "roy-vetterli"; :mod:`effrank_fast.rank.conventions`), setting basis, fudge, components
            and, unless ``center`` is given, the centring.
        basis: "sigma" (p ∝ σ, default) or "lambda" (p ∝ λ = σ²: reptrix, WeightWatcher).
        fudge: constant added to every p inside the log (default 0; reptrix 1e-7, stable-pretraining 1e-5).
        components: "all" (d values, default), "min" (the min(N, d) largest; d for ``gram=``) or an
            int k (the min(k, N, d) largest). Matters only with a fudge.
        center: None = False, or the convention's.
    """
    conv = _convention(convention, basis, fudge, components, center)
    s = _spectrum(phi, gram, weights, mode, conv.center, backend, acc_dtype, check, conv)
    return formulas.entropy_rank_from_eigenvalues(s.lam, s.floor, **s.entropy_kw)  # type: ignore[arg-type]


def stable_rank(
    phi: torch.Tensor | None = None,
    *,
    weights: torch.Tensor | None = None,
    gram: torch.Tensor | None = None,
    mode: str = "mean",
    center: bool = False,
    backend: str = "auto",
    acc_dtype: torch.dtype | None = None,
    check: bool = True,
) -> torch.Tensor:
    """Stable rank tr M / λ_max (= ‖Φ_w‖_F² / ‖Φ_w‖₂²); 0 for a numerically zero M. 0-d float64."""
    s = _spectrum(phi, gram, weights, mode, center, backend, acc_dtype, check, None)
    return formulas.stable_rank_from_eigenvalues(s.lam, s.floor)


def participation_ratio(
    phi: torch.Tensor | None = None,
    *,
    weights: torch.Tensor | None = None,
    gram: torch.Tensor | None = None,
    mode: str = "mean",
    center: bool = False,
    backend: str = "auto",
    acc_dtype: torch.dtype | None = None,
    check: bool = True,
) -> torch.Tensor:
    """Participation ratio (tr M)² / ‖M‖_F², from the matrix entries (no eigensolver). 0-d float64.

    0 when M is numerically zero: its largest absolute row sum (≥ λ_max) is at or below the floor.
    """
    sp = prepare(phi, gram, weights, mode, center, backend, acc_dtype, check, NO_COUNTS)
    m = sp.matrix.double()
    row_sum = m.detach().abs().sum(1).max()
    floor = _floor(sp, row_sum, phi, weights, mode, center)
    return formulas.participation_ratio_from_moments(m.diagonal().sum(), m.square().sum(), row_sum, floor)


@dataclass
class Measures:
    """All measures from one spectrum. Tensors stay on the input's device.

    Attributes:
        eps: ε values [E] (float64) as given; ``relative`` says how they were scaled.
        thresholds: the absolute thresholds τ [E] that were applied.
        eps_rank: #{λ > τ_e} [E] int64 (no gradient).
        entropy_rank, stable_rank, participation_ratio, lambda_max, trace: 0-d float64.
        eigenvalues: all d eigenvalues, descending, float64.
        mode, center, n, d: the conventions and sizes used (n is None for gram= input).
        noise_floor: δ (0-d float64): eigenvalues at or below it counted as 0 in the entropy rank,
            and λ_max ≤ δ made every float measure 0 (:mod:`effrank_fast.rank.formulas`).
        promoted: the float32 Gram was re-formed in float64 for the entropy rank's sake.
        convention: the entropy convention's name (None: the options as given).
    """

    eps: torch.Tensor
    relative: str | None
    thresholds: torch.Tensor
    eps_rank: torch.Tensor
    entropy_rank: torch.Tensor
    stable_rank: torch.Tensor
    participation_ratio: torch.Tensor
    lambda_max: torch.Tensor
    trace: torch.Tensor
    eigenvalues: torch.Tensor
    mode: str
    center: bool
    n: int | None
    d: int
    backend: str = field(default="torch")
    noise_floor: torch.Tensor | None = None
    promoted: bool = False
    convention: str | None = None

    def topk(self, k: int) -> torch.Tensor:
        """The k largest eigenvalues [min(k, d)], descending."""
        return self.eigenvalues[:k]

    def to_dict(self) -> dict[str, object]:
        """Plain Python numbers (this synchronises with the device)."""
        return {
            "eps": self.eps.tolist(),
            "relative": self.relative,
            "thresholds": self.thresholds.tolist(),
            "eps_rank": self.eps_rank.tolist(),
            "entropy_rank": float(self.entropy_rank),
            "stable_rank": float(self.stable_rank),
            "participation_ratio": float(self.participation_ratio),
            "lambda_max": float(self.lambda_max),
            "trace": float(self.trace),
            "mode": self.mode,
            "center": self.center,
            "n": self.n,
            "d": self.d,
            "backend": self.backend,
            "noise_floor": None if self.noise_floor is None else float(self.noise_floor),
            "promoted": self.promoted,
            "convention": self.convention,
        }


def measures_from_eigenvalues(
    lam: torch.Tensor,
    eps: torch.Tensor,
    relative: str | None,
    *,
    mode: str,
    center: bool,
    n: int | None,
    backend: str,
    floor: torch.Tensor | float | None = None,
    entropy_kw: dict[str, object] | None = None,
) -> Measures:
    """Every measure from one descending float64 spectrum ``lam`` [d] (no host sync).

    ``floor``: the noise floor δ of the matrix ``lam`` came from; None treats it as an exact
    float64 matrix (δ = δ_eig only). A caller holding a float32 Gram should pass
    ``formulas.noise_floor(lam[0], d, torch.float32, gram_error)``. ``entropy_kw``: keywords of
    :func:`formulas.entropy_rank_from_eigenvalues` (the convention; default σ-based).
    """
    lam_max, trace = lam[0], lam.sum()
    if floor is None:
        floor = formulas.noise_floor(lam_max, lam.shape[0], torch.float64, gram_error=0.0)
    floor = torch.as_tensor(floor, dtype=torch.float64, device=lam.device)
    eps = eps.to(lam.device)
    tau = formulas.thresholds_for(eps, relative, lam_max, trace)
    return Measures(
        eps=eps,
        relative=relative,
        thresholds=tau,
        eps_rank=formulas.eps_counts(lam.detach(), tau.detach()),
        entropy_rank=formulas.entropy_rank_from_eigenvalues(lam, floor, **(entropy_kw or {})),  # type: ignore[arg-type]
        stable_rank=formulas.stable_rank_from_eigenvalues(lam, floor),
        participation_ratio=formulas.participation_ratio_from_eigenvalues(lam, floor),
        lambda_max=lam_max,
        trace=trace,
        eigenvalues=lam,
        mode=mode,
        center=center,
        n=n,
        d=lam.shape[0],
        backend=backend,
        noise_floor=floor,
    )


def measures(
    phi: torch.Tensor | None = None,
    eps: float | list[float] | torch.Tensor | None = None,
    *,
    weights: torch.Tensor | None = None,
    gram: torch.Tensor | None = None,
    relative: str | None = None,
    mode: str = "mean",
    center: bool | None = None,
    backend: str = "auto",
    acc_dtype: torch.dtype | None = None,
    check: bool = True,
    convention: str | None = None,
    basis: str | None = None,
    fudge: float | None = None,
    components: str | int | None = None,
) -> Measures:
    """Every measure from one float64 eigendecomposition; see :class:`Measures`.

    The entropy keywords (``convention``, ``basis``, ``fudge``, ``components``, ``center=None``)
    are those of :func:`entropy_rank`; a promotion to a float64 Gram (module docstring) serves
    every field.
    """
    eps_vals, _ = validation.check_eps(eps)
    relative = validation.check_relative(relative)
    conv = _convention(convention, basis, fudge, components, center)
    s = _spectrum(phi, gram, weights, mode, conv.center, backend, acc_dtype, check, conv, eps_vals, relative)
    scale = s.sp.scale  # the spectrum is s.sp.scale × M's: every measure below is scale-free but τ
    m = measures_from_eigenvalues(
        s.lam,
        eps_vals * scale if relative is None else eps_vals,
        relative,
        mode=mode,
        center=conv.center,
        n=s.sp.n,
        backend=s.sp.backend,
        floor=s.floor,
        entropy_kw=s.entropy_kw,
    )
    m.promoted, m.convention = s.promoted, convention
    if scale != 1.0:  # the dimensionful fields in the given units
        m.eps, m.thresholds = eps_vals.to(m.eps.device), m.thresholds / scale
        m.eigenvalues, m.lambda_max, m.trace = m.eigenvalues / scale, m.lambda_max / scale, m.trace / scale
        m.noise_floor = None if m.noise_floor is None else m.noise_floor / scale
    return m
