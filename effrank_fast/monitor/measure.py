"""One measured step of RankMonitor: accumulated Gram sums → one row of measures per layer.

Everything stays on the device: the rows are stacked into one [layers, width] float64 tensor that
the monitor copies to the host only at a flush. A layer that fails gets a NaN row and an error
message; the other layers are still measured.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from effrank_fast.monitor import core
from effrank_fast.monitor import distributed as dd
from effrank_fast.monitor.accumulate import GramAccumulator
from effrank_fast.monitor.engines import ExactEngine
from effrank_fast.monitor.layers import Layer


class LayerMeasurer:
    """Turns each layer's :class:`GramAccumulator` into the engine's measures.

    Args:
        engine: the spectral engine (``monitor.engines``): ``record(i, M, finite) -> (row, λ)``.
        normalise: divide the sums by the total weight (mode="mean" without weights).
        ema_decay: β of M ← β·M + (1 − β)·M_step, or None for no EMA.
        spectrum_every: keep λ every this many steps (0: never).
        distributed: all-reduce the sums across data-parallel ranks first.
        probe: the features come from a probe forward (only changes an error message).
    """

    def __init__(
        self,
        engine: Any,
        *,
        normalise: bool,
        ema_decay: float | None,
        spectrum_every: int,
        distributed: bool,
        probe: bool,
    ) -> None:
        self.engine = engine
        self.normalise = normalise
        self.ema_decay = ema_decay
        self.spectrum_every = spectrum_every
        self.distributed = distributed
        self.probe = probe
        self.ema: dict[str, torch.Tensor] = {}
        self.reducer = dd.LayerReducer()
        self.width = len(engine.columns()) + 2  # + readout norm + finiteness flag
        self.measured = 0  # measured steps so far (the exact engine's spectrum cadence)

    def measure(
        self,
        step: int,
        layers: Sequence[Layer],
        accs: Sequence[GramAccumulator],
        capture_errors: dict[int, str],
        warn: Callable[[str, str], None],
        loss: torch.Tensor | float = math.nan,
    ) -> tuple[torch.Tensor, dict[int, str], list[tuple[int, torch.Tensor]], torch.Tensor | float]:
        """(rows [layers, width] float64, {layer: error}, [(layer, λ)], loss) for this step.

        Data-parallel, the returned loss is the mean of the ranks' ``loss``, reduced in the same
        all-reduce as the Gram sums (a 0-d tensor in the dtype of the first layer's sums).
        """
        errors: dict[int, str] = {li: msg for li, msg in capture_errors.items() if li < len(accs)}
        if self.distributed:  # every rank joins, with zeros for what it did not capture (dd.LayerReducer)
            for acc in accs:
                acc.fold()  # the reducer all-reduces sums, not kept features
            loss, errors = self.reducer.reduce(accs, errors, loss)
        for li, acc in enumerate(accs):
            if li not in errors and acc.empty:
                how = "the probe forward" if self.probe else "a forward pass with grad enabled"
                errors[li] = f"no activations captured since the last step (expected {how})"
        take_spectrum = self.spectrum_every > 0 and step % self.spectrum_every == 0
        records = self._records(layers, accs, errors, take_spectrum)
        spectra = [(li, lam) for li, _, lam, _ in records if take_spectrum and lam.numel()]
        for li, msg in errors.items():
            warn(f"layer:{li}:{msg[:40]}", f"RankMonitor: layer {layers[li].label!r} at step {step}: {msg}")
        self.measured += 1
        return self._table(records, accs), errors, spectra, loss

    def _table(
        self, records: list[tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]], accs: Sequence[GramAccumulator]
    ) -> torch.Tensor:
        """[layers, width]: each measured layer's values, its readout norm (taken at capture time:
        the same parameters as the features) and finiteness flag; NaN for a layer without a record.
        One stack for all layers where they share a device (a few ops a step instead of a few per layer)."""
        device = records[0][1].device if records else torch.device("cpu")

        def table() -> torch.Tensor:  # NaN rows (allocated only where some layer has none)
            return torch.full((len(accs), self.width), float("nan"), dtype=torch.float64, device=device)

        if not records:
            return table()
        norms = [accs[li].readout_norm for li, *_ in records]
        nan = torch.full((1,), float("nan"), dtype=torch.float64, device=device)
        parts = [
            (vec, nan if ro is None else ro, finite) for (_, vec, _, finite), ro in zip(records, norms, strict=True)
        ]
        if any(t.device != device for part in parts for t in part):  # layers on several devices: row by row
            out = table()
            for (li, *_), (vec, ro, finite) in zip(records, parts, strict=True):
                out[li] = torch.cat([vec, ro.to(vec.device), finite.double().reshape(1)]).to(device)
            return out
        block = torch.cat(
            [
                torch.stack([v for v, _, _ in parts]),
                torch.cat([r for _, r, _ in parts])[:, None],
                torch.stack([f for _, _, f in parts]).double()[:, None],
            ],
            1,
        )
        index = [li for li, *_ in records]
        if index == list(range(len(accs))):
            return block
        out = table()
        out[index] = block
        return out

    def _records(
        self,
        layers: Sequence[Layer],
        accs: Sequence[GramAccumulator],
        errors: dict[int, str],
        take_spectrum: bool,
    ) -> list[tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]]:
        """[(layer, row, λ, finite)] of the layers without an error; a failing layer's message goes
        to ``errors``. The exact engine gets the layers solved this step together
        (:meth:`ExactEngine.record_many`: one batched eigensolve for the small layers)."""
        out = []
        engine = self.engine
        if not isinstance(engine, ExactEngine):
            for li, (layer, acc) in enumerate(zip(layers, accs, strict=True)):
                if li not in errors:
                    try:
                        out.append((li, *self._record(li, layer, acc)))
                    except Exception as exc:
                        errors[li] = f"{type(exc).__name__}: {exc}"
            return out
        groups: dict[bool, list[tuple[int, core.LayerInput]]] = {True: [], False: []}
        for li, inp in self._inputs(layers, accs, errors):
            groups[take_spectrum or engine.full_due(self.measured, inp.sp.matrix.shape[0])].append((li, inp))
        for full, group in groups.items():
            if not group:
                continue
            results: list[tuple[torch.Tensor, torch.Tensor] | None]
            try:
                results = list(engine.record_many([li for li, _ in group], [inp for _, inp in group], full))
            except Exception:  # one layer's failure must not take the others' rows: one by one
                results = []
                for li, inp in group:
                    try:
                        results.append(engine.record(li, inp, full))
                    except Exception as exc:
                        errors[li] = f"{type(exc).__name__}: {exc}"
                        results.append(None)
            for (li, inp), res in zip(group, results, strict=True):
                if res is not None:
                    out.append((li, res[0], res[1], inp.finite))
        return out

    def _inputs(
        self, layers: Sequence[Layer], accs: Sequence[GramAccumulator], errors: dict[int, str]
    ) -> list[tuple[int, core.LayerInput]]:
        """[(layer, input)] of the layers without an error, in order; a failing layer's message goes to
        ``errors``. Kept features of one shape that share their weights (a probe's layers of one
        width, or one batch's) are formed together (:func:`.core.from_features_many`)."""
        out: dict[int, core.LayerInput] = {}
        # (shape, dtype, device, weights, mode, backend) → (weights, mode, backend, [(layer, Φ)])
        alike: dict[tuple[object, ...], tuple[torch.Tensor | None, str, str, list[tuple[int, torch.Tensor]]]] = {}
        for li, (layer, acc) in enumerate(zip(layers, accs, strict=True)):
            if li in errors:
                continue
            try:
                if acc.kept and self.ema_decay is None and not acc.center:
                    phi, w, mode, acc_dtype = acc.features(self.normalise)
                    if acc_dtype == torch.float64:
                        # the same weights: one probe's (kept per layer as views of one tensor)
                        same_w = None if w is None else (w.data_ptr(), w.shape, w.stride(), w.dtype)
                        key = (phi.shape, phi.dtype, phi.device, same_w, mode, acc.backend)
                        alike.setdefault(key, (w, mode, acc.backend, []))[3].append((li, phi))
                        continue
                out[li] = self._input(layer, acc)
            except Exception as exc:
                errors[li] = f"{type(exc).__name__}: {exc}"
        for w, mode, backend, group in alike.values():
            try:
                inps = core.from_features_many([phi for _, phi in group], w, mode, backend)
                out.update((li, inp) for (li, _), inp in zip(group, inps, strict=True))
            except Exception as exc:
                for li, _ in group:
                    errors[li] = f"{type(exc).__name__}: {exc}"
        return sorted(out.items(), key=lambda item: item[0])

    def _input(self, layer: Layer, acc: GramAccumulator) -> core.LayerInput:
        """The exact engine's input: the kept features as ``ef.eps_rank`` sees them (the N×N kernel
        when N < d), or the summed Gram with its δ_G."""
        if acc.kept and self.ema_decay is None:
            return acc.layer_input(self.normalise)
        M = acc.matrix(self.normalise)
        finite = torch.isfinite(M).all()
        return acc.gram_input(self._ema_update(layer.label, M, finite), finite, self.normalise)

    def _record(self, li: int, layer: Layer, acc: GramAccumulator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(row, λ, finite) of one layer for a tracker engine (the Gram from the sums)."""
        engine = self.engine
        M = acc.matrix(self.normalise)
        finite = torch.isfinite(M).all()
        M = self._ema_update(layer.label, M, finite)
        vec, lam = engine.record(li, M, finite)
        return vec, lam, finite

    def _ema_update(self, label: str, M: torch.Tensor, finite: torch.Tensor) -> torch.Tensor:
        if self.ema_decay is None:
            return M
        prev = self.ema.get(label)
        if prev is None:
            new = M
        else:
            prev = prev.to(M.device, M.dtype)
            # a non-finite step leaves the average untouched (it is flagged in its own row)
            new = torch.where(finite, self.ema_decay * prev + (1.0 - self.ema_decay) * M, prev)
        self.ema[label] = new
        return new
