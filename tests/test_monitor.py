"""RankMonitor: measures against the float64 oracle, sources (probe, micro-batches, EMA), training
untouched (bitwise), NaN/exception handling, no host sync in step(), activations released, engines."""

from __future__ import annotations

import copy
import gc
import math
import types
import warnings
import weakref

import pytest
import torch
from torch import nn

import effrank_fast as ef
from effrank_fast import RankMonitor
from effrank_fast.monitor import Accumulate, Engine, Features, Probe, RunLog, engines
from effrank_fast.quadrature import trapezoid

EPS = [1e-2, 1e-3, 1e-4]


def _mlp(width=16, act=nn.Tanh):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(1, width), act(), nn.Linear(width, width), act(), nn.Linear(width, 1))


def _data(n=200):
    x = torch.linspace(-1, 1, n).unsqueeze(1)
    return x, torch.sin(3 * math.pi * x)


def _train(model, steps, mon=None, lr=1e-2, micro=1):
    x, y = _data()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        for xb, yb in zip(x.chunk(micro), y.chunk(micro), strict=True):
            loss = ((model(xb) - yb) ** 2).mean() / micro
            loss.backward()
        opt.step()
        if mon is not None:
            mon.step(loss=loss)


def _ref_ok(row, phi, *, weights=None, mode="mean", center=False, relative=None, eps=EPS):
    ref = ef.reference.measures(
        phi.detach().double(), eps, weights=weights, mode=mode, center=center, relative=relative
    )
    assert [row[f"eps_rank@{e:g}"] for e in eps] == ref.eps_rank.tolist()
    tol = 1e-9 * float(ref.lambda_max)  # float64 Gram (or fp32 features) vs float64 SVD
    assert row["lambda_max"] == pytest.approx(float(ref.lambda_max), abs=tol)
    assert row["trace"] == pytest.approx(float(ref.trace), abs=tol)
    assert row["stable_rank"] == pytest.approx(float(ref.stable_rank), rel=1e-8)
    assert row["participation_ratio"] == pytest.approx(float(ref.participation_ratio), rel=1e-8)


def test_probe_integral_every_step_matches_reference():
    model = _mlp()
    xq, wq = trapezoid(-1, 1, 300)
    mon = RankMonitor(model, "all_hidden", EPS, probe=xq, weights=wq, acc_dtype=torch.float64, flush_every=4)
    x, y = _data()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    expected = []
    for _ in range(6):
        loss = ((model(x) - y) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        with torch.no_grad():  # θ_t, the parameters of this loss (row t must hold them)
            expected.append((float(loss), model[:2](xq), model[:4](xq), float(model[4].weight.double().norm())))
        opt.step()
        mon.step(loss=loss)
    mon.close()
    rows = mon.history
    assert [(r["step"], r["layer"]) for r in rows] == [(s, l) for s in range(6) for l in ("hidden1", "hidden2")]
    assert mon.mode == "integral"
    for s, (loss, h1, h2, readout) in enumerate(expected):
        r1, r2 = rows[2 * s], rows[2 * s + 1]
        assert r1["loss"] == r2["loss"] == loss
        _ref_ok(r1, h1, weights=wq, mode="integral")
        _ref_ok(r2, h2, weights=wq, mode="integral")
        assert r2["readout_norm"] == pytest.approx(readout, rel=1e-12)  # ‖c‖ of the Linear reading hidden2


@pytest.mark.parametrize("center", [False, True])
def test_micro_batches_add_up_to_the_full_batch(center):
    model = _mlp().double()
    mon = RankMonitor(model, "last_hidden", EPS, center=center)
    x = torch.randn(90, 1, dtype=torch.float64) + 3.0  # an offset mean makes centring matter
    for part in x.tensor_split(3):  # three micro-batches of one step
        model(part).sum().backward()
    with torch.no_grad():
        model(x)  # evaluation under no_grad is not a training forward: ignored
    mon.step()
    mon.close()
    _ref_ok(mon.history[0], model[:4](x), center=center)


@pytest.mark.parametrize("relative", ["max", "trace"])
def test_relative_thresholds(relative):
    model = _mlp().double()
    xq, wq = trapezoid(-1, 1, 200, dtype=torch.float64)
    with RankMonitor(model, eps=[1e-1, 1e-3], relative=relative, probe=xq, weights=wq) as mon:
        mon.step()
    _ref_ok(mon.history[0], model[:4](xq), weights=wq, mode="integral", relative=relative, eps=[1e-1, 1e-3])


def test_every_spectrum_every_and_flush_cadence(tmp_path):
    model = _mlp()
    xq, wq = trapezoid(-1, 1, 100)
    mon = RankMonitor(model, probe=xq, weights=wq, every=3, spectrum_every=6, flush_every=5, log_dir=tmp_path)
    for s in range(14):
        _train(model, 1)
        mon.step(loss=float(s))
        flushed = len(mon._history)
        assert flushed == len([t for t in range(((s + 1) // 5) * 5) if t % 3 == 0])  # only at flushes
    mon.close()
    assert [r["step"] for r in mon.history] == [0, 3, 6, 9, 12]
    assert [r["loss"] for r in mon.history] == [0.0, 3.0, 6.0, 9.0, 12.0]
    spec = ef.monitor.read_jsonl(tmp_path / "spectrum.jsonl")
    assert [r["step"] for r in spec] == [0, 6, 12] and len(spec[0]["eigenvalues"]) == 16


def test_ema_accumulation_follows_the_recurrence():
    model = _mlp()
    xq, wq = trapezoid(-1, 1, 100)
    mon = RankMonitor(model, probe=xq, weights=wq, accumulate="ema", ema_decay=0.8, acc_dtype=torch.float64)
    grams = []
    for _ in range(5):
        with torch.no_grad():  # θ_t: the probe runs just before the optimizer's update
            grams.append(ef.reference.gram(model[:4](xq), wq, mode="integral"))
        _train(model, 1)
        mon.step()
    mon.close()
    ema = grams[0]
    for g, row in zip(grams, mon.history, strict=True):
        ema = ema if g is grams[0] else 0.8 * ema + 0.2 * g
        lam = torch.linalg.eigvalsh(ema).flip(0)
        assert row["trace"] == pytest.approx(float(ema.trace()), rel=1e-9)
        assert row["lambda_1"] == pytest.approx(float(lam[0]), rel=1e-9)
        assert row["eps_rank@0.001"] == int((lam > 1e-3).sum())


class _Noisy(nn.Module):
    """Dropout and batch norm: the probe must neither draw random numbers nor update statistics."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(1, 16),
            nn.BatchNorm1d(16),
            nn.Tanh(),
            nn.Dropout(0.2),
            nn.Linear(16, 16),
            nn.Tanh(),
            nn.Linear(16, 1),
        )

    def forward(self, x):
        return self.net(x)


@pytest.mark.parametrize("source", ["probe", "batch"])
def test_training_is_bitwise_unchanged(source):
    torch.manual_seed(3)
    a = _Noisy()
    b = copy.deepcopy(a)
    torch.manual_seed(4)
    _train(a, 12, micro=2)
    torch.manual_seed(4)
    kw = {"probe": torch.linspace(-1, 1, 50).unsqueeze(1)} if source == "probe" else {}
    with RankMonitor(b, "all_hidden", EPS, flush_every=5, **kw) as mon:
        _train(b, 12, mon, micro=2)
    assert len(mon.history) == 12 * 2
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name  # parameters, running means/vars, num_batches_tracked


class _Flaky(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = _mlp()
        self.poison = False

    def forward(self, x):
        h = self.net[1](self.net[0](x))
        if self.poison:
            h = h.clone()
            h[0, 0] = float("nan")
            h[1, 1] = float("inf")
        return self.net[4](self.net[3](self.net[2](h)))


def test_nonfinite_activations_are_flagged_not_raised():
    model = _Flaky()
    xq, wq = trapezoid(-1, 1, 64)
    mon = RankMonitor(model, "all_hidden", EPS, probe=xq, weights=wq, flush_every=100)
    for s in range(5):
        model.poison = s == 2
        mon.step(loss=0.1)
    with pytest.warns(RuntimeWarning, match="non-finite activations"):
        mon.close()
    rows = mon.history
    bad = [r for r in rows if r["nonfinite"]]
    assert {(r["step"], r["layer"]) for r in bad} == {(2, "hidden1"), (2, "hidden2")}
    for r in bad:
        assert all(math.isnan(r[c]) for c in mon.engine.columns())
    good = [r for r in rows if not r["nonfinite"]]
    assert len(good) == 8 and all(isinstance(r["eps_rank@0.01"], int) for r in good)


def test_a_failing_measurement_is_recorded_and_training_goes_on(tmp_path):
    model = _mlp()
    mon = RankMonitor(model, "all_hidden", EPS, probe=torch.randn(30, 1), flush_every=2, log_dir=tmp_path)
    real, real_many = mon.engine.record, mon.engine.record_many

    def boom(layer, M, finite):
        if mon._step == 3:
            raise RuntimeError("solver exploded")
        return real(layer, M, finite)

    def boom_many(layers, inps, full):  # the small layers' batched path
        if mon._step == 3:
            raise RuntimeError("solver exploded")
        return real_many(layers, inps, full)

    mon.engine.record = boom
    mon.engine.record_many = boom_many
    with pytest.warns(RuntimeWarning, match="solver exploded"):
        for _ in range(6):
            _train(model, 1)
            mon.step()
    mon.close()
    rows = ef.monitor.read_jsonl(tmp_path / "history.jsonl")
    assert [r["step"] for r in rows] == [s for s in range(6) for _ in range(2)]
    failed = [r for r in rows if r["error"]]
    assert {r["step"] for r in failed} == {3} and "solver exploded" in failed[0]["error"]
    assert math.isnan(failed[0]["eps_rank@0.01"])


def test_step_does_not_synchronise(monkeypatch):
    """step() never reads tensor data back on the host (flushes excepted)."""
    model = _mlp()
    xq, wq = trapezoid(-1, 1, 64)
    mon = RankMonitor(model, "all_hidden", EPS, probe=xq, weights=wq, flush_every=1000, spectrum_every=2)
    x, y = _data()
    loss = ((model(x) - y) ** 2).mean()

    def forbidden(*a, **k):
        raise AssertionError("host sync inside RankMonitor.step()")

    with monkeypatch.context() as m:
        for name in ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__"):
            m.setattr(torch.Tensor, name, forbidden)
        for _ in range(4):
            mon.step(loss=loss)
    mon.close()
    assert len(mon.history) == 8 and not any(r["error"] for r in mon.history)


def test_activations_are_released_after_the_step():
    model = _mlp()
    refs = []
    model[3].register_forward_hook(lambda m, a, out: refs.append(weakref.ref(out)))
    with RankMonitor(model, "all_hidden", EPS, probe=torch.randn(40, 1)) as mon:
        mon.step()
        x, y = _data()
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        del loss
        mon.step()
        gc.collect()
        assert len(refs) >= 2 and all(r() is None for r in refs)


class _ExactTopK:
    """A stand-in tracker with the TrackResult fields (exact eigenvalues, k of them)."""

    def __init__(self, k, eps, relative, **_):
        self.k, self.eps, self.calls = k, torch.tensor(eps, dtype=torch.float64), 0

    def update(self, gram, gram_error=None, check=True):
        self.calls += 1
        lam = torch.linalg.eigvalsh(gram.double()).flip(0)
        count = (lam.unsqueeze(0) > self.eps.unsqueeze(1)).sum(1)
        return types.SimpleNamespace(
            eigenvalues=lam[: self.k],
            eps_rank=count,
            eps_rank_lower=count,
            eps_rank_upper=count,
            lambda_max=lam[0],
            trace=lam.sum(),
            stable_rank=lam.sum() / lam[0],
            participation_ratio=lam.sum() ** 2 / (lam**2).sum(),
            entropy_rank=lam.new_tensor(0.0),
            entropy_rank_err=lam.new_tensor(0.0),
        )

    def state_dict(self):
        return {"calls": self.calls}

    def load_state_dict(self, s):
        self.calls = s["calls"]


def test_warm_tracker_is_plugged_through_spectrum_tracker(monkeypatch):
    monkeypatch.setattr(engines, "SpectrumTracker", _ExactTopK)
    model = _mlp()
    xq, wq = trapezoid(-1, 1, 100)
    kw = {"probe": xq, "weights": wq, "acc_dtype": torch.float64}
    warm = RankMonitor(model, eps=EPS, tracker="warm", tracker_options={"k": 6}, **kw)
    with warm, RankMonitor(model, eps=EPS, **kw) as exact:
        warm.step()
        exact.step()
    w, e = warm.history[0], exact.history[0]
    for c in ["eps_rank@0.01", "eps_rank@0.001", "lambda_max", "trace", "lambda_1", "lambda_6"]:
        assert w[c] == pytest.approx(e[c], rel=1e-12)
    assert w["eps_rank_lower@0.01"] == w["eps_rank_upper@0.01"] == e["eps_rank@0.01"]
    assert math.isnan(w["lambda_7"])  # k = 6: the rest is unknown, not zero
    assert warm.state_dict()["engine"] == {"0": {"calls": 1}}


def test_tracker_errors_name_the_argument():
    with pytest.raises(ValueError, match="engine kind must be"):
        RankMonitor(_mlp(), engine="fast")


def test_fused_gram_matches_the_unfused_one():
    model = _mlp(width=12)
    xq, wq = trapezoid(-1, 1, 150)
    kw = {"layers": "all_hidden", "eps": EPS, "probe": xq, "weights": wq}
    with RankMonitor(model, fused=True, **kw) as fused, RankMonitor(model, **kw) as plain:
        fused.step()
        plain.step()
    assert fused.layer_info()["hidden2"]["fused_act"] == "tanh"
    for f, p in zip(fused.history, plain.history, strict=True):
        assert [f[f"eps_rank@{e:g}"] for e in EPS] == [p[f"eps_rank@{e:g}"] for e in EPS]
        assert f["trace"] == pytest.approx(p["trace"], rel=1e-5)  # both fp32 Grams, different order


def test_fused_refusals_name_the_argument():
    with pytest.raises(ValueError, match="fused=True does not support center"):
        RankMonitor(_mlp(), fused=True, center=True)
    with pytest.raises(ValueError, match="fused=True: layer"):
        RankMonitor(_mlp(act=nn.Softplus), fused=True, probe=torch.randn(8, 1))


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        (lambda: {"every": 0}, ValueError, "every"),
        (lambda: {"log": RunLog(flush_every=-1)}, ValueError, "flush_every"),
        (lambda: {"eps": [1e-3, -1.0]}, ValueError, "eps must be > 0"),
        (lambda: {"relative": "min"}, ValueError, "relative"),
        (lambda: {"features": Features(mode="integral")}, ValueError, "needs weights"),
        (lambda: {"probe": Probe(torch.randn(5, 1), torch.ones(4))}, ValueError, "weights must have shape"),
        (lambda: {"probe": Probe(torch.randn(5, 1), -torch.ones(5))}, ValueError, "non-negative"),
        (lambda: {"probe": [1, 2]}, TypeError, "probe"),
        (lambda: {"accumulate": "sum"}, ValueError, "accumulate"),
        (lambda: {"accumulate": Accumulate("ema", ema_decay=1.5)}, ValueError, "ema_decay"),
        (lambda: {"features": Features(backend="cublas")}, ValueError, "backend"),
        (lambda: {"features": Features(acc_dtype=torch.float16)}, TypeError, "acc_dtype"),
        (lambda: {"engine": Engine(topk=-1)}, ValueError, "topk"),
        (lambda: {"engine": Engine.warm(kk=3)}, TypeError, "kk"),
        (lambda: {"log": 3}, TypeError, "log"),
        (lambda: {"wieghts": torch.ones(3)}, TypeError, "wieghts"),
        (lambda: {"distributed": True}, ValueError, "init_process_group"),
        (
            lambda: {"probe": torch.randn(8, 3)},
            ValueError,
            r"probe= of shape \[8, 3\] does not fit the model: layer '0' \(Linear",
        ),
        (
            lambda: {"layers": ["3"], "probe": torch.randn(8, 2)},
            ValueError,
            r"\[8, 2\] does not fit the model: layer '0'",
        ),
    ],
)
def test_bad_arguments_raise_naming_them(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        RankMonitor(_mlp(), **kwargs())


def test_state_dict_without_files_carries_history():
    model = _mlp()
    mon = RankMonitor(model, probe=torch.randn(20, 1), flush_every=100)
    for _ in range(3):
        mon.step(loss=1.0)
    state = mon.state_dict()
    mon.close()
    again = RankMonitor(model, probe=torch.randn(20, 1))
    again.load_state_dict(state)
    again.step(loss=2.0)
    assert [r["step"] for r in again.history] == [0, 1, 2, 3]
    again.close()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again.close()  # no double flush, no warning


def test_report_counts_and_shows_uncertified_counts(tmp_path):
    """A float32 Gram at ε = 1e-9 cannot prove its counts: the summary says how many rows × ε were
    not certified (those the rows flag), the table names them, and the staircase plot draws them."""
    from effrank_fast.report import format_table, report

    model = _mlp()
    xq, wq = trapezoid(-1, 1, 500)
    eps = [1e-2, 1e-9]
    mon = RankMonitor(model, "all_hidden", eps, probe=xq, weights=wq, acc_dtype=torch.float32, log_dir=tmp_path)
    for _ in range(3):
        mon.step(loss=1.0)
    mon.close()
    rows = mon.history
    flagged = sum(1 for r in rows for e in eps if not r[f"eps_rank_certified@{e:g}"])
    assert flagged > 0 and all(r["eps_rank_certified@0.01"] == 1 for r in rows)
    summary = report(tmp_path, plots=True)
    assert summary["uncertified_counts"] == flagged
    assert "uncertified ε-counts" in format_table(summary) and "staircase.png" in summary["figures"]


def test_bench_monitor_smoke_checks_counts_against_the_float64_reference(tmp_path):
    """benchmarks/bench_monitor.py --smoke: every variant timed in every scenario, and every monitor
    variant's certified counts equal the float64 reference of the same step's features."""
    import json
    import os
    import pathlib
    import subprocess
    import sys

    root = pathlib.Path(__file__).resolve().parents[1]
    out = tmp_path / "bench.json"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-W", "ignore", str(root / "benchmarks" / "bench_monitor.py"), "--smoke", "--json", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert set(doc["results"]) == {"gpt2", "mlp-48x16", "demo"}
    for name, r in doc["results"].items():
        assert all(math.isfinite(v) and v > 0 for v in r["median_ms"].values()), name
        assert set(r["checks"]) == {"monitor", "monitor default", "monitor all hidden"}
        for variant, c in r["checks"].items():
            assert c["checked"] > 0 and c["certified_mismatch"] == 0 and c["outside_bounds"] == 0, (name, variant)
