"""Load the optional compiled extension ``effrank_fast._C`` and remember why it failed.

Importing this module never raises and never initialises CUDA. ``NATIVE_ERROR`` holds the reason
in words when the extension is missing, so that backends can explain a refusal and
``python -m effrank_fast.info`` can report it. ``EFFRANK_FAST_DISABLE_NATIVE=1`` skips loading.
"""

from __future__ import annotations

import importlib
import os

import torch

HAS_NATIVE: bool = False
NATIVE_ERROR: str | None = None


def _load() -> None:
    global HAS_NATIVE, NATIVE_ERROR
    if os.environ.get("EFFRANK_FAST_DISABLE_NATIVE", "0") == "1":
        NATIVE_ERROR = "disabled by EFFRANK_FAST_DISABLE_NATIVE=1"
        return
    try:
        importlib.import_module("effrank_fast._C")
    except Exception as exc:  # ImportError, or OSError for an ABI mismatch
        NATIVE_ERROR = (
            f"the compiled extension effrank_fast._C did not load ({type(exc).__name__}: {exc}); "
            "build it with `pip install --no-build-isolation -e .`"
        )
        return
    HAS_NATIVE = True


def has_kernel(op: str, device_type: str) -> bool:
    """True when ``effrank_fast::<op>`` has a kernel registered for ``device_type`` ("cpu"/"cuda")."""
    if not HAS_NATIVE:
        return False
    key = {"cpu": "CPU", "cuda": "CUDA"}.get(device_type)
    if key is None:
        return False
    try:
        return bool(torch._C._dispatch_has_kernel_for_dispatch_key(f"effrank_fast::{op}", key))
    except RuntimeError:
        return False


def kernel_missing_reason(op: str, device_type: str) -> str | None:
    """None when the native kernel exists, else the reason in words."""
    if not HAS_NATIVE:
        return NATIVE_ERROR
    if has_kernel(op, device_type):
        return None
    return f"effrank_fast._C has no {device_type} kernel for effrank_fast::{op} (built without it)"
