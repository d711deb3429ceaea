"""Backend selection: explicit argument, then ``EFFRANK_FAST_BACKEND``, then automatic.

Two independent choices are made per call:

- the **Gram backend** forms M = Φᵀ diag(w) Φ: ``torch`` (pure PyTorch, always there),
  ``native`` (the C++/CUDA extension) or ``triton`` (fused Triton SYRK kernels);
- the **count method** turns M into ε-counts: ``eigh`` (all eigenvalues, float64) or
  ``inertia`` (Sylvester inertia of M − τI by a float64 LDLᵀ, no eigensolver).

Every backend states why it refuses a call; an explicit request that cannot be served raises
:class:`BackendUnavailableError` listing those reasons, while ``auto`` quietly takes the next one.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import torch

from effrank_fast.ops import native

GRAM_BACKENDS = ("torch", "native", "triton")
COUNT_METHODS = ("eigh", "inertia")
ENV_BACKEND = "EFFRANK_FAST_BACKEND"


_F = TypeVar("_F", bound=Callable[..., object])


def _constant_result(fn: _F) -> _F:
    """``torch.compiler.assume_constant_result`` without importing torch._dynamo (≈ 2 s) at import time.

    That decorator only marks ``fn`` with the attribute Dynamo reads when it traces a call; the
    mark is set here directly unless Dynamo is loaded already. tests/test_packaging.py checks that
    the decorator sets exactly this attribute, tests/test_compile.py that compiled calls fold it.
    """
    if "torch._dynamo" in sys.modules:
        return torch.compiler.assume_constant_result(fn)
    fn._dynamo_marked_constant = True  # type: ignore[attr-defined]
    return fn


class BackendUnavailableError(RuntimeError):
    """An explicitly requested backend cannot serve this input; the message says why."""


@dataclass(frozen=True)
class Backend:
    name: str
    description: str
    why_not: Callable[[torch.device, torch.dtype], str | None]


def _torch_why_not(device: torch.device, dtype: torch.dtype) -> str | None:
    return None


def _native_why_not(device: torch.device, dtype: torch.dtype) -> str | None:
    return native.kernel_missing_reason("gram_native", device.type)


def triton_import_error() -> str | None:
    """None when the Triton kernels import, else why not."""
    try:
        importlib.import_module("triton")
    except Exception as exc:
        return f"triton is not installed ({type(exc).__name__}: {exc}); pip install 'effrank_fast[triton]'"
    try:
        importlib.import_module("effrank_fast.ops.gram.triton")
    except Exception as exc:
        return f"the Triton kernels failed to import ({type(exc).__name__}: {exc})"
    return None


def _triton_why_not(device: torch.device, dtype: torch.dtype) -> str | None:
    reason = triton_import_error()
    if reason is not None:
        return reason
    interpret = os.environ.get("TRITON_INTERPRET", "0") == "1"
    if device.type != "cuda" and not (device.type == "cpu" and interpret):
        return f"Triton kernels need a CUDA device (or TRITON_INTERPRET=1 on CPU), got {device.type}"
    module = importlib.import_module("effrank_fast.ops.gram.triton")
    why = getattr(module, "why_not", None)
    return why(device, dtype) if why is not None else None


BACKENDS: dict[str, Backend] = {
    "torch": Backend("torch", "pure PyTorch: chunked matmul in fp32/fp64", _torch_why_not),
    "native": Backend("native", "C++/CUDA extension: fused √w scaling and centring", _native_why_not),
    "triton": Backend("triton", "Triton SYRK with promoted fp32 accumulation", _triton_why_not),
}

# Triton is never chosen automatically on the CPU: the interpreter is for tests, not speed.
AUTO_ORDER = {"cuda": ("triton", "native", "torch"), "cpu": ("native", "torch")}


def requested_backend(backend: str) -> str:
    """Resolve ``backend`` against the environment variable; validate the name."""
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a string, got {type(backend).__name__}")
    if backend == "auto":
        backend = os.environ.get(ENV_BACKEND, "auto") or "auto"
        source = f" (from {ENV_BACKEND})"
    else:
        source = ""
    if backend != "auto" and backend not in BACKENDS:
        raise ValueError(f"backend must be 'auto' or one of {GRAM_BACKENDS}, got {backend!r}{source}")
    return backend


# Selection reads the environment, the dispatcher and imports modules: none of that can be traced,
# so torch.compile evaluates it once at trace time and bakes the answer into the graph.
@_constant_result
def select_gram_backend(backend: str, device: torch.device, dtype: torch.dtype) -> str:
    """The Gram backend that will run, or an error that explains every refusal."""
    name = requested_backend(backend)
    if name != "auto":
        reason = BACKENDS[name].why_not(device, dtype)
        if reason is not None:
            raise BackendUnavailableError(f"backend={name!r} cannot run on {device.type}/{dtype}: {reason}")
        return name
    for candidate in AUTO_ORDER.get(device.type, ("torch",)):
        if BACKENDS[candidate].why_not(device, dtype) is None:
            return candidate
    return "torch"


def explain(device: torch.device, dtype: torch.dtype = torch.float32) -> dict[str, str | None]:
    """{backend: None if available else the reason}, for ``info`` and error messages."""
    return {name: b.why_not(device, dtype) for name, b in BACKENDS.items()}


def inertia_why_not(device: torch.device) -> str | None:
    return native.kernel_missing_reason("inertia", device)


# How many d³/3 inertia factorisations cost less than one float64 eigvalsh, by device and size:
# ((minimum d, factorisations), ...), the last row whose d ≤ dim applies.
# - cpu: measured (benchmarks/RESULTS.md "Exact ε-rank by inertia": 2-core machine, torch 2.13):
#   one factorisation runs at the cost of cholesky_ex and 3× (d = 128) to 4.7–5.6× (d = 256…2048)
#   faster than eigvalsh; parity below d = 64.
# - cuda: PROVISIONAL, not yet measured with this kernel (no GPU was lent to the session that wrote
#   it). From the H100 measurements of the unfused Python prototype of the same algorithm
#   (shared/research/algorithms.md §3.3: eigvalsh fp64 / LDLᵀ fp64 ≈ 3 at d = 2048, 3.6–6.5 at
#   4096, 10 at 8192 and 16384), which the fused kernel should only improve on; below 2048, one
#   factorisation (a few dozen launches) against cuSOLVER syevd's millisecond floor. Re-derive from
#   benchmarks/bench_inertia.py on the GPU.
INERTIA_BUDGET: dict[str, tuple[tuple[int, int], ...]] = {
    "cpu": ((1, 0), (64, 1), (128, 2), (256, 3), (512, 4)),
    "cuda": ((1, 1), (2048, 2), (4096, 4), (8192, 8)),
}


def inertia_factorisations(
    n_thresholds: int, relative: str | None, certify: bool = False, gram_error: bool = False
) -> int:
    """Factorisations an inertia ε-count costs.

    Without ``gram_error`` (M taken as exact): one per threshold, three when ``certify`` (as for a
    float64 M: ops/inertia); ε·λ_max costs both ends of the λ_max bracket per ε, one to prove the
    bracket and about one more for the Lanczos steps. With ``gram_error`` (eps_rank: δ_G in the
    certificate, ops/inertia/certificate.py): two per threshold, the ends τ ± (δ_G + m), for an
    absolute ε and for ε times the λ_max bracket alike, plus the bracket's two for ``"max"``.
    """
    if gram_error:
        return 2 * n_thresholds + (2 if relative == "max" else 0)
    per = 3 if certify else 1
    return 2 * per * n_thresholds + 2 if relative == "max" else per * n_thresholds


def inertia_budget(device: torch.device, dim: int) -> int:
    budget = 0
    for min_dim, factorisations in INERTIA_BUDGET.get(device.type, ()):
        if dim >= min_dim:
            budget = factorisations
    return budget


@_constant_result
def select_count_method(
    method: str,
    device: torch.device,
    n_thresholds: int,
    gram_backend: str,
    dim: int | None = None,
    relative: str | None = None,
    dtype: torch.dtype | None = None,
    gram_error: bool = True,
) -> str:
    """``eigh`` or ``inertia`` for an ε-count.

    ``auto`` takes inertia when the native kernel exists, the torch backend was not forced, and the
    factorisations it needs (:func:`inertia_factorisations`) cost less than one eigvalsh on this
    device at this size (:data:`INERTIA_BUDGET`; without ``dim``: at most 3 thresholds). With
    ``gram_error`` (eps_rank's certificate, the default) two per threshold; without it a float64
    M (``dtype``) is certified, three factorisations per threshold. Both are exact; eigvalsh serves
    any number of thresholds from one spectrum, the inertia count pays d³/3 per threshold but no
    tridiagonalisation.
    """
    if method not in ("auto", *COUNT_METHODS):
        raise ValueError(f"method must be 'auto', 'eigh' or 'inertia', got {method!r}")
    if method == "eigh":
        return "eigh"
    reason = inertia_why_not(device)
    if method == "inertia":
        if reason is not None:
            raise BackendUnavailableError(f"method='inertia' cannot run on {device.type}: {reason}")
        return "inertia"
    if reason is not None or gram_backend == "torch":
        return "eigh"
    needed = inertia_factorisations(n_thresholds, relative, certify=dtype == torch.float64, gram_error=gram_error)
    budget = 3 if dim is None else inertia_budget(device, dim)
    return "inertia" if needed <= budget else "eigh"
