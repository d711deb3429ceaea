"""Lightning: RankMonitorCallback logging through the Trainer's loggers, EarlyStopping on a rank.

    python examples/lightning_mlp.py --steps 200 --out runs/lightning

A tanh MLP fits a 1-D function. The callback logs ``rank/<layer>/<metric>`` through
``pl_module.log_dict`` at the Trainer's ``log_every_n_steps``: they are in ``trainer.logged_metrics``,
in the CSVLogger's metrics.csv, and ``EarlyStopping`` watches one of them (stop once the last hidden
layer's ε-rank reaches ``--target-rank``). A collapse alert would stop the run as well.
"""

from __future__ import annotations

import argparse

import lightning.pytorch as pl
import torch
from torch import nn

from effrank_fast.integrations.lightning import RankMonitorCallback
from effrank_fast.monitor import CollapseAlert


class Fit(pl.LightningModule):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(1, width), nn.Tanh(), nn.Linear(width, width), nn.Tanh(), nn.Linear(width, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = nn.functional.mse_loss(self(x), y)
        self.log("loss", loss, on_step=True, on_epoch=False)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=3e-3)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--target-rank", type=int, default=1000, help="EarlyStopping threshold on the ε-rank")
    p.add_argument("--out", default="runs/lightning_mlp")
    a = p.parse_args()

    torch.manual_seed(0)
    x = torch.linspace(-1, 1, 512).unsqueeze(1)
    y = sum(torch.sin(k * torch.pi * x) for k in range(1, 5))
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=64, shuffle=True)
    key = "rank/hidden2/eps_rank@0.001"
    callbacks = [
        RankMonitorCallback(
            layers={"hidden1": "net.1", "hidden2": "net.3"},
            eps=[1e-2, 1e-3],
            probe=x,
            alerts=CollapseAlert(metric="eps_rank@0.001", fraction_of_max=0.25, action="stop"),
        ),
        pl.callbacks.EarlyStopping(
            monitor=key, mode="max", stopping_threshold=a.target_rank, patience=10**6, check_on_train_epoch_end=True
        ),
    ]
    logger = pl.loggers.CSVLogger(a.out, name="csv")
    trainer = pl.Trainer(
        max_steps=a.steps, log_every_n_steps=5, logger=logger, callbacks=callbacks, accelerator="cpu",
        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
    )  # fmt: skip
    trainer.fit(Fit(a.width), data)
    print(f"steps {trainer.global_step}; {key} = {float(trainer.logged_metrics[key]):g}")
    print(f"metrics.csv: {logger.log_dir}/metrics.csv; monitor rows: {logger.log_dir}/rank")


if __name__ == "__main__":
    main()
