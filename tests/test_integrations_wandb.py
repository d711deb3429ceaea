"""WandbSink: the monitor's rows reach a real (offline) W&B run, read back from its run file."""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import effrank_fast as ef

wandb = pytest.importorskip("wandb")
from effrank_fast.integrations.wandb import WandbSink  # noqa: E402


def read_offline_history(run_dir: Path) -> list[dict]:
    """The history records of an offline run's ``run-*.wandb`` file (LevelDB-style log of protobuf Records)."""
    from wandb.proto import wandb_internal_pb2 as pb

    (path,) = run_dir.glob("run-*.wandb")
    data, block, pos, buf, out = path.read_bytes(), 32768, 7, b"", []  # 7: the ':W&B' file header
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block trailer too short for a record header
            pos += block - pos % block
            continue
        _crc, n, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0 and n == 0:
            break
        buf += data[pos + 7 : pos + 7 + n]
        pos += 7 + n
        if kind in (1, 4):  # FULL or LAST fragment: one record complete
            rec = pb.Record()
            rec.ParseFromString(buf)
            buf = b""
            if rec.WhichOneof("record_type") == "history":
                out.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in rec.history.item})
    return out


def test_rows_reach_an_offline_run_at_each_measured_step(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 10), nn.Tanh(), nn.Linear(10, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    x = torch.randn(64, 3)
    run = wandb.init(project="effrank-test", dir=str(tmp_path), mode="offline")
    try:
        mon = ef.RankMonitor(model, layers={"h": "1"}, eps=[1e-3], every=2, log=ef.monitor.RunLog(flush_every=2))
        WandbSink(run, log_loss=True).attach(mon)
        ref = {}
        for step in range(6):
            h = model[1](model[0](x))
            loss = model[2](h).square().mean()
            phi = h.detach().double().numpy()
            ref[step] = (int((np.linalg.eigvalsh(phi.T @ phi / len(phi)) > 1e-3).sum()), float(loss.detach()))
            opt.zero_grad()
            loss.backward()
            opt.step()
            mon.step(loss=loss)
        mon.close()
        run_dir = Path(run.dir).parent
    finally:
        run.finish()
    deadline = time.monotonic() + 120  # wandb's service may still be writing the file after finish()
    while True:
        rows = [r for r in read_offline_history(run_dir) if "rank/step" in r]
        if len(rows) >= 3 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert [r["rank/step"] for r in rows] == [0, 2, 4]  # every=2: the measured steps, in order
    for r in rows:
        assert r["rank/h/eps_rank@0.001"] == ref[r["rank/step"]][0]
        assert r["rank/loss"] == pytest.approx(ref[r["rank/step"]][1], rel=1e-6)
        assert {"rank/h/entropy_rank", "rank/h/stable_rank", "rank/h/participation_ratio"} <= set(r)


def test_sink_needs_a_monitor_and_a_run(monkeypatch):
    monkeypatch.setattr(wandb, "run", None)
    with pytest.raises(TypeError, match="monitor must be a RankMonitor"):
        WandbSink().attach(object())  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="no active W&B run"):
        WandbSink()([{"step": 0, "layer": "h", "x": 1.0}])
    with pytest.raises(ValueError, match="prefix must be"):
        WandbSink(prefix="")
