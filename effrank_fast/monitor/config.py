"""Typed configuration of :class:`~effrank_fast.RankMonitor`: one frozen dataclass per concern.

    RankMonitor(model, "all_hidden", eps=[1e-3],
                probe=Probe(x, weights=w),                 # where the features come from
                features=Features(center=True),            # how activations become the Gram
                engine=Engine(topk=16, spectrum_every=50), # how the Gram becomes measures
                log=RunLog("runs/x", flush_every=50),      # where rows go
                accumulate=Accumulate("ema", ema_decay=0.95))

Each object validates its fields when it is made, so a typo or a bad value fails at once with
the field's name. Shorthands: ``probe=tensor`` (or a tuple / dict of inputs), ``log="runs/x"``,
``engine="warm"``, ``accumulate="ema"``.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from effrank_fast.ops import backends, validation
from effrank_fast.tracker import SpectrumTracker

__all__ = ["Accumulate", "Engine", "Features", "Probe", "RunLog"]

ProbeInputs = torch.Tensor | tuple[Any, ...] | Mapping[str, Any]


def positive_int(name: str, v: object, minimum: int = 1) -> int:
    """``v`` when it is an int ≥ ``minimum``; else a ValueError naming ``name``."""
    if not isinstance(v, int) or isinstance(v, bool) or v < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {v!r}")
    return v


@dataclass(frozen=True)
class Probe:
    """Fixed input points the model is run on at each measured step (the paper's ∫_Ω).

    Args:
        inputs: a Tensor [N, ...], a tuple of positional inputs, or a dict of keyword inputs,
            each with the N probe points along its first axis.
        weights: quadrature weights [N] (e.g. :func:`effrank_fast.quadrature.trapezoid`); with
            them the Gram defaults to ``mode="integral"``.

    The probe runs under ``no_grad`` and in eval mode just before the optimizer updates the
    parameters, so each row's ranks and loss belong to the same parameters θ_t.
    """

    inputs: ProbeInputs
    weights: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.inputs, torch.Tensor | tuple | Mapping):
            raise TypeError(
                f"probe inputs must be a Tensor, a tuple of positional inputs or a dict of keyword inputs, "
                f"got {type(self.inputs).__name__}"
            )
        if self.weights is not None and not isinstance(self.weights, torch.Tensor):
            raise TypeError(f"probe weights must be a Tensor [N] or None, got {type(self.weights).__name__}")


@dataclass(frozen=True)
class Features:
    """How a layer's activations become its Gram matrix M = Φᵀ diag(w) Φ.

    Args:
        mode: "mean" (w = 1/N), "sum" (w = 1) or "integral" (the probe's weights, summing to |Ω|).
            None: "integral" with probe weights, else "mean".
        center: subtract the weighted mean of each feature (float64 accumulation by default).
        acc_dtype: Gram accumulation dtype; None takes :func:`effrank_fast.gram`'s default.
        backend: Gram backend ("auto", "torch", "native", "triton").
        fused: form the Gram of h = act(xWᵀ + b) from the producing Linear's input with
            :mod:`effrank_fast.ops.linear_act_gram` (Linear→activation pairs in an ``nn.Sequential``).
        axis: the feature (neuron) axis of activations with 3 or more dimensions: "auto" (by the
            module: channels for convolutions [B, C, H, W] → [B·H·W, C], the last axis for linear
            layers and sequences [B, T, d] → [B·T, d]; see :mod:`effrank_fast.monitor.layers`),
            "channels" (= 1), "last" (= -1), an int, or ``{layer label: axis}``.
        mask: which rows count (padding never does): None (all), the name of a keyword input of the
            model's forward (``"attention_mask"``; a bool/integer [B, T], nonzero = real), a
            positional index, or ``fn(args, kwargs) -> mask``. Probes take it from their inputs too.
    """

    mode: str | None = None
    center: bool = False
    acc_dtype: torch.dtype | None = None
    backend: str = "auto"
    fused: bool = False
    axis: int | str | Mapping[str, int | str] = "auto"
    mask: str | int | Callable[..., Any] | None = None

    def __post_init__(self) -> None:
        if self.mode is not None and self.mode not in ("mean", "sum", "integral"):
            raise ValueError(f"mode must be 'mean', 'sum', 'integral' or None, got {self.mode!r}")
        if self.acc_dtype not in (None, torch.float32, torch.float64):
            raise TypeError(f"acc_dtype must be None, torch.float32 or torch.float64, got {self.acc_dtype}")
        backends.requested_backend(self.backend)
        if self.fused and self.center:
            raise ValueError("fused=True does not support center=True (the fused kernel returns no Σw·h)")
        for ax in self.axis.values() if isinstance(self.axis, Mapping) else [self.axis]:
            if isinstance(ax, bool) or not (isinstance(ax, int) or ax in ("auto", "channels", "last")):
                raise ValueError(f"axis must be 'auto', 'channels', 'last', an int or a dict of them, got {ax!r}")
        plain = isinstance(self.mask, str | int) and not isinstance(self.mask, bool)
        if self.mask is not None and not plain and not callable(self.mask):
            raise TypeError(
                "mask must be None, a keyword name such as 'attention_mask', a positional index or a callable "
                f"fn(args, kwargs) -> mask, got {type(self.mask).__name__}"
            )


@dataclass(frozen=True)
class Engine:
    """How each Gram becomes a row of measures.

    Args:
        kind: "exact" (the full float64 spectrum every measured step), "warm"
            (:class:`effrank_fast.SpectrumTracker` per layer, sync-free), or a factory
            ``fn(d=, eps=, relative=)`` returning a tracker-like object.
        topk: how many of the largest eigenvalues to log per row (``lambda_1``…).
        spectrum_every: keep the full spectrum every this many measured steps (0: never).
        solver: the exact engine's eigensolver, "auto" (the device-side Jacobi solver on CUDA for
            d ≤ 1024, else eigvalsh), "jacobi" or "eigvalsh".
        tracker_options: keyword arguments of :class:`~effrank_fast.SpectrumTracker` for
            ``kind="warm"``; checked against its signature here. :meth:`warm` builds this.
        full_every: the exact engine solves the spectrum (entropy rank, stable rank, λ_max,
            top-k) every this many measured steps; its certified counts, trace and participation
            ratio come every measured step. "auto": every step for a solved matrix of size
            min(N, d) ≤ 256, else every 10th (:mod:`effrank_fast.monitor.core`).
    """

    kind: str | Callable[..., Any] = "exact"
    topk: int = 8
    spectrum_every: int = 100
    solver: str = "auto"
    tracker_options: Mapping[str, Any] = field(default_factory=dict)
    full_every: int | str = "auto"

    def __post_init__(self) -> None:
        if not (self.kind in ("exact", "warm") or (callable(self.kind) and not isinstance(self.kind, str))):
            raise ValueError(
                f"engine kind must be 'exact', 'warm' or a callable factory(d=, eps=, relative=), got {self.kind!r}"
            )
        positive_int("topk", self.topk, 0)
        positive_int("spectrum_every", self.spectrum_every, 0)
        if self.full_every != "auto":
            positive_int("full_every", self.full_every, 1)
        if self.solver not in ("auto", "jacobi", "eigvalsh"):
            raise ValueError(f"solver must be 'auto', 'jacobi' or 'eigvalsh', got {self.solver!r}")
        if self.tracker_options and self.kind != "warm":
            raise ValueError(f"tracker_options {sorted(self.tracker_options)} apply to kind='warm' only")
        known = set(inspect.signature(SpectrumTracker).parameters) - {"eps", "relative"}
        unknown = sorted(set(self.tracker_options) - known)
        if unknown:
            raise TypeError(f"tracker_options {unknown} are not SpectrumTracker parameters (known: {sorted(known)})")

    @classmethod
    def warm(cls, *, topk: int = 8, spectrum_every: int = 100, **tracker_options: Any) -> Engine:
        """The warm tracker engine; ``tracker_options`` are SpectrumTracker's keywords (``k=64``, ...)."""
        return cls("warm", topk=topk, spectrum_every=spectrum_every, tracker_options=tracker_options)


@dataclass(frozen=True)
class RunLog:
    """Where the rows go.

    Args:
        dir: run folder for history.jsonl, history.csv, spectrum.jsonl, meta.json (and TensorBoard
            events); None keeps the rows in memory only. Only global rank 0 writes.
        tensorboard: None (when installed and ``dir`` is set), True or False.
        flush_every: copy results to the host and the files every this many steps (one sync).
        meta: extra run metadata saved in meta.json under "run" (``"loss_name"`` labels the loss
            axis of the report's plots).
        keep_history: which flushed rows ``mon.history`` keeps (files are written either way):
            True all, False none, an int K the last K rows. A row is about 1.3 KB in memory with
            the defaults (3 ε, top 8 eigenvalues): +52 MB per 40,000 (step, layer) rows kept.
    """

    dir: str | Path | None = None
    tensorboard: bool | None = None
    flush_every: int = 100
    meta: Mapping[str, Any] = field(default_factory=dict)
    keep_history: bool | int = True

    def __post_init__(self) -> None:
        if self.dir is not None and not isinstance(self.dir, str | Path):
            raise TypeError(f"log dir must be a str, a Path or None, got {type(self.dir).__name__}")
        if self.tensorboard not in (None, True, False):
            raise TypeError(f"tensorboard must be None, True or False, got {self.tensorboard!r}")
        positive_int("flush_every", self.flush_every)
        if not isinstance(self.meta, Mapping):
            raise TypeError(f"meta must be a dict, got {type(self.meta).__name__}")
        if not isinstance(self.keep_history, int) or self.keep_history < 0:
            raise ValueError(
                f"keep_history must be True, False or an int K >= 0 (the last K rows), got {self.keep_history!r}"
            )


@dataclass(frozen=True)
class Accumulate:
    """How measured steps combine: "step" (each stands alone) or "ema" (M ← β·M + (1−β)·M_step)."""

    kind: str = "step"
    ema_decay: float = 0.9

    def __post_init__(self) -> None:
        if self.kind not in ("step", "ema"):
            raise ValueError(f"accumulate must be 'step' or 'ema', got {self.kind!r}")
        if not isinstance(self.ema_decay, int | float) or not 0.0 < float(self.ema_decay) < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1), got {self.ema_decay!r}")


# The 0.1 keywords of RankMonitor and where each now lives; accepted for one release with a warning.
LEGACY_KEYWORDS: dict[str, tuple[str, str]] = {
    "weights": ("probe", "weights"),
    "mode": ("features", "mode"),
    "center": ("features", "center"),
    "acc_dtype": ("features", "acc_dtype"),
    "gram_backend": ("features", "backend"),
    "fused": ("features", "fused"),
    "tracker": ("engine", "kind"),
    "topk": ("engine", "topk"),
    "spectrum_every": ("engine", "spectrum_every"),
    "tracker_options": ("engine", "tracker_options"),
    "log_dir": ("log", "dir"),
    "tensorboard": ("log", "tensorboard"),
    "flush_every": ("log", "flush_every"),
    "meta": ("log", "meta"),
    "keep_history": ("log", "keep_history"),
    "ema_decay": ("accumulate", "ema_decay"),
}


def as_probe(probe: object) -> Probe | None:
    if probe is None or isinstance(probe, Probe):
        return probe
    if isinstance(probe, torch.Tensor | tuple | Mapping):
        return Probe(probe)
    raise TypeError(
        f"probe must be a Probe, a Tensor, a tuple of positional inputs, a dict of keyword inputs or None, "
        f"got {type(probe).__name__}"
    )


def as_engine(engine: object) -> Engine:
    if isinstance(engine, Engine):
        return engine
    if isinstance(engine, str) or callable(engine):
        return Engine(engine)
    raise TypeError(f"engine must be an Engine, 'exact', 'warm' or a factory, got {type(engine).__name__}")


def as_log(log: object) -> RunLog:
    if log is None:
        return RunLog()
    if isinstance(log, RunLog):
        return log
    if isinstance(log, str | Path):
        return RunLog(log)
    raise TypeError(f"log must be a RunLog, a folder (str or Path) or None, got {type(log).__name__}")


def as_accumulate(accumulate: object) -> Accumulate:
    if isinstance(accumulate, Accumulate):
        return accumulate
    if isinstance(accumulate, str):
        return Accumulate(accumulate)
    raise TypeError(f"accumulate must be an Accumulate, 'step' or 'ema', got {type(accumulate).__name__}")


def check_probe_weights(probe: Probe | None, features: Features) -> str:
    """The resolved Gram mode; checks the probe's weights against its points."""
    weights = None if probe is None else probe.weights
    return validation.check_mode(features.mode or ("integral" if weights is not None else "mean"), weights)


_legacy_warned: set[str] = set()


def upgrade_legacy(
    legacy: dict[str, Any],
    probe: Probe | None,
    features: Features,
    engine: Engine,
    log: RunLog,
    accumulate: Accumulate,
) -> tuple[Probe | None, Features, Engine, RunLog, Accumulate]:
    """Fold RankMonitor's 0.1 keywords into the typed objects, warning once per keyword.

    An unknown keyword is a TypeError naming it, as for any Python function.
    """
    unknown = sorted(set(legacy) - set(LEGACY_KEYWORDS))
    if unknown:
        raise TypeError(f"RankMonitor() got unexpected keyword arguments {unknown}")
    groups: dict[str, dict[str, Any]] = {}
    for key, value in legacy.items():
        group, name = LEGACY_KEYWORDS[key]
        groups.setdefault(group, {})[name] = value
        if key not in _legacy_warned:
            _legacy_warned.add(key)
            warnings.warn(
                f"RankMonitor({key}=...) is deprecated: use {group}={_CLASS_OF[group]}({name}=...)",
                DeprecationWarning,
                stacklevel=3,
            )
    if "probe" in groups:
        if probe is None:
            raise ValueError("weights= are the probe's quadrature weights; give probe= as well")
        probe = replace(probe, **groups["probe"])
    if "features" in groups:
        features = replace(features, **groups["features"])
    if "engine" in groups:
        opts = groups["engine"]
        if "tracker_options" in opts:
            opts = dict(opts)
            tracker_options = dict(opts.pop("tracker_options") or {})
            kind = opts.get("kind", engine.kind)
            if kind == "exact" or (kind != "warm" and "solver" in tracker_options):
                solver = tracker_options.pop("solver", engine.solver)
                if tracker_options:
                    extra = sorted(tracker_options)
                    raise ValueError(f"tracker_options {extra} apply to tracker='warm'; 'exact' takes only 'solver'")
                opts["solver"] = solver
            else:
                opts["tracker_options"] = tracker_options
        engine = replace(engine, **opts)
    if "log" in groups:
        opts = dict(groups["log"])
        if opts.get("meta") is None and "meta" in opts:
            opts["meta"] = {}
        log = replace(log, **opts)
    if "accumulate" in groups:
        accumulate = replace(accumulate, **groups["accumulate"])
    return probe, features, engine, log, accumulate


_CLASS_OF = {"probe": "Probe", "features": "Features", "engine": "Engine", "log": "RunLog", "accumulate": "Accumulate"}
