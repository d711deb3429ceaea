"""``python -m effrank_fast.info``: versions, devices, and which backends run (or why not)."""

from __future__ import annotations

import importlib
import importlib.metadata
import platform
import sys

import torch

from effrank_fast._version import __version__
from effrank_fast.ops import backends, native
from effrank_fast.ops.inertia.cost import inertia_why_not


def _version(module: str) -> str:
    # an optional third-party package named at run time (triton): importlib, not an import statement
    try:
        return str(importlib.import_module(module).__version__)
    except Exception as exc:
        return f"not available ({type(exc).__name__})"


# The training stacks effrank_fast.integrations works with: (distribution, what it enables).
INTEGRATIONS = (
    ("transformers", "effrank_fast.integrations.hf (Trainer callback)"),
    ("lightning", "effrank_fast.integrations.lightning (callback, loggers)"),
    ("wandb", "effrank_fast.integrations.wandb (WandbSink)"),
    ("torchmetrics", "effrank_fast.integrations.torchmetrics (EffectiveRank metric)"),
    ("tensorboard", "the monitor's TensorBoard events"),
)


def integrations() -> dict[str, str | None]:
    """{distribution: installed version, or None}; reads package metadata only (imports nothing)."""
    out: dict[str, str | None] = {}
    for dist, _ in INTEGRATIONS:
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = None
    return out


def report() -> str:
    """The report as text; asking about CUDA here is fine (this is not the import path)."""
    lines = [
        f"effrank_fast {__version__}",
        f"python {platform.python_version()} ({sys.platform})",
        f"torch {torch.__version__} (CUDA build: {torch.version.cuda or 'no'})",
        f"triton {_version('triton')}",
        f"native extension: {'loaded' if native.HAS_NATIVE else 'missing: ' + str(native.NATIVE_ERROR)}",
    ]
    devices = [torch.device("cpu")]
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        lines.append(f"cuda device: {props.name}, sm_{props.major}{props.minor}, {props.total_memory / 2**30:.0f} GiB")
        devices.append(torch.device("cuda"))
    else:
        lines.append("cuda device: none visible")
    for dev in devices:
        lines.append(f"[{dev.type}] Gram backends (auto order {backends.AUTO_ORDER.get(dev.type)}):")
        for name, reason in backends.explain(dev).items():
            lines.append(f"  {name:7s} {'available' if reason is None else 'unavailable: ' + reason}")
        reason = inertia_why_not(dev)
        lines.append(f"  count method inertia: {'available' if reason is None else 'unavailable: ' + reason}")
        lines.append("  count method eigh: available")
    lines.append("optional integrations:")
    versions = integrations()
    for dist, what in INTEGRATIONS:
        v = versions[dist]
        lines.append(f"  {dist:12s} {v if v is not None else 'not installed':14s} {what}")
    return "\n".join(lines)


def main() -> None:
    print(report())


if __name__ == "__main__":
    main()
