"""RankMonitor: a drop-in, every-step monitor of hidden-layer ranks.

    mon = effrank_fast.RankMonitor(model, eps=[1e-2, 1e-3], log="runs/x")
    for x, y in data:
        loss = loss_fn(model(x), y); opt.zero_grad(); loss.backward(); opt.step()
        mon.step(loss=loss)          # no host sync here
    mon.close()                      # flushes; mon.history has one row per (step, layer)

Row t pairs the loss with the ranks of the same parameters θ_t: without a probe the features
are those of the loss's own forward pass; with a probe it runs just before the optimizer updates
θ_t (an optimizer step pre-hook, see :mod:`.pre_step`), so step 0 is the initial network.
The training forward is never changed: hooks only read (detached) activations. ``step()`` and
``close()`` never raise: a failed measurement is recorded (NaN measures, ``error`` column) with
a warning, and odd inputs are handled as :mod:`.inputs` says.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from effrank_fast import safe_io
from effrank_fast.monitor import distributed as dd
from effrank_fast.monitor import layers as L
from effrank_fast.monitor import runfiles
from effrank_fast.monitor.accumulate import GramAccumulator, load_fused_kernel
from effrank_fast.monitor.alerts import Alerts, CollapseAlert
from effrank_fast.monitor.capture import Capture
from effrank_fast.monitor.config import (
    Accumulate,
    Engine,
    Features,
    Probe,
    ProbeInputs,
    RunLog,
    as_accumulate,
    as_engine,
    as_log,
    as_probe,
    check_probe_weights,
    positive_int,
    upgrade_legacy,
)
from effrank_fast.monitor.engines import make_engine
from effrank_fast.monitor.history import Records, history_cap, read_jsonl
from effrank_fast.monitor.inputs import loss_value, step_number
from effrank_fast.monitor.measure import LayerMeasurer
from effrank_fast.monitor.pre_step import ProbeRunner, ProbeSchedule
from effrank_fast.monitor.sinks import HISTORY_JSONL
from effrank_fast.ops import validation


class RankMonitor:
    """Measure the rank of hidden-layer features every ``every`` training steps.

    Args:
        model: the ``nn.Module`` whose forward passes are observed (hooks are added to it).
        layers: "last_hidden" (the input of the final ``nn.Linear`` call), "all_hidden", or a
            list / ``{label: spec}`` dict of module names (``"net.3"`` output, ``"net.4:in"``
            input), modules, or callables ``fn(model) -> nn.Module``. See :mod:`.layers`.
        eps: thresholds ε of the ε-rank #{λ(M) > τ} (one or several; one spectrum serves all).
        relative: None (τ = ε), "max" (τ = ε·λ_max) or "trace" (τ = ε·tr M).
        every: measure every this many steps (``step % every == 0``).
        probe: a :class:`~effrank_fast.monitor.Probe` (or its inputs: a Tensor [N, ...], a tuple
            of positional inputs, a dict of keyword inputs): the model is run on these points under
            ``no_grad`` and in eval mode at each measured step, just before the optimizer updates
            the parameters (or in ``step()`` when no optimizer stepped), so each row's ranks and
            loss belong to the same parameters. Without a probe, the training forward passes
            since the last step are used (micro-batches add up; forwards under ``no_grad`` are
            ignored).
        features: a :class:`~effrank_fast.monitor.Features`: how activations become the Gram
            (mode, centring, accumulation dtype, backend, fused linear+activation kernel).
        engine: an :class:`~effrank_fast.monitor.Engine`, "exact", "warm" or a tracker factory:
            how each Gram becomes a row (top-k eigenvalues, full-spectrum cadence, solver).
        log: a :class:`~effrank_fast.monitor.RunLog` or a run folder: files, TensorBoard, flush
            cadence, run metadata, in-memory history.
        accumulate: an :class:`~effrank_fast.monitor.Accumulate`, "step" or "ema".
        distributed: all-reduce the Gram sums across data-parallel ranks (None: automatic); the
            ``loss`` column is then the mean of the ranks' losses, in the same all-reduce.
        alerts: collapse alerts (:class:`~effrank_fast.monitor.alerts.CollapseAlert`, one or a
            list), checked on each flush's rows; ``mon.alerts.stop_requested`` after a "stop".

    The 0.1 keywords (``weights=``, ``mode=``, ``center=``, ``acc_dtype=``, ``gram_backend=``,
    ``fused=``, ``tracker=``, ``topk=``, ``spectrum_every=``, ``tracker_options=``, ``log_dir=``,
    ``tensorboard=``, ``flush_every=``, ``meta=``, ``keep_history=``, ``ema_decay=``) still work
    for this release, with a ``DeprecationWarning`` naming their new place.
    """

    def __init__(
        self,
        model: nn.Module,
        layers: object = "last_hidden",
        eps: float | Sequence[float] | torch.Tensor = (1e-2, 1e-3, 1e-4),
        *,
        relative: str | None = None,
        every: int = 1,
        probe: Probe | ProbeInputs | None = None,
        features: Features | None = None,
        engine: Engine | str | Callable[..., Any] = "exact",
        log: RunLog | str | Path | None = None,
        accumulate: Accumulate | str = "step",
        distributed: bool | None = None,
        alerts: CollapseAlert | Sequence[CollapseAlert] | None = None,
        **legacy: Any,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        probe_cfg, feat, eng, log_cfg, acc = upgrade_legacy(
            legacy, as_probe(probe), features or Features(), as_engine(engine), as_log(log), as_accumulate(accumulate)
        )
        self.model = model
        self.eps, _ = validation.check_eps(eps)
        self.relative = validation.check_relative(relative)
        self.every = positive_int("every", every)
        self.features, self.engine_config, self.log_config, self.accumulation = feat, eng, log_cfg, acc
        # Flat views of the options that the row and file code reads.
        self.flush_every, self.topk, self.spectrum_every = log_cfg.flush_every, eng.topk, eng.spectrum_every
        self.accumulate, self.ema_decay = acc.kind, float(acc.ema_decay)
        self.weights = None if probe_cfg is None else probe_cfg.weights
        self.probe = None if probe_cfg is None else ProbeRunner(probe_cfg.inputs, self.weights)
        if self.probe is not None and self.weights is not None:
            validation.check_weights(self.weights, self.probe.n, self.weights.device, check_values=True)
        self.mode = check_probe_weights(probe_cfg, feat)
        self.center, self.fused = feat.center, feat.fused
        self.gram_backend, self.acc_dtype = feat.backend, feat.acc_dtype
        exact = {"solver": eng.solver, "full_every": eng.full_every}
        options = dict(eng.tracker_options) if eng.kind == "warm" else exact
        self.engine = make_engine(
            eng.kind, self.eps, self.relative, self.topk, mode=self.mode, center=self.center, options=options
        )
        self.distributed = dd.resolve(distributed)
        self.rank, self.world = (dd.rank(), dd.world_size()) if self.distributed else (0, 1)
        self.measurer = LayerMeasurer(
            self.engine,
            normalise=self.mode == "mean" and self.weights is None,
            ema_decay=self.ema_decay if self.accumulate == "ema" else None,
            spectrum_every=self.spectrum_every,
            distributed=self.distributed,
            probe=self.probe is not None,
        )
        L.check_spec(layers, model)
        self.log_dir = None if log_cfg.dir is None else Path(log_cfg.dir)
        self.keep_history = log_cfg.keep_history
        self.run_meta = dict(log_cfg.meta)

        self.alerts = Alerts.of(alerts)
        # fn(rows) called with each flush's rows (the integrations' sinks); a failure is a warning
        self.row_listeners: list[Callable[[list[dict[str, Any]]], None]] = []
        self._records: Records | None = None
        self._history: list[dict[str, Any]] = []
        self._warned: set[str] = set()
        self._step = 0
        self._since_flush = 0
        self._armed = True
        self._closed = False
        self._t0, self._wall_offset = time.perf_counter(), 0.0
        self.files = (
            runfiles.RunFiles(self.log_dir, log_cfg.tensorboard)
            if self.log_dir is not None and self.rank == 0
            else None
        )
        self.capture = Capture(
            model,
            layers,
            make_acc=lambda: GramAccumulator(center=self.center, acc_dtype=self.acc_dtype, backend=self.gram_backend),
            fused_kernel=load_fused_kernel() if self.fused else None,
            probe_mode=self.probe is not None,
            batch_gate=lambda: self._armed and torch.is_grad_enabled(),
            on_resolved=self._on_layers,
            warn=self._warn,
            axis=feat.axis,
            mask=feat.mask,
        )
        if self.probe is not None:  # resolve and run it now: configuration errors surface here
            self.capture.raise_discovery = True
            try:
                self.probe.check(model, self.capture, shard=self._shard)
            finally:
                self.capture.raise_discovery = False
            if not self.capture.layers:
                raise ValueError(f"layers={layers!r}: the probe forward did not reach an nn.Linear")
        self.schedule: ProbeSchedule | None = None
        if self.probe is not None:
            self.schedule = ProbeSchedule(model, self._run_probe, due=lambda: self._armed and not self._closed)

    @property
    def layers(self) -> list[L.Layer]:
        """The resolved layers (empty until the first forward pass for automatic specs without a probe)."""
        capture = getattr(self, "capture", None)  # None while the constructor builds it
        return capture.layers if capture is not None else []

    @property
    def layer_names(self) -> list[str]:
        """The labels of the resolved layers (see :meth:`layer_info` for where each comes from)."""
        return [l.label for l in self.layers]

    @property
    def _shard(self) -> tuple[int, int] | None:
        return (self.rank, self.world) if self.distributed else None

    def _on_layers(self, layers: list[L.Layer]) -> None:
        self._records = Records([l.label for l in layers], self.engine.columns())
        self._write_meta()

    # ------------------------------------------------------------------ the training-loop API
    def step(self, loss: object = None, *, step: int | None = None) -> None:
        """Record one training step (call it once per optimizer step, after the forward); never raises.

        Args:
            loss: the step's loss: a 0-d tensor, a per-sample tensor (its mean is logged), an int or
                float, or None; anything else is logged as NaN with a warning (:mod:`.inputs`).
            step: an explicit step number; it must increase (else: renumbered, with a warning).

        On a measured step this forms each layer's Gram matrix and its measures on the device
        (running the probe first, unless an optimizer step pre-hook already ran it on the same
        parameters); nothing is copied to the host until the next flush.
        """
        if self._closed:
            self._warn("closed", "RankMonitor.step() after close() is ignored")
            return
        s = self._step
        try:
            s = step_number(step, self._step, self._warn)
            if s % self.every == 0:
                self._measure_step(s, loss_value(loss, self._warn))
        except Exception as exc:  # a bug here must not stop the training run, nor lose the row
            self._warn("step:" + type(exc).__name__, f"RankMonitor.step() failed at step {s} ({exc!r}); ignored")
            self._error_row(s, f"{type(exc).__name__}: {exc}")
        finally:
            try:
                self._end_step(s)
            except Exception as exc:
                self._warn("end:" + type(exc).__name__, f"RankMonitor.step() failed after step {s} ({exc!r})")
                self._step, self._armed = s + 1, (s + 1) % self.every == 0

    def _error_row(self, s: int, msg: str) -> None:
        """Make sure step ``s`` has its row: every layer NaN with ``msg`` (unless it was recorded)."""
        rec = self._records
        if rec is None or s % self.every or (len(rec) and rec.last_step == s):
            return
        with contextlib.suppress(Exception):
            rec.append(s, self._wall(), float("nan"), None, dict.fromkeys(range(len(rec.labels)), msg), [])

    def _end_step(self, s: int) -> None:
        self.capture.reset()
        if self.schedule is not None:
            self.schedule.step_done()
        self._step = s + 1
        self._armed = self._step % self.every == 0
        self._since_flush += 1
        if self._since_flush >= self.flush_every:
            self.flush()

    def _run_probe(self) -> None:
        """The probe forward of the coming measured step; a failure becomes that step's error rows."""
        assert self.probe is not None
        try:
            self.probe.run(self.model, self.capture, measure=True, shard=self._shard)
        except Exception as exc:
            msg = f"probe forward failed: {type(exc).__name__}: {exc}"
            self.capture.errors.update(dict.fromkeys(range(len(self.layers)), msg))

    def _measure_step(self, s: int, loss: torch.Tensor | float) -> None:
        wall = self._wall()
        errors: dict[int, str] = {}
        values: torch.Tensor | None = None
        spectra: list[tuple[int, torch.Tensor]] = []
        try:
            if self.schedule is not None:
                self.schedule.ensure()  # unless the optimizer pre-hook already probed θ_t
            self.capture.replay()  # what compiled forwards left for the eager side
            if not self.layers:
                self.capture.resolve_pending()
            if not self.layers:
                self._warn(
                    "unresolved", f"RankMonitor: layers={self.capture.spec!r} not resolved yet (no forward pass seen)"
                )
                if self.distributed:  # the other ranks' collectives still need this one (zeros)
                    self.measurer.reducer.reduce([], {}, loss)
                return
            values, errors, spectra, loss = self.measurer.measure(
                s, self.layers, self.capture.acc, self.capture.errors, self._warn, loss
            )
        except Exception as exc:
            msg = f"{type(exc).__name__}: {exc}"
            errors = dict.fromkeys(range(len(self.layers)), msg)
            self._warn("measure:" + type(exc).__name__, f"RankMonitor: measuring step {s} failed ({msg})")
        if self._records is not None:
            self._records.append(s, wall, loss, values, errors, spectra)

    # ------------------------------------------------------------------ results and files
    def flush(self) -> None:
        """Copy pending results to the host (one sync), append them to history and the files; never raises.

        Rows a failed write could not store stay queued in the files' sinks and are written
        first at the next flush that succeeds (see :mod:`.runfiles`).
        """
        try:
            self._flush()
        except Exception as exc:  # a bug here must not stop the training run
            self._warn("flush:" + type(exc).__name__, f"RankMonitor.flush() failed ({type(exc).__name__}: {exc})")

    def _flush(self) -> None:
        self._since_flush = 0
        rows: list[dict[str, Any]] = []
        spectrum: list[dict[str, Any]] = []
        if self._records is not None and len(self._records):
            rows, spectrum = self._records.drain()
        if rows:
            self._keep(rows)
            bad = sorted({(r["layer"], r["step"]) for r in rows if r["nonfinite"]})
            if bad:
                self._warn(
                    f"nonfinite:{bad[0][1]}",  # once per flush that holds such steps
                    f"RankMonitor: non-finite activations (NaN/Inf) at {len(bad)} (layer, step) pairs, first "
                    f"{bad[:5]}; their measures are logged as NaN with nonfinite=true",
                )
        if self.files is not None and (rows or self.files.waiting):
            full = history_cap(self.keep_history) is None
            err = self.files.write(rows, spectrum, earlier=lambda: self._history if full else None)
            if err is not None:  # warn once per outage; the rows wait for the next flush
                self._warn(
                    f"files:{len(self.files.failures)}",
                    f"RankMonitor: writing {self.files.dir} failed ({err}); the rows are kept and written at the "
                    "next flush that succeeds (recorded in meta.json's write_errors)",
                )
            self._write_meta()  # its "steps" count follows the run (an interrupted run's report reads it)
        self._notify(rows)

    def _notify(self, rows: list[dict[str, Any]]) -> None:
        """Hand the flushed rows to the collapse alerts and the row listeners (never raises)."""
        for fn in (self.alerts.check, *self.row_listeners):
            try:
                fn(rows)
            except Exception as exc:
                msg = f"RankMonitor: {fn!r} failed on flushed rows ({type(exc).__name__}: {exc})"
                self._warn(f"listener:{fn!r}", msg)

    def _keep(self, rows: list[dict[str, Any]]) -> None:
        """Add flushed rows to ``history``: all of them, none, or the last K (``keep_history=K``)."""
        cap = history_cap(self.keep_history)
        if cap == 0:
            return
        self._history.extend(rows)
        if cap is not None and len(self._history) > cap:
            del self._history[: len(self._history) - cap]

    @property
    def history(self) -> list[dict[str, Any]]:
        """The rows so far, one per (measured step, layer); flushes first (a host sync)."""
        self.flush()
        return self._history

    def layer_info(self) -> dict[str, dict[str, object]]:
        """{label: where the features come from} for the resolved layers."""
        return {l.label: l.info() for l in self.layers}

    def close(self) -> None:
        """Flush, remove every hook and close the files. Safe to call twice; never raises (it warns)."""
        if self._closed:
            return
        self._closed = True
        for what, action in (
            ("flush", self.flush),
            ("hooks", self._remove_hooks),
            ("files", lambda: self.files.close(self._meta(closed=True)) if self.files is not None else None),
        ):
            try:
                action()
            except Exception as exc:
                where = f" ({self.files.dir})" if what == "files" and self.files is not None else ""
                self._warn("close:" + what, f"RankMonitor.close(): {what} failed{where}: {type(exc).__name__}: {exc}")

    def _remove_hooks(self) -> None:
        self.capture.close()
        if self.schedule is not None:
            self.schedule.close()

    def __enter__(self) -> RankMonitor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume (flushes first, so the files hold every step before ``step``)."""
        self.flush()
        state: dict[str, Any] = {
            "version": 1,
            "step": self._step,
            "wall_time": self._wall(),
            "ema": {k: v.detach().cpu() for k, v in self.measurer.ema.items()},
            "engine": self.engine.state_dict(),
        }
        if self.files is None and self.keep_history:
            state["history"] = list(self._history)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue a run: same step counter, same history and files, rows after ``state['step']`` dropped."""
        if not isinstance(state, dict) or "step" not in state:
            raise ValueError("state must be a dict from RankMonitor.state_dict()")
        self._step = int(state["step"])
        self._armed = self._step % self.every == 0
        if self.schedule is not None:
            self.schedule.step_done()
        self._wall_offset, self._t0 = float(state.get("wall_time", 0.0)), time.perf_counter()
        self.measurer.ema = dict(state.get("ema", {}))
        self.engine.load_state_dict(state.get("engine", {}))
        if self.files is not None:  # cut the files back even when no history is kept
            rows = self.files.resume(self._step)
            self._history = rows if self.keep_history else []
        elif "history" in state:
            self._history = [r for r in state["history"] if r["step"] < self._step]
        elif self.log_dir is not None and self.keep_history:  # another rank writes the files: read them
            rows = read_jsonl(self.log_dir / HISTORY_JSONL, warn=False)
            self._history = [r for r in rows if r["step"] < self._step]
        cap = history_cap(self.keep_history)
        if cap is not None:
            del self._history[: max(0, len(self._history) - cap)]

    # ------------------------------------------------------------------ internals
    def _wall(self) -> float:
        return self._wall_offset + time.perf_counter() - self._t0

    def _warn(self, key: str, msg: str) -> None:
        """Warn once per ``key``; never raises, whatever the warning filters (:func:`safe_io.warn`)."""
        if key not in self._warned:
            self._warned.add(key)
            safe_io.warn(msg, RuntimeWarning, stacklevel=3)

    def _meta(self, closed: bool = False) -> dict[str, Any]:
        return runfiles.monitor_meta(self, closed)

    def _write_meta(self) -> None:
        if self.files is not None:
            try:
                self.files.meta(self._meta())
            except Exception as exc:
                self._warn("meta", f"RankMonitor: writing meta.json failed ({type(exc).__name__}: {exc})")
