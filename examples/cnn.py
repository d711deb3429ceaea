"""A small CNN on synthetic images, with an optional torch.compile of the monitored model.

    python examples/cnn.py --steps 100 --out runs/cnn
    python examples/cnn.py --steps 100 --compile inductor

Four classes of 16×16 images (oriented stripes plus noise). The monitor measures the second conv
block's ReLU output [B, C, H, W] with the channels as features (``Features(axis="channels")``: B·H·W
rows of C features), the globally pooled channels ("pooled", [B, C]) and the classifier's hidden
layer ("fc1", [B, 32]).
With ``--compile`` the monitor is attached to the eager module first and the module is compiled
afterwards (``torch.compile(model)``): the hooks read activations of the compiled forward.
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

from effrank_fast.monitor import CollapseAlert, Features, RankMonitor, RunLog


def make_model(channels: int) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, channels, 3, padding=1), nn.ReLU(),
        nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(),  # 3: conv2 [B, C, H, W]
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),       # 5: [B, C]
        nn.Linear(channels, 32), nn.ReLU(),          # 7: fc1 [B, 32]
        nn.Linear(32, 4),
    )  # fmt: skip


def batch(step: int, n: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(step)
    y = torch.randint(0, 4, (n,), generator=g)
    i, j = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    angle = y.double()[:, None, None] * torch.pi / 4
    stripes = torch.sin(0.8 * (torch.cos(angle) * i + torch.sin(angle) * j))
    x = stripes.float().unsqueeze(1) + 0.3 * torch.randn(n, 1, 16, 16, generator=g)
    return x, y


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--channels", type=int, default=16)
    p.add_argument("--compile", choices=("none", "eager", "aot_eager", "inductor"), default="none")
    p.add_argument("--out", default="runs/cnn")
    a = p.parse_args()

    model = make_model(a.channels)
    mon = RankMonitor(
        model,
        layers={"conv2": "3", "pooled": "5", "fc1": "7"},
        eps=[1e-2, 1e-3],
        features=Features(axis={"conv2": "channels"}),
        log=RunLog(a.out, flush_every=25),
        alerts=CollapseAlert(metric="eps_rank@0.001", fraction_of_max=0.25),
    )
    trained = model if a.compile == "none" else torch.compile(model, backend=a.compile)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for step in range(a.steps):
        x, y = batch(step)
        loss = nn.functional.cross_entropy(trained(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        mon.step(loss=loss)
    mon.close()
    for r in (r for r in mon.history if r["step"] == a.steps - 1):
        print(f"step {r['step']} {r['layer']}: loss {r['loss']:.3f} eps_rank@0.001 {r['eps_rank@0.001']}")


if __name__ == "__main__":
    main()
