"""What the monitor is given, made safe: the loss value, the step number, each forward's sample mask.

The first two never raise and neither reads device data (no host sync):

- ``loss``: a 0-d tensor is taken as is; a tensor with more elements (a per-sample loss,
  ``reduction="none"``) becomes its mean; an int or float (or a numpy number or array) is taken as
  given (an int beyond the float range is ±inf); ``None`` is NaN (no loss logged). Anything else
  (a string, a list, a complex tensor) is NaN with one warning. Tensors are detached and cast to
  float64 on their own device.
- ``Features(mask=...)``: :class:`MaskSource` finds each forward's sample mask in its inputs.
- ``step``: explicit step numbers must increase. A repeated or decreasing one (or one that is
  not an int) is replaced, with one warning, by the next number (last step + 1), so no row is
  lost and no two rows share a step.
"""

from __future__ import annotations

import inspect
import math
import numbers
import operator
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

Warn = Callable[[str, str], None]


def loss_value(loss: object, warn: Warn) -> torch.Tensor | float:
    """The ``loss`` column's value: a detached 0-d float64 tensor on the loss's device, or a float."""
    try:
        return _loss_value(loss, warn)
    except Exception as exc:  # e.g. a number type whose float() raises: NaN, the row is kept
        warn(f"loss:{type(exc).__name__}", f"RankMonitor.step(loss=...) unusable ({exc!r}); the loss column holds NaN")
        return float("nan")


def _loss_value(loss: object, warn: Warn) -> torch.Tensor | float:
    if loss is None:
        return float("nan")
    if isinstance(loss, torch.Tensor):
        if not (loss.dtype.is_floating_point or loss.dtype in _REAL_DTYPES):  # complex, quantised, ...
            return _not_numeric(loss, warn)
        t = loss.detach().to(torch.float64)
        return t.reshape(()) if t.numel() == 1 else t.mean()  # numel() reads the shape only
    if isinstance(loss, numbers.Real):
        try:
            return float(loss)
        except OverflowError:  # an int beyond the float range (10**400): it is infinite as a float
            return math.inf if loss > 0 else -math.inf  # type: ignore[operator]
    if isinstance(loss, np.ndarray) and loss.dtype.kind in "biuf":
        return float(loss.astype(np.float64).mean()) if loss.size else float("nan")
    return _not_numeric(loss, warn)


_REAL_DTYPES = (torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def _not_numeric(loss: object, warn: Warn) -> float:
    what = f"a {type(loss).__name__}" + (f" of dtype {loss.dtype}" if isinstance(loss, torch.Tensor) else "")
    warn(
        f"loss:{type(loss).__name__}",
        f"RankMonitor.step(loss=...) got {what}, not a number or a real tensor; the loss column holds NaN there",
    )
    return float("nan")


def step_number(requested: object, expected: int, warn: Warn) -> int:
    """The step number of this call: ``requested`` if it is an int ≥ ``expected``, else ``expected``."""
    if requested is None:
        return expected
    try:
        if isinstance(requested, torch.Tensor):
            raise TypeError("a tensor (reading it would synchronise the device)")
        s = operator.index(requested)  # type: ignore[arg-type]
    except TypeError as exc:
        warn(
            "step:type",
            f"RankMonitor.step(step=...) must be an int, got {type(requested).__name__} ({exc}); "
            f"numbering it {expected} (the previous step + 1)",
        )
        return expected
    if s < expected:
        warn(
            "step:order",
            f"RankMonitor.step(step={s}) does not increase (the previous step was {expected - 1}); step numbers "
            f"must increase, so this and any later such step are renumbered to the previous step + 1 ({expected})",
        )
        return expected
    return s


class MaskSource:
    """Where each forward's sample mask comes from (``Features(mask=...)``).

    ``spec``: None (every row counts); a keyword name (``"attention_mask"``, also found when passed
    positionally); a positional index; or ``fn(args, kwargs) -> Tensor | None``. A mask that is
    None or absent means every row counts (transformers' convention for ``attention_mask=None``).
    """

    def __init__(self, spec: object, model: nn.Module) -> None:
        if spec is not None and not isinstance(spec, (str, int)) and not callable(spec):
            raise TypeError(
                "Features(mask=...) must be None, a keyword name such as 'attention_mask', a positional index or "
                f"a callable fn(args, kwargs) -> mask, got {type(spec).__name__}"
            )
        if isinstance(spec, bool):
            raise TypeError("Features(mask=...) must be None, a keyword name, an index or a callable, got a bool")
        self.spec = spec
        self._position: int | None = None
        if isinstance(spec, str):
            try:
                params = list(inspect.signature(model.forward).parameters)
            except (TypeError, ValueError):
                params = []
            self._position = params.index(spec) if spec in params else None

    def find(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        spec = self.spec
        if spec is None:
            return None
        if isinstance(spec, str):
            if spec in kwargs:
                return kwargs[spec]
            return args[self._position] if self._position is not None and self._position < len(args) else None
        if isinstance(spec, int):
            return args[spec] if -len(args) <= spec < len(args) else None
        return spec(args, kwargs)
