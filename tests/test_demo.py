"""The CLI: a shortened staircase demo (the staircase must show up in the run itself), L-BFGS that
trains, argument errors, a diverged run reported honestly, report and info."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
import torch

from effrank_fast import cli, plotting
from effrank_fast.monitor import read_csv, read_jsonl
from effrank_fast.paper import staircase
from effrank_fast.paper.demo import DemoConfig

LAYERS = ("hidden1", "hidden2", "hidden3")


def _by_layer(rows, layer):
    return [r for r in rows if r["layer"] == layer]


def test_short_demo_shows_the_staircase(tmp_path, capsys):
    out = tmp_path / "demo"
    assert cli.main(["demo", "--steps", "1200", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "hidden3" in printed and "stairs" in printed and "steps        1200 " in printed
    files = next(line for line in printed.splitlines() if line.startswith("files: "))
    for name in ("history.jsonl", "history.csv", "spectrum.jsonl", "meta.json", "staircase.png", "summary.json"):
        assert str(out / name) in files
    rows = read_jsonl(out / "history.jsonl")
    assert len(rows) == 1200 * 3 and len(read_csv(out / "history.csv")) == len(rows)
    last = _by_layer(rows, "hidden3")
    steps = np.array([r["step"] for r in last])
    rank = np.array([r["eps_rank@0.01"] for r in last], dtype=float)
    loss = np.array([r["loss"] for r in last])
    # Measured from this run: the last hidden layer's ε-rank climbs at least two stairs while the loss falls.
    assert staircase.detect(steps, rank, loss).stairs >= 2
    rho = scipy.stats.spearmanr(rank, loss).statistic  # independent of our own Spearman
    assert rho < -0.5
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] is True and summary["last_layer"] == "hidden3" and summary["steps"] == 1200
    assert summary["spearman"]["hidden3"]["0.01"] == pytest.approx(rho, abs=1e-9)
    assert summary["diverged_at"] is None and summary["nonfinite_rows"] == 0
    assert summary["final_loss"] == loss[-1] and summary["loss_name"] == "MSE"
    assert summary["wall_time_s"] > 0
    for layer in LAYERS:
        mine = _by_layer(rows, layer)
        for e in ("0.01", "0.001", "0.0001"):
            assert summary["initial_ranks"][layer][e] == mine[0][f"eps_rank@{e}"]
            assert summary["final_ranks"][layer][e] == mine[-1][f"eps_rank@{e}"]
            jumps = summary["staircase"][layer][e]["jumps"]
            assert summary["jumps"][layer][e] == len(jumps) >= summary["stairs"][layer][e]
    for e in ("0.01", "0.0001"):  # layer ordering, recounted from the rows
        r = np.array([[row[f"eps_rank@{e}"] for row in _by_layer(rows, layer)] for layer in LAYERS])
        order = summary["layer_ordering"][e]
        assert order["hidden2>hidden1"] == pytest.approx(np.mean(r[1] > r[0]), abs=1e-12)
        assert order["hidden3>hidden2"] == pytest.approx(np.mean(r[2] > r[1]), abs=1e-12)
        assert order["all"] == pytest.approx(np.mean((r[1] > r[0]) & (r[2] > r[1])), abs=1e-12)
    for name in ("staircase", "layers", "spectrum"):
        assert (out / f"{name}.png").stat().st_size > 20_000 and (out / f"{name}.svg").exists()
    meta = json.loads((out / "meta.json").read_text())
    assert meta["mode"] == "integral" and meta["probe_points"] == 2000 and meta["eps"] == [1e-2, 1e-3, 1e-4]


def test_lbfgs_demo_trains(tmp_path, capsys):
    assert DemoConfig(optimizer="lbfgs").n_steps >= 10  # so 10 steps lie within its default run
    out = tmp_path / "lbfgs"
    assert cli.main(["demo", "--optimizer", "lbfgs", "--steps", "10", "--out", str(out), "--no-progress"]) == 0
    loss = [r["loss"] for r in _by_layer(read_jsonl(out / "history.jsonl"), "hidden3")]
    assert len(loss) == 10 and all(math.isfinite(v) for v in loss)
    assert loss[-1] < loss[0] / 10  # measured: ≈ 3.99 → ≈ 0.1 in 10 steps of up to 20 iterations


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


def test_every_5_reports_the_true_number_of_steps(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["demo", "--steps", "12", "--every", "5", "--out", str(out), "--no-progress", "--no-plots"]) == 0
    printed = capsys.readouterr().out
    assert "steps        12 (3 measured, every 5)" in printed  # not "steps 11"
    assert [r["step"] for r in _by_layer(read_jsonl(out / "history.jsonl"), "hidden3")] == [0, 5, 10]


def _bad_arguments(tmp_path: Path) -> list[tuple[list[str], str]]:
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    cases = [
        (["--eps", "-1"], "--eps"),
        (["--lr", "nan"], "--lr"),
        (["--threads", "-1"], "--threads"),
        (["--out", str(a_file)], "--out"),
        (["--out", str(a_file / "below")], "--out"),
        (["--steps", "0"], "--steps"),
        (["--device", "nonsense"], "--device"),
    ]
    if not torch.cuda.is_available():
        cases.append((["--device", "cuda"], "--device"))
    return cases


def test_bad_demo_arguments_give_one_line_and_exit_code_2(tmp_path, capsys):
    for args, flag in _bad_arguments(tmp_path):
        assert cli.main(["demo", "--no-progress", *args]) == 2, args
        err = capsys.readouterr().err
        assert err.startswith(f"effrank-fast demo: {flag}: ") and err.count("\n") == 1 and "Traceback" not in err
    with pytest.raises(SystemExit) as exc:  # argparse's own checks: also exit code 2
        cli.main(["demo", "--width", "x"])
    assert exc.value.code == 2


def test_a_diverged_run_is_reported_as_diverged(tmp_path, capsys):
    out = tmp_path / "diverged"
    with pytest.warns(RuntimeWarning, match="non-finite"):
        assert cli.main(["demo", "--optimizer", "sgd", "--lr", "3", "--steps", "30", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    rows = read_jsonl(out / "history.jsonl")
    bad = sorted({r["step"] for r in rows if r["nonfinite"] or not math.isfinite(r["loss"])})
    assert bad, "this setting diverges"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["diverged_at"] == bad[0] and summary["nonfinite_steps"] == len(bad)
    assert summary["nonfinite_rows"] == sum(1 for r in rows if r["nonfinite"] or not math.isfinite(r["loss"]))
    assert summary["final_loss"] is None  # no finite "final loss" for a diverged run
    assert f"diverged at step {bad[0]} ({len(bad)} of 30 measured steps non-finite)" in printed
    assert "final MSE" not in printed
    assert (out / "staircase.png").stat().st_size > 20_000


def test_staircase_plot_labels_the_loss_and_keeps_jump_labels_off_the_curves():
    steps = np.arange(400)
    rank = np.repeat([2, 3, 4, 5, 6, 7, 8, 9], 50).astype(float)
    loss = np.exp(-steps / 80.0)
    sc = staircase.detect(steps, rank, loss)
    assert len(sc.jumps) == 7
    fig = plotting.staircase_plot(
        steps,
        loss,
        {1e-2: rank},
        jumps=sc.jumps,
        jump_eps=1e-2,
        subtitle="x",
        loss_label="PDE residual",
        diverged_at=300,
    )
    ax = fig.axes[0]
    assert ax.get_ylabel() == "training PDE residual (log scale)"
    fig.canvas.draw()
    top = ax.get_window_extent().y1
    labels = [t for t in fig.axes[1].texts if "→" in t.get_text()]
    boxes = [t.get_window_extent() for t in labels]
    assert len(labels) >= 4 and all(b.y0 >= top - 0.5 for b in boxes)  # above the axes: off every curve
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])
    assert fig.axes[0].get_title() == "x" and fig.axes[0].title.get_window_extent().y0 >= max(b.y1 for b in boxes)
    assert any(line.get_label() == "diverged at step 300" for line in ax.get_lines())


def test_report_and_info_commands(tmp_path, capsys):
    assert cli.main(["report", str(tmp_path)]) == 2  # not a run folder: a clear message, no traceback
    assert "no history.jsonl" in capsys.readouterr().err
    out = tmp_path / "run"
    assert cli.main(["demo", "--steps", "40", "--out", str(out), "--no-progress", "--no-plots"]) == 0
    capsys.readouterr()
    assert cli.main(["report", str(out), "--json", "--no-plots"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["measured_steps"] == 40 and set(summary["final_ranks"]) == set(LAYERS)
    assert cli.main(["info"]) == 0
    assert "effrank_fast" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli.main(["demo", "--optimizer", "rmsprop"])
