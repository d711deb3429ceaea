"""The Lightning callback's logic (MonitorDriver) without Lightning, and the callback when it is installed."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from torch import nn

from effrank_fast.monitor import lightning as lmod


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 1))


def test_driver_steps_once_per_optimizer_step_with_gradient_accumulation(tmp_path):
    model = _model()
    driver = lmod.MonitorDriver(eps=[1e-3], flush_every=2)
    driver.setup(model, tmp_path)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    global_step = 0
    x = torch.randn(4, 16, 2)
    for batch_idx in range(4):  # accumulate_grad_batches = 2
        driver.batch_start(global_step)
        loss = model(x[batch_idx]).square().mean()
        loss.backward()
        if batch_idx % 2 == 1:
            opt.step()
            opt.zero_grad()
            global_step += 1
        driver.batch_end({"loss": loss}, global_step)
    state = driver.state_dict()
    driver.close()
    hist = driver.monitor.history
    assert [r["step"] for r in hist] == [0, 1] and state["step"] == 2
    assert (tmp_path / "rank" / "history.jsonl").exists()
    # A new driver restored before setup (Lightning may restore callback state first) continues at step 2.
    again = lmod.MonitorDriver(eps=[1e-3])
    again.load_state_dict(state)
    again.setup(model, tmp_path)
    again.batch_start(2)
    model(x[0]).sum().backward()
    again.batch_end(torch.tensor(0.5), 3)
    again.close()
    assert [r["step"] for r in again.monitor.history] == [0, 1, 2]


def test_callback_needs_lightning():
    if lmod.HAS_LIGHTNING:
        cb = lmod.RankMonitorCallback(eps=[1e-3])
        assert isinstance(cb.driver, lmod.MonitorDriver)
    else:
        with pytest.raises(ImportError, match="needs Lightning"):
            lmod.RankMonitorCallback(eps=[1e-3])


@pytest.mark.skipif(importlib.util.find_spec("lightning") is None, reason="lightning is not installed")
def test_callback_in_a_real_trainer(tmp_path):
    import lightning.pytorch as pl

    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = _model()

        def training_step(self, batch, batch_idx):
            (x,) = batch
            return self.net(x).square().mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(64, 2)), batch_size=8)
    cb = lmod.RankMonitorCallback(eps=[1e-3], flush_every=1)
    trainer = pl.Trainer(
        max_steps=4,
        accumulate_grad_batches=2,
        callbacks=[cb],
        default_root_dir=tmp_path,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        accelerator="cpu",
    )
    trainer.fit(Module(), data)
    assert [r["step"] for r in cb.driver.monitor.history] == [0, 1, 2, 3]


@pytest.mark.skipif(importlib.util.find_spec("lightning") is None, reason="lightning is not installed")
def test_probe_rows_in_a_real_trainer_hold_the_parameters_of_their_loss(tmp_path):
    """Lightning steps the optimizer with a closure: the probe must still see θ_t (float64 λ₁ check)."""
    import lightning.pytorch as pl

    probe = torch.randn(50, 2)
    thetas = []

    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = _model()

        def forward(self, x):  # the probe calls the LightningModule
            return self.net(x)

        def on_train_batch_start(self, batch, batch_idx):
            if batch_idx % 2 == 0:  # the first micro-batch of an optimizer step: θ_t
                thetas.append([p.detach().double().clone() for p in self.net.parameters()])

        def training_step(self, batch, batch_idx):
            (x,) = batch
            return self(x).square().mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.5)

    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(64, 2)), batch_size=8)
    cb = lmod.RankMonitorCallback(eps=[1e-3], probe=probe, flush_every=1)
    trainer = pl.Trainer(
        max_steps=4,
        accumulate_grad_batches=2,
        callbacks=[cb],
        default_root_dir=tmp_path,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        accelerator="cpu",
    )
    trainer.fit(Module(), data)
    rows = cb.driver.monitor.history
    assert [r["step"] for r in rows] == [0, 1, 2, 3]
    for row, (w1, b1, _, _) in zip(rows, thetas, strict=True):
        phi = torch.tanh(probe.double() @ w1.T + b1).numpy()
        lam1 = float(np.linalg.eigvalsh(phi.T @ phi / len(phi))[-1])
        assert row["lambda_1"] == pytest.approx(lam1, rel=1e-6)  # fp32 model vs float64 recomputation
    assert len({round(r["lambda_1"], 6) for r in rows}) == 4  # λ₁ moves every step
