"""Checkpointing of :class:`SpectrumTracker`: ``state_dict()`` / ``load_state_dict()``.

A resumed tracker must continue warm: without its Ritz basis the first update after a resume is
a cold start (``cold_iters`` subspace iterations, and different numbers than an uninterrupted
run). The state holds what the arguments do not: k (grown by ``auto_grow``), the basis, the
update counter (refresh and entropy schedules), the pending decisions with any unread flags,
and the random generator. The device is not known when a state is loaded, so the basis and the
generator are applied at the next update.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import torch

from effrank_fast.tracker.deferred import HostFlags, Pending

__all__ = ["Checkpointing"]

_VERSION = 1


class Checkpointing:
    """Base of :class:`SpectrumTracker` holding its checkpoint methods (the attributes are the tracker's)."""

    k: int
    oversample: int
    dtype: torch.dtype
    _d: int | None
    _device: torch.device | None
    _step: int
    _v: torch.Tensor | None
    _gen: torch.Generator | None
    _next: Pending
    _flags: HostFlags
    _saved: dict[str, Any] | None

    def reset(self) -> None:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """The state a resumed tracker needs to continue warm; tensors on the CPU (a host sync).

        The arguments are not included: construct the new tracker with the same ones, then call
        :meth:`load_state_dict`. A side-stream result not yet returned is not saved (``flush()`` it).
        """
        if self._device is not None and self._device.type == "cuda":
            torch.cuda.synchronize(self._device)  # the basis may still be written on a side stream
        return {
            "version": _VERSION,
            "k": self.k,
            "d": self._d,
            "step": self._step,
            "basis": None if self._v is None else self._v.detach().cpu(),
            "generator": None if self._gen is None else self._gen.get_state(),
            "generator_device": None if self._device is None else self._device.type,
            "pending": asdict(self._next),
            "flags": self._flags.snapshot(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict`; the basis moves to the device of the next Gram."""
        if not isinstance(state, dict) or state.get("version") != _VERSION:
            raise ValueError("state must be a dict from SpectrumTracker.state_dict()")
        k, d, basis = int(state["k"]), state["d"], state["basis"]
        q = None if d is None else min(k + self.oversample, d)
        if basis is not None and (d is None or tuple(basis.shape) != (d, q)):
            raise ValueError(
                f"the state's basis has shape {tuple(basis.shape)}, but k = {k}, oversample = {self.oversample} and "
                f"d = {d} need ({d}, {q}): construct the tracker with the arguments of the saved one"
            )
        self.reset()
        self.k, self._step = k, int(state["step"])
        self._next = Pending(**state["pending"])
        self._flags.restore(state["flags"])
        self._saved = state

    def _check_saved(self, d: int) -> None:
        saved = self._saved
        if saved is not None and saved["d"] is not None and saved["d"] != d:
            raise ValueError(f"the loaded state tracked a Gram with d = {saved['d']}, this one has d = {d}")

    def _restore_saved(self, device: torch.device) -> None:
        """At the first update after a load: the basis and the generator onto ``device``."""
        saved, self._saved = self._saved, None
        if saved is None:
            return
        if saved["basis"] is not None:
            self._v = saved["basis"].to(device, self.dtype)
        if saved["generator"] is not None and self._gen is not None and saved["generator_device"] == device.type:
            self._gen.set_state(saved["generator"])  # else reseeded: generator states differ per device type
