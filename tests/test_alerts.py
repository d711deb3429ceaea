"""Collapse alerts: rule semantics on rows, and on a real monitor whose layer collapses (float64 reference)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import effrank_fast as ef
from effrank_fast.monitor.alerts import Alerts, CollapseAlert


def _rows(values, metric="eps_rank@0.001", layer="h"):
    return [{"step": s, "layer": layer, metric: v} for s, v in enumerate(values)]


def test_fraction_of_running_max_fires_once_until_recovery():
    seen = []
    al = Alerts.of(CollapseAlert(metric="eps_rank@0.001", fraction_of_max=0.5, action=seen.append))
    al.check(_rows([4, 10, 6, 4, 3, 8, 2]))  # max 10: threshold 5 → fires at 3 (4), rearmed at 5 (8), fires at 6
    assert [(e.step, e.value, e.threshold) for e in seen] == [(3, 4.0, 5.0), (6, 2.0, 5.0)]
    assert not al.stop_requested


def test_absolute_threshold_patience_and_nan_rows():
    al = Alerts.of([CollapseAlert(metric="stable_rank", below=2.0, patience=2, action="stop")])
    with pytest.warns(RuntimeWarning, match="rank collapse: layer 'h' stable_rank = 1.5 at step 3"):
        al.check(_rows([3.0, 1.0, math.nan, 1.5], metric="stable_rank"))  # NaN neither fires nor resets
    assert al.stop_requested and [e.step for e in al.events] == [3]


def test_layers_filter_and_the_larger_threshold_wins():
    al = Alerts.of(CollapseAlert(metric="m", below=3, fraction_of_max=0.9, layers="a", action=lambda e: None))
    al.check(_rows([10, 8.5], metric="m", layer="b") + _rows([10, 8.5], metric="m", layer="a"))
    assert [(e.layer, e.threshold, e.reason) for e in al.events] == [("a", 9.0, "fraction_of_max=0.9")]


def test_a_failing_callback_is_a_warning():
    def boom(event):
        raise KeyError("x")

    al = Alerts.of(CollapseAlert(metric="m", below=1, action=boom))
    with pytest.warns(RuntimeWarning, match="raised KeyError"):
        al.check(_rows([0.5], metric="m"))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"metric": "m"}, "below= or fraction_of_max="),
        ({"metric": "m", "fraction_of_max": 1.5}, "fraction_of_max must be in"),
        ({"metric": "m", "below": 1, "action": "explode"}, "action must be"),
        ({"metric": "m", "below": 1, "patience": 0}, "patience must be"),
        ({"metric": "", "below": 1}, "metric must be"),
    ],
)
def test_bad_alerts_name_the_argument(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        CollapseAlert(**kwargs)
    with pytest.raises(TypeError, match="alerts must be"):
        Alerts.of(["eps_rank@0.001"])


def test_monitor_alert_stops_a_collapsing_layer_at_the_reference_step():
    """The hidden layer's ε-rank collapses when its weights are shrunk; the stop comes at the flush of that step."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 1))
    x = torch.randn(200, 3)
    scales = [1.0, 1.0, 0.5, 0.1, 0.01, 0.01]
    alert = CollapseAlert(metric="eps_rank@0.001", fraction_of_max=0.6, action="stop")
    ref = []
    mon = ef.RankMonitor(model, layers=["1"], eps=[1e-3], log=ef.monitor.RunLog(flush_every=1), alerts=alert)
    w0 = model[0].weight.detach().clone()
    stopped_at = None
    with pytest.warns(RuntimeWarning, match="rank collapse"):
        for s, c in enumerate(scales):
            with torch.no_grad():
                model[0].weight.copy_(w0 * c)
            h = model[1](model[0](x))
            model(x).sum().backward()
            phi = h.detach().double().numpy()
            ref.append(int((np.linalg.eigvalsh(phi.T @ phi / len(phi)) > 1e-3).sum()))
            mon.step(loss=0.0)
            if mon.alerts.stop_requested:
                stopped_at = s
                break
    mon.close()
    running = np.maximum.accumulate(ref)
    expected = next(s for s in range(1, len(ref)) if ref[s] < 0.6 * running[s - 1])
    assert stopped_at == expected and mon.alerts.events[0].value == ref[expected]
