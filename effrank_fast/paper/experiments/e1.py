"""E1: 1-D multi-frequency regression, u(x) = Σ_j a_j sin(k_j πx) on Ω = [−1, 1].

Full batch on ``train_points`` equispaced points, MSE; the monitor's probe is a
``probe_points``-point trapezoid grid (weights summing to |Ω| = 2, M ≈ ∫_Ω φφᵀ dx). Variants:
``--optimizer adam|sgd|lbfgs``, ``--activation tanh|relu|sin``, ``--width 64|128`` (any value works).

The target (``--set KEY=VALUE``):

- ``target=sum`` (default): k_j = 1 … ``frequencies`` (default 8), all a_j = 1;
- ``target=two-scale``: u = sin 2πx + 0.3 sin 16πx (k = 2, 16; a = 1, 0.3): one coarse scale and a
  small fine one, whose energy (0.3²/2 · |Ω|/2 = 0.045 in MSE) is the plateau the loss sits on when
  only the coarse scale is fitted;
- ``wavenumbers=2,16`` and ``amplitudes=1,0.3`` (comma lists, k_j in units of π): any sum; they
  override ``target``. ``amplitudes`` defaults to all ones.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from effrank_fast.paper.experiments.common import Problem, RunConfig, linear_ends, mlp
from effrank_fast.quadrature import trapezoid

NAME = "e1"
TITLE = "1-D multi-frequency regression Σ sin(kπx) on [−1, 1]"
DEFAULTS: dict[str, Any] = {"steps": 5000, "optimizer": "adam", "activation": "tanh", "width": 64, "depth": 3}
LBFGS_STEPS = 3000  # L-BFGS iterations (one per opt.step) when --optimizer lbfgs and no --steps
OPTIONS: dict[str, Any] = {
    "frequencies": 8,
    "target": "sum",
    "wavenumbers": "",
    "amplitudes": "",
    "train_points": 1000,
    "probe_points": 2000,
}
TARGETS = {"sum": None, "two-scale": ((2.0, 16.0), (1.0, 0.3))}
BOUNDS = [(-1.0, 1.0)]


def _floats(text: str, name: str) -> tuple[float, ...]:
    try:
        vals = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError as exc:
        raise ValueError(f"{name} must be a comma list of numbers, got {text!r}") from exc
    if not vals or not all(math.isfinite(v) for v in vals):
        raise ValueError(f"{name} must be a comma list of finite numbers, got {text!r}")
    return vals


def terms(options: dict[str, Any]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(wavenumbers k_j, amplitudes a_j) of the target u = Σ_j a_j sin(k_j πx) from the options."""
    o = {**OPTIONS, **options}
    if str(o["wavenumbers"]).strip():
        ks = _floats(str(o["wavenumbers"]), "wavenumbers")
        amps = _floats(str(o["amplitudes"]), "amplitudes") if str(o["amplitudes"]).strip() else (1.0,) * len(ks)
        if len(amps) != len(ks):
            raise ValueError(f"amplitudes has {len(amps)} entries but wavenumbers has {len(ks)}")
        return ks, amps
    if str(o["amplitudes"]).strip():
        raise ValueError("amplitudes needs wavenumbers (e.g. --set wavenumbers=2,16 --set amplitudes=1,0.3)")
    name = str(o["target"])
    if name not in TARGETS:
        raise ValueError(f"target must be one of {tuple(TARGETS)}, got {name!r}")
    preset = TARGETS[name]
    if preset is not None:
        return preset
    k = int(o["frequencies"])
    if k < 1:
        raise ValueError(f"frequencies must be >= 1, got {k}")
    return tuple(float(j) for j in range(1, k + 1)), (1.0,) * k


def check_options(options: dict[str, Any]) -> None:
    terms(options)


def target(x: torch.Tensor, ks: tuple[float, ...], amps: tuple[float, ...]) -> torch.Tensor:
    """u(x) = Σ_j a_j sin(k_j πx) on points x [N, 1] → [N, 1]."""
    return sum((a * torch.sin(k * math.pi * x) for k, a in zip(ks, amps, strict=True)), torch.zeros_like(x))


def describe(ks: tuple[float, ...], amps: tuple[float, ...]) -> str:
    parts = [f"{'' if a == 1 else f'{a:g} '}sin({k:g}πx)" for k, a in zip(ks, amps, strict=True)]
    return " + ".join(parts) if len(parts) <= 4 else f"Σₖ sin(kπx), k ≤ {len(parts)}"


def build(cfg: RunConfig, device: torch.device) -> Problem:
    o = {**OPTIONS, **cfg.options}
    torch.manual_seed(cfg.seed)
    model = mlp(1, cfg.width, cfg.depth, cfg.activation).to(device)
    first, last = linear_ends(model)
    x = torch.linspace(-1.0, 1.0, int(o["train_points"]), device=device).unsqueeze(1)
    ks, amps = terms(o)
    y = target(x, ks, amps)
    xq, wq = trapezoid(-1.0, 1.0, int(o["probe_points"]))
    xq, wq = xq.to(device), wq.to(device)

    def loss() -> torch.Tensor:
        return torch.mean((model(x) - y) ** 2)

    arch = "-".join(["1", *[str(cfg.width)] * cfg.depth, "1"])
    return Problem(
        model=model,
        loss=loss,
        probe=xq,
        weights=wq,
        readout=last,
        first_layer=first,
        bounds=BOUNDS,
        target=target(xq, ks, amps)[:, 0],
        info={
            "task": f"E1: fit {describe(ks, amps)} on [−1, 1] ({o['train_points']} points, MSE)",
            "model": f"{cfg.activation} MLP {arch}",
            "loss_name": "MSE",
        },
    )
