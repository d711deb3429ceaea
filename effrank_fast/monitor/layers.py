"""Which activations the monitor measures, and the forward hooks that capture them.

Layer specifications (``RankMonitor(layers=...)``):

- ``"last_hidden"``: the input of the final ``nn.Linear`` call of a forward pass (the paper's
  terminal hidden layer, whatever activation produced it).
- ``"all_hidden"``: the input of every ``nn.Linear`` call except those that read the model's own
  input, in call order (``hidden1``, ``hidden2``, ...). A ``Linear`` called twice gives two layers.
- a list (or ``{label: spec}`` dict) of module names (``"net.3"``: that module's output;
  ``"net.4:in"``: its input), ``nn.Module`` objects, or callables ``fn(model) -> nn.Module``.

The two automatic specs are resolved from the call order of the first forward pass that the
monitor sees (the probe's or the first training batch's), so modules registered in one order and
called in another are handled, and so is a ``Linear`` reused within one forward.

Tensors with more than two dimensions are flattened to ``[-1, last]`` (channels last, e.g.
``[batch, tokens, features]``); for other layouts, monitor a module that produces ``[N, d]``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

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

    def info(self) -> dict[str, object]:
        out: dict[str, object] = {"module": self.name, "where": self.where, "description": self.description}
        if self.call is not None:
            out["call"] = self.call
        if self.fused is not None:
            out["fused_act"] = self.fused.act
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


def as_features(t: torch.Tensor) -> torch.Tensor:
    """A captured activation as a detached [N, d] matrix (leading dimensions flattened)."""
    t = t.detach()
    if t.dim() == 1:
        return t.unsqueeze(1)
    if t.dim() > 2:
        return t.reshape(-1, t.shape[-1])
    return t


def check_spec(layers: object, model: nn.Module) -> None:
    """Validate ``layers=`` at construction (clear errors before training starts)."""
    if isinstance(layers, str):
        if layers in AUTO_SPECS:
            if not any(isinstance(m, nn.Linear) for m in model.modules()):
                raise ValueError(
                    f"layers={layers!r} looks for nn.Linear layers, but {type(model).__name__} has none; "
                    "pass module names instead, e.g. layers=['encoder.block3']"
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
            name = s
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
        out.append(Layer(lab, name, module, where, None, desc))
    labels = [l.label for l in out]
    if len(set(labels)) != len(labels):
        raise ValueError(f"layers: duplicate labels {labels}; use a dict {{label: spec}} to name them")
    return out


@dataclass
class LinearCall:
    """One nn.Linear call seen during discovery."""

    name: str
    module: nn.Linear
    call: int
    input: torch.Tensor


def auto_layers(spec: str, calls: list[LinearCall], root_inputs: list[torch.Tensor]) -> list[Layer]:
    """Resolve "last_hidden" / "all_hidden" from the Linear calls of one forward pass (call order)."""
    if not calls:
        raise ValueError(f"layers={spec!r}: the forward pass made no nn.Linear call")
    counts: dict[int, int] = {}
    for c in calls:
        counts[id(c.module)] = counts.get(id(c.module), 0) + 1

    def layer(c: LinearCall, label: str) -> Layer:
        multi = counts[id(c.module)] > 1
        desc = f"input of nn.Linear {c.name!r}" + (f" (call {c.call + 1} of {counts[id(c.module)]})" if multi else "")
        return Layer(label, c.name, c.module, "input", c.call, desc, readout=c.module)

    if spec == "last_hidden":
        return [layer(calls[-1], "last_hidden")]
    first = calls[0].input
    hidden = [c for c in calls if c.input is not first and not any(c.input is x for x in root_inputs)]
    if not hidden:
        raise ValueError("layers='all_hidden': every nn.Linear reads the model input; there is no hidden layer")
    return [layer(c, f"hidden{i + 1}") for i, c in enumerate(hidden)]


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
