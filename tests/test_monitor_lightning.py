"""The Lightning callback's logic (MonitorDriver) without Lightning, and the callback when it is installed."""

from __future__ import annotations

import importlib.util

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
