"""The monitor's measurement core: one layer's captured features → its row, through the code of
:func:`effrank_fast.eps_rank` and :func:`effrank_fast.measures`.

What a row holds and what it guarantees (the README's table):

- ``eps_rank@ε``: :func:`effrank_fast.rank.certified.certified_count` on the same matrix
  ``ef.eps_rank`` forms from the same features (:func:`effrank_fast.rank.prepare.features_to_matrix`:
  the N×N kernel when the step's N < d), with δ_G in the certificate. ``eps_rank_certified@ε`` is 1
  when the count is proven for the exact Gram of the captured values, and ``eps_rank_lower@ε`` /
  ``eps_rank_upper@ε`` are proven bounds (equal to the count where certified). ``ef.eps_rank``
  promotes an unproven float32 count to a float64 Gram after reading a flag on the host; the
  monitor reads nothing back in ``step()``, so it decides by shape instead (:func:`acc_dtype_for`:
  float64 wherever that matrix is cheap, which certifies every count short of an exact tie) and
  flags the rest. A certified count equals ``ef.eps_rank``'s and the float64 reference's. On a
  step whose spectrum is solved by LAPACK, the count is ``certified_count``'s eigh pass on that
  spectrum (:func:`effrank_fast.rank.certified.count_from_eigenvalues`: no second eigensolve); a
  float64 matrix formed here takes tr M ≥ λ_max in its tight δ_G instead of Lanczos steps.
- the spectrum's measures (entropy rank, stable rank, λ_max, top-k, ``spectrum.jsonl``): one float64
  eigensolve with the noise-floor rule of :mod:`effrank_fast.rank.spectrum` (the layers solved at
  one step together: :func:`solve_many`), plus ``entropy_rank_err``, the rule's sensitivity
  estimate (closed-form gradient, :func:`effrank_fast.rank.formulas.entropy_rank_gradient`; where
  ``ef.entropy_rank`` would re-form the Gram in float64, this is above ``PROMOTE_AT`` relative).
  They are solved on the measured steps with ``spectrum_solved = 1`` (every one for a solved
  matrix of size ≤ ``EVERY_STEP_MAX_DIM``, else every ``full_every``-th) and NaN in between.
- ``trace`` and ``participation_ratio`` come from the matrix's entries every measured step
  (exact: no eigensolver; the participation ratio floored as ``ef.participation_ratio`` floors it).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from effrank_fast.ops import backends
from effrank_fast.ops.gram import default_acc_dtype
from effrank_fast.ops.gram.error import gram_error_bound
from effrank_fast.ops.inertia import InertiaFallbackWarning
from effrank_fast.ops.inertia.cost import inertia_why_not
from effrank_fast.rank import formulas, spectrum
from effrank_fast.rank.certified import (
    EpsRankResult,
    certified_count,
    count_from_eigenvalues,
    count_from_eigenvalues_many,
)
from effrank_fast.rank.prepare import BoundedGram, features_to_matrices, features_to_matrix

# A solved matrix this small has its whole spectrum solved every measured step (a few ms at most).
EVERY_STEP_MAX_DIM = 256
# Above it, the spectrum's measures are solved every this many measured steps by default.
FULL_EVERY_DEFAULT = 10
# Multiply-adds n·d·min(n, d) of a matrix formed in float64 by default (≈ a few ms on one core).
FLOAT64_MAX_WORK = 2**25


@dataclass
class LayerInput:
    """A layer's matrix at a measured step and what it came from.

    Attributes:
        sp: the BoundedGram of :mod:`effrank_fast.rank.prepare` ([n, n] kernel or [d, d] Gram).
        phi, weights: the kept features [N, d] and weights [N] (None for the sums path).
        mode, center: the Gram's conventions (those ``sp`` was formed with).
        finite: 0-d bool, every entry of ``sp.matrix`` finite (a non-finite one was zeroed).
        stack: where the matrix was formed together with other layers' (:func:`from_features_many`).
    """

    sp: BoundedGram
    phi: torch.Tensor | None
    weights: torch.Tensor | None
    mode: str
    center: bool
    finite: torch.Tensor
    stack: tuple[torch.Tensor, int] | None = None  # (the [L, n, n] sp.matrix is a slice of, its index)


def from_features(
    phi: torch.Tensor,
    weights: torch.Tensor | None,
    mode: str,
    center: bool,
    backend: str,
    acc_dtype: torch.dtype,
) -> LayerInput:
    """The matrix ``ef.eps_rank`` forms from ``phi`` [N, d] (the N×N kernel when N < d); no host sync.
    A float64 matrix takes tr M for λ_max in its δ_G (no Lanczos steps): ~1e-13·tr M either way."""
    lanczos = acc_dtype != torch.float64
    sp = features_to_matrix(phi, weights, mode, center, backend, acc_dtype, check=False, lanczos=lanczos)
    finite = torch.isfinite(sp.matrix).all()
    sp.matrix = torch.where(finite, sp.matrix, torch.zeros((), dtype=sp.matrix.dtype, device=sp.matrix.device))
    return LayerInput(sp, phi, weights, mode, center, finite)


def from_features_many(
    phis: list[torch.Tensor], weights: torch.Tensor | None, mode: str, backend: str
) -> list[LayerInput]:
    """:func:`from_features` (uncentred, float64) of L features of one shape sharing ``weights``:
    their matrices formed into one [L, n, n] stack, δ_G and the finiteness test taken for all at
    once; each input's ``stack`` names its slice (the batched eigensolve reads the stack as it is)."""
    stacked, sps = features_to_matrices(phis, weights, mode, backend, torch.float64)
    # a NaN/Inf feature (or an overflow) shows on the diagonal (w ≥ 0, |M_ij| ≤ √(M_ii M_jj)): d
    # entries to test per layer instead of n²
    finite = torch.isfinite(stacked.diagonal(dim1=-2, dim2=-1)).all(-1)
    stacked.masked_fill_(~finite[:, None, None], 0.0)  # in place: each sp.matrix is a view of it
    return [
        LayerInput(sp, phi, weights, mode, False, finite[k], (stacked, k))
        for k, (sp, phi) in enumerate(zip(sps, phis, strict=True))
    ]


def from_gram(
    M: torch.Tensor,
    finite: torch.Tensor,
    *,
    rows: int,
    input_dtype: torch.dtype,
    backend: str,
    weighted: bool,
    center: bool,
    post_scale: float | None,
    mean_sq_norm: torch.Tensor | None,
    mode: str,
) -> LayerInput:
    """A [d, d] Gram accumulated from sums (micro-batches, EMA or an all-reduce), with its δ_G."""
    safe = torch.where(finite, M, torch.zeros((), dtype=M.dtype, device=M.device))
    name = backends.select_gram_backend(backend, M.device, input_dtype)
    delta = gram_error_bound(
        safe.diagonal(),
        max(rows, 1),
        M.dtype,
        input_dtype=input_dtype,
        backend=name if name in ("torch", "native", "triton") else "torch",
        weighted=weighted,
        centered=center,
        post_scale=post_scale,
        mean_sq_norm=mean_sq_norm,
    )
    sp = BoundedGram(safe, M.shape[0], name, rows, delta, M.dtype, None)
    return LayerInput(sp, None, None, mode, center, finite)


def count_method(m: torch.Tensor, sync_free: bool) -> str:
    """How the counts of the matrix ``m`` are taken: inertia (no eigensolver, no host sync) wherever
    its kernel exists, except for a small matrix on the CPU when no sync-free solver was asked for,
    where ``ef.eps_rank``'s own choice (eigh below the measured break-even) is faster."""
    if inertia_why_not(m.device) is not None:
        return "auto"
    small = m.device.type == "cpu" and m.shape[0] <= EVERY_STEP_MAX_DIM
    return "auto" if small and not sync_free else "inertia"


def counts(
    inp: LayerInput, eps: torch.Tensor, relative: str | None, sync_free: bool, lam: torch.Tensor | None = None
) -> EpsRankResult:
    """The certified ε-counts of ``inp``: ``certified_count`` without its host-side promotion (the
    monitor promotes by shape instead, :func:`acc_dtype_for`); the row carries the certificate.
    ``lam``: the float64 LAPACK spectrum of ``inp.sp.matrix`` [sp.dim] descending, solved already
    this step: the certified eigh count is then a comparison (no second eigensolve)."""
    if lam is not None:
        return count_from_eigenvalues(inp.sp, eps, relative, lam)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InertiaFallbackWarning)
        return certified_count(inp.sp, eps, relative, count_method(inp.sp.matrix, sync_free), check=False)


def counts_many(
    inps: list[LayerInput], eps: torch.Tensor, relative: str | None, lam: torch.Tensor, stacked: torch.Tensor
) -> EpsRankResult | None:
    """:func:`counts` of several layers whose matrices ``stacked`` [L, n, n] were solved together
    this step (``lam`` [L, dim]): one certified eigh pass for all; fields [L, E]. None when they
    cannot share one (different scales or conventions: count them one by one)."""
    return count_from_eigenvalues_many([i.sp for i in inps], eps, relative, lam, stacked)


@dataclass
class Solved:
    """The spectrum of a layer's matrix (or of L layers', with a leading L on every field): λ [d]
    descending float64, its noise floor δ and the estimate of ‖M̂ − M‖_F the entropy rank's
    sensitivity is taken at (0-d each)."""

    lam: torch.Tensor
    floor: torch.Tensor
    error_fro: torch.Tensor

    def scalars(self) -> torch.Tensor:
        """[..., 6]: :func:`formulas.spectrum_scalars` (entropy rank, stable rank, participation
        ratio, λ_max, trace, the entropy rank's sensitivity: the ``entropy_rank_err`` column)."""
        return formulas.spectrum_scalars(self.lam, self.floor, self.error_fro)


def solve(inp: LayerInput, lam: torch.Tensor) -> Solved:
    """``ef.measures``'s noise-floor rule on the float64 spectrum ``lam`` of ``inp`` (the entropy
    rank's sensitivity is decided by nobody: ``ef.measures`` would promote where it exceeds
    ``spectrum.PROMOTE_AT`` relative; the monitor reports it)."""
    floor, fro = spectrum._floor_and_error(inp.sp, lam[0], inp.phi, inp.weights, inp.mode, inp.center)
    return Solved(lam, floor, fro)


def solve_many(inps: list[LayerInput], stacked: torch.Tensor, lam: torch.Tensor) -> Solved:
    """:func:`solve` for several layers at once: ``stacked`` [L, n, n] their matrices, ``lam``
    [L, dim] their float64 spectra; the Solved fields gain the leading L. The floor is
    ``spectrum._floor_and_error``'s rule (for matrices formed from uncentred features: its
    estimates from max M_ii and tr M only, taken here for all L at once)."""
    if all(i.sp.n is not None and not (i.center and i.phi is not None) for i in inps):
        diag = stacked.detach().diagonal(dim1=-2, dim2=-1)
        acc = stacked.dtype if stacked.dtype in (torch.float32, torch.float64) else torch.float32
        floor = formulas.noise_floor(lam[:, 0], stacked.shape[-1], acc, gram_error=None, diag_max=diag.amax(-1))
        fro = formulas.gram_error_frobenius_estimate(diag.double().sum(-1), acc)
    else:
        pairs = [
            spectrum._floor_and_error(i.sp, lam[k, 0], i.phi, i.weights, i.mode, i.center) for k, i in enumerate(inps)
        ]
        floor, fro = torch.stack([f for f, _ in pairs]), torch.stack([torch.as_tensor(e).to(f) for f, e in pairs])
    return Solved(lam, floor, fro)


def entry_measures(inp: LayerInput) -> tuple[torch.Tensor, torch.Tensor]:
    """(trace, participation ratio) from the matrix's entries (no eigensolver); tr and ‖·‖_F of the
    N×N kernel equal those of the Gram. Floored as :func:`effrank_fast.participation_ratio`."""
    m = inp.sp.matrix.detach()
    trace = m.diagonal().double().sum()
    frob_sq = torch.linalg.vector_norm(m, dtype=torch.float64).square()
    # λ_max ≤ tr M for a PSD M: the bound the floor is taken at (only a numerically zero M cares)
    floor, _ = spectrum._floor_and_error(inp.sp, trace, inp.phi, inp.weights, inp.mode, inp.center)
    return trace, formulas.participation_ratio_from_moments(trace, frob_sq, trace, floor)


def acc_dtype_for(acc_dtype: torch.dtype | None, center: bool, phi_dtype: torch.dtype, n: int, d: int) -> torch.dtype:
    """The accumulation dtype of a layer's matrix: the user's, else float64 when centred (the
    downdate cancels) or when the float64 matrix is cheap (n·d·min(n, d) ≤ ``FLOAT64_MAX_WORK``:
    every count then certified, the monitor's sync-free stand-in for ``ef.eps_rank``'s promotion),
    else ``ef.gram``'s default (float32 for 16/32-bit features)."""
    if acc_dtype is not None:
        return acc_dtype
    if center or n * d * min(n, d) <= FLOAT64_MAX_WORK:
        return torch.float64
    return default_acc_dtype(phi_dtype)
