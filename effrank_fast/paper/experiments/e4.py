"""E4: classification of scikit-learn's bundled 8×8 digits (1797 images, 10 classes; no download).

A fixed split (``random_state`` 0, independent of the seed) keeps 360 images as the evaluation set:
it is the monitor's probe, with the empirical measure (mode "mean", w = 1/N); the paper defines the
ε-rank on a domain Ω, so this data-driven version is our generalisation. Pixels are scaled to
[0, 1]. Cross-entropy on the other 1437 images, full batch by default (``batch_size`` > 0: minibatches,
and the logged loss is then that minibatch's). There is no regression target, so no lower bound;
‖c̃‖ and the evaluation accuracy are logged.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.nn import functional as F

from effrank_fast.paper.experiments.common import Problem, RunConfig, linear_ends, mlp

NAME = "e4"
TITLE = "classification of scikit-learn's bundled digits (rank on a fixed evaluation set, mode mean)"
DEFAULTS: dict[str, Any] = {"steps": 2000, "optimizer": "adam", "activation": "tanh", "width": 128, "depth": 3}
LBFGS_STEPS = 2000  # L-BFGS iterations (one per opt.step)
OPTIONS: dict[str, Any] = {"eval_points": 360, "batch_size": 0}


def load_digits_split(eval_points: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_train, y_train, x_eval, y_eval) with pixels in [0, 1]."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("E4 needs scikit-learn: pip install 'effrank_fast[experiments]'") from exc
    data = load_digits()
    x = torch.tensor(data.data, dtype=torch.float32) / 16.0
    y = torch.tensor(data.target, dtype=torch.int64)
    if not 0 < eval_points < len(x):
        raise ValueError(f"eval_points must be in 1..{len(x) - 1}, got {eval_points}")
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    ev, tr = perm[:eval_points], perm[eval_points:]
    return x[tr], y[tr], x[ev], y[ev]


def build(cfg: RunConfig, device: torch.device) -> Problem:
    o = {**OPTIONS, **cfg.options}
    xtr, ytr, xev, yev = (t.to(device) for t in load_digits_split(int(o["eval_points"])))
    torch.manual_seed(cfg.seed)
    model = mlp(64, cfg.width, cfg.depth, cfg.activation, dim_out=10).to(device)
    first, last = linear_ends(model)
    batch = int(o["batch_size"])
    gen = torch.Generator().manual_seed(cfg.seed)

    def loss() -> torch.Tensor:
        if 0 < batch < len(xtr):
            idx = torch.randint(len(xtr), (batch,), generator=gen).to(device)
            return F.cross_entropy(model(xtr[idx]), ytr[idx])
        return F.cross_entropy(model(xtr), ytr)

    @torch.no_grad()
    def evaluate() -> dict[str, float]:
        training = model.training
        model.eval()
        logits = model(xev)
        model.train(training)
        return {
            "eval_accuracy": float((logits.argmax(dim=1) == yev).float().mean()),
            "eval_loss": float(F.cross_entropy(logits, yev)),
        }

    arch = "-".join(["64", *[str(cfg.width)] * cfg.depth, "10"])
    return Problem(
        model=model,
        loss=loss,
        probe=xev,
        weights=None,
        readout=last,
        first_layer=first,
        bounds=[(0.0, 1.0)] * 64,
        evaluate=evaluate,
        info={
            "task": f"E4: digits 8×8, {len(xtr)} train / {len(xev)} eval images, cross-entropy",
            "model": f"{cfg.activation} MLP {arch}",
            "loss_name": "cross-entropy",
        },
    )
