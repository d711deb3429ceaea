"""Data-parallel support: all-reduce the Gram sums, never gather activations.

With ``distributed=True`` (or automatically when ``torch.distributed`` is initialised with more
than one rank), each rank accumulates (G, s, m) over its own rows, and one all-reduce (SUM) per
measured step gives every rank the sums of the global batch: d² + d + 1 numbers per layer,
independent of the batch size. The step's loss travels in the same all-reduce, so the ``loss``
column is the mean of the ranks' losses (the global-batch loss when the ranks hold equal shares of
a mean-reduced loss, as with a ``DistributedSampler``). A ``probe=`` is split across ranks by rows, so each rank runs
1/world of it. Only rank 0 writes files.

Every rank joins the same collectives with the same shapes at every measured step, whatever it
captured (:class:`LayerReducer`): a rank without activations for a layer (an empty micro-batch, a
skipped forward, layers not resolved yet) contributes zeros of the layer's shape, and a layer that
failed on any rank is an error on every rank. The shapes (d, accumulation dtype, centred or not)
are agreed once by a small MAX all-reduce, repeated only while some layer has not been seen on any
rank; after that each measured step costs one all-reduce per accumulation dtype.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist

from effrank_fast.monitor.accumulate import GramAccumulator

_DTYPES = [torch.float64, torch.float32, torch.bfloat16, torch.float16]  # code = index + 1


def resolve(distributed: bool | None) -> bool:
    """Whether to all-reduce: explicit flag, or auto when a process group with > 1 rank exists."""
    ready = dist.is_available() and dist.is_initialized()
    if distributed is None:
        return bool(ready and dist.get_world_size() > 1)
    if not isinstance(distributed, bool):
        raise TypeError(f"distributed must be True, False or None, got {distributed!r}")
    if distributed and not ready:
        raise ValueError(
            "distributed=True needs torch.distributed initialised (dist.init_process_group) before the RankMonitor"
        )
    return distributed


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def collective_device() -> torch.device:
    """Where the process group's collectives run: CUDA for NCCL, else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """Sum every tensor across ranks: one collective per dtype (flattened and concatenated)."""
    out: list[torch.Tensor | None] = [None] * len(tensors)
    by_dtype: dict[torch.dtype, list[int]] = {}
    for i, t in enumerate(tensors):
        by_dtype.setdefault(t.dtype, []).append(i)
    for idx in by_dtype.values():
        flat = torch.cat([tensors[i].reshape(-1) for i in idx])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        offset = 0
        for i in idx:
            n = tensors[i].numel()
            out[i] = flat[offset : offset + n].view_as(tensors[i])
            offset += n
    return [t for t in out if t is not None]


def shard_rows(x: torch.Tensor, r: int, world: int) -> torch.Tensor:
    """Rank r's contiguous block of rows (``tensor_split``: sizes differ by at most one)."""
    return torch.tensor_split(x, world, dim=0)[r]


def _all_reduce_max(t: torch.Tensor) -> torch.Tensor:
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t


class LayerReducer:
    """All-reduces the layers' sums with collectives of the same shape on every rank (see above)."""

    def __init__(self) -> None:
        self.layout: list[tuple[int, int, bool]] | None = None  # per layer: (d, dtype code, centred)

    def _agree(self, accs: Sequence[GramAccumulator], bad: set[int]) -> list[tuple[int, int, bool]]:
        device = collective_device()
        n = int(_all_reduce_max(torch.tensor([len(accs)], dtype=torch.int64, device=device))[0])
        head = torch.zeros(n, 3, dtype=torch.int64)
        for li, acc in enumerate(accs):
            if li not in bad and not acc.empty:
                assert acc.G is not None
                head[li] = torch.tensor([acc.G.shape[0], _DTYPES.index(acc.G.dtype) + 1, int(acc.s is not None)])
        head = _all_reduce_max(head.to(device)).cpu()  # host sync: only until every layer was seen
        layout = [(int(d), int(c), bool(s)) for d, c, s in head.tolist()]
        if all(d > 0 for d, _, _ in layout):
            self.layout = layout
        return layout

    def reduce(
        self, accs: Sequence[GramAccumulator], errors: dict[int, str], loss: torch.Tensor | float
    ) -> tuple[torch.Tensor, dict[int, str]]:
        """Sum each layer's (G, m, s) over the ranks into ``accs`` (in place).

        Args:
            accs: this rank's accumulators (empty ones, or none at all, contribute zeros).
            errors: this rank's failed layers; a layer failed on any rank fails on every rank.
            loss: this rank's loss.

        Returns: (the mean of the ranks' losses as a 0-d float64 tensor, {layer: error} on every rank).
        """
        layout = self.layout if self.layout is not None else self._agree(accs, set(errors))
        device = collective_device()
        L = len(layout)
        flags = torch.zeros(L + 1, dtype=torch.float64, device=device)  # failed-on-ranks per layer, then the loss
        for li in errors:
            if li < L:
                flags[li] = 1.0
        if isinstance(loss, torch.Tensor):
            flags[L] = loss.to(device=device, dtype=torch.float64).reshape(())
        else:
            flags[L] = loss
        groups: dict[int, list[torch.Tensor]] = {1: [flags]}
        for li, (d, code, centred) in enumerate(layout):
            if d == 0:
                continue
            dtype = _DTYPES[code - 1]
            acc = accs[li] if li < len(accs) and li not in errors else None
            G = acc.G if acc is not None else None
            if G is not None and (G.shape[0] != d or G.dtype != dtype):
                errors[li] = f"its Gram is {tuple(G.shape)} {G.dtype} on this rank, {d}×{d} {dtype} on another"
                flags[li] = 1.0
                G = None
            if acc is not None and G is not None:
                parts = list(acc.tensors())
            else:  # nothing of this layer here: zeros of the agreed shape
                parts = [torch.zeros(d, d, dtype=dtype, device=device), torch.zeros((), dtype=dtype, device=device)]
                parts += [torch.zeros(d, dtype=dtype, device=device)] if centred else []
            groups.setdefault(code, []).extend(p.to(device) for p in parts)
        reduced = {code: all_reduce_sum(ts) for code, ts in sorted(groups.items())}
        flags = reduced[1].pop(0)
        out_errors = {li: msg for li, msg in errors.items() if li < L}
        for li, (d, code, centred) in enumerate(layout):
            if d == 0:  # known on no rank (only before the layout is agreed)
                out_errors.setdefault(li, "no activations captured on any rank since the last step")
                continue
            k = 3 if centred else 2
            parts, reduced[code] = reduced[code][:k], reduced[code][k:]
            if li < len(accs) and li not in out_errors:
                # NaN where another rank failed or no rank captured anything: read at the flush, no sync here
                accs[li].load(parts, invalid=flags[li] > 0)
        return flags[L] / world_size(), out_errors
