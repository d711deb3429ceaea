"""The hooks that turn forward passes into per-layer Gram sums, and the probe that drives them.

:class:`Capture` owns the resolved layers, one :class:`GramAccumulator` per layer and every hook
it puts on the model. Hooks never raise into the user's forward: a failure is stored in
``errors`` and reported with that step's row. :class:`Probe` runs the model on fixed points
in eval mode under ``no_grad`` (no dropout draws, no batch-norm updates), so training is untouched.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from effrank_fast.monitor import distributed as dd
from effrank_fast.monitor import layers as L
from effrank_fast.monitor.accumulate import GramAccumulator


class Capture:
    """Hooks on ``model`` feeding ``acc[i]`` for each resolved layer ``layers[i]``.

    Args:
        model: the monitored module (its own pre/post hooks delimit one forward pass).
        spec: the ``layers=`` specification.
        make_acc: a fresh accumulator per layer.
        fused_kernel: ``linear_act_gram`` when ``fused=True``, else None.
        probe_mode: capture only during probe forwards (else: training forwards, see ``batch_gate``).
        batch_gate: whether a training forward should be captured now (armed step, grad enabled).
        on_resolved: called once the layers are known (automatic specs resolve at the first forward).
        warn: the monitor's warn-once function.
    """

    def __init__(
        self,
        model: nn.Module,
        spec: object,
        *,
        make_acc: Callable[[], GramAccumulator],
        fused_kernel: Callable[..., object] | None,
        probe_mode: bool,
        batch_gate: Callable[[], bool],
        on_resolved: Callable[[list[L.Layer]], None],
        warn: Callable[[str, str], None],
    ) -> None:
        self.model, self.spec = model, spec
        self.make_acc, self.kernel = make_acc, fused_kernel
        self.probe_mode, self.batch_gate = probe_mode, batch_gate
        self.on_resolved, self.warn = on_resolved, warn
        self.layers: list[L.Layer] = []
        self.acc: list[GramAccumulator] = []
        self.errors: dict[int, str] = {}
        self.weights: torch.Tensor | None = None  # the probe weights of the forward in progress
        self.in_probe = False
        self.closed = False
        self.raise_discovery = False
        self._calls: dict[int, int] = {}
        self._by_module: dict[int, tuple[nn.Module, list[int]]] = {}
        self._handles = [model.register_forward_pre_hook(self._root_pre), model.register_forward_hook(self._root_post)]
        self._discovery: list[L.LinearCall] | None = None
        self._disc_handles: list[torch.utils.hooks.RemovableHandle] = []
        self._root_inputs: list[torch.Tensor] = []
        self._root_active = False  # inside a forward of ``model`` itself
        if isinstance(spec, str) and spec in L.AUTO_SPECS:
            self._discovery = []
            names = {id(m): n for n, m in model.named_modules() if isinstance(m, nn.Linear)}
            self._linear_names = names
            self._disc_handles = [
                m.register_forward_pre_hook(self._discovery_hook) for m in model.modules() if isinstance(m, nn.Linear)
            ]
        else:
            self._set_layers(L.explicit_layers(spec, model))

    @property
    def capturing(self) -> bool:
        if self.closed:
            return False
        return self.in_probe if self.probe_mode else self.batch_gate()

    def reset(self) -> None:
        """Forget everything captured since the last measured step."""
        for acc in self.acc:
            acc.reset()
        self.errors.clear()
        self._calls.clear()

    def close(self) -> None:
        self.closed = True
        L.remove_hooks(self._handles)
        L.remove_hooks(self._disc_handles)

    # -------------------------------------------------------------------------------- layers
    def _set_layers(self, layers: list[L.Layer]) -> None:
        if self.kernel is not None:
            for layer in layers:
                layer.fused = L.find_fused(layer, self.model)
        self.layers = layers
        self.acc = [self.make_acc() for _ in layers]
        self._by_module = L.hook_targets(layers)
        for module, idx in self._by_module.values():
            self._handles.append(module.register_forward_pre_hook(self._pre_hook))
            if any(layers[i].where == "output" and layers[i].fused is None for i in idx):
                self._handles.append(module.register_forward_hook(self._post_hook))
        self.on_resolved(layers)

    def resolve_pending(self) -> None:
        """Resolve automatic layers when ``model`` itself was never called.

        Lightning's ``training_step`` often calls a submodule (``self.net(x)``), so the root hooks
        never fire. The Linear calls seen so far, up to the first repeat of the first one, are
        then taken as one forward pass, and from now on a call of that first Linear marks the
        start of a new forward (so call indices of reused modules stay per forward).
        """
        if not self._discovery:
            return
        calls = self._discovery
        first = calls[0].module
        end = next((j for j in range(1, len(calls)) if calls[j].module is first), len(calls))
        self._discovery, self._root_inputs = calls[:end], [calls[0].input]
        self._handles.append(first.register_forward_pre_hook(self._new_forward, prepend=True))
        self._root_post(self.model, (), None)

    def _new_forward(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        if not self._root_active:
            self._calls.clear()

    def _root_pre(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        self._root_active = True
        self._calls.clear()
        if self._discovery is not None:
            self._root_inputs = [a for a in args if isinstance(a, torch.Tensor)]

    def _root_post(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        """End of a forward pass: during discovery, resolve the layers from the Linear calls seen."""
        self._root_active = False
        if self._discovery is None:
            return
        calls, self._discovery = self._discovery, None
        L.remove_hooks(self._disc_handles)
        try:
            self._set_layers(L.auto_layers(str(self.spec), calls, self._root_inputs))
            if self.capturing:  # this forward counts too
                for li, layer in enumerate(self.layers):
                    target = layer.fused.linear if layer.fused is not None else layer.module
                    for c in calls:
                        if c.module is target and c.call == layer.call:
                            self._capture(li, c.input)
        except Exception as exc:
            if self.raise_discovery:
                raise
            self.warn("discovery", f"RankMonitor: could not resolve layers={self.spec!r}: {exc}")
        finally:
            self._root_inputs = []

    def _discovery_hook(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        if self._discovery is None or not args or not isinstance(args[0], torch.Tensor):
            return
        c = sum(1 for x in self._discovery if x.module is module)
        name = self._linear_names.get(id(module), "?")
        self._discovery.append(L.LinearCall(name, module, c, args[0]))  # type: ignore[arg-type]

    # -------------------------------------------------------------------------------- capture
    def _pre_hook(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        if not self.capturing:
            return
        c = self._calls.get(id(module), 0)
        self._calls[id(module)] = c + 1
        for li in self._by_module[id(module)][1]:
            layer = self.layers[li]
            if (layer.where == "input" or layer.fused is not None) and layer.call in (None, c):
                self._capture(li, args[0] if args else None)

    def _post_hook(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        if not self.capturing:
            return
        c = self._calls.get(id(module), 1) - 1
        for li in self._by_module[id(module)][1]:
            layer = self.layers[li]
            if layer.where == "output" and layer.fused is None and layer.call in (None, c):
                self._capture(li, output[0] if isinstance(output, (tuple, list)) and output else output)

    def _capture(self, li: int, x: object) -> None:
        """Add one activation to layer ``li``'s sums; a failure is recorded for the step, never raised."""
        try:
            if not isinstance(x, torch.Tensor):
                raise TypeError(f"captured a {type(x).__name__}, not a tensor")
            phi = L.as_features(x)
            w = self.weights if self.in_probe else None
            layer = self.layers[li]
            if layer.fused is not None:
                assert self.kernel is not None
                self.acc[li].add_fused(phi, layer.fused, w, self.kernel)
            else:
                self.acc[li].add(phi, w)
            self.acc[li].note_readout(layer.readout)
        except Exception as exc:
            self.errors[li] = f"{type(exc).__name__}: {exc}"


class Probe:
    """Fixed input points (and quadrature weights) on which the model is evaluated each measured step."""

    def __init__(self, probe: object, weights: torch.Tensor | None) -> None:
        args = (probe,) if isinstance(probe, torch.Tensor) else probe
        if not isinstance(args, tuple) or not args or not all(isinstance(a, torch.Tensor) for a in args):
            raise TypeError(f"probe must be a tensor or a tuple of tensors, got {type(probe).__name__}")
        self.n = args[0].shape[0] if args[0].dim() else 0
        if self.n == 0:
            raise ValueError(f"probe must have at least one row (shape [N, ...]), got shape {tuple(args[0].shape)}")
        self.args, self.weights = args, weights
        self._cache: tuple[torch.device, tuple[torch.Tensor, ...], torch.Tensor | None] | None = None

    def check(self, model: nn.Module, capture: Capture, shard: tuple[int, int] | None) -> None:
        """One unmeasured probe forward; a failure is a ValueError naming the probe and the module that raised."""
        inside: list[tuple[str, nn.Module]] = []  # the modules whose forward is running, outermost first
        handles = []
        for name, module in model.named_modules():
            label = name or f"{type(module).__name__} (the model itself)"

            def pre(m: nn.Module, args: object, label: str = label) -> None:
                inside.append((label, m))

            def post(m: nn.Module, args: object, out: object) -> None:
                if inside:
                    inside.pop()

            handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
        try:
            self.run(model, capture, measure=False, shard=shard)
        except Exception as exc:
            shapes = ", ".join(str(list(a.shape)) for a in self.args)
            where = f"layer {inside[-1][0]!r} ({_describe(inside[-1][1])})" if inside else "the model"
            raise ValueError(
                f"probe= of shape {shapes} does not fit the model: {where} raised {type(exc).__name__}: {exc}"
            ) from exc
        finally:
            L.remove_hooks(handles)

    def run(self, model: nn.Module, capture: Capture, *, measure: bool, shard: tuple[int, int] | None) -> None:
        """One forward pass on the probe (rank r of w runs its block of rows when ``shard=(r, w)``)."""
        param = next(model.parameters(), None)
        device = param.device if param is not None else self.args[0].device
        if self._cache is None or self._cache[0] != device:
            args = tuple(a.to(device) for a in self.args)
            w = self.weights.to(device) if self.weights is not None else None
            if shard is not None:
                args = tuple(dd.shard_rows(a, *shard) for a in args)
                w = dd.shard_rows(w, *shard) if w is not None else None
            self._cache = (device, args, w)
        modes = [(m, m.training) for m in model.modules()]
        model.eval()  # no dropout, no batch-norm statistics update: training is untouched
        capture.in_probe, capture.weights = measure, self._cache[2]
        try:
            with torch.no_grad():
                model(*self._cache[1])
        finally:
            capture.in_probe, capture.weights = False, None
            for m, t in modes:
                m.training = t


def _describe(module: nn.Module) -> str:
    """A leaf module's repr (its shapes), else its class name."""
    return repr(module) if not list(module.children()) else type(module).__name__
