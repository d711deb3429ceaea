"""staircase.detect on synthetic series with known jumps, on pure flicker noise, and Spearman vs scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats

from effrank_fast.paper import staircase


def _staircase(levels, lengths, *, flicker=0.15, ramp=0, seed=0):
    """Integer levels held for ``lengths`` steps, optional linear ramps, ±1 flicker with prob ``flicker``."""
    rng = np.random.default_rng(seed)
    parts, bounds, pos = [], [], 0
    for i, (lev, n) in enumerate(zip(levels, lengths, strict=True)):
        if i > 0 and ramp:
            parts.append(np.round(np.linspace(levels[i - 1], lev, ramp + 2)[1:-1]))
            pos += ramp
        bounds.append(pos)
        parts.append(np.full(n, lev, dtype=float))
        pos += n
    r = np.concatenate(parts)
    flick = rng.random(len(r)) < flicker
    r = r + flick * rng.choice([-1.0, 1.0], len(r))
    # Loss: a plateau per level that drops by 10× when the rank rises.
    lev_per_step = np.concatenate(
        [np.full(len(p), lev) for p, lev in zip(parts, _levels_for(parts, levels), strict=True)]
    )
    loss = 10.0 ** (-(lev_per_step - levels[0]) / 3.0) * (1 + 0.01 * rng.standard_normal(len(r)))
    return np.arange(len(r)), r, loss, bounds


def _levels_for(parts, levels):
    out, li = [], 0
    for p in parts:
        if len(set(p.tolist())) == 1 and p[0] in levels:
            li = levels.index(p[0])
        out.append(levels[li])
    return out


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("ramp", [0, 25])
def test_finds_known_jumps_despite_flicker(seed, ramp):
    levels, lengths = [3, 5, 8, 9, 12], [300, 500, 400, 600, 800]
    steps, r, loss, bounds = _staircase(levels, lengths, flicker=0.15, ramp=ramp, seed=seed)
    sc = staircase.detect(steps, r, loss)
    assert [(j.rank_before, j.rank_after) for j in sc.jumps] == list(zip(levels, levels[1:], strict=False))
    assert [p.rank for p in sc.plateaus] == levels
    assert sc.stairs == 4 and sc.n_up == 4
    for j, b in zip(sc.jumps, bounds[1:], strict=True):
        # The halfway crossing lies inside the ramp (or at the boundary); flicker can move it by a few steps.
        assert b - ramp - 5 <= j.step <= b + 5, (j, b)
        assert j.start_step <= j.step <= j.end_step
        assert j.loss_before > j.loss_after and j.loss_ratio > 1
    assert sc.spearman < -0.9


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("T", [400, 5000])
@pytest.mark.parametrize("p", [0.1, 0.3, 0.5])
def test_flicker_noise_has_no_stairs(seed, T, p):
    rng = np.random.default_rng(seed)
    r = 10 + (rng.random(T) < p) * rng.choice([-1.0, 1.0], T)
    sc = staircase.detect(np.arange(T), r, rng.random(T))
    assert sc.jumps == [] and sc.stairs == 0
    assert len(sc.plateaus) == 1 and sc.plateaus[0].rank == 10


def test_alternating_flicker_between_two_values_is_one_plateau():
    rng = np.random.default_rng(1)
    r = 17 + (rng.random(3000) < 0.5)  # 17 or 18, each half the time
    sc = staircase.detect(np.arange(3000), r)
    assert sc.jumps == [] and len(sc.plateaus) == 1 and sc.plateaus[0].rank in (17, 18)
    assert math.isnan(sc.spearman)  # no losses given


def test_dip_and_recovery_counts_one_stair_not_two():
    r = np.concatenate([np.full(400, 10.0), np.full(300, 9.0), np.full(400, 10.0), np.full(400, 12.0)])
    sc = staircase.detect(np.arange(len(r)), r)
    assert [(j.rank_before, j.rank_after) for j in sc.jumps] == [(10, 9), (9, 10), (10, 12)]
    assert sc.n_up == 2 and sc.stairs == 1  # 9→10 returns to an earlier level; only 10→12 is new


def test_non_uniform_steps_and_nan_entries():
    steps = np.arange(0, 20000, 10)  # every 10th step
    r = np.where(steps < 8000, 4.0, 7.0)
    r[[5, 900, 1500]] = np.nan  # failed measurements are skipped
    sc = staircase.detect(steps, r)
    assert len(sc.jumps) == 1 and sc.jumps[0].step == 8000 and sc.jumps[0].start_step == 8000
    d = sc.to_dict()
    assert d["stairs"] == 1 and d["jumps"][0]["rank_after"] == 7


def test_empty_and_bad_input():
    assert staircase.detect([], []).jumps == []
    with pytest.raises(ValueError, match="one length"):
        staircase.detect([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="min_plateau"):
        staircase.detect([1, 2], [1, 2], min_plateau=0)


@pytest.mark.parametrize("seed", range(5))
def test_spearman_matches_scipy_with_ties(seed):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 12, 300).astype(float)  # many ties
    b = -a + rng.integers(0, 5, 300)
    expected = scipy.stats.spearmanr(a, b).statistic
    assert staircase.spearman(a, b) == pytest.approx(expected, abs=1e-12)
    c = rng.standard_normal(50)
    assert staircase.spearman(c, c**3) == pytest.approx(1.0, abs=1e-12)
    assert math.isnan(staircase.spearman(np.ones(10), c[:10]))


def test_staircase_plot_names_the_step_unit_and_labels_down_jumps():
    pytest.importorskip("matplotlib")
    from effrank_fast import plotting

    steps = np.arange(300)
    rank = np.r_[np.full(100, 3.0), np.full(100, 6.0), np.full(100, 5.0)]
    loss = np.exp(-steps / 100.0)
    sc = staircase.detect(steps, rank, loss, min_plateau=10)
    assert [(j.rank_before, j.rank_after) for j in sc.jumps] == [(3, 6), (6, 5)]
    fig = plotting.staircase_plot(steps, loss, {1e-2: rank}, jumps=sc.jumps, jump_eps=1e-2, x_label="L-BFGS iterations")
    ax = fig.axes[0]
    assert ax.get_xlabel() == "L-BFGS iterations"
    texts = {t.get_text(): t.get_color() for a in fig.axes for t in a.texts}
    assert "3→6" in texts and "6→5" in texts and texts["6→5"] != texts["3→6"]
