"""Data-parallel monitoring for real: two CPU processes on the gloo backend.

Each rank sees only its own rows; after the all-reduce of (Σwφφᵀ, Σwφ, Σw) both ranks must report
the measures of the whole (concatenated) batch and the mean of the two ranks' losses, and only
rank 0 writes files.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import effrank_fast as ef
from effrank_fast.monitor import read_jsonl

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).with_name("_dist_worker.py")


def _run(tmp_path: Path, source: str) -> list[list[dict]]:
    store = tmp_path / "store"
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), str(r), "2", str(store), str(tmp_path), source],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for r in range(2)
    ]
    for p in procs:
        out, _ = p.communicate(timeout=180)
        assert p.returncode == 0, out.decode()
    return [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]


def _reference_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 10), nn.Tanh(), nn.Linear(10, 10), nn.Tanh(), nn.Linear(10, 2)).double()
    x = torch.randn(3, 97, 3, dtype=torch.float64) + 0.5
    return model, x


def _check(row, phi, **kw):
    ref = ef.reference.measures(phi, [1e-1, 1e-3], **kw)
    assert [row["eps_rank@0.1"], row["eps_rank@0.001"]] == ref.eps_rank.tolist()
    tol = 1e-10 * float(ref.lambda_max)  # float64 sums over two ranks vs one SVD
    assert row["trace"] == pytest.approx(float(ref.trace), abs=tol)
    for i in range(4):
        assert row[f"lambda_{i + 1}"] == pytest.approx(float(ref.eigenvalues[i]), abs=tol)


def test_batch_gram_is_all_reduced_across_two_ranks(tmp_path):
    histories = _run(tmp_path, "batch")
    model, x = _reference_model()
    with torch.no_grad():
        for hist in histories:  # both ranks see the global-batch spectrum
            assert [(r["step"], r["layer"]) for r in hist] == [(s, l) for s in range(3) for l in ("hidden1", "hidden2")]
            for s in range(3):
                _check(hist[2 * s], model[:2](x[s]), center=True)
                _check(hist[2 * s + 1], model[:4](x[s]), center=True)
                local = [float(model(part).square().mean()) for part in torch.tensor_split(x[s], 2)]
                assert local[0] != pytest.approx(local[1], rel=1e-3)  # the ranks' losses differ
                assert hist[2 * s]["loss"] == hist[2 * s + 1]["loss"] == pytest.approx(sum(local) / 2, rel=1e-12)
    rows = read_jsonl(tmp_path / "run" / "history.jsonl")
    assert len(rows) == 6  # written once, by rank 0
    assert [r["loss"] for r in rows] == [r["loss"] for r in histories[0]]
    for r in range(2):
        # the layer shapes are agreed once ([L], then [L, 3]); then one all-reduce per measured step
        # carries both layers' (G, s, m), a failure flag per layer and the loss
        d, n_layers = 10, 2
        sizes = json.loads((tmp_path / f"rank{r}.collectives.json").read_text())
        assert sizes == [1, 3 * n_layers] + [2 * (d * d + d + 1) + n_layers + 1] * 3


def test_probe_rows_are_split_across_ranks(tmp_path):
    histories = _run(tmp_path, "probe")
    model, x = _reference_model()
    probe = x.reshape(-1, 3)
    w = torch.linspace(0.5, 1.5, probe.shape[0], dtype=torch.float64)
    with torch.no_grad():
        for hist in histories:
            _check(hist[0], model[:2](probe), weights=w, mode="integral")
            _check(hist[1], model[:4](probe), weights=w, mode="integral")
            assert hist[0]["loss"] == hist[1]["loss"] == 15.0  # mean of 10 (rank 0) and 20 (rank 1)


# ---------------------------------------------------------------------------------------------
# DDP and FSDP2 (fully_shard), with and without a probe, and a rank without activations.
STACK_WORKER = Path(__file__).with_name("_stack_dist_worker.py")


def _run_stack(tmp_path: Path, scenario: str, probe: bool) -> list[dict]:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    args = [str(tmp_path / "store"), str(tmp_path), scenario, "1" if probe else "0"]
    procs = [
        subprocess.Popen(
            [sys.executable, str(STACK_WORKER), str(r), "2", *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for r in range(2)
    ]
    try:
        outs = [p.communicate(timeout=240)[0] for p in procs]  # a hang fails here, not forever
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, out in zip(procs, outs, strict=True):
        assert p.returncode == 0, out.decode()
    return [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]


def _stack_reference(scenario: str, probe: bool):
    """Single-process replica on the concatenated batch: [(h1, h2) per step] in float64."""
    sys.path.insert(0, str(WORKER.parent))
    try:
        import _stack_dist_worker as w
    finally:
        sys.path.pop(0)
    model = w.make_model()
    x, p = w.data()
    opt = torch.optim.SGD(model.parameters(), lr=w.LR)
    feats = []
    for s in range(w.STEPS):
        inputs = p if probe else x[s]
        with torch.no_grad():
            feats.append((model[:2](inputs), model[:4](inputs)))
        loss = model(x[s]).square().mean()  # equal shards: the mean of the ranks' mean losses
        opt.zero_grad()
        loss.backward()
        opt.step()
    return feats, x


def _eig_check(row, phi):
    lam = torch.linalg.eigvalsh(phi.T @ phi / phi.shape[0])
    assert [row["eps_rank@0.1"], row["eps_rank@0.001"]] == [int((lam > e).sum()) for e in (1e-1, 1e-3)]
    assert row["lambda_max"] == pytest.approx(float(lam[-1]), rel=1e-9)


@pytest.mark.parametrize("scenario", ["ddp", "fsdp"])
@pytest.mark.parametrize("probe", [False, True])
def test_ddp_and_fsdp2_training_unchanged_and_ranks_global(tmp_path, scenario, probe):
    results = _run_stack(tmp_path, scenario, probe)
    feats, _ = _stack_reference(scenario, probe)
    for res in results:
        assert res["bitwise"]  # losses and parameters identical to the run without a monitor
        hist = res["history"]
        assert [(r["step"], r["layer"]) for r in hist] == [(s, l) for s in range(3) for l in ("hidden1", "hidden2")]
        for s, (h1, h2) in enumerate(feats):
            _eig_check(hist[2 * s], h1)
            _eig_check(hist[2 * s + 1], h2)


def test_a_rank_without_activations_neither_crashes_nor_hangs(tmp_path):
    r0, r1 = (r["history"] for r in _run_stack(tmp_path, "empty", False))
    sys.path.insert(0, str(WORKER.parent))
    try:
        import _stack_dist_worker as w
    finally:
        sys.path.pop(0)
    model = w.make_model()
    x, _ = w.data()
    with torch.no_grad():
        for s in range(3):
            rows = x[s] if s == 1 else torch.tensor_split(x[s], 2)[0]  # rank 1 joined step 1 only
            got = [r for r in r0 if r["step"] == s]
            _eig_check(got[0], model[:2](rows))
            _eig_check(got[1], model[:4](rows))
    # rank 1 resolved its layers at step 1 (no forward before): it logs steps 1 and 2, like rank 0
    assert [(r["step"], r["eps_rank@0.001"]) for r in r1] == [(r["step"], r["eps_rank@0.001"]) for r in r0[2:]]
