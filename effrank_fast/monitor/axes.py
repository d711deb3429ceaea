"""The feature axis of each monitored activation (the ``Features(axis=...)`` rule).

The rule in words is in :mod:`effrank_fast.monitor.layers` and ``docs/monitor.md``; turning an
activation into Φ [N, d] on that axis is :func:`effrank_fast.rank.prepare.flatten_features`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd
from torch.nn.modules.instancenorm import _InstanceNorm
from torch.nn.modules.pooling import _AdaptiveAvgPoolNd, _AdaptiveMaxPoolNd, _AvgPoolNd, _MaxPoolNd

from effrank_fast.rank.prepare import feature_axis

if TYPE_CHECKING:
    from effrank_fast.monitor.layers import Layer

# Modules whose type fixes where the features of their input and output lie.
_CHANNEL_TYPES = (
    _ConvNd,
    _BatchNorm,
    _InstanceNorm,
    nn.GroupNorm,
    _MaxPoolNd,
    _AvgPoolNd,
    _AdaptiveAvgPoolNd,
    _AdaptiveMaxPoolNd,
    nn.Dropout2d,
    nn.Dropout3d,
)
_LAST_TYPES = (
    nn.Linear,
    nn.Bilinear,
    nn.LayerNorm,
    nn.RMSNorm,
    nn.Embedding,
    nn.EmbeddingBag,
    nn.MultiheadAttention,
    nn.TransformerEncoderLayer,
    nn.TransformerDecoderLayer,
)


def is_hf_conv1d(module: nn.Module) -> bool:
    """transformers' ``Conv1D`` (GPT-2): a Linear with a transposed [in, out] weight."""
    return type(module).__name__ == "Conv1D" and hasattr(module, "nf") and hasattr(module, "weight")


def own_axis(module: nn.Module) -> str | None:
    """ "channels" or "last" when the module's type fixes its feature axis, else None."""
    if is_hf_conv1d(module) or isinstance(module, _LAST_TYPES):
        return "last"
    if isinstance(module, _CHANNEL_TYPES):
        return "channels"
    return None


def _last_decided(module: nn.Module, prefix: str) -> tuple[str, str] | None:
    """The axis of the last submodule (registration order, itself included) whose type fixes one."""
    for name, m in reversed(list(module.named_modules(prefix=prefix))):
        ax = own_axis(m)
        if ax is not None:
            return ax, f"{type(m).__name__} {name!r}"
    return None


def axis_rule(model: nn.Module, name: str, where: str) -> tuple[str | None, str]:
    """(axis, why) for the input or output of the module ``name`` (see the module docstring)."""
    named = dict(model.named_modules())
    module = named[name]
    ax = own_axis(module)
    if ax is not None:
        return ax, f"{where} of {type(module).__name__}"
    if where == "output" and list(module.children()):
        found = _last_decided(module, name)
        if found is not None:
            return found[0], f"as its last {found[1]}"
    child = name
    while child:
        parent_name, _, _ = child.rpartition(".")
        siblings = list(named[parent_name].named_children())
        keys = [k for k, _ in siblings]
        i = keys.index(child.rpartition(".")[2])
        for k, m in reversed(siblings[:i]):
            found = _last_decided(m, f"{parent_name}.{k}" if parent_name else k)
            if found is not None:
                return found[0], f"as the preceding {found[1]}"
        child = parent_name
    return None, "no module before it fixes a feature axis"


def resolve_axis(layer: Layer, requested: object) -> None:
    """Set ``layer.axis`` from ``Features(axis=...)``: "auto" keeps the rule's choice."""
    req = requested.get(layer.label, "auto") if isinstance(requested, Mapping) else requested
    if req is None or req == "auto":
        return
    if isinstance(req, str) and req not in ("channels", "last"):
        raise ValueError(f"Features(axis=...) must be an int, 'channels', 'last' or 'auto', got {req!r}")
    if not isinstance(req, (int, str)) or isinstance(req, bool):
        raise TypeError(f"Features(axis=...) must be an int, a string or a dict of them, got {type(req).__name__}")
    layer.axis, layer.axis_reason = req, "set by Features(axis=...)"


def feature_axis_of(layer: Layer, ndim: int) -> int:
    """The feature dimension of an ``ndim``-D activation of ``layer``; ValueError when undecided."""
    if ndim <= 1:
        return 0
    if isinstance(layer.axis, int) or ndim > 2:
        if layer.axis is None:
            raise ValueError(
                f"cannot tell the feature axis of layer {layer.label!r} ({layer.description}, {ndim} dimensions): "
                f"{layer.axis_reason}; set Features(axis='channels' or 'last' or an int), or "
                f"axis={{{layer.label!r}: ...}}"
            )
        return feature_axis(layer.axis, ndim, name=f"the feature axis of layer {layer.label!r}")
    return 1  # [N, d]: channels and last agree
