"""Opt-in autotuning of the Triton SYRK tile configuration: ``EFFRANK_FAST_AUTOTUNE=1``.

Default (unset or ``0``): the fixed, documented Hopper configuration (``HOPPER_CONFIGS`` in
triton_plan.py), the same on every call and every machine. With ``EFFRANK_FAST_AUTOTUNE=1`` the
first launch for each key times the candidates in ``HOPPER_CANDIDATES`` (those
``benchmarks/bench_gram.py --sweep`` measures) and keeps the fastest for the rest of the process.

- Key: (operand mode, d bucket, N bucket, promotion window, layout, dtype, device), buckets
  being powers of two of the output size and the reduction length.
- Candidates never change the error model: only those with the default's promotion window are
  timed (``triton.py``), and the split over programs follows from the tile shape as usual.
- Cost: the first call per key synchronises and runs every candidate ~30 times into a scratch
  output. Nothing is timed while tracing (fake tensors under ``torch.compile``) or during CUDA-graph
  capture: an earlier eager call's choice is reused, else the default.
- The interpreter (``TRITON_INTERPRET=1``) cannot time kernels: every candidate ties at 0 ms and
  the first (the default) wins, deterministically and without being run.

Why not ``triton.autotune``: the grid, the split over programs and the promotion window all depend
on the tile shape, so each candidate needs its own launch plan; and the streaming op adds into a
caller's ``out`` in place, which ``triton.autotune`` would add into once per timing run.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable, Hashable, Sequence
from typing import TypeVar

import torch

ENV_AUTOTUNE = "EFFRANK_FAST_AUTOTUNE"
T = TypeVar("T")

# key -> the chosen candidate; cleared by tests, kept for the life of the process otherwise.
CHOICES: dict[Hashable, object] = {}


def enabled() -> bool:
    """Whether ``EFFRANK_FAST_AUTOTUNE=1`` is set (read at every launch, so it can be toggled)."""
    return os.environ.get(ENV_AUTOTUNE, "0") == "1"


def bucket(n: int) -> int:
    """The power of two ≥ n: shapes within a factor 2 share a tuning result."""
    return 1 << max(0, int(n) - 1).bit_length()


def can_time(t: torch.Tensor) -> bool:
    """False while tracing (fake tensors) or capturing a CUDA graph: launches cannot be timed then."""
    from torch._subclasses.fake_tensor import is_fake

    if is_fake(t):
        return False
    return not (t.device.type == "cuda" and torch.cuda.is_current_stream_capturing())


def bench_ms(fn: Callable[[], None]) -> float:
    """Median time of ``fn`` in ms by CUDA events; 0 under the interpreter, which cannot time kernels."""
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        return 0.0
    from triton.testing import do_bench

    return float(do_bench(fn, warmup=5, rep=25, return_mode="median"))


def choose(key: Hashable, candidates: Sequence[T], run: Callable[[T], None], timeable: bool) -> T:
    """The cached choice for ``key``, else the fastest of ``candidates`` (ties: the earliest).

    ``run(c)`` launches candidate ``c`` once. A candidate that fails (it does not compile or fit on
    this GPU and Triton) is skipped; if all fail the first is returned and its launch will raise.
    """
    if key in CHOICES:
        return CHOICES[key]  # type: ignore[return-value]
    if len(candidates) == 1 or not timeable:
        return candidates[0]
    times = []
    for c in candidates:
        try:
            times.append(bench_ms(functools.partial(run, c)))
        except Exception:  # compile errors, out of shared memory: not a candidate here
            times.append(math.inf)
    best = candidates[times.index(min(times))]
    CHOICES[key] = best
    return best
