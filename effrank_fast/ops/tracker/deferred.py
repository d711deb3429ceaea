"""The asynchronous pieces of the tracker: deferred decision flags and the side stream.

HostFlags (``sync="deferred"``): an update publishes a small int64 tensor; on CUDA it is copied
into pinned host memory with ``non_blocking=True`` and an event is recorded behind the copy. The
next update polls the event (``query()`` never waits) and reads the flags only once they have
arrived. On the CPU the flags are simply kept. Reading goes through ``numpy()`` of a host tensor:
no device access at all.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from effrank_fast.ops.tracker.result import TrackResult

__all__ = ["HostFlags", "SideStream"]


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


class SideStream:
    """Runs updates on a private CUDA stream with results one step late (``side_stream=True``).

    The side stream waits for the current stream (so the Gram is complete), the Gram is marked
    as used there (the caching allocator keeps it alive), and a finished result is handed over
    by making the current stream wait on its event and recording its tensors on the current
    stream. Nothing here waits on the host.
    """

    def __init__(self) -> None:
        self._stream: torch.cuda.Stream | None = None
        self._pending: tuple[TrackResult, torch.cuda.Event] | None = None

    def run(self, gram: torch.Tensor, update: Callable[[torch.Tensor], TrackResult]) -> TrackResult | None:
        cur = torch.cuda.current_stream(gram.device)
        if self._stream is None:
            self._stream = torch.cuda.Stream(device=gram.device)
        self._stream.wait_stream(cur)
        with torch.cuda.stream(self._stream):
            gram.record_stream(self._stream)
            res = update(gram)
            ev = torch.cuda.Event()
            ev.record(self._stream)
        prev, self._pending = self._pending, (res, ev)
        return None if prev is None else self._hand_over(*prev)

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
