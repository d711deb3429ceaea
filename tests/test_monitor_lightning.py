"""The Lightning callback: optimizer-step rows, keys in Lightning's own logging, EarlyStopping on a rank, alerts."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from effrank_fast.integrations import lightning as lmod
from effrank_fast.integrations._common import MonitorArgs
from effrank_fast.monitor.alerts import CollapseAlert

pl = pytest.importorskip("lightning.pytorch")


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 1))


def _lam(probe, w1, b1):
    phi = torch.tanh(probe.double() @ w1.T + b1).numpy()
    return np.linalg.eigvalsh(phi.T @ phi / len(phi))


class Module(pl.LightningModule):
    """A tanh MLP recording θ_t (the parameters of each optimizer step's loss) at the step's first micro-batch."""

    def __init__(self, accumulate=1):
        super().__init__()
        self.net, self.accumulate, self.thetas = _model(), accumulate, []

    def forward(self, x):  # the probe calls the LightningModule
        return self.net(x)

    def on_train_batch_start(self, batch, batch_idx):
        if batch_idx % self.accumulate == 0:
            self.thetas.append([p.detach().double().clone() for p in self.net.parameters()])

    def training_step(self, batch, batch_idx):
        (x,) = batch
        return self(x).square().mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.5)


def _data(n=64):
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(n, 2)), batch_size=8)


def _trainer(tmp_path, callbacks, **kw):
    opts = {
        "max_steps": 4, "default_root_dir": tmp_path, "enable_checkpointing": False, "enable_progress_bar": False,
        "enable_model_summary": False, "accelerator": "cpu", "logger": False,
    }  # fmt: skip
    opts.update(kw)
    return pl.Trainer(callbacks=callbacks, **opts)


def test_driver_steps_once_per_optimizer_step_with_gradient_accumulation(tmp_path):
    model = _model()
    driver = lmod.MonitorDriver(MonitorArgs(eps=(1e-3,)))
    driver.setup(model, tmp_path)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    global_step = 0
    x = torch.randn(4, 16, 2)
    stepped = []
    for batch_idx in range(4):  # accumulate_grad_batches = 2
        driver.batch_start(global_step)
        loss = model(x[batch_idx]).square().mean()
        loss.backward()
        if batch_idx % 2 == 1:
            opt.step()
            opt.zero_grad()
            global_step += 1
        stepped.append(driver.batch_end({"loss": loss}, global_step))
    state = driver.state_dict()
    driver.close()
    assert stepped == [False, True, False, True]
    assert [r["step"] for r in driver.monitor.history] == [0, 1] and state["step"] == 2
    assert (tmp_path / "rank" / "history.jsonl").exists()
    # A new driver restored before setup (Lightning may restore callback state first) continues at step 2.
    again = lmod.MonitorDriver(MonitorArgs(eps=(1e-3,)))
    again.load_state_dict(state)
    again.setup(model, tmp_path)
    again.batch_start(2)
    model(x[0]).sum().backward()
    again.batch_end(torch.tensor(0.5), 3)
    again.close()
    assert [r["step"] for r in again.monitor.history] == [0, 1, 2]


def test_old_import_path_warns_once_and_is_the_same_module():
    code = (
        "import warnings\n"
        "warnings.simplefilter('always')\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    import effrank_fast.monitor.lightning as old\n"
        "    from effrank_fast.monitor.lightning import RankMonitorCallback\n"
        "import effrank_fast.integrations.lightning as new\n"
        "moved = [str(x.message) for x in w if 'effrank_fast.monitor.lightning moved' in str(x.message)]\n"
        "assert old is new and RankMonitorCallback is new.RankMonitorCallback, (old, new)\n"
        "assert moved == ['effrank_fast.monitor.lightning moved to effrank_fast.integrations.lightning; "
        "the old path goes in a later release'], moved\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr


def test_probe_rows_in_a_real_trainer_hold_the_parameters_of_their_loss(tmp_path):
    """Lightning steps the optimizer with a closure: the probe must still see θ_t (float64 λ₁ check)."""
    probe = torch.randn(50, 2)
    module = Module(accumulate=2)
    cb = lmod.RankMonitorCallback(layers=["net.1"], eps=[1e-3], probe=probe)
    _trainer(tmp_path, [cb], accumulate_grad_batches=2).fit(module, _data())
    rows = cb.monitor.history
    assert [r["step"] for r in rows] == [0, 1, 2, 3]
    for row, (w1, b1, _, _) in zip(rows, module.thetas, strict=True):
        assert row["lambda_1"] == pytest.approx(float(_lam(probe, w1, b1)[-1]), rel=1e-6)
    assert len({round(r["lambda_1"], 6) for r in rows}) == 4  # λ₁ moves every step


def test_keys_reach_csv_logger_and_logged_metrics_at_lightnings_log_steps(tmp_path):
    probe = torch.randn(60, 2)
    module = Module()
    cb = lmod.RankMonitorCallback(layers={"h": "net.1"}, eps=[1e-1, 1e-3], probe=probe)
    logger = pl.loggers.CSVLogger(tmp_path, name="csv")
    _trainer(tmp_path, [cb], max_steps=6, log_every_n_steps=2, logger=logger).fit(module, _data())
    key = "rank/h/eps_rank@0.001"
    assert key in module.trainer.logged_metrics and key in module.trainer.callback_metrics
    with open(f"{logger.log_dir}/metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get(key)]
    assert [int(r["step"]) for r in rows] == [1, 3, 5]  # global steps 2, 4, 6: Lightning's own log steps
    for r in rows:
        w1, b1, _, _ = module.thetas[int(r["step"])]
        lam = _lam(probe, w1, b1)
        assert float(r[key]) == (lam > 1e-3).sum() and float(r["rank/h/eps_rank@0.1"]) == (lam > 1e-1).sum()
        assert float(r["rank/h/lambda_1"]) == pytest.approx(lam[-1], rel=1e-6)
    run = Path(logger.log_dir) / "rank"  # the monitor's own folder: rows, but no second copy of the scalars
    assert (run / "history.jsonl").exists() and not list(run.glob("events.out.tfevents*"))


def test_early_stopping_and_model_checkpoint_monitor_a_rank(tmp_path):
    key = "rank/h/eps_rank@0.001"
    cb = lmod.RankMonitorCallback(layers={"h": "net.1"}, eps=[1e-3], log_every_n_steps=1)
    stop = pl.callbacks.EarlyStopping(monitor=key, mode="max", stopping_threshold=1, check_on_train_epoch_end=True)
    ckpt = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor=key, mode="max")
    trainer = _trainer(tmp_path, [cb, stop, ckpt], max_steps=-1, max_epochs=3, enable_checkpointing=True)
    trainer.fit(Module(), _data(32))
    assert trainer.current_epoch == 1 and stop.stopped_epoch == 0  # stopped after the first epoch (strict=True)
    last = [r for r in cb.monitor.history if r["step"] == trainer.global_step - 1]
    assert float(ckpt.best_model_score) == last[0]["eps_rank@0.001"]


def test_collapse_alert_stops_the_trainer(tmp_path):
    alert = CollapseAlert(metric="eps_rank@0.001", below=100, action="stop")
    cb = lmod.RankMonitorCallback(layers={"h": "net.1"}, eps=[1e-3], alerts=[alert], log_every_n_steps=3)
    trainer = _trainer(tmp_path, [cb], max_steps=20)
    with pytest.warns(RuntimeWarning, match="rank collapse: layer 'h'"):
        trainer.fit(Module(), _data())
    assert trainer.global_step == 3 and cb.monitor.alerts.events[0].step == 0


def test_bad_cadence_names_the_argument():
    with pytest.raises(ValueError, match="log_every_n_steps must be"):
        lmod.RankMonitorCallback(log_every_n_steps=0)


def test_fit_from_a_checkpoint_keeps_one_timeline_of_rows(tmp_path):
    """``trainer.fit(..., ckpt_path=...)`` from a step-3 checkpoint of a 6-step run (the monitor's
    state travels in the checkpoint): the run folder ends with every step once, in order; the rows
    before the checkpoint are the first run's, and each resumed row's λ₁ is that of the parameters
    its step started from (float64 check)."""
    from effrank_fast.monitor.history import read_jsonl

    probe = torch.randn(50, 2)
    run = tmp_path / "rank"

    def fit(ckpt_path=None):
        module = Module()
        cb = lmod.RankMonitorCallback(layers={"h": "net.1"}, eps=[1e-3], probe=probe, log=str(run))
        saves = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=3, save_top_k=-1)
        trainer = _trainer(tmp_path, [cb, saves], max_steps=6, enable_checkpointing=True)
        trainer.fit(module, _data(), ckpt_path=ckpt_path)
        return module

    fit()
    before = read_jsonl(run / "history.jsonl")
    assert [r["step"] for r in before] == list(range(6))
    (ckpt,) = (tmp_path / "ckpt").glob("*step=3.ckpt")
    module = fit(str(ckpt))  # the callback's state in the checkpoint cuts the files back to step 3
    after = read_jsonl(run / "history.jsonl")
    assert [r["step"] for r in after] == list(range(6))
    assert after[:3] == before[:3]
    assert len(module.thetas) == 3  # the resumed fit ran steps 3, 4, 5
    for row, (w1, b1, _, _) in zip(after[3:], module.thetas, strict=True):
        lam = _lam(probe, w1, b1)
        assert row["lambda_1"] == pytest.approx(float(lam[-1]), rel=1e-6)
        assert row["eps_rank@0.001"] == (lam > 1e-3).sum()
