"""RankMonitor's typed configuration: the same rows as the 0.1 keywords, which warn once and name their new place."""

from __future__ import annotations

import inspect
import warnings

import pytest
import torch
from torch import nn

from effrank_fast import RankMonitor
from effrank_fast.monitor import Accumulate, Engine, Features, Probe, RunLog, config
from effrank_fast.quadrature import trapezoid

EPS = [1e-2, 1e-4]


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(1, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 1))


def _rows(mon: RankMonitor) -> list[dict]:
    with mon:
        mon.step()
        mon.step()
    return [{k: v for k, v in r.items() if k != "wall_time"} for r in mon.history]


def test_at_most_twelve_top_level_parameters():
    params = [p for p in inspect.signature(RankMonitor).parameters.values() if p.kind != p.VAR_KEYWORD]
    assert len(params) <= 12  # the class signature has no self


def test_typed_options_give_the_rows_of_the_legacy_keywords(tmp_path):
    xq, wq = trapezoid(-1, 1, 64)
    new = RankMonitor(
        _mlp(),
        "all_hidden",
        EPS,
        probe=Probe(xq, wq),
        features=Features(center=True, acc_dtype=torch.float64),
        engine=Engine(topk=3, spectrum_every=1),
        log=RunLog(tmp_path / "new", flush_every=1, meta={"loss_name": "mse"}),
        accumulate=Accumulate("ema", ema_decay=0.5),
    )
    with pytest.warns(DeprecationWarning):
        old = RankMonitor(
            _mlp(),
            "all_hidden",
            EPS,
            probe=xq,
            weights=wq,
            center=True,
            acc_dtype=torch.float64,
            topk=3,
            spectrum_every=1,
            log_dir=tmp_path / "old",
            flush_every=1,
            meta={"loss_name": "mse"},
            accumulate="ema",
            ema_decay=0.5,
        )
    assert new.mode == old.mode == "integral"
    rows_new, rows_old = _rows(new), _rows(old)
    assert len(rows_new) == len(rows_old) == 4
    for a, b in zip(rows_new, rows_old, strict=True):
        assert a.keys() == b.keys()
        for k in a:
            assert a[k] == b[k] or (a[k] != a[k] and b[k] != b[k]), k  # NaN == NaN


def test_legacy_keyword_warns_once_naming_its_new_place():
    config._legacy_warned.discard("topk")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        RankMonitor(_mlp(), topk=2).close()
        RankMonitor(_mlp(), topk=2).close()
    msgs = [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)]
    assert msgs == ["RankMonitor(topk=...) is deprecated: use engine=Engine(topk=...)"]


def test_legacy_tracker_options_split_between_solver_and_warm_options():
    config._legacy_warned.difference_update({"tracker", "tracker_options"})  # warned once per process
    with pytest.warns(DeprecationWarning):
        exact = RankMonitor(_mlp(), tracker_options={"solver": "eigvalsh"})
        warm = RankMonitor(_mlp(), tracker="warm", tracker_options={"k": 4, "refresh_every": 7})
    assert exact.engine_config == Engine(solver="eigvalsh")
    assert warm.engine_config == Engine.warm(k=4, refresh_every=7)
    with pytest.raises(ValueError, match="apply to tracker='warm'"):  # warned once already
        RankMonitor(_mlp(), tracker_options={"k": 4})


@pytest.mark.parametrize(
    ("make", "exc", "match"),
    [
        (lambda: Probe([1, 2]), TypeError, "probe inputs"),
        (lambda: Probe(torch.ones(3), weights=[1, 2, 3]), TypeError, "probe weights"),
        (lambda: Features(mode="median"), ValueError, "mode"),
        (lambda: Features(fused=True, center=True), ValueError, "fused=True does not support center"),
        (lambda: Engine("fast"), ValueError, "engine kind"),
        (lambda: Engine(solver="qr"), ValueError, "solver"),
        (lambda: Engine(tracker_options={"k": 3}), ValueError, "kind='warm'"),
        (lambda: Engine(spectrum_every=-1), ValueError, "spectrum_every"),
        (lambda: RunLog(tensorboard="yes"), TypeError, "tensorboard"),
        (lambda: RunLog(meta=[1]), TypeError, "meta"),
        (lambda: RunLog(flush_every=0), ValueError, "flush_every"),
        (lambda: Accumulate("mean"), ValueError, "accumulate"),
    ],
)
def test_each_option_fails_at_construction_naming_its_field(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


def test_shorthands():
    xq = torch.randn(20, 1)
    mon = RankMonitor(_mlp(), probe=xq, engine="exact", log=None, accumulate="step")
    assert mon.probe is not None and mon.probe.n == 20
    assert mon.engine_config == Engine() and mon.log_config == RunLog() and mon.accumulation == Accumulate()
    mon.close()
