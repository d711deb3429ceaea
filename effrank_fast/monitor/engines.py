"""Spectral engines (``RankMonitor(engine=...)``): Gram matrix M [d, d] → one packed row of measures.

- ``"exact"`` (default): the measurement core of :mod:`.core`, the code of ``ef.eps_rank`` and
  ``ef.measures``: certified ε-counts (with ``eps_rank_certified@ε`` and proven bounds) every
  measured step, by inertia where the kernel exists (no eigensolver); the spectrum's measures
  (entropy rank, stable rank, λ_max, top-k, ``spectrum.jsonl``) from one float64 eigensolve every
  measured step for a solved matrix of size ≤ ``core.EVERY_STEP_MAX_DIM``, else every
  ``full_every``-th (``Engine(full_every=k)``, default "auto"); trace and participation
  ratio from the entries every step. The layers solved by ``eigvalsh`` at one step with matrices
  of one shape share one batched eigensolve and one batched pass of the measures
  (:meth:`ExactEngine.record_many`; the scalars by :mod:`effrank_fast.ops.spectrum_scalars`, one
  native pass on the CPU), whose spectrum is the counts' input too; a probe's layers of one width
  arrive already formed as one stack (:func:`.core.from_features_many`). The solver of the
  spectrum (``Engine(solver=...)``): ``"auto"`` (default) is the native Jacobi kernel
  (:func:`effrank_fast.ops.jacobi_eigh.jacobi_eigh`, convergence decided on the device: no host
  sync) on CUDA for d ≤ ``JACOBI_MAX_D`` when the kernel is built, else ``torch.linalg.eigvalsh``;
  ``"jacobi"`` or ``"eigvalsh"`` force one. On CUDA ``eigvalsh`` reads cuSOLVER's error flag back to
  the host: one sync per layer and solved step (for a sync-free monitor at larger d use
  ``Engine.warm(refresh_every=None)``). Jacobi is warm-started: each
  layer keeps the eigenbasis V of its last Gram and solves VᵀMV (same eigenvalues, nearly diagonal
  when M moved little: a few sweeps instead of the 10–30 of a cold start), V re-orthogonalised by
  one Newton–Schulz step per solve. A solve that has not converged within its sweeps
  (off(A) > ``JACOBI_OFF_SLACK``·tol) gives a row of NaN, decided on the device.
- ``"warm"``: :class:`effrank_fast.SpectrumTracker` per layer (warm-started top-k subspace; the
  counts come with a certified interval [eps_rank_lower, eps_rank_upper] and the
  :class:`~effrank_fast.TrackPath` code that produced them, column ``eps_rank_path@ε``). Imported
  Defaults, each overridden by ``Engine.warm(...)``: ``k=64``, ``sync="deferred"`` (the
  monitor's step() must not read the device; the tracker's own default, "step", reads one flag
  per update) and ``refresh_every=100`` (an exact float64 eigh every 100 measured steps keeps the
  tracker honest; on CUDA that step synchronises once, like the default flush every 100 steps;
  ``refresh_every=None`` for none).
- a callable ``factory(d=, eps=, relative=) -> tracker`` whose ``update(gram)`` returns an object
  with the fields of ``TrackResult`` (eigenvalues, eps_rank, lambda_max, trace, stable_rank,
  participation_ratio, entropy_rank; optionally eps_rank_lower/upper, path, entropy_rank_err), or
  None while a result is pending (``side_stream=True``: results come one update late).

Every engine returns a float64 vector on M's device (no host sync) laid out as ``columns()``.
A non-finite M is replaced before the solve (zeros for "exact", the layer's last finite M for
trackers, so their warm state survives); the monitor masks that step's values as NaN. A pending
result (None) is a row of NaN. With ``side_stream=True`` each row therefore holds the result of
the previous measured step's Gram (and the first row is NaN): the tracker's latency, not the
monitor's.

Checkpoints: the trackers' ``state_dict()`` (basis, k, counters) is the engine's state; a
resumed monitor hands each layer's state to its tracker when that tracker is created, so it
continues warm instead of starting cold.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from effrank_fast.monitor import core
from effrank_fast.ops import native
from effrank_fast.ops.jacobi_eigh import default_tol, jacobi_eigh
from effrank_fast.ops.numerics import unit_roundoff
from effrank_fast.ops.spectrum_rows import spectrum_rows
from effrank_fast.ops.spectrum_rows import why_not_native as spectrum_rows_why_not
from effrank_fast.rank import formulas
from effrank_fast.tracker import SpectrumTracker

SCALARS = formulas.SPECTRUM_SCALARS[:5]  # the trackers' columns; the exact engine adds entropy_rank_err
EXACT_SOLVERS = ("auto", "jacobi", "eigvalsh")
# Largest d for which "auto" takes the cold-started Jacobi kernel on CUDA: ~10 sweeps of 4·d³ flops.
JACOBI_MAX_D = 1024
# A Jacobi result counts as converged while off(A) ≤ this × its stopping tolerance (Weyl: every
# eigenvalue is then within off·‖M‖_F, the same order as eigvalsh's backward error).
JACOBI_OFF_SLACK = 4.0
# Sweep caps: a cold solve of a graded Gram can take 30 sweeps, a warm one takes a few.
JACOBI_COLD_SWEEPS = 100
JACOBI_WARM_SWEEPS = 30


def eps_label(e: float) -> str:
    return f"{e:g}"


def _topk(lam: torch.Tensor, k: int) -> torch.Tensor:
    """The k largest of λ [..., n] (descending), NaN-padded to [..., k]."""
    top = lam[..., :k].double()
    if top.shape[-1] < k:
        top = torch.cat([top, top.new_full((*top.shape[:-1], k - top.shape[-1]), float("nan"))], -1)
    return top


class ExactEngine:
    """The certified counts of ``ef.eps_rank`` every measured step, the spectrum's measures on the
    engine's cadence (:mod:`.core`; ``solver``: see the module doc)."""

    name = "exact"

    def __init__(
        self,
        eps: torch.Tensor,
        relative: str | None,
        topk: int,
        *,
        mode: str,
        center: bool,
        solver: str = "auto",
        full_every: int | str = "auto",
    ) -> None:
        if solver not in EXACT_SOLVERS:
            raise ValueError(f"tracker_options['solver'] must be one of {EXACT_SOLVERS}, got {solver!r}")
        positive = isinstance(full_every, int) and not isinstance(full_every, bool) and full_every >= 1
        if not (full_every == "auto" or positive):
            raise ValueError(f"tracker_options['full_every'] must be 'auto' or an int >= 1, got {full_every!r}")
        self.eps, self.relative, self.topk = eps, relative, topk
        self.mode, self.center, self.solver, self.full_every = mode, center, solver, full_every
        self._eps_dev: dict[torch.device, torch.Tensor] = {}
        self._basis: dict[int, torch.Tensor] = {}  # layer → eigenvalue basis of its last matrix (Jacobi)

    def columns(self) -> list[str]:
        labels = [eps_label(e) for e in self.eps.tolist()]
        return (
            [f"eps_rank@{e}" for e in labels]
            + [f"eps_rank_certified@{e}" for e in labels]
            + [f"eps_rank_lower@{e}" for e in labels]
            + [f"eps_rank_upper@{e}" for e in labels]
            + list(SCALARS)
            + ["entropy_rank_err", "spectrum_solved"]
            + [f"lambda_{i + 1}" for i in range(self.topk)]
        )

    def solver_for(self, M: torch.Tensor) -> str:
        """The solver for this Gram: ``auto`` takes "jacobi" on CUDA when built and d is small."""
        if self.solver != "auto":
            return self.solver
        small = M.shape[0] <= JACOBI_MAX_D
        has_native = M.device.type == "cuda" and native.kernel_missing_reason("jacobi_eigh", M.device) is None
        return "jacobi" if small and has_native else "eigvalsh"

    def full_due(self, measured: int, dim: int) -> bool:
        """Whether the spectrum is solved at the ``measured``-th measured step (0-based) for a
        solved matrix of size ``dim``."""
        every = self.full_every
        if every == "auto":
            every = 1 if dim <= core.EVERY_STEP_MAX_DIM else core.FULL_EVERY_DEFAULT
        assert isinstance(every, int)
        return measured % every == 0

    def eigenvalues(self, layer: int, M: torch.Tensor) -> torch.Tensor:
        """[n] descending float64 eigenvalues of the symmetric M [n, n]; NaN if Jacobi did not converge."""
        m64 = M.double()
        if self.solver_for(M) == "eigvalsh":
            return torch.linalg.eigvalsh(m64).flip(0)
        d = m64.shape[0]
        tol = default_tol(d, torch.float64)
        last = self._basis.get(layer)
        cold = last is None or last.shape != m64.shape or last.device != m64.device
        basis = torch.eye(d, dtype=torch.float64, device=m64.device) if last is None or cold else last
        rotated = basis.mT @ m64 @ basis
        sweeps = JACOBI_COLD_SWEEPS if cold else JACOBI_WARM_SWEEPS
        # "auto" comes here only when the kernel is built; "jacobi" without it is an error row
        res = jacobi_eigh((rotated + rotated.mT) / 2, max_sweeps=sweeps, tol=tol, backend="native")
        basis = basis @ res.eigenvectors
        # rounding makes V drift from orthogonal over many steps; V ← V(3I − VᵀV)/2 pulls it back
        self._basis[layer] = 1.5 * basis - 0.5 * basis @ (basis.mT @ basis)
        converged = res.off <= JACOBI_OFF_SLACK * tol
        lam = torch.where(converged, res.eigenvalues, torch.full_like(res.eigenvalues, float("nan")))
        return lam.flip(0)

    def _eps_on(self, device: torch.device) -> torch.Tensor:
        eps = self._eps_dev.get(device)
        if eps is None:
            eps = self._eps_dev[device] = self.eps.to(device)
        return eps

    def record(self, layer: int, inp: core.LayerInput, full: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(packed values [width] float64, full spectrum [d] descending float64, or [0] when the
        spectrum was not solved this step); nothing is read back on the host."""
        dev = inp.sp.matrix.device
        eps = self._eps_on(dev)
        nan = torch.full((), float("nan"), dtype=torch.float64, device=dev)
        if full:
            s = core.solve(inp, _padded(self.eigenvalues(layer, inp.sp.matrix), inp.sp.dim))
            lam = s.lam
            scal = list(s.scalars().unbind(-1))
        else:
            lam = torch.full((0,), float("nan"), dtype=torch.float64, device=dev)
            trace, pr = core.entry_measures(inp)
            scal = [nan, nan, pr, nan, trace, nan]
        solver = self.solver_for(inp.sp.matrix)
        # a LAPACK spectrum solved this step is the certified eigh count's input too (a Jacobi one
        # may be NaN: the counts then keep their own pass)
        reuse = lam if full and solver == "eigvalsh" else None
        res = core.counts(inp, eps, self.relative, sync_free=solver == "jacobi", lam=reuse)
        counts = [res.counts, res.certified, res.lower, res.upper]
        flag = nan.new_full((), float(full))
        row = torch.cat([c.double().reshape(-1) for c in counts] + [torch.stack([*scal, flag]).double()])
        return torch.cat([row, _topk(lam, self.topk)]), lam

    def record_many(
        self, layers: list[int], inps: list[core.LayerInput], full: bool
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """:meth:`record` for several layers at one measured step. Where every matrix is solved by
        LAPACK this step and all have one shape, dtype and device (the small layers of an MLP), their
        spectra come from one batched ``eigvalsh`` and the spectrum's measures from one batched
        pass: the same rule and numbers, a third of the small-op overhead for three layers."""
        mats = [i.sp.matrix for i in inps]
        same = len({(m.shape, m.dtype, m.device, i.sp.dim) for m, i in zip(mats, inps, strict=True)}) == 1
        if not (full and len(inps) > 1 and same and all(self.solver_for(m) == "eigvalsh" for m in mats)):
            return [self.record(li, inp, full) for li, inp in zip(layers, inps, strict=True)]
        stacked = _shared_stack(inps)
        stacked = torch.stack(mats) if stacked is None else stacked
        eps = self._eps_on(stacked.device)
        native_rows = self._native_rows(inps, stacked, eps)
        if native_rows is not None:
            return native_rows
        lam = _padded(torch.linalg.eigvalsh(stacked.double()).flip(-1), inps[0].sp.dim)
        scal = core.solve_many(inps, stacked, lam).scalars()
        scal = torch.cat([scal, scal.new_ones((len(inps), 1))], -1)  # + spectrum_solved
        res = core.counts_many(inps, eps, self.relative, lam, stacked)
        if res is None:
            out = []
            for k, inp in enumerate(inps):
                one = core.counts(inp, eps, self.relative, sync_free=False, lam=lam[k])
                counts = [one.counts, one.certified, one.lower, one.upper]
                row = torch.cat([c.double().reshape(-1) for c in counts] + [scal[k], _topk(lam[k], self.topk)])
                out.append((row, lam[k]))
            return out
        parts = [res.counts, res.certified, res.lower, res.upper]
        rows = torch.cat([c.double() for c in parts] + [scal, _topk(lam, self.topk)], -1)
        return list(zip(rows.unbind(0), lam.unbind(0), strict=True))

    def _native_rows(
        self, inps: list[core.LayerInput], stacked: torch.Tensor, eps: torch.Tensor
    ) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
        """The rows below (:meth:`record_many`'s Python path: its reference) in one native pass
        (:mod:`effrank_fast.ops.spectrum_rows`), where the kernel runs and the path is its common
        case: matrices formed from uncentred features, one scale, dtype and certificate kind."""
        first = inps[0].sp
        if spectrum_rows_why_not(stacked) is not None:
            return None
        for i in inps:
            sp = i.sp
            if sp.n is None or sp.gram_error is None or (i.center and i.phi is not None) or sp.scale != 1.0:
                return None
            if sp.acc_dtype != first.acc_dtype or sp.certificate != first.certificate:
                return None
        acc = stacked.dtype if stacked.dtype in (torch.float32, torch.float64) else torch.float32
        g = torch.stack([i.sp.gram_error for i in inps])  # type: ignore[misc]
        rows, lam = spectrum_rows(stacked, None, g, eps, self.relative, first.dim, unit_roundoff(acc), self.topk)
        return list(zip(rows.unbind(0), lam.unbind(0), strict=True))

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


def _shared_stack(inps: list[core.LayerInput]) -> torch.Tensor | None:
    """The [L, n, n] stack the L inputs' matrices are the slices of, in order (formed together:
    :func:`.core.from_features_many`), else None."""
    base = inps[0].stack
    if base is None or base[0].shape[0] != len(inps):
        return None
    for k, inp in enumerate(inps):
        if inp.stack is None or inp.stack[0] is not base[0] or inp.stack[1] != k:
            return None
    return base[0]


def _padded(lam: torch.Tensor, dim: int) -> torch.Tensor:
    """λ [..., N] of the N×N kernel with the d − N zeros of the d×d Gram appended."""
    pad = dim - lam.shape[-1]
    return torch.cat([lam, lam.new_zeros((*lam.shape[:-1], pad))], -1) if pad > 0 else lam


class TrackerEngine:
    """One stateful tracker per layer (``Engine.warm()`` or a user factory)."""

    def __init__(
        self, factory: Callable[..., Any], name: str, eps: torch.Tensor, relative: str | None, topk: int
    ) -> None:
        self.factory, self.name = factory, name
        self.eps, self.relative, self.topk = eps, relative, topk
        self._eps_list = [float(e) for e in eps.tolist()]  # once: step() reads no tensor
        self._trackers: dict[int, Any] = {}
        self._last_good: dict[int, torch.Tensor] = {}
        self._pending_state: dict[int, Any] = {}

    def columns(self) -> list[str]:
        labels = [eps_label(e) for e in self._eps_list]
        return (
            [f"eps_rank@{e}" for e in labels]
            + [f"eps_rank_lower@{e}" for e in labels]
            + [f"eps_rank_upper@{e}" for e in labels]
            + [f"eps_rank_path@{e}" for e in labels]
            + list(SCALARS)
            + ["entropy_rank_err"]
            + [f"lambda_{i + 1}" for i in range(self.topk)]
        )

    def _tracker(self, layer: int, d: int) -> Any:
        tr = self._trackers.get(layer)
        if tr is None:
            tr = self._trackers[layer] = self.factory(d=d, eps=self._eps_list, relative=self.relative)
            state = self._pending_state.pop(layer, None)
            if state is not None and hasattr(tr, "load_state_dict"):
                tr.load_state_dict(state)
        return tr

    def record(self, layer: int, M: torch.Tensor, finite: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        last = self._last_good.get(layer)
        safe = torch.where(finite, M, last if last is not None else torch.zeros_like(M))
        self._last_good[layer] = safe
        tracker = self._tracker(layer, M.shape[0])
        if isinstance(tracker, SpectrumTracker):
            # SpectrumTracker: the formation error widens its certified intervals (estimated as
            # √d·u·‖M‖_F ≥ √d·u·λ_max, on the device); finiteness is the monitor's flag, not a read-back.
            err = math.sqrt(M.shape[0]) * torch.finfo(M.dtype).eps / 2 * torch.linalg.matrix_norm(safe.double())
            res = tracker.update(safe, gram_error=err, check=False)
        else:
            res = tracker.update(safe)
        dev = safe.device
        E = self.eps.numel()

        def vec(name: str, n: int) -> torch.Tensor:
            v = getattr(res, name, None)  # None for a pending result or a field the tracker lacks
            if v is None:
                return torch.full((n,), float("nan"), dtype=torch.float64, device=dev)
            return torch.as_tensor(v, device=dev).double().reshape(n)

        parts = [vec("eps_rank", E), vec("eps_rank_lower", E), vec("eps_rank_upper", E), vec("path", E)]
        parts += [vec(s, 1) for s in SCALARS] + [vec("entropy_rank_err", 1)]
        if res is None:
            lam = torch.full((0,), float("nan"), dtype=torch.float64, device=dev)
        else:
            lam = torch.as_tensor(res.eigenvalues, device=dev).double()
        parts.append(_topk(lam, self.topk))
        return torch.cat(parts), lam

    def state_dict(self) -> dict[str, Any]:
        # Loaded states of layers not measured since (their tracker not created yet) carry over.
        state = {str(i): s for i, s in self._pending_state.items()}
        state.update({str(i): t.state_dict() for i, t in self._trackers.items() if hasattr(t, "state_dict")})
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._pending_state = {int(k): v for k, v in state.items()}


def _warm_factory(options: dict[str, Any]) -> Callable[..., Any]:
    cls = SpectrumTracker
    opts = {"sync": "deferred", "refresh_every": 100, **options}
    k_default = int(opts.pop("k", 64))

    def make(d: int, eps: list[float], relative: str | None) -> Any:
        return cls(k=min(d, k_default), eps=eps, relative=relative, **opts)

    return make


def make_engine(
    tracker: object,
    eps: torch.Tensor,
    relative: str | None,
    topk: int,
    *,
    mode: str,
    center: bool,
    options: dict[str, Any] | None,
) -> ExactEngine | TrackerEngine:
    """The engine for ``tracker=``; errors name the argument."""
    if tracker == "exact":
        other = sorted(set(options or {}) - {"solver", "full_every"})
        if other:
            raise ValueError(
                f"tracker_options {other} apply to tracker='warm'; 'exact' takes only 'solver' and 'full_every'"
            )
        return ExactEngine(eps, relative, topk, mode=mode, center=center, **(options or {}))
    if tracker == "warm":
        return TrackerEngine(_warm_factory(options or {}), "warm", eps, relative, topk)
    if callable(tracker) and not isinstance(tracker, str):
        return TrackerEngine(tracker, getattr(tracker, "__name__", "custom"), eps, relative, topk)
    raise ValueError(f"tracker must be 'exact', 'warm' or a callable factory(d=, eps=, relative=), got {tracker!r}")
