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

from effrank_fast.monitor import axes
from effrank_fast.monitor import distributed as dd
from effrank_fast.monitor import layers as L
from effrank_fast.monitor.accumulate import GramAccumulator
from effrank_fast.monitor.inputs import MaskSource
from effrank_fast.rank.prepare import flatten_features, mask_rows


class Capture:
    """Hooks on ``model`` feeding ``acc[i]`` for each resolved layer ``layers[i]``.

    Args:
        model: the monitored module (its own pre/post hooks delimit one forward pass). For a
            ``torch.compile``d module the layer hooks go on its original module and the root hooks
            on the compiled wrapper, which runs eagerly around the compiled graph.
        spec: the ``layers=`` specification.
        make_acc: a fresh accumulator per layer.
        fused_kernel: ``linear_act_gram`` when ``fused=True``, else None.
        probe_mode: capture only during probe forwards (else: training forwards, see ``batch_gate``).
        batch_gate: whether a training forward should be captured now (armed step, grad enabled).
        on_resolved: called once the layers are known (automatic specs resolve at the first forward).
        warn: the monitor's warn-once function.
        axis: ``Features(axis=...)``: "auto", an int, "channels", "last" or {label: axis}.
        mask: ``Features(mask=...)``: None, a keyword name, a positional index or ``fn(args, kwargs)``.

    Under ``torch.compile`` a hook only appends (kind, key, tensor) to ``_deferred`` (a side effect
    that dynamo replays after the graph, so no graph break); the eager end of the forward replays
    those events through the same handlers as an eager forward.
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
        axis: object = "auto",
        mask: object = None,
    ) -> None:
        self.outer, self.model = model, L.unwrap(model)
        self.spec = spec
        self.make_acc, self.kernel = make_acc, fused_kernel
        self.probe_mode, self.batch_gate = probe_mode, batch_gate
        self.on_resolved, self.warn = on_resolved, warn
        self.axis = axis
        self.mask_source = MaskSource(mask, self.model)
        self.layers: list[L.Layer] = []
        self.acc: list[GramAccumulator] = []
        self.errors: dict[int, str] = {}
        self.weights: torch.Tensor | None = None  # the probe weights of the forward in progress
        self.in_probe = False
        # The probe's activations are kept without a copy (the monitor runs that forward); a model
        # that changed one in place later in the forward gets copies from then on (ProbeRunner.run).
        self.copy_probe = False
        self.closed = False
        self.raise_discovery = False
        self._calls: dict[int, int] = {}
        self._by_module: dict[int, tuple[nn.Module, list[int]]] = {}
        self._deferred: list[tuple[str, int, Any]] = []
        self._modules: list[nn.Module] = []  # hook key → module
        self._names: dict[int, str] = {id(m): n for n, m in self.model.named_modules()}
        self._handles = [
            model.register_forward_pre_hook(self._root_pre, with_kwargs=True),
            model.register_forward_hook(self._root_post),
        ]
        self._discovery: list[L.Seen] | None = None
        self._disc_handles: list[torch.utils.hooks.RemovableHandle] = []
        self._root_inputs: list[torch.Tensor] = []
        self._root_active = False  # inside a forward of ``model`` itself
        self._fwd_capture = False  # whether the forward in progress is captured
        self._fwd_mask: Any = None  # its mask (None: every row counts)
        self._after_params = False
        if isinstance(spec, str) and spec in L.AUTO_SPECS:
            self._start_discovery()
        else:
            self._set_layers(L.explicit_layers(spec, self.model), announce=False)

    @property
    def capturing(self) -> bool:
        if self.closed:
            return False
        if self._root_active:
            return self._fwd_capture
        return self.in_probe if self.probe_mode else self.batch_gate()

    def probe_intact(self) -> bool:
        """Whether the activations the probe forward kept uncopied still hold their captured values."""
        return all(acc.kept_intact() for acc in self.acc)

    def reset(self) -> None:
        """Forget everything captured since the last measured step."""
        self.replay()
        for acc in self.acc:
            acc.reset()
        self.errors.clear()
        self._calls.clear()

    def close(self) -> None:
        self.closed = True
        self._deferred.clear()
        L.remove_hooks(self._handles)
        L.remove_hooks(self._disc_handles)

    # -------------------------------------------------------------------------------- hooks
    def _key(self, module: nn.Module) -> int:
        self._modules.append(module)
        return len(self._modules) - 1

    def _hook_pre(self, kind: str, module: nn.Module) -> torch.utils.hooks.RemovableHandle:
        key = self._key(module)

        def pre(m: nn.Module, args: tuple[Any, ...]) -> None:
            x = args[0] if args and isinstance(args[0], torch.Tensor) else None
            if torch.compiler.is_compiling():
                self._deferred.append((kind, key, x))  # replayed eagerly at the end of the forward
            else:
                self._event(kind, key, x)

        return module.register_forward_pre_hook(pre)

    def _hook_post(self, kind: str, module: nn.Module) -> torch.utils.hooks.RemovableHandle:
        key = self._key(module)

        def post(m: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            y = output[0] if isinstance(output, (tuple, list)) and output else output
            y = y if isinstance(y, torch.Tensor) else None
            if torch.compiler.is_compiling():
                self._deferred.append((kind, key, y))
            else:
                self._event(kind, key, y)

        return module.register_forward_hook(post)

    def replay(self) -> None:
        """Handle the events a compiled forward left behind (in order)."""
        while self._deferred:
            events, self._deferred = self._deferred, []
            for kind, key, x in events:
                self._event(kind, key, x)

    def _event(self, kind: str, key: int, x: Any) -> None:
        if kind == "begin":
            self._begin(*x)
        elif kind == "end":
            self._end()
        elif kind in ("read", "block", "params"):
            self._discovered(kind, self._modules[key], x)
        elif kind == "in":
            self._on_input(self._modules[key], x)
        else:
            self._on_output(self._modules[key], x)

    # -------------------------------------------------------------------------------- forwards
    def _root_pre(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        inputs = _tensors(args, kwargs) if self._discovery is not None else []  # only discovery reads them
        payload = (torch.is_grad_enabled(), self.mask_source.find(args, kwargs), inputs)
        if torch.compiler.is_compiling():  # the monitor was attached before the module was compiled
            self._deferred.append(("begin", -1, payload))
        else:
            self.replay()  # a compiled forward whose end was not seen eagerly
            self._begin(*payload)

    def _root_post(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        if torch.compiler.is_compiling():
            self._deferred.append(("end", -1, None))
        else:
            self.replay()
            self._end()

    def _begin(self, grad: bool, mask: Any, inputs: list[torch.Tensor]) -> None:
        self._fwd_capture = not self.closed and (self.in_probe if self.probe_mode else bool(grad) and self.batch_gate())
        self._root_active = True
        self._calls.clear()
        self._fwd_mask = mask
        self._after_params = False
        if self._discovery is not None:
            self._root_inputs = inputs

    def _end(self) -> None:
        """End of a forward pass: during discovery, resolve the layers from the events seen."""
        if self._discovery is None:
            self._root_active, self._fwd_mask = False, None
            return
        seen, self._discovery = self._discovery, None
        L.remove_hooks(self._disc_handles)
        try:
            self._set_layers(L.auto_layers(str(self.spec), seen, self._root_inputs, self.model), announce=True)
            if self._fwd_capture:  # this forward counts too
                for li, layer in enumerate(self.layers):
                    target = layer.fused.linear if layer.fused is not None else layer.module
                    where = "input" if layer.fused is not None else layer.where
                    for e in seen:  # as the hooks would have matched them (_on_input, _on_output)
                        if e.module is target and e.where == where and layer.call in (None, e.call):
                            self._capture(li, e.tensor)
        except Exception as exc:
            if self.raise_discovery:
                raise
            self.warn("discovery", f"RankMonitor: could not resolve layers={self.spec!r}: {exc}")
        finally:
            self._root_inputs = []
            self._root_active, self._fwd_mask = False, None

    def forward(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """One eager forward of the original module, delimited like a call of ``model``."""
        if self.model is self.outer:
            self.model(*args, **kwargs)
            return
        self._begin(torch.is_grad_enabled(), self.mask_source.find(args, kwargs), _tensors(args, kwargs))
        try:
            self.model(*args, **kwargs)
        finally:
            self._end()

    # -------------------------------------------------------------------------------- layers
    def _set_layers(self, layers: list[L.Layer], announce: bool) -> None:
        for layer in layers:
            axes.resolve_axis(layer, self.axis)
        if self.kernel is not None:
            for layer in layers:
                layer.fused = L.find_fused(layer, self.model)
                layer.axis, layer.axis_reason = "last", "fused=True reads the Linear's input"
        self.layers = layers
        self.acc = [self.make_acc() for _ in layers]
        self._by_module = L.hook_targets(layers)
        for module, idx in self._by_module.values():
            self._handles.append(self._hook_pre("in", module))
            if any(layers[i].where == "output" and layers[i].fused is None for i in idx):
                self._handles.append(self._hook_post("out", module))
        if announce and dd.rank() == 0:
            print(describe_layers(layers, self.spec), flush=True)
        self.on_resolved(layers)

    def _start_discovery(self) -> None:
        self._discovery = []
        blocks = L.repeated_blocks(self.model)
        for m in self.model.modules():
            if L.is_weight_layer(m):
                self._disc_handles.append(self._hook_pre("read", m))
            if id(m) in blocks:
                self._disc_handles.append(self._hook_post("block", m))
            if any(True for _ in m.parameters(recurse=False)):
                self._disc_handles.append(self._hook_post("params", m))

    def resolve_pending(self) -> None:
        """Resolve automatic layers when ``model`` itself was never called.

        Lightning's ``training_step`` often calls a submodule (``self.net(x)``), so the root hooks
        never fire. The events seen so far, up to the first repeat of the first weight layer, are
        then taken as one forward pass, and from now on a call of that first layer marks the
        start of a new forward (so call indices of reused modules stay per forward).
        """
        self.replay()
        if not self._discovery:
            return
        seen = self._discovery
        first = seen[0].module
        end = next((j for j in range(1, len(seen)) if seen[j].module is first and seen[j].where == "input"), len(seen))
        self._discovery, self._root_inputs = seen[:end], [seen[0].tensor]
        self._handles.append(first.register_forward_pre_hook(self._new_forward, prepend=True))
        self._fwd_capture = self.capturing  # those calls were training forwards (grad enabled)
        self._end()

    def _new_forward(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        if not self._root_active:
            self._calls.clear()

    def _discovered(self, kind: str, module: nn.Module, x: torch.Tensor | None) -> None:
        if self._discovery is None or (not self._root_active and not torch.is_grad_enabled()):
            return  # outside a forward of the model, only training calls (grad enabled) count
        if kind == "params":
            self._after_params = True
            return
        if x is None:
            return
        where = "input" if kind == "read" else "output"
        c = sum(1 for e in self._discovery if e.module is module and e.where == where)
        name = self._names.get(id(module), "?")
        self._discovery.append(L.Seen(name, module, c, x, where, self._after_params))

    # -------------------------------------------------------------------------------- capture
    def _on_input(self, module: nn.Module, x: torch.Tensor | None) -> None:
        if not self.capturing:
            return
        c = self._calls.get(id(module), 0)
        self._calls[id(module)] = c + 1
        for li in self._by_module[id(module)][1]:
            layer = self.layers[li]
            if (layer.where == "input" or layer.fused is not None) and layer.call in (None, c):
                self._capture(li, x)

    def _on_output(self, module: nn.Module, y: torch.Tensor | None) -> None:
        if not self.capturing:
            return
        c = self._calls.get(id(module), 1) - 1
        for li in self._by_module[id(module)][1]:
            layer = self.layers[li]
            if layer.where == "output" and layer.fused is None and layer.call in (None, c):
                self._capture(li, y)

    def _capture(self, li: int, x: object) -> None:
        """Add one activation to layer ``li``'s sums; a failure is recorded for the step, never raised."""
        try:
            if not isinstance(x, torch.Tensor):
                raise TypeError(f"captured a {type(x).__name__}, not a tensor")
            layer = self.layers[li]
            x = x.detach()
            ax = axes.feature_axis_of(layer, x.dim())
            phi = flatten_features(x, ax)
            w = self._row_weights(x, ax, phi.dtype)
            if layer.fused is not None:
                assert self.kernel is not None
                self.acc[li].add_fused(phi, layer.fused, w, self.kernel)
            else:
                self.acc[li].add(phi, w, copy=not self.in_probe or self.copy_probe)
            self.acc[li].note_readout(layer.readout)
        except Exception as exc:
            self.errors[li] = f"{type(exc).__name__}: {exc}"

    def _row_weights(self, x: torch.Tensor, ax: int, dtype: torch.dtype) -> torch.Tensor | None:
        """Per-row weights [N] of Φ: the probe's weights spread over each sample's rows, times the
        mask (0 for padding). No host sync: shapes only."""
        w: torch.Tensor | None = None
        wdtype: torch.dtype | None = None  # the mask's dtype below: the weights', else float32 or wider
        if self.in_probe and self.weights is not None:
            wdtype = self.weights.dtype  # as given: float64 quadrature weights stay exact
            rest = [s for i, s in enumerate(x.shape) if i != ax] if x.dim() > 1 else [x.shape[0]]
            if rest[0] != self.weights.shape[0]:
                raise ValueError(
                    f"probe weights [{self.weights.shape[0]}] do not fit an activation of shape "
                    f"{tuple(x.shape)} (its first sample axis has {rest[0]})"
                )
            w = self.weights  # one row per sample: the weights as they are
            if len(rest) > 1:
                w = w.reshape(-1, *([1] * (len(rest) - 1))).expand(rest).reshape(-1)
        mask = self._fwd_mask if self._root_active else None
        if mask is None and self.mask_source.spec is not None and not self._root_active:
            raise ValueError(
                f"Features(mask={self.mask_source.spec!r}) is read from the inputs of the monitored model, "
                "but this forward did not call it (only a submodule); padding would count"
            )
        if mask is not None:
            keep = mask_rows(mask, x.shape, ax, name=f"the mask ({self.mask_source.spec!r})")
            if keep is not None:
                keep = keep.to(device=x.device, dtype=wdtype or torch.promote_types(dtype, torch.float32))
                w = keep if w is None else w * keep
        return w


def _tensors(args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[torch.Tensor]:
    return [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]


def describe_layers(layers: list[L.Layer], spec: object) -> str:
    """The one-time printout of what an automatic ``layers=`` resolved to."""
    lines = [f"RankMonitor: layers={spec!r} resolved to {len(layers)} layer(s):"]
    for l in layers:
        lines.append(f"  {l.label:>12}  {l.description}  (feature axis: {l.axis}, {l.axis_reason})")
    return "\n".join(lines)
