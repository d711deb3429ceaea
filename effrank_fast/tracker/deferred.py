"""The asynchronous pieces of the tracker: deferred decision flags and the side stream.

HostFlags (``sync="deferred"``): an update publishes a small int64 tensor; on CUDA it is copied
into pinned host memory with ``non_blocking=True`` and an event is recorded behind the copy. The
next update polls the event (``query()`` never waits) and reads the flags only once they have
arrived. On the CPU the flags are simply kept. Reading goes through ``numpy()`` of a host tensor:
no device access at all. :class:`Pending` holds the decisions taken from them.

SideStream (``side_stream=True``): see its docstring for the rule on the Gram buffer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from effrank_fast.tracker.result import TrackResult

__all__ = ["HostFlags", "Pending", "SideStream"]


class HostFlags:
    def __init__(self) -> None:
        self._host: torch.Tensor | None = None
        self._event: torch.cuda.Event | None = None

    def publish(self, flags: torch.Tensor) -> None:
        if flags.device.type == "cuda":
            if self._host is None or self._host.shape != flags.shape:
                self._host = torch.empty(flags.shape, dtype=flags.dtype, pin_memory=True)
            self._host.copy_(flags, non_blocking=True)
            self._event = torch.cuda.Event()
            self._event.record()
        else:
            self._host = flags.detach().clone()
            self._event = None

    def poll(self) -> list[int] | None:
        """The last published flags if they have arrived (then forgets them), else None."""
        if self._host is None:
            return None
        if self._event is not None and not self._event.query():
            return None
        values = [int(x) for x in self._host.numpy().tolist()]
        self._host, self._event = None, None
        return values

    def snapshot(self) -> list[int] | None:
        """The unread flags, waiting for them if needed (a host sync: for checkpoints only)."""
        if self._host is None:
            return None
        if self._event is not None:
            self._event.synchronize()
        return [int(x) for x in self._host.numpy().tolist()]

    def restore(self, values: list[int] | None) -> None:
        """Make ``values`` the unread flags (from :meth:`snapshot` of a saved tracker)."""
        self._event = None
        self._host = None if values is None else torch.tensor(values, dtype=torch.int64)


@dataclass
class Pending:
    """Decisions carried from one update to the next (taken from the flags of ``sync="deferred"``;
    ``sync="step"`` uses only ``grow``)."""

    grow: bool = False  # grow k before the next Rayleigh–Ritz
    restart: bool = False  # restart cold
    extra: int = 0  # subspace iterations to add (the last residuals were too large)
    streak: int = 0  # updates in a row that were not accepted
    open_idx: list[int] = field(default_factory=list)  # thresholds to settle by an exact count

    def absorb(self, flags: list[int], max_iters: int) -> None:
        """Update from published flags [accepted, non-finite, grow, open_0 … open_{E−1}]."""
        accepted, nonfinite = bool(flags[0]), bool(flags[1])
        self.streak = 0 if accepted else self.streak + 1
        self.extra = 0 if accepted else 1
        if nonfinite or self.streak > max_iters:
            self.restart, self.streak, self.extra = True, 0, 0
        self.grow = bool(flags[2])
        self.open_idx = [e for e, o in enumerate(flags[3:]) if o]


class SideStream:
    """Runs updates on a private CUDA stream with results one step late (``side_stream=True``).

    The side stream waits for the current stream (so the Gram is complete), the Gram is marked
    as used there (the caching allocator keeps it alive), and a finished result is handed over
    by making the current stream wait on its event and recording its tensors on the current
    stream. Nothing here waits on the host.

    The Gram buffer: ``record_stream`` only keeps its memory from being *reused*; an in-place write
    by the caller on its own stream (``gram.zero_()``, an accumulation into the same buffer) is not
    ordered after the side stream's read of it. The update reads the caller's Gram once, at its
    start (it forms the symmetric part; everything after uses that copy), and ``released`` is an
    event recorded right behind that read. Rule: before writing into a Gram passed to
    ``update``, make the writing stream wait on ``released`` (``stream.wait_event``: no host
    sync), or pass a fresh tensor every step, or construct with ``copy_gram=True`` (the Gram is
    cloned on the current stream first: one d² copy, then the buffer is free at once).
    """

    def __init__(self, copy_gram: bool = False) -> None:
        self.copy_gram = copy_gram
        self.released: torch.cuda.Event | None = None
        self._stream: torch.cuda.Stream | None = None
        self._active = False
        self._pending: tuple[TrackResult, torch.cuda.Event] | None = None

    def run(
        self, gram: torch.Tensor, update: Callable[[torch.Tensor], TrackResult], fresh: bool = False
    ) -> TrackResult | None:
        """``fresh``: ``gram`` is already a private copy (an upcast), so ``copy_gram`` has nothing to do."""
        cur = torch.cuda.current_stream(gram.device)
        if self.copy_gram and not fresh:
            gram = gram.clone()  # on the current stream: ordered before any later write there
        if self._stream is None:
            self._stream = torch.cuda.Stream(device=gram.device)
        self._stream.wait_stream(cur)
        with torch.cuda.stream(self._stream):
            gram.record_stream(self._stream)
            self._active = True
            try:
                res = update(gram)
            finally:
                self._active = False
            ev = torch.cuda.Event()
            ev.record(self._stream)
        prev, self._pending = self._pending, (res, ev)
        return None if prev is None else self._hand_over(*prev)

    def mark_read(self) -> None:
        """Called by the update once it no longer reads the caller's Gram."""
        if self._active and self._stream is not None:
            self.released = torch.cuda.Event()
            self.released.record(self._stream)

    def flush(self) -> TrackResult | None:
        if self._pending is None:
            return None
        prev, self._pending = self._pending, None
        return self._hand_over(*prev)

    @staticmethod
    def _hand_over(res: TrackResult, ev: torch.cuda.Event) -> TrackResult:
        cur = torch.cuda.current_stream(res.eigenvalues.device)
        cur.wait_event(ev)
        for t in res.tensors():
            t.record_stream(cur)
        return res
