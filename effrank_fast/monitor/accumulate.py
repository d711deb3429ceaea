"""Per-layer running sums from which the Gram matrix is formed at a measured step.

For the rows φ_k of every captured activation (one or several micro-batches, or one probe pass):

    G = Σ w_k φ_k φ_kᵀ   [d, d],      s = Σ w_k φ_k   [d],      m = Σ w_k   (0-d)

all on the activations' device. Plain sums compose across micro-batches and across data-parallel
ranks (an all-reduce of (G, s, m) gives the global batch), and give

    M = G − s sᵀ / m          (centred: the rank-1 downdate)   and divided by m for mode="mean".

The downdate cancels when the mean is large against the spread, so ``center=True`` accumulates in
float64 unless ``acc_dtype`` says otherwise.

Kept features: while a step's rows fit in ``keep_elements`` (N·d), the accumulator keeps a copy of
the captured features instead of summing them, so that the measurement can go through the code of
``ef.eps_rank`` itself (:mod:`.core`): the N×N kernel when N < d (the same non-zero spectrum at a
fraction of the cost), and the float64 Gram of the same values when a float32 count is not proven.
A batch's features are copied: an in-place op later in the forward must not change them. A probe's
(a forward the monitor runs itself) are kept as they are with their version counters, and that
forward runs again with copies where an in-place op did change one (``Capture.probe_intact``). Past
the limit, or when sums are needed (EMA, an all-reduce, a tracker, the fused kernel), the kept
features are folded into (G, s, m).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from effrank_fast.monitor import core
from effrank_fast.monitor.layers import Fused
from effrank_fast.ops import backends
from effrank_fast.ops.linear_act_gram import linear_act_gram
from effrank_fast.rank import gram

# The Gram backend (after EFFRANK_FAST_BACKEND) → linear_act_gram's backend. It has no "native":
# that maps to "auto" (the fused Triton kernel on CUDA, PyTorch elsewhere).
FUSED_BACKENDS = {"auto": "auto", "torch": "torch", "triton": "triton", "native": "auto"}
# Features kept per layer and step (N·d elements: 128 MiB of float32) before they are folded into sums.
KEEP_ELEMENTS = 2**25


def load_fused_kernel() -> Callable[..., object]:
    """The fused linear+activation Gram kernel (:func:`effrank_fast.ops.linear_act_gram.linear_act_gram`)."""
    return linear_act_gram


def _linear_operands(x: torch.Tensor, lin: torch.nn.Linear) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(x, W, b) in the dtype the Linear itself computed in: under autocast the autocast dtype (a
    bf16 activation meets an fp32 weight there), else x's dtype."""
    device = x.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype
    weight = lin.weight.detach().to(dtype)
    bias = None if lin.bias is None else lin.bias.detach().to(dtype)
    return x.to(dtype), weight, bias


class GramAccumulator:
    """The sums (G, s, m) of one layer since the last reset; nothing here reads device data."""

    def __init__(
        self, *, center: bool, acc_dtype: torch.dtype | None, backend: str, keep_elements: int | None = None
    ) -> None:
        self.center = center
        self.acc_dtype = acc_dtype
        self.backend = backend
        self.keep_elements = KEEP_ELEMENTS if keep_elements is None else keep_elements
        self.reset()

    def reset(self) -> None:
        self.G: torch.Tensor | None = None
        self.s: torch.Tensor | None = None
        self.m: torch.Tensor | None = None
        self.rows = 0  # host-side count of captured rows (from shapes, no sync)
        self.kept: list[tuple[torch.Tensor, torch.Tensor | None]] = []  # (φ [n, d], w [n] or None)
        self.input_dtype: torch.dtype | None = None
        self.weighted = False  # some rows came with weights (the probe's)
        self.readout_norm: torch.Tensor | None = None  # ‖c‖ of the readout Linear, taken with the features
        self._versions: list[tuple[torch.Tensor, int]] = []  # features kept uncopied, their versions then

    def kept_intact(self) -> bool:
        """Whether every feature kept without a copy still holds the values it was captured with
        (no in-place op bumped its version counter since)."""
        return all(t._version == v for t, v in self._versions)

    def note_readout(self, readout: torch.nn.Linear | None) -> None:
        """Keep ‖c‖ of the parameters that produced the features (once per step: they do not change)."""
        if readout is not None and self.readout_norm is None:
            weight = readout.weight
            if hasattr(weight, "to_local"):  # a sharded FSDP2 DTensor outside its forward: its norm needs a collective
                return
            self.readout_norm = torch.linalg.vector_norm(weight.detach(), dtype=torch.float64).reshape(1)

    @property
    def empty(self) -> bool:
        return self.G is None and not self.kept

    def _dtype(self, phi: torch.Tensor, n: int) -> torch.dtype:
        """The accumulation dtype for ``n`` rows in all (:func:`.core.acc_dtype_for`); the step's
        first sum fixes it."""
        if self.G is not None:
            return self.G.dtype
        return core.acc_dtype_for(self.acc_dtype, self.center, phi.dtype, n, phi.shape[1])

    def _add_moments(self, phi: torch.Tensor, w: torch.Tensor | None, dtype: torch.dtype) -> None:
        if w is None:
            m = phi.new_full((), float(phi.shape[0]), dtype=dtype)  # a fill on the device, no host copy
        else:
            m = w.to(dtype).sum()
        self.m = m if self.m is None else self.m + m
        if self.center:
            s = phi.to(dtype).sum(0) if w is None else w.to(dtype) @ phi.to(dtype)
            self.s = s if self.s is None else self.s + s

    def add(self, phi: torch.Tensor, w: torch.Tensor | None, copy: bool = True) -> None:
        """Accumulate the rows of ``phi`` [N, d] with weights ``w`` [N] (None: unit weights).

        ``copy=False`` keeps ``phi`` itself while it is kept, with its version counter
        (:meth:`kept_intact` then tells whether an in-place op changed it since): the probe's
        forward, which the monitor runs and can run again with copies when that happened."""
        self.input_dtype = phi.dtype
        self.weighted = self.weighted or w is not None
        same_kind = not self.kept or (self.kept[0][1] is None) == (w is None)
        fits = (self.rows + phi.shape[0]) * phi.shape[1] <= self.keep_elements
        if self.G is None and same_kind and fits:
            kept = phi.detach() if phi.requires_grad else phi
            if copy:
                kept = kept.clone()
            else:
                self._versions.append((kept, kept._version))
            self.kept.append((kept, w.detach() if w is not None and w.requires_grad else w))
            self.rows += phi.shape[0]
            return
        self.fold(extra=phi.shape[0])
        self._add_sums(phi, w, self._dtype(phi, self.rows + phi.shape[0]))
        self.rows += phi.shape[0]

    def fold(self, extra: int = 0) -> None:
        """Turn the kept features into sums (G, s, m); ``extra`` rows are about to follow."""
        kept, self.kept = self.kept, []
        for phi, w in kept:
            self._add_sums(phi, w, self._dtype(phi, self.rows + extra))

    def _add_sums(self, phi: torch.Tensor, w: torch.Tensor | None, dtype: torch.dtype) -> None:
        g = gram(phi, w, mode="sum", backend=self.backend, acc_dtype=dtype, check=False)
        self.G = g if self.G is None else self.G + g
        self._add_moments(phi, w, dtype)

    def add_fused(self, x: torch.Tensor, fused: Fused, w: torch.Tensor | None, kernel: Callable[..., object]) -> None:
        """Accumulate h = act(x Wᵀ + b) from the Linear's input ``x`` [N, k] without forming h here.

        The kernel runs on this accumulator's backend (``FUSED_BACKENDS``): backend="triton" takes the
        Triton kernel (also under the interpreter), "torch" the PyTorch reference, even on CUDA.
        """
        if self.center:
            raise ValueError("fused=True does not support center=True (the fused kernel returns no Σw·h)")
        self.fold()
        self.input_dtype = x.dtype
        self.weighted = self.weighted or w is not None
        lin = fused.linear
        d = lin.out_features
        # The kernel accumulates into an fp32 [d, d] buffer; a wider accumulator adds it afterwards.
        direct = self.G is not None and self.G.dtype == torch.float32
        out = self.G if direct else torch.zeros(d, d, dtype=torch.float32, device=x.device)
        assert out is not None
        wf = None if w is None else w.to(torch.float32)
        x_op, weight, bias = _linear_operands(x.detach(), lin)
        kernel(x_op, weight, bias, fused.act, out, wf, **self._fused_backend())
        if not direct:
            dtype = self.acc_dtype or torch.float32
            self.G = out.to(dtype) if self.G is None else self.G + out.to(self.G.dtype)
        assert self.G is not None
        self._add_moments(x, w, self.G.dtype)
        self.rows += x.shape[0]

    def _fused_backend(self) -> dict[str, str]:
        """``backend=`` for the fused kernel; left out for "auto", the kernel's default."""
        name = FUSED_BACKENDS[backends.requested_backend(self.backend)]
        return {} if name == "auto" else {"backend": name}

    def tensors(self) -> list[torch.Tensor]:
        """The sums to all-reduce across data-parallel ranks, in a fixed order."""
        self.fold()
        assert self.G is not None and self.m is not None
        return [self.G, self.m] + ([self.s] if self.s is not None else [])

    def load(self, tensors: list[torch.Tensor], invalid: torch.Tensor) -> None:
        """Take the all-reduced (G, m[, s]); G becomes NaN where ``invalid`` (a 0-d bool on the
        device) or where no rank contributed a row (m = 0), so the step's row is flagged non-finite."""
        G, m = tensors[0], tensors[1]
        bad = invalid.to(G.device) | (m == 0)
        self.G = torch.where(bad, torch.full_like(G, float("nan")), G)
        self.m = torch.where(m == 0, torch.ones_like(m), m)  # no 0/0 on top of the NaN
        self.s = tensors[2] if len(tensors) > 2 else None

    def set_tensors(self, tensors: list[torch.Tensor]) -> None:
        self.G, self.m = tensors[0], tensors[1]
        if self.s is not None:
            self.s = tensors[2]

    def matrix(self, normalise: bool) -> torch.Tensor:
        """M from the sums: centred if requested, divided by m when ``normalise`` (mode="mean", no weights)."""
        self.fold()
        assert self.G is not None and self.m is not None
        M = self.G
        if self.center:
            assert self.s is not None
            M = M - torch.outer(self.s, self.s) / self.m
        if normalise:
            M = M / self.m
        return M

    def _mode(self, weighted: bool, normalise: bool) -> str:
        """The ``ef.gram`` mode of these sums: given weights as they are, else 1/N or 1."""
        return "integral" if weighted else ("mean" if normalise else "sum")

    def features(self, normalise: bool) -> tuple[torch.Tensor, torch.Tensor | None, str, torch.dtype]:
        """(Φ [N, d], weights [N] or None, mode, accumulation dtype): the kept features as
        ``ef.eps_rank`` sees them; call only while ``kept`` is not empty."""
        phis = [p for p, _ in self.kept]
        phi = phis[0] if len(phis) == 1 else torch.cat(phis)
        ws = [w for _, w in self.kept]
        w = None if ws[0] is None else (ws[0] if len(ws) == 1 else torch.cat([x for x in ws if x is not None]))
        if normalise and w is not None:
            # 0/1 mask weights under mode="mean": the mean over the real rows, as the sums path
            # divides by m; a device-side division, no sync.
            w = w / w.sum()
        return phi, w, self._mode(w is not None, normalise), self._dtype(phi, phi.shape[0])

    def layer_input(self, normalise: bool) -> core.LayerInput:
        """The kept features' matrix (:func:`.core.from_features`); call only while ``kept`` is not empty."""
        phi, w, mode, acc_dtype = self.features(normalise)
        return core.from_features(phi, w, mode, self.center, self.backend, acc_dtype)

    def gram_input(self, M: torch.Tensor, finite: torch.Tensor, normalise: bool) -> core.LayerInput:
        """The matrix ``M`` made from these sums (after an EMA or all-reduce), with its δ_G."""
        assert self.m is not None
        mean_sq = None
        if self.center and self.s is not None:
            # W‖μ̂‖² in M's scale: μ̂ = s/m, W = m (or 1 once divided by m)
            mu_sq = (self.s.double() / self.m.double()).square().sum()
            mean_sq = mu_sq if normalise else mu_sq * self.m.double()
        return core.from_gram(
            M,
            finite,
            rows=self.rows,
            input_dtype=self.input_dtype or M.dtype,
            backend=self.backend,
            weighted=self.weighted,
            center=self.center,
            post_scale=(1.0 / max(self.rows, 1)) if normalise else None,
            mean_sq_norm=mean_sq,
            mode=self._mode(self.weighted, normalise),
        )
