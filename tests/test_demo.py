"""The CLI: a shortened staircase demo (the staircase must show up in the run itself), report, info."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import scipy.stats

from effrank_fast import cli, staircase
from effrank_fast.monitor import read_csv, read_jsonl


def test_short_demo_shows_the_staircase(tmp_path, capsys):
    out = tmp_path / "demo"
    assert cli.main(["demo", "--steps", "1200", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "hidden3" in printed and "stairs" in printed
    rows = read_jsonl(out / "history.jsonl")
    assert len(rows) == 1200 * 3 and len(read_csv(out / "history.csv")) == len(rows)
    last = [r for r in rows if r["layer"] == "hidden3"]
    steps = np.array([r["step"] for r in last])
    rank = np.array([r["eps_rank@0.01"] for r in last], dtype=float)
    loss = np.array([r["loss"] for r in last])
    # Measured from this run: the last hidden layer's ε-rank climbs at least two stairs while the loss falls.
    assert staircase.detect(steps, rank, loss).stairs >= 2
    rho = scipy.stats.spearmanr(rank, loss).statistic  # independent of our own Spearman
    assert rho < -0.5
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] is True and summary["last_layer"] == "hidden3"
    assert summary["spearman"]["hidden3"]["0.01"] == pytest.approx(rho, abs=1e-9)
    assert summary["final_ranks"]["hidden3"]["0.01"] == int(rank[-1])
    assert summary["wall_time_s"] > 0 and math.isclose(summary["final_loss"], loss[-1])
    for name in ("staircase", "layers", "spectrum"):
        assert (out / f"{name}.png").stat().st_size > 20_000 and (out / f"{name}.svg").exists()
    meta = json.loads((out / "meta.json").read_text())
    assert meta["mode"] == "integral" and meta["probe_points"] == 2000 and meta["eps"] == [1e-2, 1e-3, 1e-4]


@pytest.mark.parametrize(
    "args",
    [
        ["--optimizer", "lbfgs", "--activation", "relu", "--depth", "2"],
        ["--optimizer", "sgd", "--activation", "sin", "--width", "20", "--eps", "1e-3"],
        ["--activation", "gelu", "--every", "2", "--spectrum-every", "4"],
    ],
)
def test_demo_options(tmp_path, args, capsys):
    out = tmp_path / "run"
    assert cli.main(["demo", "--steps", "12", "--out", str(out), "--no-progress", "--no-plots", *args]) == 0
    rows = read_jsonl(out / "history.jsonl")
    every = 2 if "--every" in args else 1
    depth = 2 if "--depth" in args else 3
    assert len(rows) == len(range(0, 12, every)) * depth
    assert all(math.isfinite(r["loss"]) and not r["error"] for r in rows)


def test_report_and_info_commands(tmp_path, capsys):
    assert cli.main(["report", str(tmp_path)]) == 2  # not a run folder: a clear message, no traceback
    assert "no history.jsonl" in capsys.readouterr().err
    out = tmp_path / "run"
    assert cli.main(["demo", "--steps", "40", "--out", str(out), "--no-progress", "--no-plots"]) == 0
    capsys.readouterr()
    assert cli.main(["report", str(out), "--json", "--no-plots"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["measured_steps"] == 40 and set(summary["final_ranks"]) == {"hidden1", "hidden2", "hidden3"}
    assert cli.main(["info"]) == 0
    assert "effrank_fast" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli.main(["demo", "--optimizer", "rmsprop"])
