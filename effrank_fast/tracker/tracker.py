"""SpectrumTracker: warm-started top-k eigenpairs and certified ε-counts of a drifting Gram matrix.

Per :meth:`SpectrumTracker.update` (docs/tracker.md):

0. M ← (M + Mᵀ)/2: the symmetric part is what is tracked (the GEMMs read all of M, the exact
   counts one triangle; for a symmetric M this is M bit for bit). It is the only read of the
   caller's tensor (see ``side_stream``).
1. tr M and ‖M‖_F² (one pass over M): trace, participation ratio.
2. Rayleigh–Ritz on last step's Ritz basis V (q = k + p columns): W = MV (the one d×d×q GEMM),
   H = VᵀW, H = YΘYᵀ by the warm Jacobi eigensolver, V ← VY, W ← WY, residuals ‖Mv_i − θ_iv_i‖.
   While a residual of the top k exceeds ``tol``·θ_1: a subspace iteration V ← orth(W) and a new
   Rayleigh–Ritz; after ``max_iters`` of them, a cold restart (random basis, ``cold_iters``
   iterations).
3. A certified interval per ε (:mod:`.certify`); an interval that is not a single point is
   settled by the exact inertia count (float64 LDLᵀ of M − τI), or by eigvalsh.
4. The entropy rank: exact top-k plus SLQ on the deflated remainder (:mod:`.slq`).
5. Every ``refresh_every`` steps an exact float64 eigh replaces all of it and re-seeds V.

Host synchronisation — the decisions that need data, and where they are taken:

* ``sync="step"`` (default): after each Rayleigh–Ritz the tracker reads ONE small flag tensor
  (accepted? which intervals are open? grow k?) — one host sync per Rayleigh–Ritz, normally one
  per update — and acts on it within the same update, so every reported count is exact.
  Escalations through the inertia kernel may read its reliability flag (another sync, only on
  steps that escalate); a refresh step runs ``eigh`` (which syncs on CUDA).
* ``sync="deferred"``: no host sync at all. Every update runs a fixed amount of work
  (``min_iters`` iterations plus one Rayleigh–Ritz); the flags are copied to pinned host memory
  without blocking and read at the *next* update once their CUDA event has completed. From them
  the next update adds an iteration (residuals too large), restarts cold (``max_iters`` failed
  updates in a row or non-finite values), grows k, and runs the exact count for the ε whose
  interval was open (speculatively: the threshold that was uncertain last step). A threshold
  whose interval opens for the first time is reported as UNRESOLVED (its interval still holds).
  Refresh steps still call ``eigh``; leave ``refresh_every=None`` for a strictly sync-free loop.
  On CUDA without the native Jacobi kernel the small eigensolves fall back to ``eigh``, which
  syncs every update: a RuntimeWarning says so once.
* ``side_stream=True`` (CUDA, requires ``sync="deferred"``): the update runs on a private stream
  that waits for the current one; ``update`` returns the *previous* step's result (None first),
  whose tensors are ready for the current stream. ``flush()`` returns the last pending one. The
  caller must not write into a Gram it passed until ``gram_released`` has fired on the writing
  stream (or use ``copy_gram=True``); see :class:`.deferred.SideStream`.

Checkpoints: ``state_dict()`` / ``load_state_dict()`` carry the basis, k, the step counter, the
pending decisions and the random generator, so a resumed tracker continues warm.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch

from effrank_fast.ops import validation
from effrank_fast.ops.jacobi_eigh import why_not_native
from effrank_fast.rank import formulas
from effrank_fast.tracker.certify import unit_roundoff
from effrank_fast.tracker.deferred import HostFlags, Pending, SideStream
from effrank_fast.tracker.escalate import settle_counts
from effrank_fast.tracker.refresh import exact_step
from effrank_fast.tracker.result import TrackPath, TrackResult
from effrank_fast.tracker.slq import entropy_rank_slq
from effrank_fast.tracker.state import Checkpointing
from effrank_fast.tracker.step import Step, ritz_step
from effrank_fast.tracker.subspace import orthonormalize, small_solver, subspace_iterations

__all__ = ["SpectrumTracker"]

_SYNC = ("step", "deferred")


def _gram_error_arg(value: object, device: torch.device, read_values: bool) -> torch.Tensor | None:
    """``gram_error`` as a 0-d float64 tensor on ``device`` (None stays None); values read only if allowed."""
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        if value.dim() != 0 or not value.is_floating_point():
            raise ValueError(f"gram_error must be a float or a 0-d floating tensor, got shape {tuple(value.shape)}")
        if value.device != device:
            raise ValueError(f"gram_error is on {value.device} but gram is on {device}")
        out = value.detach().to(torch.float64)
        if read_values and not (bool(torch.isfinite(out)) and float(out) >= 0):
            raise ValueError(f"gram_error must be finite and >= 0, got {float(out)}")
        return out
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"gram_error must be finite and >= 0, got {value!r}")
        return torch.full((), float(value), dtype=torch.float64, device=device)  # a fill: no host→device copy
    raise TypeError(f"gram_error must be None, a float or a 0-d tensor, got {type(value).__name__}")


def _int_arg(name: str, value: object, minimum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


class SpectrumTracker(Checkpointing):
    """Tracks the top-k eigenpairs of M_t = Φ_tᵀ W Φ_t across training steps, warm-started.

    Args:
        k: eigenpairs to track (grows automatically, see ``auto_grow``).
        oversample: p extra Ritz vectors (q = k + p); they speed up convergence of the top k.
        eps: thresholds ε (scalar, list or 1-D tensor); None tracks no counts.
        relative: None (τ = ε), "max" (τ = ε·λ_max) or "trace" (τ = ε·tr M).
        refresh_every: every this many updates, an exact float64 eigh (None: never).
        tol: accept when max_{i<k} ‖Mv_i − θ_iv_i‖ ≤ tol·θ_1.
        max_iters: subspace iterations per update before a cold restart.
        min_iters: iterations always run (the fixed work of ``sync="deferred"``).
        cold_iters: iterations after a cold start, a restart or a growth of k.
        auto_grow, grow_at, grow_factor, max_k: when the certified lower count of some ε reaches
            ``grow_at``·k, k ← min(max_k, ⌈grow_factor·k⌉) from the next update (max_k default d/2).
        escalate: settle open intervals with exact counts (else report them UNRESOLVED).
        sync: "step" or "deferred" (see the module docstring).
        side_stream: run on a private CUDA stream, results one step late.
        copy_gram: with ``side_stream``, clone each Gram on the current stream first, so the caller
            may overwrite its buffer at once (else wait on :attr:`gram_released`).
        slq_probes, slq_steps, erank_every: the entropy-rank estimate (probes = 0 disables it;
            otherwise it runs every ``erank_every`` updates and is NaN in between).
        dtype: working precision of the subspace arithmetic (float64 default: certificates
            with a negligible rounding margin; float32 halves the GEMM bytes).
        jacobi_sweeps: at most this many sweeps in the Rayleigh–Ritz eigensolve. VᵀMV is nearly
            diagonal here (warm: 1–2 sweeps; after a cold start's ``cold_iters`` iterations 2–7 at
            q = 288 on graded and clustered spectra), unlike a cold random matrix of those spectra
            (22–32). Hitting the cap costs time, never soundness: the off-diagonal left enters the
            residuals (so the step is not accepted and iterates), the certificate and the values.
        eigensolver: the (k+p)² eigensolve: "jacobi" (native warm Jacobi, decides convergence on the
            device), "eigh" (torch.linalg.eigh: LAPACK on CPU; on CUDA it syncs) or "auto" (jacobi
            on CUDA when built, eigh on CPU where LAPACK is faster and nothing can sync).
        seed: seeds the random starts and probes.

    Example:
        >>> tr = SpectrumTracker(k=64, eps=[1e-2, 1e-3], relative="max")
        >>> for step in range(steps):
        ...     res = tr.update(effrank_fast.gram(phi))   # res.eps_rank, res.path, res.entropy_rank
    """

    def __init__(
        self,
        k: int = 64,
        oversample: int = 16,
        eps: float | list[float] | torch.Tensor | None = None,
        relative: str | None = None,
        refresh_every: int | None = None,
        tol: float = 1e-4,
        max_iters: int = 4,
        min_iters: int = 0,
        cold_iters: int = 30,
        auto_grow: bool = True,
        grow_at: float = 0.9,
        grow_factor: float = 1.5,
        max_k: int | None = None,
        escalate: bool = True,
        sync: str = "step",
        side_stream: bool = False,
        copy_gram: bool = False,
        slq_probes: int = 8,
        slq_steps: int = 20,
        erank_every: int = 1,
        dtype: torch.dtype = torch.float64,
        jacobi_sweeps: int = 8,
        eigensolver: str = "auto",
        seed: int = 0,
    ) -> None:
        self.k = _int_arg("k", k, 1)
        self.oversample = _int_arg("oversample", oversample, 0)
        if eps is None:
            self._eps = torch.zeros(0, dtype=torch.float64)
        else:
            self._eps = validation.check_eps(eps)[0].reshape(-1)
        self.relative = validation.check_relative(relative)
        self.refresh_every = None if refresh_every is None else _int_arg("refresh_every", refresh_every, 1)
        if not (isinstance(tol, (int, float)) and tol > 0):
            raise ValueError(f"tol must be a positive number, got {tol!r}")
        self.tol = float(tol)
        self.max_iters = _int_arg("max_iters", max_iters, 0)
        self.min_iters = _int_arg("min_iters", min_iters, 0)
        self.cold_iters = _int_arg("cold_iters", cold_iters, 0)
        self.auto_grow = bool(auto_grow)
        if not 0 < grow_at <= 1:
            raise ValueError(f"grow_at must be in (0, 1], got {grow_at!r}")
        if not grow_factor > 1:
            raise ValueError(f"grow_factor must be > 1, got {grow_factor!r}")
        self.grow_at, self.grow_factor = float(grow_at), float(grow_factor)
        self.max_k = None if max_k is None else _int_arg("max_k", max_k, 1)
        self.escalate = bool(escalate)
        if sync not in _SYNC:
            raise ValueError(f"sync must be one of {_SYNC}, got {sync!r}")
        self.sync = sync
        if side_stream and sync != "deferred":
            raise ValueError("side_stream=True needs sync='deferred' (a host sync would stall the side stream's host)")
        self.side_stream = bool(side_stream)
        if copy_gram and not side_stream:
            raise ValueError("copy_gram=True only applies with side_stream=True")
        self.copy_gram = bool(copy_gram)
        self.slq_probes = _int_arg("slq_probes", slq_probes, 0)
        if self.slq_probes == 1:
            raise ValueError("slq_probes must be 0 (off) or >= 2 (the error estimate needs two probes)")
        self.slq_steps = _int_arg("slq_steps", slq_steps, 2)
        self.erank_every = _int_arg("erank_every", erank_every, 1)
        if dtype not in (torch.float32, torch.float64):
            raise TypeError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
        self.dtype = dtype
        self.jacobi_sweeps = _int_arg("jacobi_sweeps", jacobi_sweeps, 1)
        if eigensolver not in ("auto", "jacobi", "eigh"):
            raise ValueError(f"eigensolver must be 'auto', 'jacobi' or 'eigh', got {eigensolver!r}")
        self.eigensolver = eigensolver
        self.seed = int(seed)
        self.reset()

    # ------------------------------------------------------------------ state
    def reset(self) -> None:
        """Forget the basis and all pending decisions (the next update starts cold)."""
        self._v: torch.Tensor | None = None
        self._d: int | None = None
        self._device: torch.device | None = None
        self._gen: torch.Generator | None = None
        self._eps_dev = self._eps
        self._gram_dtype = torch.float32
        self._step = 0
        self._next = Pending()
        self._flags = HostFlags()
        self._side = SideStream(self.copy_gram)
        self._saved: dict[str, Any] | None = None  # loaded state that waits for the device
        self._gram_error: torch.Tensor | None = None  # this update's δ_G (set by update)
        self._warned_sync = False

    @property
    def gram_released(self) -> torch.cuda.Event | None:
        """``side_stream=True``: a CUDA event that fires once the last update has read its Gram
        (wait on it before writing into that buffer); None before the first update or otherwise."""
        return self._side.released

    @property
    def q(self) -> int:
        """Ritz basis size k + p (capped at d once d is known)."""
        q = self.k + self.oversample
        return q if self._d is None else min(q, self._d)

    # ------------------------------------------------------------------ public
    def update(
        self, gram: torch.Tensor, gram_error: float | torch.Tensor | None = None, *, check: bool = True
    ) -> TrackResult | None:
        """Track one step. ``gram``: M [d, d] (float32/float64; others are upcast). Its symmetric
        part (M + Mᵀ)/2 is tracked: M itself when M is symmetric.

        Args:
            gram_error: an absolute bound δ_G on ‖M̂ − M‖₂, the error made forming the Gram from
                the features (a float or a 0-d tensor on M's device; None = 0: M is taken as
                exact). Every certified interval then holds for the exact M: by Weyl its
                eigenvalues lie within δ_G of M̂'s, so λ_max's bounds widen by δ_G and each count
                is certified over [τ − δ_G, τ + δ_G] (exact counts at both ends; if they differ
                the count is UNRESOLVED). ``effrank_fast.ops.gram.error.gram_error_bound`` gives it.
            check: validate as ``eps_rank(gram=...)`` does (``effrank_fast.ops.validation.check_gram``:
                square, floating, finite, symmetric within 64 ulps of max |M|; the same messages).
                Reading the values syncs the host, so only ``sync="step"`` reads them; with
                ``sync="deferred"`` (or ``check=False``) only shape and dtype are checked and a
                non-finite M (or δ_G) is a device-side flag: nothing is certified that step (every
                path UNRESOLVED, ``accepted`` False) and the next update restarts cold.

        Returns this step's :class:`TrackResult`, or with ``side_stream=True`` the previous
        step's (None on the first call).
        """
        read_values = bool(check) and self.sync == "step"
        validation.check_gram(gram, check_values=read_values)
        d = gram.shape[0]
        if self._d is None:
            self._start(gram)
        elif d != self._d or gram.device != self._device:
            raise ValueError(
                f"gram changed from [{self._d}, {self._d}] on {self._device} to {tuple(gram.shape)} on {gram.device}; "
                "call reset() to track a new matrix"
            )
        self._gram_error = _gram_error_arg(gram_error, gram.device, read_values)
        fresh = gram.dtype not in (torch.float32, torch.float64)
        if fresh:
            gram = gram.float()
        return self._side.run(gram, self._update, fresh) if self.side_stream else self._update(gram)

    def flush(self) -> TrackResult | None:
        """With ``side_stream=True``: the result still pending (the current stream waits for it)."""
        return self._side.flush()

    def _start(self, gram: torch.Tensor) -> None:
        """First update after construction, reset() or load_state_dict(): bind d and the device."""
        d = gram.shape[0]
        self._check_saved(d)
        if self.k > d:
            raise ValueError(f"k = {self.k} exceeds the Gram size d = {d}")
        if self.side_stream and gram.device.type != "cuda":
            raise ValueError("side_stream=True needs a CUDA gram")
        self._d, self._device = d, gram.device
        self._gen = torch.Generator(device=gram.device).manual_seed(self.seed)
        self._eps_dev = self._eps.to(gram.device)  # once: a host→device copy syncs
        self._restore_saved(gram.device)

    # ------------------------------------------------------------------ one update
    def _update(self, gram: torch.Tensor) -> TrackResult:
        self._step += 1
        self._consume_flags()
        gram = torch.add(gram, gram.mT).mul_(0.5)  # exact for a symmetric M: (a + a)/2 = a
        self._side.mark_read()
        trace = torch.diagonal(gram).sum(dtype=torch.float64)
        fro_sq = torch.linalg.vector_norm(gram, dtype=torch.float64).square()
        if self.refresh_every is not None and self._step % self.refresh_every == 0:
            return self._refresh(gram, trace, fro_sq)
        g = gram.to(self.dtype)
        self._gram_dtype = gram.dtype

        iterations, restarted, cold = 0, False, False
        v, nxt = self._v, self._next
        if v is None or nxt.restart:
            restarted, cold = v is not None, True
            v, n = self._cold(g), self.cold_iters
            iterations += n
        elif nxt.grow:
            v, n = self._grow(g, v), self.cold_iters
            iterations += n
        nxt.restart = nxt.grow = False
        n_more = self.min_iters + nxt.extra
        v = subspace_iterations(g, v, n_more)
        iterations += n_more

        st = self._rayleigh_ritz(g, v, trace, fro_sq)
        if self.sync == "step":
            tries = 0
            while True:
                flags = st.flags.tolist()  # THE sync point of sync="step"
                if flags[0] or (cold and tries >= self.max_iters):
                    break
                if tries >= self.max_iters:
                    v, restarted, cold, tries = self._cold(g), True, True, 0
                    iterations += self.cold_iters
                else:
                    v, tries = orthonormalize(st.ritz.gv, fallback=st.ritz.vectors), tries + 1
                    iterations += 1
                st = self._rayleigh_ritz(g, v, trace, fro_sq)
            nxt.grow = bool(flags[2])
            # Non-finite data (a NaN Gram): nothing to settle, and eigvalsh would raise on it.
            open_idx = [] if flags[1] else [e for e, o in enumerate(flags[3:]) if o]
        else:
            open_idx = list(nxt.open_idx)
            self._flags.publish(st.flags)
        self._v = st.ritz.vectors
        unresolved = int(TrackPath.UNRESOLVED)
        path = torch.where((st.lower == st.upper) & st.finite, int(TrackPath.CERTIFIED), unresolved)
        counts = st.ritz_count
        if self.escalate:
            eps = self._eps_dev
            sync_ok = self.sync == "step"
            counts, path = settle_counts(
                gram, eps, self.relative, st.tau, st.tau_lo, st.tau_hi, counts, path, open_idx, sync_ok,
                both_ends=self._gram_error is not None,
            )  # fmt: skip
            path = torch.where(st.finite, path, unresolved)  # a deferred escalation may have run on NaN
        erank, erank_err = self._entropy(gram, st, trace)
        k = min(self.k, st.ritz.vectors.shape[1])
        theta_max = st.cert.lam_lo + st.cert.margin
        # θ_i are Rayleigh quotients; the Ritz values (which interlace) lie within ‖E‖_F of them.
        off = st.cert.off
        return TrackResult(
            eigenvalues=st.ritz.theta[:k] - off,
            eigenvectors=st.ritz.vectors[:, :k],
            residuals=st.ritz.resid[:k] + off,
            eps=self._eps_dev,
            relative=self.relative,
            thresholds=st.tau,
            eps_rank=counts,
            eps_rank_lower=st.lower,
            eps_rank_upper=st.upper,
            path=path,
            lambda_max=theta_max,
            lambda_max_upper=st.cert.lam_hi,
            trace=trace,
            fro_sq=fro_sq,
            stable_rank=trace / torch.where(theta_max > 0, theta_max, torch.ones_like(theta_max)),
            participation_ratio=formulas.participation_ratio_from_moments(trace, fro_sq),
            entropy_rank=erank,
            entropy_rank_err=erank_err,
            margin=st.cert.margin,
            accepted=st.accepted,
            iterations=iterations,
            restarted=restarted,
            refreshed=False,
            k=k,
            step=self._step,
        )

    # ------------------------------------------------------------------ pieces
    def _solver(self, device: torch.device) -> str:
        """jacobi_eigh backend for the small eigensolves."""
        solver = small_solver(self.eigensolver, device)
        if solver == "eigh" and device.type == "cuda" and self.sync == "deferred" and not self._warned_sync:
            self._warned_sync = True
            why = why_not_native(device) or f"eigensolver={self.eigensolver!r}"
            warnings.warn(
                "SpectrumTracker(sync='deferred'): the small eigensolves run torch.linalg.eigh, which synchronises "
                f"with the host on CUDA at every update ({why}); eigensolver='jacobi' never does (pure-PyTorch "
                "rotations when the native kernel is missing: slower, no sync)",
                RuntimeWarning,
                stacklevel=4,
            )
        return solver

    def _randn(self, d: int, n: int) -> torch.Tensor:
        return torch.randn(d, n, generator=self._gen, device=self._device, dtype=self.dtype)

    def _cold(self, g: torch.Tensor) -> torch.Tensor:
        return subspace_iterations(g, orthonormalize(self._randn(g.shape[0], self.q)), self.cold_iters)

    def _grow(self, g: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        d = g.shape[0]
        cap = self.max_k if self.max_k is not None else max(1, d // 2)
        self.k = max(self.k, min(cap, max(self.k + 1, math.ceil(self.k * self.grow_factor))))
        extra = self.q - v.shape[1]
        if extra > 0:
            v = orthonormalize(torch.cat([v, self._randn(d, extra)], dim=1))
        return subspace_iterations(g, v, self.cold_iters)

    def _rayleigh_ritz(self, g: torch.Tensor, v: torch.Tensor, trace: torch.Tensor, fro_sq: torch.Tensor) -> Step:
        d = g.shape[0]
        cap = self.max_k if self.max_k is not None else max(1, d // 2)
        u = unit_roundoff(self.dtype)
        return ritz_step(
            g,
            v,
            trace=trace,
            fro_sq=fro_sq,
            eps=self._eps_dev,
            relative=self.relative,
            k=self.k,
            tol=self.tol,
            grow_count=self.grow_at * self.k if self.auto_grow and self.k < cap else None,
            u=u,
            extra=u if self._gram_dtype == torch.float64 and self.dtype == torch.float32 else 0.0,
            max_sweeps=self.jacobi_sweeps,
            backend=self._solver(g.device),
            gram_error=self._gram_error,
        )

    def _entropy(self, g: torch.Tensor, st: Step, trace: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        nan = torch.full((), float("nan"), dtype=torch.float64, device=g.device)
        if self.slq_probes == 0 or self._step % self.erank_every != 0:
            return nan, nan
        k = min(self.k, st.ritz.theta.shape[0])
        return entropy_rank_slq(
            g,
            st.ritz.vectors[:, :k],
            st.ritz.theta[:k],
            trace,
            probes=self.slq_probes,
            steps=self.slq_steps,
            generator=self._gen,
            backend=self._solver(g.device),
        )

    def _refresh(self, gram: torch.Tensor, trace: torch.Tensor, fro_sq: torch.Tensor) -> TrackResult:
        eps = self._eps_dev
        res, self._v = exact_step(
            gram, eps, self.relative, self.k, self.q, trace, fro_sq, self._step, self.dtype, self._gram_error
        )
        self._next = Pending(open_idx=self._next.open_idx)  # thresholds open before stay speculated
        return res

    # ------------------------------------------------------------------ deferred decisions
    def _consume_flags(self) -> None:
        """Act on the last published flags if they have arrived (never waits)."""
        if self.sync != "deferred":
            return
        f = self._flags.poll()
        if f is not None:  # else not there yet: keep the previous decisions
            self._next.absorb(f, self.max_iters)
