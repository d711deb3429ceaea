"""step() takes any loss and any step number without raising or losing a row; close() never raises."""

from __future__ import annotations

import math
import shutil
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from effrank_fast import RankMonitor
from effrank_fast.monitor import RunLog, read_jsonl


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 3))


def _monitor(log_dir=None):
    torch.manual_seed(1)
    return RankMonitor(_model(), "last_hidden", [1e-3], probe=torch.randn(32, 2), log=RunLog(log_dir, flush_every=3))


def test_every_kind_of_loss_gives_a_row():
    per_sample = torch.rand(64, 3)  # F.mse_loss(out, y, reduction="none")
    losses = [
        (torch.tensor(0.25, requires_grad=True) * 2, 0.5),  # a scalar tensor with grad: used as is
        (per_sample, float(per_sample.double().mean())),  # per-sample: its mean
        (torch.tensor([0.75]), 0.75),  # one element
        (torch.arange(4), 1.5),  # an integer tensor
        (3, 3.0),  # int
        (0.125, 0.125),  # float
        (np.float32(2.5), 2.5),
        (np.array([1.0, 3.0]), 2.0),
        (None, math.nan),
        (torch.tensor(float("inf")), math.inf),  # a diverged loss is kept as such
        (10**400, math.inf),  # an int beyond the float range is infinite as a float
        (-(10**400), -math.inf),
    ]
    mon = _monitor()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # none of these warns
        for loss, _ in losses:
            mon.step(loss=loss)
    mon.close()
    got = [r["loss"] for r in mon.history]
    assert [r["step"] for r in mon.history] == list(range(len(losses)))
    for g, (_, want) in zip(got, losses, strict=True):
        assert (math.isnan(g) and math.isnan(want)) or g == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("bad", ["abc", [1.0], {"loss": 1.0}, torch.tensor(1 + 2j), object()])
def test_a_non_numeric_loss_is_nan_with_one_warning(bad):
    mon = _monitor()
    with pytest.warns(RuntimeWarning, match="loss column holds NaN") as rec:
        for _ in range(4):
            mon.step(loss=bad)
        mon.step(loss=1.0)
    assert sum("loss column holds NaN" in str(w.message) for w in rec) == 1
    mon.close()
    assert [r["step"] for r in mon.history] == [0, 1, 2, 3, 4]  # nothing dropped
    assert all(math.isnan(r["loss"]) for r in mon.history[:4]) and mon.history[4]["loss"] == 1.0
    assert all(math.isfinite(r["lambda_1"]) for r in mon.history)


def test_step_numbers_must_increase_and_are_renumbered_otherwise():
    mon = _monitor()
    with pytest.warns(RuntimeWarning, match="does not increase") as rec:
        for s in (10, 5, 10, 20, 20):
            mon.step(loss=float(s), step=s)
    assert sum("does not increase" in str(w.message) for w in rec) == 1
    with pytest.warns(RuntimeWarning, match="must be an int"):
        mon.step(loss=1.0, step="x")
        mon.step(loss=1.0, step=torch.tensor(40))  # reading it would be a host sync
    mon.close()
    assert [r["step"] for r in mon.history] == [10, 11, 12, 20, 21, 22, 23]
    assert [r["loss"] for r in mon.history][:5] == [10.0, 5.0, 10.0, 20.0, 20.0]  # every row kept


def test_close_warns_and_keeps_the_history_when_the_folder_became_a_file(tmp_path):
    run = tmp_path / "run"
    mon = _monitor(log_dir=run)
    for s in range(4):
        mon.step(loss=float(s))  # the flush at step 3 writes the files
    assert len(read_jsonl(run / "history.jsonl")) == 3
    shutil.rmtree(run)
    run.write_text("not a folder any more")
    for s in range(4, 6):
        mon.step(loss=float(s))
    with pytest.warns(RuntimeWarning, match="failed"):
        mon.close()  # no NotADirectoryError
    assert [r["step"] for r in mon.history] == list(range(6))
    mon.close()  # twice is fine


def test_a_per_sample_loss_does_not_synchronise(monkeypatch):
    mon = _monitor()
    loss = torch.rand(64, requires_grad=True) * 1.0

    def forbidden(*a, **k):
        raise AssertionError("host sync inside RankMonitor.step()")

    with monkeypatch.context() as m:
        for name in ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__"):
            m.setattr(torch.Tensor, name, forbidden)
        mon.step(loss=loss)
        mon.step(loss=loss, step=1)
    mon.close()
    assert [r["loss"] for r in mon.history] == [pytest.approx(float(loss.detach().double().mean()))] * 2
