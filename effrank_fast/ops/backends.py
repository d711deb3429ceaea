"""Backend selection and the one backend vocabulary of every op.

Backend names, the same for every op that has the path:

- ``torch``: pure PyTorch (always there; each op's ``<op>_ref`` in ``ops/<op>/reference.py``);
- ``native``: the compiled C++/CUDA extension ``effrank_fast._C`` (``csrc/<op>/``); which devices
  each op's kernel covers is in that op's README (the Gram's native kernel is CPU-only);
- ``triton``: the Triton kernels (CUDA; on the CPU only under ``TRITON_INTERPRET=1``, for tests);
- ``auto``: the first of these that can serve the call, per op.

``jacobi_eigh`` also takes ``eigh`` (``torch.linalg.eigh``: another algorithm, not a backend of
Jacobi), and an ε-count chooses a *count method*, ``eigh`` or ``inertia``, in
:mod:`effrank_fast.ops.inertia.cost`. The name ``ref`` (jacobi_eigh's pure-PyTorch path until 0.2)
is still accepted with a ``DeprecationWarning`` (:func:`canonical_name`).

This module selects the **Gram backend** that forms M = Φᵀ diag(w) Φ: explicit argument, then
``EFFRANK_FAST_BACKEND``, then automatic. Every backend states why it refuses a call; an explicit
request that cannot be served raises :class:`BackendUnavailableError` listing those reasons, while
``auto`` quietly takes the next one.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import torch

from effrank_fast.ops import native

GRAM_BACKENDS = ("torch", "native", "triton")
# Old backend names -> the vocabulary above (accepted with a DeprecationWarning).
DEPRECATED_NAMES = {"ref": "torch"}
ENV_BACKEND = "EFFRANK_FAST_BACKEND"


_F = TypeVar("_F", bound=Callable[..., object])


def constant_result(fn: _F) -> _F:
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


def canonical_name(op: str, backend: str, allowed: tuple[str, ...]) -> str:
    """``backend`` in the shared vocabulary, checked against ``allowed`` (with "auto").

    A deprecated name (:data:`DEPRECATED_NAMES`) is translated with a ``DeprecationWarning``;
    anything else outside ``allowed`` raises a ``ValueError`` naming the argument.
    """
    if not isinstance(backend, str):
        raise TypeError(f"{op}: backend must be a string, got {type(backend).__name__}")
    new = DEPRECATED_NAMES.get(backend)
    if new is not None and new in allowed:
        warnings.warn(
            f"{op}: backend={backend!r} is now called {new!r}; the old name goes in a later release",
            DeprecationWarning,
            stacklevel=3,
        )
        backend = new
    if backend != "auto" and backend not in allowed:
        raise ValueError(f"{op}: backend must be 'auto' or one of {allowed}, got {backend!r}")
    return backend


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
    """None when the Triton kernels import, else why not.

    Triton is optional and heavy: it and the kernel module load here, on the first request that
    could use them, never at ``import effrank_fast``.
    """
    try:
        import triton  # noqa: F401
    except Exception as exc:
        return f"triton is not installed ({type(exc).__name__}: {exc}); pip install 'effrank_fast[triton]'"
    try:
        import effrank_fast.ops.gram.triton  # noqa: F401
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
    from effrank_fast.ops.gram import triton as gram_triton  # loaded by triton_import_error above

    return gram_triton.why_not(device, dtype)


BACKENDS: dict[str, Backend] = {
    "torch": Backend("torch", "pure PyTorch: chunked matmul in fp32/fp64", _torch_why_not),
    "native": Backend("native", "C++ extension, CPU only: SYRK with fused √w scaling and centring", _native_why_not),
    "triton": Backend("triton", "Triton SYRK with promoted fp32 accumulation", _triton_why_not),
}

# Triton is never chosen automatically on the CPU: the interpreter is for tests, not speed. The
# native Gram kernel is CPU-only (csrc/gram/), so CUDA goes from Triton straight to PyTorch.
AUTO_ORDER = {"cuda": ("triton", "torch"), "cpu": ("native", "torch")}


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
@constant_result
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
