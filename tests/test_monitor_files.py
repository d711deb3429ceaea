"""Run files: every row once, CSV = JSONL = history, resume without duplicates, TensorBoard keys,
and a real SIGKILL of a running demo leaving readable files that ``report`` can summarise."""

from __future__ import annotations

import copy
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from effrank_fast import RankMonitor, cli
from effrank_fast.monitor import Engine, Probe, RunLog, read_csv, read_jsonl
from effrank_fast.quadrature import trapezoid

EPS = [1e-2, 1e-4]
ROOT = Path(__file__).resolve().parents[1]


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(1, 12), nn.Tanh(), nn.Linear(12, 12), nn.Tanh(), nn.Linear(12, 1))


def _monitor(model, log_dir, tensorboard=False):
    xq, wq = trapezoid(-1, 1, 80)
    log = RunLog(dir=log_dir, tensorboard=tensorboard, flush_every=7)
    return RankMonitor(model, "all_hidden", EPS, probe=Probe(xq, wq), engine=Engine(spectrum_every=3), log=log)


def _steps(model, opt, mon, start, stop):
    x = torch.linspace(-1, 1, 64).unsqueeze(1)
    for _ in range(start, stop):
        loss = ((model(x) - torch.sin(4 * x)) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        mon.step(loss=loss)


def _same(a, b, skip=("wall_time",)):
    assert a.keys() == b.keys()
    for k in a:
        if k in skip:
            continue
        va, vb = a[k], b[k]
        assert va == vb or (isinstance(va, float) and math.isnan(va) and math.isnan(vb)), (k, va, vb)


def test_jsonl_csv_and_history_agree_row_for_row(tmp_path):
    model = _model()
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    with _monitor(model, tmp_path) as mon:
        _steps(model, opt, mon, 0, 30)
    jsonl, csv_rows = read_jsonl(tmp_path / "history.jsonl"), read_csv(tmp_path / "history.csv")
    assert [(r["step"], r["layer"]) for r in jsonl] == [(s, l) for s in range(30) for l in ("hidden1", "hidden2")]
    assert len(jsonl) == len(csv_rows) == len(mon.history) == 60
    for j, c, h in zip(jsonl, csv_rows, mon.history, strict=True):
        _same(j, c, skip=())  # floats round-trip exactly (repr) through both formats
        _same(j, h, skip=())
    for line in (tmp_path / "history.jsonl").read_text().splitlines():
        json.loads(line, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["closed"] and meta["mode"] == "integral" and meta["probe_weight_sum"] == pytest.approx(2.0)
    assert list(meta["layers"]) == ["hidden1", "hidden2"]
    spec = read_jsonl(tmp_path / "spectrum.jsonl")
    assert [r["step"] for r in spec] == [s for s in range(0, 30, 3) for _ in range(2)]


def test_resume_continues_the_same_files_without_duplicates(tmp_path):
    # Reference: one uninterrupted run of 30 steps.
    ref_model = _model()
    ref_opt = torch.optim.Adam(ref_model.parameters(), 1e-2)
    with _monitor(ref_model, tmp_path / "ref") as ref:
        _steps(ref_model, ref_opt, ref, 0, 30)

    # Interrupted: checkpoint at step 20, run on to 26 (flushed), "crash", resume from the checkpoint.
    model = _model()
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    run = tmp_path / "run"
    mon = _monitor(model, run)
    _steps(model, opt, mon, 0, 20)
    ckpt = copy.deepcopy({"model": model.state_dict(), "opt": opt.state_dict(), "mon": mon.state_dict()})
    _steps(model, opt, mon, 20, 26)
    mon.flush()
    del mon  # crashed: never closed
    assert max(r["step"] for r in read_jsonl(run / "history.jsonl")) == 25

    model2 = _model()
    model2.load_state_dict(ckpt["model"])
    opt2 = torch.optim.Adam(model2.parameters(), 1e-2)
    opt2.load_state_dict(ckpt["opt"])
    mon2 = _monitor(model2, run)
    mon2.load_state_dict(ckpt["mon"])
    assert [r["step"] for r in mon2.history][-1] == 19
    _steps(model2, opt2, mon2, 20, 30)
    mon2.close()

    for name, reader in [("history.jsonl", read_jsonl), ("history.csv", read_csv)]:
        got, want = reader(run / name), reader(tmp_path / "ref" / name)
        assert [(r["step"], r["layer"]) for r in got] == [(r["step"], r["layer"]) for r in want]
        for g, w in zip(got, want, strict=True):
            _same(g, w)
    spec = read_jsonl(run / "spectrum.jsonl")
    assert [r["step"] for r in spec] == [s for s in range(0, 30, 3) for _ in range(2)]
    assert len(mon2.history) == 60 and [r["step"] for r in mon2.history] == [s for s in range(30) for _ in range(2)]


def test_reusing_a_folder_without_resume_replaces_the_old_rows(tmp_path):
    model = _model()
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    with _monitor(model, tmp_path) as mon:
        _steps(model, opt, mon, 0, 10)
    with pytest.warns(RuntimeWarning, match="were replaced"), _monitor(model, tmp_path) as again:
        _steps(model, opt, again, 0, 4)
    assert [r["step"] for r in read_jsonl(tmp_path / "history.jsonl")] == [s for s in range(4) for _ in range(2)]
    assert len(read_csv(tmp_path / "history.csv")) == 8


def test_tensorboard_scalars_use_rank_layer_metric_keys(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    model = _model()
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    with _monitor(model, tmp_path, tensorboard=True) as mon:
        _steps(model, opt, mon, 0, 9)
    acc = EventAccumulator(str(tmp_path))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"rank/loss", "rank/hidden2/eps_rank@0.01", "rank/hidden1/entropy_rank", "rank/hidden2/lambda_1"} <= tags
    ev = acc.Scalars("rank/hidden2/eps_rank@0.01")
    assert [e.step for e in ev] == list(range(9))
    assert [e.value for e in ev] == [r["eps_rank@0.01"] for r in mon.history if r["layer"] == "hidden2"]


def test_sigkill_mid_run_leaves_valid_files_and_report_works(tmp_path):
    run = tmp_path / "killed"
    cmd = [sys.executable, "-m", "effrank_fast.cli", "demo", "--steps", "100000", "--flush-every", "25",
           "--out", str(run), "--no-progress", "--no-plots", "--width", "16"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    hist = run / "history.jsonl"
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if hist.exists() and hist.stat().st_size and hist.read_bytes().count(b"\n") >= 4 * 25 * 3:
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    lines = hist.read_bytes().split(b"\n")
    complete = lines[:-1]  # everything up to the last newline; the tail after it may be partial
    rows = [json.loads(line) for line in complete]  # strict JSON: raises on any damaged line
    steps = sorted({r["step"] for r in rows})
    assert steps == list(range(len(steps))) and len(steps) % 25 == 0  # whole flushes only
    assert len(rows) == 3 * len(steps)
    assert len(read_csv(run / "history.csv")) >= len(rows) - 3 * 25  # CSV written right after JSONL

    assert cli.main(["report", str(run)]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["complete"] is False and summary["measured_steps"] >= len(steps)
    assert (run / "staircase.png").stat().st_size > 10_000 and (run / "spectrum.svg").exists()


@pytest.mark.parametrize(
    "row",
    [
        {"step": 1, "layer": "h", "a": math.nan, "b": math.inf, "c": -math.inf, "d": 0.1, "e": 3, "f": True},
        {"step": 2, "layer": "NaN", "a": math.nan, "error": "Infinity happened", "l": [1.5, math.nan, -math.inf]},
        {"step": 3, "layer": "x", "l": ["NaN", math.nan], "nested": {"Infinity": math.inf}},
    ],
)
def test_a_jsonl_line_is_strict_json_with_null_for_non_finite_values(row):
    """The flush's fast JSON path (tokens replaced on the encoded text) gives what the value-by-value
    conversion gives, also where a string holds the words NaN or Infinity."""
    from effrank_fast.monitor import sinks
    from effrank_fast.monitor.history import to_jsonable

    line = sinks._json_line(row)
    assert line == json.dumps(to_jsonable(row), allow_nan=False)
    back = json.loads(line, parse_constant=lambda c: pytest.fail(f"non-strict constant {c}"))
    assert back["layer"] == row["layer"] and back["step"] == row["step"]


def test_csv_rows_with_other_keys_than_the_header_keep_their_columns(tmp_path):
    """A row with as many keys as the header but not the same ones (the fast path picks columns by
    name and must fall back), a row missing a column, and a full row: each value lands under its own
    header, the missing ones empty; read back with the csv module, not our reader."""
    import csv

    from effrank_fast.monitor.sinks import CsvSink

    path = tmp_path / "h.csv"
    sink = CsvSink(path)
    sink.write([{"step": 0, "a": 1.5, "b": 10}])
    sink.write([{"step": 1, "a": 2.5, "c": 7}, {"step": 2, "b": 20}, {"step": 3, "a": 3.5, "b": 30}])
    with path.open(newline="") as f:
        got = list(csv.DictReader(f))
    assert [r["step"] for r in got] == ["0", "1", "2", "3"]
    assert got[1]["a"] == "2.5" and got[1]["b"] == "" and got[1]["c"] == "7"
    assert got[2]["a"] == "" and got[2]["b"] == "20" and got[2]["c"] == ""
    assert got[3]["a"] == "3.5" and got[3]["b"] == "30" and float(got[0]["b"]) == 10  # rewritten: 10.0
