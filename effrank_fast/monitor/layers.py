"""Which activations the monitor measures, and the forward hooks that capture them.

Layer specifications (``RankMonitor(layers=...)``):

- ``"last_hidden"``: the input of the final weight-layer call of a forward pass (the paper's
  terminal hidden layer, whatever activation produced it).
- ``"all_hidden"``: every distinct tensor that a weight layer reads, except the model's input, plus
  the output of each repeated block (the children of an ``nn.ModuleList`` / ``nn.Sequential`` of
  one class, such as transformer blocks or ResNet blocks), in call order (``hidden1``, ...).
  Weight layers are ``nn.Linear``, transformers' ``Conv1D`` (GPT-2) and ``nn.ConvNd``. A tensor
  read by several layers (Q, K and V projections of one input) is one layer; the model's input,
  and tensors computed from it before any module with parameters ran (a reshape, a cast, a
  normalisation), are not hidden layers.
- a list (or ``{label: spec}`` dict) of module names (``"net.3"``: that module's output;
  ``"net.4:in"``: its input), ``nn.Module`` objects, or callables ``fn(model) -> nn.Module``.
  On a ``torch.compile``d model the names are those of the original module (no ``_orig_mod.``).

The two automatic specs are resolved from the call order of the first forward pass that the
monitor sees (the probe's or the first training batch's), so modules registered in one order and
called in another are handled, and so is a module reused within one forward.

**Feature axis.** Every activation becomes Φ [N, d] with
:func:`effrank_fast.rank.prepare.flatten_features`: its feature axis holds the neurons, all other
axes index samples. ``Features(axis=...)`` sets it (an int, ``"channels"`` = 1, ``"last"`` = -1, or
``{label: axis}``); by default (``"auto"``) it follows the module (:func:`axis_rule`): channels for
convolutions, batch norms and pooling ([B, C, H, W] → [B·H·W, C]), the last axis for linear layers,
layer norms, embeddings and attention ([B, T, d] → [B·T, d]); any other module (an activation, a
custom block) takes the rule of the nearest module with one before it (its own last such
submodule, then its earlier siblings, then its parent's). Tensors of 1 or 2 dimensions need no rule.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn.modules.conv import _ConvNd

from effrank_fast.monitor.axes import axis_rule, is_hf_conv1d

AUTO_SPECS = ("last_hidden", "all_hidden")

# Activation modules the fused Linear→activation Gram understands (the ``act`` argument of
# effrank_fast.ops.linear_act_gram).
_ACT_NAMES: dict[type, str] = {nn.Tanh: "tanh", nn.ReLU: "relu", nn.Identity: "identity"}


@dataclass
class Fused:
    """A layer h = act(x Wᵀ + b) whose Gram can be formed from the Linear's input x."""

    linear: nn.Linear
    act: str


@dataclass
class Layer:
    """One monitored activation.

    Attributes:
        label: the name used in rows, files and plots.
        name: qualified name of the hooked module ("" for the root).
        module: the hooked module.
        where: "input" (the module's first positional argument) or "output".
        call: which call of ``module`` within one forward pass (0-based); None = every call.
        description: human-readable origin, for meta.json.
        readout: the ``nn.Linear`` that reads these features (its weight norm ‖c‖ is logged).
        fused: set when ``fused=True`` captures the producing Linear's input instead.
    """

    label: str
    name: str
    module: nn.Module
    where: str
    call: int | None
    description: str
    readout: nn.Linear | None = None
    fused: Fused | None = None
    meta: dict[str, object] = field(default_factory=dict)
    axis: int | str | None = None  # the feature axis: an int, "channels", "last", or None (undecided)
    axis_reason: str = ""

    def info(self) -> dict[str, object]:
        out: dict[str, object] = {"module": self.name, "where": self.where, "description": self.description}
        if self.call is not None:
            out["call"] = self.call
        if self.fused is not None:
            out["fused_act"] = self.fused.act
        out["axis"] = self.axis
        out["axis_rule"] = self.axis_reason
        return out


def act_name(module: nn.Module) -> str | None:
    """The ``act`` string of linear_act_gram for an activation module, or None if unsupported."""
    if isinstance(module, nn.GELU):
        return "gelu" if module.approximate == "none" else None
    for cls, name in _ACT_NAMES.items():
        if type(module) is cls:
            return name
    if type(module).__name__.lower() in ("sin", "sine"):
        return "sin"
    return None


def unwrap(model: nn.Module) -> nn.Module:
    """The module whose submodules carry the hooks: the original module of a ``torch.compile``d one."""
    inner = getattr(model, "_orig_mod", None)
    return inner if isinstance(inner, nn.Module) else model


def is_weight_layer(module: nn.Module) -> bool:
    """A layer whose input is a hidden layer for the automatic specs: Linear, HF Conv1D, ConvNd."""
    return isinstance(module, (nn.Linear, _ConvNd)) or is_hf_conv1d(module)


def check_spec(layers: object, model: nn.Module) -> None:
    """Validate ``layers=`` at construction (clear errors before training starts)."""
    model = unwrap(model)
    if isinstance(layers, str):
        if layers in AUTO_SPECS:
            if not any(is_weight_layer(m) for m in model.modules()):
                raise ValueError(
                    f"layers={layers!r} looks for weight layers (nn.Linear, nn.ConvNd, transformers Conv1D), but "
                    f"{type(model).__name__} has none; pass module names instead, e.g. layers=['encoder.block3']"
                )
            return
        layers = [layers]
    if isinstance(layers, nn.Module) or callable(layers):
        layers = [layers]
    if not isinstance(layers, (Mapping, Iterable)):
        raise TypeError(f"layers must be 'last_hidden', 'all_hidden', a list or a dict, got {type(layers).__name__}")
    explicit_layers(layers, model)  # raises on unknown names


def _module_name(model: nn.Module, module: nn.Module) -> str:
    for name, m in model.named_modules():
        if m is module:
            return name
    raise ValueError(f"layers: module {type(module).__name__} is not a submodule of the monitored model")


def explicit_layers(spec: object, model: nn.Module) -> list[Layer]:
    """Layers from names, modules or selector callables (no forward pass needed)."""
    items: list[tuple[str | None, object]]
    if isinstance(spec, (str, nn.Module)) or callable(spec):
        items = [(None, spec)]
    elif isinstance(spec, Mapping):
        items = [(str(k), v) for k, v in spec.items()]
    elif isinstance(spec, Iterable):
        items = [(None, s) for s in spec]
    else:
        raise TypeError(f"layers must be 'last_hidden', 'all_hidden', a list or a dict, got {type(spec).__name__}")
    if not items:
        raise ValueError("layers is empty; give at least one layer (or 'last_hidden')")
    named = dict(model.named_modules())
    out: list[Layer] = []
    for i, (label, s) in enumerate(items):
        where = "output"
        if isinstance(s, str):
            name = s.removeprefix("_orig_mod.")  # a compiled module's names work with or without it
            if name.endswith(":in"):
                name, where = name[:-3], "input"
            elif name.endswith(":out"):
                name = name[:-4]
            if name not in named:
                close = [n for n in named if n and (name in n or n in name)][:5]
                hint = f"; similar names: {close}" if close else f"; names: {[n for n in named if n][:10]}"
                raise ValueError(f"layers: no module named {name!r} in {type(model).__name__}{hint}")
            module = named[name]
            desc = f"{where} of {type(module).__name__} {name!r}"
        elif isinstance(s, nn.Module):
            module, name = s, _module_name(model, s)
            desc = f"output of {type(module).__name__} {name!r}"
        elif callable(s):
            module = s(model)
            if not isinstance(module, nn.Module):
                raise TypeError(f"layers: callable {s!r} must return an nn.Module, got {type(module).__name__}")
            name = _module_name(model, module)
            desc = f"output of {type(module).__name__} {name!r} (selected by {getattr(s, '__name__', s)!r})"
        else:
            raise TypeError(f"layers[{i}] must be a module name, an nn.Module or a callable, got {type(s).__name__}")
        lab = label or (f"{name}:in" if where == "input" else (name or f"layer{i}"))
        layer = Layer(lab, name, module, where, None, desc)
        layer.axis, layer.axis_reason = axis_rule(model, name, where)
        out.append(layer)
    labels = [l.label for l in out]
    if len(set(labels)) != len(labels):
        raise ValueError(f"layers: duplicate labels {labels}; use a dict {{label: spec}} to name them")
    return out


@dataclass
class Seen:
    """One event of the discovery forward: a weight layer's input, or a repeated block's output."""

    name: str
    module: nn.Module
    call: int
    tensor: torch.Tensor
    where: str  # "input" (of a weight layer) or "output" (of a block)
    after_params: bool  # a module with parameters had finished before it


def repeated_blocks(model: nn.Module) -> dict[int, str]:
    """{id: name} of the children of every ModuleList / Sequential of ≥ 2 children of one class
    with parameters (transformer blocks, ResNet blocks), weight layers excluded."""
    out: dict[int, str] = {}
    for name, m in model.named_modules():
        if not isinstance(m, (nn.ModuleList, nn.Sequential)) or len(m) < 2:
            continue
        kids = list(m.named_children())
        cls = type(kids[0][1])
        same = all(type(c) is cls for _, c in kids) and not is_weight_layer(kids[0][1])
        if same and any(True for _ in kids[0][1].parameters()):
            out.update({id(c): f"{name}.{k}" if name else k for k, c in kids})
    return out


def auto_layers(spec: str, seen: list[Seen], root_inputs: list[torch.Tensor], model: nn.Module) -> list[Layer]:
    """Resolve "last_hidden" / "all_hidden" from the events of one forward pass (call order)."""
    reads = [e for e in seen if e.where == "input"]
    if not reads:
        raise ValueError(f"layers={spec!r}: the forward pass called no weight layer (nn.Linear, nn.ConvNd, Conv1D)")
    counts: dict[int, int] = {}
    for e in seen:
        counts[id(e.module)] = counts.get(id(e.module), 0) + 1

    def layer(e: Seen, label: str) -> Layer:
        multi = counts[id(e.module)] > 1
        kind = "input" if e.where == "input" else "output"
        desc = f"{kind} of {type(e.module).__name__} {e.name!r}"
        desc += f" (call {e.call + 1} of {counts[id(e.module)]})" if multi else ""
        readout = e.module if isinstance(e.module, nn.Linear) and e.where == "input" else None
        out = Layer(label, e.name, e.module, e.where, e.call, desc, readout=readout)
        out.axis, out.axis_reason = axis_rule(model, e.name, e.where)
        return out

    if spec == "last_hidden":
        return [layer(reads[-1], "last_hidden")]

    def is_input(t: torch.Tensor) -> bool:
        storage = _storage(t)
        return any(t is x or (storage is not None and storage == _storage(x)) for x in root_inputs)

    hidden: list[Seen] = []
    for e in seen:
        if e.where == "input" and (not e.after_params or is_input(e.tensor)):
            continue  # the model input, or computed from it by parameter-free steps
        if any(_same(e.tensor, h.tensor) for h in hidden):
            continue  # read again (Q, K, V of one input; a block output read by the next layer)
        hidden.append(e)
    if not hidden:
        raise ValueError(
            f"layers='all_hidden': every weight layer of {type(model).__name__} reads the model input; there is no "
            "hidden layer"
        )
    return [layer(e, f"hidden{i + 1}") for i, e in enumerate(hidden)]


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """One tensor, or two views of the same memory with the same layout (a compiled graph may
    return one tensor as two outputs)."""
    if a is b:
        return True
    sa = _storage(a)
    return (
        sa is not None
        and sa == _storage(b)
        and a.shape == b.shape
        and a.stride() == b.stride()
        and a.storage_offset() == b.storage_offset()
    )


def _storage(t: torch.Tensor) -> int | None:
    try:
        return t.untyped_storage().data_ptr()
    except Exception:  # a tensor without storage (fake or functional): compare by identity only
        return None


def find_fused(layer: Layer, model: nn.Module) -> Fused:
    """For ``fused=True``: the Linear→activation that produces ``layer``, found in a parent Sequential.

    Raises ValueError naming ``fused=`` when the producer cannot be identified.
    """
    names = dict(model.named_modules())
    why = ""
    if layer.where == "output" and isinstance(layer.module, nn.Linear):
        return Fused(layer.module, "identity")
    parent_name, _, child = layer.name.rpartition(".")
    parent = names.get(parent_name) if layer.name else None
    if isinstance(parent, nn.Sequential) and child.isdigit():
        i = int(child)
        # The activation that produced the features: the module itself (output) or the one before it (input).
        act_idx = i if layer.where == "output" else i - 1
        if act_idx >= 1:
            act_mod, lin = parent[act_idx], parent[act_idx - 1]
            act = act_name(act_mod)
            if isinstance(act_mod, nn.Linear):
                return Fused(act_mod, "identity")
            if act is not None and isinstance(lin, nn.Linear):
                return Fused(lin, act)
            why = f"it is produced by {type(lin).__name__} → {type(act_mod).__name__}"
        else:
            why = "it is the first module of its nn.Sequential"
    else:
        why = "its producer is not visible in an nn.Sequential"
    raise ValueError(
        f"fused=True: layer {layer.label!r} ({layer.description}) is not an nn.Linear followed by a supported "
        f"activation module (tanh, relu, gelu, sin, identity) — {why}; use fused=False for this model"
    )


def hook_targets(layers: list[Layer]) -> dict[int, tuple[nn.Module, list[int]]]:
    """{id(module): (module, [layer indices])} for the modules that need hooks."""
    out: dict[int, tuple[nn.Module, list[int]]] = {}
    for i, l in enumerate(layers):
        m = l.fused.linear if l.fused is not None else l.module
        out.setdefault(id(m), (m, []))[1].append(i)
    return out


def remove_hooks(handles: list[torch.utils.hooks.RemovableHandle]) -> None:
    for h in handles:
        h.remove()
    handles.clear()
