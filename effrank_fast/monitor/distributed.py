"""Data-parallel support: all-reduce the Gram sums, never gather activations.

With ``distributed=True`` (or automatically when ``torch.distributed`` is initialised with more
than one rank), each rank accumulates (G, s, m) over its own rows, and one all-reduce (SUM) per
measured step gives every rank the sums of the global batch: d² + d + 1 numbers per layer,
independent of the batch size. The step's loss travels in the same all-reduce, so the ``loss``
column is the mean of the ranks' losses (the global-batch loss when the ranks hold equal shares of
a mean-reduced loss, as with a ``DistributedSampler``). A ``probe=`` is split across ranks by rows, so each rank runs
1/world of it. Only rank 0 writes files.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


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
